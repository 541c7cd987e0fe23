//! The measurement engine end to end, through `mux-bw lab`: faults become attributed events,
//! probes follow the first established route, the stream survives `| head` and Ctrl-C.
//! Each test names the field bug from DESIGN.md §1 it guards against.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{bin, of_type, run};
use serde_json::Value;

const LIMIT: Duration = Duration::from_secs(40);

fn lab_json(args: &[&str]) -> Vec<Value> {
    common::lab_json(args, LIMIT)
}

fn relay_id(events: &[Value], k: usize) -> String {
    let uri = events[0]["config"]["relays"][k]
        .as_str()
        .expect("relay uri");
    uri.trim_start_matches("mbw://")
        .split('@')
        .next()
        .expect("id")
        .to_string()
}

/// Field bug: a pump died silently; only `active_routes` dropped.
#[test]
fn killed_relay_gives_exactly_one_attributed_route_failure() {
    let events = lab_json(&[
        "--routes",
        "4",
        "--min-hops",
        "2",
        "--duration",
        "4s",
        "--interval",
        "500ms",
        "--fault",
        "kill:1@1500ms",
    ]);
    let failures = of_type(&events, "route_failure");
    assert_eq!(failures.len(), 1, "{failures:?}");
    let f = failures[0];
    assert_eq!(f["route_index"], 1, "{f}");
    assert!(f["bytes_sent_before_failure"].as_u64().unwrap() > 0, "{f}");
    let elapsed = f["elapsed_ns"].as_u64().unwrap() as f64 / 1e9;
    // Not before the kill at 1.5 s, and well before the run's end (an order-of-magnitude guard).
    assert!((1.4..4.0).contains(&elapsed), "elapsed {elapsed}s");
    assert_eq!(f["failed_hop"], 0, "{f}");
    assert_eq!(f["node"], relay_id(&events, 1).as_str(), "{f}");

    let failed_at = f["t_ns"].as_u64().unwrap();
    let later: Vec<_> = of_type(&events, "sample")
        .into_iter()
        .filter(|s| s["interval_start_ns"].as_u64().unwrap() > failed_at)
        .collect();
    assert!(!later.is_empty());
    for s in later {
        assert_eq!(s["active_routes"], 3, "{s}");
    }
    let summary = of_type(&events, "summary")[0];
    assert_eq!(summary["routes_failed"], 1);
    let r1 = &summary["routes"][1];
    assert_eq!(r1["state"], "failed");
    assert!(r1["error"].as_str().unwrap().contains("killed"), "{r1}");
}

/// Field bug: no write deadline, so a full send buffer blocked forever and showed 0 bytes.
#[test]
fn stalled_relay_ends_in_a_timeout_failure_not_a_hang() {
    let t = Instant::now();
    let events = lab_json(&[
        "--routes",
        "2",
        "--min-hops",
        "2",
        "--duration",
        "5s",
        "--interval",
        "500ms",
        "--fault",
        "stall:0@1s",
        "--io-timeout",
        "2s",
        // Longer than the write deadline, so the deadline is what ends the route (a stall with
        // a silent hop would end it too, named: see the next test).
        "--stall-timeout",
        "4s",
    ]);
    assert!(
        t.elapsed() < Duration::from_secs(15),
        "run took {:?}",
        t.elapsed()
    );
    let failures = of_type(&events, "route_failure");
    assert_eq!(failures.len(), 1, "{failures:?}");
    let f = failures[0];
    assert_eq!(f["route_index"], 0);
    assert!(
        f["error"].as_str().unwrap().contains("timed out after 2s"),
        "{f}"
    );
    // The deadline is per write: the write in progress when the relay stalled may have been
    // waiting for window space since a little before the stall, so it can fail a little before
    // stall + 2 s (2.84 s seen on a loaded machine), but never before 2 s nor long after 3 s.
    let elapsed = f["elapsed_ns"].as_u64().unwrap() as f64 / 1e9;
    assert!(
        (2.0..6.0).contains(&elapsed),
        "failed {elapsed}s after start (stall at 1s)"
    );
}

