//! `mux-bw exporter`: probes answer within the scrape's timeout (a long measurement is fitted,
//! a dead path fails in time), probes of one target never overlap, a probe that cannot get
//! its turn says `busy`, the saved run is the measurement that was answered, and bad configs
//! and requests get clear answers.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{http, run, summary, Daemon, NodeProc};
use serde_json::Value;

/// A destination and a relay requiring token `t`.
fn nodes() -> (NodeProc, NodeProc) {
    (
        NodeProc::start("serve", &["--token", "t"]),
        NodeProc::start("relay", &["--token", "t"]),
    )
}

/// Writes `text` as the config and starts an exporter on it with `extra` flags.
fn exporter(dir: &Path, text: &str, extra: &[&str]) -> (Daemon, String) {
    let config = dir.join("exporter.toml");
    std::fs::write(&config, text).unwrap();
    common::exporter(&config, &dir.join("runs"), extra)
}

/// A probe of `target` with Prometheus' timeout header (`None`: without it); the status, the
/// body and how long it took.
fn probe(addr: &str, target: &str, timeout: Option<&str>) -> (u16, String, Duration) {
    let t = Instant::now();
    let headers: Vec<(&str, &str)> = timeout
        .map(|v| ("X-Prometheus-Scrape-Timeout-Seconds", v))
        .into_iter()
        .collect();
    let (status, body) = http(addr, "GET", &format!("/probe?target={target}"), &headers);
    (status, body, t.elapsed())
}

/// The value of the series `name` (labels included) in an exposition.
fn value(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no series {series} in\n{text}"))
}

/// The saved runs of `target`, oldest first: (start in Unix ms, events).
fn saved(dir: &Path, target: &str) -> Vec<(u64, Vec<Value>)> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir.join("runs").join(target))
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    files.sort();
    files
        .iter()
        .map(|p| {
            let ms = p.file_stem().unwrap().to_str().unwrap().parse().unwrap();
            let text = std::fs::read_to_string(p).unwrap();
            let events = text
                .lines()
                .map(|l| serde_json::from_str(l).unwrap())
                .collect();
            (ms, events)
        })
        .collect()
}

/// `[targets.NAME]` through `relay` to `dst` with the run flags in `keys`.
fn target(name: &str, dst: &NodeProc, relay: &str, keys: &str) -> String {
    format!(
        "[targets.{name}]\nto = \"{}\"\nrelays = [\"{relay}\"]\nmin_hops = 2\ntoken = \"t\"\n{keys}\n",
        dst.uri
    )
}

#[test]
fn a_long_measurement_is_fitted_into_the_scrape_and_a_dead_path_fails_in_time() {
    let (dst, relay) = nodes();
    // A relay that answers nothing: the setup can only time out.
    let dead = format!("mbw://{}@127.0.0.1:{}", relay.id(), common::free_port());
    let config = target(
        "long",
        &dst,
        &relay.uri,
        "duration = \"30s\"\nomit = \"1s\"",
    ) + &target("dead", &dst, &dead, "setup_timeout = \"10s\"");
    let dir = tempfile::tempdir().unwrap();
    let (_exp, addr) = exporter(dir.path(), &config, &["--default-timeout", "1500ms"]);

    let (status, body, took) = probe(&addr, "long", Some("2.5"));
    assert_eq!(status, 200, "{body}");
    assert!(took < Duration::from_millis(2500), "took {took:?}");
    assert_eq!(value(&body, "probe_success"), 1.0, "{body}");
    let measured = value(&body, "mux_bw_probe_measured_seconds");
    assert!(measured > 0.2 && measured < 2.0, "{measured}");
    // The answer is the measurement that was saved.
    let runs = saved(dir.path(), "long");
    let s = summary(&runs[0].1);
    let bps = s["aggregate_bps"].as_f64().unwrap();
    assert!(bps > 0.0, "{s}");
    assert_eq!(
        value(&body, "mux_bw_probe_goodput_bytes_per_second"),
        bps / 8.0
    );

    // Without the header, --default-timeout bounds it.
    let (_, body, took) = probe(&addr, "long", None);
    assert!(took < Duration::from_millis(1500), "took {took:?}");
    assert_eq!(value(&body, "probe_success"), 1.0, "{body}");

    let (_, body, took) = probe(&addr, "dead", Some("1.5"));
    assert!(took < Duration::from_millis(1500), "took {took:?}");
    assert_eq!(value(&body, "probe_success"), 0.0, "{body}");
    assert_eq!(
        value(&body, "mux_bw_probe_failed{cause=\"timeout\"}"),
        1.0,
        "{body}"
    );
    assert_eq!(
        value(&body, "mux_bw_probe_routes{state=\"setup_failed\"}"),
        1.0
    );

    // Less time than a measurement needs: a failure that says so, not a noisy figure.
    let (_, body, _) = probe(&addr, "long", Some("0.6"));
    assert_eq!(value(&body, "probe_success"), 0.0, "{body}");
    assert_eq!(value(&body, "mux_bw_probe_failed{cause=\"budget\"}"), 1.0);

    let (_, own) = http(&addr, "GET", "/metrics", &[]);
    let count = |labels: &str| value(&own, &format!("mux_bw_exporter_probes_total{{{labels}}}"));
    assert_eq!(count("target=\"long\",result=\"success\""), 2.0, "{own}");
    assert_eq!(count("target=\"long\",result=\"failure\""), 1.0, "{own}");
    assert_eq!(
        value(
            &own,
            "mux_bw_exporter_probe_failures_total{target=\"dead\",cause=\"timeout\"}"
        ),
        1.0
    );
}

