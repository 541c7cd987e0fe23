//! `mux-bw scan`: uneven lab relays come out ranked by their links, each near its shaped rate
//! (up to 6 % above it: a proxy that fell behind on a busy host catches up inside a window);
//! a relay that cannot be reached is a row with its cause, not an abort; `--out` holds the
//! ranking.

mod common;

use std::time::Duration;

use common::{of_type, run, NodeProc};
use serde_json::Value;

const LIMIT: Duration = Duration::from_secs(120);

fn events(stdout: &str) -> Vec<Value> {
    stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn uneven_lab_relays_are_ranked_by_their_links() {
    let dir = tempfile::tempdir().unwrap();
    let out_file = dir.path().join("scan.json");
    let out = run(
        &[
            "scan",
            "--lab",
            "--relays",
            "4",
            "--link-rate",
            "2mbit,4mbit,8mbit,16mbit",
            "--direct-rate",
            "20mbit",
            "--duration",
            "2s",
            "--json",
            "--out",
            out_file.to_str().unwrap(),
        ],
        LIMIT,
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    let events = events(&out.stdout);
    let rows = of_type(&events, "relay_scan");
    assert_eq!(rows.len(), 5, "direct + 4 relays: {rows:?}");
    assert_eq!(events.last().unwrap()["type"], "scan_summary");
    let saved: Value = serde_json::from_str(&std::fs::read_to_string(&out_file).unwrap()).unwrap();
    let ranking = saved["ranking"].as_array().unwrap();
    let names: Vec<&str> = ranking
        .iter()
        .map(|r| r["relay"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["r3", "r2", "r1", "r0"], "{saved}");
    for (r, shaped) in ranking.iter().zip([16e6, 8e6, 4e6, 2e6]) {
        let bps = r["bps"].as_f64().unwrap();
        assert!((0.85 * shaped..=1.06 * shaped).contains(&bps), "{r}");
        assert!(r["rtt_idle"]["p50_ns"].as_u64().is_some(), "{r}");
        assert!(r["setup_ns"].as_u64().is_some(), "{r}");
    }
    let direct = saved["direct"]["bps"].as_f64().unwrap();
    assert!((0.85 * 20e6..=1.06 * 20e6).contains(&direct), "{saved}");
    assert_eq!(saved["client_limited"], false);
}

#[test]
fn an_unreachable_relay_is_a_row_with_its_cause() {
    let dst = NodeProc::start("serve", &[]);
    let relay = NodeProc::start("relay", &[]);
    // A relay id nobody holds, at a port nothing listens on.
    let ghost = "mbw://00112233445566778899aabbccddeeff@127.0.0.1:9";
    let out = run(
        &[
            "scan",
            "--to",
            &dst.uri,
            "--relay",
            &relay.uri,
            "--relay",
            ghost,
            "--duration",
            "1s",
            "--omit",
            "0s",
            "--setup-timeout",
            "1s",
            "--json",
        ],
        LIMIT,
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    let events = events(&out.stdout);
    let summary = of_type(&events, "scan_summary")[0];
    assert_eq!(summary["relays_measured"], 1, "{summary}");
    assert_eq!(summary["relays_failed"], 1, "{summary}");
    let last = &summary["ranking"][1];
    assert_eq!(last["address"], ghost, "failed rows rank last: {summary}");
    assert!(last["cause"].is_string(), "{last}");
    assert_eq!(last["bps"], 0);
    assert!(
        summary["ranking"][0]["bps"].as_u64().unwrap() > 0,
        "{summary}"
    );
}

/// `--relays-from scan.json --pick fastest`: the routes take the scan's fastest relays (in a
/// new lab, matched by name), so 2 routes over 2/4/8/16 mbit relays deliver 8 + 16; `--pick
/// random` reports its seed; `--pick fastest` without a ranking is refused by name.
#[test]
fn pick_fastest_plans_over_the_scans_best_relays() {
    let dir = tempfile::tempdir().unwrap();
    let scan = dir.path().join("scan.json");
    let rates = "2mbit,4mbit,8mbit,16mbit";
    let scan_s = scan.to_str().unwrap();
    let out = run(
        &[
            "scan",
            "--lab",
            "--relays",
            "4",
            "--link-rate",
            rates,
            "--duration",
            "1s",
            "--out",
            scan_s,
            "--json",
        ],
        LIMIT,
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    let lab_with = |extra: &[&str]| {
        let mut args = vec![
            "lab",
            "--relays",
            "4",
            "--link-rate",
            rates,
            "--routes",
            "2",
            "--min-hops",
            "2",
            "--duration",
            "3s",
            "--omit",
            "1s",
            "--json",
        ];
        args.extend_from_slice(extra);
        let out = run(&args, LIMIT);
        assert_eq!(out.code, 0, "{}", out.stderr);
        events(&out.stdout)
    };
    let lab = |pick: &str| lab_with(&["--relays-from", scan_s, "--pick", pick]);
    let fast = lab("fastest");
    let start = of_type(&fast, "start")[0];
    assert_eq!(start["config"]["pick"]["rule"], "fastest", "{start}");
    assert_eq!(start["config"]["pick"]["scan_file"], scan_s, "{start}");
    let relays = start["config"]["relays"].as_array().unwrap();
    let r3 = relays[0].as_str().unwrap();
    let paths = &start["config"]["planned_paths"];
    assert!(
        r3.contains(paths[0][0].as_str().unwrap()),
        "route 0 not via the fastest: {start}"
    );
    let agg = of_type(&fast, "summary")[0]["aggregate_bps"]
        .as_f64()
        .unwrap();
    assert!(
        (0.85 * 24e6..=1.02 * 24e6).contains(&agg),
        "fastest pick gave {agg} bit/s"
    );
    // The worst pick, the two slowest relays, delivers far less.
    let worst = lab_with(&["--via", "0=r0", "--via", "1=r1"]);
    let worst = of_type(&worst, "summary")[0]["aggregate_bps"]
        .as_f64()
        .unwrap();
    assert!(agg > 2.0 * worst, "fastest {agg} vs the worst pick {worst}");
    let random = lab("random");
    let pick = &of_type(&random, "start")[0]["config"]["pick"];
    assert_eq!(pick["rule"], "random", "{pick}");
    assert!(pick["seed"].as_u64().is_some(), "{pick}");
    let refused = run(&["lab", "--pick", "fastest"], LIMIT);
    assert_eq!(refused.code, 2, "{}", refused.stderr);
    assert!(
        refused
            .stderr
            .contains("--pick fastest needs --relays-from"),
        "{}",
        refused.stderr
    );
}

/// Ctrl-C during a scan: exit 130, and `--out` keeps the rows measured before it.
#[test]
fn ctrl_c_keeps_the_rows_measured_so_far() {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};
    let dir = tempfile::tempdir().unwrap();
    let out_file = dir.path().join("scan.json");
    let mut child = Command::new(common::bin())
        .args([
            "scan",
            "--lab",
            "--relays",
            "4",
            "--link-rate",
            "10mbit",
            "--duration",
            "2s",
        ])
        .args(["--json", "--out", out_file.to_str().unwrap()])
        .env_remove("MUX_BW_TOKEN")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Wait for the direct row and the first relay's, then interrupt.
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let rows = lines
        .by_ref()
        .map_while(Result::ok)
        .filter(|l| l.contains("\"type\":\"relay_scan\""))
        .take(2)
        .count();
    assert_eq!(rows, 2, "the scan never measured a relay");
    let status = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    lines.for_each(drop);
    assert_eq!(child.wait().unwrap().code(), Some(130));
    let saved: Value = serde_json::from_str(&std::fs::read_to_string(&out_file).unwrap()).unwrap();
    assert_eq!(saved["interrupted"], true, "{saved}");
    let ranked = saved["ranking"].as_array().unwrap();
    assert!(!ranked.is_empty() && ranked.len() < 4, "{saved}");
    assert!(
        ranked.iter().all(|r| r["bps"].as_u64().unwrap() > 0),
        "{saved}"
    );
}

/// `scan --json > /dev/full` used to exit 0 with nothing written: a stdout that cannot be
/// written is exit 1 with the reason, after the scan and its `--out`.
#[test]
fn a_full_stdout_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let out_file = dir.path().join("scan.json");
    let out = std::process::Command::new("bash")
        .arg("-c")
        .arg(format!(
            "'{}' scan --lab --relays 1 --duration 300ms --omit 0s --json --out '{}' > /dev/full",
            common::bin(),
            out_file.display()
        ))
        .env_remove("MUX_BW_TOKEN")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("cannot write to stdout"), "{stderr}");
    assert!(out_file.exists(), "--out was not written");
}
