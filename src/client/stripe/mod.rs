//! The client's side of a striped transfer (`--stripe`): one byte stream cut into segments, each
//! handed to one route by the scheduler; the segments each route has in flight, kept until the
//! destination confirms them and resent over the other routes when their route fails; and the
//! destination's figures (in-order offset, buffer, blocked time, duplicates, corruption) taken
//! from its MACed stripe reports. The state is locked only to claim a segment or take a report,
//! never across I/O.

pub mod scheduler;

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::wire::datagram::{TransferFigures, REPORT_INTERVAL};
use crate::wire::stripe::{SegmentHeader, StripeSpec, TRANSFER_ID_LEN};
use scheduler::{Lane, Scheduler, Turns};

/// A striped transfer's settings, validated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StripeConfig {
    pub scheduler: Scheduler,
    /// Payload bytes per segment (`--segment`).
    pub segment: u32,
    /// The destination's reorder window (`--reorder-window`).
    pub window: u32,
    /// End the run once this many bytes arrived in order (`--bytes`); `None`: at `--duration`.
    pub bytes: Option<u64>,
}

/// Bytes a route may have in flight before its rate is measured.
const INITIAL_LANE_CAP: u64 = 1 << 20;
/// Width of one delivery-rate measurement.
const RATE_WINDOW: Duration = Duration::from_millis(100);
/// A route's rate is the best of its last this many measurements (a route that waited its turn
/// for a while is not slower for it).
const RATE_SAMPLES: usize = 10;
/// How often a waiting route looks again even if nothing was reported (predictions age).
const RECHECK: Duration = Duration::from_millis(5);

/// One segment written on a route and not yet confirmed.
#[derive(Clone, Copy, Debug)]
struct Sent {
    seg: SegmentHeader,
    /// The route's written bytes once this segment is written: confirmed when the route's
    /// received count reaches it.
    mark: u64,
    at: Instant,
}

/// One route's part of the transfer, for its current incarnation.
#[derive(Debug)]
struct Route {
    /// Payload bytes written this incarnation.
    written: u64,
    /// Of those, confirmed received by the destination (its reports count per connection).
    confirmed: u64,
    unconfirmed: VecDeque<Sent>,
    /// When a report last confirmed something on it, or when it last went from nothing in
    /// flight to something: how long its bytes have waited for a confirmation counts from here.
    progress_at: Instant,
    /// Whether, during the current rate measurement, the transfer held the route back (not its
    /// turn, or the window full) while it had room: such a measurement shows the scheduler's
    /// pace, not the route's, and may only raise the route's rate.
    held_back: bool,
    delay: Option<Duration>,
    /// (start, confirmed then) of the current rate measurement, and the last measurements.
    window_start: (Instant, u64),
    rates: VecDeque<f64>,
}

impl Route {
    fn new(now: Instant) -> Self {
        Route {
            written: 0,
            confirmed: 0,
            unconfirmed: VecDeque::new(),
            progress_at: now,
            held_back: false,
            delay: None,
            window_start: (now, 0),
            rates: VecDeque::new(),
        }
    }

    fn rate(&self) -> Option<f64> {
        self.rates.iter().copied().reduce(f64::max)
    }

    /// The route as the scheduler sees it; `cap` is the most it may have in flight.
    fn lane(&self, index: u32, now: Instant, cap: u64) -> Lane {
        let inflight = self.written - self.confirmed;
        Lane {
            index,
            inflight,
            rate: self.rate(),
            delay: self.delay,
            waiting: self.waiting(now),
            room: inflight < cap,
        }
    }

    /// How long its bytes in flight have waited for any confirmation (0 with none in flight).
    fn waiting(&self, now: Instant) -> Duration {
        if self.written == self.confirmed {
            Duration::ZERO
        } else {
            now.saturating_duration_since(self.progress_at)
        }
    }

    /// The destination confirmed `received` bytes of this incarnation.
    fn confirm(&mut self, received: u64, now: Instant) {
        if received <= self.confirmed {
            return;
        }
        self.confirmed = received.min(self.written);
        self.progress_at = now;
        while let Some(s) = self.unconfirmed.front() {
            if s.mark > self.confirmed {
                break;
            }
            let d = now.saturating_duration_since(s.at);
            self.delay = Some(self.delay.map_or(d, |m| m.min(d)));
            self.unconfirmed.pop_front();
        }
        let (t0, c0) = self.window_start;
        let span = now.saturating_duration_since(t0);
        if span >= RATE_WINDOW {
            let sample = (self.confirmed - c0) as f64 / span.as_secs_f64();
            if !self.held_back || self.rate().is_none_or(|r| sample >= r) {
                self.rates.push_back(sample);
                if self.rates.len() > RATE_SAMPLES {
                    self.rates.pop_front();
                }
            }
            self.window_start = (now, self.confirmed);
            self.held_back = false;
        }
    }
}

