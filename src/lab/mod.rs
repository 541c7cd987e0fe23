//! The embedded lab: a destination and K relays on 127.0.0.1 port 0, each with a fresh identity and
//! its own QUIC endpoint, so `mux-bw lab` shows the whole system with no setup. Nodes run in this
//! process, or with `--processes` as child processes that die with the parent (PR_SET_PDEATHSIG),
//! even if the parent is killed with SIGKILL.

pub mod emulation;
pub mod shaper;
pub mod topology;

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::node::{self, Faults, NodeConfig, Role, RunningNode, HANDSHAKE_TIMEOUT};
use crate::wire::addr::NodeAddr;
use crate::wire::identity::{Identity, IdentityError};
use crate::wire::setup::MAX_ROUTES;
use crate::wire::transport::{EndpointError, Tuning};

/// How long `stop` waits for each node to finish before giving up on it (a child is then
/// killed): a lab node drains in `LAB_DRAIN`, so this is only reached by a stuck one.
const NODE_STOP_WAIT: Duration = Duration::from_secs(3);

/// How long lab nodes let routes drain on stop: the run is over by then, so only the close
/// handshakes are left.
const LAB_DRAIN: Duration = Duration::from_secs(1);

/// How long a lab node process may take to print its address: it only generates a key and
/// binds a socket, so this is reached only by a broken binary or an overloaded host.
const CHILD_START_WAIT: Duration = Duration::from_secs(10);

/// Why the lab could not start.
#[derive(Debug, thiserror::Error)]
pub enum LabError {
    /// A node process could not be started.
    #[error("cannot start lab node process: {0}")]
    Spawn(#[source] std::io::Error),
    /// A node process started but did not print its address.
    #[error("lab node process did not come up: {0}")]
    Startup(String),
    /// Identity generation failed.
    #[error(transparent)]
    Identity(#[from] IdentityError),
    /// A node could not bind.
    #[error(transparent)]
    Endpoint(#[from] EndpointError),
}

/// Running lab nodes; `stop` shuts them down.
pub struct Lab {
    /// The destination.
    pub dst: NodeAddr,
    /// The relays, in order (lab name `rK` is `relays[K]`).
    pub relays: Vec<NodeAddr>,
    shutdown: CancellationToken,
    /// Destination first, then relays in order.
    nodes: Vec<LabNode>,
    /// The in-process destination's own runtime (see `DstRuntime`).
    dst_runtime: Option<DstRuntime>,
}

/// The thread an in-process lab destination runs on, as a destination host would: in the
/// run's runtime, its one endpoint driver would get one turn (at most quinn's 50 µs of
/// receiving) per round of every client, relay and pump task, and at 256 relayed routes that
/// starved the whole run (docs/PERFORMANCE.md, "The lab's layout"). Shut down without
/// blocking when dropped.
struct DstRuntime(Option<tokio::runtime::Runtime>);

impl DstRuntime {
    fn new() -> Result<Self, LabError> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("mux-bw-lab-dst")
            .enable_all()
            .build()
            .map_err(|e| {
                LabError::Startup(format!("cannot start the destination's runtime: {e}"))
            })?;
        Ok(DstRuntime(Some(rt)))
    }
}

impl Drop for DstRuntime {
    fn drop(&mut self) {
        if let Some(rt) = self.0.take() {
            rt.shutdown_background();
        }
    }
}

/// One lab node and how to stop it or inject faults into it.
enum LabNode {
    /// A node task in this process, with its fault hooks.
    Task(RunningNode, Faults),
    /// A child process; faults are signals (kill = SIGKILL, stall = SIGSTOP).
    Process(tokio::process::Child),
}

/// What an injected fault does to a relay.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FaultKind {
    /// Close all connections at once and stop accepting, like a crash.
    Kill,
    /// Stop reading and forwarding, keep connections open.
    Stall,
}

/// `--fault KIND:RELAY@TIME`: at TIME after the load starts, relay RELAY misbehaves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fault {
    /// Kill or stall.
    pub kind: FaultKind,
    /// Lab relay index (`rK`).
    pub relay: usize,
    /// Delay after the load starts.
    pub at: Duration,
}

impl std::str::FromStr for Fault {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = |why: &str| format!("invalid --fault '{s}': {why}");
        let form = "expected kill:RELAY@TIME or stall:RELAY@TIME, e.g. kill:1@2s";
        let (kind, rest) = s.split_once(':').ok_or_else(|| bad(form))?;
        let kind = match kind {
            "kill" => FaultKind::Kill,
            "stall" => FaultKind::Stall,
            _ => return Err(bad(form)),
        };
        let (relay, at) = rest.split_once('@').ok_or_else(|| bad(form))?;
        let relay = relay.trim_start_matches('r');
        let relay = relay
            .parse()
            .map_err(|_| bad(&format!("relay '{relay}' is not a relay index")))?;
        let at = humantime::parse_duration(at)
            .map_err(|e| bad(&format!("time '{at}' is not a duration ({e})")))?;
        Ok(Fault { kind, relay, at })
    }
}

