//! Comparisons of saved runs: statistics, ratios, warnings, names and the table.

use super::*;
use crate::report::events::{ConfigView, Event, RouteSummary};
use crate::report::fixtures::{ndjson, route, rtt, sample, start, summary};
use crate::report::runfile::parse;
use crate::wire::mode::Mode;

fn saved(label: &str, events: &[Event]) -> Run {
    parse(label, &ndjson(events)).unwrap()
}

fn with_summary(agg: u64, routes: Vec<RouteSummary>, rtt_p50: Option<u64>) -> Event {
    let mut s = summary(agg, routes);
    if let Event::Summary(s) = &mut s {
        s.rtt = rtt_p50.map(rtt);
    }
    s
}

fn run(label: &str, agg: u64, rates: &[u64], rtt_p50: Option<u64>) -> Run {
    let mut events = vec![start(Mode::Up, 2)];
    for (i, r) in (1..).zip(rates) {
        events.push(sample(i * 1_000_000_000, *r, vec![]));
    }
    let routes = vec![route("up", 10, 0), route("up", 30, 1)];
    events.push(with_summary(agg, routes, rtt_p50));
    saved(label, &events)
}

/// `--probe-rtt all`: the table shows the spread of the routes' own loaded p50.
#[test]
fn per_route_rtt_spread_is_a_column() {
    let mut r = run("runs/all.ndjson", 100, &[100], Some(2_000_000));
    if let Some(rtt) = &mut r.summary.rtt {
        for (i, p50) in [(0, 900_000), (1, 200_000)] {
            let mut one = crate::report::fixtures::rtt(p50);
            rtt.routes.push(crate::report::events::RouteRtt {
                route_index: i,
                idle: None,
                loaded: one.loaded.take(),
            });
        }
    }
    let s = stats(&r);
    assert_eq!(s.route_loaded_rtt_p50_ns, Some((200_000.0, 900_000.0)));
    let text = render(&compare(&[r]));
    assert!(
        text.contains("per-route p50") && text.contains("0.20..0.90 ms"),
        "{text}"
    );
    let plain = run("runs/first.ndjson", 100, &[100], Some(2_000_000));
    assert_eq!(stats(&plain).route_loaded_rtt_p50_ns, None);
}

#[test]
fn quantiles_and_ratios() {
    assert_eq!(quantile(&[], 0.5), 0.0);
    assert_eq!(quantile(&[5.0, 1.0, 3.0], 0.5), 3.0);
    assert_eq!(
        quantile(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0], 0.1),
        1.0
    );
    assert_eq!(ratio(4.0, 2.0), Some(2.0));
    assert_eq!(ratio(4.0, 0.0), None);
}

#[test]
fn compares_every_run_with_the_first() {
    let a = run("runs/direct.ndjson", 100, &[90, 100, 110], Some(2_000_000));
    let b = run("runs/mux.ndjson", 362, &[350, 362, 370], Some(2_800_000));
    let c = compare(&[a, b]);
    assert_eq!(c.runs[0].median_bps, 100.0);
    assert_eq!(c.runs[0].p10_bps, 90.0);
    assert_eq!(c.runs[1].routes, 2);
    assert_eq!(c.runs[1].route_min_bps, 10.0);
    assert_eq!(c.runs[1].route_max_bps, 30.0);
    assert_eq!(c.runs[1].failures, 1);
    assert_eq!(c.runs[1].hops, "2");
    let r = &c.ratios[0];
    assert!((r.throughput.unwrap() - 3.62).abs() < 1e-9);
    assert!((r.loaded_rtt.unwrap() - 1.4).abs() < 1e-9);
    let text = render(&c);
    assert!(
        text.contains("mux.ndjson delivered 3.62x direct.ndjson's throughput; loaded p50 RTT 1.40x direct.ndjson's"),
        "{text}"
    );
}

#[test]
fn names_are_the_shortest_unique_path_suffixes() {
    let names = unique_names(&[
        "sw/r1-h1-up-run1.ndjson",
        "other/r1-h1-up-run1.ndjson",
        "runs/direct.ndjson",
        "./a/x/mux.ndjson",
        "b/x/mux.ndjson",
        "-",
    ]);
    assert_eq!(
        names,
        [
            "sw/r1-h1-up-run1.ndjson",
            "other/r1-h1-up-run1.ndjson",
            "direct.ndjson",
            "a/x/mux.ndjson",
            "b/x/mux.ndjson",
            "-",
        ]
    );
    assert_eq!(
        unique_names(&["f.ndjson", "d/f.ndjson"]),
        ["f.ndjson", "d/f.ndjson"]
    );
    assert_eq!(unique_names(&["d/f", "d/f"]), ["f", "f"]);
}

#[test]
fn same_basename_in_two_directories_prints_two_labels() {
    let a = run("sw/r1-h1-up-run1.ndjson", 100, &[100], None);
    let b = run("other/r1-h1-up-run1.ndjson", 200, &[200], None);
    let text = render(&compare(&[a, b]));
    assert!(
        text.contains(
            "other/r1-h1-up-run1.ndjson delivered 2.00x sw/r1-h1-up-run1.ndjson's throughput"
        ),
        "{text}"
    );
    let rows: Vec<&str> = text.lines().skip(1).take(2).collect();
    assert!(rows[0].starts_with("sw/r1-h1-up-run1.ndjson "), "{text}");
    assert!(rows[1].starts_with("other/r1-h1-up-run1.ndjson "), "{text}");
}

