//! Throughput on loopback, all in one run so the ratios are fair: a bare quinn stream (the
//! ceiling) and a bare quinn relay in the same harness, then mux-bw direct, through 1 and 2
//! relays, and with 1, 4, 16, 64 and 256 parallel routes; iperf3 TCP when installed. Prints a
//! table and writes target/bench.json. Client, relays and destination share the machine's cores,
//! so every figure is CPU-bound: compare ratios within one run, not across machines.
//!
//! `cargo bench --bench throughput` runs it (3 s per case after 1 s warm-up, each case in a fresh
//! process so its peak RSS is its own, 5 interleaved rounds, median kept); under `cargo test`
//! it runs as a quick smoke test (one round, 300 ms per case, up to 16 routes).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use mux_bw::client::plan::{self, PlanRequest};
use mux_bw::client::run::{self, RunConfig};
use mux_bw::lab::emulation::Links;
use mux_bw::lab::shaper::{LinkSpec, Rate};
use mux_bw::lab::topology::LinkPlan;
use mux_bw::lab::Lab;
use mux_bw::report::sink::{EventSink, SinkConfig};
use mux_bw::wire::identity::Identity;
use mux_bw::wire::mode::Mode;
use mux_bw::wire::tls;
use mux_bw::wire::transport::{self, Tuning};
use quinn::Endpoint;
use serde_json::json;
use tokio_util::sync::CancellationToken;

const CHUNK: usize = 64 * 1024;

struct Row {
    name: String,
    bps: f64,
    peak_rss_mib: f64,
    /// CPU time (all threads, user + system) per payload byte over the measured window: unlike
    /// throughput, this barely moves with the machine's other load.
    cpu_ns_per_byte: f64,
}

/// One case's result: goodput and the CPU seconds the process spent while it was measured.
struct Measured {
    bps: f64,
    cpu_secs: f64,
    secs: f64,
}

impl Measured {
    fn cpu_ns_per_byte(&self) -> f64 {
        let bytes = self.bps / 8.0 * self.secs;
        if bytes > 0.0 {
            self.cpu_secs * 1e9 / bytes
        } else {
            0.0
        }
    }
}

/// CPU time this process has used so far, all threads, in seconds.
fn cpu_now() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; the clock id is a constant the kernel knows.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime");
    ts.tv_sec as f64 + ts.tv_nsec as f64 / 1e9
}

fn server(tuning: &Tuning) -> (Endpoint, mux_bw::wire::addr::NodeAddr) {
    let id = Identity::ephemeral().expect("identity");
    let ep = transport::endpoint("127.0.0.1:0".parse().expect("addr"), Some(&id), tuning)
        .expect("endpoint");
    let addr = ep.local_addr().expect("bound");
    (ep, mux_bw::wire::addr::NodeAddr { id: id.id, addr })
}

/// Opens an accepted connection's receive window, as a node does once it admitted a route: the
/// accepting side starts with a stranger's 16 KiB (`transport::STRANGER_WINDOW`), which alone
/// held one bare quinn stream to 1.2-4 Gbit/s.
fn open_window(conn: &quinn::Connection) {
    let window = Tuning::default().conn_window;
    conn.set_receive_window(quinn::VarInt::from_u64(window).expect("window fits a varint"));
}

