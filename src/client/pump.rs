//! The client end of one established route. Exactly one pump task per route: it reads the route's
//! datagrams (delivery reports, probe answers) from the moment the route is up, and moves payload
//! once the run says go. Every read and write has a deadline (`io_timeout`), so a stalled peer ends
//! in an error naming the timeout, never a hang.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use quinn::{Connection, ConnectionError, ReadError, WriteError};
use tokio::sync::{oneshot, Notify};
use tokio_util::sync::CancellationToken;

use crate::client::stripe::Stripe;
use crate::client::table::RouteRef;
use crate::wire::addr::NodeAddr;
use crate::wire::close::{
    cause_of, Attribution, Cause, CLOSE_DONE, CLOSE_DOWNSTREAM, RESET_ABANDONED,
};
use crate::wire::datagram::Datagram;
use crate::wire::identity::NodeId;
use crate::wire::mode::Mode;
use crate::wire::proof::{ReplayWindow, ReportKey};
use crate::wire::setup::PAYLOAD_CHUNK;
use crate::wire::transport::{self, Link};

/// Most bytes an echo pump keeps in flight (sent but not yet echoed back).
pub const ECHO_WINDOW: u64 = 4 << 20;

/// Byte counters of one route, written by its pump and read by the sampler.
#[derive(Debug, Default)]
pub struct Counters {
    /// Goodput bytes delivered to the far end, as reported by it.
    pub sent: AtomicU64,
    /// Bytes received by the client.
    pub received: AtomicU64,
}

impl Counters {
    /// Current (sent, received).
    pub fn snapshot(&self) -> (u64, u64) {
        (
            self.sent.load(Ordering::Relaxed),
            self.received.load(Ordering::Relaxed),
        )
    }
}

/// What the rest of the run holds of a live route: cheap to share, never locked across I/O.
pub struct RouteLive {
    /// Key in the route table.
    pub rref: RouteRef,
    /// Nodes after the client, ending with the destination.
    pub path: Vec<NodeAddr>,
    /// The first link, for datagrams (probes).
    pub conn: Connection,
    /// The route slot's counters, shared by every incarnation of the route (`--redial`).
    pub counters: Arc<Counters>,
    /// `counters.sent` when this incarnation began; the destination's reports count from zero.
    sent_base: u64,
    /// Authenticates the destination's reports and pongs (`proof`).
    key: ReportKey,
    /// The striped transfer this route carries segments of (`--stripe`).
    stripe: Option<Arc<Stripe>>,
    next_seq: AtomicU32,
    /// Probes waiting for their answer, by sequence number, with the hop a `HopPing` was for
    /// (`None`: an RTT ping, answered by the destination's pong); locked only to insert/remove.
    waiting: Mutex<Waiting>,
}

/// Why a probe got no answer.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ProbeError {
    /// The route is not (or no longer) in the table.
    #[error(transparent)]
    Table(#[from] crate::client::table::TableError),
    /// The probe could not be sent.
    #[error("probe on route {0} could not be sent: {1}")]
    Send(RouteRef, String),
    /// No answer in time.
    #[error("probe on route {0} timed out after {1:?}")]
    Timeout(RouteRef, Duration),
}

impl RouteLive {
    /// A live route over `conn` with path `path`, counting into `counters`.
    pub fn new(
        rref: RouteRef,
        path: Vec<NodeAddr>,
        conn: Connection,
        counters: Arc<Counters>,
        key: ReportKey,
        stripe: Option<Arc<Stripe>>,
    ) -> Self {
        RouteLive {
            rref,
            path,
            conn,
            sent_base: counters.sent.load(Ordering::Relaxed),
            counters,
            key,
            stripe,
            next_seq: AtomicU32::new(0),
            waiting: Mutex::new(HashMap::new()),
        }
    }

