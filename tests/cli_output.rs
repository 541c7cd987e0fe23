//! Output that cannot be written never panics (exit 101) and never ends a run silently: a full
//! stdout (`> /dev/full`) is an error (exit 1) after a run that went on to its end, a closed or
//! full stderr is ignored, a closed stdout pipe (`| head`) ends quietly (tests/engine.rs). And
//! what is written adds up: setup failures in the summary, every planned route in every sample,
//! human sample figures that sum to their total, loss in the unit it was given, RTT figures that
//! `jq` over the probe events reproduces.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{bin, run};
use serde_json::Value;

const LIMIT: Duration = Duration::from_secs(30);

fn dev_full() -> Stdio {
    Stdio::from(
        std::fs::OpenOptions::new()
            .write(true)
            .open("/dev/full")
            .expect("/dev/full opens"),
    )
}

/// Runs the binary with the given stdout and stderr, killed after `LIMIT`; (exit code, stderr
/// if piped).
fn run_to(args: &[&str], stdout: Stdio, stderr: Stdio) -> (i32, String) {
    let mut child = Command::new(bin())
        .args(args)
        .env_remove("MUX_BW_TOKEN")
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(stderr)
        .spawn()
        .expect("binary runs");
    let mut err = String::new();
    if let Some(e) = child.stderr.take() {
        use std::io::Read;
        let _ = BufReader::new(e).read_to_string(&mut err);
    }
    (wait(&mut child), err)
}

fn wait(child: &mut std::process::Child) -> i32 {
    let deadline = Instant::now() + LIMIT;
    loop {
        if let Some(status) = child.try_wait().expect("wait works") {
            return status.code().unwrap_or(-1);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("still running after {LIMIT:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The summary event of a saved run.
fn summary(path: &std::path::Path) -> Value {
    let text = std::fs::read_to_string(path).expect("json file written");
    text.lines()
        .map(|l| serde_json::from_str::<Value>(l).expect("NDJSON"))
        .find(|e| e["type"] == "summary")
        .unwrap_or_else(|| panic!("no summary in {text}"))
}

/// `duration_ns` of a run asked to last `secs`, give or take scheduling.
fn assert_full_length(summary: &Value, secs: f64) {
    let d = summary["duration_ns"].as_f64().unwrap_or(0.0) / 1e9;
    assert!(
        (secs * 0.9..secs * 1.5).contains(&d),
        "duration {d} s, expected about {secs} s: {summary}"
    );
}

#[test]
fn full_stdout_is_an_error_after_the_whole_run() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("run.ndjson");
    let f = file.to_str().unwrap();
    let (code, err) = run_to(
        &["lab", "--json", "--duration", "3s", "--json-file", f],
        dev_full(),
        Stdio::piped(),
    );
    assert_eq!(code, 1, "stderr: {err}");
    assert!(!err.contains("panicked"), "{err}");
    assert_eq!(
        err.trim(),
        "mux-bw: error: cannot write to stdout: No space left on device (os error 28)"
    );
    assert_full_length(&summary(&file), 3.0);

    // Human output: lines go to stderr, the summary table to the full stdout.
    let (code, err) = run_to(
        &["lab", "--duration", "1s", "--json-file", f],
        dev_full(),
        Stdio::piped(),
    );
    assert_eq!(code, 1, "stderr: {err}");
    let last = err.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("mux-bw: error: cannot write to stdout: "),
        "{err}"
    );
    assert_full_length(&summary(&file), 1.0);
}

#[test]
fn full_stderr_is_ignored() {
    for json in [false, true] {
        let mut args = vec!["lab", "--duration", "1s"];
        if json {
            args.push("--json");
        }
        let (code, _) = run_to(&args, Stdio::null(), dev_full());
        assert_eq!(code, 0, "{args:?}");
    }
    // Usage errors too: the message is lost, the exit code is not.
    let (code, _) = run_to(&["lab", "--routes", "x"], Stdio::null(), dev_full());
    assert_eq!(code, 2);
}

#[test]
fn stderr_closed_after_the_first_line_is_ignored() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("run.ndjson");
    let mut child = Command::new(bin())
        .args(["lab", "--duration", "2s", "--json-file"])
        .arg(&file)
        .env_remove("MUX_BW_TOKEN")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("binary runs");
    let mut stderr = BufReader::new(child.stderr.take().expect("piped"));
    let mut first = String::new();
    stderr.read_line(&mut first).expect("one line");
    assert!(first.starts_with("lab: "), "{first}");
    drop(stderr); // like `2>&1 | head -1`
    assert_eq!(wait(&mut child), 0);
    assert_full_length(&summary(&file), 2.0);
}

#[test]
fn other_commands_report_a_full_stdout() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("run.ndjson");
    let f = file.to_str().unwrap();
    let (code, err) = run_to(
        &["lab", "--duration", "500ms", "--json-file", f],
        Stdio::null(),
        Stdio::piped(),
    );
    assert_eq!(code, 0, "{err}");
    for args in [
        &["compare", f][..],
        &["completions", "bash"],
        &["--help"],
        &["--version"],
        &["serve", "--open", "--listen", "127.0.0.1:0"],
    ] {
        let (code, err) = run_to(args, dev_full(), Stdio::piped());
        assert_eq!(code, 1, "{args:?}: {err}");
        assert_eq!(
            err.lines().last().unwrap_or_default(),
            "mux-bw: error: cannot write to stdout: No space left on device (os error 28)",
            "{args:?}"
        );
    }
}

