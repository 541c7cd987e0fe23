//! The accepting side: a node (`serve` = destination, `relay` = intermediate) takes QUIC
//! connections, reads one setup header per connection, and either forwards the route to the next
//! hop and splices streams and datagrams, or acts as the route's far end (sink, source or echo).
//!
//! Every wait is bounded: the header read by `header_timeout`, onward dials by the caller's setup
//! timeout, and stream I/O by QUIC's idle timeout. A bad header closes only its own connection.
//!
//! This file owns the node's settings, `start` and the accept loop (`serve`: handshakes, the
//! connection tasks, the drain). A connection's jobs live in `admit` (budgets, the header read,
//! policy checks, refusals), `far_end` (the destination's side) and `relay` (onward setup, the
//! splice, attribution of a lost next hop).
//!
//! No connection is left to close by being dropped (quinn then closes it with code 0 and an
//! empty reason, which a client can only report as "hop 0 closed the route: "): whatever ends
//! a route closes its connections with a code and a reason (`Node::close_open`).

mod admit;
mod far_end;
pub mod reassembly;
mod relay;
mod stripe;

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use quinn::{Connection, Endpoint, Incoming, VarInt};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::debug;

use crate::metrics::node::{NodeMetrics, Open, Refusal};
use crate::wire::close::{CLOSE_DONE, CLOSE_KILLED, CLOSE_SHUTDOWN};
use crate::wire::identity::NodeId;
use crate::wire::proof::Signer;
use crate::wire::setup;
use crate::wire::transport;
use admit::{Gates, Peers, Permits};

pub use far_end::REPORT_INTERVAL;

/// What a node does with routes that reach it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// The far end of routes: sinks or sources data.
    Destination,
    /// An intermediate: forwards to the next node named in the header.
    Relay,
}

/// Settings of a running node.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    /// Destination or relay.
    pub role: Role,
    /// This node's id, to refuse paths that loop back through it.
    pub id: NodeId,
    /// Setup headers must carry this token; `None` only for nodes started with `--open`.
    pub token: Option<Vec<u8>>,
    /// How long a new connection may take to send its setup header.
    pub header_timeout: Duration,
    /// Caps that keep a node usable under abuse.
    pub limits: Limits,
    /// On shutdown, how long established routes may keep running before they are closed.
    pub drain_timeout: Duration,
    /// QUIC windows and congestion control of this node's connections.
    pub tuning: transport::Tuning,
    /// Fault injection hooks (the lab's `--fault`); never fired in `serve`/`relay`.
    pub faults: Faults,
}

/// Resource caps of a node. Strangers (peers that have not yet sent a setup header with the
/// token) get the smallest budgets: see docs/PROTOCOL.md, "What a stranger can cost a node".
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Longest route (links, client to destination) this node takes part in.
    pub max_hops: usize,
    /// Routes at once from one client IP address.
    pub max_routes_per_client: usize,
    /// QUIC connections at once; further handshakes are refused.
    pub max_connections: usize,
    /// Handshakes in flight from addresses QUIC has not validated; beyond it a new one gets a
    /// stateless Retry, so spoofed or abandoned Initials cannot hold the slots clients need.
    pub max_unvalidated_handshakes: usize,
    /// Connections from one IP that completed the handshake but have not sent a valid header.
    pub max_strangers_per_ip: usize,
    /// Longest onward setup a relay performs, whatever budget the client's header asks for.
    pub max_setup_timeout: Duration,
}

/// Default cap on a relay's onward setup: twice a client's default per-hop budget (5 s), so a
/// client with default settings is never cut short, while a header asking for hours is.
const DEFAULT_MAX_SETUP_TIMEOUT: Duration = Duration::from_secs(10);

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_hops: setup::MAX_HOPS,
            max_routes_per_client: 256,
            max_connections: 1024,
            max_unvalidated_handshakes: 64,
            max_strangers_per_ip: 256,
            max_setup_timeout: DEFAULT_MAX_SETUP_TIMEOUT,
        }
    }
}

/// A QUIC handshake must finish within this; quinn's own limit is the 30 s idle timeout.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// Fault injection: tokens that, once cancelled, make the node misbehave on purpose.
#[derive(Clone, Debug, Default)]
pub struct Faults {
    /// Crash: close every connection at once (peers see `CLOSE_KILLED`) and stop accepting.
    pub kill: CancellationToken,
    /// Stall: stop reading and forwarding, but keep every connection open.
    pub stall: CancellationToken,
}

