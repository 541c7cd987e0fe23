//! One measurement run: set up every planned route concurrently, register each in the route
//! table and start its pump (datagrams at once, payload on "go"), take the idle RTT baseline, then
//! load every route from the same instant, sample counters every interval, watch for stalls, and
//! report a summary. Emits every event of the run; knows nothing about the CLI.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::client::plan::PlannedRoute;
use crate::client::probe::{self, Recorder};
use crate::client::pump::{self, Counters, PumpError, RouteLive};
use crate::client::redial::{NoSpare, Spares};
use crate::client::table::{RouteRef, RouteTable};
use crate::client::wiring::PathWiring;
use crate::report::events::{
    ConfigView, ErrorEvent, Event, EventSink, ProbePhase, RouteEstablished, RouteFailure,
    RouteRedial, RouteSample, RouteSetupFailed, RouteStalled, RouteState, RouteSummary, RttSummary,
    Sample, Start, Summary,
};
use crate::wire::addr::NodeAddr;
use crate::wire::identity::NodeId;
use crate::wire::proof::{ClientHalf, ProofError, ReportKey, KEY_LEN};
use crate::wire::setup::{Mode, SetupRequest, PROTOCOL_VERSION};
use crate::wire::transport::{self, Link, SetupFailure};

/// Commit this binary was built from.
pub const GIT_SHA: &str = env!("MUX_BW_GIT_SHA");

/// How often the run checks for stalled routes (between samples).
const STALL_CHECK: Duration = Duration::from_millis(100);

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
}

/// One planned route as the run tracks it, across every incarnation (`--redial`).
struct Slot {
    index: u32,
    /// Shared by each incarnation's `RouteLive`; read by the sampler.
    counters: Arc<Counters>,
    /// Current (or last) path; locked only to read or replace it.
    path: Mutex<Vec<NodeAddr>>,
    /// Whether the route was ever established.
    established: AtomicBool,
    /// Set while the route is down after a failure; read by the sampler.
    failed: AtomicBool,
    /// Set by the sampler while the route moves no bytes (`--stall-timeout`).
    stalled: AtomicBool,
    /// Tells the route's pump that it stalled, so it looks for a silent hop.
    stall: tokio::sync::Notify,
    /// The failure that took it down, for the summary (cleared by a redial).
    error: Mutex<Option<PumpError>>,
    failures: AtomicU32,
    redials: AtomicU32,
    /// The first link's QUIC statistics across incarnations; locked only to read or swap.
    first_link: Mutex<FirstLink>,
}

/// The first link of every incarnation of a route, for cumulative loss figures.
#[derive(Default)]
struct FirstLink {
    /// (sent, lost) packets of the incarnations that ended.
    ended: (u64, u64),
    /// The current incarnation's connection, while it is up.
    live: Option<quinn::Connection>,
}

/// A route's first-link figures at an instant: cumulative packet counts over every incarnation,
/// and the current link's state while one is up.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct LinkReading {
    sent_packets: u64,
    lost_packets: u64,
    now: Option<transport::LinkStats>,
}

impl Slot {
    fn new(index: u32, path: Vec<NodeAddr>) -> Self {
        Slot {
            index,
            counters: Arc::new(Counters::default()),
            path: Mutex::new(path),
            established: AtomicBool::new(false),
            failed: AtomicBool::new(false),
            stalled: AtomicBool::new(false),
            stall: tokio::sync::Notify::new(),
            error: Mutex::new(None),
            failures: AtomicU32::new(0),
            redials: AtomicU32::new(0),
            first_link: Mutex::new(FirstLink::default()),
        }
    }

    fn first_link(&self) -> std::sync::MutexGuard<'_, FirstLink> {
        self.first_link.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A new incarnation's first link is up.
    fn link_up(&self, conn: quinn::Connection) {
        self.link_down();
        self.first_link().live = Some(conn);
    }

    /// The current incarnation ended: its counts join the totals.
    fn link_down(&self) {
        let mut l = self.first_link();
        if let Some(conn) = l.live.take() {
            let st = transport::LinkStats::of(&conn);
            l.ended.0 += st.sent_packets;
            l.ended.1 += st.lost_packets;
        }
    }

    fn link_reading(&self) -> LinkReading {
        let l = self.first_link();
        let now = l.live.as_ref().map(transport::LinkStats::of);
        let (sent, lost) = now.map_or((0, 0), |n| (n.sent_packets, n.lost_packets));
        LinkReading {
            sent_packets: l.ended.0 + sent,
            lost_packets: l.ended.1 + lost,
            now,
        }
    }