    fn waiting(&self) -> std::sync::MutexGuard<'_, Waiting> {
        // Each critical section is one map operation; a poisoned map is still consistent.
        self.waiting.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Sends one RTT probe end to end and waits for its answer (read by this route's pump).
    pub async fn probe(&self, timeout: Duration) -> Result<Duration, ProbeError> {
        self.ask(None, timeout).await
    }

    /// Whether the node at `hop` of the path answers a `HopPing` within `timeout`.
    async fn hop_answers(&self, hop: u8, timeout: Duration) -> Result<(), ProbeError> {
        self.ask(Some(hop), timeout).await.map(|_| ())
    }

    /// The first hop of the path that does not answer (each is asked `HOP_TRIES` times at
    /// once), if any: past a silent node nothing answers, so that node is the culprit.
    pub async fn silent_hop(&self, timeout: Duration) -> Option<u8> {
        let asks = (0..self.path.len() as u8).map(|hop| async move {
            let tries = (0..HOP_TRIES).map(|_| Box::pin(self.hop_answers(hop, timeout)));
            futures_util::future::select_ok(tries).await.is_ok()
        });
        let answered = futures_util::future::join_all(asks).await;
        answered.iter().position(|a| !a).map(|h| h as u8)
    }

    async fn ask(&self, hop: Option<u8>, timeout: Duration) -> Result<Duration, ProbeError> {
        let seq = self.next_seq.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.waiting().insert(seq, (hop, tx));
        let sent = Instant::now();
        let ping = match hop {
            None => Datagram::Ping { seq },
            Some(hop) => Datagram::HopPing { hop, seq },
        }
        .encode();
        if let Err(e) = self.conn.send_datagram(ping.into()) {
            self.waiting().remove(&seq);
            return Err(ProbeError::Send(self.rref, e.to_string()));
        }
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(at)) => Ok(at.saturating_duration_since(sent)),
            _ => {
                self.waiting().remove(&seq);
                Err(ProbeError::Timeout(self.rref, timeout))
            }
        }
    }

    /// Takes one datagram. Only what the destination MACed counts: a report or pong that fails
    /// authentication, or a report seen before, ends the route, since a node on the path is
    /// making numbers up.
    fn on_datagram(&self, d: &[u8], replays: &mut ReplayWindow) -> Result<(), PumpError> {
        let answered = |seq: u32, hop: Option<u8>| {
            let now = Instant::now();
            let mut waiting = self.waiting();
            if waiting.get(&seq).is_some_and(|(h, _)| *h == hop) {
                if let Some((_, tx)) = waiting.remove(&seq) {
                    let _ = tx.send(now);
                }
            }
        };
        match Datagram::decode(d) {
            Ok(r @ Datagram::Report { seq, received, .. }) => {
                self.authentic(&r, seq, "delivery report", replays)?;
                self.counters
                    .sent
                    .fetch_max(self.sent_base + received, Ordering::Relaxed);
            }
            Ok(r @ Datagram::StripeReport { seq, figures, .. }) => {
                self.authentic(&r, seq, "stripe report", replays)?;
                self.counters
                    .sent
                    .fetch_max(self.sent_base + figures.received, Ordering::Relaxed);
                if let Some(stripe) = &self.stripe {
                    stripe.on_report(self.rref.index, &figures);
                }
            }
            Ok(p @ Datagram::Pong { seq, .. }) => {
                if !self.key.opens(&p) {
                    return Err(self.forged("a probe answer failed authentication"));
                }
                answered(seq, None);
            }
            Ok(Datagram::HopPong { hop, seq }) => answered(seq, Some(hop)),
            // Pings are not for the client; garbage from a peer is ignored, not fatal.
            Ok(Datagram::Ping { .. } | Datagram::HopPing { .. }) | Err(_) => {}
        }
        Ok(())
    }

    /// A report (`what`, sequence number `seq`) counts only if the destination MACed it and it
    /// was not seen before.
    fn authentic(
        &self,
        d: &Datagram,
        seq: u32,
        what: &str,
        replays: &mut ReplayWindow,
    ) -> Result<(), PumpError> {
        if !self.key.opens(d) {
            return Err(self.forged(&format!("a {what} failed authentication")));
        }
        if !replays.accept(seq) {
            return Err(self.forged(&format!("{what} {seq} was replayed")));
        }
        Ok(())
    }

    /// The failure for a datagram the destination did not send: someone on the relay path did.
    fn forged(&self, what: &str) -> PumpError {
        let relays = &self.path[..self.path.len().saturating_sub(1)];
        let by = if relays.is_empty() {
            "not sent by the destination".to_string()
        } else {
            let names: Vec<String> = relays.iter().map(|n| n.id.to_string()).collect();
            format!("forged on relay path {}", names.join(" -> "))
        };
        PumpError::plain(Cause::Forged, format!("{what}: {by}"))
    }
}

