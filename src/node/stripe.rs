//! The destination's side of striped transfers (`--stripe`): the registry that joins a
//! transfer's routes (by the transfer id in their setup headers), each route's segment reader
//! with its back-pressure (a route whose next segment is beyond the reorder window is not read
//! until the gap fills), and the stripe reports every route sends back. The reassembly itself is
//! `reassembly`, pure.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use quinn::{ReadExactError, RecvStream};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::far_end::Received;
use super::or_stall;
use super::reassembly::{Reassembly, Violation};
use crate::wire::close::CLOSE_DONE;
use crate::wire::datagram::TransferFigures;
use crate::wire::stripe::{self, SegmentHeader, StripeSpec, TRANSFER_ID_LEN};

/// The most reorder-window bytes all of a node's live transfers may claim together: what a
/// destination may end up holding for striped clients.
pub const STRIPE_MEMORY_BUDGET: u64 = 1 << 30;
/// How long a transfer whose routes are all gone (not ended by the client) is kept, so a
/// redialed route can rejoin it.
const LINGER: Duration = Duration::from_secs(30);
/// How long a route whose next segment is beyond the window waits for the gap to fill before
/// its route is closed: a correct client never sends such a segment (it keeps within the window
/// the destination last reported), so only a broken or hostile one waits this long.
const AHEAD_WAIT: Duration = Duration::from_secs(10);

/// The transfers a destination is reassembling, by id. Locked only to look up, insert or expire.
#[derive(Default)]
pub(super) struct Transfers {
    map: Mutex<HashMap<[u8; TRANSFER_ID_LEN], Arc<Transfer>>>,
}

/// One transfer: its reassembly and the routes carrying it.
pub(super) struct Transfer {
    state: Mutex<Reassembly>,
    /// Notified when the in-order offset moves: routes waiting for room look again.
    advanced: Notify,
    routes: AtomicUsize,
    /// The client ended one of its routes on purpose: the run is over.
    finished: AtomicBool,
    /// When the last route left (for `LINGER`).
    idle_since: Mutex<Option<Instant>>,
}

impl Transfers {
    /// The transfer `spec` names, created unless the route is a rejoin; the error is the nack's
    /// message.
    pub(super) fn join(&self, spec: &StripeSpec) -> Result<RouteOfTransfer, String> {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        map.retain(|_, t| !t.expired(now));
        let id = stripe::transfer_hex(&spec.transfer);
        let window = u64::from(spec.window);
        let t = match map.get(&spec.transfer) {
            Some(t) if t.state().window() != window => {
                return Err(format!(
                    "transfer {id} has a reorder window of {} bytes, not {window}",
                    t.state().window()
                ))
            }
            Some(t) => t.clone(),
            None if spec.rejoin => {
                return Err(format!(
                    "unknown transfer {id}: this destination does not hold it (restarted, or \
                     the transfer expired)"
                ))
            }
            None => {
                let claimed: u64 = map.values().map(|t| t.state().window()).sum();
                if claimed + window > STRIPE_MEMORY_BUDGET {
                    return Err(format!(
                        "striped transfers would hold more than {STRIPE_MEMORY_BUDGET} bytes \
                         here ({claimed} claimed): try later or a smaller --reorder-window"
                    ));
                }
                let t = Arc::new(Transfer {
                    state: Mutex::new(Reassembly::new(window)),
                    advanced: Notify::new(),
                    routes: AtomicUsize::new(0),
                    finished: AtomicBool::new(false),
                    idle_since: Mutex::new(None),
                });
                map.insert(spec.transfer, t.clone());
                t
            }
        };
        t.routes.fetch_add(1, Ordering::Relaxed);
        Ok(RouteOfTransfer(t))
    }
}

impl Transfer {
    fn state(&self) -> std::sync::MutexGuard<'_, Reassembly> {
        // Each critical section leaves the reassembly consistent; a poisoned one still is.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn expired(&self, now: Instant) -> bool {
        if self.routes.load(Ordering::Relaxed) > 0 {
            return false;
        }
        let idle = *self.idle_since.lock().unwrap_or_else(|p| p.into_inner());
        self.finished.load(Ordering::Relaxed)
            || idle.is_some_and(|t| now.saturating_duration_since(t) >= LINGER)
    }
}

/// One route's membership of a transfer; leaving is counted on drop.
pub(super) struct RouteOfTransfer(Arc<Transfer>);

