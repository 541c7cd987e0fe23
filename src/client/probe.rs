//! RTT probing: an idle baseline before load and periodic probes under load, always on the first
//! established route that is still up (whatever its index), through the route table. Probes are
//! QUIC datagrams answered by the destination, so they never queue behind bulk stream data.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use hdrhistogram::Histogram;

use tokio::task::JoinSet;

use crate::client::pump::{ProbeError, RouteLive};
use crate::client::supervisor::RouteCtx;
use crate::client::table::{RouteRef, RouteTable};
use crate::report::events::{Event, Probe, ProbePhase, RttStats};
use crate::report::sink::EventSink;

/// How long one probe waits for its answer before it counts as lost.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(1);
/// Probes in the idle baseline.
pub const IDLE_PROBES: usize = 10;
/// Gap between idle probes.
pub const IDLE_GAP: Duration = Duration::from_millis(10);

/// Answered probes per phase whose RTTs are kept exactly: 8 MiB, more than 29 hours of probes
/// at the default `--probe-interval`. Beyond it the figures come from the histogram.
pub const EXACT_LIMIT: usize = 1 << 20;

/// Collects one phase's RTTs: every one exactly (up to `EXACT_LIMIT`), and a histogram that
/// bounds the memory of longer runs.
#[derive(Clone)]
pub struct Recorder {
    exact: Vec<u64>,
    hist: Histogram<u64>,
    lost: u64,
}

impl Default for Recorder {
    fn default() -> Self {
        Recorder {
            exact: Vec::new(),
            // invariant: 1 µs .. 1 h at 3 significant digits are valid bounds.
            hist: Histogram::new_with_bounds(1_000, 3_600_000_000_000, 3).expect("valid bounds"),
            lost: 0,
        }
    }
}

/// The nearest-rank quantile of sorted values: the smallest value with at least a share `q` of
/// the values at or below it, i.e. the value at 1-based rank ⌈q·n⌉ (jq: `sort |
/// .[(length * q | ceil) - 1]`). The median of an even count is the lower middle value.
pub fn nearest_rank(sorted: &[u64], q: f64) -> Option<u64> {
    let rank = ((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len().max(1));
    sorted.get(rank - 1).copied()
}

impl Recorder {
    /// Adds one answered probe.
    pub fn record(&mut self, rtt: Duration) {
        let ns = rtt.as_nanos() as u64;
        if self.exact.len() < EXACT_LIMIT {
            self.exact.push(ns);
        }
        // invariant: clamped into the histogram's bounds, so recording cannot fail.
        let _ = self.hist.record(ns.clamp(1_000, 3_600_000_000_000));
    }

    /// Counts one lost probe.
    pub fn lose(&mut self) {
        self.lost += 1;
    }

    /// The distribution, or `None` when no probe was answered: exact order statistics of the
    /// answered probes (nearest rank) while every one was kept, else the histogram's.
    pub fn stats(&self) -> Option<RttStats> {
        let count = self.hist.len();
        if count == 0 {
            return None;
        }
        let (min_ns, p50_ns, p90_ns, p99_ns, max_ns) = if self.exact.len() as u64 == count {
            let mut v = self.exact.clone();
            v.sort_unstable();
            let q = |q: f64| nearest_rank(&v, q).unwrap_or(0);
            (q(0.0), q(0.5), q(0.9), q(0.99), q(1.0))
        } else {
            let h = &self.hist;
            let q = |q: f64| h.value_at_quantile(q);
            (h.min(), q(0.5), q(0.9), q(0.99), h.max())
        };
        Some(RttStats {
            count,
            lost: self.lost,
            min_ns,
            p50_ns,
            p90_ns,
            p99_ns,
            max_ns,
            rpm: rpm(p50_ns),
        })
    }
}

/// Round trips per minute at a given RTT: 60000 / rtt_ms. Zero RTT gives 0 (not measurable).
pub fn rpm(rtt_ns: u64) -> u64 {
    60_000_000_000u64.checked_div(rtt_ns).unwrap_or(0)
}

/// Picks the probe target: the first route in `established` order still in the table.
pub fn target(table: &RouteTable<Arc<RouteLive>>, established: &[RouteRef]) -> Option<RouteRef> {
    established.iter().copied().find(|r| table.get(*r).is_ok())
}

/// Sends one probe on `r`, reports it as a `probe` event, and returns its outcome.
pub async fn probe_once(
    table: &RouteTable<Arc<RouteLive>>,
    r: RouteRef,
    phase: ProbePhase,
    sink: &EventSink,
) -> Result<Duration, ProbeError> {
    let result: Result<Duration, ProbeError> = table
        .call(r, |route| async move { route.probe(PROBE_TIMEOUT).await })
        .await;
    let (rtt_ns, error) = match &result {
        Ok(rtt) => (Some(rtt.as_nanos() as u64), None),
        Err(e) => (None, Some(e.to_string())),
    };
    sink.emit(Event::Probe(Probe {
        phase,
        route_index: r.index,
        rtt_ns,
        error,
    }));
    result
}

/// What the loaded prober measured: the first route's probes (`rec`, over `probed` as routes
/// failed over) and, with `--probe-rtt all`, every route's own.
pub(crate) struct Loaded {
    pub(crate) rec: Recorder,
    pub(crate) probed: Vec<u32>,
    pub(crate) per_route: BTreeMap<u32, Recorder>,
}

/// Probes under load every `gap` until the run stops: the first route of `up_order` still in the
/// table, or with `all` every route in it (each probe counted for its own route; those on the
/// first route also for the run's figure).
pub(crate) fn spawn_prober(
    ctx: Arc<RouteCtx>,
    gap: Duration,
    all: bool,
) -> tokio::task::JoinHandle<Loaded> {
    tokio::spawn(async move {
        let mut out = Loaded {
            rec: Recorder::default(),
            probed: Vec::new(),
            per_route: BTreeMap::new(),
        };
        // One probe every `gap` whatever the RTT: probes overlap, so a slow or lost one does not
        // hold the next back.
        let mut inflight = JoinSet::new();
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + gap, gap);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                biased;
                _ = ctx.cancel.cancelled() => break,
                Some(done) = inflight.join_next(), if !inflight.is_empty() => {
                    if let Ok(done) = done {
                        out.count(done, all);
                    }
                }
                _ = tick.tick() => {
                    let order = ctx.up_order().clone();
                    let Some(first) = target(&ctx.table, &order) else {
                        continue;
                    };
                    let routes = if all {
                        order.into_iter().filter(|r| ctx.table.get(*r).is_ok()).collect()
                    } else {
                        vec![first]
                    };
                    for r in routes {
                        let ctx = ctx.clone();
                        inflight.spawn(async move {
                            let outcome = probe_once(&ctx.table, r, ProbePhase::Loaded, &ctx.sink).await;
                            (r.index, r == first, outcome)
                        });
                    }
                }
            }
        }
        // Count probes that finished (and emitted their event) before the stop; those still in
        // flight when the load ends are neither answered nor lost.
        while let Some(done) = inflight.try_join_next() {
            if let Ok(done) = done {
                out.count(done, all);
            }
        }
        inflight.abort_all();
        out
    })
}