    fn path(&self) -> Vec<NodeAddr> {
        self.path.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn error(&self) -> Option<PumpError> {
        self.error.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn set_error(&self, e: Option<PumpError>) {
        *self.error.lock().unwrap_or_else(|p| p.into_inner()) = e;
    }
}

/// What every route supervisor needs; shared, read-only but for `spares`.
struct RouteCtx {
    mode: Mode,
    tuning: transport::Tuning,
    links: Option<Arc<dyn PathWiring>>,
    io_timeout: Duration,
    stall_timeout: Duration,
    setup_timeout: Duration,
    token: Vec<u8>,
    dst: NodeId,
    /// Client endpoints by first link (see `EndpointPool`). Locked only to look up, insert or
    /// drain.
    endpoints: Mutex<EndpointPool<quinn::Endpoint>>,
    table: Arc<RouteTable<Arc<RouteLive>>>,
    sink: Arc<EventSink>,
    /// Payload starts when this fires.
    go: CancellationToken,
    /// The run is over: pumps stop cleanly, redials give up.
    cancel: CancellationToken,
    /// With `--redial`: breakers and spare relays. Locked only to pick or record, never across I/O.
    spares: Option<Mutex<Spares>>,
    /// Routes in the order they first came up (probes use the first one still up). Locked only
    /// to push or copy.
    up_order: Mutex<Vec<RouteRef>>,
}

/// Most routes over one first link that share a client endpoint (UDP socket). Fewer sockets
/// and endpoint driver tasks save CPU per byte with many routes, but one endpoint's driver
/// receives for all of its connections and they all wait on one socket's send buffer: in the
/// loopback bench (docs/PERFORMANCE.md) one endpoint for all 256 routes lost a third of the
/// throughput; 32 did best at 256 routes, and caps of 8 to 32 were alike at 64.
const ROUTES_PER_ENDPOINT: usize = 32;

/// Client endpoints (UDP sockets) by first-hop address, each with the number of routes dialed
/// from it. Routes whose first link differs never share a socket, so one link's full queue cannot
/// block another link's sends (issue 6: 44 instead of 76 Mbit/s over four 20 mbit links); up to
/// `ROUTES_PER_ENDPOINT` routes over the same first link share one, as they share that link's
/// queue anyway.
struct EndpointPool<T> {
    by_first_hop: HashMap<SocketAddr, Vec<(T, usize)>>,
}

impl<T: Clone> EndpointPool<T> {
    fn new() -> Self {
        EndpointPool {
            by_first_hop: HashMap::new(),
        }
    }

    /// An endpoint for one more route whose first link goes to `first`; `make` makes a new one
    /// when every endpoint to `first` is full.
    fn get_or_make<E>(
        &mut self,
        first: SocketAddr,
        make: impl FnOnce() -> Result<T, E>,
    ) -> Result<T, E> {
        let pool = self.by_first_hop.entry(first).or_default();
        if let Some((ep, n)) = pool.last_mut().filter(|(_, n)| *n < ROUTES_PER_ENDPOINT) {
            *n += 1;
            return Ok(ep.clone());
        }
        let ep = make()?;
        pool.push((ep.clone(), 1));
        Ok(ep)
    }

    /// Every endpoint made, leaving the pool empty.
    fn drain(&mut self) -> impl Iterator<Item = T> + '_ {
        self.by_first_hop
            .drain()
            .flat_map(|(_, v)| v)
            .map(|(ep, _)| ep)
    }
}

/// `msg` with every address `from` of `pairs` (a whole address: not followed by a digit)
/// written as its `to`, in one pass, so a replacement is never replaced again.
fn unwire(msg: &str, pairs: &[(String, String)]) -> String {
    let mut out = String::with_capacity(msg.len());
    let mut rest = msg;
    'scan: while let Some(c) = rest.chars().next() {
        for (from, to) in pairs {
            if let Some(after) = rest.strip_prefix(from.as_str()) {
                if !after.starts_with(|c: char| c.is_ascii_digit()) {
                    out.push_str(to);
                    rest = after;
                    continue 'scan;
                }
            }
        }
        out.push(c);
        rest = &rest[c.len_utf8()..];
    }
    out
}

/// An established link whose destination proved itself, with the route's report key.
type Proven = (Link, ReportKey);

/// A route proof that does not verify means something between the client and the destination
/// changed the exchange: name the relays, the only ones who could.
fn proof_failure(e: &ProofError, path: &[NodeAddr]) -> String {
    let relays = &path[..path.len().saturating_sub(1)];
    if relays.is_empty() {
        return format!("the destination's route proof failed: {e}");
    }
    let names: Vec<String> = relays.iter().map(|n| n.id.to_string()).collect();
    format!(
        "the destination's route proof failed ({e}): relay path {} altered the setup",
        names.join(" -> ")
    )
}

/// Redial attempts per failure before a route stays down.
pub const MAX_REDIALS: u32 = 5;
/// Pause before the first redial attempt; doubled per attempt, capped at 2 s.
const REDIAL_BACKOFF: Duration = Duration::from_millis(200);

