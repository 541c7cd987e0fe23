//! Which route carries the next new segment of a striped transfer (`--scheduler`). Pure: it sees
//! each live route's bytes in flight, measured delivery rate and base delay, and keeps its own
//! turn state; time is passed in. See docs/STRIPE.md for the arithmetic and where it comes from.

use std::time::Duration;

/// `--scheduler`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Scheduler {
    /// Segments in turn, one per route, each waiting for its route (the naive baseline).
    RoundRobin,
    /// In turn, weighted by each route's measured rate (smooth weighted round-robin), never
    /// waiting for a route at its cap.
    Weighted,
    /// Where the segment is predicted to arrive first, from the route's bytes in flight, rate
    /// and base delay; waits for a busy fast route rather than use a slow one that would
    /// deliver later (in the spirit of ECF and BLEST).
    EarliestArrival,
}

impl Scheduler {
    /// The name `--scheduler` takes and events carry.
    pub fn as_str(self) -> &'static str {
        match self {
            Scheduler::RoundRobin => "round-robin",
            Scheduler::Weighted => "weighted",
            Scheduler::EarliestArrival => "earliest-arrival",
        }
    }
}

/// One live route as the scheduler sees it.
#[derive(Clone, Copy, Debug)]
pub struct Lane {
    /// The route's index.
    pub index: u32,
    /// Payload bytes written on it and not yet confirmed by the destination.
    pub inflight: u64,
    /// Measured delivery rate (bytes/s); `None` before the first measurement.
    pub rate: Option<f64>,
    /// Least time seen from writing a byte to its confirmation; `None` before the first.
    pub delay: Option<Duration>,
    /// How long its oldest unconfirmed bytes have waited for any confirmation: a stalled
    /// route's predictions grow with it.
    pub waiting: Duration,
    /// Whether it may take a segment now (its bytes in flight are below its cap).
    pub room: bool,
}

/// Rate assumed for a route not measured yet, when no route is: 10 Mbit/s.
const DEFAULT_RATE: f64 = 1.25e6;

impl Lane {
    /// When a segment of `len` bytes sent now would arrive, from now: the route's base delay,
    /// plus the time to drain what is ahead of it and the segment, plus how long the route has
    /// already gone without confirming anything (a stall).
    pub fn arrival(&self, len: u64, fallback: (f64, Duration)) -> f64 {
        let rate = self.rate.unwrap_or(fallback.0).max(1.0);
        let delay = self.delay.unwrap_or(fallback.1).as_secs_f64();
        delay + (self.inflight + len) as f64 / rate + self.waiting.as_secs_f64()
    }
}

/// The fallback rate and delay for unmeasured routes: the mean of the measured ones.
pub fn fallback(lanes: &[Lane]) -> (f64, Duration) {
    let rates: Vec<f64> = lanes.iter().filter_map(|l| l.rate).collect();
    let delays: Vec<Duration> = lanes.iter().filter_map(|l| l.delay).collect();
    let rate = if rates.is_empty() {
        DEFAULT_RATE
    } else {
        rates.iter().sum::<f64>() / rates.len() as f64
    };
    let delay = if delays.is_empty() {
        Duration::ZERO
    } else {
        delays.iter().sum::<Duration>() / delays.len() as u32
    };
    (rate, delay)
}

/// The scheduler and its turn state.
#[derive(Debug)]
pub struct Turns {
    kind: Scheduler,
    /// Round-robin: the last route given a segment.
    last: Option<u32>,
    /// Weighted: each route's credit (smooth weighted round-robin).
    credit: Vec<(u32, f64)>,
    /// The route whose turn it is (round-robin, weighted), kept until it takes the segment.
    turn: Option<u32>,
    /// Weighted: what the route whose turn it is paid for it, given back if it has no room.
    paid: f64,
}

impl Turns {
    pub fn new(kind: Scheduler) -> Self {
        Turns {
            kind,
            last: None,
            credit: Vec::new(),
            turn: None,
            paid: 0.0,
        }
    }

    /// The route that should carry the next new segment of `len` bytes, among `lanes` (sorted
    /// by index, every one live); `None` without lanes.
    pub fn pick(&mut self, lanes: &[Lane], len: u64) -> Option<u32> {
        if lanes.is_empty() {
            return None;
        }
        if let Some(t) = self.turn {
            match lanes.iter().find(|l| l.index == t) {
                // Weighted does not wait for a route that cannot take the segment: the turn
                // goes back, paid back, and the routes with room share it.
                Some(l) if self.kind == Scheduler::Weighted && !l.room => self.give_back(t),
                Some(_) => return Some(t),
                None => {}
            }
        }
        let pick = match self.kind {
            Scheduler::RoundRobin => {
                let next = lanes.iter().find(|l| Some(l.index) > self.last);
                next.unwrap_or(&lanes[0]).index
            }
            Scheduler::Weighted => self.weighted(lanes)?,
            Scheduler::EarliestArrival => {
                let fb = fallback(lanes);
                let mut best = (f64::INFINITY, lanes[0].index);
                for l in lanes {
                    let at = l.arrival(len, fb);
                    if at < best.0 {
                        best = (at, l.index);
                    }
                }
                return Some(best.1);
            }
        };
        self.turn = Some(pick);
        Some(pick)
    }

