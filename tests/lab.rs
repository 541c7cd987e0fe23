//! End-to-end runs of `mux-bw lab`: real QUIC nodes on 127.0.0.1 port 0, checked through the
//! NDJSON event stream.

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::{of_type, run};
use serde_json::Value;

const LIMIT: Duration = Duration::from_secs(30);

fn lab(args: &[&str]) -> Vec<Value> {
    let mut all = vec!["--duration", "1500ms", "--interval", "500ms"];
    all.extend_from_slice(args);
    common::lab_json(&all, LIMIT)
}

fn intermediates(e: &Value) -> Vec<String> {
    let path = e["path"].as_array().expect("path");
    path[..path.len() - 1]
        .iter()
        .map(|n| n.as_str().expect("id").to_string())
        .collect()
}

#[test]
fn four_disjoint_routes_through_one_relay_each() {
    let events = lab(&["--routes", "4", "--min-hops", "2"]);
    for e in &events {
        assert_eq!(e["schema"], 1, "{e}");
        assert!(e["t_ns"].is_u64(), "{e}");
    }
    assert_eq!(events[0]["type"], "start");
    assert_eq!(events.last().unwrap()["type"], "summary");

    let est = of_type(&events, "route_established");
    let mut indices: Vec<u64> = est
        .iter()
        .map(|e| e["route_index"].as_u64().unwrap())
        .collect();
    indices.sort();
    assert_eq!(indices, vec![0, 1, 2, 3]);
    let dst = events[0]["config"]["to"].as_str().unwrap();
    let mut seen = HashSet::new();
    for e in &est {
        assert_eq!(e["hops"], 2);
        let mids = intermediates(e);
        assert_eq!(mids.len(), 1, "{e}");
        assert!(!dst.contains(&mids[0]), "destination used as relay");
        assert!(seen.insert(mids[0].clone()), "relay {} shared", mids[0]);
    }

    let samples = of_type(&events, "sample");
    assert!(samples.len() >= 3, "{} samples", samples.len());
    for s in &samples {
        assert_eq!(s["active_routes"], 4, "{s}");
        assert!(s["aggregate_bps"].as_u64().unwrap() > 0, "{s}");
        for r in s["routes"].as_array().unwrap() {
            assert!(r["bytes_sent"].as_u64().unwrap() > 0, "{r}");
        }
    }
    let summary = &of_type(&events, "summary")[0];
    assert_eq!(summary["routes_established"], 4);
    assert_eq!(summary["routes_failed"], 0);
    assert!(summary["aggregate_bps"].as_u64().unwrap() > 0);
}

#[test]
fn min_hops_three_puts_two_relays_on_every_route() {
    let events = lab(&["--routes", "2", "--min-hops", "3", "--relays", "4"]);
    let est = of_type(&events, "route_established");
    assert_eq!(est.len(), 2);
    let mut seen = HashSet::new();
    for e in est {
        assert_eq!(e["hops"], 3);
        for m in intermediates(e) {
            assert!(seen.insert(m), "relay shared between routes");
        }
    }
    assert_eq!(seen.len(), 4);
}

#[test]
fn via_pins_a_lab_relay_on_route_two() {
    let events = lab(&[
        "--routes",
        "3",
        "--min-hops",
        "2",
        "--relays",
        "6",
        "--via",
        "2=r5",
    ]);
    let relays = events[0]["config"]["relays"].as_array().unwrap();
    let r5 = relays[5].as_str().unwrap();
    let est = of_type(&events, "route_established");
    let route2 = est
        .iter()
        .find(|e| e["route_index"] == 2)
        .expect("route 2 up");
    let mids = intermediates(route2);
    assert_eq!(mids.len(), 1);
    assert!(
        r5.contains(&mids[0]),
        "route 2 went via {mids:?}, not r5 {r5}"
    );
    for e in est.iter().filter(|e| e["route_index"] != 2) {
        assert!(!r5.contains(&intermediates(e)[0]), "r5 reused: {e}");
    }
}

#[test]
fn down_mode_counts_bytes_at_the_client() {
    let events = lab(&["--routes", "2", "--min-hops", "2", "--mode", "down"]);
    let summary = &of_type(&events, "summary")[0];
    for r in summary["routes"].as_array().unwrap() {
        assert!(r["bytes_received"].as_u64().unwrap() > 0, "{r}");
        assert_eq!(r["bytes_sent"], 0, "{r}");
    }
}

#[test]
fn direct_routes_are_parallel_connections_to_the_destination() {
    let events = lab(&["--routes", "2", "--min-hops", "1", "--relays", "0"]);
    let est = of_type(&events, "route_established");
    assert_eq!(est.len(), 2);
    for e in est {
        assert_eq!(e["hops"], 1);
        assert!(intermediates(e).is_empty());
    }
}

#[test]
fn human_mode_prints_events_and_a_summary_table() {
    let out = run(
        &[
            "lab",
            "--routes",
            "2",
            "--min-hops",
            "2",
            "--duration",
            "1s",
            "--interval",
            "500ms",
        ],
        LIMIT,
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stderr.contains("R0 ✓ established via"),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("2/2 routes"), "{}", out.stderr);
    assert!(out.stdout.contains("total 2/2 routes up"), "{}", out.stdout);
}

/// A `--fault` on a relay that no route uses used to be ignored in silence: the run looked like
/// a fault test and was not. It is a warning on stderr and in `start.warnings`; a fault on a
/// relay a route uses is not.
#[test]
fn a_fault_on_a_relay_no_route_uses_is_a_warning() {
    let args = [
        "lab",
        "--json",
        "--relays",
        "4",
        "--routes",
        "1",
        "--min-hops",
        "2",
        "--duration",
        "1s",
        "--fault",
        "kill:3@500ms",
        "--fault",
        "stall:0@500ms",
    ];
    let out = run(&args, Duration::from_secs(30));
    assert_eq!(out.code, 0, "{}", out.stderr);
    let events: Vec<Value> = out
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let warnings = of_type(&events, "start")[0]["warnings"].clone();
    let warnings = warnings.as_array().unwrap();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(warnings[0]
        .as_str()
        .unwrap()
        .contains("relay r3: no planned route"));
    assert!(
        out.stderr.contains("mux-bw: warning: --fault on relay r3"),
        "{}",
        out.stderr
    );
    assert!(!out.stderr.contains("relay r0"), "{}", out.stderr);
}