impl Lab {
    /// Starts a destination and `relays` relays on loopback, all requiring `token`; as child
    /// processes when `processes`.
    pub async fn start(
        relays: usize,
        token: Vec<u8>,
        processes: bool,
        tuning: Tuning,
    ) -> Result<Lab, LabError> {
        let shutdown = CancellationToken::new();
        let mut nodes = Vec::with_capacity(relays + 1);
        let mut addrs = Vec::with_capacity(relays + 1);
        let dst_runtime = (!processes).then(DstRuntime::new).transpose()?;
        for role in
            std::iter::once(Role::Destination).chain(std::iter::repeat_n(Role::Relay, relays))
        {
            let own_runtime = dst_runtime.as_ref().and_then(|r| r.0.as_ref());
            let (node, addr) = if processes {
                spawn_process(role, &token, &tuning).await?
            } else if let (Some(rt), Role::Destination) = (own_runtime, role) {
                let _on = rt.enter();
                start_task(role, &token, &tuning, shutdown.child_token())?
            } else {
                start_task(role, &token, &tuning, shutdown.child_token())?
            };
            nodes.push(node);
            addrs.push(addr);
        }
        Ok(Lab {
            dst: addrs[0],
            relays: addrs[1..].to_vec(),
            shutdown,
            nodes,
            dst_runtime,
        })
    }

    /// Schedules `fault` to fire `fault.at` after `load_started` is cancelled.
    pub fn inject(&self, fault: Fault, load_started: CancellationToken) -> Result<(), String> {
        let node = self.nodes.get(fault.relay + 1).ok_or_else(|| {
            format!(
                "invalid --fault: relay {} does not exist (the lab has r0..r{})",
                fault.relay,
                self.relays.len().saturating_sub(1)
            )
        })?;
        let fire: Box<dyn FnOnce() + Send> = match (node, fault.kind) {
            (LabNode::Task(_, hooks), FaultKind::Kill) => {
                let t = hooks.kill.clone();
                Box::new(move || t.cancel())
            }
            (LabNode::Task(_, hooks), FaultKind::Stall) => {
                let t = hooks.stall.clone();
                Box::new(move || t.cancel())
            }
            (LabNode::Process(child), kind) => {
                let pid = child.id().ok_or("lab relay process already exited")?;
                let sig = match kind {
                    FaultKind::Kill => libc::SIGKILL,
                    FaultKind::Stall => libc::SIGSTOP,
                };
                Box::new(move || signal(pid, sig))
            }
        };
        let shutdown = self.shutdown.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = async {
                    load_started.cancelled().await;
                    tokio::time::sleep(fault.at).await;
                } => fire(),
                _ = shutdown.cancelled() => {}
            }
        });
        Ok(())
    }

    /// Stops every node and waits (bounded) for them to finish.
    pub async fn stop(mut self) {
        self.shutdown.cancel();
        for n in std::mem::take(&mut self.nodes) {
            match n {
                LabNode::Task(running, _) => {
                    let _ = tokio::time::timeout(NODE_STOP_WAIT, running.task).await;
                }
                LabNode::Process(mut child) => {
                    if let Some(pid) = child.id() {
                        signal(pid, libc::SIGCONT); // a stalled node must run to handle SIGTERM
                        signal(pid, libc::SIGTERM);
                    }
                    if tokio::time::timeout(NODE_STOP_WAIT, child.wait())
                        .await
                        .is_err()
                    {
                        let _ = child.kill().await;
                    }
                }
            }
        }
        // Every node has stopped: nothing is left on the destination's runtime.
        drop(self.dst_runtime.take());
    }
}

/// Makes the child started by `cmd` die (SIGKILL) when this process dies, however it dies:
/// spawned nodes must never outlive their parent.
pub fn die_with_parent(cmd: &mut std::process::Command) {
    use std::os::unix::process::CommandExt;
    let parent = std::process::id();
    // SAFETY: the closure runs in the forked child before exec and only calls async-signal-safe
    // functions (prctl, getppid); it allocates nothing.
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // The parent may have died before prctl took effect.
            if libc::getppid() as u32 != parent {
                return Err(std::io::Error::other("parent exited"));
            }
            Ok(())
        });
    }
}

fn signal(pid: u32, sig: libc::c_int) {
    if let Ok(pid) = libc::pid_t::try_from(pid) {
        // SAFETY: kill(2) has no memory-safety preconditions; a stale pid only yields ESRCH.
        unsafe {
            libc::kill(pid, sig);
        }
    }
}

