//! The plot's parts (styles, segments, scales) and the SVG it draws, parsed back.

use std::time::Duration;

use super::*;
use crate::report::events::{to_json_line, Event, Probe, RouteFailure};
use crate::report::fixtures::{route, route_sample, sample, start, summary};
use crate::report::runfile::parse;
use crate::wire::close::Cause;
use crate::wire::mode::Mode;

const S: u64 = 1_000_000_000;

/// Four routes at the same 20 Mbit/s in 500 ms intervals from 0.5 s to 4 s, the first
/// second omitted; route 1 fails at 1.6 s; idle probes at 0.1 ms, loaded ones at 40 ms.
fn four_equal_routes_one_fails() -> Run {
    let mut start = start(Mode::Up, 4);
    if let Event::Start(s) = &mut start {
        s.config.omit_ns = S;
    }
    let mut timed: Vec<(f64, Event)> = vec![(0.0, start)];
    for (t, phase, ms) in [(0.2, ProbePhase::Idle, 0.1), (0.3, ProbePhase::Idle, 0.12)]
        .into_iter()
        .chain((0..6).map(|k| (0.6 + 0.5 * f64::from(k), ProbePhase::Loaded, 40.0)))
    {
        let rtt_ns = Some((ms * 1e6) as u64);
        let (route_index, error) = (0, None);
        let probe = Probe {
            phase,
            route_index,
            rtt_ns,
            error,
        };
        timed.push((t, Event::Probe(probe)));
    }
    for k in 1..=7u64 {
        let end = S / 2 + k * S / 2;
        let rate = |r| if r == 1 && end > 2 * S { 0 } else { 20_000_000 };
        let routes = (0..4).map(|r| route_sample(r, rate(r), 0)).collect();
        let mut e = sample(end, 80_000_000, routes);
        if let Event::Sample(s) = &mut e {
            s.interval_start_ns = end - S / 2;
            s.omitted = end <= 3 * S / 2;
        }
        timed.push((end as f64 / 1e9, e));
    }
    let failure = RouteFailure {
        route_index: 1,
        error: "killed".into(),
        cause: Cause::Killed,
        bytes_sent_before_failure: 0,
        bytes_received_before_failure: 0,
        elapsed_ns: 1,
        failed_hop: None,
        node: None,
    };
    timed.push((1.6, Event::RouteFailure(failure)));
    timed.sort_by(|a, b| a.0.total_cmp(&b.0));
    timed.push((4.0, summary(80_000_000, vec![route("up", 1, 0)])));
    let text: String = timed
        .iter()
        .map(|(t, e)| to_json_line(e, Duration::from_secs_f64(*t)) + "\n")
        .collect();
    parse("runs/four.ndjson", &text).unwrap()
}

fn svg_of(run: &Run) -> String {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("p.svg");
    plot(run, &out).unwrap();
    std::fs::read_to_string(&out).unwrap()
}

fn xs(points: &str) -> Vec<f64> {
    points
        .split_whitespace()
        .filter_map(|p| p.split(',').next()?.parse().ok())
        .collect()
}

#[test]
fn a_failed_route_ends_at_its_failure_and_restarts_only_when_it_moves_again() {
    let run = four_equal_routes_one_fails();
    let pieces = route_segments(&run, 1);
    assert_eq!(pieces.len(), 1, "{pieces:?}");
    assert_eq!(pieces[0].last(), Some(&(1.6, 20.0)));
    assert_eq!(route_segments(&run, 0)[0].last(), Some(&(4.0, 20.0)));
    let mut redialed = run.clone();
    for i in &mut redialed.intervals {
        if i.start >= 3.0 {
            i.routes[1].1 = 5e6;
        }
    }
    let pieces = route_segments(&redialed, 1);
    assert_eq!(pieces.len(), 2, "{pieces:?}");
    assert_eq!(pieces[1].first(), Some(&(3.0, 5.0)));
}

#[test]
fn routes_get_distinct_styles_and_small_offsets() {
    let styles: Vec<_> = (0..32).map(route_style).collect();
    for (k, a) in styles.iter().enumerate() {
        assert!(!styles[..k].contains(a), "style {k} repeats");
    }
    assert_eq!(route_offset_px(0, 1), 0.0);
    assert_eq!(route_offset_px(0, 4), -6.0);
    assert_eq!(route_offset_px(3, 4), 6.0);
    assert!(route_offset_px(0, 256).abs() <= ROUTE_SPREAD_PX / 2.0);
    assert_eq!(rtt_range([0.1, 40.0].into_iter()), (0.1 / 1.5, 60.0));
    assert_eq!(rtt_range(std::iter::empty()), (0.01, 1.0));
}

