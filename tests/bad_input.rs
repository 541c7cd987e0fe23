//! Bad input never panics: one error line on stderr naming the value, exit code 2. Errors found
//! by clap keep the rest of clap's message (valid values, a "did you mean", the usage line).

mod common;

use std::time::Duration;

use common::{run, NodeProc};

const LIMIT: Duration = Duration::from_secs(20);
const ID: &str = "00112233445566778899aabbccddeeff";

/// Input rejected before anything runs: stderr is the one error line naming the value, and for
/// clap's errors the usage and tips that follow it.
fn assert_usage_error(args: &[&str], needle: &str) {
    let out = run(args, LIMIT);
    assert_eq!(out.code, 2, "{args:?}: stderr {}", out.stderr);
    let first = out.stderr.lines().next().unwrap_or_default();
    assert!(
        first.starts_with("mux-bw: error: "),
        "{args:?}: {}",
        out.stderr
    );
    assert!(
        out.stderr.contains(needle),
        "{args:?}: {} lacks {needle}",
        out.stderr
    );
    let errors = out.stderr.lines().filter(|l| l.contains("error:")).count();
    assert_eq!(errors, 1, "{args:?}: {}", out.stderr);
    let last = out.stderr.lines().last().unwrap_or_default();
    assert!(
        out.stderr.lines().count() == 1 || last == "For more information, try '--help'.",
        "{args:?}: {}",
        out.stderr
    );
}

/// A newcomer's usage errors keep clap's whole message: the missing argument's name, the
/// valid values, the "did you mean", the usage line (it used to be cut to the first line,
/// "the following required arguments were not provided:", naming nothing).
#[test]
fn usage_errors_name_what_is_missing_and_what_would_do() {
    assert_usage_error(&["run"], "--to <NODE>");
    assert_usage_error(&["plot", "x.ndjson"], "--output <OUT.svg>");
    assert_usage_error(&["compare"], "<RUN.ndjson>");
    assert_usage_error(&["sweep"], "--to <NODE>");
    assert_usage_error(
        &["lab", "--route", "2"],
        "a similar argument exists: '--routes'",
    );
    assert_usage_error(
        &["lab", "--mode", "reverse"],
        "[possible values: up, down, bidir, echo]",
    );
}

/// Input found wrong while running: progress lines may precede the one error line, which ends it.
fn assert_exit_2(args: &[&str], needle: &str) -> String {
    let out = run(args, LIMIT);
    assert_eq!(out.code, 2, "{args:?}: stderr {}", out.stderr);
    assert!(!out.stderr.contains("panicked"), "{}", out.stderr);
    let errors: Vec<&str> = out
        .stderr
        .lines()
        .filter(|l| l.starts_with("mux-bw: error"))
        .collect();
    let last = out.stderr.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("mux-bw: error: "),
        "{args:?}: {}",
        out.stderr
    );
    assert!(last.contains(needle), "{args:?}: {last} lacks {needle}");
    assert_eq!(errors.len(), 1, "{args:?}: {}", out.stderr);
    out.stderr
}

#[test]
fn unknown_node_uri_forms() {
    assert_usage_error(&["run", "--to", "127.0.0.1:7600"], "127.0.0.1:7600");
    assert_usage_error(&["run", "--to", "mbw://nothex@127.0.0.1:1"], "nothex");
    let to = format!("mbw://{ID}@127.0.0.1:1");
    assert_usage_error(&["run", "--to", &to, "--relay", "http://x"], "http://x");
}

#[test]
fn too_few_relays_names_the_numbers() {
    assert_usage_error(
        &["lab", "--relays", "5", "--routes", "8", "--min-hops", "2"],
        "--routes 8 --min-hops 2 needs 8 disjoint relays, 5 given",
    );
}

#[test]
fn zero_routes_and_bad_numbers() {
    assert_usage_error(&["lab", "--routes", "0"], "--routes 0");
    assert_usage_error(&["lab", "--routes", "many"], "many");
    assert_usage_error(&["lab", "--min-hops", "0"], "--min-hops 0");
}

#[test]
fn unparsable_durations() {
    for flag in [
        "--duration",
        "--interval",
        "--setup-timeout",
        "--io-timeout",
    ] {
        assert_usage_error(&["lab", flag, "soon"], "soon");
        assert_usage_error(&["lab", flag, "0s"], "0s");
    }
}

#[test]
fn bad_via_and_relays_file() {
    assert_usage_error(
        &["lab", "--routes", "2", "--min-hops", "2", "--via", "7=r1"],
        "7",
    );
    assert_usage_error(
        &["lab", "--routes", "2", "--min-hops", "2", "--via", "1=r99"],
        "r99",
    );
    let to = format!("mbw://{ID}@127.0.0.1:1");
    assert_usage_error(
        &["run", "--to", &to, "--relays-file", "/nonexistent/relays"],
        "/nonexistent/relays",
    );
}

