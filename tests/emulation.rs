//! The lab's emulated links: rates, delays and the direct link, read back through mux-bw's own
//! numbers. Rates are kept low (tens of Mbit/s) so the machine is not the bottleneck.

mod common;

use std::time::Duration;

use common::{of_type, run};
use serde_json::Value;

const LIMIT: Duration = Duration::from_secs(60);

fn lab(args: &[&str]) -> Vec<Value> {
    common::lab_json(args, LIMIT)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn interval_rates(events: &[Value]) -> Vec<f64> {
    of_type(events, "sample")
        .iter()
        .filter(|s| s["omitted"] == false)
        .map(|s| s["aggregate_bps"].as_f64().unwrap())
        .collect()
}

#[test]
fn one_route_reads_the_emulated_rate() {
    let events = lab(&[
        "--link-rate",
        "50mbit",
        "--routes",
        "1",
        "--min-hops",
        "2",
        "--omit",
        "1s",
        "--duration",
        "3s",
        "--interval",
        "500ms",
    ]);
    let m = median(interval_rates(&events));
    assert!(
        (47.5e6..=52.5e6).contains(&m),
        "interval median {m} bit/s on a 50 mbit link"
    );
    let links = &events[0]["config"]["links"];
    assert_eq!(links["relay"]["rate_bps"], 50_000_000);
}

#[test]
fn routes_through_separate_links_add_up() {
    let events = lab(&[
        "--link-rate",
        "20mbit",
        "--routes",
        "3",
        "--min-hops",
        "2",
        "--omit",
        "1s",
        "--duration",
        "3s",
    ]);
    let total = of_type(&events, "summary")[0]["aggregate_bps"]
        .as_f64()
        .unwrap();
    assert!(total >= 0.9 * 3.0 * 20e6, "{total} bit/s from 3 x 20 mbit");
    assert!(
        total <= 3.0 * 20e6,
        "{total} bit/s is more than the links carry"
    );
}

#[test]
fn direct_link_has_its_own_rate() {
    let events = lab(&[
        "--link-rate",
        "10mbit",
        "--direct-rate",
        "30mbit",
        "--routes",
        "1",
        "--min-hops",
        "1",
        "--omit",
        "1s",
        "--duration",
        "2s",
    ]);
    let total = of_type(&events, "summary")[0]["aggregate_bps"]
        .as_f64()
        .unwrap();
    assert!(
        (27e6..=30e6).contains(&total),
        "{total} bit/s on a 30 mbit direct link"
    );
}

#[test]
fn link_delay_adds_two_delays_per_link_to_the_rtt() {
    let idle_p50 = |hops: &str| {
        let events = lab(&[
            "--link-delay",
            "20ms",
            "--routes",
            "1",
            "--min-hops",
            hops,
            "--probe-rtt",
            "--duration",
            "1s",
        ]);
        let rtt = &of_type(&events, "summary")[0]["rtt"]["idle"];
        rtt["p50_ns"].as_f64().unwrap() / 1e6
    };
    let (one, two, three) = (idle_p50("1"), idle_p50("2"), idle_p50("3"));
    eprintln!("idle RTT p50: 1 link {one:.1} ms, 2 links {two:.1} ms, 3 links {three:.1} ms");
    assert!(
        one >= 40.0 && two >= 80.0 && three >= 120.0,
        "{one} {two} {three}"
    );
    assert!(one < two && two < three, "{one} {two} {three}");
    assert!(three < 120.0 + 40.0, "{three} ms: delay grossly overshoots");
}

#[test]
fn bad_link_values_are_refused_by_name() {
    for (flag, value) in [
        ("--link-rate", "fast"),
        ("--link-rate", "100mbps"),
        ("--link-loss", "120"),
        ("--direct-delay", "soon"),
    ] {
        let out = run(&["lab", flag, value], LIMIT);
        assert_eq!(out.code, 2, "{flag} {value}: {}", out.stderr);
        assert!(out.stderr.contains(value), "{}", out.stderr);
        assert!(
            out.stderr.starts_with("mux-bw: error: invalid value"),
            "{}",
            out.stderr
        );
    }
}

/// What goes wrong on a route includes loss on its first link: the client's QUIC connection
/// reports what it lost (iperf3's "Retr") per interval and in the summary, and its cwnd and RTT.
#[test]
fn first_link_loss_is_reported_per_route() {
    let events = lab(&[
        "--link-rate",
        "50mbit",
        "--link-loss",
        "5%",
        "--routes",
        "2",
        "--min-hops",
        "2",
        "--duration",
        "3s",
        "--interval",
        "500ms",
    ]);
    let summary = of_type(&events, "summary")[0];
    for r in summary["routes"].as_array().unwrap() {
        let sent = r["sent_packets"].as_f64().unwrap();
        let lost = r["lost_packets"].as_f64().unwrap();
        assert!(sent > 1000.0, "{r}");
        // 5% of packets dropped on the link; QUIC declares about that many lost.
        assert!(
            (0.02..0.10).contains(&(lost / sent)),
            "loss {lost}/{sent}: {r}"
        );
    }
    let samples = of_type(&events, "sample");
    let per_interval: u64 = samples
        .iter()
        .flat_map(|s| s["routes"].as_array().unwrap())
        .map(|r| r["lost_packets"].as_u64().unwrap())
        .sum();
    assert!(per_interval > 0);
    let last = samples.last().unwrap();
    for r in last["routes"].as_array().unwrap() {
        assert!(r["cwnd_bytes"].as_u64().unwrap() > 0, "{r}");
        // Client to relay over a 50 mbit link with a 50 ms queue: well under a second.
        let rtt = r["link_rtt_ns"].as_u64().unwrap();
        assert!((1..1_000_000_000).contains(&rtt), "{r}");
    }
}

/// Behind an emulated link the client dials the link's proxy; its errors must still name the node.
#[test]
fn setup_errors_name_the_node_not_the_link_proxy() {
    let events = lab(&[
        "--link-rate",
        "50mbit",
        "--routes",
        "2",
        "--min-hops",
        "2",
        "--via",
        "0=mbw://00000000000000000000000000000001@127.0.0.1:9",
        "--setup-timeout",
        "300ms",
        "--duration",
        "1s",
        "--allow-partial",
    ]);
    let failed = of_type(&events, "route_setup_failed");
    assert_eq!(failed.len(), 1, "{failed:?}");
    let error = failed[0]["error"].as_str().unwrap();
    assert!(error.contains("127.0.0.1:9 "), "{error}");
}

/// Uneven relays (`--link-rate` with one value per relay): each route runs at its own relay's
/// rate, and `start.config.links` records every relay's link. Rates are low so a debug build
/// on a busy 2-core machine is not what limits them.
#[test]
fn each_relay_gets_its_own_link() {
    let events = lab(&[
        "--relays",
        "4",
        "--routes",
        "4",
        "--min-hops",
        "2",
        "--link-rate",
        "2mbit,4mbit,8mbit,16mbit",
        "--direct-rate",
        "20mbit",
        "--duration",
        "3s",
        "--omit",
        "1s",
    ]);
    let start = of_type(&events, "start")[0];
    let links: Vec<u64> = start["config"]["links"]["relays"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["rate_bps"].as_u64().unwrap())
        .collect();
    assert_eq!(links, [2_000_000, 4_000_000, 8_000_000, 16_000_000]);
    let summary = of_type(&events, "summary")[0];
    for (k, route) in summary["routes"].as_array().unwrap().iter().enumerate() {
        let shaped = links[k] as f64;
        let got = route["mean_bps"].as_f64().unwrap();
        assert!(
            (0.85 * shaped..=1.06 * shaped).contains(&got),
            "route {k} through r{k}: {got} bit/s on a {shaped} bit/s link"
        );
    }
}

/// `--topology FILE` with a bad key or unit: one line naming the file, the line and the key.
#[test]
fn a_bad_topology_file_is_named_with_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("topo.toml");
    std::fs::write(
        &path,
        "[defaults]\nrate = \"50mbit\"\n\n[relay.r1]\ndelay = \"soon\"\n",
    )
    .unwrap();
    let p = path.to_string_lossy().into_owned();
    let out = run(&["lab", "--relays", "2", "--topology", &p], LIMIT);
    assert_eq!(out.code, 2, "{}", out.stderr);
    let want = format!("{p} line 5: [relay.r1] delay: invalid duration 'soon'");
    assert!(out.stderr.contains(&want), "{}", out.stderr);
    assert_eq!(out.stderr.lines().count(), 1, "{}", out.stderr);
    std::fs::write(&path, "[relay.r7]\nrate = \"1mbit\"\n").unwrap();
    let out = run(&["lab", "--relays", "2", "--topology", &p], LIMIT);
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(
        out.stderr.contains("line 1: unknown relay 'r7'"),
        "{}",
        out.stderr
    );
}