    /// Smooth weighted round-robin (nginx's) among the routes with room: each gains its weight,
    /// the richest is picked and pays the total. Unmeasured routes weigh the mean of the
    /// measured. A route without room neither gains nor can be picked, so a route whose rate
    /// is overestimated cannot hold the others to its pace. `None` when no route has room.
    fn weighted(&mut self, lanes: &[Lane]) -> Option<u32> {
        self.credit
            .retain(|(i, _)| lanes.iter().any(|l| l.index == *i));
        let (fb, _) = fallback(lanes);
        let mut total = 0.0;
        for l in lanes.iter().filter(|l| l.room) {
            let w = l.rate.unwrap_or(fb).max(1.0);
            total += w;
            match self.credit.iter_mut().find(|(i, _)| *i == l.index) {
                Some((_, c)) => *c += w,
                None => self.credit.push((l.index, w)),
            }
        }
        let (i, c) = self
            .credit
            .iter_mut()
            .filter(|(i, _)| lanes.iter().any(|l| l.index == *i && l.room))
            .max_by(|a, b| a.1.total_cmp(&b.1))
            .map(|(i, c)| (*i, c))?;
        *c -= total;
        self.paid = total;
        Some(i)
    }

    /// The turn of route `index` goes back unused: it gets back what it paid.
    fn give_back(&mut self, index: u32) {
        if let Some((_, c)) = self.credit.iter_mut().find(|(i, _)| *i == index) {
            *c += self.paid;
        }
        self.turn = None;
    }

    /// Route `index` took the segment: the turn moves on.
    pub fn taken(&mut self, index: u32) {
        self.last = Some(index);
        self.turn = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lane(index: u32, inflight: u64, rate: f64, delay_ms: u64) -> Lane {
        Lane {
            index,
            inflight,
            rate: Some(rate),
            delay: Some(Duration::from_millis(delay_ms)),
            waiting: Duration::ZERO,
            room: true,
        }
    }

    fn picks(t: &mut Turns, lanes: &[Lane], n: usize) -> Vec<u32> {
        (0..n)
            .map(|_| {
                let p = t.pick(lanes, 1000).unwrap();
                t.taken(p);
                p
            })
            .collect()
    }

    #[test]
    fn round_robin_takes_turns_and_waits_for_the_route_whose_turn_it_is() {
        let lanes = [lane(0, 0, 1e6, 1), lane(2, 0, 1e6, 1), lane(5, 0, 1e6, 1)];
        let mut t = Turns::new(Scheduler::RoundRobin);
        assert_eq!(picks(&mut t, &lanes, 4), [0, 2, 5, 0]);
        // Route 2's turn stays its turn until it takes it.
        assert_eq!(t.pick(&lanes, 1000), Some(2));
        assert_eq!(t.pick(&lanes, 1000), Some(2));
        // Unless it went away.
        assert_eq!(t.pick(&[lanes[0], lanes[2]], 1000), Some(5));
    }

    #[test]
    fn weighted_shares_segments_by_rate() {
        let lanes = [lane(0, 0, 1e6, 1), lane(1, 0, 3e6, 1)];
        let mut t = Turns::new(Scheduler::Weighted);
        let p = picks(&mut t, &lanes, 400);
        let on1 = p.iter().filter(|i| **i == 1).count();
        assert_eq!(on1, 300);
    }

    #[test]
    fn weighted_gives_a_full_routes_turn_to_the_others() {
        // Route 1 is overestimated (3x) but at its cap: the turn it holds goes back and the
        // routes with room take every segment, in their own proportion.
        let full = Lane {
            room: false,
            ..lane(1, 500_000, 3e6, 1)
        };
        let lanes = [lane(0, 0, 1e6, 1), full, lane(2, 0, 1e6, 1)];
        let mut t = Turns::new(Scheduler::Weighted);
        let p = picks(&mut t, &lanes, 100);
        assert!(!p.contains(&1), "{p:?}");
        assert_eq!(p.iter().filter(|i| **i == 0).count(), 50);
        // Given the turn while it had room, it loses it when full and is paid back: once it
        // has room again it takes its share at once.
        let mut t = Turns::new(Scheduler::Weighted);
        let mut lanes = [lane(0, 0, 1e6, 1), lane(1, 0, 3e6, 1)];
        assert_eq!(t.pick(&lanes, 1000), Some(1));
        lanes[1].room = false;
        assert_eq!(t.pick(&lanes, 1000), Some(0));
        t.taken(0);
        assert_eq!(t.pick(&[lanes[1]], 1000), None, "nobody with room");
        lanes[1].room = true;
        assert_eq!(t.pick(&lanes, 1000), Some(1));
    }

    #[test]
    fn earliest_arrival_waits_for_a_busy_fast_route_rather_than_use_a_slow_one() {
        // 40 Mbit/s at 5 ms with 250 kB queued arrives in 55 ms; 10 Mbit/s at 40 ms, empty, in 41 ms.
        let fast = lane(0, 250_000, 5e6, 5);
        let slow = lane(1, 0, 1.25e6, 40);
        let mut t = Turns::new(Scheduler::EarliestArrival);
        assert_eq!(t.pick(&[fast, slow], 1000), Some(1));
        // With 100 kB queued the fast route wins, however busy it is right now.
        let fast = lane(0, 100_000, 5e6, 5);
        assert_eq!(t.pick(&[fast, slow], 1000), Some(0));
        // A fast route that has confirmed nothing for a second is not where bytes arrive first.
        let stalled = Lane {
            waiting: Duration::from_secs(1),
            ..fast
        };
        assert_eq!(t.pick(&[stalled, slow], 1000), Some(1));
    }
}
