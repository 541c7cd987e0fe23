//! The accepting side: a node (`serve` = destination, `relay` = intermediate) takes QUIC
//! connections, reads one setup header per connection, and either forwards the route to the next
//! hop and splices streams and datagrams, or acts as the route's far end (sink, source or echo).
//!
//! Every wait is bounded: the header read by `header_timeout`, onward dials by the caller's setup
//! timeout, and stream I/O by QUIC's idle timeout. A bad header closes only its own connection.

use std::collections::HashMap;
use std::future::Future;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use quinn::{Connection, Endpoint, RecvStream, SendStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

use crate::wire::close::{Attribution, Cause};
use crate::wire::datagram::Datagram;
use crate::wire::identity::NodeId;
use crate::wire::mode::Mode;
use crate::wire::proof::{ReportKey, Signer, TAG_LEN};
use crate::wire::setup::{self, SetupReply, SetupRequest, PAYLOAD_CHUNK, REQUEST_PREFIX_LEN};
use crate::wire::transport::{
    self, CLOSE_DONE, CLOSE_DOWNSTREAM, CLOSE_KILLED, CLOSE_REFUSED, CLOSE_SHUTDOWN, HOP_SELF,
};

/// How often the destination tells an `up` client how many bytes arrived.
pub const REPORT_INTERVAL: Duration = Duration::from_millis(20);

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

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_hops: setup::MAX_HOPS,
            max_routes_per_client: 256,
            max_connections: 1024,
            max_unvalidated_handshakes: 64,
            max_strangers_per_ip: 256,
            max_setup_timeout: Duration::from_secs(10),
        }
    }
}

/// A QUIC handshake must finish within this; quinn's own limit is the 30 s idle timeout.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// A count per peer IP address (routes per client, strangers per source); an entry lives while
/// its `IpSlot`s do.
#[derive(Default)]
struct PerIp {
    /// Locked only to bump or drop a count.
    counts: Mutex<HashMap<IpAddr, usize>>,
}

/// One unit counted against an IP; uncounted on drop.
struct IpSlot<'a> {
    routes: &'a PerIp,
    ip: IpAddr,
}

impl PerIp {
    fn counts(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, usize>> {
        // Each critical section is one map operation; a poisoned map is still consistent.
        self.counts.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn take(&self, ip: IpAddr, max: usize) -> Option<IpSlot<'_>> {
        let mut counts = self.counts();
        let n = counts.entry(ip).or_insert(0);
        if *n >= max {
            return None;
        }
        *n += 1;
        Some(IpSlot { routes: self, ip })
    }
}

impl Drop for IpSlot<'_> {
    fn drop(&mut self) {
        let mut counts = self.routes.counts();
        if let Some(n) = counts.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                counts.remove(&self.ip);
            }
        }
    }
}

/// Fault injection: tokens that, once cancelled, make the node misbehave on purpose.
#[derive(Clone, Debug, Default)]
pub struct Faults {
    /// Crash: close every connection at once (peers see `CLOSE_KILLED`) and stop accepting.
    pub kill: CancellationToken,
    /// Stall: stop reading and forwarding, but keep every connection open.
    pub stall: CancellationToken,
}