/// `-v` logs written to a file or a pipe used to carry ANSI colour codes: colour is for a
/// terminal only (and never with NO_COLOR).
#[test]
fn logs_into_a_pipe_have_no_colour_codes() {
    let out = run(
        &["lab", "-v", "--duration", "500ms"],
        Duration::from_secs(30),
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stderr.contains(" INFO "),
        "no -v log lines: {}",
        out.stderr
    );
    assert!(!out.stderr.contains('\u{1b}'), "{:?}", out.stderr);
}

/// `serve --help` and `relay --help` used to show one default naming both ports, and `lab
/// --help` offered `--token` with no word on what it does in a lab.
#[test]
fn help_says_what_each_command_does_by_default() {
    let help = |args: &[&str]| {
        let out = run(args, Duration::from_secs(10));
        assert_eq!(out.code, 0, "{}", out.stderr);
        out.stdout
    };
    let serve = help(&["serve", "--help"]);
    assert!(
        serve.contains("0.0.0.0:7600") && !serve.contains("7601"),
        "{serve}"
    );
    let relay = help(&["relay", "--help"]);
    assert!(
        relay.contains("0.0.0.0:7601") && !relay.contains("7600"),
        "{relay}"
    );
    let lab = help(&["lab", "--help"]);
    assert!(lab.contains("Token the lab's nodes require"), "{lab}");
    assert!(lab.contains("a fresh random one"), "{lab}");
}

/// `mux-bw lab --duration 1s 2>&1 | head -2` used to exit 101 (a panic printing to the closed
/// stderr). Both streams into one pipe that closes after two lines: the run ends without a
/// panic, with exit 0 (the reader has what it wanted).
#[test]
fn both_streams_into_a_pipe_that_closes_early() {
    let out = Command::new("bash")
        .arg("-c")
        .arg(format!(
            "'{}' lab --duration 1s 2>&1 | head -2 >/dev/null; echo \"rc=${{PIPESTATUS[0]}}\"",
            bin()
        ))
        .env_remove("MUX_BW_TOKEN")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(stdout.trim(), "rc=0", "{stdout}");
}

/// A lab run with human output and a `--json-file` copy: (exit code, stdout, stderr, events).
fn human_lab(args: &[&str]) -> (i32, String, String, Vec<Value>) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("run.ndjson");
    let f = file.to_str().unwrap();
    let mut all = vec!["lab", "--live", "never", "--json-file", f];
    all.extend_from_slice(args);
    let out = common::run(&all, LIMIT);
    let text = std::fs::read_to_string(&file).unwrap_or_default();
    let events = text
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).expect("NDJSON"))
        .collect();
    (out.code, out.stdout, out.stderr, events)
}

