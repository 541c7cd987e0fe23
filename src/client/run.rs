//! One measurement run: set up every planned route concurrently, register each in the route
//! table and start its pump (datagrams at once, payload on "go"), take the idle RTT baseline, then
//! load every route from the same instant, sample counters every interval, watch for stalls, and
//! report a summary. Emits every event of the run; knows nothing about the CLI.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::client::endpoints::EndpointPool;
use crate::client::plan::PlannedRoute;
use crate::client::probe::{self, Recorder};
use crate::client::pump::{self};
use crate::client::redial::Spares;
use crate::client::sampler::Sampler;
use crate::client::slot::Slot;
use crate::client::stripe::{Stripe, StripeConfig};
use crate::client::summary::{config_view, rtt_summary};
use crate::client::supervisor::{register, supervise, Proven, RouteCtx};
use crate::client::table::{RouteRef, RouteTable};
use crate::client::wiring::PathWiring;
use crate::report::events::{ErrorEvent, Event, ProbePhase, RouteEstablished, Start, Summary};
use crate::report::sink::EventSink;
use crate::wire::addr::NodeAddr;
use crate::wire::close;
use crate::wire::mode::Mode;
use crate::wire::setup::PROTOCOL_VERSION;
use crate::wire::stripe::TRANSFER_ID_LEN;
use crate::wire::transport::{self, SetupFailure};

/// How much longer than `pump::END_WAIT` a run waits for its pumps before aborting them: they
/// end their routes on their own, this only bounds a pump stuck in a write.
const PUMP_END_SLACK: Duration = Duration::from_secs(1);

/// Commit this binary was built from.
pub const GIT_SHA: &str = env!("MUX_BW_GIT_SHA");

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
    /// Length of the measured load phase (after `omit`).
    pub duration: Duration,
    /// Warm-up at the start of the load, sampled but left out of the summary.
    pub omit: Duration,
    /// Sample period.
    pub interval: Duration,
    /// Per-hop setup budget.
    pub setup_timeout: Duration,
    /// Deadline of every read and write.
    pub io_timeout: Duration,
    /// A route that moves no bytes this long gets a `route_stalled` warning.
    pub stall_timeout: Duration,
    /// Take an idle RTT baseline and probe under load.
    pub probe_rtt: bool,
    /// Probe every established route, not only the first (`--probe-rtt all`).
    pub probe_all: bool,
    /// Gap between loaded probes.
    pub probe_interval: Duration,
    /// Sent in every setup header.
    pub token: Vec<u8>,
    /// Set failed routes up again through spare relays.
    pub redial: bool,
    /// QUIC windows and congestion control of the client's connections.
    pub tuning: transport::Tuning,
    /// The lab's emulated links: every path is dialed through them. `None` on real networks.
    pub links: Option<Arc<dyn PathWiring>>,
    /// Cancelled when the load phase starts (the lab times its faults from it).
    pub load_started: CancellationToken,
    /// Reported in `start.warnings` (the CLI also prints them before the run).
    pub warnings: Vec<String>,
    /// How the relay pool was picked, for `start.config.pick`.
    pub pick: Option<crate::report::events::PickView>,
    /// One transfer striped over the routes (`--stripe`) instead of one flow per route.
    pub stripe: Option<StripeConfig>,
}

/// After a striped run's load, the least time it waits for the segments in flight to arrive in
/// order before counting the rest as missing (it waits `--io-timeout` if that is longer: a
/// route whose bytes are stuck fails by then, and they are resent over the others).
pub const STRIPE_DRAIN: Duration = Duration::from_secs(2);

