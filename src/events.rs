//! The event stream: every fact a run reports, as serde types, and the sink that writes them as
//! NDJSON (stdout, for jq) and/or as human lines (stderr). Only types in this module are
//! `Serialize`; field names are a contract (extend freely, rename never). See docs/EVENTS.md.
//!
//! The sink never fails the run: a closed stdout (`| head`) silently stops JSON output.

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::human;
use crate::protocol::Mode;

/// Version of the event schema; bumped only for incompatible changes.
pub const SCHEMA_VERSION: u32 = 1;

/// One event. Serialized with a `type` tag in snake_case.
#[derive(Clone, Debug, Serialize)]
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
    /// Per-interval throughput.
    Sample(Sample),
    /// Last event of a run.
    Summary(Summary),
    /// A run-level error that is not about one route.
    Error(ErrorEvent),
}

/// `start` event.
#[derive(Clone, Debug, Serialize)]
pub struct Start {
    /// Always "mux-bw".
    pub tool: &'static str,
    /// Crate version.
    pub version: &'static str,
    /// Setup protocol version spoken.
    pub protocol_version: u16,
    /// The validated configuration.
    pub config: ConfigView,
}

/// The run configuration as reported in `start`.
#[derive(Clone, Debug, Serialize)]
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
    /// Load duration.
    pub duration_ns: u64,
    /// Sample interval.
    pub interval_ns: u64,
    /// Per-hop setup budget.
    pub setup_timeout_ns: u64,
    /// Per read/write deadline.
    pub io_timeout_ns: u64,
    /// Whether routes may share intermediates.
    pub allow_overlap: bool,
    /// Planned path (node ids after the client) of each route, by route index.
    pub planned_paths: Vec<Vec<String>>,
}

/// `route_established` event.
#[derive(Clone, Debug, Serialize)]
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
#[derive(Clone, Debug, Serialize)]
pub struct RouteSetupFailed {
    /// Route index.
    pub route_index: u32,
    /// Index into `path` of the node that failed, when known.
    pub failed_hop: Option<u8>,
    /// Id of that node, when known.
    pub node: Option<String>,
    /// Human-readable cause.
    pub error: String,
    /// The planned path.
    pub path: Vec<String>,
}

/// `route_failure` event.
#[derive(Clone, Debug, Serialize)]
pub struct RouteFailure {
    /// Route index.
    pub route_index: u32,
    /// Human-readable cause (names the timeout when one fired).
    pub error: String,
    /// Goodput bytes delivered before the failure (confirmed by the far end in `up` mode).
    pub bytes_sent_before_failure: u64,
    /// Bytes received by the client before the failure.
    pub bytes_received_before_failure: u64,
    /// Time since this route's pump started.
    pub elapsed_ns: u64,
}

/// Per-route part of a `sample`.
#[derive(Clone, Debug, Serialize)]
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
    /// `up` or `failed`.
    pub state: RouteState,
}

/// Lifecycle state of an established route.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RouteState {
    /// Pumping.
    Up,
    /// Pump ended with an error.
    Failed,
}

/// `sample` event.
#[derive(Clone, Debug, Serialize)]
pub struct Sample {
    /// Start of the interval, since run start.
    pub interval_start_ns: u64,
    /// End of the interval, since run start.
    pub interval_end_ns: u64,
    /// True for warm-up intervals left out of the summary.
    pub omitted: bool,
    /// Routes in state `up` at the end of the interval.
    pub active_routes: usize,
    /// Goodput of the interval in the run's direction, all routes, bits/s.
    pub aggregate_bps: u64,
    /// One entry per established route.
    pub routes: Vec<RouteSample>,
}

/// Per-route part of the `summary`.
#[derive(Clone, Debug, Serialize)]
pub struct RouteSummary {
    /// Route index.
    pub route_index: u32,
    /// Node ids after the client.
    pub path: Vec<String>,
    /// Links.
    pub hops: usize,
    /// `up` (ran to the end), `failed`, or `setup_failed`.
    pub state: &'static str,
    /// Goodput bytes delivered to the far end.
    pub bytes_sent: u64,
    /// Bytes received by the client.
    pub bytes_received: u64,
    /// Mean goodput in the run's direction over the load phase, bits/s.
    pub mean_bps: u64,
    /// Why it failed, if it did.
    pub error: Option<String>,
}

/// `summary` event.
#[derive(Clone, Debug, Serialize)]
pub struct Summary {
    /// Routes asked for.
    pub routes_planned: usize,
    /// Routes whose setup succeeded.
    pub routes_established: usize,
    /// Established routes whose pump failed.
    pub routes_failed: usize,
    /// Length of the load phase actually measured.
    pub duration_ns: u64,
    /// Total goodput bytes in the run's direction.
    pub aggregate_bytes: u64,
    /// Mean aggregate goodput, bits/s.
    pub aggregate_bps: u64,
    /// True when the run was cut short by Ctrl-C.
    pub interrupted: bool,
    /// One entry per planned route.
    pub routes: Vec<RouteSummary>,
}

/// `error` event.
#[derive(Clone, Debug, Serialize)]
pub struct ErrorEvent {
    /// What went wrong.
    pub error: String,
}

#[derive(Serialize)]
struct Envelope<'a> {
    #[serde(flatten)]
    event: &'a Event,
    schema: u32,
    t_ns: u64,
}

/// Encodes one event as a JSON line (without the newline).
pub fn to_json_line(event: &Event, t: Duration) -> String {
    let env = Envelope {
        event,
        schema: SCHEMA_VERSION,
        t_ns: t.as_nanos() as u64,
    };
    // invariant: these types contain only strings, numbers, bools, options and vectors,
    // which serde_json always serializes.
    serde_json::to_string(&env).expect("event serializes")
}

/// Where events go. Shared by all tasks of a run; every method is cheap and infallible.
pub struct EventSink {
    start: Instant,
    json: bool,
    stdout_open: AtomicBool,
}

impl EventSink {
    /// `json`: NDJSON on stdout; otherwise human lines on stderr.
    pub fn new(start: Instant, json: bool) -> Self {
        EventSink {
            start,
            json,
            stdout_open: AtomicBool::new(true),
        }
    }

    /// Time since the run started, as stamped on events.
    pub fn elapsed(&self) -> Duration {
        self.start.elapsed()
    }

    /// When the run started.
    pub fn start(&self) -> Instant {
        self.start
    }

    /// Writes one event. Errors writing stdout (a closed pipe) turn JSON output off, nothing more.
    pub fn emit(&self, event: Event) {
        let t = self.elapsed();
        if self.json {
            if self.stdout_open.load(Ordering::Relaxed) {
                let mut line = to_json_line(&event, t);
                line.push('\n');
                let mut out = std::io::stdout().lock();
                if out
                    .write_all(line.as_bytes())
                    .and_then(|_| out.flush())
                    .is_err()
                {
                    self.stdout_open.store(false, Ordering::Relaxed);
                }
            }
        } else {
            human::print(&event, t);
        }
    }
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
