//! One measurement run: set up every planned route concurrently, start one pump per established
//! route at the same instant, sample the counters every interval, and report a summary.
//! Emits every event of the run; knows nothing about the CLI.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::addr::NodeAddr;
use crate::events::{
    ConfigView, Event, EventSink, RouteEstablished, RouteFailure, RouteSample, RouteSetupFailed,
    RouteState, RouteSummary, Sample, Start, Summary,
};
use crate::protocol::{Mode, SetupRequest, PROTOCOL_VERSION};
use crate::pump::{self, Counters};
use crate::route::PlannedRoute;
use crate::transport::{self, Link, SetupFailure};

/// A validated run configuration: everything `run` needs, nothing left to parse.
#[derive(Clone, Debug)]
pub struct RunConfig {
    /// Where every route ends.
    pub dst: NodeAddr,
    /// The relay pool the plan was drawn from (reported in `start`).
    pub relays: Vec<NodeAddr>,
    /// The routes to set up, by index.
    pub routes: Vec<PlannedRoute>,
    /// As given; reported in `start`.
    pub min_hops: usize,
    /// As given; reported in `start`.
    pub allow_overlap: bool,
    /// Data pattern.
    pub mode: Mode,
    /// Length of the load phase.
    pub duration: Duration,
    /// Sample period.
    pub interval: Duration,
    /// Per-hop setup budget.
    pub setup_timeout: Duration,
    /// Deadline of every read and write.
    pub io_timeout: Duration,
    /// Sent in every setup header.
    pub token: Vec<u8>,
}

/// Why a run could not even start.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The client endpoint could not be created.
    #[error(transparent)]
    Endpoint(#[from] transport::EndpointError),
}

/// State of one established route, shared between its pump task and the sampler.
struct RouteHandle {
    index: u32,
    counters: Counters,
    /// Set once, when the pump fails; read by the sampler.
    failed: AtomicBool,
    /// The failure, for the summary.
    error: Mutex<Option<String>>,
}

/// Runs the whole measurement and returns its summary (also emitted as the last event).
pub async fn run(
    cfg: &RunConfig,
    sink: Arc<EventSink>,
    interrupt: CancellationToken,
) -> Result<Summary, RunError> {
    sink.emit(Event::Start(Start {
        tool: "mux-bw",
        version: env!("CARGO_PKG_VERSION"),
        protocol_version: PROTOCOL_VERSION,
        config: config_view(cfg),
    }));
    let endpoint = transport::client_endpoint(cfg.dst.addr)?;

    let mut setups = JoinSet::new();
    for route in cfg.routes.clone() {
        let endpoint = endpoint.clone();
        let req = SetupRequest {
            route_index: route.index,
            hop_index: 0,
            mode: cfg.mode,
            setup_timeout_ms: cfg.setup_timeout.as_millis().min(u32::MAX as u128) as u32,
            token: cfg.token.clone(),
            next: route.path[1..].to_vec(),
        };
        let timeout = cfg.setup_timeout;
        setups.spawn(async move {
            let t = Instant::now();
            let r = transport::setup_link(&endpoint, &route.path[0], &req, timeout).await;
            (route, t.elapsed(), r)
        });
    }
    let mut links: Vec<(PlannedRoute, Link)> = Vec::new();
    let mut setup_errors: Vec<(PlannedRoute, SetupFailure)> = Vec::new();
    let mut interrupted = false;
    loop {
        let next = tokio::select! {
            n = setups.join_next() => n,
            _ = interrupt.cancelled() => { interrupted = true; break; }
        };
        let Some(joined) = next else { break };
        let (route, took, result) = match joined {
            Ok(x) => x,
            Err(e) => {
                // A setup task can only end this way by panicking, which is a bug; report it.
                sink.emit(Event::Error(crate::events::ErrorEvent {
                    error: format!("route setup task failed: {e}"),
                }));
                continue;
            }
        };
        match result {
            Ok(link) => {
                sink.emit(Event::RouteEstablished(RouteEstablished {
                    route_index: route.index,
                    path: route.path_ids(),
                    hops: route.hops(),
                    setup_ns: took.as_nanos() as u64,
                }));
                links.push((route, link));
            }
            Err(f) => {
                sink.emit(Event::RouteSetupFailed(RouteSetupFailed {
                    route_index: route.index,
                    failed_hop: f.failed_hop,
                    node: f.node.map(|n| n.to_string()),
                    error: f.message.clone(),
                    path: route.path_ids(),
                }));
                setup_errors.push((route, f));
            }
        }
    }
    setups.abort_all();
    links.sort_by_key(|(r, _)| r.index);

    let load_start = Instant::now();
    let stop = CancellationToken::new();
    let mut pumps = JoinSet::new();
    let mut handles = Vec::with_capacity(links.len());
    let mut paths = Vec::with_capacity(links.len());
    for (route, link) in links {
        let h = Arc::new(RouteHandle {
            index: route.index,
            counters: Counters::default(),
            failed: AtomicBool::new(false),
            error: Mutex::new(None),
        });
        handles.push(h.clone());
        paths.push(route);
        let (mode, io_timeout, cancel, sink) =
            (cfg.mode, cfg.io_timeout, stop.child_token(), sink.clone());
        pumps.spawn(async move {
            let started = Instant::now();
            let result = pump::pump(link, mode, io_timeout, &h.counters, cancel.clone()).await;
            if let Err(error) = result {
                if !cancel.is_cancelled() {
                    let (sent, received) = h.counters.snapshot();
                    h.failed.store(true, Ordering::Relaxed);
                    sink.emit(Event::RouteFailure(RouteFailure {
                        route_index: h.index,
                        error: error.clone(),
                        bytes_sent_before_failure: sent,
                        bytes_received_before_failure: received,
                        elapsed_ns: started.elapsed().as_nanos() as u64,
                    }));
                    if let Ok(mut slot) = h.error.lock() {
                        *slot = Some(error);
                    }
                }
            }
        });
    }

    let mut end = load_start;
    if !handles.is_empty() && !interrupted {
        let mut prev: Vec<(u64, u64)> = vec![(0, 0); handles.len()];
        let deadline = load_start + cfg.duration;
        let mut interval_start = load_start;
        loop {
            let tick = (interval_start + cfg.interval).min(deadline);
            tokio::select! {
                _ = tokio::time::sleep_until(tick.into()) => {}
                _ = interrupt.cancelled() => { interrupted = true; }
            }
            let now = if interrupted { Instant::now() } else { tick };
            sink.emit(Event::Sample(sample(
                cfg.mode,
                &handles,
                &mut prev,
                interval_start - sink.start(),
                now - sink.start(),
            )));
            interval_start = now;
            if interrupted || now >= deadline {
                end = now;
                break;
            }
        }
    }
    stop.cancel();
    // Pumps close their links on cancel; bound the wait in case a close blocks.
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        while pumps.join_next().await.is_some() {}
    })
    .await;
    pumps.abort_all();
    let summary = summarize(
        cfg,
        &paths,
        &handles,
        &setup_errors,
        end - load_start,
        interrupted,
    );
    sink.emit(Event::Summary(summary.clone()));
    endpoint.close(transport::CLOSE_DONE, b"run over");
    let _ = tokio::time::timeout(Duration::from_millis(500), endpoint.wait_idle()).await;
    Ok(summary)
}