/// Resolves like `f`, unless the node stalls first (`Faults::stall`); then never resolves.
async fn or_stall<F: Future>(stall: &CancellationToken, f: F) -> F::Output {
    tokio::select! {
        biased;
        _ = stall.cancelled() => std::future::pending().await,
        r = f => r,
    }
}

/// The close reason of a node's connections once its drain time is over.
const SHUTDOWN_REASON: &[u8] = b"node shutting down";

/// The close reason of every connection of a node killed by fault injection.
const KILLED_REASON: &[u8] = b"node killed (fault injection)";

/// Accepts connections until `shutdown` fires; then stops accepting, lets established routes
/// drain for up to `drain_timeout`, and closes what is left.
async fn serve(
    endpoint: Endpoint,
    cfg: NodeConfig,
    signer: Signer,
    shutdown: CancellationToken,
    metrics: NodeMetrics,
) {
    let gates = Gates::new(&cfg.limits);
    let node = Arc::new(Node {
        endpoint,
        cfg,
        peers: Peers::default(),
        signer,
        hard_stop: CancellationToken::new(),
        metrics,
        transfers: stripe::Transfers::default(),
    });
    let tasks = TaskTracker::new();
    while let Some(incoming) = node.next_incoming(&shutdown).await {
        let Some((incoming, permits)) = gates.pass(incoming, &node.metrics) else {
            continue;
        };
        let node = node.clone();
        tasks.spawn(async move { node.connect(incoming, permits).await });
    }
    node.drain(&tasks).await;
}

/// Once the drain is over and the remaining connections are closed, how long their tasks get to
/// end: they end promptly, so this only bounds a stuck one.
const CLOSED_TASKS_WAIT: Duration = Duration::from_secs(2);

/// How long a stopping node waits for its closes to reach peers before it returns anyway; a lost
/// close costs a peer no more than its idle timeout.
const IDLE_WAIT: Duration = Duration::from_secs(1);

/// What every connection's task shares with the whole node.
struct Node {
    endpoint: Endpoint,
    cfg: NodeConfig,
    peers: Peers,
    /// Signs the route proofs of a destination.
    signer: Signer,
    /// Fired when the node is killed or the drain is over: every route closes at once.
    hard_stop: CancellationToken,
    /// What the node counts (`--metrics`); also the routes established and not yet over.
    metrics: NodeMetrics,
    /// The striped transfers this node is the destination of.
    transfers: stripe::Transfers,
}

impl Node {
    /// The next connection attempt; `None` once the node stops accepting (`shutdown`, a kill,
    /// or a closed endpoint).
    async fn next_incoming(&self, shutdown: &CancellationToken) -> Option<Incoming> {
        tokio::select! {
            _ = shutdown.cancelled() => None,
            _ = self.cfg.faults.kill.cancelled() => {
                self.endpoint.close(CLOSE_KILLED, KILLED_REASON);
                self.hard_stop.cancel();
                None
            }
            i = self.endpoint.accept() => i,
        }
    }

    /// A connection's task: its handshake (bounded by `HANDSHAKE_TIMEOUT`), then its route.
    async fn connect(&self, incoming: Incoming, mut permits: Permits) {
        // Dropping an unfinished handshake abandons its connection.
        let conn = match tokio::time::timeout(HANDSHAKE_TIMEOUT, incoming).await {
            Ok(Ok(conn)) => conn,
            Ok(Err(e)) => {
                self.metrics.refused(Refusal::HandshakeFailed);
                return debug!("handshake failed: {e}");
            }
            Err(_) => {
                self.metrics.refused(Refusal::HandshakeTimeout);
                return debug!("handshake timed out");
            }
        };
        permits.handshake_done();
        let _open = self.metrics.connection_open();
        self.handle(conn).await;
    }

    /// Admits the route `conn` asks for, and serves it as this node's role says; the
    /// connection is closed when that is over.
    async fn handle(&self, conn: Connection) {
        if let Some((route, _slot)) = admit::route(&conn, self).await {
            // The peer showed the token: give its connection the windows payload needs.
            conn.set_receive_window(transport::varint(self.cfg.tuning.conn_window));
            match self.cfg.role {
                Role::Destination => far_end::destination(&conn, route, self).await,
                Role::Relay => relay::relay(&conn, route, self).await,
            }
        }
        self.close_open(&conn);
    }