#[test]
fn wrong_pinned_id_is_refused_before_any_data() {
    let dst = NodeProc::start("serve", &[]);
    let addr = dst.uri.split('@').nth(1).unwrap();
    let wrong = format!("mbw://{ID}@{addr}");
    assert_exit_2(
        &["run", "--to", &wrong, "--duration", "1s"],
        "node id mismatch",
    );
    let json = run(
        &["run", "--to", &wrong, "--duration", "1s", "--json"],
        LIMIT,
    );
    assert_eq!(json.code, 2);
    assert!(json
        .events()
        .iter()
        .any(|e| e["type"] == "route_setup_failed"));
}

#[test]
fn version_names_commit_and_protocol() {
    let out = run(&["--version"], LIMIT);
    assert_eq!(out.code, 0);
    let line = out.stdout.trim();
    assert!(line.starts_with("mux-bw 0."), "{line}");
    assert!(
        line.contains("(git ")
            && line.ends_with(&format!(
                ", protocol v{})",
                mux_bw::wire::setup::PROTOCOL_VERSION
            )),
        "{line}"
    );
}

#[test]
fn completions_come_from_the_same_definition() {
    let out = run(&["completions", "bash"], LIMIT);
    assert_eq!(out.code, 0, "{}", out.stderr);
    for flag in ["--min-hops", "--link-rate", "--redial", "--export-markdown"] {
        assert!(
            out.stdout.contains(flag),
            "no {flag} in the bash completion"
        );
    }
    assert_usage_error(&["completions", "tcsh"], "tcsh");
}

