//! The link model of the lab's emulated links, as pure arithmetic (callers pass `now`; no I/O):
//! a FIFO bottleneck of `rate` bits/s whose queue holds at most `queue` of backlog (tail drop
//! beyond), followed by a fixed one-way `delay`, with optional random loss. See docs/LAB.md.

use crate::report::events::LinkView;
use std::fmt;
use std::str::FromStr;
use std::time::{Duration, Instant};

/// A rate in bits per second, written like tc does: `100mbit`, `1gbit`, `512kbit`, `2000000`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Rate(pub u64);

impl FromStr for Rate {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || {
            format!("invalid rate '{s}': expected bits/s like 100mbit, 1gbit, 512kbit or 2000000")
        };
        let t = s.trim().to_ascii_lowercase();
        let (num, mult) = [("gbit", 1e9), ("mbit", 1e6), ("kbit", 1e3), ("bit", 1.0)]
            .iter()
            .find_map(|(suffix, m)| t.strip_suffix(suffix).map(|n| (n.to_string(), *m)))
            .unwrap_or((t.clone(), 1.0));
        let n: f64 = num.trim().parse().map_err(|_| bad())?;
        let bps = n * mult;
        if !bps.is_finite() || !(1000.0..=1e12).contains(&bps) {
            return Err(format!("invalid rate '{s}': expected 1kbit to 1000gbit"));
        }
        Ok(Rate(bps as u64))
    }
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0 as f64;
        if b >= 1e9 {
            write!(f, "{}gbit", b / 1e9)
        } else if b >= 1e6 {
            write!(f, "{}mbit", b / 1e6)
        } else {
            write!(f, "{}kbit", b / 1e3)
        }
    }
}

/// A loss probability in percent, as given (`0.5` = one packet in 200).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Loss(pub f64);

impl FromStr for Loss {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim().trim_end_matches('%');
        match t.parse::<f64>() {
            Ok(p) if (0.0..=100.0).contains(&p) => Ok(Loss(p)),
            _ => Err(format!(
                "invalid loss '{s}': expected a percentage from 0 to 100"
            )),
        }
    }
}

/// One direction of an emulated link.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LinkSpec {
    /// Bottleneck rate; `None` = unlimited.
    pub rate: Option<Rate>,
    /// One-way delay added to every packet.
    pub delay: Duration,
    /// Share of packets dropped on arrival, in percent (0..=100), as `--link-loss` takes it.
    pub loss_pct: f64,
    /// Most backlog the bottleneck queues, as time at its rate (tail drop beyond), like tc
    /// tbf's `latency`; `QUEUE_TIME` unless a topology says otherwise.
    pub queue: Duration,
}

impl LinkSpec {
    /// Whether this link changes anything at all.
    pub fn is_transparent(&self) -> bool {
        self.rate.is_none() && self.delay.is_zero() && self.loss_pct == 0.0
    }
}

/// Default backlog a shaper queues, as time at the link rate (like tc tbf's `latency`).
pub const QUEUE_TIME: Duration = Duration::from_millis(50);
/// Smallest queue in bytes, so slow links still hold a few packets.
pub const MIN_QUEUE_BYTES: u64 = 32 * 1024;

/// The state of one direction of a link.
#[derive(Debug)]
pub struct Shaper {
    spec: LinkSpec,
    /// When the last admitted packet finishes leaving the bottleneck.
    busy_until: Option<Instant>,
    rng: u64,
}

/// What happens to a packet offered to a shaper.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Deliver it at this instant.
    SendAt(Instant),
    /// The queue is full.
    QueueFull,
    /// Random loss.
    Lost,
}

impl Shaper {
    /// A shaper for `spec`; `seed` drives the loss draws.
    pub fn new(spec: LinkSpec, seed: u64) -> Self {
        Shaper {
            spec,
            busy_until: None,
            rng: seed | 1,
        }
    }

    /// Offers a packet of `len` bytes arriving at `now`.
    pub fn admit(&mut self, now: Instant, len: usize) -> Verdict {
        if self.spec.loss_pct > 0.0 && self.next_uniform() * 100.0 < self.spec.loss_pct {
            return Verdict::Lost;
        }
        let Some(rate) = self.spec.rate else {
            return Verdict::SendAt(now + self.spec.delay);
        };
        let start = self.busy_until.map_or(now, |b| b.max(now));
        let backlog = start.duration_since(now);
        let limit_bytes = (rate.0 as f64 / 8.0 * self.spec.queue.as_secs_f64()) as u64;
        let limit =
            Duration::from_secs_f64(limit_bytes.max(MIN_QUEUE_BYTES) as f64 * 8.0 / rate.0 as f64);
        if backlog > limit {
            return Verdict::QueueFull;
        }
        let done = start + Duration::from_secs_f64(len as f64 * 8.0 / rate.0 as f64);
        self.busy_until = Some(done);
        Verdict::SendAt(done + self.spec.delay)
    }