#[test]
fn svg_shades_the_warm_up_and_separates_equal_routes() {
    let svg = svg_of(&four_equal_routes_one_fails());
    let doc = roxmltree::Document::parse(&svg).unwrap();
    let shaded = doc
        .descendants()
        .filter(|n| n.has_tag_name("rect") && n.attribute("fill") == Some("#D7D7D7"));
    // The warm-up from 0.5 s to 1.5 s, and its legend sample.
    let widths: Vec<f64> = shaded
        .filter_map(|n| n.attribute("width")?.parse().ok())
        .collect();
    assert!(
        widths.iter().any(|w| *w > 100.0),
        "no shaded warm-up: {widths:?}"
    );
    let texts: Vec<&str> = doc.descendants().filter_map(|n| n.text()).collect();
    assert!(
        texts.iter().any(|t| t.contains("warm-up (omitted)")),
        "{texts:?}"
    );
    assert!(
        texts.iter().any(|t| t.contains("RTT (ms, log scale)")),
        "{texts:?}"
    );
    // The charts' lines: not the legend's samples, right of the charts.
    let plot_right = f64::from(1200 - LEGEND_PX);
    let polylines: Vec<roxmltree::Node> = doc
        .descendants()
        .filter(|n| n.has_tag_name("polyline"))
        .filter(|n| {
            xs(n.attribute("points").unwrap())
                .iter()
                .all(|x| *x < plot_right)
        })
        .collect();
    let stroke = |n: &roxmltree::Node| n.attribute("stroke").unwrap_or("").to_string();
    let route_colors: Vec<String> = (0..4).map(|k| color_hex(route_style(k).0)).collect();
    // The four equal routes: each its own colour, and not all at one height.
    let mut heights = Vec::new();
    for c in &route_colors {
        let first = polylines.iter().find(|n| stroke(n) == *c);
        let first = first.unwrap_or_else(|| panic!("no line in {c}"));
        let y: f64 = first
            .attribute("points")
            .unwrap()
            .split_whitespace()
            .next()
            .unwrap()
            .split(',')
            .nth(1)
            .unwrap()
            .parse()
            .unwrap();
        heights.push(y);
    }
    heights.dedup();
    assert_eq!(
        heights.len(),
        4,
        "equal routes drawn on one another: {heights:?}"
    );
    // Route 1's line ends at the failure marker (red), the others run on.
    let end_x = |c: &str| {
        polylines
            .iter()
            .filter(|n| stroke(n) == c)
            .flat_map(|n| xs(n.attribute("points").unwrap()))
            .fold(f64::MIN, f64::max)
    };
    let marker = polylines
        .iter()
        .find(|n| stroke(n) == "#FF0000")
        .map(|n| xs(n.attribute("points").unwrap())[0])
        .expect("a failure marker");
    let failed = end_x(&route_colors[1]);
    assert!(
        (marker - 8.0..=marker + 1.0).contains(&failed),
        "R1 ends at {failed}, failure at {marker}"
    );
    assert!(end_x(&route_colors[0]) > marker + 100.0);
}

fn color_hex(c: RGBColor) -> String {
    format!("#{:02X}{:02X}{:02X}", c.0, c.1, c.2)
}

/// A striped run: its in-order goodput is a line of its own in the goodput chart, and the
/// reorder buffer gets a chart below.
#[test]
fn a_striped_run_draws_its_in_order_goodput_and_buffer() {
    let mut text = to_json_line(&start(Mode::Up, 1), Duration::ZERO) + "\n";
    for k in 1..=3u64 {
        let mut e = sample(k * S, 50_000_000, vec![route_sample(0, 50_000_000, 0)]);
        if let Event::Sample(s) = &mut e {
            s.interval_start_ns = (k - 1) * S;
            s.stripe = Some(crate::report::events::StripeSample {
                in_order_bps: 40_000_000,
                delivered_bytes: k * 5_000_000,
                buffer_max_bytes: k * 1_000_000,
                blocked_ns: 0,
            });
        }
        text += &(to_json_line(&e, Duration::from_secs(k)) + "\n");
    }
    text += &(to_json_line(
        &summary(50_000_000, vec![route("up", 1, 0)]),
        Duration::from_secs(3),
    ) + "\n");
    let run = parse("striped.ndjson", &text).unwrap();
    let svg = svg_of(&run);
    let doc = roxmltree::Document::parse(&svg).unwrap();
    let texts: Vec<&str> = doc.descendants().filter_map(|n| n.text()).collect();
    for want in [
        "in order (striped)",
        "reorder buffer",
        "buffer (MB, interval max)",
    ] {
        assert!(
            texts.iter().any(|t| t.contains(want)),
            "no '{want}': {texts:?}"
        );
    }
    let green = color_hex(IN_ORDER);
    let lines = doc
        .descendants()
        .filter(|n| n.has_tag_name("polyline") && n.attribute("stroke") == Some(green.as_str()))
        .count();
    assert!(lines >= 2, "in-order and buffer lines: {lines}");
    // Without a striped sample, neither is drawn.
    let plain = svg_of(&four_equal_routes_one_fails());
    assert!(!plain.contains("reorder buffer") && !plain.contains("in order (striped)"));
}