/// `--probe-rtt all`: every route is probed end to end, and its idle RTT follows its own
/// relay's delay (the relay's link shapes the hop into it and the hop on to the destination, so
/// a route through a relay with one-way delay d has an RTT of 4d).
#[test]
fn probe_rtt_all_measures_every_route_on_its_own() {
    let events = lab(&[
        "--relays",
        "4",
        "--routes",
        "4",
        "--min-hops",
        "2",
        "--link-delay",
        "10ms,20ms,40ms,80ms",
        "--duration",
        "2s",
        "--probe-rtt",
        "all",
    ]);
    let probed: std::collections::BTreeSet<u64> = of_type(&events, "probe")
        .iter()
        .map(|p| p["route_index"].as_u64().unwrap())
        .collect();
    assert_eq!(probed.len(), 4, "{probed:?}");
    let summary = of_type(&events, "summary")[0];
    let routes = summary["rtt"]["routes"].as_array().unwrap();
    assert_eq!(routes.len(), 4, "{summary}");
    for (k, r) in routes.iter().enumerate() {
        let want = 4.0 * [10.0, 20.0, 40.0, 80.0][k];
        let p50 = r["idle"]["p50_ns"].as_f64().unwrap() / 1e6;
        assert!(
            (want..want + 20.0).contains(&p50),
            "route {k}: idle p50 {p50} ms, want ~{want}"
        );
        assert!(r["loaded"]["count"].as_u64().unwrap() > 0, "{r}");
    }
    assert_eq!(of_type(&events, "start")[0]["config"]["probe_all"], true);
}