impl RouteCtx {
    fn up_order(&self) -> std::sync::MutexGuard<'_, Vec<RouteRef>> {
        self.up_order.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn spares(&self) -> Option<std::sync::MutexGuard<'_, Spares>> {
        self.spares
            .as_ref()
            .map(|m| m.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Sets up route `index` over `path` from the client endpoint of its first link, and checks
    /// the destination's route proof.
    async fn setup(&self, index: u32, path: &[NodeAddr]) -> Result<Proven, SetupFailure> {
        let Some(links) = &self.links else {
            return self.setup_over(index, path).await;
        };
        let wired = links.wire_path(path).map_err(|e| SetupFailure {
            failed_hop: None,
            node: None,
            message: format!("cannot set up emulated links: {e}"),
        })?;
        // Errors name the addresses dialed, which are the links' proxies: name the nodes'.
        self.setup_over(index, &wired).await.map_err(|mut f| {
            let pairs: Vec<(String, String)> = wired
                .iter()
                .zip(path)
                .filter(|(w, p)| w.addr != p.addr)
                .map(|(w, p)| (w.addr.to_string(), p.addr.to_string()))
                .collect();
            f.message = unwire(&f.message, &pairs);
            f
        })
    }

    async fn setup_over(&self, index: u32, path: &[NodeAddr]) -> Result<Proven, SetupFailure> {
        let endpoint = self.endpoint_for(path[0].addr)?;
        let unattributed = |message: String| SetupFailure {
            failed_hop: None,
            node: None,
            message,
        };
        let half = ClientHalf::new().map_err(|e| unattributed(e.to_string()))?;
        let req = self.setup_request(index, path, half.public());
        let link = transport::setup_link(&endpoint, &path[0], &req, self.setup_timeout).await?;
        match half.finish(self.dst, index, self.mode, &link.proof) {
            Ok(key) => Ok((link, key)),
            Err(e) => {
                link.conn
                    .close(transport::CLOSE_REFUSED, b"route proof failed");
                Err(unattributed(proof_failure(&e, path)))
            }
        }
    }

    /// The client endpoint for a first link to `first`, made when none has room.
    fn endpoint_for(&self, first: SocketAddr) -> Result<quinn::Endpoint, SetupFailure> {
        let mut pool = self.endpoints.lock().unwrap_or_else(|p| p.into_inner());
        pool.get_or_make(first, || {
            transport::client_endpoint(first, &self.tuning).map_err(|e| SetupFailure {
                failed_hop: None,
                node: None,
                message: format!("cannot create a client endpoint: {e}"),
            })
        })
    }

    fn setup_request(&self, index: u32, path: &[NodeAddr], key: [u8; KEY_LEN]) -> SetupRequest {
        SetupRequest {
            route_index: index,
            hop_index: 0,
            mode: self.mode,
            setup_timeout_ms: self.setup_timeout.as_millis().min(u128::from(u32::MAX)) as u32,
            token: self.token.clone(),
            client_key: key,
            next: path[1..].to_vec(),
        }
    }
}

/// Owns one route for the whole run: registers it, runs its pump, reports its failure, and with
/// `--redial` sets it up again through spare relays. Every lifecycle step of a route happens
/// here, one after another, so they can never race.
async fn supervise(ctx: Arc<RouteCtx>, slot: Arc<Slot>, mut next: Option<(Link, Arc<RouteLive>)>) {
    loop {
        let (link, live) = match next.take() {
            Some(x) => x,
            None => {
                let Some(((link, key), path)) = redial(&ctx, &slot).await else {
                    return;
                };
                match register(&ctx, &slot, &link, key, path) {
                    Some(live) => (link, live),
                    None => return,
                }
            }
        };
        let rref = live.rref;
        let started = Instant::now();
        let go = ctx.go.clone();
        let stalls = pump::StallWatch {
            notify: &slot.stall,
            after: ctx.stall_timeout,
        };
        let r = pump::pump(
            link,
            &live,
            ctx.mode,
            ctx.io_timeout,
            stalls,
            go,
            ctx.cancel.clone(),
        )
        .await;
        slot.link_down();
        ctx.table.remove(rref);
        let err = match r {
            Err(err) if !ctx.cancel.is_cancelled() => err,
            _ => return,
        };
        slot.failed.store(true, Ordering::Relaxed);
        slot.failures.fetch_add(1, Ordering::Relaxed);
        let counts = slot.counters.snapshot();
        let ev = failure_event(slot.index, &err, counts, started.elapsed());
        ctx.sink.emit(Event::RouteFailure(ev));
        if let Some(mut spares) = ctx.spares() {
            spares.failed(slot.index, err.node, Instant::now());
        }
        slot.set_error(Some(err));
        if ctx.spares.is_none() {
            return;
        }
    }
}

/// Makes an established link the route's current incarnation: registers it in the route table
/// (a duplicate is refused and closed), records its path, and marks the route up.
fn register(
    ctx: &RouteCtx,
    slot: &Slot,
    link: &Link,
    key: ReportKey,
    path: Vec<NodeAddr>,
) -> Option<Arc<RouteLive>> {
    let rref = RouteRef {
        dst: ctx.dst,
        index: slot.index,
    };
    let live = Arc::new(RouteLive::new(
        rref,
        path.clone(),
        link.conn.clone(),
        slot.counters.clone(),
        key,
    ));
    if let Err(e) = ctx.table.insert(rref, live.clone()) {
        ctx.sink.emit(Event::Error(ErrorEvent {
            error: e.to_string(),
        }));
        link.conn.close(transport::CLOSE_DONE, b"duplicate route");
        return None;
    }
    *slot.path.lock().unwrap_or_else(|p| p.into_inner()) = path;
    slot.link_up(link.conn.clone());
    if !slot.established.swap(true, Ordering::Relaxed) {
        ctx.up_order().push(rref);
    }
    slot.set_error(None);
    slot.failed.store(false, Ordering::Relaxed);
    Some(live)
}

/// Sets the route up again through spare relays, with backoff; `None` when the run ends or
/// every attempt failed.
async fn redial(ctx: &RouteCtx, slot: &Slot) -> Option<(Proven, Vec<NodeAddr>)> {
    let old = slot.path();
    let mut backoff = REDIAL_BACKOFF;
    for attempt in 1..=MAX_REDIALS {
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = ctx.cancel.cancelled() => return None,
        }
        backoff = (backoff * 2).min(Duration::from_secs(2));
        let picked = ctx
            .spares()
            .map(|mut s| s.pick(slot.index, old.len(), &old, Instant::now()))?;
        let path = match picked {
            Ok(p) => p,
            Err(NoSpare::DestinationBackoff(until)) => {
                tokio::select! {
                    _ = tokio::time::sleep_until(until.into()) => continue,
                    _ = ctx.cancel.cancelled() => return None,
                }
            }
            Err(NoSpare::NotEnoughRelays { .. }) => continue,
        };
        let t = Instant::now();
        let result = tokio::select! {
            r = ctx.setup(slot.index, &path) => r,
            _ = ctx.cancel.cancelled() => return None,
        };
        match result {
            Ok(link) => {
                if let Some(mut s) = ctx.spares() {
                    s.succeeded(&path);
                }
                slot.redials.fetch_add(1, Ordering::Relaxed);
                ctx.sink.emit(Event::RouteRedial(RouteRedial {
                    route_index: slot.index,
                    attempt,
                    path: path.iter().map(|n| n.id.to_string()).collect(),
                    hops: path.len(),
                    setup_ns: t.elapsed().as_nanos() as u64,
                }));
                return Some((link, path));
            }
            Err(f) => {
                ctx.sink.emit(Event::RouteSetupFailed(RouteSetupFailed {
                    route_index: slot.index,
                    failed_hop: f.failed_hop,
                    node: f.node.map(|n| n.to_string()),
                    error: f.message.clone(),
                    path: path.iter().map(|n| n.id.to_string()).collect(),
                }));
                if let Some(mut s) = ctx.spares() {
                    s.failed(slot.index, f.node, Instant::now());
                }
            }
        }
    }
    None
}

