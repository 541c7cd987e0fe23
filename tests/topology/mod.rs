//! A throwaway network of Linux network namespaces for measurement-truth tests.
//!
//! Topology (addresses from the benchmarking range 198.18.0.0/15, no default route anywhere,
//! nothing in the root namespace, so no test packet can leave the machine):
//!
//! ```text
//!            198.18.1.0/30 (direct, shaped at the client)
//!   client ───────────────────────────────────────────── dst
//!     │  198.18.2i.0/30 (client side of relay i, shaped)    │ br0 198.18.100.1/24
//!     ├──────── relay i ─────────── 198.18.100.(10+i)/24 ───┘ (unshaped backbone)
//! ```
//!
//! Every namespace and process carries the test process id in its name, so concurrent runs do
//! not collide and leftovers of a killed run are found and removed by the next one.

#![allow(dead_code)] // each test binary uses a different subset

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

const PREFIX: &str = "mbwt";

/// Whether this machine can build the topology: root, `ip`, `tc`, and netns support.
pub fn available() -> Result<(), String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Err("needs root".into());
    }
    for tool in ["ip", "tc"] {
        let ok = Command::new(tool)
            .arg("-V")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            return Err(format!("needs iproute2 ({tool} not found)"));
        }
    }
    let probe = format!("{PREFIX}probe{}", std::process::id());
    if !quiet(&["ip", "netns", "add", &probe]) {
        return Err("cannot create network namespaces".into());
    }
    quiet(&["ip", "netns", "del", &probe]);
    Ok(())
}