/// Runs the whole measurement and returns its summary (also emitted as the last event).
/// `interrupt` ends the run early with a summary (Ctrl-C); so does a closed stdout.
pub async fn run(cfg: &RunConfig, sink: Arc<EventSink>, interrupt: CancellationToken) -> Summary {
    let stop = interrupt.child_token();
    // A sized transfer ends the run (through `stop`) once it all arrived.
    let stripe = cfg
        .stripe
        .map(|c| Arc::new(Stripe::new(c, transfer_id(), stop.clone())));
    sink.emit(Event::Start(Start {
        tool: "mux-bw".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        protocol_version: PROTOCOL_VERSION,
        git_sha: GIT_SHA.into(),
        config: config_view(cfg, stripe.as_deref()),
        warnings: cfg.warnings.clone(),
    }));
    // Owned by the run: it ends when the run stops, whatever stopped it.
    let stdout_watch = {
        let (gone, stop) = (sink.stdout_gone(), stop.clone());
        tokio::spawn(async move {
            tokio::select! {
                _ = gone.cancelled() => stop.cancel(),
                _ = stop.cancelled() => {}
            }
        })
    };
    let ctx = route_ctx(cfg, sink.clone(), stripe.clone());
    let Setups {
        slots,
        setup_errors,
        mut pumps,
    } = set_up(cfg, &ctx, &stop).await;
    let idle = idle_baseline(cfg, &ctx, &stop).await;

    // Load: every pump starts at the same instant.
    let load_start = tokio::time::Instant::now();
    ctx.go.cancel();
    cfg.load_started.cancel();
    let prober = cfg
        .probe_rtt
        .then(|| probe::spawn_prober(ctx.clone(), cfg.probe_interval, cfg.probe_all));
    let mut sampler = Sampler::new(cfg, &slots, load_start, stripe.clone());
    let load_over = CancellationToken::new();
    let deadline = end_load_at(sampler.deadline, &load_over, &ctx);
    let mut end = load_start;
    let any_route = slots
        .iter()
        .any(|s| s.established.load(Ordering::Relaxed) || s.pending.load(Ordering::Relaxed));
    if any_route && !stop.is_cancelled() {
        end = sampler.run(cfg, &slots, &sink, &stop, &load_over).await;
    }
    if let Some(s) = &stripe {
        s.close_intake();
        // A route whose bytes are stuck fails after --io-timeout and they are resent.
        s.drain(STRIPE_DRAIN.max(cfg.io_timeout), &interrupt).await;
    }
    ctx.cancel.cancel();
    deadline.abort();
    let loaded = match prober {
        Some(p) => p.await.ok(),
        None => None,
    };
    // Pumps end their routes on cancel (`pump::END_WAIT` at most); bound the wait anyway.
    let _ = tokio::time::timeout(pump::END_WAIT + PUMP_END_SLACK, async {
        while pumps.join_next().await.is_some() {}
    })
    .await;
    pumps.abort_all();

    let rtt = loaded.map(|l| rtt_summary(&idle.first, idle.route, &l, &idle.per_route));
    let mut summary = sampler.summary(cfg, &slots, &setup_errors, end, interrupt.is_cancelled());
    summary.rtt = rtt;
    sink.emit(Event::Summary(summary.clone()));
    drain_endpoints(&ctx).await;
    stop.cancel();
    let _ = stdout_watch.await;
    summary
}

/// The load ends at `at` even if the sampler is behind (a slow output, a busy CPU): the pumps
/// stop, or a striped transfer stops taking new bytes (those in flight still arrive); then
/// `over` fires.
fn end_load_at(
    at: tokio::time::Instant,
    over: &CancellationToken,
    ctx: &RouteCtx,
) -> tokio::task::JoinHandle<()> {
    let (over, pumps, stripe) = (over.clone(), ctx.cancel.clone(), ctx.stripe.clone());
    tokio::spawn(async move {
        tokio::time::sleep_until(at).await;
        match stripe {
            Some(s) => s.close_intake(),
            None => pumps.cancel(),
        }
        over.cancel();
    })
}

