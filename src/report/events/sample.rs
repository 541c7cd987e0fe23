//! What the run measures as it goes: per-interval samples and RTT probes, and RTT statistics.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::present;

/// When a probe was taken.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ProbePhase {
    /// Before any load: the baseline.
    Idle,
    /// While every route pumps.
    Loaded,
}

/// `probe` event.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
pub struct Probe {
    /// Idle or loaded.
    pub phase: ProbePhase,
    /// The route probed: the first established one still up.
    pub route_index: u32,
    /// Round-trip time; absent when the probe was lost.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rtt_ns: Option<u64>,
    /// Why the probe got no answer, when it did not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Distribution of one phase's RTTs: exact order statistics of the answered probes' `rtt_ns`
/// (nearest rank: pN is the value at rank ⌈N/100 · count⌉), or an HdrHistogram's beyond
/// `client::probe::EXACT_LIMIT` probes (docs/EVENTS.md, `summary`).
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
pub struct RttStats {
    /// Probes answered.
    pub count: u64,
    /// Probes lost (no answer within the probe timeout).
    pub lost: u64,
    /// Fastest.
    pub min_ns: u64,
    /// Median (nearest rank: the lower middle value of an even count).
    pub p50_ns: u64,
    /// 90th percentile.
    pub p90_ns: u64,
    /// 99th percentile.
    pub p99_ns: u64,
    /// Slowest.
    pub max_ns: u64,
    /// Round trips per minute at the median: 60000 / p50 in ms.
    pub rpm: u64,
}

/// RTT part of the summary.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
pub struct RttSummary {
    /// Route of the idle baseline: the first route that came up; when none was up before the
    /// load started, the first route probed under load; `null` if no probe ran.
    #[serde(deserialize_with = "present")]
    pub route_index: Option<u32>,
    /// Every route loaded probes ran on, in order: the first route that came up and is still
    /// up, so a failover adds one.
    pub routes_probed: Vec<u32>,
    /// Baseline before load, if any probe was answered.
    #[serde(deserialize_with = "present")]
    pub idle: Option<RttStats>,
    /// Under load, if any probe was answered.
    #[serde(deserialize_with = "present")]
    pub loaded: Option<RttStats>,
    /// With `--probe-rtt all`: every established route's own idle and loaded figures, by route
    /// index (absent otherwise).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<RouteRtt>,
    /// Loaded p50 minus idle p50 (may be negative from noise); only when every probe ran on
    /// `route_index`.
    #[serde(deserialize_with = "present")]
    pub latency_increase_ns: Option<i64>,
}

/// Per-route part of a `sample`.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
pub struct RouteSample {
    /// Route index.
    pub route_index: u32,
    /// Cumulative goodput bytes delivered to the far end.
    pub bytes_sent: u64,
    /// Cumulative bytes received by the client.
    pub bytes_received: u64,
    /// Send goodput over this interval, bits/s.
    pub sent_bps: u64,
    /// Receive goodput over this interval, bits/s.
    pub received_bps: u64,
    /// `up`, `stalled`, `failed`, `pending` or `setup_failed`.
    pub state: RouteState,
    /// Packets the client sent on its QUIC connection (the route's first link) and declared lost
    /// in this interval; iperf3's "Retr". Later links, and the first hop's sending direction
    /// (`down` payload), recover their own losses out of the client's sight.
    pub lost_packets: u64,
    /// Congestion window of the first link at the end of the interval, bytes; absent while the
    /// route is down.
    #[serde(deserialize_with = "present")]
    pub cwnd_bytes: Option<u64>,
    /// QUIC's smoothed RTT of the first link at the end of the interval; absent while the route
    /// is down.
    #[serde(deserialize_with = "present")]
    pub link_rtt_ns: Option<u64>,
}

/// Lifecycle state of a planned route in a sample.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum RouteState {
    /// Pumping.
    Up,
    /// Established but moved no bytes for `--stall-timeout`.
    Stalled,
    /// Was up; its pump ended with an error (with `--redial`, until a redial brings it back).
    Failed,
    /// Never up yet: its first setup failed and `--redial` is still trying.
    Pending,
    /// Never up: its first setup failed, and so did every redial, if any.
    SetupFailed,
}

impl RouteState {
    /// Whether the route is up (moving bytes or stalled): what `active_routes` counts.
    pub fn is_active(self) -> bool {
        matches!(self, RouteState::Up | RouteState::Stalled)
    }

    /// Whether the route was ever up: a `pending` or `setup_failed` entry is a placeholder at
    /// zero, not a route that measured nothing.
    pub fn came_up(self) -> bool {
        !matches!(self, RouteState::Pending | RouteState::SetupFailed)
    }
}

/// `sample` event.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
pub struct Sample {
    /// Start of the interval, since run start.
    pub interval_start_ns: u64,
    /// End of the interval, since run start.
    pub interval_end_ns: u64,
    /// True for warm-up intervals left out of the summary.
    pub omitted: bool,
    /// Routes not failed (`up` or `stalled`) at the end of the interval.
    pub active_routes: usize,
    /// Goodput of the interval in the run's direction, all routes, bits/s.
    pub aggregate_bps: u64,
    /// True when the sample was taken later than planned (a busy machine or a slow reader of
    /// the output): the interval is longer than `--interval`, and its rates are over its real
    /// length.
    pub late: bool,
    /// One entry per planned route, in index order, whatever its state.
    pub routes: Vec<RouteSample>,
    /// With `--stripe`: the transfer's in-order progress over the interval (absent otherwise).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stripe: Option<StripeSample>,
}

/// A striped transfer over one sample interval, from the destination's MACed stripe reports.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct StripeSample {
    /// Bytes that arrived in order (verified, no gap before them) during the interval, as
    /// bits/s: what an application reading the one stream would have received.
    pub in_order_bps: u64,
    /// The in-order offset at the end of the interval.
    pub delivered_bytes: u64,
    /// Most bytes the destination held beyond the in-order offset during the interval.
    pub buffer_max_bytes: u64,
    /// Time during the interval the destination held bytes behind a missing segment.
    pub blocked_ns: u64,
}

/// One route's RTT with `--probe-rtt all`: probes on that route alone, end to end.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
pub struct RouteRtt {
    /// Route index.
    pub route_index: u32,
    /// Before the load, if any probe was answered.
    #[serde(deserialize_with = "present")]
    pub idle: Option<RttStats>,
    /// Under load, if any probe was answered.
    #[serde(deserialize_with = "present")]
    pub loaded: Option<RttStats>,
}
