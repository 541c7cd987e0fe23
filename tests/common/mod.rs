//! Helpers shared by the integration tests: run the real binary, parse its NDJSON, and own child
//! node processes so none outlives a test.

#![allow(dead_code)] // each test binary uses a different subset

pub mod inproc;

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

/// Path of the binary under test.
pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_mux-bw")
}

/// Result of one bounded run of the binary.
pub struct Output {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Output {
    /// stdout parsed as NDJSON; panics with the offending line if any line is not JSON.
    pub fn events(&self) -> Vec<Value> {
        self.stdout
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON: {l}: {e}")))
            .collect()
    }
}

/// Runs the binary with `args`, killing it after `limit`.
pub fn run(args: &[&str], limit: Duration) -> Output {
    let out = assert_cmd::Command::new(bin())
        .args(args)
        .env_remove("MUX_BW_TOKEN")
        .timeout(limit)
        .output()
        .expect("binary runs");
    Output {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Runs `mux-bw lab --json <args>` and returns its events; the run must exit 0.
pub fn lab_json(args: &[&str], limit: Duration) -> Vec<Value> {
    let mut all = vec!["lab", "--json"];
    all.extend_from_slice(args);
    let out = run(&all, limit);
    assert_eq!(out.code, 0, "stderr: {}", out.stderr);
    out.events()
}

/// Events of one type.
pub fn of_type<'a>(events: &'a [Value], ty: &str) -> Vec<&'a Value> {
    events.iter().filter(|e| e["type"] == ty).collect()
}

/// The run's `summary` event (panics if there is none).
pub fn summary(events: &[Value]) -> &Value {
    events
        .iter()
        .find(|e| e["type"] == "summary")
        .expect("a summary event")
}

/// A node process (`serve` or `relay`) that is killed when dropped.
pub struct NodeProc {
    child: Child,
    /// The URI the node printed.
    pub uri: String,
    /// Everything the node wrote to stderr so far (a thread keeps reading it).
    stderr: Arc<Mutex<String>>,
}

impl NodeProc {
    /// Starts `mux-bw <role> --listen 127.0.0.1:0 <extra..>` (with `--open` unless `extra`
    /// gives a token, and without the default `--listen` when `extra` has one) and waits for
    /// its URI line.
    pub fn start(role: &str, extra: &[&str]) -> NodeProc {
        let open: &[&str] = if extra.contains(&"--token") {
            &[]
        } else {
            &["--open"]
        };
        let listen: &[&str] = if extra.contains(&"--listen") {
            &[]
        } else {
            &["--listen", "127.0.0.1:0"]
        };
        let mut cmd = Command::new(bin());
        cmd.arg(role)
            .args(listen)
            .args(open)
            .args(extra)
            .env_remove("MUX_BW_TOKEN")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        dies_with_us(&mut cmd);
        let mut child = cmd.spawn().expect("node starts");
        let stdout = child.stdout.take().expect("piped stdout");
        let stderr = collect(child.stderr.take().expect("piped stderr"));
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let uri = rx
            .recv_timeout(Duration::from_secs(10))
            .unwrap_or_default()
            .trim()
            .to_string();
        let node = NodeProc { child, uri, stderr };
        assert!(
            node.uri.starts_with("mbw://"),
            "node printed {:?}",
            node.uri
        );
        node
    }

    /// Waits up to `limit` for the process to exit by itself; its exit code.
    pub fn wait_exit(&self, limit: Duration) -> Option<i32> {
        let deadline = std::time::Instant::now() + limit;
        loop {
            // Reading the status through a shared reference: poll /proc instead of try_wait.
            let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id()));
            let zombie = stat
                .as_deref()
                .map(|s| {
                    s.rsplit(')')
                        .next()
                        .and_then(|r| r.split_whitespace().next())
                        == Some("Z")
                })
                .unwrap_or(true);
            if zombie || std::time::Instant::now() > deadline {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let mut status = 0;
        // SAFETY: waitpid on our own child with a valid pointer.
        let r = unsafe { libc::waitpid(self.child.id() as i32, &mut status, libc::WNOHANG) };
        (r > 0 && libc::WIFEXITED(status)).then(|| libc::WEXITSTATUS(status))
    }

