//! Measurement truth on real links: network namespaces joined by veth pairs shaped with tbf,
//! mux-bw nodes as real processes inside them, and iperf3 on the same links in the same run as
//! the reference. Needs root and iproute2 (CI has both); elsewhere each test prints
//! "skipped: needs root and iproute2" and passes.

mod common;
mod topology;

use std::process::Stdio;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::summary;
use serde_json::Value;
use topology::{Shape, Topology};

/// One topology at a time: the figures must not compete for the CPU.
static SERIAL: Mutex<()> = Mutex::new(());

fn skip() -> bool {
    match topology::available() {
        Ok(()) => false,
        Err(why) => {
            println!("skipped: needs root and iproute2 ({why})");
            true
        }
    }
}

fn mux_run(topo: &Topology, args: &[&str]) -> Vec<Value> {
    mux_bw(topo, "run", args)
}

/// `mux-bw <command> --json ARGS` in the client's namespace; its events.
fn mux_bw(topo: &Topology, command: &str, args: &[&str]) -> Vec<Value> {
    let out = topo
        .exec(&topo.client, &[common::bin(), command, "--json"])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("mux-bw run");
    assert!(
        out.status.success(),
        "mux-bw {command} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("NDJSON"))
        .collect()
}

fn assert_gone(names: &[String]) {
    let left: Vec<String> = topology::our_namespaces()
        .into_iter()
        .filter(|n| names.contains(n))
        .collect();
    assert!(left.is_empty(), "namespaces left behind: {left:?}");
}

#[test]
fn direct_route_reads_a_50mbit_link_like_iperf3() {
    if skip() || !iperf3_or_skip() {
        return;
    }
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let mut topo = Topology::build(0, Shape { rate: "50mbit" }, &[Shape { rate: "20mbit" }]);
    let names = topo.namespaces();
    let dst_ns = topo.dst.clone();
    let dst_ip = topo.dst_direct_ip.clone();
    let dst = topo.start_node(&dst_ns, "serve", &dst_ip);

    let iperf = topology::iperf3_result(topology::iperf3(&topo, &dst_ns, &dst_ip, 5201, 5));
    let events = mux_run(&topo, &["--to", &dst, "--omit", "1s", "--duration", "5s"]);
    let mux = summary(&events)["aggregate_bps"].as_f64().unwrap();
    println!(
        "direct 50mbit: iperf3 {:.2} Mbit/s, mux-bw {:.2} Mbit/s ({:+.1} %)",
        iperf / 1e6,
        mux / 1e6,
        (mux / iperf - 1.0) * 100.0
    );
    assert!(
        (mux / iperf - 1.0).abs() <= 0.05,
        "mux-bw {mux} vs iperf3 {iperf}"
    );
    assert!(
        (0.90..=1.00).contains(&(mux / 50e6)),
        "mux-bw {mux} on a 50 mbit link"
    );
    drop(topo);
    assert_gone(&names);
}

/// Four relays on uneven tbf links (5, 10, 20, 40 mbit: the lab's uneven example, halved, on kernel
/// links): each route runs at its own relay's rate and the total matches iperf3 over the same
/// four links; `scan` then measures the same relays within 5 % of iperf3 on each link.
#[test]
fn four_uneven_relay_routes_add_up_like_iperf3() {
    if skip() || !iperf3_or_skip() {
        return;
    }
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    const RATES: [&str; 4] = ["5mbit", "10mbit", "20mbit", "40mbit"];
    let shapes = RATES.map(|rate| Shape { rate });
    let mut topo = Topology::build(4, Shape { rate: "100mbit" }, &shapes);
    let names = topo.namespaces();

    // Reference: iperf3 over the four shaped client-side links at once.
    let clients: Vec<_> = (0..4)
        .map(|i| {
            let (ns, ip) = (topo.relays[i].clone(), topo.relay_ips[i].clone());
            topology::iperf3(&topo, &ns, &ip, 5201 + i as u16, 5)
        })
        .collect();
    let per_link: Vec<f64> = clients.into_iter().map(topology::iperf3_result).collect();
    let iperf_total: f64 = per_link.iter().sum();

    let args = four_relayed_routes(&mut topo);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let events = mux_run(&topo, &args);
    let s = summary(&events);
    let mux = s["aggregate_bps"].as_f64().unwrap();
    let routes: Vec<f64> = s["routes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["mean_bps"].as_f64().unwrap())
        .collect();
    let mbit = |v: &[f64]| {
        v.iter()
            .map(|b| (b / 1e5).round() / 10.0)
            .collect::<Vec<_>>()
    };
    println!(
        "5/10/20/40 mbit via relays: iperf3 {:.2} Mbit/s ({:?}), mux-bw {:.2} Mbit/s ({:?}) ({:+.1} %)",
        iperf_total / 1e6,
        mbit(&per_link),
        mux / 1e6,
        mbit(&routes),
        (mux / iperf_total - 1.0) * 100.0
    );
    assert!(
        (mux / iperf_total - 1.0).abs() <= 0.05,
        "mux-bw {mux} vs iperf3 {iperf_total}"
    );
    for (i, (r, link)) in routes.iter().zip(&per_link).enumerate() {
        assert!(
            *r >= 0.9 * link,
            "route {i}: {r} bit/s where iperf3 got {link} on its link"
        );
    }
    scan_agrees_with_iperf3(&topo, &args, &per_link);
    drop(topo);
    assert_gone(&names);
}

/// Starts the destination and the four relays of `topo` and returns the `run` arguments of
/// four routes, one through each relay, 1 s warm-up and 5 s measured.
fn four_relayed_routes(topo: &mut Topology) -> Vec<String> {
    let (dst_ns, dst_ip) = (topo.dst.clone(), topo.dst_backbone_ip.clone());
    let dst = topo.start_node(&dst_ns, "serve", &dst_ip);
    let mut args: Vec<String> = ["--to", &dst, "--routes", "4", "--min-hops", "2"]
        .map(String::from)
        .to_vec();
    args.extend(["--omit", "1s", "--duration", "5s"].map(String::from));
    for i in 0..4 {
        let (ns, ip) = (topo.relays[i].clone(), topo.relay_ips[i].clone());
        let relay = topo.start_node(&ns, "relay", &ip);
        args.extend(["--relay".to_string(), relay]);
    }
    args
}

/// One transfer striped over four relays, each behind a 20 mbit tbf link: it arrives in order
/// within 10 % of the same four routes run unstriped.
#[test]
fn a_striped_transfer_over_four_kernel_links_nears_their_unstriped_sum() {
    if skip() {
        return;
    }
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let shapes = [Shape { rate: "20mbit" }; 4];
    let mut topo = Topology::build(4, Shape { rate: "100mbit" }, &shapes);
    let names = topo.namespaces();
    let args = four_relayed_routes(&mut topo);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let unstriped = summary(&mux_run(&topo, &args))["aggregate_bps"]
        .as_f64()
        .unwrap();
    let striped_args: Vec<&str> = args.iter().copied().chain(["--stripe"]).collect();
    let events = mux_run(&topo, &striped_args);
    let st = &summary(&events)["stripe"];
    let in_order = st["in_order_bps"].as_f64().unwrap();
    println!(
        "4 x 20mbit via relays: unstriped {:.2} Mbit/s, striped in order {:.2} Mbit/s ({:+.1} %), buffer peak {} B",
        unstriped / 1e6,
        in_order / 1e6,
        (in_order / unstriped - 1.0) * 100.0,
        st["buffer_peak_bytes"]
    );
    assert_eq!(
        (&st["corrupt_bytes"], &st["missing_bytes"]),
        (&0.into(), &0.into()),
        "{st}"
    );
    assert!(
        (in_order / unstriped - 1.0).abs() <= 0.10,
        "striped {in_order} vs unstriped {unstriped}"
    );
    drop(topo);
    assert_gone(&names);
}

/// `scan` over the relays of `run_args` (`--to DST ... --relay R ...`), one at a time: each
/// relay's figure within 5 % of iperf3 on its link.
fn scan_agrees_with_iperf3(topo: &Topology, run_args: &[&str], per_link: &[f64]) {
    let mut scan_args: Vec<&str> = vec!["--to", run_args[1], "--duration", "3s"];
    let relays = run_args
        .iter()
        .position(|a| *a == "--relay")
        .unwrap_or(run_args.len());
    scan_args.extend(run_args[relays..].iter().copied());
    let scanned = mux_bw(topo, "scan", &scan_args);
    let rows: Vec<&Value> = scanned
        .iter()
        .filter(|e| e["type"] == "relay_scan")
        .collect();
    assert_eq!(rows.len(), per_link.len() + 1, "direct + relays: {rows:?}");
    for (row, link) in rows[1..].iter().zip(per_link) {
        let bps = row["bps"].as_f64().unwrap();
        println!(
            "scan {}: {:.2} Mbit/s, iperf3 {:.2}",
            row["relay"],
            bps / 1e6,
            link / 1e6
        );
        assert!(
            (bps / link - 1.0).abs() <= 0.05,
            "scan {row} vs iperf3 {link}"
        );
    }
}

#[test]
fn killed_and_frozen_relay_processes_end_in_route_failures() {
    if skip() {
        return;
    }
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let mut topo = Topology::build(3, Shape { rate: "50mbit" }, &[Shape { rate: "20mbit" }]);
    let names = topo.namespaces();
    let (dst_ns, dst_ip) = (topo.dst.clone(), topo.dst_backbone_ip.clone());
    let dst = topo.start_node(&dst_ns, "serve", &dst_ip);
    let mut relays = Vec::new();
    for i in 0..3 {
        let (ns, ip) = (topo.relays[i].clone(), topo.relay_ips[i].clone());
        relays.push(topo.start_node(&ns, "relay", &ip));
    }
    let (kill_pid, stop_pid) = (topo.pid(1), topo.pid(2)); // relays 0 and 1
    let faults = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(2));
        // SAFETY: kill(2) on pids of processes this test started.
        unsafe {
            libc::kill(kill_pid as i32, libc::SIGKILL);
            libc::kill(stop_pid as i32, libc::SIGSTOP);
        }
    });
    let t = Instant::now();
    let events = mux_run(
        &topo,
        &[
            "--to",
            &dst,
            "--relay",
            &relays[0],
            "--relay",
            &relays[1],
            "--relay",
            &relays[2],
            "--routes",
            "3",
            "--min-hops",
            "2",
            "--duration",
            "9s",
            "--io-timeout",
            "3s",
        ],
    );
    faults.join().unwrap();
    let took = t.elapsed();
    // SAFETY: as above; let the frozen relay run so it can be killed cleanly.
    unsafe { libc::kill(stop_pid as i32, libc::SIGCONT) };
    assert!(
        took < Duration::from_secs(14),
        "run took {took:?} for a 9 s duration"
    );
    let failures: Vec<&Value> = events
        .iter()
        .filter(|e| e["type"] == "route_failure")
        .collect();
    assert_eq!(failures.len(), 2, "{failures:?}");
    for f in &failures {
        let idx = f["route_index"].as_u64().unwrap();
        assert!(idx == 0 || idx == 1, "{f}");
        assert!(f["bytes_sent_before_failure"].as_u64().unwrap() > 0, "{f}");
        let elapsed = f["elapsed_ns"].as_u64().unwrap() as f64 / 1e9;
        // Fault at 2 s; a crashed or frozen peer is noticed by the 3 s write deadline at the
        // latest (plus the few seconds the send buffer takes to fill).
        assert!((2.0..9.0).contains(&elapsed), "{f}");
        assert!(
            f["error"].as_str().unwrap().contains("timed out after 3s"),
            "{f}"
        );
    }
    let s = summary(&events);
    assert_eq!(s["routes"][2]["state"], "up", "{s}");
    drop(topo);
    assert_gone(&names);
}

