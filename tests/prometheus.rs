//! A real Prometheus server (Debian's `prometheus` package; skipped with a reason when it is
//! missing) scrapes a destination's and a relay's `/metrics`, the exporter's own `/metrics`, and
//! probes through the exporter, relabelled as blackbox_exporter users do. Then, through
//! Prometheus' HTTP API: every target is up with no scrape error, a probe's goodput is the
//! same measurement's NDJSON summary, the relay's forwarded-bytes counter grew by at least what
//! the probed route carried, and a probe whose relay was killed reads `probe_success 0` with
//! the cause in the exporter's failure counter. `promtool check metrics` lints every exposition.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{http, summary, Daemon, NodeProc};
use serde_json::Value;

/// How long Prometheus may take to start and to scrape each probe target twice.
const SCRAPES: Duration = Duration::from_secs(60);

fn installed(program: &str) -> bool {
    Command::new(program)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// A node with `--metrics` on a port of its choosing, and that metrics address.
fn node(role: &str) -> (NodeProc, String) {
    let n = NodeProc::start(role, &["--token", "t", "--metrics", "127.0.0.1:0"]);
    let addr = n.metrics_addr();
    (n, addr)
}

/// `s` percent-encoded for a query string.
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Prometheus' HTTP API: the `data` of `/api/v1/<path>`.
fn api(prom: &str, path: &str) -> Value {
    let (status, body) = http(prom, "GET", &format!("/api/v1/{path}"), &[]);
    let v: Value = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{path}: {e}: {body}"));
    assert_eq!(
        (status, &v["status"]),
        (200, &"success".into()),
        "{path}: {body}"
    );
    v["data"].clone()
}

/// The result vector or matrix of a PromQL query.
fn query(prom: &str, q: &str) -> Vec<Value> {
    let data = api(prom, &format!("query?query={}", encode(q)));
    data["result"].as_array().cloned().unwrap_or_default()
}

fn num(v: &Value) -> f64 {
    v.as_str()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not a sample value: {v}"))
}

/// Samples of a range query's one series: (unix seconds, value).
fn samples(prom: &str, q: &str) -> Vec<(f64, f64)> {
    let series = query(prom, q);
    assert_eq!(series.len(), 1, "{q}: {series:?}");
    series[0]["values"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p[0].as_f64().unwrap(), num(&p[1])))
        .collect()
}

/// Waits until `done` holds, up to `SCRAPES`.
fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let t = Instant::now();
    while !done() {
        assert!(t.elapsed() < SCRAPES, "waited {SCRAPES:?} for {what}");
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// The saved runs of `target`: (start in Unix ms, events).
fn saved(dir: &Path, target: &str) -> Vec<(u64, Vec<Value>)> {
    let mut out: Vec<(u64, Vec<Value>)> = std::fs::read_dir(dir.join(target))
        .map(|d| d.flatten().map(|e| e.path()).collect::<Vec<_>>())
        .unwrap_or_default()
        .iter()
        .filter_map(|p| {
            let ms = p.file_stem()?.to_str()?.parse().ok()?;
            let text = std::fs::read_to_string(p).ok()?;
            let events: Option<Vec<Value>> =
                text.lines().map(|l| serde_json::from_str(l).ok()).collect();
            let events = events?;
            events
                .iter()
                .any(|e| e["type"] == "summary")
                .then_some((ms, events))
        })
        .collect();
    out.sort_by_key(|r| r.0);
    out
}

/// `promtool check metrics` on what `addr` serves at `path`: nothing but the notes its
/// classic-format linter gives every OpenMetrics counter (`X_total no help text`).
fn promtool_clean(addr: &str, path: &str, headers: &[(&str, &str)]) {
    let (status, body) = http(addr, "GET", path, headers);
    assert_eq!(status, 200, "{path}: {body}");
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool runs");
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(body.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout) + String::from_utf8_lossy(&out.stderr);
    let lint: Vec<&str> = text
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.ends_with("_total no help text"))
        .collect();
    assert!(
        lint.is_empty(),
        "promtool on {addr}{path}: {lint:?}\n{body}"
    );
}