/// Sinks one stream on each of the first `conns` connections; returns their total goodput over
/// `secs` after `warmup`.
async fn sink(ep: Endpoint, conns: usize, warmup: Duration, secs: Duration) -> Measured {
    let total = Arc::new(AtomicU64::new(0));
    let mut readers = tokio::task::JoinSet::new();
    for _ in 0..conns {
        let conn = ep
            .accept()
            .await
            .expect("incoming")
            .await
            .expect("handshake");
        open_window(&conn);
        let total = total.clone();
        readers.spawn(async move {
            let (_send, mut recv) = conn.accept_bi().await.expect("stream");
            while let Ok(Some(c)) = recv.read_chunk(usize::MAX, false).await {
                total.fetch_add(c.bytes.len() as u64, Ordering::Relaxed);
            }
        });
    }
    tokio::time::sleep(warmup).await;
    let (t0, b0, c0) = (Instant::now(), total.load(Ordering::Relaxed), cpu_now());
    tokio::time::sleep(secs).await;
    let (t1, b1, c1) = (Instant::now(), total.load(Ordering::Relaxed), cpu_now());
    readers.abort_all();
    let secs = t1.duration_since(t0).as_secs_f64();
    Measured {
        bps: (b1 - b0) as f64 * 8.0 / secs,
        cpu_secs: c1 - c0,
        secs,
    }
}

async fn blast(ep: &Endpoint, to: &mux_bw::wire::addr::NodeAddr, stop: CancellationToken) {
    let conn = ep
        .connect(to.addr, &tls::server_name(&to.id))
        .expect("connect")
        .await
        .expect("handshake");
    let (mut send, _recv) = conn.open_bi().await.expect("stream");
    let payload = Bytes::from(vec![0u8; CHUNK]);
    loop {
        tokio::select! {
            r = send.write_chunk(payload.clone()) => if r.is_err() { break },
            _ = stop.cancelled() => break,
        }
    }
    conn.close(0u32.into(), b"done");
}

/// The receiving end of a bare case, laid out as the lab lays out its destination: its
/// endpoint and readers on a runtime thread of their own (`lab::DstRuntime`).
fn sink_on(
    dst_rt: &tokio::runtime::Runtime,
    tuning: &Tuning,
    conns: usize,
    warmup: Duration,
    secs: Duration,
) -> (
    tokio::task::JoinHandle<Measured>,
    mux_bw::wire::addr::NodeAddr,
) {
    let _on = dst_rt.enter();
    let (srv, addr) = server(tuning);
    (dst_rt.spawn(sink(srv, conns, warmup, secs)), addr)
}

/// `conns` bare quinn connections (one client endpoint each), one stream each: the ceiling.
async fn bare_direct(
    dst_rt: &tokio::runtime::Runtime,
    conns: usize,
    tuning: &Tuning,
    warmup: Duration,
    secs: Duration,
) -> Measured {
    let stop = CancellationToken::new();
    let (rx, addr) = sink_on(dst_rt, tuning, conns, warmup, secs);
    let mut tx = tokio::task::JoinSet::new();
    for _ in 0..conns {
        let client = transport::client_endpoint(addr.addr, tuning).expect("client");
        let stop = stop.clone();
        tx.spawn(async move { blast(&client, &addr, stop).await });
    }
    let m = rx.await.expect("sink task");
    stop.cancel();
    while tx.join_next().await.is_some() {}
    m
}

/// A bare quinn relay: decrypts and re-encrypts one stream, chunk by chunk.
async fn bare_relay(
    dst_rt: &tokio::runtime::Runtime,
    tuning: &Tuning,
    warmup: Duration,
    secs: Duration,
) -> Measured {
    let (rx, dst) = sink_on(dst_rt, tuning, 1, warmup, secs);
    let (relay_ep, relay) = server(tuning);
    let client = transport::client_endpoint(relay.addr, tuning).expect("client");
    let stop = CancellationToken::new();
    let hop = tokio::spawn({
        let stop = stop.clone();
        async move {
            let up = relay_ep
                .accept()
                .await
                .expect("incoming")
                .await
                .expect("handshake");
            open_window(&up);
            let (_s, mut from) = up.accept_bi().await.expect("stream");
            let down = relay_ep
                .connect(dst.addr, &tls::server_name(&dst.id))
                .expect("connect")
                .await
                .expect("handshake");
            let (mut to, _r) = down.open_bi().await.expect("stream");
            loop {
                tokio::select! {
                    c = from.read_chunk(usize::MAX, true) => match c {
                        Ok(Some(c)) => if to.write_chunk(c.bytes).await.is_err() { break },
                        _ => break,
                    },
                    _ = stop.cancelled() => break,
                }
            }
        }
    });
    let tx = tokio::spawn({
        let stop = stop.clone();
        async move { blast(&client, &relay, stop).await }
    });
    let m = rx.await.expect("sink task");
    stop.cancel();
    let _ = tokio::join!(tx, hop);
    m
}

