//! Prometheus metrics: what a node (`serve`, `relay`) and the `exporter` expose at `/metrics`.
//!
//! Counting is a few atomics on paths that already do I/O (`node`); encoding and HTTP run only
//! when scraped (`http`), so a node that is never scraped pays for the atomics and nothing else.
//! Label values come from fixed sets (causes, reasons, directions, configured probe targets):
//! never a client address, a route index or a node id, so a busy node's series stay bounded.

pub mod http;
pub mod node;
pub mod process;

use std::sync::Arc;

use prometheus_client::encoding::{prometheus_text, text};
use prometheus_client::registry::Registry;

/// The prefix of every series of ours (`mux_bw_routes_total`); process series keep the
/// conventional unprefixed names (`process_cpu_seconds_total`).
pub const PREFIX: &str = "mux_bw";

/// Content type of the OpenMetrics text format, served to scrapers that ask for it.
const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// A registry, shareable with the HTTP task that encodes it on each scrape.
#[derive(Clone, Debug)]
pub struct Exposition(Arc<Registry>);

impl Exposition {
    /// Wraps a filled registry; nothing can be registered afterwards.
    pub fn new(registry: Registry) -> Self {
        Exposition(Arc::new(registry))
    }

    /// The registry as text, and its content type: OpenMetrics when `accept` (the request's
    /// `Accept` header) asks for it, as Prometheus does, otherwise the classic text format
    /// that `curl` users and `promtool check metrics` read.
    pub fn encode(&self, accept: &str) -> (String, &'static str) {
        let mut out = String::new();
        let kind = if accept.contains("application/openmetrics-text") {
            text::encode(&mut out, &self.0).map(|()| OPENMETRICS)
        } else {
            prometheus_text::encode(&mut out, &self.0).map(|()| prometheus_text::CONTENT_TYPE)
        };
        // Encoding into a String fails only if a metric's own encoder does; none of ours do.
        match kind {
            Ok(kind) => (out, kind),
            Err(_) => (String::new(), prometheus_text::CONTENT_TYPE),
        }
    }
}