/// What the run holds of the transfer while it goes on.
#[derive(Debug)]
struct State {
    /// The next new byte to hand out.
    next: u64,
    /// No new segments after this (the load is over, or `--bytes` were all handed out).
    intake_closed: bool,
    /// Segments whose route failed before they were confirmed, lowest offset first.
    resend: BTreeMap<u64, u32>,
    /// Live routes by index.
    routes: BTreeMap<u32, Route>,
    turns: Turns,
    /// The in-order offset as last reported.
    delivered: u64,
    started: bool,
}

/// A striped transfer, shared by the run's pumps (through `RouteLive`) and its sampler.
pub struct Stripe {
    pub cfg: StripeConfig,
    /// The transfer's id (random); its first 8 bytes seed the payload pattern.
    pub transfer: [u8; TRANSFER_ID_LEN],
    state: Mutex<State>,
    changed: Notify,
    /// Cancelled when `--bytes` arrived in order: the run ends.
    done: CancellationToken,
    done_at: Mutex<Option<Instant>>,
    figures: Figures,
}

/// The destination's figures as reported (each the most it reported), and the client's counts.
#[derive(Debug, Default)]
pub struct Figures {
    pub delivered: AtomicU64,
    pub blocked_ns: AtomicU64,
    pub duplicate: AtomicU64,
    pub corrupt: AtomicU64,
    /// Most bytes held beyond the in-order offset since the sampler last took it.
    pub buffer_interval: AtomicU64,
    /// Most bytes held beyond the in-order offset in the whole run.
    pub buffer_peak: AtomicU64,
    pub segments: AtomicU64,
    pub resent: AtomicU64,
}

/// The figures at an instant, for samples and the summary.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StripeReading {
    pub delivered: u64,
    pub blocked_ns: u64,
}