/// mux-bw itself: a lab and `measure::run`, exactly as `mux-bw lab` does it.
async fn mux(
    routes: usize,
    min_hops: usize,
    tuning: &Tuning,
    link: Option<LinkSpec>,
    warmup: Duration,
    secs: Duration,
) -> Measured {
    let relays = routes * (min_hops - 1);
    let token = b"bench".to_vec();
    let lab = Lab::start(relays, token.clone(), false, *tuning)
        .await
        .expect("lab");
    let plan = plan::plan(&PlanRequest {
        dst: lab.dst,
        pool: lab.relays.clone(),
        routes,
        min_hops,
        pins: BTreeMap::new(),
        allow_overlap: false,
    })
    .expect("plan");
    let cfg = RunConfig {
        dst: lab.dst,
        relays: lab.relays.clone(),
        routes: plan,
        min_hops,
        allow_overlap: false,
        mode: Mode::Up,
        duration: secs,
        omit: warmup,
        interval: Duration::from_secs(1),
        setup_timeout: Duration::from_secs(10),
        io_timeout: Duration::from_secs(30),
        stall_timeout: Duration::from_secs(30),
        probe_rtt: false,
        probe_all: false,
        probe_interval: Duration::from_millis(100),
        token,
        redial: false,
        tuning: *tuning,
        links: link.map(|l| {
            let wired: Arc<dyn mux_bw::client::wiring::PathWiring> = Arc::new(Links::new(
                &LinkPlan::uniform(l, l, lab.relays.len()),
                &lab.relays,
            ));
            wired
        }),
        load_started: CancellationToken::new(),
        warnings: Vec::new(),
        pick: None,
        stripe: None,
    };
    // CPU time over the measured window: the load phase starts when every route is up, then
    // the warm-up is omitted.
    let cpu = tokio::spawn({
        let started = cfg.load_started.clone();
        async move {
            started.cancelled().await;
            tokio::time::sleep(warmup).await;
            let c0 = cpu_now();
            tokio::time::sleep(secs).await;
            cpu_now() - c0
        }
    });
    let sink = SinkConfig {
        quiet: true,
        ..SinkConfig::default()
    };
    let sink = Arc::new(EventSink::new(Instant::now(), &sink).expect("sink"));
    let summary = run::run(&cfg, sink, CancellationToken::new()).await;
    lab.stop().await;
    assert_eq!(
        summary.routes_established, routes,
        "not every route came up"
    );
    Measured {
        bps: summary.aggregate_bps as f64,
        cpu_secs: cpu.await.expect("cpu task"),
        secs: secs.as_secs_f64(),
    }
}

fn iperf3(secs: u64) -> Option<f64> {
    use std::process::{Command, Stdio};
    let probe = std::net::UdpSocket::bind("127.0.0.1:0").ok()?;
    let port = probe.local_addr().ok()?.port().to_string();
    drop(probe);
    let mut server = Command::new("iperf3")
        .args(["-s", "-1", "-B", "127.0.0.1", "-p", &port])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    std::thread::sleep(Duration::from_millis(300));
    let out = Command::new("iperf3")
        .args([
            "-c",
            "127.0.0.1",
            "-p",
            &port,
            "-t",
            &secs.to_string(),
            "-O",
            "1",
            "-J",
        ])
        .output();
    let _ = server.kill();
    let _ = server.wait();
    let v: serde_json::Value = serde_json::from_slice(&out.ok()?.stdout).ok()?;
    v["end"]["sum_received"]["bits_per_second"].as_f64()
}