/// Route 1 pinned through a node that does not exist: its setup fails, route 0 comes up.
const ONE_SETUP_FAILS: [&str; 10] = [
    "--routes",
    "2",
    "--min-hops",
    "2",
    "--via",
    "1=mbw://00000000000000000000000000000001@127.0.0.1:9",
    "--setup-timeout",
    "300ms",
    "--duration",
    "1s",
];

#[test]
fn setup_failures_are_counted_in_the_summary_and_the_total_line() {
    let mut args = ONE_SETUP_FAILS.to_vec();
    args.extend(["--allow-partial", "--interval", "250ms"]);
    let (code, stdout, stderr, events) = human_lab(&args);
    assert_eq!(code, 0, "{stderr}");
    let summary = events.iter().find(|e| e["type"] == "summary").unwrap();
    assert_eq!(summary["routes_setup_failed"], 1, "{summary}");
    assert_eq!(summary["routes_failed"], 0, "{summary}");
    let total = stdout.lines().last().unwrap_or_default();
    assert!(
        total.starts_with("total 1/2 routes up, 0 failed, 1 setup failed, "),
        "{stdout}"
    );
}

/// Every sample lists every planned route, in index order, with its state: a route whose setup
/// failed is there (at zero, state `setup_failed`), so positional columns never shift.
#[test]
fn every_sample_lists_every_planned_route() {
    let mut args = ONE_SETUP_FAILS.to_vec();
    args.push("--allow-partial");
    let (code, _, stderr, events) = human_lab(&[&args[..], &["--interval", "250ms"]].concat());
    assert_eq!(code, 0, "{stderr}");
    let samples: Vec<&Value> = events.iter().filter(|e| e["type"] == "sample").collect();
    assert!(samples.len() >= 3, "{samples:?}");
    for s in &samples {
        let routes = s["routes"].as_array().unwrap();
        let idx: Vec<u64> = routes
            .iter()
            .map(|r| r["route_index"].as_u64().unwrap())
            .collect();
        assert_eq!(idx, [0, 1], "{s}");
        assert_eq!(routes[1]["state"], "setup_failed", "{s}");
        assert_eq!(routes[1]["sent_bps"], 0, "{s}");
        assert_eq!(routes[1]["bytes_sent"], 0, "{s}");
        assert_eq!(s["active_routes"], 1, "{s}");
    }
    let lines: Vec<&str> = stderr.lines().filter(|l| l.contains(" routes  ")).collect();
    assert!(!lines.is_empty(), "{stderr}");
    assert!(
        lines.iter().all(|l| l.contains("] 1/2 routes  ")),
        "{stderr}"
    );

    // With --redial the route is `pending` until a redial brings it up.
    args.extend(["--redial", "--interval", "50ms"]);
    let (code, _, stderr, events) = human_lab(&args);
    assert_eq!(code, 0, "{stderr}");
    let states: Vec<&Value> = events
        .iter()
        .filter(|e| e["type"] == "sample")
        .map(|s| &s["routes"][1]["state"])
        .collect();
    assert_eq!(
        states.first().copied(),
        Some(&Value::from("pending")),
        "{states:?}"
    );
    assert_eq!(
        states.last().copied(),
        Some(&Value::from("up")),
        "{states:?}"
    );
}

/// A human sample line, `[+T] A/N routes  TOTAL UNIT  R0 x  R1 y …`: the total in its unit and
/// the figures after each `R<i>`.
fn sample_figures(line: &str) -> Option<(f64, String, Vec<Vec<f64>>)> {
    let rest = line.split_once(" routes  ")?.1;
    let mut words = rest.split_whitespace();
    let total: f64 = words.next()?.parse().ok()?;
    let unit = words.next()?.to_string();
    let mut routes: Vec<Vec<f64>> = Vec::new();
    for w in words {
        if w.starts_with('R') {
            routes.push(Vec::new());
        } else if let Some(last) = routes.last_mut() {
            let n = w.trim_start_matches(['↑', '↓']);
            last.push(n.parse().ok()?);
        }
    }
    Some((total, unit, routes))
}