/// Whether `iperf3` is installed.
pub fn have_iperf3() -> bool {
    Command::new("iperf3")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn quiet(args: &[&str]) -> bool {
    Command::new(args[0])
        .args(&args[1..])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn must(args: &[&str]) {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .expect("spawn");
    assert!(
        out.status.success(),
        "{}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Our namespaces currently present.
pub fn our_namespaces() -> Vec<String> {
    let out = Command::new("ip").args(["netns", "list"]).output();
    let text = out
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    text.lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| n.starts_with(PREFIX))
        .map(str::to_string)
        .collect()
}

/// Removes namespaces left by test processes that no longer exist (e.g. after Ctrl-C).
fn sweep_stale() {
    for ns in our_namespaces() {
        let pid: Option<u32> = ns
            .trim_start_matches(PREFIX)
            .split('x')
            .next()
            .and_then(|p| p.parse().ok());
        if let Some(pid) = pid {
            if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
                quiet(&["ip", "netns", "del", &ns]);
            }
        }
    }
}

/// `ip -n NS ARGS..`, which must succeed.
fn ip(ns: &str, args: &[&str]) {
    must(&[&["ip", "-n", ns][..], args].concat());
}

/// Link shaping with tbf on the client's side of a link.
#[derive(Clone, Copy, Debug)]
pub struct Shape {
    /// e.g. "20mbit".
    pub rate: &'static str,
}

/// The namespaces, links and processes of one test; all removed on drop.
pub struct Topology {
    /// Namespace of the client.
    pub client: String,
    /// Namespace of the destination.
    pub dst: String,
    /// Namespaces of the relays.
    pub relays: Vec<String>,
    /// The destination's address on the direct link.
    pub dst_direct_ip: String,
    /// The destination's backbone address (reached by relays).
    pub dst_backbone_ip: String,
    /// Each relay's address on its client-side link.
    pub relay_ips: Vec<String>,
    procs: Vec<Child>,
}

static SEQ: AtomicU32 = AtomicU32::new(0);

impl Topology {
    /// Builds client, destination and `relays` relays; shapes the direct link with `direct`
    /// and each relay's client-side link with `relay_links` (one for all, or one per relay).
    pub fn build(relays: usize, direct: Shape, relay_links: &[Shape]) -> Topology {
        assert!(
            relay_links.len() == 1 || relay_links.len() == relays,
            "one relay shape, or one per relay"
        );
        sweep_stale();
        let tag = format!(
            "{PREFIX}{}x{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        );
        let ns = |role: &str| format!("{tag}{role}");
        let mut topo = Topology {
            client: ns("c"),
            dst: ns("d"),
            relays: (0..relays).map(|i| ns(&format!("r{i}"))).collect(),
            dst_direct_ip: "198.18.1.2".into(),
            dst_backbone_ip: "198.18.100.1".into(),
            relay_ips: (0..relays)
                .map(|i| format!("198.18.{}.2", 20 + i))
                .collect(),
            procs: Vec::new(),
        };
        topo.add_namespaces();
        // Direct link client <-> destination.
        veth(
            &topo.client,
            "direct",
            "198.18.1.1/30",
            &topo.dst,
            "direct",
            "198.18.1.2/30",
        );
        shape(&topo.client, "direct", direct);
        topo.add_backbone();
        for i in 0..relays {
            topo.add_relay(i, relay_links[i.min(relay_links.len() - 1)]);
        }
        // The client reaches the destination's backbone address only over the direct link
        // (a host route, not a default route), for runs that name that address.
        ip(
            &topo.client,
            &["route", "add", "198.18.100.1/32", "via", "198.18.1.2"],
        );
        topo.procs.reserve(relays + 1);
        topo
    }

    /// Every namespace of the topology, each with its loopback up.
    fn add_namespaces(&self) {
        let all = [&self.client, &self.dst].into_iter().chain(&self.relays);
        for n in all {
            must(&["ip", "netns", "add", n]);
            ip(n, &["link", "set", "lo", "up"]);
        }
    }

    /// The backbone: a bridge in the destination namespace that every relay joins.
    fn add_backbone(&self) {
        ip(&self.dst, &["link", "add", "br0", "type", "bridge"]);
        ip(&self.dst, &["addr", "add", "198.18.100.1/24", "dev", "br0"]);
        ip(&self.dst, &["link", "set", "br0", "up"]);
    }

    /// Relay `i`: a shaped link from the client, and a veth whose peer joins the backbone.
    fn add_relay(&self, i: usize, link: Shape) {
        let (r, net) = (&self.relays[i], 20 + i);
        veth(
            &self.client,
            &format!("r{i}"),
            &format!("198.18.{net}.1/30"),
            r,
            "client",
            &format!("198.18.{net}.2/30"),
        );
        shape(&self.client, &format!("r{i}"), link);
        let peer = format!("bb{i}");
        let link_args = ["link", "add", "bb", "type", "veth", "peer", "name"];
        ip(r, &[&link_args[..], &[&peer, "netns", &self.dst]].concat());
        let addr = format!("198.18.100.{}/24", 10 + i);
        ip(r, &["addr", "add", &addr, "dev", "bb"]);
        ip(r, &["link", "set", "bb", "up"]);
        ip(&self.dst, &["link", "set", &peer, "master", "br0"]);
        ip(&self.dst, &["link", "set", &peer, "up"]);
    }

    /// Starts `mux-bw <role> --open` in `ns`; returns its URI with `ip` as host.
    pub fn start_node(&mut self, ns: &str, role: &str, ip: &str) -> String {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", ns, super::common::bin(), role])
            .args(["--listen", "0.0.0.0:0", "--open"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        mux_bw::lab::die_with_parent(&mut cmd);
        let mut child = cmd.spawn().expect("start node");
        let mut line = String::new();
        let stdout = child.stdout.take().expect("piped");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let uri = rx.recv_timeout(Duration::from_secs(10)).unwrap_or_default();
        self.procs.push(child);
        let uri = uri.trim();
        let (head, host) = uri
            .split_once('@')
            .unwrap_or_else(|| panic!("node printed {uri:?}"));
        let port = host.rsplit(':').next().expect("port");
        format!("{head}@{ip}:{port}")
    }

    /// Process id of the `k`-th node started (in start order).
    pub fn pid(&self, k: usize) -> u32 {
        self.procs[k].id()
    }

    /// Runs a command in namespace `ns`, dying with the test.
    pub fn exec(&self, ns: &str, args: &[&str]) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", ns]).args(args);
        mux_bw::lab::die_with_parent(&mut cmd);
        cmd
    }

    /// All namespace names of this topology.
    pub fn namespaces(&self) -> Vec<String> {
        [self.client.clone(), self.dst.clone()]
            .into_iter()
            .chain(self.relays.clone())
            .collect()
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        for p in &mut self.procs {
            let _ = p.kill();
            let _ = p.wait();
        }
        for n in self.namespaces() {
            quiet(&["ip", "netns", "del", &n]);
        }
    }
}

fn veth(a_ns: &str, a: &str, a_ip: &str, b_ns: &str, b: &str, b_ip: &str) {
    // Created inside a_ns, peer moved straight into b_ns: nothing touches the root namespace.
    must(&[
        "ip", "-n", a_ns, "link", "add", a, "type", "veth", "peer", "name", b, "netns", b_ns,
    ]);
    must(&["ip", "-n", a_ns, "addr", "add", a_ip, "dev", a]);
    must(&["ip", "-n", b_ns, "addr", "add", b_ip, "dev", b]);
    must(&["ip", "-n", a_ns, "link", "set", a, "up"]);
    must(&["ip", "-n", b_ns, "link", "set", b, "up"]);
}

fn shape(ns: &str, dev: &str, s: Shape) {
    must(&[
        "tc", "-n", ns, "qdisc", "add", "dev", dev, "root", "tbf", "rate", s.rate, "burst",
        "32kbit", "latency", "50ms",
    ]);
}

/// Runs iperf3 TCP from the client namespace to `server_ip` in `server_ns` for `secs`;
/// returns the receiver's goodput in bits/s.
pub fn iperf3(topo: &Topology, server_ns: &str, server_ip: &str, port: u16, secs: u32) -> Child {
    let mut server = topo
        .exec(server_ns, &["iperf3", "-s", "-1", "-p", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("iperf3 server");
    std::thread::sleep(Duration::from_millis(300));
    let client = topo
        .exec(
            &topo.client,
            &[
                "iperf3",
                "-c",
                server_ip,
                "-p",
                &port.to_string(),
                "-t",
                &secs.to_string(),
                "-J",
            ],
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("iperf3 client");
    // The server exits by itself after one test (-1); reap it in the background.
    std::thread::spawn(move || {
        let _ = server.wait();
    });
    client
}

/// Receiver goodput (bits/s) from an iperf3 -J run.
pub fn iperf3_result(client: Child) -> f64 {
    let out = client.wait_with_output().expect("iperf3 output");
    let v: serde_json::Value =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("iperf3 JSON: {e}"));
    v["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .unwrap_or_else(|| panic!("no receiver figure in {v}"))
}