/// The cases, in order: (name, what to run).
fn cases(full: bool) -> Vec<(String, Case)> {
    let mut v = vec![
        ("bare quinn, direct".to_string(), Case::Bare(1)),
        ("bare quinn, 1 relay".to_string(), Case::BareRelay),
        ("mux-bw direct, 1 route".to_string(), Case::Mux(1, 1)),
        ("mux-bw 1 relay, 1 route".to_string(), Case::Mux(1, 2)),
        ("mux-bw 2 relays, 1 route".to_string(), Case::Mux(1, 3)),
    ];
    let counts: &[usize] = if full { &[4, 16, 64] } else { &[4, 16] };
    for &n in counts {
        v.push((format!("bare quinn, {n} connections"), Case::Bare(n)));
        v.push((format!("mux-bw direct, {n} routes"), Case::Mux(n, 1)));
    }
    if full {
        v.push(("mux-bw direct, 128 routes".to_string(), Case::Mux(128, 1)));
        v.push(("mux-bw direct, 256 routes".to_string(), Case::Mux(256, 1)));
        // The relayed curve: one relay per route.
        for n in [16, 64, 128, 256] {
            v.push((format!("mux-bw 1 relay each, {n} routes"), Case::Mux(n, 2)));
        }
        v.push((
            "mux-bw 1 route, 1gbit x 25ms link".to_string(),
            Case::MuxLink(1_000_000_000, Duration::from_millis(25)),
        ));
    }
    v
}

#[derive(Clone, Copy, Debug)]
enum Case {
    Bare(usize),
    BareRelay,
    Mux(usize, usize),
    /// One direct route over an emulated link of this rate (bits/s) and one-way delay.
    MuxLink(u64, Duration),
}

fn peak_rss_mib() -> f64 {
    let kib: u64 = std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0);
    kib as f64 / 1024.0
}

/// Child mode: runs one case in this fresh process and prints `bps peak_rss_mib`.
fn run_case(case: Case, warmup: Duration, secs: Duration) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let tuning = Tuning::default();
    // The bare cases' receiving end gets a thread of its own, as the lab's destination does.
    let dst_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("destination runtime");
    let m = rt.block_on(async {
        match case {
            Case::Bare(n) => bare_direct(&dst_rt, n, &tuning, warmup, secs).await,
            Case::BareRelay => bare_relay(&dst_rt, &tuning, warmup, secs).await,
            Case::Mux(n, h) => mux(n, h, &tuning, None, warmup, secs).await,
            Case::MuxLink(rate, delay) => {
                let link = LinkSpec {
                    rate: Some(Rate(rate)),
                    delay,
                    loss_pct: 0.0,
                    queue: mux_bw::lab::shaper::QUEUE_TIME,
                };
                // A long path needs time to leave slow start: warm up longer.
                mux(1, 1, &tuning, Some(link), warmup * 2, secs).await
            }
        }
    });
    println!("{} {} {}", m.bps, peak_rss_mib(), m.cpu_ns_per_byte());
}

/// One case's figures from one round.
#[derive(Clone, Copy)]
struct Sample {
    bps: f64,
    rss: f64,
    cpu_ns_per_byte: f64,
}

/// The median of an odd number of rounds (the smoke run has one).
fn median(v: &[f64]) -> f64 {
    mux_bw::report::compare::quantile(v, 0.5)
}