impl Loaded {
    /// A route counts as probed when one of its probes is counted: at the end of the load the
    /// pumps leave the table while a last tick may still pick another route, and that probe is
    /// never counted, so it must not make `routes_probed` claim a failover.
    fn count(
        &mut self,
        (index, first, outcome): (u32, bool, Result<Duration, ProbeError>),
        all: bool,
    ) {
        if all {
            self.per_route.entry(index).or_default().add(&outcome);
        }
        if first {
            self.rec.add(&outcome);
            if !self.probed.contains(&index) {
                self.probed.push(index);
            }
        }
    }
}

impl Recorder {
    /// Records a probe's outcome.
    pub fn add(&mut self, outcome: &Result<Duration, ProbeError>) {
        match outcome {
            Ok(rtt) => self.record(*rtt),
            Err(_) => self.lose(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_from_probes() {
        let mut r = Recorder::default();
        assert!(r.stats().is_none());
        for ms in (1..=100).rev() {
            r.record(Duration::from_millis(ms) + Duration::from_nanos(7));
        }
        r.lose();
        let s = r.stats().unwrap();
        assert_eq!(s.count, 100);
        assert_eq!(s.lost, 1);
        // Exact values, not histogram buckets.
        assert_eq!(s.min_ns, 1_000_007);
        assert_eq!(s.p50_ns, 50_000_007);
        assert_eq!(s.p90_ns, 90_000_007);
        assert_eq!(s.p99_ns, 99_000_007);
        assert_eq!(s.max_ns, 100_000_007);
        assert_eq!(s.rpm, 1199);
    }

    #[test]
    fn nearest_rank_is_the_lower_middle_for_an_even_count() {
        assert_eq!(nearest_rank(&[], 0.5), None);
        assert_eq!(nearest_rank(&[5], 0.0), Some(5));
        assert_eq!(nearest_rank(&[1, 2, 3, 4], 0.5), Some(2));
        assert_eq!(nearest_rank(&[1, 2, 3], 0.5), Some(2));
        assert_eq!(nearest_rank(&[1, 2, 3, 4], 0.9), Some(4));
        assert_eq!(nearest_rank(&[1, 2, 3, 4], 1.0), Some(4));
    }

    #[test]
    fn rpm_of_zero_is_zero() {
        assert_eq!(rpm(0), 0);
        assert_eq!(rpm(1_000_000), 60_000);
    }
}