/// Probes of `targets`, all at once, each with Prometheus' `timeout`.
fn at_once(addr: &str, targets: &[&'static str], timeout: &'static str) -> Vec<String> {
    let probes: Vec<_> = targets
        .iter()
        .map(|&t| {
            let addr = addr.to_string();
            std::thread::spawn(move || probe(&addr, t, Some(timeout)).1)
        })
        .collect();
    probes.into_iter().map(|p| p.join().unwrap()).collect()
}

/// The saved runs of `targets` as (start, end) in Unix ms, by start.
fn windows(dir: &Path, targets: &[&str]) -> Vec<(f64, f64)> {
    let mut w: Vec<(f64, f64)> = targets
        .iter()
        .flat_map(|t| saved(dir, t))
        .map(|(ms, events)| {
            let end = summary(&events)["t_ns"].as_f64().unwrap() / 1e6;
            (ms as f64, ms as f64 + end)
        })
        .collect();
    w.sort_by(|x, y| x.0.total_cmp(&y.0));
    w
}

fn assert_apart(w: &[(f64, f64)]) {
    for pair in w.windows(2) {
        assert!(pair[0].1 <= pair[1].0 + 1.0, "overlapping runs {pair:?}");
    }
}

/// Probes of `targets` sent at once all fit, succeed and measure one after another.
fn all_succeed_apart(addr: &str, dir: &Path, targets: &[&'static str]) {
    for answer in at_once(addr, targets, "6") {
        assert_eq!(value(&answer, "probe_success"), 1.0, "{answer}");
    }
    let mut names = targets.to_vec();
    names.dedup();
    let w = windows(dir, &names);
    assert_eq!(w.len(), targets.len());
    assert_apart(&w);
}

#[test]
fn probes_of_one_target_take_turns_and_one_that_cannot_says_busy() {
    let (dst, relay) = nodes();
    let config = target("a", &dst, &relay.uri, "duration = \"1s\"")
        + &target("b", &dst, &relay.uri, "duration = \"1s\"");
    // Room for two probes at once: only the target's own turn keeps two of it apart.
    let dir = tempfile::tempdir().unwrap();
    let (_exp, addr) = exporter(dir.path(), &config, &["--max-concurrent", "2"]);
    all_succeed_apart(&addr, dir.path(), &["a", "a"]);

    // A probe that cannot get its turn before its deadline fails as busy, in time.
    let long = {
        let addr = addr.clone();
        std::thread::spawn(move || probe(&addr, "a", Some("6")))
    };
    std::thread::sleep(Duration::from_millis(300));
    let (_, body, took) = probe(&addr, "a", Some("1.5"));
    assert!(took < Duration::from_millis(1500), "took {took:?}");
    assert_eq!(
        value(&body, "mux_bw_probe_failed{cause=\"busy\"}"),
        1.0,
        "{body}"
    );
    assert_eq!(value(&long.join().unwrap().1, "probe_success"), 1.0);
}

#[test]
fn max_concurrent_1_keeps_probes_of_two_targets_apart() {
    let (dst, relay) = nodes();
    let config = target("a", &dst, &relay.uri, "duration = \"1s\"")
        + &target("b", &dst, &relay.uri, "duration = \"1s\"");
    let dir = tempfile::tempdir().unwrap();
    let (_exp, addr) = exporter(dir.path(), &config, &["--max-concurrent", "1"]);
    all_succeed_apart(&addr, dir.path(), &["a", "b"]);
}

#[test]
fn requests_and_configs_get_clear_answers() {
    let (dst, relay) = nodes();
    let dir = tempfile::tempdir().unwrap();
    let config = target("a", &dst, &relay.uri, "");
    let (_exp, addr) = exporter(dir.path(), &config, &[]);
    let (status, body) = http(&addr, "GET", "/probe?target=nope", &[]);
    assert_eq!(status, 400);
    assert!(
        body.contains("unknown target 'nope'; configured: a"),
        "{body}"
    );
    assert_eq!(http(&addr, "GET", "/probe", &[]).0, 400);
    assert_eq!(http(&addr, "POST", "/probe?target=a", &[]).0, 405);
    assert_eq!(http(&addr, "GET", "/other", &[]).0, 404);
    let (status, page) = http(&addr, "GET", "/", &[]);
    assert_eq!(status, 200);
    assert!(page.contains("  a\n"), "{page}");

    let file = dir.path().join("bad.toml");
    let check = |text: &str| {
        std::fs::write(&file, text).unwrap();
        run(
            &[
                "exporter",
                "--check-config",
                "--config",
                file.to_str().unwrap(),
            ],
            Duration::from_secs(20),
        )
    };
    let out = check(&config);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stderr.contains("1 target(s) ok"), "{}", out.stderr);
    let out = check(&format!("{config}routes = 0\n"));
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert_eq!(out.stderr.lines().count(), 1, "{}", out.stderr);
    assert!(
        out.stderr.contains("target 'a': invalid routes 0"),
        "{}",
        out.stderr
    );
    let missing = run(
        &["exporter", "--config", "/nonexistent/exporter.toml"],
        Duration::from_secs(20),
    );
    assert_eq!(missing.code, 2);
    assert!(
        missing
            .stderr
            .contains("cannot read --config '/nonexistent/exporter.toml'"),
        "{}",
        missing.stderr
    );
}

#[test]
fn a_scraper_that_hangs_up_while_waiting_costs_no_measurement() {
    let (dst, relay) = nodes();
    let config = target("a", &dst, &relay.uri, "duration = \"2s\"");
    let dir = tempfile::tempdir().unwrap();
    let (_exp, addr) = exporter(dir.path(), &config, &[]);
    let first = {
        let addr = addr.clone();
        std::thread::spawn(move || probe(&addr, "a", Some("6")))
    };
    std::thread::sleep(Duration::from_millis(300));
    // A second scrape waits for its turn, then hangs up.
    {
        use std::io::Write;
        let mut s = std::net::TcpStream::connect(&addr).unwrap();
        write!(
            s,
            "GET /probe?target=a HTTP/1.0\r\nX-Prometheus-Scrape-Timeout-Seconds: 20\r\n\r\n"
        )
        .unwrap();
        std::thread::sleep(Duration::from_millis(300));
    }
    assert_eq!(value(&first.join().unwrap().1, "probe_success"), 1.0);
    // Time for a second measurement to have started and saved its first events, had it run.
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(saved_count(dir.path(), "a"), 1);
    let (_, own) = http(&addr, "GET", "/metrics", &[]);
    assert_eq!(
        value(
            &own,
            "mux_bw_exporter_probes_total{target=\"a\",result=\"success\"}"
        ),
        1.0,
        "{own}"
    );
}

/// How many run files `target` has, complete or not.
fn saved_count(dir: &Path, target: &str) -> usize {
    std::fs::read_dir(dir.join("runs").join(target)).map_or(0, |d| d.count())
}

#[test]
fn a_stopping_exporter_answers_the_probes_in_flight() {
    let (dst, relay) = nodes();
    let config = target("a", &dst, &relay.uri, "duration = \"30s\"");
    let dir = tempfile::tempdir().unwrap();
    let (mut exp, addr) = exporter(dir.path(), &config, &[]);
    let in_flight = std::thread::spawn(move || probe(&addr, "a", Some("20")));
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(exp.terminate(Duration::from_secs(10)), Some(0));
    let (status, body, took) = in_flight.join().unwrap();
    assert_eq!(status, 200, "{body}");
    assert!(took < Duration::from_secs(10), "took {took:?}");
    assert_eq!(value(&body, "probe_success"), 0.0, "{body}");
    assert_eq!(value(&body, "mux_bw_probe_failed{cause=\"shutdown\"}"), 1.0);
    let said = exp.wait_stderr("stopped", Duration::from_secs(1));
    assert!(said.contains("stopping\nstopped"), "{said}");
}