/// The ratios the issue sets targets for, each as (key, numerator case, denominator case).
const RATIOS: &[(&str, &str, &str)] = &[
    (
        "direct_vs_bare_quinn",
        "mux-bw direct, 1 route",
        "bare quinn, direct",
    ),
    (
        "relay_vs_bare_quinn_relay",
        "mux-bw 1 relay, 1 route",
        "bare quinn, 1 relay",
    ),
    (
        "relay_vs_mux_direct",
        "mux-bw 1 relay, 1 route",
        "mux-bw direct, 1 route",
    ),
    (
        "routes64_vs_routes1",
        "mux-bw direct, 64 routes",
        "mux-bw direct, 1 route",
    ),
    (
        "bare64_vs_bare1",
        "bare quinn, 64 connections",
        "bare quinn, direct",
    ),
    (
        "routes64_vs_bare64",
        "mux-bw direct, 64 routes",
        "bare quinn, 64 connections",
    ),
    (
        "relayed256_vs_relayed16",
        "mux-bw 1 relay each, 256 routes",
        "mux-bw 1 relay each, 16 routes",
    ),
];

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let full = args.iter().any(|a| a == "--bench");
    let (warmup, secs) = if full {
        (Duration::from_secs(1), Duration::from_secs(3))
    } else {
        (Duration::from_millis(100), Duration::from_millis(300))
    };
    let all = cases(full);
    if let Some(i) = args.iter().position(|a| a == "--case") {
        let k: usize = args
            .get(i + 1)
            .and_then(|k| k.parse().ok())
            .expect("case index");
        run_case(all[k].1, warmup, secs);
        return;
    }
    // Each case in its own process, so its peak RSS is its own. Rounds interleave the cases, and
    // every ratio is taken within a round (its two cases ran seconds apart) before the median
    // over rounds: other load on the machine drifts by tens of percent over minutes, and a ratio
    // of two medians taken from different moments would carry that drift.
    let rounds = if full { 7 } else { 1 };
    let samples = run_rounds(&all, rounds, full);
    let mut rows: Vec<Row> = all
        .iter()
        .zip(&samples)
        .map(|((name, _), s)| Row {
            name: name.clone(),
            bps: median(&s.iter().map(|s| s.bps).collect::<Vec<_>>()),
            peak_rss_mib: s.iter().map(|s| s.rss).fold(0.0, f64::max),
            cpu_ns_per_byte: median(&s.iter().map(|s| s.cpu_ns_per_byte).collect::<Vec<_>>()),
        })
        .collect();
    if full {
        if let Some(bps) = iperf3(secs.as_secs() + 1) {
            eprintln!("{:<34} {:>6.2} Gbit/s", "iperf3 TCP, loopback", bps / 1e9);
            rows.push(Row {
                name: "iperf3 TCP, loopback".into(),
                bps,
                peak_rss_mib: 0.0,
                cpu_ns_per_byte: 0.0,
            });
        }
    }
    let mut ratios = ratios(&all, &samples);
    if let Some(r) = rows.iter().find(|r| r.name.contains("1gbit x 25ms")) {
        ratios.insert("long_path_vs_link_rate".into(), json!(r.bps / 1e9));
        println!("{:<28} {:>8.2}", "long_path_vs_link_rate", r.bps / 1e9);
    }
    println!(
        "\n{:<34} {:>8} {:>12} {:>14}",
        "case (median over rounds)", "Gbit/s", "CPU ns/B", "peak RSS MiB"
    );
    for r in &rows {
        println!(
            "{:<34} {:>8.2} {:>12.2} {:>14.1}",
            r.name,
            r.bps / 1e9,
            r.cpu_ns_per_byte,
            r.peak_rss_mib
        );
    }
    print_curve(&rows);
    let report = json!({
        "cases": rows.iter().map(|r| json!({
            "case": r.name,
            "bps": r.bps,
            "cpu_ns_per_byte": r.cpu_ns_per_byte,
            "peak_rss_mib": r.peak_rss_mib,
        })).collect::<Vec<_>>(),
        "ratios": ratios,
        "seconds_per_case": secs.as_secs_f64(),
        "rounds": rounds,
    });
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench.json");
    if full {
        match std::fs::write(&path, serde_json::to_string_pretty(&report).expect("json")) {
            Ok(()) => println!("wrote {}", path.display()),
            Err(e) => eprintln!("cannot write {}: {e}", path.display()),
        }
    }
}