impl Drop for RouteOfTransfer {
    fn drop(&mut self) {
        let t = &self.0;
        if t.routes.fetch_sub(1, Ordering::Relaxed) == 1 {
            let now = Instant::now();
            *t.idle_since.lock().unwrap_or_else(|p| p.into_inner()) = Some(now);
            if t.finished.load(Ordering::Relaxed) {
                t.state().drop_held(now);
            }
        }
        // Routes waiting for room may now be the only ones left.
        t.advanced.notify_waiters();
    }
}

/// How a striped route's reading ended.
pub(super) enum SegmentsEnd {
    /// The client finished or reset its stream; `over`: it ended the run (a finish, or a reset
    /// with `CLOSE_DONE`), rather than giving the route up.
    Client { reset: bool, over: bool },
    /// The connection was lost, or this node stopped.
    Lost,
    /// The route broke the transfer's rules: close it with this reason.
    Refused(String),
}

impl RouteOfTransfer {
    /// The client ended the run (it reset a route's stream on purpose).
    pub(super) fn finish(&self) {
        self.0.finished.store(true, Ordering::Relaxed);
    }

    /// The figures for this route's next report (it received `received` bytes).
    pub(super) fn figures(&self, received: u64) -> TransferFigures {
        self.0.state().figures(received, Instant::now())
    }

    /// Reads the route's segments (its pattern seeded with `seed`) into the transfer, counting
    /// payload bytes in `received`, until the client's half ends, the connection is lost, or a
    /// segment breaks the rules.
    pub(super) async fn read_segments(
        &self,
        recv: &mut RecvStream,
        received: &Received<'_>,
        seed: u64,
        stall: &CancellationToken,
    ) -> SegmentsEnd {
        loop {
            let mut head = [0u8; stripe::SEGMENT_HEADER_LEN];
            match or_stall(stall, recv.read_exact(&mut head)).await {
                Ok(()) => {}
                Err(ReadExactError::FinishedEarly(0)) => {
                    return SegmentsEnd::Client {
                        reset: false,
                        over: true,
                    }
                }
                Err(e) => return ended(e, "segment header"),
            }
            let h = match SegmentHeader::decode(&head) {
                Ok(h) => h,
                Err(e) => return SegmentsEnd::Refused(format!("bad segment header: {e}")),
            };
            if let Err(v) = self.wait_for_room(h).await {
                return SegmentsEnd::Refused(v.to_string());
            }
            let mut body = vec![0u8; h.len as usize];
            if let Err(e) = or_stall(stall, recv.read_exact(&mut body)).await {
                return ended(e, "segment");
            }
            received.add(u64::from(h.len));
            let offered = self
                .0
                .state()
                .offer(h.offset, Bytes::from(body), seed, Instant::now());
            match offered {
                Ok(true) => self.0.advanced.notify_waiters(),
                Ok(false) => {}
                Err(v) => return SegmentsEnd::Refused(v.to_string()),
            }
        }
    }

    /// Back-pressure: waits until the segment fits the window. A segment that cannot fit (this
    /// is the transfer's only route, or the gap stays open for `AHEAD_WAIT`) is refused.
    async fn wait_for_room(&self, h: SegmentHeader) -> Result<(), Violation> {
        let t = &self.0;
        let deadline = tokio::time::Instant::now() + AHEAD_WAIT;
        loop {
            let advanced = t.advanced.notified();
            tokio::pin!(advanced);
            advanced.as_mut().enable();
            let beyond = {
                let s = t.state();
                (!s.fits(h.end())).then(|| Violation::BeyondWindow {
                    offset: h.offset,
                    end: h.end(),
                    delivered: s.delivered(),
                    window: s.window(),
                })
            };
            let Some(v) = beyond else { return Ok(()) };
            if t.routes.load(Ordering::Relaxed) <= 1 {
                return Err(v);
            }
            if tokio::time::timeout_at(deadline, advanced).await.is_err() {
                return Err(v);
            }
        }
    }
}

fn ended(e: ReadExactError, what: &str) -> SegmentsEnd {
    match e {
        ReadExactError::FinishedEarly(n) => {
            SegmentsEnd::Refused(format!("stream ended {n} bytes into a {what}"))
        }
        ReadExactError::ReadError(quinn::ReadError::Reset(code)) => SegmentsEnd::Client {
            reset: true,
            over: code == CLOSE_DONE,
        },
        ReadExactError::ReadError(_) => SegmentsEnd::Lost,
    }
}