/// prometheus.yml: the nodes and the exporter every second; the probes every 2 s with a 2 s
/// timeout, each target's name turned into `?target=` and `instance` by relabeling.
fn prometheus_yml(nodes: &[&str], exporter: &str, probes: &[&str]) -> String {
    let list = |xs: &[&str]| {
        xs.iter()
            .map(|x| format!("'{x}'"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    format!(
        "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n\
         scrape_configs:\n\
         \x20 - job_name: nodes\n    static_configs: [{{targets: [{}]}}]\n\
         \x20 - job_name: exporter\n    static_configs: [{{targets: ['{exporter}']}}]\n\
         \x20 - job_name: probe\n    scrape_interval: 2s\n    scrape_timeout: 2s\n    metrics_path: /probe\n\
         \x20   static_configs: [{{targets: [{}]}}]\n\
         \x20   relabel_configs:\n\
         \x20     - source_labels: [__address__]\n        target_label: __param_target\n\
         \x20     - source_labels: [__param_target]\n        target_label: instance\n\
         \x20     - target_label: __address__\n        replacement: '{exporter}'\n",
        list(nodes),
        list(probes)
    )
}

/// Everything one test runs: two nodes with `--metrics`, an exporter with a target through the
/// relay and one through a relay killed before it starts, and a Prometheus scraping them all.
struct Fleet {
    relay_metrics: String,
    metrics: Vec<String>,
    exporter: String,
    prometheus: String,
    runs: std::path::PathBuf,
    _procs: (NodeProc, NodeProc, Daemon, Daemon),
    _dir: tempfile::TempDir,
}

impl Fleet {
    fn start() -> Fleet {
        let dir = tempfile::tempdir().unwrap();
        let (dst, dst_metrics) = node("serve");
        let (relay, relay_metrics) = node("relay");
        let doomed = NodeProc::start("relay", &["--token", "t"]);
        let doomed_uri = doomed.uri.clone();
        drop(doomed);
        let target = |name: &str, relay: &str, extra: &str| {
            format!(
                "[targets.{name}]\nto = \"{}\"\nrelays = [\"{relay}\"]\nmin_hops = 2\n{extra}\n",
                dst.uri
            )
        };
        let config = dir.path().join("exporter.toml");
        let text = "[defaults]\ntoken = \"t\"\nduration = \"10s\"\nprobe_rtt = true\n\n"
            .to_string()
            + &target("via-relay", &relay.uri, "")
            + &target("dead", &doomed_uri, "setup_timeout = \"10s\"");
        std::fs::write(&config, text).unwrap();
        let runs = dir.path().join("runs");
        let (exporter, exp) = common::exporter(
            &config,
            &runs,
            &["--max-concurrent", "2", "--timeout-offset", "200ms"],
        );
        let (server, prom) = prometheus(
            dir.path(),
            &prometheus_yml(
                &[&dst_metrics, &relay_metrics],
                &exp,
                &["via-relay", "dead"],
            ),
        );
        Fleet {
            metrics: vec![dst_metrics, relay_metrics.clone()],
            relay_metrics,
            exporter: exp,
            prometheus: prom,
            runs,
            _procs: (dst, relay, exporter, server),
            _dir: dir,
        }
    }
}

/// A Prometheus server on `yml`, ready; and its address.
fn prometheus(dir: &Path, yml: &str) -> (Daemon, String) {
    let config = dir.join("prometheus.yml");
    std::fs::write(&config, yml).unwrap();
    let prom = format!("127.0.0.1:{}", common::free_port());
    let server = Daemon::start(
        "prometheus",
        &[
            &format!("--config.file={}", config.display()),
            &format!("--storage.tsdb.path={}", dir.join("data").display()),
            &format!("--web.listen-address={prom}"),
        ],
    );
    let log = server.wait_stderr("Server is ready to receive web requests", SCRAPES);
    assert!(
        log.contains("Server is ready"),
        "prometheus did not start:\n{log}"
    );
    (server, prom)
}

#[test]
fn a_real_prometheus_scrapes_nodes_and_probes() {
    if !installed("prometheus") || !installed("promtool") {
        eprintln!("skipped: no prometheus/promtool binary (Debian: apt-get install prometheus)");
        return;
    }
    let fleet = Fleet::start();
    let prom = &fleet.prometheus;
    wait_for("two scrapes of each probe target", || {
        let counts = query(prom, "count_over_time(probe_success{job=\"probe\"}[5m])");
        counts.len() == 2 && counts.iter().all(|c| num(&c["value"][1]) >= 2.0)
    });
    every_target_is_up(prom);
    let measured = saved(&fleet.runs, "via-relay");
    goodput_is_the_saved_summary(prom, &measured);
    relay_counted_what_the_route_carried(prom, &fleet.relay_metrics, &measured);
    dead_probe_failed_with_its_cause(prom);
    for addr in fleet.metrics.iter().chain([&fleet.exporter]) {
        promtool_clean(addr, "/metrics", &[]);
    }
    let timeout = [("X-Prometheus-Scrape-Timeout-Seconds", "2")];
    promtool_clean(&fleet.exporter, "/probe?target=via-relay", &timeout);
    promtool_clean(&fleet.exporter, "/probe?target=dead", &timeout);
}

/// Every target up, no scrape error, in both views.
fn every_target_is_up(prom: &str) {
    let up = query(prom, "up");
    assert_eq!(up.len(), 5, "{up:?}");
    for t in &up {
        assert_eq!(num(&t["value"][1]), 1.0, "{t}");
    }
    let targets = api(prom, "targets");
    for t in targets["activeTargets"].as_array().unwrap() {
        assert_eq!(t["health"], "up", "{t}");
        assert_eq!(t["lastError"], "", "{t}");
    }
}

/// The probe's goodput is the saved run's summary: each stored sample against the run that
/// started right after its scrape did.
fn goodput_is_the_saved_summary(prom: &str, measured: &[(u64, Vec<Value>)]) {
    let goodput = samples(
        prom,
        "mux_bw_probe_goodput_bytes_per_second{instance=\"via-relay\"}[5m]",
    );
    let mut matched = 0;
    for (ts, value) in &goodput {
        let start = (ts * 1000.0) as u64;
        let Some((_, events)) = measured
            .iter()
            .find(|(ms, _)| (start..start + 2000).contains(ms))
        else {
            continue;
        };
        let bps = summary(events)["aggregate_bps"].as_f64().unwrap();
        assert!(bps > 0.0);
        let ratio = value * 8.0 / bps;
        assert!(
            (0.9..=1.1).contains(&ratio),
            "Prometheus {value} B/s, NDJSON {bps} bit/s"
        );
        matched += 1;
    }
    eprintln!(
        "{matched} of {} stored probes matched their saved run",
        goodput.len()
    );
    assert!(
        matched >= 1,
        "no stored probe matched a saved run: {goodput:?}"
    );
}

/// The relay's counter grew by at least what the route carried over one probe: its value
/// from before that run started to after it ended.
fn relay_counted_what_the_route_carried(prom: &str, relay: &str, measured: &[(u64, Vec<Value>)]) {
    let (start_ms, events) = measured.last().unwrap();
    let s = summary(events);
    let carried = s["routes"][0]["bytes_sent"].as_f64().unwrap();
    let start = *start_ms as f64 / 1000.0;
    let end = start + s["t_ns"].as_f64().unwrap() / 1e9;
    let forwarded = format!(
        "mux_bw_route_payload_bytes_total{{instance=\"{relay}\",direction=\"to_destination\"}}[5m]"
    );
    let mut grew = None;
    wait_for("a relay scrape after the probed run", || {
        let counter = samples(prom, &forwarded);
        let before = counter.iter().rev().find(|(t, _)| *t < start);
        let after = counter.iter().find(|(t, _)| *t > end);
        grew = before.zip(after).map(|(b, a)| a.1 - b.1);
        grew.is_some()
    });
    let grew = grew.unwrap();
    eprintln!("relay forwarded {grew} B over a run whose route carried {carried} B");
    assert!(
        carried > 0.0 && grew >= carried,
        "relay forwarded {grew}, route carried {carried}"
    );
}

/// The probe through the killed relay: failed, with its cause counted.
fn dead_probe_failed_with_its_cause(prom: &str) {
    let dead = query(prom, "probe_success{instance=\"dead\"}");
    assert_eq!(num(&dead[0]["value"][1]), 0.0, "{dead:?}");
    let failures = query(
        prom,
        "mux_bw_exporter_probe_failures_total{target=\"dead\"} > 0",
    );
    let causes: Vec<&str> = failures
        .iter()
        .filter_map(|f| f["metric"]["cause"].as_str())
        .collect();
    assert!(
        causes
            .iter()
            .any(|c| ["timeout", "unreachable"].contains(c)),
        "{failures:?}"
    );
    let ok = query(
        prom,
        "mux_bw_exporter_probes_total{target=\"via-relay\",result=\"success\"}",
    );
    assert!(num(&ok[0]["value"][1]) >= 2.0, "{ok:?}");
}

/// The ```yaml blocks of docs/DEPLOY.md: the Prometheus configuration, then the alert rules.
fn deploy_yaml() -> Vec<String> {
    let text =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/DEPLOY.md"))
            .unwrap();
    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    for line in text.lines() {
        match (&mut current, line.trim()) {
            (None, "```yaml") => current = Some(String::new()),
            (Some(_), "```") => blocks.extend(current.take()),
            (Some(b), _) => {
                b.push_str(line);
                b.push('\n');
            }
            (None, _) => {}
        }
    }
    blocks
}

#[test]
fn the_deploy_guides_configuration_and_alert_rules_pass_promtool() {
    if !installed("promtool") {
        eprintln!("skipped: no promtool binary (Debian: apt-get install prometheus)");
        return;
    }
    let blocks = deploy_yaml();
    assert_eq!(blocks.len(), 2, "{blocks:?}");
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("prometheus.yml");
    std::fs::write(&config, &blocks[0]).unwrap();
    std::fs::write(dir.path().join("mux-bw-alerts.yml"), &blocks[1]).unwrap();
    // `check config` also checks the rule file it names.
    let out = Command::new("promtool")
        .args(["check", "config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