    /// A uniform draw in [0, 1) for the loss decision.
    fn next_uniform(&mut self) -> f64 {
        (xorshift64star(&mut self.rng) >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// xorshift64*: the next pseudo-random value from `state` (never 0). Cheap and repeatable from a
/// seed, good enough to decide drops or shuffle a pool; not for anything secret.
pub fn xorshift64star(state: &mut u64) -> u64 {
    *state ^= *state >> 12;
    *state ^= *state << 25;
    *state ^= *state >> 27;
    state.wrapping_mul(0x2545_f491_4f6c_dd1d)
}

/// How a link is reported in `start.config.links`.
impl From<LinkSpec> for LinkView {
    fn from(l: LinkSpec) -> Self {
        LinkView {
            rate_bps: l.rate.map(|r| r.0),
            delay_ns: l.delay.as_nanos() as u64,
            loss_pct: l.loss_pct,
            queue_ns: l.queue.as_nanos() as u64,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_parse_like_tc() {
        assert_eq!("100mbit".parse(), Ok(Rate(100_000_000)));
        assert_eq!("1gbit".parse(), Ok(Rate(1_000_000_000)));
        assert_eq!("1.5Mbit".parse(), Ok(Rate(1_500_000)));
        assert_eq!("512kbit".parse(), Ok(Rate(512_000)));
        assert_eq!("2000000".parse(), Ok(Rate(2_000_000)));
        for bad in ["", "fast", "100mbps", "-1mbit", "10bit", "5000gbit"] {
            let err = bad.parse::<Rate>().unwrap_err();
            assert!(err.contains(&format!("'{bad}'")), "{err}");
        }
        assert_eq!(Rate(50_000_000).to_string(), "50mbit");
    }

    #[test]
    fn loss_parses_percentages() {
        assert_eq!("1".parse::<Loss>(), Ok(Loss(1.0)));
        assert_eq!("0.5%".parse::<Loss>(), Ok(Loss(0.5)));
        assert_eq!(
            "0.007".parse::<Loss>(),
            Ok(Loss(0.007)),
            "kept as given, not via 0.00007"
        );
        assert!("101".parse::<Loss>().is_err());
        assert!("x".parse::<Loss>().is_err());
    }

    fn spec(rate: u64, delay_ms: u64) -> LinkSpec {
        LinkSpec {
            rate: Some(Rate(rate)),
            delay: Duration::from_millis(delay_ms),
            loss_pct: 0.0,
            queue: QUEUE_TIME,
        }
    }

    #[test]
    fn packets_leave_at_the_link_rate_plus_the_delay() {
        let t = Instant::now();
        let mut s = Shaper::new(spec(8_000_000, 10), 1); // 1 byte per µs
        assert_eq!(
            s.admit(t, 1000),
            Verdict::SendAt(t + Duration::from_micros(11_000))
        );
        // Back to back: the second waits for the first to leave the bottleneck.
        assert_eq!(
            s.admit(t, 1000),
            Verdict::SendAt(t + Duration::from_micros(12_000))
        );
        // After an idle gap the link is free again.
        let later = t + Duration::from_secs(1);
        assert_eq!(
            s.admit(later, 500),
            Verdict::SendAt(later + Duration::from_micros(10_500))
        );
    }

    #[test]
    fn a_full_queue_drops_and_the_rate_holds_over_time() {
        let t = Instant::now();
        let mut s = Shaper::new(spec(8_000_000, 0), 1);
        // 50 ms of queue at 1 byte/µs = 50 kB; offer 100 kB at once.
        let verdicts: Vec<Verdict> = (0..100).map(|_| s.admit(t, 1000)).collect();
        let sent = verdicts
            .iter()
            .filter(|v| matches!(v, Verdict::SendAt(_)))
            .count();
        assert!((50..=52).contains(&sent), "{sent} admitted");
        assert!(verdicts.contains(&Verdict::QueueFull));
        // Offered at exactly the rate, nothing is dropped.
        let mut s = Shaper::new(spec(8_000_000, 0), 1);
        for i in 0..10_000u64 {
            let v = s.admit(t + Duration::from_micros(i * 1000), 1000);
            assert!(matches!(v, Verdict::SendAt(_)));
        }
    }

    #[test]
    fn loss_drops_about_the_given_share() {
        let t = Instant::now();
        let mut s = Shaper::new(
            LinkSpec {
                rate: None,
                delay: Duration::ZERO,
                loss_pct: 10.0,
                queue: QUEUE_TIME,
            },
            42,
        );
        let lost = (0..100_000)
            .filter(|_| s.admit(t, 100) == Verdict::Lost)
            .count();
        assert!((9_000..11_000).contains(&lost), "{lost}");
    }
}
