//! One task per route for the whole run: setup (through the emulated links if any, with the
//! destination's proof checked), registration, the pump, the failure event, and with
//! `--redial` new paths through spare relays. Every lifecycle step of a route happens here, in
//! sequence, so they can never race.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use crate::client::endpoints::{unwire, EndpointPool};
use crate::client::pump::{self, PumpError, RouteLive};
use crate::client::redial::{NoSpare, Spares};
use crate::client::slot::Slot;
use crate::client::stripe::Stripe;
use crate::client::table::{RouteRef, RouteTable};
use crate::client::wiring::PathWiring;
use crate::report::events::{ErrorEvent, Event, RouteFailure, RouteRedial, RouteSetupFailed};
use crate::report::sink::EventSink;
use crate::wire::addr::NodeAddr;
use crate::wire::close::{self, Cause};
use crate::wire::identity::NodeId;
use crate::wire::mode::Mode;
use crate::wire::proof::{ClientHalf, ProofError, ReportKey, RouteTerms, KEY_LEN};
use crate::wire::setup::SetupRequest;
use crate::wire::stripe;
use crate::wire::transport::{self, Link, SetupFailure};

/// What every route supervisor needs; shared, read-only but for `spares`.
pub(crate) struct RouteCtx {
    pub(crate) mode: Mode,
    pub(crate) tuning: transport::Tuning,
    pub(crate) links: Option<Arc<dyn PathWiring>>,
    pub(crate) io_timeout: Duration,
    pub(crate) stall_timeout: Duration,
    pub(crate) setup_timeout: Duration,
    pub(crate) token: Vec<u8>,
    pub(crate) dst: NodeId,
    /// Client endpoints by first link (see `EndpointPool`). Locked only to look up, insert or
    /// drain.
    pub(crate) endpoints: Mutex<EndpointPool<quinn::Endpoint>>,
    pub(crate) table: Arc<RouteTable<Arc<RouteLive>>>,
    pub(crate) sink: Arc<EventSink>,
    /// Payload starts when this fires.
    pub(crate) go: CancellationToken,
    /// The run is over: pumps stop cleanly, redials give up.
    pub(crate) cancel: CancellationToken,
    /// With `--redial`: breakers and spare relays. Locked only to pick or record, never across I/O.
    pub(crate) spares: Option<Mutex<Spares>>,
    /// Routes in the order they first came up (probes use the first one still up). Locked only
    /// to push or copy.
    pub(crate) up_order: Mutex<Vec<RouteRef>>,
    /// The striped transfer every route carries (`--stripe`).
    pub(crate) stripe: Option<Arc<Stripe>>,
}

/// An established link whose destination proved itself, with the route's report key.
pub(crate) type Proven = (Link, ReportKey);