/// Per-route figures are in the unit of the total, and in bidir they are up and down, so
/// they add up to the total (give or take the rounding of each printed figure).
#[test]
fn human_sample_figures_add_up_to_the_total() {
    for mode in ["up", "bidir"] {
        let args = [
            "--routes",
            "2",
            "--min-hops",
            "2",
            "--duration",
            "2s",
            "--interval",
            "500ms",
            "--mode",
            mode,
        ];
        let (code, _, stderr, _) = human_lab(&args);
        assert_eq!(code, 0, "{stderr}");
        let lines: Vec<&str> = stderr.lines().filter(|l| l.contains(" routes  ")).collect();
        assert!(lines.len() >= 3, "{stderr}");
        for l in lines {
            let (total, unit, routes) =
                sample_figures(l).unwrap_or_else(|| panic!("{mode}: unreadable line {l}"));
            assert!(unit.ends_with("bit/s"), "{l}");
            assert_eq!(routes.len(), 2, "{l}");
            let per_route = if mode == "bidir" { 2 } else { 1 };
            assert!(routes.iter().all(|r| r.len() == per_route), "{mode}: {l}");
            let sum: f64 = routes.iter().flatten().sum();
            let ulp = if unit == "Gbit/s" { 0.01 } else { 0.1 };
            assert!(
                (sum - total).abs() <= 3.0 * ulp,
                "{mode}: routes add up to {sum}, total {total} {unit}: {l}"
            );
        }
    }
}

/// `--link-loss` is a percent, and so is `start.config.links.*.loss_pct`.
#[test]
fn link_loss_is_reported_in_percent_as_given() {
    let args = [
        "--routes",
        "1",
        "--min-hops",
        "2",
        "--duration",
        "500ms",
        "--link-rate",
        "100mbit",
        "--link-loss",
        "0.5",
    ];
    let (code, _, stderr, events) = human_lab(&args);
    assert_eq!(code, 0, "{stderr}");
    let links = &events[0]["config"]["links"];
    assert_eq!(links["relay"]["loss_pct"], 0.5, "{links}");
    assert_eq!(links["direct"]["loss_pct"], 0.5, "{links}");
    assert!(links["relay"].get("loss").is_none(), "{links}");
    assert!(stderr.contains("0.50% loss"), "{stderr}");
}

/// Nearest rank: the smallest value with at least `q` of the values at or below it, i.e.
/// `sort | .[(length * q | ceil) - 1]` in jq.
fn nearest_rank(sorted: &[u64], q: f64) -> u64 {
    let rank = ((sorted.len() as f64 * q).ceil() as usize).max(1);
    sorted[rank - 1]
}

/// The summary's RTT figures are exact order statistics of the `probe` events: what `jq` over
/// the answered probes of each phase gives.
#[test]
fn rtt_summary_agrees_with_the_probe_events() {
    let args = [
        "--routes",
        "2",
        "--min-hops",
        "2",
        "--duration",
        "2s",
        "--probe-rtt",
        "--probe-interval",
        "20ms",
    ];
    let (code, _, stderr, events) = human_lab(&args);
    assert_eq!(code, 0, "{stderr}");
    let summary = events.iter().find(|e| e["type"] == "summary").unwrap();
    for phase in ["idle", "loaded"] {
        let probes: Vec<&Value> = events
            .iter()
            .filter(|e| e["type"] == "probe" && e["phase"] == phase)
            .collect();
        let mut rtts: Vec<u64> = probes.iter().filter_map(|p| p["rtt_ns"].as_u64()).collect();
        rtts.sort_unstable();
        assert!(rtts.len() >= 10, "{phase}: {} answered", rtts.len());
        let st = &summary["rtt"][phase];
        assert_eq!(st["count"], rtts.len(), "{phase}: {st}");
        assert_eq!(st["lost"], probes.len() - rtts.len(), "{phase}: {st}");
        assert_eq!(st["min_ns"], rtts[0], "{phase}: {st}");
        assert_eq!(st["max_ns"], rtts[rtts.len() - 1], "{phase}: {st}");
        for (key, q) in [("p50_ns", 0.5), ("p90_ns", 0.9), ("p99_ns", 0.99)] {
            assert_eq!(st[key], nearest_rank(&rtts, q), "{phase} {key}: {st}");
        }
        let p50 = nearest_rank(&rtts, 0.5);
        assert_eq!(st["rpm"], 60_000_000_000 / p50, "{phase}: {st}");
    }
}