fn config_view(cfg: &RunConfig) -> ConfigView {
    ConfigView {
        to: cfg.dst.uri(),
        relays: cfg.relays.iter().map(NodeAddr::uri).collect(),
        routes: cfg.routes.len(),
        min_hops: cfg.min_hops,
        mode: cfg.mode,
        duration_ns: cfg.duration.as_nanos() as u64,
        interval_ns: cfg.interval.as_nanos() as u64,
        setup_timeout_ns: cfg.setup_timeout.as_nanos() as u64,
        io_timeout_ns: cfg.io_timeout.as_nanos() as u64,
        allow_overlap: cfg.allow_overlap,
        planned_paths: cfg.routes.iter().map(PlannedRoute::path_ids).collect(),
    }
}

/// Goodput in the run's direction for one route's (sent, received).
fn directional(mode: Mode, (sent, received): (u64, u64)) -> u64 {
    match mode {
        Mode::Up => sent,
        Mode::Down => received,
    }
}

fn bps(bytes: u64, over: Duration) -> u64 {
    let secs = over.as_secs_f64();
    if secs <= 0.0 {
        0
    } else {
        (bytes as f64 * 8.0 / secs) as u64
    }
}

fn sample(
    mode: Mode,
    handles: &[Arc<RouteHandle>],
    prev: &mut [(u64, u64)],
    start: Duration,
    end: Duration,
) -> Sample {
    let span = end.saturating_sub(start);
    let mut routes = Vec::with_capacity(handles.len());
    let mut aggregate = 0;
    for (h, p) in handles.iter().zip(prev.iter_mut()) {
        let now = h.counters.snapshot();
        let delta = (now.0.saturating_sub(p.0), now.1.saturating_sub(p.1));
        *p = now;
        aggregate += directional(mode, delta);
        routes.push(RouteSample {
            route_index: h.index,
            bytes_sent: now.0,
            bytes_received: now.1,
            sent_bps: bps(delta.0, span),
            received_bps: bps(delta.1, span),
            state: if h.failed.load(Ordering::Relaxed) {
                RouteState::Failed
            } else {
                RouteState::Up
            },
        });
    }
    Sample {
        interval_start_ns: start.as_nanos() as u64,
        interval_end_ns: end.as_nanos() as u64,
        omitted: false,
        active_routes: routes.iter().filter(|r| r.state == RouteState::Up).count(),
        aggregate_bps: bps(aggregate, span),
        routes,
    }
}

fn summarize(
    cfg: &RunConfig,
    paths: &[PlannedRoute],
    handles: &[Arc<RouteHandle>],
    setup_errors: &[(PlannedRoute, SetupFailure)],
    load: Duration,
    interrupted: bool,
) -> Summary {
    let mut routes = Vec::with_capacity(cfg.routes.len());
    let mut aggregate_bytes = 0;
    let mut failed = 0;
    for (route, h) in paths.iter().zip(handles) {
        let counts = h.counters.snapshot();
        let error = h.error.lock().ok().and_then(|e| e.clone());
        failed += usize::from(error.is_some());
        aggregate_bytes += directional(cfg.mode, counts);
        routes.push(RouteSummary {
            route_index: route.index,
            path: route.path_ids(),
            hops: route.hops(),
            state: if error.is_some() { "failed" } else { "up" },
            bytes_sent: counts.0,
            bytes_received: counts.1,
            mean_bps: bps(directional(cfg.mode, counts), load),
            error,
        });
    }
    for (route, f) in setup_errors {
        routes.push(RouteSummary {
            route_index: route.index,
            path: route.path_ids(),
            hops: route.hops(),
            state: "setup_failed",
            bytes_sent: 0,
            bytes_received: 0,
            mean_bps: 0,
            error: Some(f.message.clone()),
        });
    }
    routes.sort_by_key(|r| r.route_index);
    Summary {
        routes_planned: cfg.routes.len(),
        routes_established: handles.len(),
        routes_failed: failed,
        duration_ns: load.as_nanos() as u64,
        aggregate_bytes,
        aggregate_bps: bps(aggregate_bytes, load),
        interrupted,
        routes,
    }
}
