//! The destination's side of a route: it proves the route and acknowledges it, then sinks,
//! sources or echoes payload by mode, reports the bytes that arrived (`Report` datagrams every
//! `REPORT_INTERVAL`), answers pings, and closes the connection when the client's half ends.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use prometheus_client::metrics::counter::Counter;
use quinn::{Connection, RecvStream, SendStream};
use tokio_util::sync::CancellationToken;
use tracing::info;

use super::admit::{refuse, Route};
use super::stripe::{RouteOfTransfer, SegmentsEnd};
use super::{or_stall, Node, SHUTDOWN_REASON};
use crate::metrics::node::{Direction, Nack};
use crate::wire::close::Cause;
use crate::wire::close::{CLOSE_DONE, CLOSE_INTEGRITY, CLOSE_SHUTDOWN};
use crate::wire::datagram::Datagram;
use crate::wire::mode::Mode;
use crate::wire::proof::{ReportKey, RouteTerms, Signer, TAG_LEN};
use crate::wire::setup::{SetupReply, SetupRequest, PAYLOAD_CHUNK};
use crate::wire::stripe::{self, StripeSpec};
use crate::wire::transport;

pub use crate::wire::datagram::REPORT_INTERVAL;

/// After the client finished its stream, how long the destination waits for the client to close
/// the connection (so replies still in flight are not discarded) before dropping it anyway.
const CLIENT_CLOSE_WAIT: Duration = Duration::from_secs(5);

/// How the client's half of a route's stream ended, as the destination saw it.
enum End {
    /// Reset by the client: the run is over (`pump` resets its stream when it stops).
    Reset,
    /// Finished cleanly by the client.
    Finished,
    /// The connection was lost, or this node stopped.
    Lost,
}

/// Serves an admitted route as its destination until the route ends, the connection closes or
/// the node shuts down (`node.hard_stop`).
pub(super) async fn destination(conn: &Connection, route: Route, node: &Node) {
    let Route {
        mut send,
        recv,
        req,
        since,
    } = route;
    let member = match &req.stripe {
        None => None,
        Some(spec) => match join(node, spec, req.mode) {
            Ok(m) => Some(m),
            Err(message) => {
                node.metrics.nacked(Nack::Integrity);
                refuse(conn, &mut send, req.hop_index, Cause::Integrity, &message).await;
                return;
            }
        },
    };
    let Some(key) = acknowledge(conn, &mut send, &req, &node.signer).await else {
        return;
    };
    let _up = node.route_up(since);
    info!(route = req.route_index, mode = ?req.mode, "route up (destination)");
    let (stall, shutdown) = (&node.cfg.faults.stall, &node.hard_stop);
    let reporter = Reporter {
        conn,
        key: &key,
        seq: AtomicU32::new(0),
    };
    let received = Received::new(node.metrics.payload(Direction::ToDestination));
    let sent = node.metrics.payload(Direction::ToClient);
    let carried = async {
        match &member {
            Some(m) => striped(conn, &req, recv, &reporter, m, &received, stall).await,
            None => {
                let io = Io {
                    send,
                    recv,
                    received: &received,
                    sent,
                };
                far_end(conn, &req, io, &reporter, stall).await
            }
        }
    };
    tokio::select! {
        end = carried => close_after(conn, end, shutdown).await,
        _ = conn.closed() => {},
        _ = shutdown.cancelled() => conn.close(CLOSE_SHUTDOWN, SHUTDOWN_REASON),
    }
}

/// Proves the route and acks it; the key seals the route's reports and pongs. `None` if the
/// route cannot be proved (refused) or the ack cannot be sent.
async fn acknowledge(
    conn: &Connection,
    send: &mut SendStream,
    req: &SetupRequest,
    signer: &Signer,
) -> Option<ReportKey> {
    let stripe = stripe::spec_bytes(req.stripe.as_ref());
    let terms = RouteTerms {
        index: req.route_index,
        mode: req.mode,
        stripe: &stripe,
    };
    let (proof, key) = match signer.answer(&terms, &req.client_key) {
        Ok(x) => x,
        Err(e) => {
            let message = format!("cannot prove this route: {e}");
            refuse(conn, send, req.hop_index, Cause::Refused, &message).await;
            return None;
        }
    };
    send.write_all(&SetupReply::Ack { proof }.encode())
        .await
        .ok()?;
    Some(key)
}

/// Closes the connection once the client's half ended as `end`.
async fn close_after(conn: &Connection, end: End, shutdown: &CancellationToken) {
    match end {
        // The client reset its stream: the route is over. Close at once, so the slot is free for
        // the next run whether or not the client's own close arrives.
        End::Reset => conn.close(CLOSE_DONE, b"route over"),
        // The client finished its stream. Dropping the connection now could discard replies
        // still in flight, so let the client close it (bounded).
        End::Finished => tokio::select! {
            _ = tokio::time::timeout(CLIENT_CLOSE_WAIT, conn.closed()) => {}
            _ = shutdown.cancelled() => conn.close(CLOSE_SHUTDOWN, SHUTDOWN_REASON),
        },
        End::Lost => {}
    }
}