/// Probes waiting for an answer: sequence number → (the hop asked, or `None` for the
/// destination's pong; where to send the arrival time).
type Waiting = HashMap<u32, (Option<u8>, oneshot::Sender<Instant>)>;

/// `HopPing`s sent to each hop when looking for a silent one (datagrams can be lost).
const HOP_TRIES: usize = 3;

/// Why a pump stopped, attributed to a hop of the path when the close reason allows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PumpError {
    /// For people; names the timeout when one fired.
    pub message: String,
    /// For scripts.
    pub cause: Cause,
    /// Index into the path of the hop that failed, when known.
    pub failed_hop: Option<u8>,
    /// That hop's node id, when known.
    pub node: Option<NodeId>,
}

impl PumpError {
    fn plain(cause: Cause, message: String) -> Self {
        PumpError {
            message,
            cause,
            failed_hop: None,
            node: None,
        }
    }

    /// Attributes a lost connection: a relay closes with `CLOSE_DOWNSTREAM` and an
    /// `Attribution` naming the hop that failed; any other close comes from the first hop.
    fn from_close(what: &str, e: &ConnectionError, path: &[NodeAddr]) -> Self {
        let first = path.first().map(|n| n.id);
        if let ConnectionError::ApplicationClosed(c) = e {
            if c.error_code == CLOSE_DOWNSTREAM {
                return match Attribution::decode(&c.reason) {
                    Some(a) => PumpError {
                        message: format!("{what}: {a}"),
                        cause: a.cause,
                        failed_hop: Some(a.hop),
                        node: Some(a.node),
                    },
                    None => PumpError::plain(
                        Cause::ConnectionLost,
                        format!("{what}: {}", String::from_utf8_lossy(&c.reason)),
                    ),
                };
            }
            let reason = String::from_utf8_lossy(&c.reason);
            return PumpError {
                message: format!("{what}: hop 0 closed the route: {reason}"),
                cause: cause_of(e),
                failed_hop: Some(0),
                node: first,
            };
        }
        PumpError {
            message: format!("{what}: hop 0: {e}"),
            cause: cause_of(e),
            failed_hop: Some(0),
            node: first,
        }
    }

    fn timed_out(what: &str, after: Duration) -> Self {
        let after = humantime::format_duration(after);
        PumpError::plain(Cause::Timeout, format!("{what} timed out after {after}"))
    }

    fn write(e: WriteError, path: &[NodeAddr]) -> Self {
        match e {
            WriteError::ConnectionLost(c) => PumpError::from_close("write failed", &c, path),
            other => PumpError::plain(Cause::ConnectionLost, format!("write failed: {other}")),
        }
    }

    fn read(e: ReadError, path: &[NodeAddr]) -> Self {
        match e {
            ReadError::ConnectionLost(c) => PumpError::from_close("read failed", &c, path),
            ReadError::Reset(_) => PumpError::plain(Cause::Ended, format!("read failed: {e}")),
            other => PumpError::plain(Cause::ConnectionLost, format!("read failed: {other}")),
        }
    }
}

/// After the pump resets its stream at the end of the run, how long it waits for the far end to
/// close the route before closing it itself. The close comes back within a few RTTs; the
/// margin is for a lossy, CPU-bound moment (hundreds of routes ending at once), when the reset
/// may need retransmitting: closing before it is acknowledged would leave the route's slots
/// held at every node until QUIC's idle timeout.
pub const END_WAIT: Duration = Duration::from_secs(2);

/// Ends a route so that every hop learns it at once. A connection close is sent once and can be
/// lost (a node then holds the route's slot until QUIC's 30 s idle timeout), but a stream reset
/// is repeated until acknowledged: each relay passes it on, the destination closes the route on
/// it, and that close travels back hop by hop. The local close comes last, bounded by `END_WAIT`.
async fn end_route(conn: Connection, mut send: quinn::SendStream, code: quinn::VarInt) {
    let _ = send.reset(code);
    let _ = tokio::time::timeout(END_WAIT, conn.closed()).await;
    conn.close(CLOSE_DONE, b"run over");
}

