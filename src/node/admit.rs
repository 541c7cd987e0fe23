//! Admission: every budget and check a peer passes before its route runs. Node-wide gates on
//! handshakes and connections (`Gates`), per-source caps on strangers and routes (`PerIp`,
//! `Peers`), the bounded read of the setup header, the policy checks on it (token, role, length,
//! loops), and the nack that refuses a setup (`refuse`).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use quinn::{Connection, Incoming, RecvStream, SendStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tracing::{debug, warn};

use super::{Limits, Node, NodeConfig, Role};
use crate::metrics::node::{Nack, NodeMetrics, Refusal};
use crate::wire::close::Cause;
use crate::wire::close::CLOSE_REFUSED;
use crate::wire::setup::{self, SetupReply, SetupRequest, REQUEST_PREFIX_LEN};
use crate::wire::transport::HOP_SELF;

/// How long a refusal waits for the peer to take its nack before closing the connection: a
/// round trip on any usable link, yet short enough that a peer that never reads costs little.
const NACK_WAIT: Duration = Duration::from_secs(1);

/// Node-wide budgets: connections open at once, and handshakes in flight from addresses QUIC
/// has not validated.
pub(super) struct Gates {
    connections: Arc<Semaphore>,
    unvalidated: Arc<Semaphore>,
    /// For the log line of a refused handshake.
    max_connections: usize,
}

/// What a connection holds against the node-wide budgets.
pub(super) struct Permits {
    /// Held until the handshake completes (`None` for a validated address).
    handshake: Option<OwnedSemaphorePermit>,
    /// Held as long as the connection's task runs.
    _connection: OwnedSemaphorePermit,
}

impl Permits {
    /// The handshake is over: its slot in the unvalidated budget is free again.
    pub(super) fn handshake_done(&mut self) {
        self.handshake = None;
    }
}

impl Gates {
    pub(super) fn new(limits: &Limits) -> Self {
        Gates {
            connections: Arc::new(Semaphore::new(limits.max_connections)),
            unvalidated: Arc::new(Semaphore::new(limits.max_unvalidated_handshakes)),
            max_connections: limits.max_connections,
        }
    }

    /// Lets `incoming` go on to its handshake, with the permits it holds, or turns it away.
    pub(super) fn pass(
        &self,
        incoming: Incoming,
        metrics: &NodeMetrics,
    ) -> Option<(Incoming, Permits)> {
        // An address that has not proved it receives our packets costs one stateless Retry
        // once the unvalidated budget is spent; a real client answers it and comes back
        // validated.
        let handshake = if incoming.remote_address_validated() {
            None
        } else {
            match self.unvalidated.clone().try_acquire_owned() {
                Ok(p) => Some(p),
                Err(_) => {
                    if incoming.may_retry() {
                        let _ = incoming.retry();
                    } else {
                        metrics.refused(Refusal::UnvalidatedLimit);
                        incoming.ignore();
                    }
                    return None;
                }
            }
        };
        let Ok(connection) = self.connections.clone().try_acquire_owned() else {
            debug!(
                "refusing {}: {} connections open",
                incoming.remote_address(),
                self.max_connections
            );
            metrics.refused(Refusal::ConnectionLimit);
            incoming.refuse();
            return None;
        };
        let permits = Permits {
            handshake,
            _connection: connection,
        };
        Some((incoming, permits))
    }
}

/// A count per peer IP address (routes per client, strangers per source); an entry lives while
/// its `IpSlot`s do.
#[derive(Default)]
struct PerIp {
    /// Locked only to bump or drop a count.
    counts: Mutex<HashMap<IpAddr, usize>>,
}

/// One unit counted against an IP; uncounted on drop.
pub(super) struct IpSlot<'a> {
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

/// Per-IP counts of a node: routes (`--max-routes-per-client`) and strangers (connections with
/// no valid header yet).
#[derive(Default)]
pub(super) struct Peers {
    routes: PerIp,
    strangers: PerIp,
}

/// A route that passed admission: its setup header and the stream it arrived on, which becomes
/// the route's data stream once acknowledged.
pub(super) struct Route {
    pub(super) send: SendStream,
    pub(super) recv: RecvStream,
    pub(super) req: SetupRequest,
    /// When the connection's handshake completed: the start of the route's setup time.
    pub(super) since: Instant,
}