/// Silence is a failure with a culprit: a relay that stops forwarding (but keeps its connections
/// open) is found by asking each hop of the stalled route, and the failure names it.
#[test]
fn stalled_relay_is_named_once_the_route_stalls() {
    let events = lab_json(&[
        "--routes",
        "2",
        "--min-hops",
        "2",
        "--duration",
        "5s",
        "--interval",
        "500ms",
        "--fault",
        "stall:0@1s",
        "--stall-timeout",
        "1s",
    ]);
    let stalled = of_type(&events, "route_stalled");
    assert!(stalled.iter().any(|s| s["route_index"] == 0), "{stalled:?}");
    let failures = of_type(&events, "route_failure");
    assert_eq!(failures.len(), 1, "{failures:?}");
    let f = failures[0];
    assert_eq!(f["route_index"], 0);
    assert_eq!(f["failed_hop"], 0, "{f}");
    assert_eq!(f["node"], relay_id(&events, 0).as_str(), "{f}");
    assert!(
        f["error"].as_str().unwrap().contains("does not answer"),
        "{f}"
    );
    let summary = of_type(&events, "summary")[0];
    assert_eq!(summary["routes"][0]["state"], "failed");
    assert_eq!(summary["routes"][1]["state"], "up");
}

/// Field bug: the probe hard-coded route 0; when only route 2 came up every probe failed.
#[test]
fn probes_use_the_first_established_route_whatever_its_index() {
    // Routes 0, 1 and 3 are pinned through a node that does not exist.
    let ghost = "mbw://00000000000000000000000000000001@127.0.0.1:9";
    let via = |i: usize| format!("{i}={ghost}");
    let (v0, v1, v3) = (via(0), via(1), via(3));
    let out = run(
        &[
            "lab",
            "--json",
            "--routes",
            "4",
            "--min-hops",
            "2",
            "--setup-timeout",
            "300ms",
            "--via",
            &v0,
            "--via",
            &v1,
            "--via",
            &v3,
            "--duration",
            "1500ms",
            "--interval",
            "500ms",
            "--probe-rtt",
            "--allow-overlap",
            "--allow-partial",
        ],
        LIMIT,
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    let events = out.events();
    let est = of_type(&events, "route_established");
    assert_eq!(est.len(), 1);
    assert_eq!(est[0]["route_index"], 2);
    assert_eq!(of_type(&events, "route_setup_failed").len(), 3);
    let probes = of_type(&events, "probe");
    for p in &probes {
        assert_eq!(p["route_index"], 2, "{p}");
    }
    // A probe is one datagram, never resent: a loaded loopback receiver whose socket buffer is
    // full drops one now and then, and that probe is rightly lost. Most must be answered.
    let answered = probes
        .iter()
        .filter(|p| p["rtt_ns"].as_u64() > Some(0))
        .count();
    assert!(
        answered >= 5,
        "{answered} of {} probes answered",
        probes.len()
    );
    let rtt = &of_type(&events, "summary")[0]["rtt"];
    assert_eq!(rtt["route_index"], 2);
}

#[test]
fn probe_rtt_reports_idle_and_loaded_distributions() {
    let events = lab_json(&[
        "--routes",
        "2",
        "--min-hops",
        "2",
        "--duration",
        "2s",
        "--probe-rtt",
        "--probe-interval",
        "50ms",
    ]);
    let rtt = &of_type(&events, "summary")[0]["rtt"];
    let idle = &rtt["idle"];
    let loaded = &rtt["loaded"];
    assert_eq!(idle["count"], 10, "{rtt}");
    // One probe per 50 ms over 2 s, whatever the RTT (probes overlap): 40 sent. An
    // order-of-magnitude guard, since on a loaded 2-core machine the loaded RTT reaches
    // hundreds of ms and the probes still in flight at the end are not counted; a prober
    // that waited for each answer would get a handful.
    assert!(loaded["count"].as_u64().unwrap() >= 10, "{rtt}");
    for s in [idle, loaded] {
        let p = |k: &str| s[k].as_u64().unwrap();
        assert!(
            p("min_ns") <= p("p50_ns") && p("p50_ns") <= p("p90_ns"),
            "{s}"
        );
        assert!(
            p("p90_ns") <= p("p99_ns") && p("p99_ns") <= p("max_ns"),
            "{s}"
        );
        assert!(p("rpm") > 0);
    }
    assert!(
        loaded["p50_ns"].as_u64() >= idle["p50_ns"].as_u64(),
        "loaded p50 below idle p50: {rtt}"
    );
    let phases: Vec<&str> = of_type(&events, "probe")
        .iter()
        .map(|p| p["phase"].as_str().unwrap())
        .collect();
    assert!(phases.starts_with(&["idle"; 10]), "{phases:?}");
    assert!(phases[10..].iter().all(|p| *p == "loaded"));
    // No route failed, so every probe stayed on the first route and the increase is reported.
    // (Field bug here: the last tick of the load, as the pumps left the table, picked the next
    // route for a probe that was never sent, and `routes_probed` claimed a failover.)
    assert_eq!(
        rtt["routes_probed"],
        serde_json::json!([rtt["route_index"]]),
        "{rtt}"
    );
    assert!(rtt["latency_increase_ns"].is_i64(), "{rtt}");
}

/// Field bug: an adapter dropped the route index, so aux routes all looked up route 0.
#[test]
fn route_index_survives_every_layer() {
    let events = lab_json(&["--routes", "8", "--min-hops", "2", "--duration", "1s"]);
    for e in of_type(&events, "route_established") {
        let i = e["route_index"].as_u64().unwrap() as usize;
        assert_eq!(
            e["path"][0],
            relay_id(&events, i).as_str(),
            "route {i}: {e}"
        );
    }
    for s in of_type(&events, "sample") {
        let idx: Vec<u64> = s["routes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["route_index"].as_u64().unwrap())
            .collect();
        assert_eq!(idx, (0..8).collect::<Vec<u64>>());
    }
}

#[test]
fn omit_marks_warm_up_samples_and_leaves_them_out_of_the_summary() {
    let events = lab_json(&[
        "--routes",
        "1",
        "--min-hops",
        "2",
        "--omit",
        "1s",
        "--duration",
        "1s",
        "--interval",
        "500ms",
    ]);
    let samples = of_type(&events, "sample");
    let omitted: Vec<bool> = samples
        .iter()
        .map(|s| s["omitted"].as_bool().unwrap())
        .collect();
    assert_eq!(omitted, vec![true, true, false, false]);
    let summary = of_type(&events, "summary")[0];
    // Measured, not scheduled: the omit boundary and the deadline as they were really sampled.
    let measured = summary["duration_ns"].as_u64().unwrap();
    assert!(
        (900_000_000..=1_050_000_000).contains(&measured),
        "{measured}"
    );
    let total = summary["routes"][0]["bytes_sent"].as_u64().unwrap();
    let last = samples[3]["routes"][0]["bytes_sent"].as_u64().unwrap();
    let at_omit_end = samples[1]["routes"][0]["bytes_sent"].as_u64().unwrap();
    assert_eq!(total, last - at_omit_end);
}

#[test]
fn bidir_and_echo_move_bytes_both_ways() {
    for mode in ["bidir", "echo"] {
        let events = lab_json(&[
            "--routes",
            "2",
            "--min-hops",
            "2",
            "--duration",
            "1s",
            "--mode",
            mode,
        ]);
        for r in of_type(&events, "summary")[0]["routes"].as_array().unwrap() {
            assert!(r["bytes_sent"].as_u64().unwrap() > 0, "{mode}: {r}");
            assert!(r["bytes_received"].as_u64().unwrap() > 0, "{mode}: {r}");
        }
    }
}

#[test]
fn closed_stdout_ends_the_run_quietly_with_exit_0() {
    let t = Instant::now();
    let out = Command::new("bash")
        .arg("-c")
        .arg(format!(
            "'{}' lab --json --duration 20s --interval 200ms | head -1; echo \"rc=${{PIPESTATUS[0]}}\" >&2",
            bin()
        ))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(stdout.lines().count(), 1);
    assert!(stdout.contains("\"type\":\"start\""), "{stdout}");
    assert_eq!(stderr.trim(), "rc=0", "stderr: {stderr}");
    assert!(
        t.elapsed() < Duration::from_secs(10),
        "took {:?}",
        t.elapsed()
    );
}

#[test]
fn sigint_ends_with_a_summary_valid_ndjson_and_exit_130() {
    use std::io::{BufRead, BufReader};
    let mut child = Command::new(bin())
        .args(["lab", "--json", "--duration", "30s", "--interval", "200ms"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // SIGINT once the load is running (the first sample), not after a guessed sleep.
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut stdout = Vec::new();
    for line in lines.by_ref() {
        let line = line.unwrap();
        let sampled = line.contains("\"type\":\"sample\"");
        stdout.push(line);
        if sampled {
            break;
        }
    }
    let status = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    stdout.extend(lines.map(Result::unwrap));
    let code = child.wait().unwrap().code();
    assert_eq!(code, Some(130));
    let events: Vec<Value> = stdout
        .iter()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad line {l}: {e}")))
        .collect();
    let last = events.last().unwrap();
    assert_eq!(last["type"], "summary");
    assert_eq!(last["interrupted"], true);
    assert!(
        of_type(&events, "route_failure").is_empty(),
        "Ctrl-C is not a failure"
    );
}

#[test]
fn json_file_gets_ndjson_while_the_terminal_gets_human_output() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("run.ndjson");
    let path = file.to_str().unwrap();
    let out = run(
        &[
            "lab",
            "--routes",
            "2",
            "--min-hops",
            "2",
            "--duration",
            "1s",
            "--json-file",
            path,
        ],
        LIMIT,
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stdout.contains("total 2/2 routes up"), "{}", out.stdout);
    let text = std::fs::read_to_string(&file).unwrap();
    let events: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(events[0]["type"], "start");
    assert_eq!(events.last().unwrap()["type"], "summary");
}

/// DESIGN: a start failure fails over to a spare and self-heals; per-node breakers.
#[test]
fn redial_replaces_a_killed_relay_with_a_disjoint_spare() {
    let events = lab_json(&[
        "--routes",
        "3",
        "--min-hops",
        "2",
        "--relays",
        "5",
        "--duration",
        "3s",
        "--interval",
        "500ms",
        "--fault",
        "kill:1@1s",
        "--redial",
    ]);
    let failures = of_type(&events, "route_failure");
    assert_eq!(failures.len(), 1, "{failures:?}");
    assert_eq!(failures[0]["route_index"], 1);
    let redials = of_type(&events, "route_redial");
    assert_eq!(redials.len(), 1, "{redials:?}");
    let r = redials[0];
    assert_eq!(r["route_index"], 1);
    let new_relay = r["path"][0].as_str().unwrap();
    assert_ne!(
        new_relay,
        relay_id(&events, 1),
        "redialed through the dead relay"
    );
    for other in [0, 2] {
        assert_ne!(
            new_relay,
            relay_id(&events, other),
            "spare shared with route {other}"
        );
    }
    assert!(r["t_ns"].as_u64() > failures[0]["t_ns"].as_u64());
    let last = *of_type(&events, "sample").last().unwrap();
    assert_eq!(last["active_routes"], 3, "{last}");
    assert!(
        last["routes"][1]["sent_bps"].as_u64().unwrap() > 0,
        "{last}"
    );
    let s1 = &of_type(&events, "summary")[0]["routes"][1];
    assert_eq!(s1["state"], "up", "{s1}");
    assert_eq!(s1["failures"], 1);
    assert_eq!(s1["redials"], 1);
    assert_eq!(s1["path"][0], new_relay);
}

#[test]
fn without_redial_a_failed_route_stays_down() {
    let events = lab_json(&[
        "--routes",
        "2",
        "--min-hops",
        "2",
        "--relays",
        "4",
        "--duration",
        "2s",
        "--interval",
        "500ms",
        "--fault",
        "kill:0@500ms",
    ]);
    assert!(of_type(&events, "route_redial").is_empty());
    let s0 = &of_type(&events, "summary")[0]["routes"][0];
    assert_eq!(s0["state"], "failed");
    assert_eq!(s0["redials"], 0);
}

#[test]
fn redial_rescues_a_route_whose_setup_failed() {
    let ghost = "1=mbw://00000000000000000000000000000001@127.0.0.1:9";
    let events = lab_json(&[
        "--routes",
        "3",
        "--min-hops",
        "2",
        "--relays",
        "5",
        "--duration",
        "2s",
        "--via",
        ghost,
        "--setup-timeout",
        "300ms",
        "--redial",
    ]);
    let failed = of_type(&events, "route_setup_failed");
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0]["route_index"], 1);
    let redials = of_type(&events, "route_redial");
    assert_eq!(redials.len(), 1);
    assert_eq!(redials[0]["route_index"], 1);
    let summary = of_type(&events, "summary")[0];
    assert_eq!(summary["routes_established"], 3, "{summary}");
}

#[test]
fn run_ends_early_with_exit_4_when_every_route_failed() {
    let t = Instant::now();
    let out = run(
        &[
            "lab",
            "--json",
            "--routes",
            "1",
            "--min-hops",
            "2",
            "--relays",
            "1",
            "--duration",
            "20s",
            "--fault",
            "kill:0@500ms",
        ],
        LIMIT,
    );
    assert_eq!(out.code, 4, "{}", out.stderr);
    assert!(
        t.elapsed() < Duration::from_secs(8),
        "took {:?}",
        t.elapsed()
    );
    let events = out.events();
    assert_eq!(of_type(&events, "route_failure").len(), 1);
    assert_eq!(of_type(&events, "summary")[0]["routes_failed"], 1);
}

#[test]
fn live_always_still_prints_event_lines_when_stderr_is_not_a_terminal() {
    let out = run(
        &[
            "lab",
            "--routes",
            "1",
            "--min-hops",
            "2",
            "--duration",
            "1s",
            "--live",
            "always",
        ],
        LIMIT,
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stderr.contains("R0 ✓ established"), "{}", out.stderr);
    assert!(out.stdout.contains("total 1/1 routes up"), "{}", out.stdout);
}