/// How long a hop has to answer a `HopPing` when the route is stalled.
pub const HOP_TIMEOUT: Duration = Duration::from_secs(1);

/// The sampler's word that a route moved no bytes for `after`: the pump then looks for the hop
/// that went silent, and ends the route naming it.
pub struct StallWatch<'a> {
    /// Notified on each stall.
    pub notify: &'a Notify,
    /// The stall timeout, for the message.
    pub after: Duration,
}

/// Runs the route: datagrams at once, payload after `go`, until `cancel` (clean: `Ok`) or an
/// error. Ends the route either way: waiting for that at the end of the run, in the background
/// after a failure (whose event should not wait).
pub async fn pump(
    link: Link,
    route: &RouteLive,
    mode: Mode,
    io_timeout: Duration,
    stalls: StallWatch<'_>,
    go: CancellationToken,
    cancel: CancellationToken,
) -> Result<(), PumpError> {
    let Link {
        conn,
        mut send,
        mut recv,
        endpoint,
        ..
    } = link;
    let echo = Echo::default();
    let load = async {
        go.cancelled().await;
        tokio::try_join!(
            write(&mut send, route, mode, io_timeout, &echo),
            read(&mut recv, route, mode, io_timeout, &echo),
        )
        .map(|((), ())| ())
    };
    let result = tokio::select! {
        _ = cancel.cancelled() => Ok(()),
        r = load => r,
        r = datagrams(&conn, route) => r,
        r = silence(route, &stalls) => r,
    };
    if result.is_ok() {
        end_route(conn, send, CLOSE_DONE).await;
    } else {
        tokio::spawn(async move {
            end_route(conn, send, RESET_ABANDONED).await;
            drop(endpoint); // the endpoint must outlive the close
        });
    }
    result
}

/// The echo window's bookkeeping: bytes written, and a wake-up when echoed bytes come back.
#[derive(Default)]
struct Echo {
    written: AtomicU64,
    echoed: Notify,
}

/// Writes payload until an error; in `echo` mode keeps at most `ECHO_WINDOW` bytes unechoed.
async fn write(
    send: &mut quinn::SendStream,
    route: &RouteLive,
    mode: Mode,
    io_timeout: Duration,
    echo: &Echo,
) -> Result<(), PumpError> {
    if !mode.client_sends() {
        return std::future::pending().await;
    }
    if let Some(stripe) = &route.stripe {
        return write_segments(send, route, stripe, io_timeout).await;
    }
    let payload = Bytes::from(vec![0u8; PAYLOAD_CHUNK]);
    let received = &route.counters.received;
    loop {
        if mode == Mode::Echo {
            while echo
                .written
                .load(Ordering::Relaxed)
                .saturating_sub(received.load(Ordering::Relaxed))
                >= ECHO_WINDOW
            {
                if tokio::time::timeout(io_timeout, echo.echoed.notified())
                    .await
                    .is_err()
                {
                    return Err(PumpError::timed_out("echo", io_timeout));
                }
            }
        }
        match tokio::time::timeout(io_timeout, send.write_chunk(payload.clone())).await {
            Ok(Ok(())) => {
                echo.written
                    .fetch_add(PAYLOAD_CHUNK as u64, Ordering::Relaxed);
            }
            Ok(Err(e)) => return Err(PumpError::write(e, &route.path)),
            Err(_) => return Err(PumpError::timed_out("write", io_timeout)),
        }
    }
}

/// Writes the segments the transfer gives this route, each under `io_timeout`. Waiting for a
/// segment is not a fault (the scheduler may prefer another route), but bytes the destination
/// has not confirmed for `io_timeout` are: a striped write is done when it is confirmed.
async fn write_segments(
    send: &mut quinn::SendStream,
    route: &RouteLive,
    stripe: &Stripe,
    io_timeout: Duration,
) -> Result<(), PumpError> {
    let seed = route.key.stripe_seed();
    loop {
        let Some(h) = stripe.next_for(route.rref.index, io_timeout).await else {
            return Err(PumpError::timed_out("segment confirmation", io_timeout));
        };
        let seg = Bytes::from(crate::wire::stripe::segment(seed, h));
        match tokio::time::timeout(io_timeout, send.write_chunk(seg)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(PumpError::write(e, &route.path)),
            Err(_) => return Err(PumpError::timed_out("write", io_timeout)),
        }
    }
}