/// Runs the binary with `env` set (the shared `run` removes `MUX_BW_TOKEN`).
fn run_with_env(args: &[&str], env: (&str, &str)) -> common::Output {
    let out = assert_cmd::Command::new(common::bin())
        .args(args)
        .env(env.0, env.1)
        .timeout(LIMIT)
        .output()
        .expect("binary runs");
    common::Output {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

#[test]
fn an_empty_token_is_refused_not_taken_for_open() {
    const EMPTY: &str = "invalid --token: empty; expected 1 to 255 bytes";
    let listen = ["--listen", "127.0.0.1:0"];
    for role in ["serve", "relay"] {
        let args = [&[role][..], &listen].concat();
        let out = run_with_env(&args, ("MUX_BW_TOKEN", ""));
        assert_eq!(out.code, 2, "MUX_BW_TOKEN= {role}: {}", out.stderr);
        assert!(out.stdout.is_empty(), "{role} started: {}", out.stdout);
        assert_eq!(out.stderr.trim(), format!("mux-bw: error: {EMPTY}"));
        let args = [&[role, "--token", ""][..], &listen].concat();
        assert_usage_error(&args, EMPTY);
    }
    let to = format!("mbw://{ID}@127.0.0.1:1");
    assert_usage_error(&["run", "--to", &to, "--token", ""], EMPTY);
    assert_usage_error(&["lab", "--token", ""], EMPTY);
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().to_str().unwrap();
    assert_usage_error(&["sweep", "--lab", "--out", out, "--token", ""], EMPTY);
    assert_usage_error(&["sweep", "--to", &to, "--out", out, "--token", ""], EMPTY);
    let long = "t".repeat(256);
    assert_usage_error(&["lab", "--token", &long], "256 bytes; expected 1 to 255");
}

#[test]
fn every_duration_flag_is_bounded() {
    const HUGE: &str = "18446744073709551615s";
    let lab_flags = [
        ("--duration", "7days"),
        ("--omit", "7days"),
        ("--interval", "1h"),
        ("--setup-timeout", "1h"),
        ("--io-timeout", "1h"),
        ("--stall-timeout", "1h"),
        ("--probe-interval", "1h"),
        ("--link-delay", "10s"),
        ("--direct-delay", "10s"),
    ];
    for (flag, max) in lab_flags {
        let args = ["lab", "--probe-rtt", flag, HUGE];
        // `--link-delay` takes one value per relay: `<DUR[,..]>`.
        assert_usage_error(&args, &format!("'{HUGE}' for '{flag} <DUR"));
        assert_usage_error(&args, &format!(" {max}"));
    }
    for (flag, max) in [("--header-timeout", "1m"), ("--drain-timeout", "1h")] {
        let args = ["serve", "--open", flag, "61min"];
        assert_usage_error(&args, &format!("'61min' for '{flag} <DUR>'"));
        assert_usage_error(&args, max);
    }
    // Floors: a sampler or prober this fast measures itself, not the routes.
    assert_usage_error(
        &["lab", "--interval", "1ns"],
        "'1ns' for '--interval <DUR>': expected a duration from 10ms to 1h",
    );
    assert_usage_error(
        &["lab", "--probe-rtt", "--probe-interval", "999us"],
        "expected a duration from 1ms to 1h",
    );
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().to_str().unwrap();
    assert_usage_error(&["sweep", "--lab", "--out", out, "--duration", HUGE], HUGE);
}

#[test]
fn route_and_relay_counts_are_capped() {
    let to = format!("mbw://{ID}@127.0.0.1:1");
    let over = "100000 routes is above the limit of 1024";
    assert_usage_error(&["lab", "--routes", "100000"], over);
    assert_usage_error(&["run", "--to", &to, "--routes", "100000"], over);
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().to_str().unwrap();
    assert_usage_error(
        &["sweep", "--lab", "--out", out, "--routes", "1,100000"],
        over,
    );
    assert_usage_error(
        &["lab", "--relays", "1025"],
        "1025 relays is above the limit of 1024",
    );
    assert_usage_error(
        &["sweep", "--lab", "--out", out, "--lab-relays", "5000"],
        "5000 relays",
    );
    assert_usage_error(
        &[
            "sweep",
            "--lab",
            "--out",
            out,
            "--routes",
            "1024",
            "--min-hops",
            "3",
        ],
        "--routes 1024 --min-hops 3 needs 2048 relays, above the limit of 1024",
    );
}

#[test]
fn endless_input_files_are_refused_at_a_limit() {
    let to = format!("mbw://{ID}@127.0.0.1:1");
    assert_usage_error(
        &["run", "--to", &to, "--relays-file", "/dev/zero"],
        "relays file '/dev/zero': larger than 4 MiB",
    );
    assert_usage_error(
        &["serve", "--open", "--identity", "/dev/zero"],
        "identity file '/dev/zero' is larger than 64 KiB",
    );
    assert_usage_error(&["compare", "/dev/zero"], "'/dev/zero' has a line that");
    let dir = tempfile::tempdir().unwrap();
    let svg = dir.path().join("x.svg");
    assert_usage_error(
        &["plot", "/dev/zero", "-o", svg.to_str().unwrap()],
        "larger than 16 MiB",
    );
}

#[test]
fn identity_and_node_file_errors_are_bad_input() {
    let keys = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/keys");
    let rsa = format!("{keys}/rsa2048-pkcs8.pem");
    assert_usage_error(
        &["serve", "--open", "--identity", &rsa],
        "holds an RSA private key (PKCS#8); expected an unencrypted PKCS#8 PEM private key",
    );
    let sec1 = format!("{keys}/p256-sec1.pem");
    assert_usage_error(
        &["relay", "--open", "--identity", &sec1],
        "holds an EC private key in SEC1 form",
    );
    assert_usage_error(
        &["serve", "--open", "--identity", "/nonexistent/dir/node.key"],
        "identity file '/nonexistent/dir/node.key'",
    );
    let listen = ["--listen", "127.0.0.1:0"];
    let args = [
        &["serve", "--open", "--node-file", "/nonexistent/dir/uri"][..],
        &listen,
    ]
    .concat();
    assert_exit_2(&args, "cannot write node file '/nonexistent/dir/uri'");
}

#[test]
fn a_relay_is_never_asked_to_cross_ip_versions() {
    let relay = "ffeeddccbbaa99887766554433221100";
    let to = format!("mbw://{ID}@[::1]:1");
    let via = format!("mbw://{relay}@127.0.0.1:2");
    assert_usage_error(
        &["run", "--to", &to, "--relay", &via, "--min-hops", "2"],
        &format!("relay {relay} at 127.0.0.1:2 (IPv4) cannot forward to {ID} at [::1]:1 (IPv6)"),
    );
}

/// `MUX_BW_TOKEN` exported in the shell used to make `serve --open` fail with "--open cannot be
/// used with --token", though no `--token` was typed: an explicit `--open` wins over the
/// environment, and says so. A typed `--token` with `--open` is still refused.
#[test]
fn open_wins_over_a_token_from_the_environment() {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};
    let mut node = Command::new(common::bin())
        .args(["serve", "--open", "--listen", "127.0.0.1:0"])
        .env("MUX_BW_TOKEN", "from-the-shell")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut uri = String::new();
    BufReader::new(node.stdout.take().unwrap())
        .read_line(&mut uri)
        .unwrap();
    let _ = node.kill();
    let out = node.wait_with_output().unwrap();
    assert!(uri.starts_with("mbw://"), "printed {uri:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--open given: ignoring MUX_BW_TOKEN"),
        "{stderr}"
    );
    assert_usage_error(
        &["serve", "--open", "--token", "t"],
        "--open accepts anyone",
    );
}
