//! `mux-bw sweep` in the lab: a 3x2 matrix whose numbers match the saved NDJSON files, and a
//! failed cell that is reported without stopping the sweep.

mod common;

use std::time::Duration;

use common::run;
use serde_json::Value;

const LIMIT: Duration = Duration::from_secs(180);

#[test]
fn matrix_matches_the_saved_runs() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("runs");
    let json = dir.path().join("matrix.json");
    let md = dir.path().join("matrix.md");
    let (out_s, json_s, md_s) = (
        out.to_string_lossy().into_owned(),
        json.to_string_lossy().into_owned(),
        md.to_string_lossy().into_owned(),
    );
    let res = run(
        &[
            "sweep",
            "--lab",
            "--link-rate",
            "20mbit",
            "--routes",
            "1,2,4",
            "--min-hops",
            "1,2",
            "--runs",
            "2",
            "--duration",
            "1s",
            "--omit",
            "300ms",
            "--out",
            &out_s,
            "--export-json",
            &json_s,
            "--export-markdown",
            &md_s,
        ],
        LIMIT,
    );
    assert_eq!(res.code, 0, "{}", res.stderr);
    let lines: Vec<&str> = res.stdout.lines().collect();
    assert!(
        lines[0].contains("min-hops 1, up") && lines[0].contains("min-hops 2, up"),
        "{}",
        res.stdout
    );
    for (i, routes) in ["1", "2", "4"].iter().enumerate() {
        assert!(lines[i + 1].starts_with(routes), "{}", res.stdout);
    }
    let cells: Vec<Value> = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(cells.len(), 6);
    let first_mean = cells[0]["mean_bps"].as_f64().unwrap();
    for c in &cells {
        check_cell(c, &out, first_mean, &res.stdout);
    }
    // Disjoint relay routes scale; direct routes share the one direct link.
    let mean = |r: u64, h: u64| {
        cells
            .iter()
            .find(|c| c["routes"] == r && c["min_hops"] == h)
            .unwrap()["mean_bps"]
            .as_f64()
            .unwrap()
    };
    assert!(mean(4, 2) > 3.0 * mean(1, 2), "{cells:?}");
    assert!(mean(4, 1) < 1.2 * mean(1, 1), "{cells:?}");
    assert!(std::fs::read_to_string(&md)
        .unwrap()
        .starts_with("| routes |"));
}

/// One cell of the matrix: its mean and stddev are those of its saved runs' summaries, and the
/// printed matrix shows the same.
fn check_cell(c: &Value, out: &std::path::Path, first_mean: f64, stdout: &str) {
    let slug = format!("r{}-h{}-up", c["routes"], c["min_hops"]);
    let rates: Vec<f64> = (1..=2)
        .map(|k| {
            let text = std::fs::read_to_string(out.join(format!("{slug}-run{k}.ndjson"))).unwrap();
            let summary: Value = text
                .lines()
                .map(|l| serde_json::from_str::<Value>(l).unwrap())
                .find(|e| e["type"] == "summary")
                .unwrap();
            summary["aggregate_bps"].as_f64().unwrap()
        })
        .collect();
    let mean = (rates[0] + rates[1]) / 2.0;
    let sd = ((rates[0] - mean).powi(2) + (rates[1] - mean).powi(2)).sqrt();
    assert!(
        (c["mean_bps"].as_f64().unwrap() - mean).abs() < 1e-6,
        "{slug}: {c}"
    );
    assert!(
        (c["stddev_bps"].as_f64().unwrap() - sd).abs() < 1e-6,
        "{slug}: {c}"
    );
    let ratio = c["ratio_to_first"].as_f64().unwrap();
    assert!((ratio - mean / first_mean).abs() < 1e-9);
    let shown = format!("{:.1} ± {:.1} Mbit/s", mean / 1e6, sd / 1e6);
    assert!(stdout.contains(&shown), "{shown} not in {stdout}");
}

#[test]
fn a_failed_cell_is_reported_and_the_sweep_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().to_string_lossy().into_owned();
    let res = run(
        &[
            "sweep",
            "--lab",
            "--lab-relays",
            "2",
            "--routes",
            "1,4",
            "--min-hops",
            "2",
            "--duration",
            "500ms",
            "--out",
            &out,
        ],
        LIMIT,
    );
    assert_eq!(res.code, 0, "{}", res.stderr);
    assert!(res.stdout.contains("FAILED"), "{}", res.stdout);
    assert!(
        res.stdout
            .contains("r4-h2-up: --routes 4 --min-hops 2 needs 4 disjoint relays, 2 given"),
        "{}",
        res.stdout
    );
    let row1 = res.stdout.lines().nth(1).unwrap();
    assert!(
        row1.contains("Mbit/s") || row1.contains("Gbit/s"),
        "{}",
        res.stdout
    );
}

#[test]
fn sweep_needs_a_target() {
    let res = run(&["sweep", "--routes", "1,2"], LIMIT);
    assert_eq!(res.code, 2, "{}", res.stderr);
    let res = run(
        &["sweep", "--to", "mbw://00@x:1", "--link-rate", "1mbit"],
        LIMIT,
    );
    assert_eq!(res.code, 2, "{}", res.stderr);
}

/// A striped sweep: each cell is its runs' in-order goodput, as their saved summaries say.
#[test]
fn a_striped_sweep_shows_the_in_order_goodput() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("runs");
    let json = dir.path().join("matrix.json");
    let (out_s, json_s) = (
        out.to_string_lossy().into_owned(),
        json.to_string_lossy().into_owned(),
    );
    let res = run(
        &[
            "sweep",
            "--lab",
            "--link-rate",
            "20mbit",
            "--routes",
            "2",
            "--min-hops",
            "2",
            "--duration",
            "1s",
            "--stripe",
            "--out",
            &out_s,
            "--export-json",
            &json_s,
        ],
        LIMIT,
    );
    assert_eq!(res.code, 0, "{}", res.stderr);
    assert!(res.stderr.contains("in-order goodput"), "{}", res.stderr);
    let cells: Vec<Value> = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let text = std::fs::read_to_string(out.join("r2-h2-up-run1.ndjson")).unwrap();
    let summary: Value = text
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .find(|e| e["type"] == "summary")
        .unwrap();
    assert_eq!(
        cells[0]["mean_bps"].as_f64(),
        summary["stripe"]["in_order_bps"].as_f64(),
        "{summary}"
    );
}