impl Stripe {
    /// A new transfer with a random id; `done` is cancelled once `cfg.bytes` arrived in order.
    pub fn new(
        cfg: StripeConfig,
        transfer: [u8; TRANSFER_ID_LEN],
        done: CancellationToken,
    ) -> Self {
        Stripe {
            cfg,
            transfer,
            state: Mutex::new(State {
                next: 0,
                intake_closed: false,
                resend: BTreeMap::new(),
                routes: BTreeMap::new(),
                turns: Turns::new(cfg.scheduler),
                delivered: 0,
                started: false,
            }),
            changed: Notify::new(),
            done,
            done_at: Mutex::new(None),
            figures: Figures::default(),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        // Every critical section leaves the books consistent; a poisoned lock still holds them.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The stripe field of a route's setup header: a rejoin once any route carried the transfer.
    pub fn spec(&self) -> StripeSpec {
        StripeSpec {
            transfer: self.transfer,
            window: self.cfg.window,
            rejoin: self.state().started,
        }
    }

    /// The figures as reported so far.
    pub fn figures(&self) -> &Figures {
        &self.figures
    }

    /// In-order offset and blocked time now.
    pub fn reading(&self) -> StripeReading {
        StripeReading {
            delivered: self.figures.delivered.load(Ordering::Relaxed),
            blocked_ns: self.figures.blocked_ns.load(Ordering::Relaxed),
        }
    }

    /// When `--bytes` had all arrived in order.
    pub fn done_at(&self) -> Option<Instant> {
        *self.done_at.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The byte the transfer had to reach: `--bytes`, or everything handed out.
    pub fn target(&self) -> u64 {
        self.cfg.bytes.unwrap_or_else(|| self.state().next)
    }

    /// A route (a new incarnation) joined the transfer.
    pub fn route_up(&self, index: u32) {
        let mut st = self.state();
        st.started = true;
        st.routes.insert(index, Route::new(Instant::now()));
        drop(st);
        self.changed.notify_waiters();
    }

    /// A route failed: whatever it had not had confirmed is resent over the others.
    pub fn route_down(&self, index: u32) {
        let mut st = self.state();
        if let Some(r) = st.routes.remove(&index) {
            let delivered = st.delivered;
            for s in r.unconfirmed {
                if s.seg.end() > delivered {
                    st.resend.insert(s.seg.offset, s.seg.len);
                }
            }
        }
        drop(st);
        self.changed.notify_waiters();
    }

    /// No new segments from now on (resends still go out): the load is over.
    pub fn close_intake(&self) {
        self.state().intake_closed = true;
        self.changed.notify_waiters();
    }

    /// Takes a stripe report that arrived on route `index`.
    pub fn on_report(&self, index: u32, f: &TransferFigures) {
        let now = Instant::now();
        let mut st = self.state();
        if let Some(r) = st.routes.get_mut(&index) {
            r.confirm(f.received, now);
        }
        if f.delivered > st.delivered {
            st.delivered = f.delivered;
            let delivered = f.delivered;
            st.resend
                .retain(|off, len| off + u64::from(*len) > delivered);
        }
        drop(st);
        let g = &self.figures;
        g.delivered.fetch_max(f.delivered, Ordering::Relaxed);
        g.blocked_ns.fetch_max(f.blocked_ns, Ordering::Relaxed);
        g.duplicate.fetch_max(f.duplicate, Ordering::Relaxed);
        g.corrupt.fetch_max(f.corrupt, Ordering::Relaxed);
        g.buffer_interval.fetch_max(f.buffer_max, Ordering::Relaxed);
        g.buffer_peak.fetch_max(f.buffer_max, Ordering::Relaxed);
        if self.cfg.bytes.is_some_and(|b| f.delivered >= b) && !self.done.is_cancelled() {
            *self.done_at.lock().unwrap_or_else(|p| p.into_inner()) = Some(now);
            self.done.cancel();
        }
        self.changed.notify_waiters();
    }

    /// The next segment route `index` should write, waiting until there is one for it; `None`
    /// once the route has had bytes unconfirmed, with no confirmation at all, for `deadline`
    /// (a write is only done when the destination confirms it).
    pub async fn next_for(&self, index: u32, deadline: Duration) -> Option<SegmentHeader> {
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            let now = Instant::now();
            if let Some(seg) = self.claim(index, now) {
                return Some(seg);
            }
            if self.unconfirmed_for(index, now) >= deadline {
                return None;
            }
            tokio::select! {
                _ = changed => {}
                _ = tokio::time::sleep(RECHECK) => {}
            }
        }
    }

    /// Whether route `index` has nothing in flight: left idle by the scheduler, not stalled.
    pub fn idle(&self, index: u32) -> bool {
        self.state()
            .routes
            .get(&index)
            .is_none_or(|r| r.written == r.confirmed)
    }

    /// How long route `index` has had bytes unconfirmed without any confirmation.
    fn unconfirmed_for(&self, index: u32, now: Instant) -> Duration {
        let st = self.state();
        st.routes
            .get(&index)
            .map_or(Duration::ZERO, |r| r.waiting(now))
    }

    /// A segment for route `index` now, if it should send one: a resend first, else the next
    /// new bytes when the scheduler gives it the turn, the route has room and the destination's
    /// window allows.
    pub(crate) fn claim(&self, index: u32, now: Instant) -> Option<SegmentHeader> {
        let mut st = self.state();
        let horizon = horizon(&st.routes, self.cfg.segment);
        let r = st.routes.get(&index)?;
        if r.written - r.confirmed >= lane_cap(r, horizon, self.cfg.segment) {
            return None;
        }
        let seg = if let Some((offset, len)) = st.resend.pop_first() {
            self.figures.resent.fetch_add(1, Ordering::Relaxed);
            SegmentHeader { offset, len }
        } else {
            let left = self
                .cfg
                .bytes
                .map_or(u64::MAX, |b| b.saturating_sub(st.next));
            if st.intake_closed || left == 0 {
                return None;
            }
            let len = u64::from(self.cfg.segment).min(left);
            let lanes: Vec<Lane> = st
                .routes
                .iter()
                .map(|(i, r)| r.lane(*i, now, lane_cap(r, horizon, self.cfg.segment)))
                .collect();
            if st.next + len > st.delivered + u64::from(self.cfg.window)
                || st.turns.pick(&lanes, len) != Some(index)
            {
                if let Some(r) = st.routes.get_mut(&index) {
                    r.held_back = true;
                }
                return None;
            }
            st.turns.taken(index);
            let seg = SegmentHeader {
                offset: st.next,
                len: len as u32,
            };
            st.next += len;
            seg
        };
        self.figures.segments.fetch_add(1, Ordering::Relaxed);
        let r = st.routes.get_mut(&index)?;
        if r.written == r.confirmed {
            r.progress_at = now;
        }
        r.written += u64::from(seg.len);
        let mark = r.written;
        r.unconfirmed.push_back(Sent { seg, mark, at: now });
        Some(seg)
    }

    /// Waits (at most `within`, or until `stop`) for everything handed out to arrive in order.
    pub async fn drain(&self, within: Duration, stop: &CancellationToken) {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if self.reading().delivered >= self.target() || self.state().routes.is_empty() {
                return;
            }
            tokio::select! {
                _ = changed => {}
                _ = tokio::time::sleep_until(deadline) => return,
                _ = stop.cancelled() => return,
            }
        }
    }
}

/// How far ahead the transfer should keep every route busy: the longest a segment takes on any
/// live route when nothing is queued (base delay, a report interval, one segment's time).
fn horizon(routes: &BTreeMap<u32, Route>, segment: u32) -> Option<f64> {
    routes
        .values()
        .filter_map(|r| {
            let (rate, delay) = (r.rate()?, r.delay?);
            Some(
                delay.as_secs_f64()
                    + REPORT_INTERVAL.as_secs_f64()
                    + f64::from(segment) / rate.max(1.0),
            )
        })
        .reduce(f64::max)
}

/// Most bytes a route may have unconfirmed: twice what it delivers over the horizon (so every
/// route stays busy while the slowest one's segments travel), at least four segments; before
/// it is measured, `INITIAL_LANE_CAP`.
fn lane_cap(r: &Route, horizon: Option<f64>, segment: u32) -> u64 {
    match (r.rate(), horizon) {
        (Some(rate), Some(h)) => ((2.0 * rate * h) as u64).max(4 * u64::from(segment)),
        _ => INITIAL_LANE_CAP.max(4 * u64::from(segment)),
    }
}

#[cfg(test)]
mod tests;
