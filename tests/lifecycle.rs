//! Process lifecycle: lab node processes die with their parent even on SIGKILL, nodes drain and
//! exit on SIGTERM (saying so on stderr, and closing their routes with a reason the client
//! sees), and `run` waits with backoff for a node that is still starting.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{bin, run, NodeProc};

/// Child pids of `pid`, from /proc (every thread's children list).
fn children(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    if let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) {
        for t in tasks.flatten() {
            let list = std::fs::read_to_string(t.path().join("children")).unwrap_or_default();
            out.extend(
                list.split_whitespace()
                    .filter_map(|p| p.parse::<u32>().ok()),
            );
        }
    }
    out.sort();
    out.dedup();
    out
}

/// True while `pid` exists and is not a zombie.
fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            let state = stat
                .rsplit(')')
                .next()
                .and_then(|r| r.split_whitespace().next());
            state != Some("Z") && state != Some("X")
        }
        Err(_) => false,
    }
}

#[test]
fn lab_processes_die_with_a_sigkilled_parent() {
    let mut lab = Command::new(bin())
        .args([
            "lab",
            "--processes",
            "--relays",
            "3",
            "--routes",
            "2",
            "--min-hops",
            "2",
            "--duration",
            "60s",
            "--json",
        ])
        .env_remove("MUX_BW_TOKEN")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = lab.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let established = lines
        .by_ref()
        .take(20)
        .map_while(Result::ok)
        .any(|l| l.contains("\"route_established\""));
    let kids = children(lab.id());
    let cleanup = |kids: &[u32]| {
        for k in kids {
            let _ = Command::new("kill").args(["-9", &k.to_string()]).status();
        }
    };
    if !established || kids.len() != 4 {
        let _ = lab.kill();
        cleanup(&kids);
        panic!("lab did not come up: established={established}, children={kids:?}");
    }
    assert!(kids.iter().all(|k| alive(*k)));

    lab.kill().unwrap(); // SIGKILL: no chance to clean up by itself
    lab.wait().unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while kids.iter().any(|k| alive(*k)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let survivors: Vec<u32> = kids.iter().copied().filter(|k| alive(*k)).collect();
    cleanup(&survivors);
    assert!(
        survivors.is_empty(),
        "orphaned node processes: {survivors:?}"
    );
}

#[test]
fn lab_processes_are_stopped_when_the_run_ends() {
    let out = run(
        &[
            "lab",
            "--processes",
            "--relays",
            "2",
            "--routes",
            "2",
            "--min-hops",
            "2",
            "--duration",
            "1s",
            "--json",
        ],
        Duration::from_secs(30),
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stdout.contains("\"summary\""));
}

#[test]
fn nodes_exit_cleanly_on_sigterm() {
    for role in ["serve", "relay"] {
        let node = NodeProc::start(role, &["--drain-timeout", "500ms"]);
        let t = Instant::now();
        let status = Command::new("kill")
            .args(["-TERM", &node.pid().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let code = node.wait_exit(Duration::from_secs(5));
        assert_eq!(code, Some(0), "{role} did not exit cleanly on SIGTERM");
        assert!(
            t.elapsed() < Duration::from_secs(3),
            "{role} took {:?}",
            t.elapsed()
        );
    }
}

#[test]
fn run_waits_for_a_destination_that_is_still_starting() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("dst.key");
    let key = key.to_str().unwrap();
    // Learn the node's id (and a free port) from a first start, then stop it.
    let first = NodeProc::start("serve", &["--identity", key]);
    let uri = first.uri.clone();
    let listen = uri.split('@').nth(1).unwrap().to_string();
    drop(first);

    let client = std::thread::spawn(move || {
        run(
            &[
                "run",
                "--to",
                &uri,
                "--setup-timeout",
                "5s",
                "--duration",
                "1s",
                "--json",
            ],
            Duration::from_secs(30),
        )
    });
    std::thread::sleep(Duration::from_millis(1200));
    let _again = NodeProc::start("serve", &["--identity", key, "--listen", &listen]);
    let out = client.join().unwrap();
    assert_eq!(out.code, 0, "{}", out.stderr);
    let events = out.events();
    let est = common::of_type(&events, "route_established");
    assert_eq!(est.len(), 1);
    assert!(
        est[0]["setup_ns"].as_u64().unwrap() > 1_000_000_000,
        "{}",
        est[0]
    );
}

/// Starts `run --json` with `args` as a process and returns it with its stdout's lines.
fn spawn_run(
    args: &[&str],
) -> (
    std::process::Child,
    std::io::Lines<BufReader<std::process::ChildStdout>>,
) {
    let mut child = Command::new(bin())
        .arg("run")
        .args(args)
        .arg("--json")
        .env_remove("MUX_BW_TOKEN")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let lines = BufReader::new(child.stdout.take().unwrap()).lines();
    (child, lines)
}

/// Reads `lines` until one contains `text`, and returns it; `None` if the stream ends first.
fn read_until(
    lines: &mut impl Iterator<Item = std::io::Result<String>>,
    text: &str,
) -> Option<String> {
    lines.map_while(Result::ok).find(|l| l.contains(text))
}

#[test]
fn a_relay_stopped_mid_run_tells_the_client_it_is_shutting_down() {
    // It was an empty reason ("hop 0 closed the route: ") in 3 of 4 tries.
    for attempt in 0..5 {
        let dst = NodeProc::start("serve", &[]);
        let relay = NodeProc::start("relay", &["--drain-timeout", "200ms"]);
        let (mut client, mut lines) = spawn_run(&[
            "--to",
            &dst.uri,
            "--relay",
            &relay.uri,
            "--min-hops",
            "2",
            "--duration",
            "60s",
            "--interval",
            "100ms",
        ]);
        let up = read_until(&mut lines, "\"route_established\"");
        if up.is_none() {
            let _ = client.kill();
            panic!("attempt {attempt}: no route came up");
        }
        // Under load for a moment, then stop the relay.
        let loaded = read_until(&mut lines, "\"sample\"");
        assert!(loaded.is_some(), "attempt {attempt}: no sample");
        relay.sigterm();
        let failure = read_until(&mut lines, "\"route_failure\"");
        let _ = client.kill();
        let _ = client.wait();
        let failure = failure.unwrap_or_else(|| panic!("attempt {attempt}: no route_failure"));
        let e: serde_json::Value = serde_json::from_str(&failure).unwrap();
        let error = e["error"].as_str().unwrap();
        assert!(
            error.ends_with("shutting down"),
            "attempt {attempt}: reason lost: {failure}"
        );
        assert_eq!(e["cause"], "shutdown", "attempt {attempt}: {failure}");
        assert_eq!(e["failed_hop"], 0, "attempt {attempt}: {failure}");
        assert_eq!(e["node"], relay.id(), "attempt {attempt}: {failure}");
        assert_eq!(relay.wait_exit(Duration::from_secs(5)), Some(0));
    }
}

#[test]
fn nodes_say_when_they_drain_and_when_they_stopped() {
    // A destination with one route running through a relay: each counts the route.
    let dst = NodeProc::start("serve", &["--drain-timeout", "300ms"]);
    let relay = NodeProc::start("relay", &["--drain-timeout", "300ms"]);
    let (mut client, mut lines) = spawn_run(&[
        "--to",
        &dst.uri,
        "--relay",
        &relay.uri,
        "--min-hops",
        "2",
        "--duration",
        "60s",
    ]);
    let up = read_until(&mut lines, "\"route_established\"");
    assert!(up.is_some(), "no route came up");
    dst.sigterm();
    let err = dst.wait_stderr("stopped", Duration::from_secs(5));
    let _ = client.kill();
    let _ = client.wait();
    let lines_of = |err: &str| err.lines().map(str::to_string).collect::<Vec<_>>();
    let dst_lines = lines_of(&err);
    let draining = dst_lines
        .iter()
        .position(|l| l == "draining 1 routes (up to 0.3s)");
    let stopped = dst_lines.iter().position(|l| l == "stopped");
    assert!(
        matches!((draining, stopped), (Some(d), Some(s)) if d < s),
        "destination's stderr: {err}"
    );
    assert_eq!(dst.wait_exit(Duration::from_secs(5)), Some(0));
    // The relay's route ended with the destination: nothing left to drain.
    relay.sigterm();
    let err = relay.wait_stderr("stopped", Duration::from_secs(5));
    let relay_lines = lines_of(&err);
    let draining = relay_lines
        .iter()
        .position(|l| l == "draining 0 routes (up to 0.3s)");
    let stopped = relay_lines.iter().position(|l| l == "stopped");
    assert!(
        matches!((draining, stopped), (Some(d), Some(s)) if d < s),
        "relay's stderr: {err}"
    );
    assert_eq!(relay.wait_exit(Duration::from_secs(5)), Some(0));
}