fn role_name(role: Role) -> &'static str {
    match role {
        Role::Destination => "serve",
        Role::Relay => "relay",
    }
}

/// Node limits in the lab: the defaults, raised so that every route a run may plan
/// (`wire::setup::MAX_ROUTES`, all from 127.0.0.1) fits through one node.
fn lab_limits() -> node::Limits {
    let d = node::Limits::default();
    node::Limits {
        max_routes_per_client: d.max_routes_per_client.max(MAX_ROUTES),
        max_connections: d.max_connections.max(2 * MAX_ROUTES),
        ..d
    }
}

fn start_task(
    role: Role,
    token: &[u8],
    tuning: &Tuning,
    shutdown: CancellationToken,
) -> Result<(LabNode, NodeAddr), LabError> {
    let identity = Identity::ephemeral()?;
    let faults = Faults::default();
    let cfg = NodeConfig {
        role,
        id: identity.id,
        token: Some(token.to_vec()),
        header_timeout: HANDSHAKE_TIMEOUT,
        limits: lab_limits(),
        drain_timeout: LAB_DRAIN,
        tuning: *tuning,
        faults: faults.clone(),
    };
    let loopback = "127.0.0.1:0".parse().expect("literal address"); // invariant: constant
    let running = node::start(loopback, &identity, cfg, shutdown)?;
    let addr = running.addr;
    Ok((LabNode::Task(running, faults), addr))
}

/// Runs `mux-bw serve|relay` as a child of this process that is killed when this process dies.
async fn spawn_process(
    role: Role,
    token: &[u8],
    tuning: &Tuning,
) -> Result<(LabNode, NodeAddr), LabError> {
    use tokio::io::AsyncBufReadExt;

    let exe = std::env::current_exe().map_err(LabError::Spawn)?;
    let mut cmd = tokio::process::Command::new(exe);
    cmd.args([
        role_name(role),
        "--listen",
        "127.0.0.1:0",
        "--drain-timeout",
        "1s",
    ])
    .args([
        "--max-routes-per-client",
        &lab_limits().max_routes_per_client.to_string(),
    ])
    .args([
        "--max-connections",
        &lab_limits().max_connections.to_string(),
    ])
    .args(["--stream-window", &tuning.stream_window.to_string()])
    .args(["--conn-window", &tuning.conn_window.to_string()])
    .args(["--send-window", &tuning.send_window.to_string()])
    .args(["--cc", tuning.congestion.as_str()])
    .args([
        "--socket-send-buffer",
        &tuning.socket_send_buffer.to_string(),
    ])
    .args([
        "--socket-recv-buffer",
        &tuning.socket_recv_buffer.to_string(),
    ])
    // The token goes through the environment, not argv, so `ps` does not show it.
    .env("MUX_BW_TOKEN", String::from_utf8_lossy(token).as_ref())
    .stdin(std::process::Stdio::null())
    .stdout(std::process::Stdio::piped())
    .stderr(std::process::Stdio::null())
    .kill_on_drop(true);
    die_with_parent(cmd.as_std_mut());
    let mut child = cmd.spawn().map_err(LabError::Spawn)?;
    let stdout = child
        .stdout
        .take()
        .ok_or_else(|| LabError::Startup("no stdout".to_string()))?;
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    let line = tokio::time::timeout(CHILD_START_WAIT, lines.next_line())
        .await
        .map_err(|_| {
            LabError::Startup(format!(
                "{} printed no address in {}",
                role_name(role),
                humantime::format_duration(CHILD_START_WAIT)
            ))
        })?
        .map_err(|e| LabError::Startup(e.to_string()))?
        .ok_or_else(|| LabError::Startup(format!("{} exited at start", role_name(role))))?;
    let addr = line
        .parse()
        .map_err(|e| LabError::Startup(format!("{} printed '{line}': {e}", role_name(role))))?;
    Ok((LabNode::Process(child), addr))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn faults_parse_and_bad_ones_name_the_value() {
        assert_eq!(
            "kill:1@2s".parse::<Fault>(),
            Ok(Fault {
                kind: FaultKind::Kill,
                relay: 1,
                at: Duration::from_secs(2)
            })
        );
        assert_eq!(
            "stall:r3@500ms".parse::<Fault>().map(|f| (f.kind, f.relay)),
            Ok((FaultKind::Stall, 3))
        );
        for bad in [
            "",
            "kill",
            "boom:1@2s",
            "kill:x@2s",
            "kill:1@soon",
            "kill:1",
        ] {
            let err = bad.parse::<Fault>().unwrap_err();
            assert!(err.contains(&format!("'{bad}'")), "{err}");
        }
    }
}