/// Accepts connections until `shutdown` fires; then stops accepting, lets established routes
/// drain for up to `drain_timeout`, and closes what is left.
async fn serve(endpoint: Endpoint, cfg: NodeConfig, signer: Signer, shutdown: CancellationToken) {
    let cfg = Arc::new(cfg);
    let signer = Arc::new(signer);
    let tasks = TaskTracker::new();
    let hard_stop = CancellationToken::new();
    let peers = Arc::new(Peers::default());
    let connections = Arc::new(Semaphore::new(cfg.limits.max_connections));
    let unvalidated = Arc::new(Semaphore::new(cfg.limits.max_unvalidated_handshakes));
    loop {
        let incoming = tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = cfg.faults.kill.cancelled() => {
                endpoint.close(CLOSE_KILLED, b"node killed (fault injection)");
                hard_stop.cancel();
                break;
            }
            i = endpoint.accept() => match i {
                Some(i) => i,
                None => break,
            },
        };
        // An address that has not proved it receives our packets costs one stateless Retry
        // once the unvalidated budget is spent; a real client answers it and comes back
        // validated.
        let handshake = if incoming.remote_address_validated() {
            None
        } else {
            match unvalidated.clone().try_acquire_owned() {
                Ok(p) => Some(p),
                Err(_) => {
                    if incoming.may_retry() {
                        let _ = incoming.retry();
                    } else {
                        incoming.ignore();
                    }
                    continue;
                }
            }
        };
        let Ok(permit) = connections.clone().try_acquire_owned() else {
            debug!(
                "refusing {}: {} connections open",
                incoming.remote_address(),
                cfg.limits.max_connections
            );
            incoming.refuse();
            continue;
        };
        let (cfg, endpoint, hard_stop, peers, signer) = (
            cfg.clone(),
            endpoint.clone(),
            hard_stop.clone(),
            peers.clone(),
            signer.clone(),
        );
        tasks.spawn(async move {
            let _permit = permit;
            // Dropping an unfinished handshake abandons its connection.
            let conn = match tokio::time::timeout(HANDSHAKE_TIMEOUT, incoming).await {
                Ok(Ok(conn)) => conn,
                Ok(Err(e)) => return debug!("handshake failed: {e}"),
                Err(_) => return debug!("handshake timed out"),
            };
            drop(handshake);
            let node = Node {
                endpoint: &endpoint,
                cfg: &cfg,
                peers: &peers,
                signer: &signer,
            };
            node.handle(conn, hard_stop).await;
        });
    }
    // Drain: no new connections, established routes may finish.
    endpoint.set_server_config(None);
    tasks.close();
    if tokio::time::timeout(cfg.drain_timeout, tasks.wait())
        .await
        .is_err()
    {
        hard_stop.cancel();
        endpoint.close(CLOSE_SHUTDOWN, b"node shutting down");
        // Connections were just closed, so their tasks end promptly; bound the wait anyway.
        let _ = tokio::time::timeout(Duration::from_secs(2), tasks.wait()).await;
    }
    endpoint.close(CLOSE_SHUTDOWN, b"node shutting down");
    let _ = tokio::time::timeout(Duration::from_secs(1), endpoint.wait_idle()).await;
}

/// Per-IP counts of a node: routes (`--max-routes-per-client`) and strangers (connections with
/// no valid header yet).
#[derive(Default)]
struct Peers {
    routes: PerIp,
    strangers: PerIp,
}

/// What a connection's task shares with the whole node.
struct Node<'a> {
    endpoint: &'a Endpoint,
    cfg: &'a NodeConfig,
    peers: &'a Peers,
    /// Signs the route proofs of a destination.
    signer: &'a Signer,
}

