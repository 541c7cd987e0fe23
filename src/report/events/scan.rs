//! `scan`'s events: one row per relay (`relay_scan`) and the ranking (`scan_summary`).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::present;
use super::RttStats;
use crate::wire::close::Cause;

/// `relay_scan` event: one row of a scan.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
pub struct RelayScan {
    /// The relay's name (`r0`.. in a lab, else its id's first 8 digits); `null` for the direct
    /// path, the reference row.
    #[serde(deserialize_with = "present")]
    pub relay: Option<String>,
    /// The relay's URI (the destination's for the direct row).
    pub address: String,
    /// The relay's node id (the destination's for the direct row).
    pub node_id: String,
    /// Mean goodput confirmed by the destination over the measured time, bits/s; 0 if failed.
    pub bps: u64,
    /// Time from first dial to the route's ack.
    #[serde(deserialize_with = "present")]
    pub setup_ns: Option<u64>,
    /// RTT through the route before the load.
    #[serde(deserialize_with = "present")]
    pub rtt_idle: Option<RttStats>,
    /// RTT through the route under its own load.
    #[serde(deserialize_with = "present")]
    pub rtt_loaded: Option<RttStats>,
    /// Share of packets the first link lost, retransmissions included (0..1).
    #[serde(deserialize_with = "present")]
    pub first_link_loss: Option<f64>,
    /// Why the relay could not be measured; `null` when it was.
    #[serde(deserialize_with = "present")]
    pub cause: Option<Cause>,
    /// The same, for people.
    #[serde(deserialize_with = "present")]
    pub error: Option<String>,
    /// Cut short by Ctrl-C (such rows are not emitted or ranked).
    pub interrupted: bool,
}

/// `scan_summary` event: the ranking, also what `scan --out` writes.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
pub struct ScanSummary {
    /// Relays given.
    pub relays_planned: usize,
    /// Relays measured.
    pub relays_measured: usize,
    /// Relays that failed (their rows carry the cause).
    pub relays_failed: usize,
    /// Relays measured at once (`--parallel`).
    pub parallel: usize,
    /// With `--parallel` above 1: the `parallel` fastest rates add up to within 10 % of the
    /// direct path's, so the client's own link may have capped them.
    pub client_limited: bool,
    /// Ctrl-C ended the scan; the rows are those measured before it.
    pub interrupted: bool,
    /// The direct path, the reference row.
    pub direct: RelayScan,
    /// Every measured or failed relay, fastest first, failed ones last.
    pub ranking: Vec<RelayScan>,
}
