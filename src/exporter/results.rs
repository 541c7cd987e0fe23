//! A probe's answer: what it measured as Prometheus series, blackbox_exporter's
//! `probe_success` and `probe_duration_seconds` first. Rates are in bytes per second, the
//! Prometheus base unit (multiply by 8 for the events' bits/s). Per-route series are labelled
//! by route index, bounded by the target's `routes`.

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::{Registry, Unit};

use super::probe::Outcome;
use crate::metrics::{Exposition, PREFIX};
use crate::report::events::{RttStats, Summary};

type Real = Gauge<f64, AtomicU64>;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabel {
    route: u32,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabel {
    state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CauseLabel {
    cause: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PhaseLabel {
    phase: &'static str,
}

fn real(v: f64) -> Real {
    let g = Real::default();
    g.set(v);
    g
}

fn count(v: usize) -> Gauge {
    let g = Gauge::default();
    g.set(i64::try_from(v).unwrap_or(i64::MAX));
    g
}

/// Bits per second as bytes per second.
fn bytes_per_s(bps: u64) -> f64 {
    bps as f64 / 8.0
}

const NS: f64 = 1e-9;

/// The series of one probe.
pub fn exposition(o: &Outcome) -> Exposition {
    let mut registry = Registry::default();
    registry.register(
        "probe_success",
        "1 when the measurement ran as configured: every planned route up, none failed",
        count(usize::from(o.failure.is_none())),
    );
    registry.register_with_unit(
        "probe_duration",
        "From the request to the answer",
        Unit::Seconds,
        real(o.elapsed.as_secs_f64()),
    );
    let r = registry
        .sub_registry_with_prefix(PREFIX)
        .sub_registry_with_prefix("probe");
    if let Some(f) = o.failure {
        let failed: Family<CauseLabel, Gauge> = Family::default();
        for cause in o.causes() {
            failed.get_or_create(&CauseLabel { cause }).set(1);
        }
        r.register(
            "failed",
            format!("1 for each cause of this probe's failure ({})", f.name()),
            failed,
        );
    }
    if let Some(s) = &o.summary {
        summary_series(r, s, o);
    }
    Exposition::new(registry)
}

fn summary_series(r: &mut Registry, s: &Summary, o: &Outcome) {
    r.register_with_unit(
        "measured",
        "Length of the measured load (after the warm-up), fitted into the scrape's timeout",
        Unit::Seconds,
        real(s.duration_ns as f64 * NS),
    );
    r.register_with_unit(
        "goodput",
        "Bytes the destination confirmed over the measured load, all routes",
        Unit::Bytes,
        count(usize::try_from(s.aggregate_bytes).unwrap_or(usize::MAX)),
    );
    r.register_with_unit(
        "goodput",
        "Mean goodput of all routes together, bytes per second",
        Unit::Other("bytes_per_second".into()),
        real(bytes_per_s(s.aggregate_bps)),
    );
    let per_route: Family<RouteLabel, Real> = Family::default();
    for route in &s.routes {
        per_route
            .get_or_create(&RouteLabel {
                route: route.route_index,
            })
            .set(bytes_per_s(route.mean_bps));
    }
    r.register_with_unit(
        "route_goodput",
        "Mean goodput of each route, bytes per second",
        Unit::Other("bytes_per_second".into()),
        per_route,
    );
    let setup: Family<RouteLabel, Real> = Family::default();
    for (route, t) in &o.setups {
        setup
            .get_or_create(&RouteLabel { route: *route })
            .set(t.as_secs_f64());
    }
    r.register_with_unit(
        "route_setup",
        "Time to set up each established route, first dial to the chain's ack",
        Unit::Seconds,
        setup,
    );
    route_states(r, s);
    loss(r, s);
    rtt(r, s);
    stripe(r, s);
}

/// Routes by state, and the causes of those that failed or never came up.
fn route_states(r: &mut Registry, s: &Summary) {
    let routes: Family<StateLabel, Gauge> = Family::default();
    for (state, n) in [
        ("planned", s.routes_planned),
        ("established", s.routes_established),
        ("failed", s.routes_failed),
        ("setup_failed", s.routes_setup_failed),
    ] {
        routes
            .get_or_create(&StateLabel { state })
            .set(count(n).get());
    }
    r.register(
        "routes",
        "Routes of this probe: planned, established, failed during the run, never set up",
        routes,
    );
    let causes: Family<CauseLabel, Gauge> = Family::default();
    for cause in s.routes.iter().filter_map(|r| r.cause) {
        causes
            .get_or_create(&CauseLabel {
                cause: cause.name(),
            })
            .inc();
    }
    r.register(
        "route_failures",
        "Routes that failed or never came up, by cause",
        causes,
    );
}

/// First-link loss over all routes: packets the client's connections declared lost.
fn loss(r: &mut Registry, s: &Summary) {
    let sent: u64 = s.routes.iter().map(|r| r.sent_packets).sum();
    let lost: u64 = s.routes.iter().map(|r| r.lost_packets).sum();
    let ratio = if sent == 0 {
        0.0
    } else {
        lost as f64 / sent as f64
    };
    r.register_with_unit(
        "first_link_loss",
        "Packets lost on the routes' first links over packets sent there",
        Unit::Other("ratio".into()),
        real(ratio),
    );
}

/// RTT quantiles, idle and under load, when the target probes RTT.
fn rtt(r: &mut Registry, s: &Summary) {
    let Some(rtt) = &s.rtt else { return };
    let (p50, p90): (Family<PhaseLabel, Real>, Family<PhaseLabel, Real>) = Default::default();
    let phases: [(&'static str, &Option<RttStats>); 2] =
        [("idle", &rtt.idle), ("loaded", &rtt.loaded)];
    for (phase, stats) in phases {
        if let Some(st) = stats {
            let label = PhaseLabel { phase };
            p50.get_or_create(&label).set(st.p50_ns as f64 * NS);
            p90.get_or_create(&label).set(st.p90_ns as f64 * NS);
        }
    }
    r.register_with_unit(
        "rtt_p50",
        "Median RTT on the first established route, idle and under load",
        Unit::Seconds,
        p50,
    );
    r.register_with_unit(
        "rtt_p90",
        "90th percentile RTT on the first established route, idle and under load",
        Unit::Seconds,
        p90,
    );
}

/// A striped target's in-order goodput and integrity.
fn stripe(r: &mut Registry, s: &Summary) {
    let Some(st) = &s.stripe else { return };
    r.register_with_unit(
        "stripe_in_order",
        "Goodput of the one striped transfer, in order at the destination, bytes per second",
        Unit::Other("bytes_per_second".into()),
        real(bytes_per_s(st.in_order_bps)),
    );
    r.register(
        "stripe_efficiency",
        "In-order goodput over the routes' sum",
        real(st.efficiency),
    );
    r.register_with_unit(
        "stripe_corrupt",
        "Bytes of the striped transfer that did not match their offset's pattern",
        Unit::Bytes,
        count(usize::try_from(st.corrupt_bytes).unwrap_or(usize::MAX)),
    );
    r.register_with_unit(
        "stripe_missing",
        "Bytes handed out (or asked for) that had not arrived in order when the run ended; a transfer cut at the deadline counts what it had not sent yet",
        Unit::Bytes,
        count(usize::try_from(st.missing_bytes).unwrap_or(usize::MAX)),
    );
}
