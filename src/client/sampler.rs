//! Samples every route's counters at interval boundaries (measured, never scheduled, time),
//! cuts the warm-up, flags late samples, and watches for stalls. Its clock is tokio's, so its
//! logic is tested with paused time (no sleeps, no flakes).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use tokio_util::sync::CancellationToken;

use crate::client::plan::PlannedRoute;
use crate::client::run::RunConfig;
use crate::client::slot::{LinkReading, Slot};
use crate::client::stripe::{Stripe, StripeReading};
use crate::client::summary::{bps, directional, stripe_summary, summarize};
use crate::report::events::Summary;
use crate::report::events::{Event, RouteSample, RouteStalled, RouteState, Sample, StripeSample};
use crate::report::sink::EventSink;
use crate::wire::mode::Mode;
use crate::wire::transport::SetupFailure;

/// How often the run checks for stalled routes (between samples).
pub(crate) const STALL_CHECK: Duration = Duration::from_millis(100);

/// One route at an instant: goodput counters (sent, received) and its first link.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Reading {
    pub(crate) counts: (u64, u64),
    pub(crate) link: LinkReading,
}

/// Per-route progress tracking for stall detection.
pub(crate) struct Progress {
    pub(crate) last_total: u64,
    pub(crate) since: Instant,
    pub(crate) stalled: bool,
}

/// Samples counters at interval boundaries and watches for stalls.
pub(crate) struct Sampler {
    pub(crate) prev: Vec<Reading>,
    pub(crate) progress: Vec<Progress>,
    pub(crate) load_start: Instant,
    pub(crate) omit_end: Instant,
    pub(crate) deadline: Instant,
    /// Readings when the omitted warm-up ended: the summary counts from here.
    pub(crate) baseline: Vec<Reading>,
    /// When `baseline` was taken.
    pub(crate) baseline_at: Option<Instant>,
    /// Samples taken later than `late_after` past their due time.
    pub(crate) late_samples: u32,
    pub(crate) late_after: Duration,
    /// The striped transfer, if any, and its figures at the last sample and at `baseline_at`.
    pub(crate) stripe: Option<Arc<Stripe>>,
    pub(crate) stripe_prev: StripeReading,
    pub(crate) stripe_baseline: StripeReading,
}

/// The least lateness that counts: a few ticks of tokio's 1 ms timer, which any sleep may
/// overshoot without the sample being wrong.
const MIN_LATE: Duration = Duration::from_millis(5);

/// How late a sample may be taken before it counts as late: a tenth of the interval, and never
/// less than `MIN_LATE`.
pub(crate) fn late_after(interval: Duration) -> Duration {
    (interval / 10).max(MIN_LATE)
}

impl Sampler {
    pub(crate) fn new(
        cfg: &RunConfig,
        slots: &[Arc<Slot>],
        load_start: Instant,
        stripe: Option<Arc<Stripe>>,
    ) -> Self {
        let omit_end = load_start + cfg.omit;
        Sampler {
            prev: vec![Reading::default(); slots.len()],
            progress: slots
                .iter()
                .map(|_| Progress {
                    last_total: 0,
                    since: load_start,
                    stalled: false,
                })
                .collect(),
            load_start,
            omit_end,
            deadline: omit_end + cfg.duration,
            baseline: vec![Reading::default(); slots.len()],
            baseline_at: cfg.omit.is_zero().then_some(load_start),
            late_samples: 0,
            late_after: late_after(cfg.interval),
            stripe,
            stripe_prev: StripeReading::default(),
            stripe_baseline: StripeReading::default(),
        }
    }