/// Builds the `route_failure` event for a pump that ended with `err`.
pub fn failure_event(
    route_index: u32,
    err: &PumpError,
    (sent, received): (u64, u64),
    elapsed: Duration,
) -> RouteFailure {
    RouteFailure {
        route_index,
        error: err.message.clone(),
        bytes_sent_before_failure: sent,
        bytes_received_before_failure: received,
        elapsed_ns: elapsed.as_nanos() as u64,
        failed_hop: err.failed_hop,
        node: err.node.map(|n| n.to_string()),
    }
}

/// Runs the whole measurement and returns its summary (also emitted as the last event).
/// `interrupt` ends the run early with a summary (Ctrl-C); so does a closed stdout.
pub async fn run(cfg: &RunConfig, sink: Arc<EventSink>, interrupt: CancellationToken) -> Summary {
    sink.emit(Event::Start(Start {
        tool: "mux-bw",
        version: env!("CARGO_PKG_VERSION"),
        protocol_version: PROTOCOL_VERSION,
        git_sha: GIT_SHA,
        config: config_view(cfg),
    }));
    let stop = interrupt.child_token();
    {
        let (gone, stop) = (sink.stdout_gone(), stop.clone());
        tokio::spawn(async move {
            tokio::select! {
                _ = gone.cancelled() => stop.cancel(),
                _ = stop.cancelled() => {}
            }
        });
    }

    // Setup: all routes at once; each established route gets its supervisor (and pump) at once.
    let table: Arc<RouteTable<Arc<RouteLive>>> = Arc::new(RouteTable::default());
    let go = CancellationToken::new();
    let cancel_pumps = CancellationToken::new();
    let spares = cfg.redial.then(|| {
        let routes: Vec<(u32, Vec<NodeAddr>)> = cfg
            .routes
            .iter()
            .map(|r| (r.index, r.path.clone()))
            .collect();
        Mutex::new(Spares::new(cfg.dst, cfg.relays.clone(), &routes))
    });
    let ctx = Arc::new(RouteCtx {
        mode: cfg.mode,
        tuning: cfg.tuning,
        links: cfg.links.clone(),
        io_timeout: cfg.io_timeout,
        stall_timeout: cfg.stall_timeout,
        setup_timeout: cfg.setup_timeout,
        token: cfg.token.clone(),
        dst: cfg.dst.id,
        endpoints: Mutex::new(EndpointPool::new()),
        table: table.clone(),
        sink: sink.clone(),
        go: go.clone(),
        cancel: cancel_pumps.clone(),
        spares,
        up_order: Mutex::new(Vec::new()),
    });
    let mut setups = JoinSet::new();
    for route in cfg.routes.clone() {
        let ctx = ctx.clone();
        setups.spawn(async move {
            let t = Instant::now();
            let r = ctx.setup(route.index, &route.path).await;
            (route, t.elapsed(), r)
        });
    }
    let mut slots: Vec<Arc<Slot>> = Vec::new();
    let mut setup_errors: Vec<(PlannedRoute, SetupFailure)> = Vec::new();
    let mut pumps = JoinSet::new();
    loop {
        let next = tokio::select! {
            n = setups.join_next() => n,
            _ = stop.cancelled() => break,
        };
        let Some(joined) = next else { break };
        let (route, took, result) = match joined {
            Ok(x) => x,
            Err(e) => {
                // Only a panic ends a setup task this way; report it rather than lose the route.
                sink.emit(Event::Error(ErrorEvent {
                    error: format!("route setup task failed: {e}"),
                }));
                continue;
            }
        };
        let slot = Arc::new(Slot::new(route.index, route.path.clone()));
        let first = match result {
            Ok((link, key)) => {
                sink.emit(Event::RouteEstablished(RouteEstablished {
                    route_index: route.index,
                    path: route.path_ids(),
                    hops: route.hops(),
                    setup_ns: took.as_nanos() as u64,
                }));
                match register(&ctx, &slot, &link, key, route.path.clone()) {
                    Some(live) => Some((link, live)),
                    None => continue,
                }
            }
            Err(f) => {
                sink.emit(Event::RouteSetupFailed(RouteSetupFailed {
                    route_index: route.index,
                    failed_hop: f.failed_hop,
                    node: f.node.map(|n| n.to_string()),
                    error: f.message.clone(),
                    path: route.path_ids(),
                }));
                if let Some(mut s) = ctx.spares() {
                    s.failed(route.index, f.node, Instant::now());
                }
                setup_errors.push((route, f));
                if ctx.spares.is_none() {
                    continue;
                }
                slot.failed.store(true, Ordering::Relaxed);
                None
            }
        };
        slots.push(slot.clone());
        pumps.spawn(supervise(ctx.clone(), slot, first));
    }
    setups.abort_all();
    slots.sort_by_key(|s| s.index);

    // Idle baseline on the first established route (routes were registered, in the order they
    // came up, before their supervisors started).
    let mut idle = Recorder::default();
    let idle_route = ctx.up_order().first().copied();
    if let (true, Some(r)) = (cfg.probe_rtt, idle_route) {
        for i in 0..probe::IDLE_PROBES {
            if stop.is_cancelled() {
                break;
            }
            if i > 0 {
                tokio::time::sleep(probe::IDLE_GAP).await;
            }
            idle.add(&probe::probe_once(&table, r, ProbePhase::Idle, &sink).await);
        }
    }

    // Load.
    let load_start = Instant::now();
    go.cancel();
    cfg.load_started.cancel();
    let prober = cfg.probe_rtt.then(|| {
        let (ctx, stop) = (ctx.clone(), cancel_pumps.clone());
        let gap = cfg.probe_interval;
        tokio::spawn(async move {
            let mut rec = Recorder::default();
            let mut probed: Vec<u32> = Vec::new();
            // One probe every `gap` whatever the RTT: probes overlap, so a slow or lost one
            // does not hold the next back.
            let mut inflight = JoinSet::new();
            let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + gap, gap);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            // A route counts as probed when one of its probes is counted: at the end of the
            // load the pumps leave the table while a last tick may still pick another route, and
            // that probe is never counted, so it must not make `routes_probed` claim a failover.
            let mut count = |rec: &mut Recorder, (index, outcome)| {
                rec.add(&outcome);
                if !probed.contains(&index) {
                    probed.push(index);
                }
            };
            loop {
                tokio::select! {
                    biased;
                    _ = stop.cancelled() => break,
                    Some(done) = inflight.join_next(), if !inflight.is_empty() => {
                        if let Ok(done) = done {
                            count(&mut rec, done);
                        }
                    }
                    _ = tick.tick() => {
                        // The first route that came up and is still up, whatever its index.
                        let order = ctx.up_order().clone();
                        let Some(r) = probe::target(&ctx.table, &order) else {
                            continue;
                        };
                        let ctx = ctx.clone();
                        inflight.spawn(async move {
                            let outcome =
                                probe::probe_once(&ctx.table, r, ProbePhase::Loaded, &ctx.sink)
                                    .await;
                            (r.index, outcome)
                        });
                    }
                }
            }
            // Count probes that finished (and emitted their event) before the stop; those still
            // in flight when the load ends are neither answered nor lost.
            while let Some(done) = inflight.try_join_next() {
                if let Ok(done) = done {
                    count(&mut rec, done);
                }
            }
            inflight.abort_all();
            (rec, probed)
        })
    });

    let mut sampler = Sampler::new(cfg, &slots, load_start);
    // The load ends at the deadline even if the sampler is behind (a slow output, a busy CPU).
    let deadline = {
        let (at, pumps) = (sampler.deadline, cancel_pumps.clone());
        tokio::spawn(async move {
            tokio::time::sleep_until(at.into()).await;
            pumps.cancel();
        })
    };
    let mut end = load_start;
    if !slots.is_empty() && !stop.is_cancelled() {
        end = sampler.run(cfg, &slots, &sink, &stop, &cancel_pumps).await;
    }
    cancel_pumps.cancel();
    deadline.abort();
    let loaded = match prober {
        Some(p) => p.await.ok(),
        None => None,
    };
    // Pumps end their routes on cancel (`pump::END_WAIT` at most); bound the wait anyway.
    let _ = tokio::time::timeout(pump::END_WAIT + Duration::from_secs(1), async {
        while pumps.join_next().await.is_some() {}
    })
    .await;
    pumps.abort_all();

    let rtt = loaded.map(|(rec, routes_probed)| {
        let (idle, loaded) = (idle.stats(), rec.stats());
        let route_index = idle_route
            .map(|r| r.index)
            .or(routes_probed.first().copied());
        // Idle and loaded figures compare only when they come from the same route.
        let same_route =
            route_index.is_some() && routes_probed.iter().all(|i| Some(*i) == route_index);
        RttSummary {
            route_index,
            latency_increase_ns: match (&idle, &loaded, same_route) {
                (Some(i), Some(l), true) => Some(l.p50_ns as i64 - i.p50_ns as i64),
                _ => None,
            },
            routes_probed,
            idle,
            loaded,
        }
    });
    // Stopped during the warm-up: nothing was measured, so count from the end.
    if sampler.baseline_at.is_none() {
        sampler.baseline = sampler.prev.clone();
    }
    let measured_from = sampler.baseline_at.unwrap_or(end);
    let mut summary = summarize(
        cfg,
        &slots,
        (&sampler.baseline, &sampler.prev),
        &setup_errors,
        end.saturating_duration_since(measured_from),
        interrupt.is_cancelled(),
        rtt,
    );
    summary.late_samples = sampler.late_samples;
    sink.emit(Event::Summary(summary.clone()));
    // Let close frames reach the peers before the process exits: every endpoint drains at the
    // same time (a close lost on a congested link is repeated while the endpoint drains), bounded.
    let endpoints: Vec<_> = ctx
        .endpoints
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .drain()
        .collect();
    let mut draining = JoinSet::new();
    for ep in endpoints {
        ep.close(transport::CLOSE_DONE, b"run over");
        draining.spawn(async move { ep.wait_idle().await });
    }
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        while draining.join_next().await.is_some() {}
    })
    .await;
    summary
}

