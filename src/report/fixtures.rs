//! Whole, valid events to build saved runs from in tests (`runfile`, `compare`): every field
//! the writer writes, so a reader that needs one more is caught here first.

use std::time::Duration;

use crate::report::events::*;
use crate::wire::close::Cause;
use crate::wire::mode::Mode;

pub(crate) fn start(mode: Mode, routes: usize) -> Event {
    Event::Start(Start {
        tool: "mux-bw".into(),
        version: "0.1.0".into(),
        protocol_version: 1,
        git_sha: "unknown".into(),
        config: ConfigView {
            to: "mbw://00000000000000000000000000000001@127.0.0.1:9".into(),
            relays: vec![],
            routes,
            min_hops: 1,
            mode,
            duration_ns: 3_000_000_000,
            omit_ns: 0,
            stall_timeout_ns: 1_000_000_000,
            probe_rtt: false,
            probe_all: false,
            probe_interval_ns: 100_000_000,
            interval_ns: 1_000_000_000,
            setup_timeout_ns: 1_000_000_000,
            io_timeout_ns: 1_000_000_000,
            allow_overlap: false,
            redial: false,
            tuning: TuningView {
                stream_window: 1,
                conn_window: 2,
                send_window: 3,
                congestion: "cubic".into(),
                socket_send_buffer: 0,
                socket_recv_buffer: 0,
            },
            links: Some(LinksView {
                relay: LinkView {
                    rate_bps: Some(20_000_000),
                    delay_ns: 5_000_000,
                    loss_pct: 0.0,
                    queue_ns: 50_000_000,
                },
                direct: LinkView {
                    rate_bps: None,
                    delay_ns: 0,
                    loss_pct: 1.0,
                    queue_ns: 50_000_000,
                },
                relays: vec![],
            }),
            planned_paths: vec![vec!["d".into()]],
            pick: None,
            stripe: None,
        },
        warnings: vec![],
    })
}

pub(crate) fn route_sample(route_index: u32, sent_bps: u64, received_bps: u64) -> RouteSample {
    RouteSample {
        route_index,
        bytes_sent: 10,
        bytes_received: 20,
        sent_bps,
        received_bps,
        state: RouteState::Up,
        lost_packets: 0,
        cwnd_bytes: Some(12_000),
        link_rtt_ns: None,
    }
}

pub(crate) fn sample(end_ns: u64, aggregate_bps: u64, routes: Vec<RouteSample>) -> Event {
    Event::Sample(Sample {
        interval_start_ns: end_ns.saturating_sub(1_000_000_000),
        interval_end_ns: end_ns,
        omitted: false,
        active_routes: routes.len(),
        aggregate_bps,
        late: false,
        routes,
        stripe: None,
    })
}

pub(crate) fn route(state: &'static str, mean_bps: u64, failures: u32) -> RouteSummary {
    RouteSummary {
        route_index: 0,
        path: vec!["r".into(), "d".into()],
        hops: 2,
        state: state.into(),
        bytes_sent: 0,
        bytes_received: 0,
        mean_bps,
        error: None,
        cause: None,
        sent_packets: 0,
        lost_packets: 0,
        failures,
        redials: 0,
        failed_hop: None,
        node: None,
    }
}

pub(crate) fn summary(aggregate_bps: u64, routes: Vec<RouteSummary>) -> Event {
    Event::Summary(Summary {
        version: "0.1.0".into(),
        protocol_version: 1,
        routes_planned: routes.len(),
        routes_established: routes.len(),
        partial: false,
        routes_failed: 0,
        routes_setup_failed: 0,
        duration_ns: 3_000_000_000,
        aggregate_bytes: 0,
        aggregate_bps,
        interrupted: false,
        late_samples: 0,
        events_dropped: 0,
        rtt: None,
        routes,
        stripe: None,
    })
}

/// A striped transfer's summary that went well: nothing corrupt or missing.
pub(crate) fn stripe_summary() -> StripeSummary {
    StripeSummary {
        in_order_bytes: 100,
        in_order_bps: 800,
        routes_sum_bps: 1000,
        efficiency: 0.8,
        buffer_peak_bytes: 64,
        blocked_ns: 5,
        segments_sent: 4,
        segments_resent: 1,
        duplicate_bytes: 0,
        corrupt_bytes: 0,
        missing_bytes: 0,
        delivered_bytes: 100,
        transfer_ns: Some(1_000_000_000),
    }
}

