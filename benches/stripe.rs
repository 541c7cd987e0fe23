//! `make bench`: one transfer striped over uneven routes, per scheduler, against the same routes
//! run unstriped. Each case is a whole `mux-bw lab --json` (two relays: 10 mbit with 40 ms and
//! 40 mbit with 5 ms one-way delay, the stripe issue's example), rounds rotated so no scheduler
//! always runs at the same moment; the table prints medians over rounds. Without `--bench`
//! (`cargo test --all-targets`) one short round checks that every case runs.

use std::process::Command;

use serde_json::Value;

/// The cases: a name, and the flags after the shared ones (`None`: unstriped).
const CASES: [(&str, Option<&str>); 4] = [
    ("unstriped (the routes' sum)", None),
    ("round-robin", Some("round-robin")),
    ("weighted", Some("weighted")),
    ("earliest-arrival", Some("earliest-arrival")),
];

/// One case's figures: (in-order or aggregate bits/s, routes' sum bits/s, buffer peak bytes).
fn run_case(scheduler: Option<&str>, full: bool) -> (f64, f64, f64) {
    let (duration, omit) = if full { ("6s", "2s") } else { ("1s", "500ms") };
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_mux-bw"));
    cmd.args([
        "lab",
        "--json",
        "--relays",
        "2",
        "--routes",
        "2",
        "--min-hops",
        "2",
    ])
    .args(["--link-rate", "10mbit,40mbit", "--link-delay", "40ms,5ms"])
    .args(["--duration", duration, "--omit", omit]);
    if let Some(s) = scheduler {
        cmd.args(["--stripe", "--scheduler", s]);
    }
    let out = cmd.output().expect("mux-bw lab runs");
    assert!(
        out.status.success(),
        "{scheduler:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let summary: Value = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|e| e["type"] == "summary")
        .expect("a summary");
    let num = |v: &Value| v.as_f64().unwrap_or(0.0);
    let sum = num(&summary["aggregate_bps"]);
    match summary.get("stripe") {
        Some(st) => (num(&st["in_order_bps"]), sum, num(&st["buffer_peak_bytes"])),
        None => (sum, sum, 0.0),
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let rounds = if full { 3 } else { 1 };
    let mut figures: Vec<Vec<(f64, f64, f64)>> = vec![Vec::new(); CASES.len()];
    for round in 0..rounds {
        for k in (0..CASES.len()).map(|i| (i + round) % CASES.len()) {
            let (name, scheduler) = CASES[k];
            let f = run_case(scheduler, full);
            eprintln!(
                "round {}: {name:<28} {:>6.2} Mbit/s in order (routes {:.2})",
                round + 1,
                f.0 / 1e6,
                f.1 / 1e6
            );
            figures[k].push(f);
        }
    }
    let unstriped = median(figures[0].iter().map(|f| f.0).collect());
    println!("\nstriped over 10mbit/40ms + 40mbit/5ms (median of {rounds} rounds)");
    println!(
        "{:<28} {:>14} {:>16} {:>14}",
        "scheduler", "in order Mbit/s", "of unstriped sum", "buffer peak MB"
    );
    for (k, (name, _)) in CASES.iter().enumerate() {
        let bps = median(figures[k].iter().map(|f| f.0).collect());
        let peak = median(figures[k].iter().map(|f| f.2).collect());
        println!(
            "{name:<28} {:>14.2} {:>15.0}% {:>14.2}",
            bps / 1e6,
            bps / unstriped * 100.0,
            peak / 1e6
        );
    }
}