/// Reads payload (counting it as received) until an error or the destination's end.
async fn read(
    recv: &mut quinn::RecvStream,
    route: &RouteLive,
    mode: Mode,
    io_timeout: Duration,
    echo: &Echo,
) -> Result<(), PumpError> {
    if !mode.client_receives() {
        return std::future::pending().await;
    }
    let mut bufs = transport::chunk_batch();
    loop {
        match tokio::time::timeout(io_timeout, recv.read_chunks(&mut bufs)).await {
            Ok(Ok(Some(n))) => {
                route
                    .counters
                    .received
                    .fetch_add(transport::chunks_len(&bufs[..n]), Ordering::Relaxed);
                echo.echoed.notify_one();
            }
            Ok(Ok(None)) => {
                let message = "destination ended the stream".to_string();
                return Err(PumpError::plain(Cause::Ended, message));
            }
            Ok(Err(e)) => return Err(PumpError::read(e, &route.path)),
            Err(_) => return Err(PumpError::timed_out("read", io_timeout)),
        }
    }
}

/// Takes the route's datagrams (reports, pongs) until the connection ends or one is forged.
async fn datagrams(conn: &Connection, route: &RouteLive) -> Result<(), PumpError> {
    let mut replays = ReplayWindow::default();
    loop {
        match conn.read_datagram().await {
            Ok(d) => route.on_datagram(&d, &mut replays)?,
            Err(e) => return Err(PumpError::from_close("connection lost", &e, &route.path)),
        }
    }
}

/// On each stall, asks every hop; a stall with every hop answering stays a warning, a silent
/// hop ends the route, named.
async fn silence(route: &RouteLive, stalls: &StallWatch<'_>) -> Result<(), PumpError> {
    loop {
        stalls.notify.notified().await;
        if let Some(hop) = route.silent_hop(HOP_TIMEOUT).await {
            let node = route.path.get(hop as usize).map(|n| n.id);
            let who = node.map(|n| format!(" ({n})")).unwrap_or_default();
            return Err(PumpError {
                message: format!(
                    "stalled: no bytes confirmed for {}; hop {hop}{who} does not answer",
                    humantime::format_duration(stalls.after)
                ),
                cause: Cause::Silent,
                failed_hop: Some(hop),
                node,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn closed(code: quinn::VarInt, reason: &[u8]) -> ConnectionError {
        ConnectionError::ApplicationClosed(quinn::ApplicationClose {
            error_code: code,
            reason: reason.to_vec().into(),
        })
    }

    #[test]
    fn relay_attributions_name_the_hop_and_the_cause() {
        let id = NodeId([0xab; 16]);
        let path = [NodeAddr {
            id: NodeId([1; 16]),
            addr: "127.0.0.1:1".parse().unwrap(),
        }];
        let a = Attribution {
            hop: 2,
            node: id,
            cause: Cause::Killed,
            detail: "node killed (fault injection)".into(),
        };
        let e = PumpError::from_close(
            "write failed",
            &closed(CLOSE_DOWNSTREAM, &a.encode()),
            &path,
        );
        assert_eq!(
            (e.failed_hop, e.node, e.cause),
            (Some(2), Some(id), Cause::Killed)
        );
        assert_eq!(e.message, format!("write failed: {a}"));
        // Text that merely looks like an attribution is not one.
        let e = PumpError::from_close(
            "write failed",
            &closed(CLOSE_DOWNSTREAM, format!("hop 2 ({id}): x").as_bytes()),
            &path,
        );
        assert_eq!((e.failed_hop, e.cause), (None, Cause::ConnectionLost));
        // Any other close is the first hop's.
        let e = PumpError::from_close(
            "read failed",
            &closed(crate::wire::close::CLOSE_KILLED, b"killed"),
            &path,
        );
        assert_eq!((e.failed_hop, e.cause), (Some(0), Cause::Killed));
    }
}