fn iperf3_or_skip() -> bool {
    if topology::have_iperf3() {
        return true;
    }
    println!("skipped: needs iperf3 as the reference");
    false
}

/// `make netns-demo`: the topology, then direct vs 4-route mux on it, with iperf3 beside.
#[test]
#[ignore = "a demo, run by `make netns-demo`"]
fn netns_demo() {
    if skip() {
        return;
    }
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let mut topo = Topology::build(4, Shape { rate: "50mbit" }, &[Shape { rate: "20mbit" }]);
    println!(
        "\ntopology (network namespaces, veth links, tbf on the client side):\n\
         \n  client ──── 50mbit ─────────────────────────── dst {}\n\
         \x20 client ──── 20mbit ── relay i ── unshaped ──── dst {} (i = 0..3)\n",
        topo.dst_direct_ip, topo.dst_backbone_ip
    );
    let (dst_ns, direct_ip, backbone_ip) = (
        topo.dst.clone(),
        topo.dst_direct_ip.clone(),
        topo.dst_backbone_ip.clone(),
    );
    let dst = topo.start_node(&dst_ns, "serve", &direct_ip);
    let dst_via_backbone = dst.replace(&direct_ip, &backbone_ip);
    let mut relays = Vec::new();
    for i in 0..4 {
        let (ns, ip) = (topo.relays[i].clone(), topo.relay_ips[i].clone());
        relays.push(topo.start_node(&ns, "relay", &ip));
    }
    let direct = mux_run(&topo, &["--to", &dst, "--omit", "1s", "--duration", "5s"]);
    let mut args = vec![
        "--to",
        &dst_via_backbone,
        "--routes",
        "4",
        "--min-hops",
        "2",
        "--omit",
        "1s",
        "--duration",
        "5s",
    ];
    for r in &relays {
        args.extend(["--relay", r.as_str()]);
    }
    let mux = mux_run(&topo, &args);
    let rate = |ev: &[Value]| summary(ev)["aggregate_bps"].as_f64().unwrap() / 1e6;
    let (d, m) = (rate(&direct), rate(&mux));
    println!("direct, 1 route              {d:8.2} Mbit/s");
    println!("mux, 4 routes via 4 relays   {m:8.2} Mbit/s");
    println!("\nmux delivered {:.2}x the throughput of direct", m / d);
    if topology::have_iperf3() {
        let i = topology::iperf3_result(topology::iperf3(&topo, &dst_ns, &direct_ip, 5201, 5));
        println!("(iperf3 TCP on the direct link: {:.2} Mbit/s)", i / 1e6);
    }
}