/// A run whose settings are changed by `f`, with the given version.
fn run_with(label: &str, version: &'static str, f: impl Fn(&mut ConfigView)) -> Run {
    let mut start = start(Mode::Up, 2);
    if let Event::Start(s) = &mut start {
        f(&mut s.config);
    }
    let mut end = with_summary(100, vec![route("up", 10, 0)], None);
    if let Event::Summary(s) = &mut end {
        s.version = version.into();
    }
    saved(label, &[start, sample(1_000_000_000, 100, vec![]), end])
}

#[test]
fn warns_of_every_setting_that_differs_from_the_baseline() {
    let base = run_with("emu.ndjson", "0.1.0", |c| c.duration_ns = 5_000_000_000);
    let same = run_with("same.ndjson", "0.1.0", |c| c.duration_ns = 5_000_000_000);
    let bare = run_with("bare.ndjson", "0.2.0", |c| {
        c.duration_ns = 1_000_000_000;
        c.omit_ns = 500_000_000;
        c.mode = Mode::Down;
        c.links = None;
    });
    let c = compare(&[base, same, bare]);
    let fields: Vec<(&str, &str)> = c
        .warnings
        .iter()
        .map(|w| (w.run.as_str(), w.field))
        .collect();
    assert_eq!(
        fields,
        [
            ("bare.ndjson", "duration"),
            ("bare.ndjson", "omit"),
            ("bare.ndjson", "mode"),
            ("bare.ndjson", "links"),
            ("bare.ndjson", "version")
        ]
    );
    let w = &c.warnings[0];
    assert_eq!((w.value.as_str(), w.baseline_value.as_str()), ("1s", "5s"));
    assert_eq!(w.baseline, "emu.ndjson");
    assert!(
        w.message
            .starts_with("bare.ndjson differs from the baseline emu.ndjson in duration: 1s vs 5s"),
        "{}",
        w.message
    );
    assert_eq!(c.warnings[3].value, "none (no emulated links)");
    assert!(
        c.warnings[3]
            .baseline_value
            .contains("relay links 20.0 Mbit/s, 5ms delay"),
        "{:?}",
        c.warnings[3]
    );
    let text = render(&c);
    assert!(
        text.contains("same.ndjson delivered 1.00x emu.ndjson's throughput\n"),
        "{text}"
    );
    assert!(
        text.contains("(not comparable: duration, omit, mode, links, version differ)"),
        "{text}"
    );
    let json = serde_json::to_value(&c).unwrap();
    assert_eq!(json["warnings"][0]["field"], "duration");
    assert_eq!(json["runs"][2]["name"], "bare.ndjson");
}

#[test]
fn no_ratio_against_a_run_that_moved_nothing() {
    let a = run("a", 0, &[0], None);
    let b = run("b", 10, &[10], None);
    let c = compare(&[a, b]);
    assert_eq!(c.ratios[0].throughput, None);
    assert!(render(&c).contains("moved no data"));
}

#[test]
fn loss_is_pooled_over_routes_and_absent_when_nothing_was_sent() {
    let packets = |state, failures, sent, lost| RouteSummary {
        sent_packets: sent,
        lost_packets: lost,
        ..route(state, 1, failures)
    };
    let routes = vec![
        packets("up", 0, 1000, 10),
        packets("failed", 1, 3000, 90),
        packets("setup_failed", 0, 0, 0),
    ];
    let with_packets = saved("new", &[start(Mode::Up, 3), with_summary(5, routes, None)]);
    let c = compare(&[with_packets, run("none", 5, &[5], None)]);
    assert_eq!(c.runs[0].first_link_loss, Some(0.025));
    assert_eq!(c.runs[0].failures, 2);
    assert_eq!(c.runs[1].first_link_loss, None);
    let text = render(&c);
    assert!(text.contains(" 2.50% "), "{text}");
}

/// A striped run next to an unstriped one: its in-order rate and efficiency are columns, and
/// its ratio line says how fast the one transfer arrived against the baseline.
#[test]
fn striped_rate_and_efficiency_are_columns() {
    let direct = run("direct.ndjson", 400, &[400], None);
    let mut striped = run("striped.ndjson", 1000, &[1000], None);
    striped.summary.stripe = Some(crate::report::fixtures::stripe_summary());
    let c = compare(&[direct, striped]);
    assert_eq!(c.runs[0].striped_bps, None);
    assert_eq!(c.runs[1].striped_bps, Some(800.0));
    assert_eq!(c.ratios[0].striped, Some(2.0));
    let text = render(&c);
    assert!(text.contains("striped") && text.contains("80%"), "{text}");
    assert!(
        text.contains("its striped transfer arrived in order at 2.00x direct.ndjson's throughput"),
        "{text}"
    );
}
