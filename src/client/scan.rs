//! `scan`: every relay measured through its own two-hop route (client → relay → destination),
//! and the direct path as the reference, each by a whole quiet run of `client::run` (so a scan
//! figure is the same confirmed goodput over measured time as any run's). Up to `parallel`
//! relays at once; a relay that fails is a row with its cause, never an abort.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::client::plan::PlannedRoute;
use crate::client::run::{self, RunConfig};
use crate::report::events::{Event, RelayScan, RouteSummary, ScanSummary, Summary};
use crate::report::sink::{EventSink, SinkConfig};
use crate::wire::addr::NodeAddr;
use crate::wire::close::Cause;

/// Share of the direct path's rate that K concurrent relay rates must reach for the scan to
/// call the client's own link the bottleneck.
const CLIENT_LIMITED_SHARE: f64 = 0.9;

/// What to scan and how.
#[derive(Clone)]
pub struct ScanConfig {
    /// Every measurement: its duration, warm-up, timeouts, token, tuning and (lab) links. Its
    /// routes, relays and mode are replaced for each relay.
    pub base: RunConfig,
    /// The relays, with the names rows carry (`r0`.. in a lab, else the short id).
    pub relays: Vec<(String, NodeAddr)>,
    /// Relays measured at once.
    pub parallel: usize,
    /// Where each measurement's own events are kept while it runs (then removed).
    pub scratch: PathBuf,
    /// Told of every row as it is measured (the CLI's progress bar).
    pub on_row: Arc<dyn Fn(&RelayScan) + Send + Sync>,
}

impl std::fmt::Debug for ScanConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScanConfig")
            .field("relays", &self.relays.len())
            .field("parallel", &self.parallel)
            .finish_non_exhaustive()
    }
}

/// Scans the direct path, then every relay, emitting one `relay_scan` per row as it is measured
/// and returning the ranking (the caller emits it as `scan_summary`). Stops starting new
/// measurements once `interrupt` fires; the rows measured so far stay.
pub async fn scan(cfg: &ScanConfig, sink: &EventSink, interrupt: CancellationToken) -> ScanSummary {
    let _ = std::fs::create_dir_all(&cfg.scratch);
    let direct = measure(cfg, None, interrupt.clone()).await;
    (cfg.on_row)(&direct);
    sink.emit(Event::RelayScan(direct.clone()));
    let mut rows = Vec::with_capacity(cfg.relays.len());
    let mut pending = cfg.relays.iter().cloned();
    let mut running = JoinSet::new();
    loop {
        while running.len() < cfg.parallel.max(1) && !interrupt.is_cancelled() {
            let Some(relay) = pending.next() else { break };
            let (cfg, stop) = (cfg.clone(), interrupt.clone());
            running.spawn(async move { measure(&cfg, Some(relay), stop).await });
        }
        let Some(done) = running.join_next().await else {
            break;
        };
        if let Ok(row) = done {
            if !row.interrupted {
                (cfg.on_row)(&row);
                sink.emit(Event::RelayScan(row.clone()));
                rows.push(row);
            }
        }
    }
    let _ = std::fs::remove_dir(&cfg.scratch);
    summarize(cfg, direct, rows, interrupt.is_cancelled())
}

/// The ranking: rows by rate, fastest first, failed ones last; whether the client's own link
/// may have capped what `parallel` relays measured at once could reach.
fn summarize(
    cfg: &ScanConfig,
    direct: RelayScan,
    mut rows: Vec<RelayScan>,
    interrupted: bool,
) -> ScanSummary {
    rows.sort_by(|a, b| {
        (a.cause.is_some(), std::cmp::Reverse(a.bps))
            .cmp(&(b.cause.is_some(), std::cmp::Reverse(b.bps)))
    });
    let concurrent: u64 = rows.iter().take(cfg.parallel).map(|r| r.bps).sum();
    let client_limited = cfg.parallel > 1
        && direct.cause.is_none()
        && concurrent as f64 >= CLIENT_LIMITED_SHARE * direct.bps as f64;
    ScanSummary {
        relays_planned: cfg.relays.len(),
        relays_measured: rows.iter().filter(|r| r.cause.is_none()).count(),
        relays_failed: rows.iter().filter(|r| r.cause.is_some()).count(),
        parallel: cfg.parallel,
        client_limited,
        interrupted,
        direct,
        ranking: rows,
    }
}

