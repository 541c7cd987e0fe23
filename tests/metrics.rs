//! `serve`/`relay --metrics`: the nodes' `/metrics` count what a real run did (bytes a relay
//! forwarded, routes acked, refusals by reason), answer other paths and methods with 404/405,
//! and never need a route to be scraped.

mod common;

use std::time::Duration;

use common::{of_type, run, NodeProc};

const LIMIT: Duration = Duration::from_secs(60);

/// A node process with `--metrics 127.0.0.1:0` and the address its metrics server said.
fn node(role: &str) -> (NodeProc, String) {
    let n = NodeProc::start(role, &["--token", "t", "--metrics", "127.0.0.1:0"]);
    let addr = n.metrics_addr();
    (n, addr)
}

fn http(addr: &str, method: &str, path: &str) -> (u16, String) {
    common::http(addr, method, path, &[])
}

/// The value of the series `name` (exactly, labels included) in an exposition.
fn value(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no series {series} in\n{text}"))
}

#[test]
fn nodes_count_what_a_run_did_and_why_they_refused() {
    let (dst, dst_metrics) = node("serve");
    let (relay, relay_metrics) = node("relay");
    let out = run(
        &[
            "run",
            "--to",
            &dst.uri,
            "--relay",
            &relay.uri,
            "--routes",
            "1",
            "--min-hops",
            "2",
            "--duration",
            "1s",
            "--omit",
            "0s",
            "--token",
            "t",
            "--json",
        ],
        LIMIT,
    );
    let events = out.events();
    let summary = of_type(&events, "summary")[0];
    let bytes = summary["routes"][0]["bytes_sent"].as_f64().unwrap();
    assert!(bytes > 0.0, "{summary}");

    let (status, text) = http(&relay_metrics, "GET", "/metrics");
    assert_eq!(status, 200);
    let forwarded = value(
        &text,
        "mux_bw_route_payload_bytes_total{direction=\"to_destination\"}",
    );
    assert!(
        forwarded >= bytes,
        "relay forwarded {forwarded} < {bytes} confirmed"
    );
    assert_eq!(
        value(&text, "mux_bw_routes_total{outcome=\"acked\",reason=\"\"}"),
        1.0
    );
    assert_eq!(value(&text, "mux_bw_route_setup_seconds_count"), 1.0);
    assert!(text.contains("mux_bw_build_info{") && text.contains("role=\"relay\""));
    assert!(value(&text, "process_resident_memory_bytes") > 0.0);

    // A wrong token is a refusal the destination counts by its reason.
    let bad = run(
        &[
            "run",
            "--to",
            &dst.uri,
            "--routes",
            "1",
            "--duration",
            "1s",
            "--token",
            "x",
            "--json",
        ],
        LIMIT,
    );
    assert_ne!(bad.code, 0);
    let (_, text) = http(&dst_metrics, "GET", "/metrics");
    assert_eq!(
        value(
            &text,
            "mux_bw_routes_total{outcome=\"nacked\",reason=\"token\"}"
        ),
        1.0
    );
    let received = value(
        &text,
        "mux_bw_route_payload_bytes_total{direction=\"to_destination\"}",
    );
    assert!(
        received >= bytes,
        "destination received {received} < {bytes}"
    );
    assert_eq!(value(&text, "mux_bw_routes_active"), 0.0);
}

#[test]
fn other_paths_and_methods_are_refused_and_the_node_serves_on() {
    let (_relay, addr) = node("relay");
    assert_eq!(http(&addr, "GET", "/").0, 404);
    assert_eq!(http(&addr, "POST", "/metrics").0, 405);
    assert_eq!(http(&addr, "HEAD", "/metrics").0, 200);
    // Many scrapes at once are served (queued beyond the server's connection cap), none lost.
    let scrapes: Vec<_> = (0..100)
        .map(|_| {
            let addr = addr.clone();
            std::thread::spawn(move || http(&addr, "GET", "/metrics").0)
        })
        .collect();
    for s in scrapes {
        assert_eq!(s.join().unwrap(), 200);
    }
}