/// A route proof that does not verify means something between the client and the destination
/// changed the exchange: name the relays, the only ones who could.
pub(crate) fn proof_failure(e: &ProofError, path: &[NodeAddr]) -> String {
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
/// Pause before the first redial attempt; doubled per attempt, up to `MAX_REDIAL_BACKOFF`.
pub(crate) const REDIAL_BACKOFF: Duration = Duration::from_millis(200);
/// Longest pause between redial attempts: five attempts then span about 5 s, short enough that
/// a redialed route still measures something in a 10 s run.
const MAX_REDIAL_BACKOFF: Duration = Duration::from_secs(2);

impl RouteCtx {
    pub(crate) fn up_order(&self) -> std::sync::MutexGuard<'_, Vec<RouteRef>> {
        self.up_order.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn spares(&self) -> Option<std::sync::MutexGuard<'_, Spares>> {
        self.spares
            .as_ref()
            .map(|m| m.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Sets up route `index` over `path` from the client endpoint of its first link, and checks
    /// the destination's route proof.
    pub(crate) async fn setup(
        &self,
        index: u32,
        path: &[NodeAddr],
    ) -> Result<Proven, SetupFailure> {
        let Some(links) = &self.links else {
            return self.setup_over(index, path).await;
        };
        let wired = links.wire_path(path).map_err(|e| {
            SetupFailure::unattributed(Cause::Local, format!("cannot set up emulated links: {e}"))
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

    pub(crate) async fn setup_over(
        &self,
        index: u32,
        path: &[NodeAddr],
    ) -> Result<Proven, SetupFailure> {
        let endpoint = self.endpoint_for(path[0].addr)?;
        let half = ClientHalf::new()
            .map_err(|e| SetupFailure::unattributed(Cause::Local, e.to_string()))?;
        let req = self.setup_request(index, path, half.public());
        let link = transport::setup_link(&endpoint, &path[0], &req, self.setup_timeout).await?;
        let stripe = stripe::spec_bytes(req.stripe.as_ref());
        let terms = RouteTerms {
            index,
            mode: self.mode,
            stripe: &stripe,
        };
        match half.finish(self.dst, &terms, &link.proof) {
            Ok(key) => Ok((link, key)),
            Err(e) => {
                link.conn.close(close::CLOSE_REFUSED, b"route proof failed");
                Err(SetupFailure::unattributed(
                    Cause::Forged,
                    proof_failure(&e, path),
                ))
            }
        }
    }

    /// Reports a failed setup of route `index` over `path` (node ids) and trips the breaker of
    /// the node it names (with `--redial`).
    pub(crate) fn setup_failed(&self, index: u32, f: &SetupFailure, path: Vec<String>) {
        self.sink.emit(Event::RouteSetupFailed(RouteSetupFailed {
            route_index: index,
            failed_hop: f.failed_hop,
            node: f.node.map(|n| n.to_string()),
            error: f.message.clone(),
            cause: f.cause,
            path,
        }));
        if let Some(mut s) = self.spares() {
            s.failed(index, f.node, Instant::now());
        }
    }

    /// The client endpoint for a first link to `first`, made when none has room.
    pub(crate) fn endpoint_for(&self, first: SocketAddr) -> Result<quinn::Endpoint, SetupFailure> {
        let mut pool = self.endpoints.lock().unwrap_or_else(|p| p.into_inner());
        pool.get_or_make(first, || {
            transport::client_endpoint(first, &self.tuning).map_err(|e| {
                SetupFailure::unattributed(
                    Cause::Local,
                    format!("cannot create a client endpoint: {e}"),
                )
            })
        })
    }

    pub(crate) fn setup_request(
        &self,
        index: u32,
        path: &[NodeAddr],
        key: [u8; KEY_LEN],
    ) -> SetupRequest {
        SetupRequest {
            route_index: index,
            hop_index: 0,
            mode: self.mode,
            setup_timeout_ms: self.setup_timeout.as_millis().min(u128::from(u32::MAX)) as u32,
            token: self.token.clone(),
            client_key: key,
            stripe: self.stripe.as_ref().map(|s| s.spec()),
            next: path[1..].to_vec(),
        }
    }
}

/// Owns one route for the whole run: registers it, runs its pump, reports its failure, and with
/// `--redial` sets it up again through spare relays. Every lifecycle step of a route happens
/// here, one after another, so they can never race.
pub(crate) async fn supervise(
    ctx: Arc<RouteCtx>,
    slot: Arc<Slot>,
    mut next: Option<(Link, Arc<RouteLive>)>,
) {
    loop {
        let (link, live) = match next.take() {
            Some(x) => x,
            None => {
                let Some(((link, key), path)) = redial(&ctx, &slot).await else {
                    slot.pending.store(false, Ordering::Relaxed);
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
        if let Some(stripe) = &ctx.stripe {
            stripe.route_down(slot.index);
        }
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
pub(crate) fn register(
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
        ctx.stripe.clone(),
    ));
    if let Err(e) = ctx.table.insert(rref, live.clone()) {
        ctx.sink.emit(Event::Error(ErrorEvent {
            error: e.to_string(),
        }));
        link.conn.close(close::CLOSE_DONE, b"duplicate route");
        return None;
    }
    *slot.path.lock().unwrap_or_else(|p| p.into_inner()) = path;
    if let Some(stripe) = &ctx.stripe {
        stripe.route_up(slot.index);
    }
    slot.link_up(link.conn.clone());
    slot.set_error(None);
    // In this order, a sample taken meanwhile sees `pending` or `failed`, then `up`.
    slot.failed.store(false, Ordering::Relaxed);
    if !slot.established.swap(true, Ordering::Relaxed) {
        ctx.up_order().push(rref);
    }
    slot.pending.store(false, Ordering::Relaxed);
    Some(live)
}

/// Sets the route up again through spare relays, with backoff; `None` when the run ends or
/// every attempt failed.
pub(crate) async fn redial(ctx: &RouteCtx, slot: &Slot) -> Option<(Proven, Vec<NodeAddr>)> {
    let old = slot.path();
    let mut backoff = REDIAL_BACKOFF;
    for attempt in 1..=MAX_REDIALS {
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = ctx.cancel.cancelled() => return None,
        }
        backoff = (backoff * 2).min(MAX_REDIAL_BACKOFF);
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
                let ids = path.iter().map(|n| n.id.to_string()).collect();
                ctx.setup_failed(slot.index, &f, ids);
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
        cause: err.cause,
        bytes_sent_before_failure: sent,
        bytes_received_before_failure: received,
        elapsed_ns: elapsed.as_nanos() as u64,
        failed_hop: err.failed_hop,
        node: err.node.map(|n| n.to_string()),
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
            cause: crate::wire::close::Cause::Timeout,
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
            cause: crate::wire::close::Cause::ConnectionLost,
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
}