    /// Samples until the deadline or `stop`; returns when the load ended. Every interval ends
    /// when its sample is actually taken, so a late sampler stretches the interval instead of
    /// inflating its rate; `load_over` (fired at the deadline by a timer of its own, whatever
    /// the sampler is doing) ends the last interval no later than the deadline.
    pub(crate) async fn run(
        &mut self,
        cfg: &RunConfig,
        slots: &[Arc<Slot>],
        sink: &EventSink,
        stop: &CancellationToken,
        load_over: &CancellationToken,
    ) -> Instant {
        let mut interval_start = self.load_start;
        let mut check = tokio::time::interval(STALL_CHECK);
        check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let mut due = (interval_start + cfg.interval).min(self.deadline);
            if interval_start < self.omit_end {
                due = due.min(self.omit_end);
            }
            let stopped = tokio::select! {
                _ = tokio::time::sleep_until(due) => false,
                _ = check.tick() => {
                    self.check_stalls(cfg, slots, sink, Instant::now());
                    // Without --redial a failed route stays down: once all are down, stop.
                    let all_down = slots.iter().all(|s| s.failed.load(Ordering::Relaxed));
                    if !all_down || cfg.redial {
                        continue;
                    }
                    true
                }
                _ = stop.cancelled() => true,
                _ = load_over.cancelled() => true,
            };
            let mut now = Instant::now();
            let late = !stopped && now.saturating_duration_since(due) > self.late_after;
            if load_over.is_cancelled() && self.stripe.is_none() {
                // The pumps stopped at the deadline: nothing moved after it. (A striped
                // transfer's bytes in flight still arrive: its interval ends when sampled.)
                now = now.min(self.deadline);
            }
            self.late_samples += u32::from(late);
            // Intervals are cut at the end of the warm-up, so one that began in it is all warm-up.
            let omitted = interval_start < self.omit_end && !cfg.omit.is_zero();
            let t0 = Instant::from_std(sink.start());
            let mut sample = self.sample(cfg.mode, slots, interval_start - t0, now - t0, omitted);
            sample.late = late;
            sink.emit(Event::Sample(sample));
            if self.baseline_at.is_none() && now >= self.omit_end {
                self.baseline = self.prev.clone();
                self.stripe_baseline = self.stripe_prev;
                self.baseline_at = Some(now);
            }
            interval_start = now;
            if stopped || now >= self.deadline {
                return now;
            }
        }
    }

    pub(crate) fn check_stalls(
        &mut self,
        cfg: &RunConfig,
        slots: &[Arc<Slot>],
        sink: &EventSink,
        now: Instant,
    ) {
        for (slot, p) in slots.iter().zip(self.progress.iter_mut()) {
            if slot.failed.load(Ordering::Relaxed) {
                continue;
            }
            let (sent, received) = slot.counters.snapshot();
            // A striped route the scheduler leaves without bytes is idle, not stalled.
            let idle = self.stripe.as_ref().is_some_and(|s| s.idle(slot.index));
            if sent + received != p.last_total || idle {
                p.last_total = sent + received;
                p.since = now;
                p.stalled = false;
                slot.stalled.store(false, Ordering::Relaxed);
            } else if !p.stalled && now.duration_since(p.since) >= cfg.stall_timeout {
                p.stalled = true;
                slot.stalled.store(true, Ordering::Relaxed);
                slot.stall.notify_one();
                sink.emit(Event::RouteStalled(RouteStalled {
                    route_index: slot.index,
                    stalled_ns: now.duration_since(p.since).as_nanos() as u64,
                    bytes_sent: sent,
                    bytes_received: received,
                }));
            }
        }
    }

    pub(crate) fn sample(
        &mut self,
        mode: Mode,
        slots: &[Arc<Slot>],
        start: Duration,
        end: Duration,
        omitted: bool,
    ) -> Sample {
        let span = end.saturating_sub(start);
        let mut routes = Vec::with_capacity(slots.len());
        let mut aggregate = 0;
        for ((slot, p), prog) in slots.iter().zip(self.prev.iter_mut()).zip(&self.progress) {
            let now = slot.counters.snapshot();
            let link = slot.link_reading();
            let delta = (
                now.0.saturating_sub(p.counts.0),
                now.1.saturating_sub(p.counts.1),
            );
            let lost = link.lost_packets.saturating_sub(p.link.lost_packets);
            *p = Reading { counts: now, link };
            aggregate += directional(mode, delta);
            routes.push(RouteSample {
                route_index: slot.index,
                bytes_sent: now.0,
                bytes_received: now.1,
                sent_bps: bps(delta.0, span),
                received_bps: bps(delta.1, span),
                state: state(slot, prog),
                lost_packets: lost,
                cwnd_bytes: link.now.map(|l| l.cwnd),
                link_rtt_ns: link.now.map(|l| l.rtt.as_nanos() as u64),
            });
        }
        Sample {
            interval_start_ns: start.as_nanos() as u64,
            interval_end_ns: end.as_nanos() as u64,
            omitted,
            active_routes: routes.iter().filter(|r| r.state.is_active()).count(),
            aggregate_bps: bps(aggregate, span),
            late: false,
            routes,
            stripe: self.stripe_sample(span),
        }
    }

    /// The striped transfer's part of a sample over `span`.
    fn stripe_sample(&mut self, span: Duration) -> Option<StripeSample> {
        let stripe = self.stripe.as_ref()?;
        let now = stripe.reading();
        let prev = std::mem::replace(&mut self.stripe_prev, now);
        Some(StripeSample {
            in_order_bps: bps(now.delivered.saturating_sub(prev.delivered), span),
            delivered_bytes: now.delivered,
            buffer_max_bytes: stripe.figures().buffer_interval.swap(0, Ordering::Relaxed),
            blocked_ns: now.blocked_ns.saturating_sub(prev.blocked_ns),
        })
    }

    /// The summary of what was measured: from the sample that ended the warm-up (or, stopped
    /// during it, from `end`: nothing was measured) to the last sample, `end`.
    pub(crate) fn summary(
        &mut self,
        cfg: &RunConfig,
        slots: &[Arc<Slot>],
        setup_errors: &[(PlannedRoute, SetupFailure)],
        end: Instant,
        interrupted: bool,
    ) -> Summary {
        if self.baseline_at.is_none() {
            self.baseline = self.prev.clone();
            self.stripe_baseline = self.stripe_prev;
        }
        let measured_from = self.baseline_at.unwrap_or(end);
        let mut summary = summarize(
            cfg,
            slots,
            (&self.baseline, &self.prev),
            setup_errors,
            end.saturating_duration_since(measured_from),
            interrupted,
        );
        summary.late_samples = self.late_samples;
        summary.stripe = self.stripe.as_ref().map(|s| {
            let span = end.saturating_duration_since(measured_from);
            let transfer = s
                .done_at()
                .map(|t| t.saturating_duration_since(self.load_start.into_std()));
            stripe_summary(
                s,
                (self.stripe_baseline, self.stripe_prev),
                span,
                summary.aggregate_bps,
                transfer,
            )
        });
        summary
    }
}