pub(crate) fn rtt(loaded_p50_ns: u64) -> RttSummary {
    let stats = |p50_ns| RttStats {
        count: 3,
        lost: 0,
        min_ns: 1,
        p50_ns,
        p90_ns: p50_ns,
        p99_ns: p50_ns,
        max_ns: p50_ns,
        rpm: 1,
    };
    RttSummary {
        route_index: Some(0),
        routes_probed: vec![0],
        routes: vec![],
        idle: Some(stats(1_000_000)),
        loaded: Some(stats(loaded_p50_ns)),
        latency_increase_ns: Some(-5),
    }
}

/// The events as a saved run: one line each, `t_ns` its position.
pub(crate) fn ndjson(events: &[Event]) -> String {
    let lines: Vec<String> = (0..)
        .zip(events)
        .map(|(i, e)| to_json_line(e, Duration::from_nanos(i)))
        .collect();
    lines.join("\n") + "\n"
}

/// One of every event, the way the writer fills them in.
pub(crate) fn every_event() -> Vec<Event> {
    let path = vec!["r1".to_string(), "d".to_string()];
    let mut with_rtt = summary(5, vec![route("up", 5, 0)]);
    if let Event::Summary(s) = &mut with_rtt {
        s.rtt = Some(rtt(2_000_000));
        s.stripe = Some(stripe_summary());
    }
    let mut striped = sample(2_000_000_000, 8, vec![route_sample(0, 8, 1)]);
    if let Event::Sample(s) = &mut striped {
        s.stripe = Some(StripeSample {
            in_order_bps: 7,
            delivered_bytes: 9,
            buffer_max_bytes: 3,
            blocked_ns: 1,
        });
    }
    vec![
        start(Mode::Bidir, 1),
        Event::RouteEstablished(RouteEstablished {
            route_index: 0,
            path: path.clone(),
            hops: 2,
            setup_ns: 7,
        }),
        Event::RouteSetupFailed(RouteSetupFailed {
            route_index: 1,
            failed_hop: Some(0),
            node: Some("r2".into()),
            error: "refused".into(),
            cause: Cause::Refused,
            path: path.clone(),
        }),
        Event::RouteFailure(RouteFailure {
            route_index: 0,
            error: "write timed out".into(),
            cause: Cause::Timeout,
            bytes_sent_before_failure: 1,
            bytes_received_before_failure: 2,
            elapsed_ns: 3,
            failed_hop: None,
            node: None,
        }),
        Event::RouteStalled(RouteStalled {
            route_index: 0,
            stalled_ns: 1,
            bytes_sent: 2,
            bytes_received: 3,
        }),
        Event::RouteRedial(RouteRedial {
            route_index: 0,
            attempt: 1,
            path,
            hops: 2,
            setup_ns: 9,
        }),
        sample(1_000_000_000, 8, vec![route_sample(0, 8, 1)]),
        striped,
        Event::Probe(Probe {
            phase: ProbePhase::Loaded,
            route_index: 0,
            rtt_ns: None,
            error: Some("lost".into()),
        }),
        Event::Error(ErrorEvent {
            error: "oops".into(),
        }),
        with_rtt,
    ]
}

/// A scan's events: one row, then the summary (with a failed row).
pub(crate) fn scan_events() -> Vec<Event> {
    let row = |relay: Option<&str>, bps: u64, cause: Option<Cause>| RelayScan {
        relay: relay.map(String::from),
        address: "mbw://00000000000000000000000000000002@127.0.0.1:9".into(),
        node_id: "00000000000000000000000000000002".into(),
        bps,
        setup_ns: Some(2_000_000),
        rtt_idle: None,
        rtt_loaded: rtt(3_000_000).loaded,
        first_link_loss: Some(0.001),
        cause,
        error: cause.map(|_| "setup timed out".into()),
        interrupted: false,
    };
    vec![
        Event::RelayScan(row(Some("r0"), 10_000_000, None)),
        Event::ScanSummary(ScanSummary {
            relays_planned: 2,
            relays_measured: 1,
            relays_failed: 1,
            parallel: 1,
            client_limited: false,
            interrupted: false,
            direct: row(None, 20_000_000, None),
            ranking: vec![
                row(Some("r0"), 10_000_000, None),
                row(Some("r1"), 0, Some(Cause::Timeout)),
            ],
        }),
    ]
}