/// The shared state of the run's route supervisors.
fn route_ctx(cfg: &RunConfig, sink: Arc<EventSink>, stripe: Option<Arc<Stripe>>) -> Arc<RouteCtx> {
    let spares = cfg.redial.then(|| {
        let routes: Vec<(u32, Vec<NodeAddr>)> = cfg
            .routes
            .iter()
            .map(|r| (r.index, r.path.clone()))
            .collect();
        Mutex::new(Spares::new(cfg.dst, cfg.relays.clone(), &routes))
    });
    Arc::new(RouteCtx {
        mode: cfg.mode,
        tuning: cfg.tuning,
        links: cfg.links.clone(),
        io_timeout: cfg.io_timeout,
        stall_timeout: cfg.stall_timeout,
        setup_timeout: cfg.setup_timeout,
        token: cfg.token.clone(),
        dst: cfg.dst.id,
        endpoints: Mutex::new(EndpointPool::new()),
        table: Arc::new(RouteTable::default()),
        sink,
        go: CancellationToken::new(),
        cancel: CancellationToken::new(),
        spares,
        up_order: Mutex::new(Vec::new()),
        stripe,
    })
}

/// A fresh transfer id: random, so no two runs (or clients) share a transfer at a destination.
/// Without system randomness, the clock and a counter still keep this process's runs apart.
fn transfer_id() -> [u8; TRANSFER_ID_LEN] {
    use ring::rand::SecureRandom;
    let mut id = [0u8; TRANSFER_ID_LEN];
    if ring::rand::SystemRandom::new().fill(&mut id).is_err() {
        static RUNS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        id[..8].copy_from_slice(&now.to_le_bytes());
        id[8..].copy_from_slice(&RUNS.fetch_add(1, Ordering::Relaxed).to_le_bytes());
    }
    id
}

/// What the setup phase leaves: every planned route (by index; a setup that panicked leaves a
/// gap), the setups that failed, and one supervisor task per route that is up or redialed.
struct Setups {
    slots: Vec<Arc<Slot>>,
    setup_errors: Vec<(PlannedRoute, SetupFailure)>,
    pumps: JoinSet<()>,
}

/// Sets every planned route up at once; each gets its supervisor (and pump) as soon as it is up.
async fn set_up(cfg: &RunConfig, ctx: &Arc<RouteCtx>, stop: &CancellationToken) -> Setups {
    let mut setups = JoinSet::new();
    for route in cfg.routes.clone() {
        let ctx = ctx.clone();
        setups.spawn(async move {
            let t = Instant::now();
            let r = ctx.setup(route.index, &route.path).await;
            (route, t.elapsed(), r)
        });
    }
    let mut done = Setups {
        slots: Vec::new(),
        setup_errors: Vec::new(),
        pumps: JoinSet::new(),
    };
    loop {
        let next = tokio::select! {
            n = setups.join_next() => n,
            _ = stop.cancelled() => break,
        };
        let Some(joined) = next else { break };
        match joined {
            Ok((route, took, result)) => done.add(ctx, route, took, result),
            // Only a panic ends a setup task this way; report it rather than lose the route.
            Err(e) => ctx.sink.emit(Event::Error(ErrorEvent {
                error: format!("route setup task failed: {e}"),
            })),
        }
    }
    setups.abort_all();
    done.slots.sort_by_key(|s| s.index);
    done
}

impl Setups {
    /// Takes one finished setup: an established route is registered and supervised; a failed one
    /// is reported and stays in the samples, supervised (so redialed, `pending` meanwhile) only
    /// with `--redial`.
    fn add(
        &mut self,
        ctx: &Arc<RouteCtx>,
        route: PlannedRoute,
        took: Duration,
        result: Result<Proven, SetupFailure>,
    ) {
        let slot = Arc::new(Slot::new(route.index, route.path.clone()));
        let first = match result {
            Ok((link, key)) => {
                ctx.sink.emit(Event::RouteEstablished(RouteEstablished {
                    route_index: route.index,
                    path: route.path_ids(),
                    hops: route.hops(),
                    setup_ns: took.as_nanos() as u64,
                }));
                let Some(live) = register(ctx, &slot, &link, key, route.path.clone()) else {
                    return;
                };
                Some((link, live))
            }
            Err(f) => {
                ctx.setup_failed(route.index, &f, route.path_ids());
                self.setup_errors.push((route, f));
                slot.failed.store(true, Ordering::Relaxed);
                if ctx.spares.is_none() {
                    self.slots.push(slot);
                    return;
                }
                slot.pending.store(true, Ordering::Relaxed);
                None
            }
        };
        self.slots.push(slot.clone());
        self.pumps.spawn(supervise(ctx.clone(), slot, first));
    }
}