impl Node<'_> {
    async fn handle(&self, conn: Connection, shutdown: CancellationToken) {
        let Node {
            endpoint,
            cfg,
            peers,
            signer,
        } = *self;
        let ip = conn.remote_address().ip();
        let Some(stranger) = peers.strangers.take(ip, cfg.limits.max_strangers_per_ip) else {
            debug!("refusing {ip}: too many connections without a setup header");
            conn.close(
                CLOSE_REFUSED,
                b"too many connections without a setup header",
            );
            return;
        };
        let setup = tokio::time::timeout(cfg.header_timeout, read_setup(&conn));
        let (mut send, recv, req) = match setup.await {
            Ok(Ok(x)) => x,
            Ok(Err(Refusal::Reply(mut send, hop, message))) => {
                debug!("refusing setup from {}: {message}", conn.remote_address());
                refuse(&conn, &mut send, hop, Cause::Refused, &message).await;
                return;
            }
            Ok(Err(Refusal::Gone(e))) => {
                debug!(
                    "connection from {} gone before setup: {e}",
                    conn.remote_address()
                );
                return;
            }
            Err(_) => {
                conn.close(CLOSE_REFUSED, b"no setup header in time");
                return;
            }
        };
        if let Err(message) = check(cfg, &req) {
            warn!(peer = %conn.remote_address(), route = req.route_index, "setup refused: {message}");
            refuse(&conn, &mut send, req.hop_index, Cause::Refused, &message).await;
            return;
        }
        drop(stranger);
        let Some(_slot) = peers.routes.take(ip, cfg.limits.max_routes_per_client) else {
            let message = format!(
                "too many routes from {ip} (limit {})",
                cfg.limits.max_routes_per_client
            );
            warn!("setup refused: {message}");
            refuse(&conn, &mut send, req.hop_index, Cause::Refused, &message).await;
            return;
        };
        // The peer showed the token: give its connection the windows payload needs.
        conn.set_receive_window(transport::varint(cfg.tuning.conn_window));
        match cfg.role {
            Role::Destination => {
                let (proof, key) = match signer.answer(req.route_index, req.mode, &req.client_key) {
                    Ok(x) => x,
                    Err(e) => {
                        let message = format!("cannot prove this route: {e}");
                        refuse(&conn, &mut send, req.hop_index, Cause::Refused, &message).await;
                        return;
                    }
                };
                if send
                    .write_all(&SetupReply::Ack { proof }.encode())
                    .await
                    .is_err()
                {
                    return;
                }
                info!(route = req.route_index, mode = ?req.mode, "route up (destination)");
                let stall = &cfg.faults.stall;
                tokio::select! {
                    end = far_end(&conn, &req, send, recv, &key, stall) => match end {
                        // The client reset its stream: the route is over. Close at once, so the slot
                        // is free for the next run whether or not the client's own close arrives.
                        End::Reset => conn.close(CLOSE_DONE, b"route over"),
                        // The client finished its stream. Dropping the connection now could discard
                        // replies still in flight, so let the client close it (bounded).
                        End::Finished => tokio::select! {
                            _ = tokio::time::timeout(Duration::from_secs(5), conn.closed()) => {}
                            _ = shutdown.cancelled() => conn.close(CLOSE_SHUTDOWN, b"node shutting down"),
                        },
                        End::Lost => {}
                    },
                    _ = conn.closed() => {},
                    _ = shutdown.cancelled() => conn.close(CLOSE_SHUTDOWN, b"node shutting down"),
                }
            }
            Role::Relay => {
                let max = cfg.limits.max_setup_timeout;
                relay(conn, endpoint, send, recv, req, max, &cfg.faults, shutdown).await
            }
        }
    }
}

/// How the client's half of a route's stream ended, as the destination saw it.
enum End {
    /// Reset by the client: the run is over (`pump` resets its stream when it stops).
    Reset,
    /// Finished cleanly by the client.
    Finished,
    /// The connection was lost, or this node stopped.
    Lost,
}

enum Refusal {
    /// Refuse with a nack on this stream.
    Reply(SendStream, u8, String),
    /// The peer went away; nothing to answer.
    Gone(String),
}

async fn read_setup(conn: &Connection) -> Result<(SendStream, RecvStream, SetupRequest), Refusal> {
    let (send, mut recv) = conn
        .accept_bi()
        .await
        .map_err(|e| Refusal::Gone(e.to_string()))?;
    let mut prefix = [0u8; REQUEST_PREFIX_LEN];
    if let Err(e) = recv.read_exact(&mut prefix).await {
        return Err(Refusal::Reply(
            send,
            HOP_SELF,
            format!("truncated setup header: {e}"),
        ));
    }
    let len = match setup::decode_request_prefix(&prefix) {
        Ok(len) => len,
        Err(e) => return Err(Refusal::Reply(send, HOP_SELF, e.to_string())),
    };
    let mut body = vec![0u8; len];
    if let Err(e) = recv.read_exact(&mut body).await {
        return Err(Refusal::Reply(
            send,
            HOP_SELF,
            format!("truncated setup header: {e}"),
        ));
    }
    match setup::decode_request_body(&body) {
        Ok(req) => Ok((send, recv, req)),
        Err(e) => Err(Refusal::Reply(send, HOP_SELF, e.to_string())),
    }
}