    /// What the node wrote to stderr so far.
    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Waits up to `limit` until the node's stderr contains `text`; its stderr either way.
    pub fn wait_stderr(&self, text: &str, limit: Duration) -> String {
        let deadline = Instant::now() + limit;
        loop {
            let err = self.stderr();
            if err.contains(text) || Instant::now() > deadline {
                return err;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The `host:port` of the node's `--metrics` server, as it said on stderr.
    pub fn metrics_addr(&self) -> String {
        let err = self.wait_stderr("/metrics", Duration::from_secs(10));
        err.split("metrics on http://")
            .nth(1)
            .and_then(|r| r.split('/').next())
            .unwrap_or_else(|| panic!("no metrics address in {err:?}"))
            .to_string()
    }

    /// Sends SIGTERM.
    pub fn sigterm(&self) {
        // SAFETY: kill(2) on our own child's pid.
        let r = unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        assert_eq!(r, 0, "kill -TERM {}", self.child.id());
    }

    /// Process id, to read its memory use.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The node id part of the URI.
    pub fn id(&self) -> &str {
        let rest = self.uri.trim_start_matches("mbw://");
        rest.split('@').next().unwrap_or_default()
    }
}

impl Drop for NodeProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Makes `cmd`'s process die with the thread that starts it (PR_SET_PDEATHSIG), so a test
/// killed by its harness leaves no server behind.
pub fn dies_with_us(cmd: &mut Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: prctl is async-signal-safe and touches only the child being started.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// Everything `pipe` says, gathered by a thread of its own.
fn collect(mut pipe: impl Read + Send + 'static) -> Arc<Mutex<String>> {
    let text = Arc::new(Mutex::new(String::new()));
    let sink = text.clone();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n @ 1..) = pipe.read(&mut buf) {
            let part = String::from_utf8_lossy(&buf[..n]);
            sink.lock().unwrap().push_str(&part);
        }
    });
    text
}

/// A long-running child (the exporter, a Prometheus server): its stderr gathered, killed when
/// dropped or when the test's thread ends.
pub struct Daemon {
    child: Child,
    stderr: Arc<Mutex<String>>,
}

impl Daemon {
    /// Starts `program` with `args`, stdout discarded.
    pub fn start(program: &str, args: &[&str]) -> Daemon {
        let mut cmd = Command::new(program);
        cmd.args(args)
            .env_remove("MUX_BW_TOKEN")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        dies_with_us(&mut cmd);
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("{program} starts: {e}"));
        let stderr = collect(child.stderr.take().expect("piped stderr"));
        Daemon { child, stderr }
    }

    /// Waits up to `limit` until stderr contains `text`; stderr either way.
    pub fn wait_stderr(&self, text: &str, limit: Duration) -> String {
        let deadline = Instant::now() + limit;
        loop {
            let err = self.stderr.lock().unwrap().clone();
            if err.contains(text) || Instant::now() > deadline {
                return err;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The `host:port` after `prefix` in stderr (waiting up to 10 s for it).
    pub fn address_after(&self, prefix: &str) -> String {
        let err = self.wait_stderr(prefix, Duration::from_secs(10));
        err.split(prefix)
            .nth(1)
            .and_then(|r| r.split('/').next())
            .map(str::to_string)
            .unwrap_or_else(|| panic!("no address after {prefix:?} in {err}"))
    }
}

impl Daemon {
    /// Sends SIGTERM and waits up to `limit` for the exit; its code, if it exited.
    pub fn terminate(&mut self, limit: Duration) -> Option<i32> {
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `mux-bw exporter` on `config` (127.0.0.1, a port of its choosing), saving runs in `runs`, with
/// `extra` flags; and its address.
pub fn exporter(
    config: &std::path::Path,
    runs: &std::path::Path,
    extra: &[&str],
) -> (Daemon, String) {
    let mut args = vec![
        "exporter",
        "--listen",
        "127.0.0.1:0",
        "--config",
        config.to_str().expect("UTF-8 path"),
        "--save-runs",
        runs.to_str().expect("UTF-8 path"),
    ];
    args.extend_from_slice(extra);
    let d = Daemon::start(bin(), &args);
    let addr = d.address_after("exporter on http://");
    (d, addr)
}

/// One HTTP/1.0 request with extra `headers`; the status code and body.
pub fn http(addr: &str, method: &str, path: &str, headers: &[(&str, &str)]) -> (u16, String) {
    use std::io::Write;
    let mut s = std::net::TcpStream::connect(addr).expect("HTTP server reachable");
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let mut req = format!("{method} {path} HTTP/1.0\r\nHost: {addr}\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let status = out
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = out.split("\r\n\r\n").nth(1).unwrap_or("").to_string();
    (status, body)
}

/// A free TCP port on 127.0.0.1 for a program that cannot be told port 0 (Prometheus).
pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().expect("local address").port()
}