fn config_view(cfg: &RunConfig) -> ConfigView {
    ConfigView {
        to: cfg.dst.uri(),
        relays: cfg.relays.iter().map(NodeAddr::uri).collect(),
        routes: cfg.routes.len(),
        min_hops: cfg.min_hops,
        mode: cfg.mode,
        duration_ns: cfg.duration.as_nanos() as u64,
        omit_ns: cfg.omit.as_nanos() as u64,
        stall_timeout_ns: cfg.stall_timeout.as_nanos() as u64,
        probe_rtt: cfg.probe_rtt,
        probe_interval_ns: cfg.probe_interval.as_nanos() as u64,
        interval_ns: cfg.interval.as_nanos() as u64,
        setup_timeout_ns: cfg.setup_timeout.as_nanos() as u64,
        io_timeout_ns: cfg.io_timeout.as_nanos() as u64,
        allow_overlap: cfg.allow_overlap,
        redial: cfg.redial,
        tuning: cfg.tuning.into(),
        links: cfg.links.as_ref().map(|l| l.view()),
        planned_paths: cfg.routes.iter().map(PlannedRoute::path_ids).collect(),
    }
}

/// Goodput in the run's direction for one route's (sent, received).
fn directional(mode: Mode, (sent, received): (u64, u64)) -> u64 {
    match mode {
        Mode::Up => sent,
        Mode::Down | Mode::Echo => received,
        Mode::Bidir => sent + received,
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

/// One route at an instant: goodput counters (sent, received) and its first link.
#[derive(Clone, Copy, Debug, Default)]
struct Reading {
    counts: (u64, u64),
    link: LinkReading,
}

/// Per-route progress tracking for stall detection.
struct Progress {
    last_total: u64,
    since: Instant,
    stalled: bool,
}

/// Samples counters at interval boundaries and watches for stalls.
struct Sampler {
    prev: Vec<Reading>,
    progress: Vec<Progress>,
    load_start: Instant,
    omit_end: Instant,
    deadline: Instant,
    /// Readings when the omitted warm-up ended: the summary counts from here.
    baseline: Vec<Reading>,
    /// When `baseline` was taken.
    baseline_at: Option<Instant>,
    /// Samples taken later than `late_after` past their due time.
    late_samples: u32,
    late_after: Duration,
}

/// How late a sample may be taken before it counts as late: a tenth of the interval, and never
/// less than a few timer ticks.
fn late_after(interval: Duration) -> Duration {
    (interval / 10).max(Duration::from_millis(5))
}

impl Sampler {
    fn new(cfg: &RunConfig, slots: &[Arc<Slot>], load_start: Instant) -> Self {
        let omit_end = load_start + cfg.omit;
        Sampler {
            prev: vec![Reading::default(); slots.len()],
            progress: slots
                .iter()
                .map(|_| Progress {
                    last_total: 0,
                    since: load_start,
                    stalled: false,
                })
                .collect(),
            load_start,
            omit_end,
            deadline: omit_end + cfg.duration,
            baseline: vec![Reading::default(); slots.len()],
            baseline_at: cfg.omit.is_zero().then_some(load_start),
            late_samples: 0,
            late_after: late_after(cfg.interval),
        }
    }

    /// Samples until the deadline or `stop`; returns when the load ended. Every interval ends
    /// when its sample is actually taken, so a late sampler stretches the interval instead of
    /// inflating its rate; `load_over` (fired at the deadline by a timer of its own, whatever
    /// the sampler is doing) ends the last interval no later than the deadline.
    async fn run(
        &mut self,
        cfg: &RunConfig,
        slots: &[Arc<Slot>],
        sink: &EventSink,
        stop: &CancellationToken,
        load_over: &CancellationToken,
    ) -> Instant {
        let mut interval_start = self.load_start;
        let mut check = tokio::time::interval(STALL_CHECK);
        check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let mut due = (interval_start + cfg.interval).min(self.deadline);
            if interval_start < self.omit_end {
                due = due.min(self.omit_end);
            }
            let stopped = tokio::select! {
                _ = tokio::time::sleep_until(due.into()) => false,
                _ = check.tick() => {
                    self.check_stalls(cfg, slots, sink, Instant::now());
                    // Without --redial a failed route stays down: once all are down, stop.
                    let all_down = slots.iter().all(|s| s.failed.load(Ordering::Relaxed));
                    if !all_down || cfg.redial {
                        continue;
                    }
                    true
                }
                _ = stop.cancelled() => true,
                _ = load_over.cancelled() => true,
            };
            let mut now = Instant::now();
            let late = !stopped && now.saturating_duration_since(due) > self.late_after;
            if load_over.is_cancelled() {
                // The pumps stopped at the deadline: nothing moved after it.
                now = now.min(self.deadline);
            }
            self.late_samples += u32::from(late);
            // Intervals are cut at the end of the warm-up, so one that began in it is all warm-up.
            let omitted = interval_start < self.omit_end && !cfg.omit.is_zero();
            let mut sample = self.sample(
                cfg.mode,
                slots,
                interval_start - sink.start(),
                now - sink.start(),
                omitted,
            );
            sample.late = late;
            sink.emit(Event::Sample(sample));
            if self.baseline_at.is_none() && now >= self.omit_end {
                self.baseline = self.prev.clone();
                self.baseline_at = Some(now);
            }
            interval_start = now;
            if stopped || now >= self.deadline {
                return now;
            }
        }
    }

    fn check_stalls(
        &mut self,
        cfg: &RunConfig,
        slots: &[Arc<Slot>],
        sink: &EventSink,
        now: Instant,
    ) {
        for (slot, p) in slots.iter().zip(self.progress.iter_mut()) {
            if slot.failed.load(Ordering::Relaxed) {
                continue;
            }
            let (sent, received) = slot.counters.snapshot();
            if sent + received != p.last_total {
                p.last_total = sent + received;
                p.since = now;
                p.stalled = false;
                slot.stalled.store(false, Ordering::Relaxed);
            } else if !p.stalled && now.duration_since(p.since) >= cfg.stall_timeout {
                p.stalled = true;
                slot.stalled.store(true, Ordering::Relaxed);
                slot.stall.notify_one();
                sink.emit(Event::RouteStalled(RouteStalled {
                    route_index: slot.index,
                    stalled_ns: now.duration_since(p.since).as_nanos() as u64,
                    bytes_sent: sent,
                    bytes_received: received,
                }));
            }
        }
    }

    fn sample(
        &mut self,
        mode: Mode,
        slots: &[Arc<Slot>],
        start: Duration,
        end: Duration,
        omitted: bool,
    ) -> Sample {
        let span = end.saturating_sub(start);
        let mut routes = Vec::with_capacity(slots.len());
        let mut aggregate = 0;
        for ((slot, p), prog) in slots.iter().zip(self.prev.iter_mut()).zip(&self.progress) {
            let now = slot.counters.snapshot();
            let link = slot.link_reading();
            let delta = (
                now.0.saturating_sub(p.counts.0),
                now.1.saturating_sub(p.counts.1),
            );
            let lost = link.lost_packets.saturating_sub(p.link.lost_packets);
            *p = Reading { counts: now, link };
            aggregate += directional(mode, delta);
            routes.push(RouteSample {
                route_index: slot.index,
                bytes_sent: now.0,
                bytes_received: now.1,
                sent_bps: bps(delta.0, span),
                received_bps: bps(delta.1, span),
                state: if slot.failed.load(Ordering::Relaxed) {
                    RouteState::Failed
                } else if prog.stalled {
                    RouteState::Stalled
                } else {
                    RouteState::Up
                },
                lost_packets: lost,
                cwnd_bytes: link.now.map(|l| l.cwnd),
                link_rtt_ns: link.now.map(|l| l.rtt.as_nanos() as u64),
            });
        }
        Sample {
            interval_start_ns: start.as_nanos() as u64,
            interval_end_ns: end.as_nanos() as u64,
            omitted,
            active_routes: routes
                .iter()
                .filter(|r| r.state != RouteState::Failed)
                .count(),
            aggregate_bps: bps(aggregate, span),
            late: false,
            routes,
        }
    }
}

/// `counts`: each slot's counters when the measured part began and when it ended (the last
/// sample's reading, so the summary agrees with the samples even if a late report arrives).
fn summarize(
    cfg: &RunConfig,
    slots: &[Arc<Slot>],
    (baseline, end): (&[Reading], &[Reading]),
    setup_errors: &[(PlannedRoute, SetupFailure)],
    measured: Duration,
    interrupted: bool,
    rtt: Option<RttSummary>,
) -> Summary {
    let mut routes = Vec::with_capacity(cfg.routes.len());
    let mut aggregate_bytes = 0;
    let mut failed = 0;
    let mut established = 0;
    let setup_failed = |route_index: u32, path: Vec<String>, f: &SetupFailure| RouteSummary {
        route_index,
        hops: path.len(),
        path,
        state: "setup_failed",
        bytes_sent: 0,
        bytes_received: 0,
        mean_bps: 0,
        sent_packets: 0,
        lost_packets: 0,
        error: Some(f.message.clone()),
        failures: 0,
        redials: 0,
        failed_hop: f.failed_hop,
        node: f.node.map(|n| n.to_string()),
    };
    for ((slot, base), now) in slots.iter().zip(baseline).zip(end) {
        let path = slot.path();
        let path_ids: Vec<String> = path.iter().map(|n| n.id.to_string()).collect();
        if !slot.established.load(Ordering::Relaxed) {
            if let Some((_, f)) = setup_errors.iter().find(|(r, _)| r.index == slot.index) {
                routes.push(setup_failed(slot.index, path_ids, f));
            }
            continue;
        }
        established += 1;
        let counts = (
            now.counts.0.saturating_sub(base.counts.0),
            now.counts.1.saturating_sub(base.counts.1),
        );
        let error = slot.error();
        failed += usize::from(error.is_some());
        aggregate_bytes += directional(cfg.mode, counts);
        routes.push(RouteSummary {
            route_index: slot.index,
            hops: path_ids.len(),
            path: path_ids,
            state: if error.is_some() {
                "failed"
            } else if slot.stalled.load(Ordering::Relaxed) {
                "stalled"
            } else {
                "up"
            },
            bytes_sent: counts.0,
            bytes_received: counts.1,
            mean_bps: bps(directional(cfg.mode, counts), measured),
            sent_packets: now.link.sent_packets.saturating_sub(base.link.sent_packets),
            lost_packets: now.link.lost_packets.saturating_sub(base.link.lost_packets),
            failures: slot.failures.load(Ordering::Relaxed),
            redials: slot.redials.load(Ordering::Relaxed),
            failed_hop: error.as_ref().and_then(|e| e.failed_hop),
            node: error.as_ref().and_then(|e| e.node).map(|n| n.to_string()),
            error: error.map(|e| e.message),
        });
    }
    for (route, f) in setup_errors {
        if !slots.iter().any(|s| s.index == route.index) {
            routes.push(setup_failed(route.index, route.path_ids(), f));
        }
    }
    routes.sort_by_key(|r| r.route_index);
    Summary {
        version: env!("CARGO_PKG_VERSION"),
        protocol_version: PROTOCOL_VERSION,
        routes_planned: cfg.routes.len(),
        routes_established: established,
        partial: established < cfg.routes.len(),
        routes_failed: failed,
        duration_ns: measured.as_nanos() as u64,
        aggregate_bytes,
        aggregate_bps: bps(aggregate_bytes, measured),
        interrupted,
        late_samples: 0,
        rtt,
        routes,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::identity::NodeId;

    #[test]
    fn failure_event_carries_everything_known() {
        let err = PumpError {
            message: "write timed out after 30s".into(),
            failed_hop: Some(1),
            node: Some(NodeId([0x91; 16])),
        };
        let ev = failure_event(
            7,
            &err,
            (12_400_000, 12_100_000),
            Duration::from_millis(2310),
        );
        assert_eq!(ev.route_index, 7);
        assert_eq!(ev.error, "write timed out after 30s");
        assert_eq!(ev.bytes_sent_before_failure, 12_400_000);
        assert_eq!(ev.bytes_received_before_failure, 12_100_000);
        assert_eq!(ev.elapsed_ns, 2_310_000_000);
        assert_eq!(ev.failed_hop, Some(1));
        assert_eq!(ev.node, Some(NodeId([0x91; 16]).to_string()));
    }

    #[test]
    fn failure_on_the_first_call_reports_zero_bytes_not_nothing() {
        let err = PumpError {
            message: "write failed: connection lost".into(),
            failed_hop: None,
            node: None,
        };
        let ev = failure_event(0, &err, (0, 0), Duration::from_micros(50));
        let line = crate::report::events::to_json_line(&Event::RouteFailure(ev), Duration::ZERO);
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["type"], "route_failure");
        assert_eq!(v["bytes_sent_before_failure"], 0);
        assert_eq!(v["bytes_received_before_failure"], 0);
        assert_eq!(v["elapsed_ns"], 50_000);
        assert!(v.get("failed_hop").is_none());
    }

    #[test]
    fn routes_share_an_endpoint_only_over_the_same_first_link_and_up_to_the_cap() {
        let (a, b): (SocketAddr, SocketAddr) = (
            "127.0.0.1:1000".parse().unwrap(),
            "127.0.0.1:2000".parse().unwrap(),
        );
        let mut pool = EndpointPool::new();
        let mut made = 0;
        let mut get = |pool: &mut EndpointPool<u32>, at| {
            pool.get_or_make(at, || -> Result<u32, ()> {
                made += 1;
                Ok(made)
            })
            .unwrap()
        };
        let over_a: Vec<u32> = (0..ROUTES_PER_ENDPOINT + 1)
            .map(|_| get(&mut pool, a))
            .collect();
        assert!(over_a[..ROUTES_PER_ENDPOINT].iter().all(|&e| e == 1));
        assert_eq!(
            over_a[ROUTES_PER_ENDPOINT], 2,
            "a full endpoint is not shared further"
        );
        assert_eq!(
            get(&mut pool, b),
            3,
            "another first link gets its own socket"
        );
        assert_eq!(get(&mut pool, a), 2);
        let mut all: Vec<u32> = pool.drain().collect();
        all.sort_unstable();
        assert_eq!(all, [1, 2, 3]);
        assert_eq!(pool.drain().count(), 0);
    }

    #[test]
    fn errors_name_the_nodes_not_the_emulated_links_proxies() {
        let pairs = [
            ("127.0.0.1:4012".to_string(), "127.0.0.1:9".to_string()),
            ("127.0.0.1:40123".to_string(), "127.0.0.1:4012".to_string()),
        ];
        assert_eq!(
            unwire(
                "connect to 127.0.0.1:40123 timed out; hop 1 at 127.0.0.1:4012",
                &pairs
            ),
            "connect to 127.0.0.1:4012 timed out; hop 1 at 127.0.0.1:9"
        );
        assert_eq!(unwire("no address here ✗", &pairs), "no address here ✗");
    }

    #[test]
    fn directional_goodput_per_mode() {
        assert_eq!(directional(Mode::Up, (5, 7)), 5);
        assert_eq!(directional(Mode::Down, (5, 7)), 7);
        assert_eq!(directional(Mode::Echo, (5, 7)), 7);
        assert_eq!(directional(Mode::Bidir, (5, 7)), 12);
        assert_eq!(bps(1_000_000, Duration::from_secs(1)), 8_000_000);
        assert_eq!(bps(1, Duration::ZERO), 0);
    }
}