/// Admits the route `conn` asks for: within the stranger cap of its IP, a setup header in time
/// that passes `check`, within the route cap of its IP. The slot counts the route against its
/// client until dropped. `None` when refused (the peer was told) or gone.
pub(super) async fn route<'a>(conn: &Connection, node: &'a Node) -> Option<(Route, IpSlot<'a>)> {
    let (cfg, peers, metrics) = (&node.cfg, &node.peers, &node.metrics);
    let since = Instant::now();
    let ip = conn.remote_address().ip();
    let Some(stranger) = peers.strangers.take(ip, cfg.limits.max_strangers_per_ip) else {
        metrics.refused(Refusal::StrangerLimit);
        debug!("refusing {ip}: too many connections without a setup header");
        conn.close(
            CLOSE_REFUSED,
            b"too many connections without a setup header",
        );
        return None;
    };
    let mut route = header(conn, cfg.header_timeout, metrics, since).await?;
    if let Err((why, message)) = check(cfg, &route.req) {
        metrics.nacked(why);
        let req = &route.req;
        warn!(peer = %conn.remote_address(), route = req.route_index, "setup refused: {message}");
        refuse(
            conn,
            &mut route.send,
            req.hop_index,
            Cause::Refused,
            &message,
        )
        .await;
        return None;
    }
    drop(stranger);
    let Some(slot) = peers.routes.take(ip, cfg.limits.max_routes_per_client) else {
        let message = format!(
            "too many routes from {ip} (limit {})",
            cfg.limits.max_routes_per_client
        );
        metrics.nacked(Nack::ClientLimit);
        warn!("setup refused: {message}");
        refuse(
            conn,
            &mut route.send,
            route.req.hop_index,
            Cause::Refused,
            &message,
        )
        .await;
        return None;
    };
    Some((route, slot))
}

/// Reads the setup header within `timeout`; a malformed one is refused, a late one closes the
/// connection.
async fn header(
    conn: &Connection,
    timeout: Duration,
    metrics: &NodeMetrics,
    since: Instant,
) -> Option<Route> {
    match tokio::time::timeout(timeout, read_setup(conn, since)).await {
        Ok(Ok(route)) => Some(route),
        Ok(Err(Unread::Reply(mut send, hop, why, message))) => {
            metrics.nacked(why);
            debug!("refusing setup from {}: {message}", conn.remote_address());
            refuse(conn, &mut send, hop, Cause::Refused, &message).await;
            None
        }
        Ok(Err(Unread::Gone(e))) => {
            debug!(
                "connection from {} gone before setup: {e}",
                conn.remote_address()
            );
            None
        }
        Err(_) => {
            metrics.header_timeout();
            conn.close(CLOSE_REFUSED, b"no setup header in time");
            None
        }
    }
}

/// Why a setup header was not read.
enum Unread {
    /// Refuse with a nack on this stream, for this reason.
    Reply(SendStream, u8, Nack, String),
    /// The peer went away; nothing to answer.
    Gone(String),
}

async fn read_setup(conn: &Connection, since: Instant) -> Result<Route, Unread> {
    let (send, mut recv) = conn
        .accept_bi()
        .await
        .map_err(|e| Unread::Gone(e.to_string()))?;
    let truncated = |send, e| {
        let message = format!("truncated setup header: {e}");
        Unread::Reply(send, HOP_SELF, Nack::Malformed, message)
    };
    let undecodable = |send, e: setup::DecodeError| {
        let why = match e {
            setup::DecodeError::Version { .. } => Nack::Version,
            _ => Nack::Malformed,
        };
        Unread::Reply(send, HOP_SELF, why, e.to_string())
    };
    let mut prefix = [0u8; REQUEST_PREFIX_LEN];
    if let Err(e) = recv.read_exact(&mut prefix).await {
        return Err(truncated(send, e));
    }
    let len = match setup::decode_request_prefix(&prefix) {
        Ok(len) => len,
        Err(e) => return Err(undecodable(send, e)),
    };
    let mut body = vec![0u8; len];
    if let Err(e) = recv.read_exact(&mut body).await {
        return Err(truncated(send, e));
    }
    match setup::decode_request_body(&body) {
        Ok(req) => Ok(Route {
            send,
            recv,
            req,
            since,
        }),
        Err(e) => Err(undecodable(send, e)),
    }
}

