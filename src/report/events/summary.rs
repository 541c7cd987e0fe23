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
}