    /// A route of this node is acknowledged, `since` its connection's handshake: counted
    /// active until the guard is dropped.
    fn route_up(&self, since: Instant) -> Open {
        self.metrics.acked(since.elapsed())
    }

    /// The close this node gives a connection it ends itself: killed, shutting down (drain time
    /// over), or the route is over.
    fn own_close(&self) -> (VarInt, &'static [u8]) {
        if self.cfg.faults.kill.is_cancelled() {
            (CLOSE_KILLED, KILLED_REASON)
        } else if self.hard_stop.is_cancelled() {
            (CLOSE_SHUTDOWN, SHUTDOWN_REASON)
        } else {
            (CLOSE_DONE, b"route over")
        }
    }

    /// Closes `conn` with `own_close` unless it is closed already. Dropping an open connection
    /// would close it too, but with code 0 and an empty reason: a shutdown that loses its reason.
    fn close_open(&self, conn: &Connection) {
        if conn.close_reason().is_none() {
            let (code, reason) = self.own_close();
            conn.close(code, reason);
        }
    }

    /// No new connections; established routes may finish within `drain_timeout`, then whatever
    /// is left is closed.
    async fn drain(&self, tasks: &TaskTracker) {
        self.metrics.draining();
        self.endpoint.set_server_config(None);
        tasks.close();
        if tokio::time::timeout(self.cfg.drain_timeout, tasks.wait())
            .await
            .is_err()
        {
            self.hard_stop.cancel();
            self.endpoint.close(CLOSE_SHUTDOWN, SHUTDOWN_REASON);
            // Connections were just closed, so their tasks end promptly; bound the wait anyway.
            let _ = tokio::time::timeout(CLOSED_TASKS_WAIT, tasks.wait()).await;
        }
        self.endpoint.close(CLOSE_SHUTDOWN, SHUTDOWN_REASON);
        let _ = tokio::time::timeout(IDLE_WAIT, self.endpoint.wait_idle()).await;
    }
}

/// A node accepting connections in a background task.
pub struct RunningNode {
    /// The URI clients dial (an unspecified listen address is advertised as loopback).
    pub addr: crate::wire::addr::NodeAddr,
    /// The address actually bound (port 0 resolved).
    pub local: std::net::SocketAddr,
    /// Ends after `shutdown` fires and connections are closed.
    pub task: tokio::task::JoinHandle<()>,
    /// What the node counts, for a `--metrics` server.
    pub metrics: NodeMetrics,
}

impl RunningNode {
    /// How many routes are established at the node now (acknowledged and not yet over): what a
    /// shutdown has to drain.
    pub fn established_routes(&self) -> usize {
        self.metrics.routes_active()
    }
}

/// Binds `listen` and serves `cfg.role` until `shutdown`. Must be called inside a tokio runtime.
pub fn start(
    listen: std::net::SocketAddr,
    identity: &crate::wire::identity::Identity,
    cfg: NodeConfig,
    shutdown: CancellationToken,
) -> Result<RunningNode, transport::EndpointError> {
    let endpoint = transport::endpoint(listen, Some(identity), &cfg.tuning)?;
    let local = endpoint
        .local_addr()
        .map_err(|source| transport::EndpointError::Bind {
            addr: listen,
            source,
        })?;
    let mut advertised = local;
    if local.ip().is_unspecified() {
        advertised.set_ip(match local.ip() {
            std::net::IpAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
            std::net::IpAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
        });
    }
    let addr = crate::wire::addr::NodeAddr {
        id: identity.id,
        addr: advertised,
    };
    let signer = identity
        .signer()
        .map_err(|e| transport::EndpointError::Crypto(e.to_string()))?;
    let metrics = NodeMetrics::new(match cfg.role {
        Role::Destination => "destination",
        Role::Relay => "relay",
    });
    let task = tokio::spawn(serve(endpoint, cfg, signer, shutdown, metrics.clone()));
    Ok(RunningNode {
        addr,
        local,
        task,
        metrics,
    })
}