/// The destination's side of an established route, for every mode. Payload bytes that arrive
/// are reported back in `Report` datagrams every `REPORT_INTERVAL`, so the client measures
/// goodput at the destination, not bytes buffered at its own sender; `Ping`s are answered.
/// The client's half of the stream decides when the route is over, in every mode.
async fn far_end(
    conn: &Connection,
    req: &SetupRequest,
    mut io: Io<'_>,
    reporter: &Reporter<'_>,
    stall: &CancellationToken,
) -> End {
    let mode = req.mode;
    let received = io.received;
    let report = |received: u64| {
        reporter.send(Datagram::Report {
            seq: 0,
            received,
            tag: [0; TAG_LEN],
        })
    };
    let reports = async {
        if !mode.client_sends() {
            return std::future::pending().await;
        }
        report_progress(received, &report, stall).await
    };
    tokio::select! {
        end = carry(mode, &mut io, stall) => {
            report(received.get());
            end
        }
        end = reports => end,
        end = answer_pings(conn, reporter.key, req.hop_index, stall) => end,
    }
}

/// Payload bytes a route received: its own count, for its reports, and the node's counter
/// (`mux_bw_route_payload_bytes_total`), bumped together as bytes arrive.
pub(super) struct Received<'a> {
    route: AtomicU64,
    node: &'a Counter,
}

impl<'a> Received<'a> {
    fn new(node: &'a Counter) -> Self {
        Received {
            route: AtomicU64::new(0),
            node,
        }
    }

    /// `n` more bytes arrived.
    pub(super) fn add(&self, n: u64) {
        self.route.fetch_add(n, Ordering::Relaxed);
        self.node.inc_by(n);
    }

    /// The route's bytes so far.
    pub(super) fn get(&self) -> u64 {
        self.route.load(Ordering::Relaxed)
    }
}

/// A route's stream halves and what counts the bytes moving on them.
struct Io<'a> {
    send: SendStream,
    recv: RecvStream,
    received: &'a Received<'a>,
    /// The node's count of bytes sent to clients.
    sent: &'a Counter,
}

/// Seals the destination's reports on one route, each with the next sequence number (so the
/// client can refuse replays), and sends them.
struct Reporter<'a> {
    conn: &'a Connection,
    key: &'a ReportKey,
    seq: AtomicU32,
}

impl Reporter<'_> {
    /// Sends `d` (a `Report` or `StripeReport`) with its sequence number and MAC set. A lost
    /// report is harmless: the next one carries the newer totals.
    fn send(&self, mut d: Datagram) {
        let next = self.seq.fetch_add(1, Ordering::Relaxed);
        if let Datagram::Report { seq, .. } | Datagram::StripeReport { seq, .. } = &mut d {
            *seq = next;
        }
        let _ = self.conn.send_datagram(self.key.seal(d).encode().into());
    }
}

/// The destination's side of a route of a striped transfer (upload): segments into the
/// transfer's reassembly, a `StripeReport` every `REPORT_INTERVAL` while bytes arrive, pongs.
/// A segment that breaks the transfer's rules closes the route with `CLOSE_INTEGRITY`.
async fn striped(
    conn: &Connection,
    req: &SetupRequest,
    mut recv: RecvStream,
    reporter: &Reporter<'_>,
    member: &RouteOfTransfer,
    received: &Received<'_>,
    stall: &CancellationToken,
) -> End {
    let report = |received: u64| {
        reporter.send(Datagram::StripeReport {
            seq: 0,
            figures: member.figures(received),
            tag: [0; TAG_LEN],
        })
    };
    tokio::select! {
        end = member.read_segments(&mut recv, received, reporter.key.stripe_seed(), stall) => {
            report(received.get());
            match end {
                SegmentsEnd::Client { reset, over } => {
                    if over {
                        member.finish();
                    }
                    if reset { End::Reset } else { End::Finished }
                }
                SegmentsEnd::Lost => End::Lost,
                SegmentsEnd::Refused(reason) => {
                    info!(route = req.route_index, %reason, "striped route refused");
                    conn.close(CLOSE_INTEGRITY, reason.as_bytes());
                    End::Lost
                }
            }
        }
        end = report_always(received, &report, stall) => end,
        end = answer_pings(conn, reporter.key, req.hop_index, stall) => end,
    }
}