/// The route-count curve, direct and through one relay per route, from the table's rows.
fn print_curve(rows: &[Row]) {
    let find = |name: &str| rows.iter().find(|r| r.name == name);
    println!(
        "\n{:>6} {:>14} {:>14} {:>16} {:>16}",
        "routes", "direct Gbit/s", "relayed Gbit/s", "direct MiB/route", "relayed MiB/route"
    );
    for n in [1usize, 16, 64, 128, 256] {
        let (direct, relayed) = if n == 1 {
            (
                "mux-bw direct, 1 route".to_string(),
                "mux-bw 1 relay, 1 route".to_string(),
            )
        } else {
            (
                format!("mux-bw direct, {n} routes"),
                format!("mux-bw 1 relay each, {n} routes"),
            )
        };
        let cell = |r: Option<&Row>| {
            r.map_or(("-".to_string(), "-".to_string()), |r| {
                (
                    format!("{:.2}", r.bps / 1e9),
                    format!("{:.1}", r.peak_rss_mib / n as f64),
                )
            })
        };
        let (d, dm) = cell(find(&direct));
        let (r, rm) = cell(find(&relayed));
        println!("{n:>6} {d:>14} {r:>14} {dm:>16} {rm:>16}");
    }
}

/// Runs every case once per round, each in its own process; the samples per case.
fn run_rounds(all: &[(String, Case)], rounds: usize, full: bool) -> Vec<Vec<Sample>> {
    let exe = std::env::current_exe().expect("own path");
    let mut samples: Vec<Vec<Sample>> = vec![Vec::new(); all.len()];
    for round in 0..rounds {
        // Each round starts two cases later, so no case always runs right after the same one or
        // at the same point of a long stretch of load.
        for k in (0..all.len()).map(|i| (i + round * 2) % all.len()) {
            let name = &all[k].0;
            let mut cmd = std::process::Command::new(&exe);
            cmd.args(["--case", &k.to_string()]);
            if full {
                cmd.arg("--bench");
            }
            let out = cmd.output().expect("case process");
            let text = String::from_utf8_lossy(&out.stdout);
            let mut it = text
                .split_whitespace()
                .map(|v| v.parse::<f64>().unwrap_or(0.0));
            let mut next = || it.next().unwrap_or(0.0);
            let s = Sample {
                bps: next(),
                rss: next(),
                cpu_ns_per_byte: next(),
            };
            assert!(
                out.status.success() && s.bps > 0.0,
                "case '{name}' failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            eprintln!(
                "round {}: {name:<34} {:>6.2} Gbit/s  {:>5.2} CPU ns/B  peak RSS {:>6.1} MiB",
                round + 1,
                s.bps / 1e9,
                s.cpu_ns_per_byte,
                s.rss
            );
            samples[k].push(s);
        }
    }
    samples
}

/// Each ratio of `RATIOS`, taken within each round, printed with its median, min and max.
fn ratios(
    all: &[(String, Case)],
    samples: &[Vec<Sample>],
) -> serde_json::Map<String, serde_json::Value> {
    let case = |name: &str| all.iter().position(|(n, _)| n == name);
    let mut ratios = serde_json::Map::new();
    println!(
        "\n{:<28} {:>8} {:>8} {:>8}   (per-round ratios)",
        "ratio", "median", "min", "max"
    );
    for &(key, a, b) in RATIOS {
        let (Some(a), Some(b)) = (case(a), case(b)) else {
            continue;
        };
        let per_round: Vec<f64> = samples[a]
            .iter()
            .zip(&samples[b])
            .map(|(a, b)| a.bps / b.bps)
            .collect();
        let (lo, hi) = per_round
            .iter()
            .fold((f64::MAX, 0.0f64), |(lo, hi), r| (lo.min(*r), hi.max(*r)));
        let med = median(&per_round);
        println!("{key:<28} {med:>8.2} {lo:>8.2} {hi:>8.2}");
        ratios.insert(
            key.into(),
            json!({"median": med, "min": lo, "max": hi, "per_round": per_round}),
        );
    }
    ratios
}
