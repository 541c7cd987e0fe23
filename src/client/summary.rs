//! The run's `start` configuration view and its `summary`: per-route totals over the measured
//! part, goodput in the run's direction.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use crate::client::plan::PlannedRoute;
use crate::client::probe::{Loaded, Recorder};
use crate::client::run::RunConfig;
use crate::client::sampler::Reading;
use crate::client::slot::Slot;
use crate::client::stripe::{Stripe, StripeReading};
use crate::client::table::RouteRef;
use crate::report::events::{
    ConfigView, RouteRtt, RouteSummary, RttSummary, StripeSummary, StripeView, Summary,
};
use crate::wire::addr::NodeAddr;
use crate::wire::mode::Mode;
use crate::wire::setup::PROTOCOL_VERSION;
use crate::wire::transport::SetupFailure;

pub(crate) fn config_view(cfg: &RunConfig, stripe: Option<&Stripe>) -> ConfigView {
    ConfigView {
        to: cfg.dst.uri(),
        relays: cfg.relays.iter().map(NodeAddr::uri).collect(),
        routes: cfg.routes.len(),
        min_hops: cfg.min_hops,
        mode: cfg.mode,
        duration_ns: cfg.duration.as_nanos() as u64,
        omit_ns: cfg.omit.as_nanos() as u64,
        stall_timeout_ns: cfg.stall_timeout.as_nanos() as u64,
        probe_rtt: cfg.probe_rtt,
        probe_all: cfg.probe_all,
        probe_interval_ns: cfg.probe_interval.as_nanos() as u64,
        interval_ns: cfg.interval.as_nanos() as u64,
        setup_timeout_ns: cfg.setup_timeout.as_nanos() as u64,
        io_timeout_ns: cfg.io_timeout.as_nanos() as u64,
        allow_overlap: cfg.allow_overlap,
        redial: cfg.redial,
        tuning: cfg.tuning.into(),
        links: cfg.links.as_ref().map(|l| l.view()),
        planned_paths: cfg.routes.iter().map(PlannedRoute::path_ids).collect(),
        pick: cfg.pick.clone(),
        stripe: stripe.map(|s| StripeView {
            scheduler: s.cfg.scheduler.as_str().into(),
            segment_bytes: s.cfg.segment,
            reorder_window_bytes: s.cfg.window,
            bytes: s.cfg.bytes,
            transfer: crate::wire::stripe::transfer_hex(&s.transfer),
        }),
    }
}

/// A striped transfer's summary: in-order bytes between the `readings` (at the end of the
/// warm-up, at the last sample) over `span`, against the routes' sum; integrity counts and
/// what is still missing (the run waited for it: `run::STRIPE_DRAIN`).
pub(crate) fn stripe_summary(
    s: &Stripe,
    (from, to): (StripeReading, StripeReading),
    span: Duration,
    routes_sum_bps: u64,
    transfer: Option<Duration>,
) -> StripeSummary {
    let f = s.figures();
    let in_order_bytes = to.delivered.saturating_sub(from.delivered);
    let in_order_bps = bps(in_order_bytes, span);
    let delivered = f.delivered.load(Ordering::Relaxed);
    StripeSummary {
        in_order_bytes,
        in_order_bps,
        routes_sum_bps,
        efficiency: if routes_sum_bps == 0 {
            0.0
        } else {
            in_order_bps as f64 / routes_sum_bps as f64
        },
        buffer_peak_bytes: f.buffer_peak.load(Ordering::Relaxed),
        blocked_ns: to.blocked_ns.saturating_sub(from.blocked_ns),
        segments_sent: f.segments.load(Ordering::Relaxed),
        segments_resent: f.resent.load(Ordering::Relaxed),
        duplicate_bytes: f.duplicate.load(Ordering::Relaxed),
        corrupt_bytes: f.corrupt.load(Ordering::Relaxed),
        missing_bytes: s.target().saturating_sub(delivered),
        delivered_bytes: delivered,
        transfer_ns: transfer.map(|d| d.as_nanos() as u64),
    }
}

/// Goodput in the run's direction for one route's (sent, received).
pub(crate) fn directional(mode: Mode, (sent, received): (u64, u64)) -> u64 {
    match mode {
        Mode::Up => sent,
        Mode::Down | Mode::Echo => received,
        Mode::Bidir => sent + received,
    }
}

pub(crate) fn bps(bytes: u64, over: Duration) -> u64 {
    let secs = over.as_secs_f64();
    if secs <= 0.0 {
        0
    } else {
        (bytes as f64 * 8.0 / secs) as u64
    }
}

