//! The `start` event: versions and the whole validated configuration, with its parts
//! (links, tuning, pick) as reported.

use std::borrow::Cow;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::present;
use crate::wire::mode::Mode;

/// `start` event.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
pub struct Start {
    /// Always "mux-bw".
    pub tool: Cow<'static, str>,
    /// Crate version.
    pub version: Cow<'static, str>,
    /// Setup protocol version spoken.
    pub protocol_version: u16,
    /// Commit the binary was built from (`unknown` outside a git checkout).
    pub git_sha: Cow<'static, str>,
    /// The validated configuration.
    pub config: ConfigView,
    /// What this run will not do the way its flags may suggest (for example a `--fault` on a
    /// relay that no planned route uses); also printed on stderr. Empty when none.
    pub warnings: Vec<String>,
}

/// The run configuration as reported in `start`.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
pub struct ConfigView {
    /// Destination URI.
    pub to: String,
    /// Relay pool URIs.
    pub relays: Vec<String>,
    /// Number of routes.
    pub routes: usize,
    /// Minimum links per route.
    pub min_hops: usize,
    /// Data pattern.
    pub mode: Mode,
    /// Load duration (after the omitted warm-up).
    pub duration_ns: u64,
    /// Warm-up left out of the summary.
    pub omit_ns: u64,
    /// Warning threshold for a route that moves no bytes.
    pub stall_timeout_ns: u64,
    /// Whether RTT probes run.
    pub probe_rtt: bool,
    /// `--probe-rtt all`: every established route is probed, not only the first (absent when
    /// false).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub probe_all: bool,
    /// Gap between loaded probes.
    pub probe_interval_ns: u64,
    /// Sample interval.
    pub interval_ns: u64,
    /// Per-hop setup budget.
    pub setup_timeout_ns: u64,
    /// Per read/write deadline.
    pub io_timeout_ns: u64,
    /// Whether routes may share intermediates.
    pub allow_overlap: bool,
    /// Whether failed routes are set up again through spare relays.
    pub redial: bool,
    /// QUIC windows and congestion controller of the client's connections.
    pub tuning: TuningView,
    /// The lab's emulated links, when any.
    #[serde(deserialize_with = "present")]
    pub links: Option<LinksView>,
    /// Planned path (node ids after the client) of each route, by route index.
    pub planned_paths: Vec<Vec<String>>,
    /// How the relays were picked (`--pick`, `--relays-from`); absent when they were used in
    /// the order given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pick: Option<PickView>,
    /// With `--stripe`: how the one transfer is cut and scheduled (absent otherwise).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stripe: Option<StripeView>,
}

/// `--stripe` and its settings as reported in `start.config.stripe`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct StripeView {
    /// `round-robin`, `weighted` or `earliest-arrival`.
    pub scheduler: String,
    /// Payload bytes per segment (`--segment`).
    pub segment_bytes: u32,
    /// Most bytes the destination holds beyond the in-order offset (`--reorder-window`).
    pub reorder_window_bytes: u32,
    /// `--bytes`: the run ends when this many arrived in order; `null`: at `--duration`.
    #[serde(deserialize_with = "present")]
    pub bytes: Option<u64>,
    /// The transfer's id (hex), as the destination names it in its nacks.
    pub transfer: String,
}

/// `--pick` and `--relays-from` as reported in `start.config.pick`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct PickView {
    /// `fastest` (by the scan's rates) or `random` (shuffled).
    pub rule: String,
    /// The scan ranking the pool came from, if any.
    #[serde(deserialize_with = "present")]
    pub scan_file: Option<String>,
    /// When that file was last written (Unix seconds): how old the ranking is.
    #[serde(deserialize_with = "present")]
    pub scan_file_modified_unix: Option<u64>,
    /// The shuffle's seed for `random`, to repeat a run's pick.
    #[serde(deserialize_with = "present")]
    pub seed: Option<u64>,
}

/// One emulated link kind as reported in `start`.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
pub struct LinkView {
    /// Bottleneck, bits/s; absent when unlimited.
    #[serde(deserialize_with = "present")]
    pub rate_bps: Option<u64>,
    /// One-way delay.
    pub delay_ns: u64,
    /// Share of packets dropped, in percent (0..=100), as `--link-loss` takes it.
    pub loss_pct: f64,
    /// Most backlog the bottleneck queues, as time at its rate.
    pub queue_ns: u64,
}

/// The lab's emulated links as reported in `start`.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
pub struct LinksView {
    /// Every link that touches a relay, when all relays have the same (otherwise r0's).
    pub relay: LinkView,
    /// The direct client-destination link.
    pub direct: LinkView,
    /// Each relay's link, `r0` first: the link leading to the relay, and from the last relay
    /// of a route to the destination.
    pub relays: Vec<LinkView>,
}

/// QUIC settings as reported in `start`.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
pub struct TuningView {
    /// Per-stream receive window, bytes.
    pub stream_window: u64,
    /// Per-connection receive window, bytes.
    pub conn_window: u64,
    /// Send buffer, bytes.
    pub send_window: u64,
    /// `cubic`, `bbr` or `newreno`.
    pub congestion: Cow<'static, str>,
    /// UDP send buffer asked for, bytes (0 = OS default).
    pub socket_send_buffer: u64,
    /// UDP receive buffer asked for, bytes (0 = OS default).
    pub socket_recv_buffer: u64,
}

impl From<crate::wire::transport::Tuning> for TuningView {
    fn from(t: crate::wire::transport::Tuning) -> Self {
        TuningView {
            stream_window: t.stream_window,
            conn_window: t.conn_window,
            send_window: t.send_window,
            congestion: t.congestion.as_str().into(),
            socket_send_buffer: t.socket_send_buffer as u64,
            socket_recv_buffer: t.socket_recv_buffer as u64,
        }
    }
}
