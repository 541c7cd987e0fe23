//! The `summary` event: the last event of a run, and each route's part of it.

use std::borrow::Cow;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::present;
use super::RttSummary;
use crate::wire::close::Cause;

/// Per-route part of the `summary`.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
pub struct RouteSummary {
    /// Route index.
    pub route_index: u32,
    /// Node ids after the client.
    pub path: Vec<String>,
    /// Links.
    pub hops: usize,
    /// `up` (ran to the end), `stalled` (up, but moved no bytes for `--stall-timeout` at the
    /// end), `failed`, or `setup_failed`.
    pub state: Cow<'static, str>,
    /// Goodput bytes delivered to the far end.
    pub bytes_sent: u64,
    /// Bytes received by the client.
    pub bytes_received: u64,
    /// Mean goodput in the run's direction over the load phase, bits/s.
    pub mean_bps: u64,
    /// Why it failed, if it did.
    #[serde(deserialize_with = "present")]
    pub error: Option<String>,
    /// Machine-readable cause of that failure.
    #[serde(deserialize_with = "present")]
    pub cause: Option<Cause>,
    /// Packets sent on the first link over the measured part, retransmissions included.
    pub sent_packets: u64,
    /// Of those, packets the first link declared lost (see `RouteSample::lost_packets`).
    pub lost_packets: u64,
    /// Pump failures during the run (a redialed route can fail and recover).
    pub failures: u32,
    /// Successful redials.
    pub redials: u32,
    /// Index into `path` of the hop that failed, when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failed_hop: Option<u8>,
    /// Id of that node, when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
}

/// `summary` event.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
pub struct Summary {
    /// Crate version (as in `start`).
    pub version: Cow<'static, str>,
    /// Setup protocol version (as in `start`).
    pub protocol_version: u16,
    /// Routes asked for.
    pub routes_planned: usize,
    /// Routes whose setup succeeded.
    pub routes_established: usize,
    /// Fewer routes were established than planned: the figures are not those of the plan
    /// (`run` exits 5 unless `--allow-partial`).
    pub partial: bool,
    /// Established routes whose pump failed.
    pub routes_failed: usize,
    /// Routes that never came up: state `setup_failed` (their first setup failed, and so did
    /// every redial, if any).
    pub routes_setup_failed: usize,
    /// Length of the load phase actually measured (after the omitted warm-up).
    pub duration_ns: u64,
    /// Total goodput bytes in the run's direction.
    pub aggregate_bytes: u64,
    /// Mean aggregate goodput, bits/s.
    pub aggregate_bps: u64,
    /// True when the run was cut short by Ctrl-C.
    pub interrupted: bool,
    /// Samples taken late (see `Sample::late`); rates stay true, intervals are just longer.
    pub late_samples: u32,
    /// Events an output (stdout or `--json-file`) left out because it could not keep up
    /// (`report::sink`, at most `QUEUE` events wait per output); 0 unless the output stalled.
    pub events_dropped: u64,
    /// RTT statistics, with `--probe-rtt`.
    #[serde(deserialize_with = "present")]
    pub rtt: Option<RttSummary>,
    /// One entry per planned route.
    pub routes: Vec<RouteSummary>,
    /// With `--stripe`: the transfer's figures (absent otherwise).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stripe: Option<StripeSummary>,
}

/// A striped transfer's figures over the measured part of the run, from the destination's
/// MACed stripe reports; the counts of resends and integrity cover the whole run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct StripeSummary {
    /// Bytes that arrived in order over the measured part.
    pub in_order_bytes: u64,
    /// Those as a mean rate, bits/s: the striped transfer's goodput.
    pub in_order_bps: u64,
    /// The routes' own goodput added up (`aggregate_bps`), for comparison.
    pub routes_sum_bps: u64,
    /// `in_order_bps / routes_sum_bps`: what reordering and head-of-line blocking left of the
    /// routes' sum (0 when the routes moved nothing).
    pub efficiency: f64,
    /// Most bytes the destination held beyond the in-order offset at any time.
    pub buffer_peak_bytes: u64,
    /// Time over the measured part the destination held bytes behind a missing segment.
    pub blocked_ns: u64,
    /// Segments written, resends included.
    pub segments_sent: u64,
    /// Segments written again because their route failed before they were confirmed.
    pub segments_resent: u64,
    /// Bytes that arrived twice (a resend of a segment the failed route had delivered
    /// without its report reaching the client): counted, never delivered twice.
    pub duplicate_bytes: u64,
    /// Bytes that did not match the transfer's pattern at their offset (their route was
    /// closed): 0 on a sound path.
    pub corrupt_bytes: u64,
    /// Bytes handed out (or asked for with `--bytes`) that had not arrived in order when the
    /// run ended, after waiting up to `client::run::STRIPE_DRAIN` for those in flight: 0 on
    /// success.
    pub missing_bytes: u64,
    /// The in-order offset at the end.
    pub delivered_bytes: u64,
    /// With `--bytes`: from the start of the load to the report that all of them arrived in
    /// order; `null` otherwise, or when they did not.
    #[serde(deserialize_with = "present")]
    pub transfer_ns: Option<u64>,
}