/// A route's state for its sample entry.
fn state(slot: &Slot, progress: &Progress) -> RouteState {
    if !slot.established.load(Ordering::Relaxed) {
        if slot.pending.load(Ordering::Relaxed) {
            RouteState::Pending
        } else {
            RouteState::SetupFailed
        }
    } else if slot.failed.load(Ordering::Relaxed) {
        RouteState::Failed
    } else if progress.stalled {
        RouteState::Stalled
    } else {
        RouteState::Up
    }
}

/// The sampler on tokio's paused clock: every instant below is exact, so the figures are too.
#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::sink::SinkConfig;
    use crate::wire::addr::test_node;
    use serde_json::Value;

    const MS: Duration = Duration::from_millis(1);

    fn config(omit: Duration, duration: Duration) -> RunConfig {
        crate::client::run::test_config(omit, duration)
    }

    /// Adds `bytes` to the route's confirmed count at each offset from now.
    fn feed(slot: &Arc<Slot>, at: &[(u64, u64)]) {
        let (slot, start, at) = (slot.clone(), Instant::now(), at.to_vec());
        tokio::spawn(async move {
            for (ms, bytes) in at {
                tokio::time::sleep_until(start + MS * ms as u32).await;
                slot.counters.sent.fetch_add(bytes, Ordering::Relaxed);
            }
        });
    }

    /// What one sampled run produced: its events (as written to a file) and summary.
    struct Outcome {
        samples: Vec<Value>,
        stalls: Vec<Value>,
        summary: Summary,
    }

    /// Runs the sampler over one established route as `client::run` does (the load ends at the
    /// deadline by a timer of its own); `stop_at` plays Ctrl-C.
    async fn sample(cfg: &RunConfig, slot: &Arc<Slot>, stop_at: Option<Duration>) -> Outcome {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("run.ndjson");
        let sink_cfg = SinkConfig {
            json_file: Some(file.clone()),
            quiet: true,
            ..SinkConfig::default()
        };
        let sink = EventSink::new(Instant::now().into_std(), &sink_cfg).unwrap();
        let slots = vec![slot.clone()];
        let mut sampler = Sampler::new(cfg, &slots, Instant::now(), None);
        let (stop, load_over) = (CancellationToken::new(), CancellationToken::new());
        let (at, over) = (sampler.deadline, load_over.clone());
        tokio::spawn(async move {
            tokio::time::sleep_until(at).await;
            over.cancel();
        });
        if let Some(after) = stop_at {
            let stop = stop.clone();
            tokio::spawn(async move {
                tokio::time::sleep(after).await;
                stop.cancel();
            });
        }
        let end = sampler.run(cfg, &slots, &sink, &stop, &load_over).await;
        let summary = sampler.summary(cfg, &slots, &[], end, stop.is_cancelled());
        sink.emit(Event::Summary(summary.clone())); // returns once the file has it all
        let events: Vec<Value> = std::fs::read_to_string(&file)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let of = |ty: &str| events.iter().filter(|e| e["type"] == ty).cloned().collect();
        Outcome {
            samples: of("sample"),
            stalls: of("route_stalled"),
            summary,
        }
    }

    /// A striped route the scheduler gives nothing is idle, not stalled; with bytes in flight
    /// and nothing confirmed it is stalled.
    #[tokio::test(start_paused = true)]
    async fn a_striped_route_left_idle_is_not_stalled() {
        use crate::client::stripe::{scheduler::Scheduler, Stripe, StripeConfig};
        let cfg = config(Duration::ZERO, Duration::from_secs(30));
        let slot = up_route();
        let stripe_cfg = StripeConfig {
            scheduler: Scheduler::EarliestArrival,
            segment: 1000,
            window: 1 << 20,
            bytes: None,
        };
        let stripe = Arc::new(Stripe::new(stripe_cfg, [0; 16], CancellationToken::new()));
        stripe.route_up(0);
        let sink_cfg = SinkConfig {
            quiet: true,
            ..SinkConfig::default()
        };
        let sink = EventSink::new(Instant::now().into_std(), &sink_cfg).unwrap();
        let slots = vec![slot.clone()];
        let mut sampler = Sampler::new(&cfg, &slots, Instant::now(), Some(stripe.clone()));
        let t = Instant::now() + Duration::from_secs(5);
        sampler.check_stalls(&cfg, &slots, &sink, t);
        assert!(!slot.stalled.load(Ordering::Relaxed), "idle");
        stripe.claim(0, std::time::Instant::now()).unwrap();
        sampler.check_stalls(&cfg, &slots, &sink, t + Duration::from_secs(5));
        assert!(
            slot.stalled.load(Ordering::Relaxed),
            "bytes in flight, none confirmed"
        );
    }

    fn up_route() -> Arc<Slot> {
        let slot = Arc::new(Slot::new(0, vec![test_node(0)]));
        slot.established.store(true, Ordering::Relaxed);
        slot
    }

    fn field(samples: &[Value], key: &str) -> Vec<Value> {
        samples.iter().map(|s| s[key].clone()).collect()
    }

    #[tokio::test(start_paused = true)]
    async fn every_planned_route_is_sampled_with_its_state() {
        let up = up_route();
        up.counters.sent.fetch_add(1000, Ordering::Relaxed);
        // First setups failed: one for good, one that `--redial` is still trying.
        let never = Arc::new(Slot::new(1, vec![test_node(0)]));
        never.failed.store(true, Ordering::Relaxed);
        let trying = Arc::new(Slot::new(2, vec![test_node(0)]));
        trying.failed.store(true, Ordering::Relaxed);
        trying.pending.store(true, Ordering::Relaxed);
        let cfg = config(Duration::ZERO, Duration::from_secs(1));
        let slots = vec![up, never, trying];
        let mut sampler = Sampler::new(&cfg, &slots, Instant::now(), None);
        let s = sampler.sample(Mode::Up, &slots, Duration::ZERO, MS * 1000, false);
        let states: Vec<RouteState> = s.routes.iter().map(|r| r.state).collect();
        use RouteState::*;
        assert_eq!(states, [Up, SetupFailed, Pending]);
        let idx: Vec<u32> = s.routes.iter().map(|r| r.route_index).collect();
        assert_eq!(idx, [0, 1, 2]);
        assert_eq!(s.active_routes, 1);
        assert_eq!(s.aggregate_bps, 8000);
        assert!(s.routes[1..]
            .iter()
            .all(|r| r.sent_bps == 0 && r.bytes_sent == 0 && r.cwnd_bytes.is_none()));
    }

    #[tokio::test(start_paused = true)]
    async fn samples_end_on_interval_boundaries_and_the_warm_up_is_left_out() {
        let slot = up_route();
        // 1000 bytes every 10 ms, off the 100 ms grid: 800 kbit/s throughout.
        let at: Vec<(u64, u64)> = (0..300).map(|k| (5 + 10 * k, 1000)).collect();
        feed(&slot, &at);
        let cfg = config(Duration::from_secs(1), Duration::from_secs(2));
        let o = sample(&cfg, &slot, None).await;
        let ends = field(&o.samples, "interval_end_ns");
        assert_eq!(ends, [1_000_000_000u64, 2_000_000_000, 3_000_000_000]);
        assert_eq!(field(&o.samples, "omitted"), [true, false, false]);
        assert_eq!(field(&o.samples, "late"), [false, false, false]);
        assert!(o.samples.iter().all(|s| s["aggregate_bps"] == 800_000));
        assert_eq!(o.summary.duration_ns, 2_000_000_000);
        assert_eq!(
            o.summary.aggregate_bytes, 200_000,
            "the warm-up's bytes counted"
        );
        assert_eq!(o.summary.aggregate_bps, 800_000);
        assert_eq!(o.summary.late_samples, 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_late_sample_stretches_its_interval_instead_of_inflating_the_rate() {
        let slot = up_route();
        feed(&slot, &[(500, 100_000), (1500, 100_000), (2500, 100_000)]);
        // Something holds the runtime from 0.9 s to 1.2 s: the 1 s sample is 200 ms late.
        tokio::spawn(async {
            tokio::time::sleep(MS * 900).await;
            tokio::time::advance(MS * 300).await;
        });
        let cfg = config(Duration::ZERO, Duration::from_secs(3));
        let o = sample(&cfg, &slot, None).await;
        let ends = field(&o.samples, "interval_end_ns");
        assert_eq!(ends, [1_200_000_000u64, 2_200_000_000, 3_000_000_000]);
        assert_eq!(field(&o.samples, "late"), [true, false, false]);
        // 100 000 bytes over the 1.2 s really measured, not over the 1 s scheduled (800 000).
        let rates = field(&o.samples, "aggregate_bps");
        assert_eq!(rates, [666_666u64, 800_000, 1_000_000]);
        assert_eq!(o.summary.late_samples, 1);
        assert_eq!(o.summary.aggregate_bps, 800_000);
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_route_is_stalled_once_and_recovers_when_bytes_move() {
        let slot = up_route();
        feed(&slot, &[(250, 1000), (450, 1000), (3550, 1000)]);
        let cfg = config(Duration::ZERO, Duration::from_secs(4));
        let o = sample(&cfg, &slot, None).await;
        assert_eq!(o.stalls.len(), 1, "{:?}", o.stalls);
        // The 0.45 s bytes are seen by the 0.5 s check; one stall timeout later it fires.
        assert_eq!(o.stalls[0]["stalled_ns"], 1_000_000_000u64);
        let states: Vec<Value> = o
            .samples
            .iter()
            .map(|s| s["routes"][0]["state"].clone())
            .collect();
        assert_eq!(states, ["up", "stalled", "stalled", "up"]);
        assert!(!slot.stalled.load(Ordering::Relaxed));
        assert_eq!(o.summary.routes[0].state, "up");
    }

    #[tokio::test(start_paused = true)]
    async fn stopped_during_the_warm_up_measures_nothing() {
        let slot = up_route();
        feed(&slot, &[(100, 50_000), (300, 50_000)]);
        let cfg = config(Duration::from_secs(2), Duration::from_secs(2));
        let o = sample(&cfg, &slot, Some(MS * 500)).await;
        assert_eq!(field(&o.samples, "omitted"), [true]);
        assert_eq!(field(&o.samples, "interval_end_ns"), [500_000_000u64]);
        assert!(o.summary.interrupted);
        assert_eq!(o.summary.duration_ns, 0);
        assert_eq!(o.summary.aggregate_bytes, 0);
        assert_eq!(o.summary.aggregate_bps, 0);
    }
}