/// Policy checks on a well-formed header: token, role, length, loops.
fn check(cfg: &NodeConfig, req: &SetupRequest) -> Result<(), String> {
    if let Some(expected) = &cfg.token {
        if !constant_time_eq(expected, &req.token) {
            return Err("bad token".to_string());
        }
    }
    match cfg.role {
        Role::Destination if !req.next.is_empty() => {
            return Err("this node is a destination and does not forward".to_string())
        }
        Role::Relay if req.next.is_empty() => {
            return Err("this node is a relay, not a destination".to_string())
        }
        _ => {}
    }
    let hops = req.hop_index as usize + 1 + req.next.len();
    if hops > cfg.limits.max_hops {
        return Err(format!(
            "route has {hops} hops, this node allows at most {}",
            cfg.limits.max_hops
        ));
    }
    let mut seen = vec![cfg.id];
    for hop in &req.next {
        if seen.contains(&hop.id) {
            return Err(format!("path repeats node {}", hop.id));
        }
        seen.push(hop.id);
    }
    Ok(())
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn refuse(conn: &Connection, send: &mut SendStream, hop: u8, cause: Cause, message: &str) {
    let reply = SetupReply::Nack {
        failed_hop: hop,
        cause,
        message: message.to_string(),
    };
    if send.write_all(&reply.encode()).await.is_ok() && send.finish().is_ok() {
        // Let the nack reach the peer before the close does.
        let _ = tokio::time::timeout(Duration::from_secs(1), send.stopped()).await;
    }
    conn.close(CLOSE_REFUSED, b"setup refused");
}

/// Resolves like `f`, unless the node stalls first; then never resolves.
async fn or_stall<F: Future>(stall: &CancellationToken, f: F) -> F::Output {
    tokio::select! {
        biased;
        _ = stall.cancelled() => std::future::pending().await,
        r = f => r,
    }
}

/// The destination's side of an established route, for every mode. Payload bytes that arrive
/// are reported back in `Report` datagrams every `REPORT_INTERVAL`, so the client measures
/// goodput at the destination, not bytes buffered at its own sender; `Ping`s are answered.
/// The client's half of the stream decides when the route is over, in every mode.
async fn far_end(
    conn: &Connection,
    req: &SetupRequest,
    mut send: SendStream,
    mut recv: RecvStream,
    key: &ReportKey,
    stall: &CancellationToken,
) -> End {
    let mode = req.mode;
    let received = AtomicU64::new(0);
    // Every report gets the next sequence number, so the client can refuse replays.
    let seq = std::sync::atomic::AtomicU32::new(0);
    let report = |received: u64| {
        let d = key.seal(Datagram::Report {
            seq: seq.fetch_add(1, Ordering::Relaxed),
            received,
            tag: [0; TAG_LEN],
        });
        // A lost report is harmless: the next one carries the newer total.
        let _ = conn.send_datagram(d.encode().into());
    };
    let data = async {
        match mode {
            Mode::Up => sink(&mut recv, &received, stall).await,
            Mode::Echo => echo(&mut recv, &mut send, &received, stall).await,
            Mode::Down | Mode::Bidir => {
                // Sourcing ends only with the connection, or when the client stops reading; the
                // end of the route is still the end of the client's half.
                let source = async {
                    source(&mut send, stall).await;
                    std::future::pending().await
                };
                tokio::select! {
                    end = sink(&mut recv, &received, stall) => end,
                    end = source => end,
                }
            }
        }
    };
    let reports = async {
        if !mode.client_sends() {
            return std::future::pending().await;
        }
        let mut reported = 0;
        let mut tick = tokio::time::interval(REPORT_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            or_stall(stall, tick.tick()).await;
            let now = received.load(Ordering::Relaxed);
            if now != reported {
                report(now);
                reported = now;
            }
        }
    };
    let pongs = async {
        while let Ok(d) = or_stall(stall, conn.read_datagram()).await {
            match Datagram::decode(&d) {
                Ok(Datagram::Ping { seq }) => {
                    let pong = key.seal(Datagram::Pong {
                        seq,
                        tag: [0; TAG_LEN],
                    });
                    let _ = conn.send_datagram(pong.encode().into());
                }
                Ok(Datagram::HopPing { hop, seq }) if hop == req.hop_index => {
                    let _ = conn.send_datagram(Datagram::HopPong { hop, seq }.encode().into());
                }
                _ => {}
            }
        }
        End::Lost
    };
    tokio::select! {
        end = data => {
            report(received.load(Ordering::Relaxed));
            end
        }
        end = reports => end,
        end = pongs => end,
    }
}

/// How the client's half ended: finished (`None`), reset, or lost with the connection.
fn end_of(e: Option<quinn::ReadError>) -> End {
    match e {
        None => End::Finished,
        Some(quinn::ReadError::Reset(_)) => End::Reset,
        Some(_) => End::Lost,
    }
}

async fn sink(recv: &mut RecvStream, received: &AtomicU64, stall: &CancellationToken) -> End {
    let mut bufs = transport::chunk_batch();
    loop {
        match or_stall(stall, recv.read_chunks(&mut bufs)).await {
            Ok(Some(n)) => {
                received.fetch_add(transport::chunks_len(&bufs[..n]), Ordering::Relaxed);
            }
            Ok(None) => return end_of(None),
            Err(e) => return end_of(Some(e)),
        }
    }
}

async fn source(send: &mut SendStream, stall: &CancellationToken) {
    let payload = Bytes::from(vec![0u8; PAYLOAD_CHUNK]);
    while or_stall(stall, send.write_chunk(payload.clone()))
        .await
        .is_ok()
    {}
}

async fn echo(
    recv: &mut RecvStream,
    send: &mut SendStream,
    received: &AtomicU64,
    stall: &CancellationToken,
) -> End {
    let mut bufs = transport::chunk_batch();
    loop {
        let n = match or_stall(stall, recv.read_chunks(&mut bufs)).await {
            Ok(Some(n)) => n,
            Ok(None) => return end_of(None),
            Err(e) => return end_of(Some(e)),
        };
        received.fetch_add(transport::chunks_len(&bufs[..n]), Ordering::Relaxed);
        if or_stall(stall, send.write_all_chunks(&mut bufs[..n]))
            .await
            .is_err()
        {
            return End::Lost;
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn relay(
    up: Connection,
    endpoint: &Endpoint,
    mut up_send: SendStream,
    up_recv: RecvStream,
    req: SetupRequest,
    max_setup: Duration,
    faults: &Faults,
    shutdown: CancellationToken,
) {
    // `check` guarantees a relay's header names at least one next hop.
    let Some(next) = req.next.first().copied() else {
        return;
    };
    let onward = SetupRequest {
        hop_index: req.hop_index.saturating_add(1),
        next: req.next[1..].to_vec(),
        ..req.clone()
    };
    // The client's budget, but never more than this node allows; and no dialing on for a client
    // that has gone.
    let timeout = Duration::from_millis(u64::from(req.setup_timeout_ms)).min(max_setup);
    let dialed = tokio::select! {
        r = transport::setup_link(endpoint, &next, &onward, timeout) => r,
        _ = up.closed() => return,
        _ = shutdown.cancelled() => return,
    };
    let mut down = match dialed {
        Ok(link) => link,
        Err(f) => {
            let hop = f.failed_hop.unwrap_or(onward.hop_index);
            refuse(&up, &mut up_send, hop, f.cause, &f.message).await;
            return;
        }
    };
    let ack = SetupReply::Ack {
        proof: std::mem::take(&mut down.proof),
    };
    if up_send.write_all(&ack.encode()).await.is_err() {
        down.conn.close(CLOSE_DONE, b"upstream gone");
        return;
    }
    info!(route = req.route_index, next = %next.addr, "route up (relay)");
    let transport::Link {
        conn: down,
        send: down_send,
        recv: down_recv,
        ..
    } = down;
    let stall = &faults.stall;
    let splice = async {
        tokio::try_join!(
            copy(up_recv, down_send, stall),
            copy(down_recv, up_send, stall),
            forward_datagrams(&up, &down, Some(req.hop_index), stall),
            forward_datagrams(&down, &up, None, stall),
        )
    };
    let (hop, id) = (onward.hop_index, next.id);
    tokio::select! {
        biased;
        // A killed node closes everything itself; nothing here may relabel that as a downstream
        // failure.
        _ = faults.kill.cancelled() => {
            up.close(CLOSE_KILLED, b"node killed (fault injection)");
            down.close(CLOSE_KILLED, b"node killed (fault injection)");
        }
        r = splice => {
            if let Err(e) = r {
                let local = |c: &Option<quinn::ConnectionError>| {
                    matches!(c, Some(quinn::ConnectionError::LocallyClosed))
                };
                if local(&down.close_reason()) || local(&up.close_reason()) {
                    // This node closed it (shutdown, kill): nothing to attribute or forward.
                } else if let Some(e) = down.close_reason() {
                    close_upstream(&up, &e, hop, id);
                } else if let Some(e) = up.close_reason() {
                    let (code, reason) = close_of(&e);
                    down.close(code, &reason);
                } else {
                    let a = Attribution {
                        hop,
                        node: id,
                        cause: Cause::ConnectionLost,
                        detail: e,
                    };
                    up.close(CLOSE_DOWNSTREAM, &a.encode());
                    down.close(CLOSE_DOWNSTREAM, b"splice failed");
                }
            }
        }
        e = up.closed() => {
            let (code, reason) = close_of(&e);
            down.close(code, &reason);
        }
        e = down.closed() => {
            if !matches!(e, quinn::ConnectionError::LocallyClosed) {
                close_upstream(&up, &e, hop, id);
            }
        }
        _ = shutdown.cancelled() => {
            up.close(CLOSE_SHUTDOWN, b"relay shutting down");
            down.close(CLOSE_SHUTDOWN, b"relay shutting down");
        }
    }
}

/// Closes upstream after the link to hop `hop` closed with `e`: the destination's end of a route
/// (`CLOSE_DONE`) passes through as such, anything else is a downstream failure.
fn close_upstream(up: &Connection, e: &quinn::ConnectionError, hop: u8, id: NodeId) {
    match e {
        quinn::ConnectionError::ApplicationClosed(c) if c.error_code == CLOSE_DONE => {
            up.close(CLOSE_DONE, &c.reason)
        }
        other => up.close(CLOSE_DOWNSTREAM, &attribute(other, hop, id)),
    }
}

/// What to tell the next hop when the previous one closed.
fn close_of(e: &quinn::ConnectionError) -> (quinn::VarInt, Vec<u8>) {
    match e {
        quinn::ConnectionError::ApplicationClosed(c) => (c.error_code, c.reason.to_vec()),
        other => (CLOSE_DOWNSTREAM, other.to_string().into_bytes()),
    }
}

/// The close reason to send upstream when the link to hop `hop` died: an attribution made further
/// down passes through unchanged, anything else is attributed to `hop`.
fn attribute(e: &quinn::ConnectionError, hop: u8, id: NodeId) -> Vec<u8> {
    let detail = match e {
        quinn::ConnectionError::ApplicationClosed(c) if c.error_code == CLOSE_DOWNSTREAM => {
            return c.reason.to_vec();
        }
        quinn::ConnectionError::ApplicationClosed(c) => {
            String::from_utf8_lossy(&c.reason).into_owned()
        }
        other => other.to_string(),
    };
    Attribution {
        hop,
        node: id,
        cause: crate::wire::close::cause_of(e),
        detail,
    }
    .encode()
}

/// Moves one direction of a spliced route a batch of chunks at a time, without copying payload
/// bytes. A reset is passed on as a reset (the client's end of the route), a finish as a finish.
async fn copy(
    mut from: RecvStream,
    mut to: SendStream,
    stall: &CancellationToken,
) -> Result<(), String> {
    let mut bufs = transport::chunk_batch();
    loop {
        let n = match or_stall(stall, from.read_chunks(&mut bufs)).await {
            Ok(Some(n)) => n,
            Ok(None) => return to.finish().map_err(|e| e.to_string()),
            Err(quinn::ReadError::Reset(code)) => {
                let _ = to.reset(code);
                return Ok(());
            }
            Err(e) => return Err(e.to_string()),
        };
        or_stall(stall, to.write_all_chunks(&mut bufs[..n]))
            .await
            .map_err(|e| e.to_string())?;
    }
}

/// Forwards reports and probes. A datagram that does not fit is dropped, as the network would.
/// A `HopPing` for `me` (this relay's hop index, on the client's side) is answered instead.
async fn forward_datagrams(
    from: &Connection,
    to: &Connection,
    me: Option<u8>,
    stall: &CancellationToken,
) -> Result<(), String> {
    loop {
        let d = or_stall(stall, from.read_datagram())
            .await
            .map_err(|e| e.to_string())?;
        if me.is_some() && Datagram::hop_ping_target(&d) == me {
            if let Ok(Datagram::HopPing { hop, seq }) = Datagram::decode(&d) {
                let _ = from.send_datagram(Datagram::HopPong { hop, seq }.encode().into());
            }
            continue;
        }
        let _ = to.send_datagram(d);
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
    let task = tokio::spawn(serve(endpoint, cfg, signer, shutdown));
    Ok(RunningNode { addr, local, task })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::addr::NodeAddr;

    fn req(next: Vec<NodeAddr>, token: &[u8]) -> SetupRequest {
        SetupRequest {
            route_index: 0,
            hop_index: 0,
            mode: Mode::Up,
            setup_timeout_ms: 1000,
            token: token.to_vec(),
            client_key: [0; crate::wire::proof::KEY_LEN],
            next,
        }
    }

    fn node(id: u8) -> NodeAddr {
        NodeAddr {
            id: NodeId([id; 16]),
            addr: "127.0.0.1:1".parse().unwrap(),
        }
    }

    fn cfg(role: Role, token: Option<&[u8]>) -> NodeConfig {
        NodeConfig {
            role,
            id: NodeId([9; 16]),
            token: token.map(<[u8]>::to_vec),
            header_timeout: Duration::from_secs(1),
            limits: Limits {
                max_hops: 3,
                ..Limits::default()
            },
            drain_timeout: Duration::from_secs(1),
            tuning: transport::Tuning::default(),
            faults: Faults::default(),
        }
    }

    #[test]
    fn checks_token_role_and_loops() {
        let dst = cfg(Role::Destination, Some(b"t"));
        assert!(check(&dst, &req(vec![], b"t")).is_ok());
        assert_eq!(check(&dst, &req(vec![], b"x")).unwrap_err(), "bad token");
        assert!(check(&dst, &req(vec![node(1)], b"t")).is_err());

        let relay = cfg(Role::Relay, None);
        assert!(check(&relay, &req(vec![node(1)], b"")).is_ok());
        assert!(check(&relay, &req(vec![], b"")).is_err());
        assert!(check(&relay, &req(vec![node(9)], b""))
            .unwrap_err()
            .contains("repeats"));
        assert!(check(&relay, &req(vec![node(1), node(1)], b"")).is_err());
        let too_long = check(&relay, &req(vec![node(1), node(2), node(3)], b""));
        assert_eq!(
            too_long.unwrap_err(),
            "route has 4 hops, this node allows at most 3"
        );
    }

    #[test]
    fn routes_per_client_are_capped_and_released() {
        let routes = PerIp::default();
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        let a = routes.take(ip, 2).unwrap();
        let _b = routes.take(ip, 2).unwrap();
        assert!(routes.take(ip, 2).is_none());
        assert!(routes.take("127.0.0.2".parse().unwrap(), 2).is_some());
        drop(a);
        assert!(routes.take(ip, 2).is_some());
    }
}