/// One row: a whole run of one route, through `relay` or (`None`) direct.
async fn measure(
    cfg: &ScanConfig,
    relay: Option<(String, NodeAddr)>,
    stop: CancellationToken,
) -> RelayScan {
    let mut path: Vec<NodeAddr> = relay.iter().map(|(_, r)| *r).collect();
    path.push(cfg.base.dst);
    let run_cfg = RunConfig {
        routes: vec![PlannedRoute {
            index: 0,
            path: path.clone(),
        }],
        relays: relay.iter().map(|(_, r)| *r).collect(),
        min_hops: path.len(),
        probe_rtt: true,
        probe_all: false,
        redial: false,
        load_started: CancellationToken::new(),
        ..cfg.base.clone()
    };
    let (name, node) = match &relay {
        Some((name, r)) => (Some(name.clone()), *r),
        None => (None, cfg.base.dst),
    };
    let file = cfg.scratch.join(format!(
        "scan-{}.ndjson",
        name.as_deref().unwrap_or("direct")
    ));
    let sink_cfg = SinkConfig {
        json_file: Some(file.clone()),
        quiet: true,
        ..SinkConfig::default()
    };
    let row = match EventSink::new(Instant::now(), &sink_cfg) {
        Err(e) => failed_row(
            name,
            node,
            format!("cannot create '{}': {e}", file.display()),
        ),
        Ok(sink) => {
            let summary = run::run(&run_cfg, Arc::new(sink), stop).await;
            row_of(name, node, &summary, setup_ns(&file))
        }
    };
    let _ = std::fs::remove_file(&file);
    row
}

/// The route's setup time, from its `route_established` in the run's own events.
fn setup_ns(file: &std::path::Path) -> Option<u64> {
    let text = std::fs::read_to_string(file).ok()?;
    text.lines()
        .find_map(|l| match serde_json::from_str::<Event>(l) {
            Ok(Event::RouteEstablished(e)) => Some(e.setup_ns),
            _ => None,
        })
}

/// A row from a run's summary: its rate, RTT, first-link loss, or why it failed.
fn row_of(name: Option<String>, node: NodeAddr, s: &Summary, setup_ns: Option<u64>) -> RelayScan {
    let route: Option<&RouteSummary> = s.routes.first();
    let failed = route.is_none_or(|r| r.state != "up");
    let loss = route
        .filter(|r| r.sent_packets > 0)
        .map(|r| r.lost_packets as f64 / r.sent_packets as f64);
    let rtt = s.rtt.as_ref();
    RelayScan {
        relay: name,
        address: node.uri(),
        node_id: node.id.to_string(),
        bps: if failed { 0 } else { s.aggregate_bps },
        setup_ns,
        rtt_idle: rtt.and_then(|r| r.idle.clone()),
        rtt_loaded: rtt.and_then(|r| r.loaded.clone()),
        first_link_loss: loss,
        // A failed row always says why; a route that ended without a typed cause was local.
        cause: failed.then(|| route.and_then(|r| r.cause).unwrap_or(Cause::Local)),
        error: route
            .and_then(|r| r.error.clone())
            .filter(|_| failed)
            .or_else(|| (failed && route.is_none()).then(|| "no route was planned".to_string())),
        interrupted: s.interrupted,
    }
}

/// A row for a measurement that could not even start.
fn failed_row(name: Option<String>, node: NodeAddr, error: String) -> RelayScan {
    RelayScan {
        relay: name,
        address: node.uri(),
        node_id: node.id.to_string(),
        bps: 0,
        setup_ns: None,
        rtt_idle: None,
        rtt_loaded: None,
        first_link_loss: None,
        cause: Some(Cause::Local),
        error: Some(error),
        interrupted: false,
    }
}
