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

use prometheus_client::encoding::{prometheus_text, text, EncodeLabelSet};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::wire::setup::PROTOCOL_VERSION;

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

/// A registry with what every mux-bw process serves: the process series and
/// `mux_bw_build_info` for `role` (`destination`, `relay`, `exporter`).
pub fn process_registry(role: &'static str) -> Registry {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(process::Process));
    registry.sub_registry_with_prefix(PREFIX).register(
        "build_info",
        "Always 1; the labels say which build, protocol and role this process runs",
        build_info(role),
    );
    registry
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    version: &'static str,
    git_sha: &'static str,
    protocol: String,
    role: &'static str,
}

/// Build info as one series with value 1, the Prometheus convention for facts as labels.
fn build_info(role: &'static str) -> Family<BuildLabels, Gauge> {
    let build: Family<BuildLabels, Gauge> = Family::default();
    build
        .get_or_create(&BuildLabels {
            version: env!("CARGO_PKG_VERSION"),
            git_sha: env!("MUX_BW_GIT_SHA"),
            protocol: PROTOCOL_VERSION.to_string(),
            role,
        })
        .set(1);
    build
}