/// `counts`: each slot's counters when the measured part began and when it ended (the last
/// sample's reading, so the summary agrees with the samples even if a late report arrives).
pub(crate) fn summarize(
    cfg: &RunConfig,
    slots: &[Arc<Slot>],
    (baseline, end): (&[Reading], &[Reading]),
    setup_errors: &[(PlannedRoute, SetupFailure)],
    measured: Duration,
    interrupted: bool,
) -> Summary {
    let mut routes = Vec::with_capacity(cfg.routes.len());
    for ((slot, base), now) in slots.iter().zip(baseline).zip(end) {
        if slot.established.load(Ordering::Relaxed) {
            routes.push(established_route(slot, (base, now), cfg.mode, measured));
        } else if let Some((_, f)) = setup_errors.iter().find(|(r, _)| r.index == slot.index) {
            let path = slot.path().iter().map(|n| n.id.to_string()).collect();
            routes.push(setup_failed_route(slot.index, path, f));
        }
    }
    for (route, f) in setup_errors {
        if !slots.iter().any(|s| s.index == route.index) {
            routes.push(setup_failed_route(route.index, route.path_ids(), f));
        }
    }
    routes.sort_by_key(|r| r.route_index);
    let established = slots
        .iter()
        .filter(|s| s.established.load(Ordering::Relaxed))
        .count();
    let aggregate_bytes = routes
        .iter()
        .map(|r| directional(cfg.mode, (r.bytes_sent, r.bytes_received)))
        .sum();
    Summary {
        version: env!("CARGO_PKG_VERSION").into(),
        protocol_version: PROTOCOL_VERSION,
        routes_planned: cfg.routes.len(),
        routes_established: established,
        partial: established < cfg.routes.len(),
        routes_failed: routes.iter().filter(|r| r.state == "failed").count(),
        routes_setup_failed: routes.iter().filter(|r| r.state == "setup_failed").count(),
        duration_ns: measured.as_nanos() as u64,
        aggregate_bytes,
        aggregate_bps: bps(aggregate_bytes, measured),
        interrupted,
        late_samples: 0,   // the sampler sets it
        events_dropped: 0, // the sink sets it
        rtt: None,         // the run sets it, with the probes
        routes,
        stripe: None, // the sampler sets it
    }
}

/// A route that came up: what it moved between the two readings, and how it ended.
fn established_route(
    slot: &Slot,
    (base, now): (&Reading, &Reading),
    mode: Mode,
    measured: Duration,
) -> RouteSummary {
    let path: Vec<String> = slot.path().iter().map(|n| n.id.to_string()).collect();
    let counts = (
        now.counts.0.saturating_sub(base.counts.0),
        now.counts.1.saturating_sub(base.counts.1),
    );
    let error = slot.error();
    RouteSummary {
        route_index: slot.index,
        hops: path.len(),
        path,
        state: if error.is_some() {
            "failed"
        } else if slot.stalled.load(Ordering::Relaxed) {
            "stalled"
        } else {
            "up"
        }
        .into(),
        bytes_sent: counts.0,
        bytes_received: counts.1,
        mean_bps: bps(directional(mode, counts), measured),
        sent_packets: now.link.sent_packets.saturating_sub(base.link.sent_packets),
        lost_packets: now.link.lost_packets.saturating_sub(base.link.lost_packets),
        failures: slot.failures.load(Ordering::Relaxed),
        redials: slot.redials.load(Ordering::Relaxed),
        failed_hop: error.as_ref().and_then(|e| e.failed_hop),
        node: error.as_ref().and_then(|e| e.node).map(|n| n.to_string()),
        cause: error.as_ref().map(|e| e.cause),
        error: error.map(|e| e.message),
    }
}

/// A route that never came up, with why.
fn setup_failed_route(route_index: u32, path: Vec<String>, f: &SetupFailure) -> RouteSummary {
    RouteSummary {
        route_index,
        hops: path.len(),
        path,
        state: "setup_failed".into(),
        bytes_sent: 0,
        bytes_received: 0,
        mean_bps: 0,
        sent_packets: 0,
        lost_packets: 0,
        error: Some(f.message.clone()),
        cause: Some(f.cause),
        failures: 0,
        redials: 0,
        failed_hop: f.failed_hop,
        node: f.node.map(|n| n.to_string()),
    }
}

/// The RTT part of the summary: the idle baseline and the loaded probes, with the latency
/// increase only when both come from the same route.
pub(crate) fn rtt_summary(
    idle: &Recorder,
    idle_route: Option<RouteRef>,
    loaded: &Loaded,
    idle_per_route: &BTreeMap<u32, Recorder>,
) -> RttSummary {
    let routes_probed = loaded.probed.clone();
    let routes = per_route(idle_per_route, &loaded.per_route);
    let (idle, loaded) = (idle.stats(), loaded.rec.stats());
    let route_index = idle_route
        .map(|r| r.index)
        .or(routes_probed.first().copied());
    let same_route = route_index.is_some() && routes_probed.iter().all(|i| Some(*i) == route_index);
    RttSummary {
        route_index,
        latency_increase_ns: match (&idle, &loaded, same_route) {
            (Some(i), Some(l), true) => Some(l.p50_ns as i64 - i.p50_ns as i64),
            _ => None,
        },
        routes_probed,
        routes,
        idle,
        loaded,
    }
}

/// Each probed route's own figures (`--probe-rtt all`), by route index.
fn per_route(idle: &BTreeMap<u32, Recorder>, loaded: &BTreeMap<u32, Recorder>) -> Vec<RouteRtt> {
    let indices: std::collections::BTreeSet<u32> =
        idle.keys().chain(loaded.keys()).copied().collect();
    indices
        .into_iter()
        .map(|route_index| RouteRtt {
            route_index,
            idle: idle.get(&route_index).and_then(Recorder::stats),
            loaded: loaded.get(&route_index).and_then(Recorder::stats),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directional_goodput_per_mode() {
        assert_eq!(directional(Mode::Up, (5, 7)), 5);
        assert_eq!(directional(Mode::Down, (5, 7)), 7);
        assert_eq!(directional(Mode::Echo, (5, 7)), 7);
        assert_eq!(directional(Mode::Bidir, (5, 7)), 12);
        assert_eq!(bps(1_000_000, Duration::from_secs(1)), 8_000_000);
        assert_eq!(bps(1, Duration::ZERO), 0);
    }
}
