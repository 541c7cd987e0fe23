//! Output that cannot be written never panics (exit 101) and never ends a run silently: a full
//! stdout (`> /dev/full`) is an error (exit 1) after a run that went on to its end, a closed or
//! full stderr is ignored, a closed stdout pipe (`| head`) ends quietly (tests/engine.rs).

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
