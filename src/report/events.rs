//! The event stream: every fact a run reports, as serde types, and their JSON encoding. Field
//! names are a contract (extend freely, rename never). See docs/EVENTS.md. A leaf: it imports
//! only wire types; `report::sink` writes these events out and `report::runfile` reads saved
//! runs back into the same types.

use std::borrow::Cow;
use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::wire::close::Cause;
use crate::wire::mode::Mode;

/// Version of the event schema; bumped only for incompatible changes.
pub const SCHEMA_VERSION: u32 = 1;

/// One event. Serialized with a `type` tag in snake_case.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Event {
    /// First event of a run: versions and the whole validated configuration.
    Start(Start),
    /// A route's setup got an ack from every hop.
    RouteEstablished(RouteEstablished),
    /// A route could not be set up; `failed_hop` says where.
    RouteSetupFailed(RouteSetupFailed),
    /// An established route's pump ended with an error before the run ended.
    RouteFailure(RouteFailure),
    /// An established route moved no bytes for `--stall-timeout` (a warning; it may recover).
    RouteStalled(RouteStalled),
    /// A failed route was set up again through spare relays (`--redial`).
    RouteRedial(RouteRedial),
    /// Per-interval throughput.
    Sample(Sample),
    /// One RTT probe (idle baseline or under load).
    Probe(Probe),
    /// Last event of a run.
    Summary(Summary),
    /// A run-level error that is not about one route.
    Error(ErrorEvent),
    /// `scan`: one relay (or the direct path) measured through its own two-hop route.
    RelayScan(RelayScan),
    /// `scan`: the last event, every row ranked by rate.
    ScanSummary(ScanSummary),
}

/// `relay_scan` event: one row of a scan.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
pub struct RelayScan {
    /// The relay's name (`r0`.. in a lab, else its id's first 8 digits); `null` for the direct
    /// path, the reference row.
    #[serde(deserialize_with = "present")]
    pub relay: Option<String>,
    /// The relay's URI (the destination's for the direct row).
    pub address: String,
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

/// `route_established` event.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
pub struct RouteEstablished {
    /// Route index.
    pub route_index: u32,
    /// Node ids after the client, ending with the destination.
    pub path: Vec<String>,
    /// Links in the route (`path.len()`).
    pub hops: usize,
    /// Time from first dial to the chain's ack.
    pub setup_ns: u64,
}

/// `route_setup_failed` event.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
pub struct RouteSetupFailed {
    /// Route index.
    pub route_index: u32,
    /// Index into `path` of the node that failed, when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failed_hop: Option<u8>,
    /// Id of that node, when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// Human-readable cause.
    pub error: String,
    /// Machine-readable cause.
    pub cause: Cause,
    /// The planned path.
    pub path: Vec<String>,
}

/// `route_failure` event.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
pub struct RouteFailure {
    /// Route index.
    pub route_index: u32,
    /// Human-readable cause (names the timeout when one fired).
    pub error: String,
    /// Machine-readable cause.
    pub cause: Cause,
    /// Goodput bytes delivered before the failure (confirmed by the far end in `up` mode).
    pub bytes_sent_before_failure: u64,
    /// Bytes received by the client before the failure.
    pub bytes_received_before_failure: u64,
    /// Time since this route's pump started.
    pub elapsed_ns: u64,
    /// Index into the route's path of the hop that failed, when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failed_hop: Option<u8>,
    /// Id of that node, when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
}

/// `route_redial` event.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
pub struct RouteRedial {
    /// Route index (unchanged by the redial).
    pub route_index: u32,
    /// Redial attempt that succeeded (1 = first).
    pub attempt: u32,
    /// The new path: node ids after the client, ending with the destination.
    pub path: Vec<String>,
    /// Links in the new path.
    pub hops: usize,
    /// Time to set up the new path.
    pub setup_ns: u64,
}

/// `route_stalled` event.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
pub struct RouteStalled {
    /// Route index.
    pub route_index: u32,
    /// How long the route has moved no bytes.
    pub stalled_ns: u64,
    /// Cumulative goodput bytes delivered so far.
    pub bytes_sent: u64,
    /// Cumulative bytes received so far.
    pub bytes_received: u64,
}

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
}

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

/// `error` event.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
pub struct ErrorEvent {
    /// What went wrong.
    pub error: String,
}

/// Reads an `Option` the writer always writes (`null` when there is none): a saved run without
/// the field is refused, not read as `None`. (Fields the writer leaves out when `None` carry
/// `skip_serializing_if` instead, and their absence means `None`.)
fn present<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::deserialize(d)
}

/// One NDJSON line: the event plus the fields every event carries.
#[derive(Serialize, JsonSchema)]
pub struct EventLine<'a> {
    #[serde(flatten)]
    event: &'a Event,
    /// Schema version, `SCHEMA_VERSION`.
    schema: u32,
    /// Nanoseconds since the run started.
    t_ns: u64,
}

/// Encodes one event as a JSON line (without the newline).
pub fn to_json_line(event: &Event, t: Duration) -> String {
    let line = EventLine {
        event,
        schema: SCHEMA_VERSION,
        t_ns: t.as_nanos() as u64,
    };
    // invariant: these types contain only strings, numbers, bools, options and vectors,
    // which serde_json always serializes.
    serde_json::to_string(&line).expect("event serializes")
}

/// The JSON Schema of one NDJSON line, generated from these types (committed as
/// docs/events.schema.json; a test keeps the two equal).
pub fn json_schema() -> String {
    let schema = schemars::schema_for!(EventLine<'static>);
    // invariant: a schema is plain JSON data.
    serde_json::to_string_pretty(&schema).expect("schema serializes") + "\n"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_event_has_type_schema_and_time() {
        let ev = Event::RouteEstablished(RouteEstablished {
            route_index: 7,
            path: vec!["a".into(), "b".into()],
            hops: 2,
            setup_ns: 42,
        });
        let v: serde_json::Value =
            serde_json::from_str(&to_json_line(&ev, Duration::from_millis(3))).unwrap();
        assert_eq!(v["type"], "route_established");
        assert_eq!(v["schema"], SCHEMA_VERSION);
        assert_eq!(v["t_ns"], 3_000_000);
        assert_eq!(v["route_index"], 7);
        assert_eq!(v["hops"], 2);
    }
}
