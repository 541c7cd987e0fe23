//! The relay's side of a route: it dials the next hop named in the header, acknowledges
//! upstream, then splices the two connections (streams and datagrams, answering its own hop
//! pings) until either side ends; closes are passed on, and a lost next hop is attributed
//! (`attribute`) so the client learns which link failed and why.

use std::future::Future;
use std::time::Duration;

use quinn::{Connection, RecvStream, SendStream};
use tokio_util::sync::CancellationToken;
use tracing::info;

use super::admit::{refuse, Route};
use super::{or_stall, Node, KILLED_REASON};
use crate::metrics::node::{Direction, Nack};
use crate::wire::addr::NodeAddr;
use crate::wire::close::{Attribution, Cause};
use crate::wire::close::{CLOSE_DONE, CLOSE_DOWNSTREAM, CLOSE_KILLED, CLOSE_SHUTDOWN};
use crate::wire::datagram::Datagram;
use crate::wire::identity::NodeId;
use crate::wire::setup::{SetupReply, SetupRequest};
use crate::wire::transport;
use prometheus_client::metrics::counter::Counter;

/// Why a relay closes both sides of its routes once its drain time is over.
const RELAY_SHUTDOWN_REASON: &[u8] = b"relay shutting down";

/// Relays an admitted route: onward setup within the client's budget (at most
/// `--max-setup-timeout`), then the splice, until the route ends, the node is killed or shuts
/// down (`node.hard_stop`). Both connections are closed when it returns, or `up` is left to the
/// caller's `close_open`.
pub(super) async fn relay(up: &Connection, route: Route, node: &Node) {
    let Route {
        send: mut up_send,
        recv: up_recv,
        req,
        since,
    } = route;
    // `check` guarantees a relay's header names at least one next hop.
    let Some(next) = req.next.first().copied() else {
        return;
    };
    let onward = SetupRequest {
        hop_index: req.hop_index.saturating_add(1),
        next: req.next[1..].to_vec(),
        ..req.clone()
    };
    // The client's budget, but never more than this node allows.
    let max_setup = node.cfg.limits.max_setup_timeout;
    let timeout = Duration::from_millis(u64::from(req.setup_timeout_ms)).min(max_setup);
    let dialed = dial_onward(up, &mut up_send, &next, &onward, timeout, node);
    let Some(mut down) = dialed.await else {
        return;
    };
    let ack = SetupReply::Ack {
        proof: std::mem::take(&mut down.proof),
    };
    if up_send.write_all(&ack.encode()).await.is_err() {
        down.conn.close(CLOSE_DONE, b"upstream gone");
        return;
    }
    let _up = node.route_up(since);
    info!(route = req.route_index, next = %next.addr, "route up (relay)");
    // The rest of the link (its endpoint) lives in `down` until the route is over.
    let transport::Link {
        conn: down,
        send: down_send,
        recv: down_recv,
        ..
    } = down;
    let (stall, metrics) = (&node.cfg.faults.stall, &node.metrics);
    let splice = async {
        tokio::try_join!(
            copy(
                up_recv,
                down_send,
                metrics.payload(Direction::ToDestination),
                stall
            ),
            copy(
                down_recv,
                up_send,
                metrics.payload(Direction::ToClient),
                stall
            ),
            forward_datagrams(up, &down, Some(req.hop_index), stall),
            forward_datagrams(&down, up, None, stall),
        )
        .map(|_| ())
    };
    let (hop, id) = (onward.hop_index, next.id);
    watch(up, &down, splice, hop, id, node).await;
    node.close_open(&down);
}

/// Sets up the link to `next` with `onward` within `timeout`; a failure is refused upstream with
/// the hop and cause it names. No dialing on for a client that has gone, or once the node
/// shuts down: `None` then, as after a refusal.
async fn dial_onward(
    up: &Connection,
    up_send: &mut SendStream,
    next: &NodeAddr,
    onward: &SetupRequest,
    timeout: Duration,
    node: &Node,
) -> Option<transport::Link> {
    let dialed = tokio::select! {
        r = transport::setup_link(&node.endpoint, next, onward, timeout) => r,
        _ = up.closed() => return None,
        _ = node.hard_stop.cancelled() => return None,
    };
    match dialed {
        Ok(link) => Some(link),
        Err(f) => {
            node.metrics.nacked(Nack::NextHop(f.cause));
            let hop = f.failed_hop.unwrap_or(onward.hop_index);
            refuse(up, up_send, hop, f.cause, &f.message).await;
            None
        }
    }
}

/// Runs `splice` between `up` and `down` (the link to hop `hop`, node `id`) until it fails,
/// either side closes, the node is killed or shuts down; then closes the other side with the
/// code, and attribution, that the end deserves.
async fn watch(
    up: &Connection,
    down: &Connection,
    splice: impl Future<Output = Result<(), String>>,
    hop: u8,
    id: NodeId,
    node: &Node,
) {
    tokio::select! {
        biased;
        // A killed node closes everything itself; nothing here may relabel that as a downstream
        // failure.
        _ = node.cfg.faults.kill.cancelled() => {
            up.close(CLOSE_KILLED, KILLED_REASON);
            down.close(CLOSE_KILLED, KILLED_REASON);
        }
        // Before the splice: the endpoint's own close of a shutdown ends the splice too, and a
        // splice that saw only that would leave the other side to be dropped without a reason.
        _ = node.hard_stop.cancelled() => {
            up.close(CLOSE_SHUTDOWN, RELAY_SHUTDOWN_REASON);
            down.close(CLOSE_SHUTDOWN, RELAY_SHUTDOWN_REASON);
        }
        r = splice => {
            if let Err(e) = r {
                splice_failed(up, down, e, hop, id);
            }
        }
        e = up.closed() => {
            let (code, reason) = close_of(&e);
            down.close(code, &reason);
        }
        e = down.closed() => {
            if !matches!(e, quinn::ConnectionError::LocallyClosed) {
                close_upstream(up, &e, hop, id);
            }
        }
    }
}

/// Closes both sides after the splice failed with `e`: as the side that closed says, or as a
/// lost connection to hop `hop` if neither did.
fn splice_failed(up: &Connection, down: &Connection, e: String, hop: u8, id: NodeId) {
    let local = |c: &Option<quinn::ConnectionError>| {
        matches!(c, Some(quinn::ConnectionError::LocallyClosed))
    };
    if local(&down.close_reason()) || local(&up.close_reason()) {
        // This node closed it (shutdown, kill): nothing to attribute or forward; the side still
        // open gets the node's own close (`Node::close_open`) as the relay returns.
    } else if let Some(e) = down.close_reason() {
        close_upstream(up, &e, hop, id);
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
    moved: &Counter,
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
        let len = transport::chunks_len(&bufs[..n]);
        or_stall(stall, to.write_all_chunks(&mut bufs[..n]))
            .await
            .map_err(|e| e.to_string())?;
        moved.inc_by(len);
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