/// The idle RTT baseline before the load: `IDLE_PROBES` probes on the first route that came up
/// (and with `--probe-rtt all` on every established route, all at once, each on its own).
async fn idle_baseline(cfg: &RunConfig, ctx: &Arc<RouteCtx>, stop: &CancellationToken) -> Idle {
    let first = ctx.up_order().first().copied();
    let mut idle = Idle {
        first: Recorder::default(),
        route: first,
        per_route: BTreeMap::new(),
    };
    let routes: Vec<RouteRef> = match (cfg.probe_rtt, cfg.probe_all) {
        (false, _) => Vec::new(),
        (true, true) => ctx.up_order().clone(),
        (true, false) => first.into_iter().collect(),
    };
    let mut probing = JoinSet::new();
    for r in routes {
        let (ctx, stop) = (ctx.clone(), stop.clone());
        probing.spawn(async move {
            let mut rec = Recorder::default();
            for i in 0..probe::IDLE_PROBES {
                if stop.is_cancelled() {
                    break;
                }
                if i > 0 {
                    tokio::time::sleep(probe::IDLE_GAP).await;
                }
                rec.add(&probe::probe_once(&ctx.table, r, ProbePhase::Idle, &ctx.sink).await);
            }
            (r, rec)
        });
    }
    while let Some(done) = probing.join_next().await {
        let Ok((r, rec)) = done else { continue };
        if Some(r) == first {
            idle.first = rec.clone();
        }
        if cfg.probe_all {
            idle.per_route.insert(r.index, rec);
        }
    }
    idle
}

/// The idle baseline: the first route's probes and, with `--probe-rtt all`, every route's.
struct Idle {
    first: Recorder,
    route: Option<RouteRef>,
    per_route: BTreeMap<u32, Recorder>,
}

/// How long the client endpoints may drain at the end: a close lost on a congested link is
/// repeated while its endpoint drains.
const DRAIN: Duration = Duration::from_secs(1);

/// Lets close frames reach the peers before the process exits: every endpoint drains at the
/// same time, bounded by `DRAIN`.
async fn drain_endpoints(ctx: &RouteCtx) {
    let endpoints: Vec<_> = ctx
        .endpoints
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .drain()
        .collect();
    let mut draining = JoinSet::new();
    for ep in endpoints {
        ep.close(close::CLOSE_DONE, b"run over");
        draining.spawn(async move { ep.wait_idle().await });
    }
    let _ = tokio::time::timeout(DRAIN, async {
        while draining.join_next().await.is_some() {}
    })
    .await;
}

/// A one-route direct configuration for unit tests.
#[cfg(test)]
pub(crate) fn test_config(omit: Duration, duration: Duration) -> RunConfig {
    use crate::wire::addr::test_node;
    RunConfig {
        dst: test_node(0),
        relays: Vec::new(),
        routes: vec![crate::client::plan::PlannedRoute {
            index: 0,
            path: vec![test_node(0)],
        }],
        min_hops: 1,
        allow_overlap: false,
        mode: Mode::Up,
        duration,
        omit,
        interval: Duration::from_secs(1),
        setup_timeout: Duration::from_secs(5),
        io_timeout: Duration::from_secs(30),
        stall_timeout: Duration::from_secs(1),
        probe_rtt: false,
        probe_all: false,
        probe_interval: Duration::from_millis(100),
        token: Vec::new(),
        redial: false,
        tuning: Default::default(),
        links: None,
        load_started: CancellationToken::new(),
        warnings: Vec::new(),
        pick: None,
        stripe: None,
    }
}