/// The refusal of a header without a token by a node that needs one; a wrong token is
/// `bad token`. (A client without `--token` sends an empty one; a real token is never empty.)
const TOKEN_REQUIRED: &str = "this node requires a token (--token or MUX_BW_TOKEN)";

/// Policy checks on a well-formed header: token, role, length, loops. A refusal says why, for
/// metrics and for the peer.
fn check(cfg: &NodeConfig, req: &SetupRequest) -> Result<(), (Nack, String)> {
    if let Some(expected) = &cfg.token {
        if req.token.is_empty() {
            return Err((Nack::Token, TOKEN_REQUIRED.to_string()));
        }
        if !constant_time_eq(expected, &req.token) {
            return Err((Nack::Token, "bad token".to_string()));
        }
    }
    let role = match cfg.role {
        Role::Destination if !req.next.is_empty() => {
            Some("this node is a destination and does not forward")
        }
        Role::Relay if req.next.is_empty() => Some("this node is a relay, not a destination"),
        _ => None,
    };
    if let Some(message) = role {
        return Err((Nack::Role, message.to_string()));
    }
    let hops = req.hop_index as usize + 1 + req.next.len();
    if hops > cfg.limits.max_hops {
        let message = format!(
            "route has {hops} hops, this node allows at most {}",
            cfg.limits.max_hops
        );
        return Err((Nack::Hops, message));
    }
    let mut seen = vec![cfg.id];
    for hop in &req.next {
        if seen.contains(&hop.id) {
            return Err((Nack::Loop, format!("path repeats node {}", hop.id)));
        }
        seen.push(hop.id);
    }
    Ok(())
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Refuses a setup: a nack naming `hop` and `cause` on `send`, then a close of `conn`.
pub(super) async fn refuse(
    conn: &Connection,
    send: &mut SendStream,
    hop: u8,
    cause: Cause,
    message: &str,
) {
    let reply = SetupReply::Nack {
        failed_hop: hop,
        cause,
        message: message.to_string(),
    };
    if send.write_all(&reply.encode()).await.is_ok() && send.finish().is_ok() {
        // Let the nack reach the peer before the close does.
        let _ = tokio::time::timeout(NACK_WAIT, send.stopped()).await;
    }
    conn.close(CLOSE_REFUSED, b"setup refused");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::Faults;
    use crate::wire::addr::NodeAddr;
    use crate::wire::identity::NodeId;
    use crate::wire::mode::Mode;
    use crate::wire::transport;

    fn req(next: Vec<NodeAddr>, token: &[u8]) -> SetupRequest {
        SetupRequest {
            route_index: 0,
            hop_index: 0,
            mode: Mode::Up,
            setup_timeout_ms: 1000,
            token: token.to_vec(),
            client_key: [0; crate::wire::proof::KEY_LEN],
            stripe: None,
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
        let refused = |cfg: &NodeConfig, r| check(cfg, &r).unwrap_err();
        assert_eq!(
            refused(&dst, req(vec![], b"x")),
            (Nack::Token, "bad token".into())
        );
        assert_eq!(
            refused(&dst, req(vec![], b"")),
            (Nack::Token, TOKEN_REQUIRED.into())
        );
        assert!(check(&dst, &req(vec![node(1)], b"t")).is_err());

        let relay = cfg(Role::Relay, None);
        assert!(check(&relay, &req(vec![node(1)], b"")).is_ok());
        assert!(check(&relay, &req(vec![], b"")).is_err());
        let (why, message) = refused(&relay, req(vec![node(9)], b""));
        assert!(why == Nack::Loop && message.contains("repeats"));
        assert!(check(&relay, &req(vec![node(1), node(1)], b"")).is_err());
        let too_long = refused(&relay, req(vec![node(1), node(2), node(3)], b""));
        assert_eq!(
            too_long,
            (
                Nack::Hops,
                "route has 4 hops, this node allows at most 3".into()
            )
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