/// Every `REPORT_INTERVAL`, reports: a striped transfer's figures (its in-order offset, its
/// buffer, the time it is blocked) change while this route moves nothing. Never ends.
async fn report_always(
    received: &Received<'_>,
    report: &impl Fn(u64),
    stall: &CancellationToken,
) -> End {
    let mut tick = tokio::time::interval(REPORT_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        or_stall(stall, tick.tick()).await;
        report(received.get());
    }
}

/// The transfer a destination's route joins; striped transfers are upload only.
fn join(node: &Node, spec: &StripeSpec, mode: Mode) -> Result<RouteOfTransfer, String> {
    if mode != Mode::Up {
        return Err(format!(
            "a striped transfer is upload only, not mode {}",
            mode.as_str()
        ));
    }
    node.transfers.join(spec)
}

/// Moves the route's payload as `mode` asks, counting what arrives and leaves, until the
/// client's half ends.
async fn carry(mode: Mode, io: &mut Io<'_>, stall: &CancellationToken) -> End {
    let Io {
        send,
        recv,
        received,
        sent,
    } = io;
    match mode {
        Mode::Up => sink(recv, received, stall).await,
        Mode::Echo => echo(recv, send, received, sent, stall).await,
        Mode::Down | Mode::Bidir => {
            // Sourcing ends only with the connection, or when the client stops reading; the end
            // of the route is still the end of the client's half.
            let source = async {
                source(send, sent, stall).await;
                std::future::pending().await
            };
            tokio::select! {
                end = sink(recv, received, stall) => end,
                end = source => end,
            }
        }
    }
}

/// Every `REPORT_INTERVAL`, reports the count in `received` if it changed. Never ends.
async fn report_progress(
    received: &Received<'_>,
    report: &impl Fn(u64),
    stall: &CancellationToken,
) -> End {
    let mut reported = 0;
    let mut tick = tokio::time::interval(REPORT_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        or_stall(stall, tick.tick()).await;
        let now = received.get();
        if now != reported {
            report(now);
            reported = now;
        }
    }
}

/// Answers the client's `Ping`s (sealed with `key`) and the `HopPing`s for this node's hop (`hop_index`)
/// until the connection is lost.
async fn answer_pings(
    conn: &Connection,
    key: &ReportKey,
    hop_index: u8,
    stall: &CancellationToken,
) -> End {
    while let Ok(d) = or_stall(stall, conn.read_datagram()).await {
        match Datagram::decode(&d) {
            Ok(Datagram::Ping { seq }) => {
                let pong = key.seal(Datagram::Pong {
                    seq,
                    tag: [0; TAG_LEN],
                });
                let _ = conn.send_datagram(pong.encode().into());
            }
            Ok(Datagram::HopPing { hop, seq }) if hop == hop_index => {
                let _ = conn.send_datagram(Datagram::HopPong { hop, seq }.encode().into());
            }
            _ => {}
        }
    }
    End::Lost
}

/// How the client's half ended: finished (`None`), reset, or lost with the connection.
fn end_of(e: Option<quinn::ReadError>) -> End {
    match e {
        None => End::Finished,
        Some(quinn::ReadError::Reset(_)) => End::Reset,
        Some(_) => End::Lost,
    }
}

async fn sink(recv: &mut RecvStream, received: &Received<'_>, stall: &CancellationToken) -> End {
    let mut bufs = transport::chunk_batch();
    loop {
        match or_stall(stall, recv.read_chunks(&mut bufs)).await {
            Ok(Some(n)) => received.add(transport::chunks_len(&bufs[..n])),
            Ok(None) => return end_of(None),
            Err(e) => return end_of(Some(e)),
        }
    }
}

/// Writes payload until the stream fails; `sent` counts what QUIC took for sending.
async fn source(send: &mut SendStream, sent: &Counter, stall: &CancellationToken) {
    let payload = Bytes::from(vec![0u8; PAYLOAD_CHUNK]);
    while or_stall(stall, send.write_chunk(payload.clone()))
        .await
        .is_ok()
    {
        sent.inc_by(PAYLOAD_CHUNK as u64);
    }
}

async fn echo(
    recv: &mut RecvStream,
    send: &mut SendStream,
    received: &Received<'_>,
    sent: &Counter,
    stall: &CancellationToken,
) -> End {
    let mut bufs = transport::chunk_batch();
    loop {
        let n = match or_stall(stall, recv.read_chunks(&mut bufs)).await {
            Ok(Some(n)) => n,
            Ok(None) => return end_of(None),
            Err(e) => return end_of(Some(e)),
        };
        let len = transport::chunks_len(&bufs[..n]);
        received.add(len);
        if or_stall(stall, send.write_all_chunks(&mut bufs[..n]))
            .await
            .is_err()
        {
            return End::Lost;
        }
        sent.inc_by(len);
    }
}
