//! `compare` and `plot` on real saved runs from the lab with emulated links.

mod common;

use std::process::Stdio;
use std::time::Duration;

use common::{bin, run};

const LIMIT: Duration = Duration::from_secs(60);

fn save(dir: &std::path::Path, name: &str, args: &[&str]) -> String {
    let path = dir.join(name).to_string_lossy().into_owned();
    let mut all = vec!["lab", "--json-file", &path, "--live", "never"];
    all.extend_from_slice(args);
    let out = run(&all, LIMIT);
    assert_eq!(out.code, 0, "{}", out.stderr);
    path
}

#[test]
fn compare_reports_mux_against_direct() {
    let dir = tempfile::tempdir().unwrap();
    let links = [
        "--direct-rate",
        "40mbit",
        "--link-rate",
        "20mbit",
        "--omit",
        "1s",
        "--duration",
        "3s",
    ];
    let mut direct_args = links.to_vec();
    direct_args.extend(["--routes", "1", "--min-hops", "1"]);
    let mut mux_args = links.to_vec();
    mux_args.extend(["--routes", "4", "--min-hops", "2"]);
    let direct = save(dir.path(), "direct.ndjson", &direct_args);
    let mux = save(dir.path(), "mux.ndjson", &mux_args);

    let out = run(&["compare", &direct, &mux], LIMIT);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let line = out
        .stdout
        .lines()
        .find(|l| l.contains("delivered"))
        .unwrap_or_else(|| panic!("no ratio line: {}", out.stdout));
    assert!(line.starts_with("mux.ndjson delivered "), "{line}");

    let out = run(&["compare", "--json", &direct, &mux], LIMIT);
    let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    let ratio = v["ratios"][0]["throughput"].as_f64().unwrap();
    assert!(
        (1.8..=2.2).contains(&ratio),
        "4 x 20 mbit vs 40 mbit direct: {ratio}"
    );
    assert!(line.contains(&format!("{ratio:.2}x")), "{line} vs {ratio}");
    assert_eq!(v["runs"][1]["routes"], 4);
    assert_eq!(v["runs"][1]["hops"], "2");
    assert_eq!(
        v["warnings"],
        serde_json::json!([]),
        "same settings: no warnings"
    );

    // `-` reads a run from stdin.
    let text = std::fs::read(&mux).unwrap();
    let mut child = std::process::Command::new(bin())
        .args(["compare", &direct, "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child.stdin.take().unwrap().write_all(&text).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("- delivered"));
}

/// Same file name in two folders, and settings that make the ratio meaningless: two labels,
/// and a warning on stderr and in `--json`.
#[test]
fn compare_names_runs_apart_and_warns_of_different_settings() {
    let dir = tempfile::tempdir().unwrap();
    for sub in ["sw", "other"] {
        std::fs::create_dir(dir.path().join(sub)).unwrap();
    }
    let one = ["--routes", "1", "--min-hops", "1", "--interval", "250ms"];
    let mut emulated = one.to_vec();
    emulated.extend(["--direct-rate", "100mbit", "--duration", "2s"]);
    let mut bare = one.to_vec();
    bare.extend(["--duration", "1s"]);
    let a = save(dir.path(), "sw/r1-h1-up-run1.ndjson", &emulated);
    let b = save(dir.path(), "other/r1-h1-up-run1.ndjson", &bare);

    let out = run(&["compare", &a, &b], LIMIT);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stdout
            .contains("\nother/r1-h1-up-run1.ndjson delivered ")
            && out.stdout.contains(" sw/r1-h1-up-run1.ndjson's throughput"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout
            .contains("(not comparable: duration, links differ)"),
        "{}",
        out.stdout
    );
    let warnings: Vec<&str> = out.stderr.lines().collect();
    assert_eq!(warnings.len(), 2, "{}", out.stderr);
    assert!(
        warnings[0].starts_with("mux-bw: warning: other/r1-h1-up-run1.ndjson differs from the baseline sw/r1-h1-up-run1.ndjson in duration: 1s vs 2s"),
        "{}",
        out.stderr
    );
    assert!(
        warnings[1].contains("in links: none (no emulated links) vs "),
        "{}",
        out.stderr
    );

    let out = run(&["compare", "--json", &a, &b], LIMIT);
    let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    let fields: Vec<&str> = v["warnings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["field"].as_str().unwrap())
        .collect();
    assert_eq!(fields, ["duration", "links"]);
    assert_eq!(v["runs"][0]["name"], "sw/r1-h1-up-run1.ndjson");
    assert_eq!(out.stderr.lines().count(), 2, "{}", out.stderr);
}

#[test]
fn compare_refuses_files_that_are_not_mux_bw_runs() {
    let dir = tempfile::tempdir().unwrap();
    let not_json = dir.path().join("x.txt");
    std::fs::write(&not_json, "hello\n").unwrap();
    let other = dir.path().join("other.ndjson");
    std::fs::write(&other, "{\"type\":\"start\",\"tool\":\"iperf\"}\n").unwrap();
    let v2 = dir.path().join("v2.ndjson");
    std::fs::write(
        &v2,
        "{\"type\":\"start\",\"tool\":\"mux-bw\",\"schema\":2}\n",
    )
    .unwrap();
    for (path, needle) in [
        (not_json, "is not JSON"),
        (other.clone(), "is not mux-bw NDJSON"),
        (v2, "schema 2, this mux-bw reads schema 1"),
        (dir.path().join("missing"), "cannot read"),
    ] {
        let p = path.to_string_lossy().into_owned();
        let out = run(&["compare", &p], LIMIT);
        assert_eq!(out.code, 2, "{p}: {}", out.stderr);
        assert!(out.stderr.contains(needle), "{}", out.stderr);
        assert!(out.stderr.contains(&p), "{}", out.stderr);
        assert_eq!(out.stderr.lines().count(), 1);
    }
}

#[test]
fn plot_draws_a_valid_svg_with_the_failure_marked() {
    let dir = tempfile::tempdir().unwrap();
    let saved = save(
        dir.path(),
        "fail.ndjson",
        &[
            "--link-rate",
            "20mbit",
            "--routes",
            "3",
            "--min-hops",
            "2",
            "--duration",
            "3s",
            "--interval",
            "500ms",
            "--fault",
            "kill:1@1s",
            "--probe-rtt",
            "--omit",
            "500ms",
        ],
    );
    let svg = dir.path().join("fail.svg");
    let svg_path = svg.to_string_lossy().into_owned();
    let out = run(&["plot", &saved, "-o", &svg_path], LIMIT);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let text = std::fs::read_to_string(&svg).unwrap();
    let doc = roxmltree::Document::parse(&text).expect("well-formed SVG");
    assert_eq!(doc.root_element().tag_name().name(), "svg");
    let texts: Vec<String> = doc
        .descendants()
        .filter(|n| n.tag_name().name() == "text")
        .filter_map(|n| n.text().map(|t| t.trim().to_string()))
        .collect();
    for needle in [
        "R1 failed",
        "aggregate",
        "goodput (Mbit/s)",
        "RTT (ms, log scale)",
        "warm-up (omitted)",
        "loaded",
        "idle",
    ] {
        assert!(
            texts.iter().any(|t| t.contains(needle)),
            "no '{needle}' in {texts:?}"
        );
    }
    assert!(texts.iter().any(|t| t.starts_with("R0 via ")), "{texts:?}");
    let lines = doc
        .descendants()
        .filter(|n| n.tag_name().name() == "polyline")
        .count();
    assert!(lines >= 4, "{lines} polylines");
}

/// A saved run whose sample lost a route's `route_index` is refused by `compare` and `plot`,
/// naming the file, the line and the field: read with a default, it would be route 0, the
/// very fallback this tool exists to expose.
#[test]
fn a_saved_run_missing_a_route_index_is_refused_not_read_as_route_0() {
    let dir = tempfile::tempdir().unwrap();
    let saved = save(
        dir.path(),
        "whole.ndjson",
        &["--routes", "2", "--duration", "1s", "--interval", "250ms"],
    );
    let text = std::fs::read_to_string(&saved).unwrap();
    let mut lines: Vec<String> = text.lines().map(String::from).collect();
    let at = lines
        .iter()
        .position(|l| l.contains("\"type\":\"sample\""))
        .expect("a sample");
    let mut sample: serde_json::Value = serde_json::from_str(&lines[at]).unwrap();
    let route = sample["routes"][1]
        .as_object_mut()
        .expect("two routes sampled");
    assert!(route.remove("route_index").is_some());
    lines[at] = sample.to_string();
    let broken = dir.path().join("broken.ndjson");
    std::fs::write(&broken, lines.join("\n") + "\n").unwrap();
    let broken = broken.to_string_lossy().into_owned();

    let svg = dir.path().join("broken.svg");
    let svg_path = svg.to_string_lossy().into_owned();
    for args in [
        vec!["compare", &saved, &broken],
        vec!["plot", &broken, "-o", &svg_path],
    ] {
        let out = run(&args, LIMIT);
        assert_eq!(out.code, 2, "{args:?}: {}{}", out.stdout, out.stderr);
        let want = format!(
            "'{broken}' line {}: sample field `routes[1].route_index`: missing",
            at + 1
        );
        assert!(out.stderr.contains(&want), "{args:?}: {}", out.stderr);
    }
    assert!(!svg.exists(), "plot drew a broken run");
}
