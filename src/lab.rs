//! The embedded lab: a destination and K relays in this process on 127.0.0.1 port 0, each with a
//! fresh identity and its own QUIC endpoint, so `mux-bw lab` shows the whole system with no setup.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::addr::NodeAddr;
use crate::identity::{Identity, IdentityError};
use crate::node::{self, Faults, NodeConfig, Role, RunningNode};
use crate::transport::EndpointError;

/// Why the lab could not start.
#[derive(Debug, thiserror::Error)]
pub enum LabError {
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
    nodes: Vec<RunningNode>,
    /// Fault hooks of each relay, by relay index.
    faults: Vec<Faults>,
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
    /// Starts a destination and `relays` relays on loopback, all requiring `token` if given.
    pub fn start(relays: usize, token: Option<Vec<u8>>) -> Result<Lab, LabError> {
        let shutdown = CancellationToken::new();
        let loopback = "127.0.0.1:0".parse().expect("literal address"); // invariant: constant
        let mut nodes = Vec::with_capacity(relays + 1);
        let mut faults = Vec::with_capacity(relays);
        for role in
            std::iter::once(Role::Destination).chain(std::iter::repeat_n(Role::Relay, relays))
        {
            let identity = Identity::ephemeral()?;
            let node_faults = Faults::default();
            if role == Role::Relay {
                faults.push(node_faults.clone());
            }
            let cfg = NodeConfig {
                role,
                id: identity.id,
                token: token.clone(),
                header_timeout: Duration::from_secs(5),
                limits: node::Limits::default(),
                drain_timeout: Duration::from_secs(1),
                faults: node_faults,
            };
            nodes.push(node::start(
                loopback,
                &identity,
                cfg,
                shutdown.child_token(),
            )?);
        }
        Ok(Lab {
            dst: nodes[0].addr,
            relays: nodes[1..].iter().map(|n| n.addr).collect(),
            shutdown,
            nodes,
            faults,
        })
    }

    /// Schedules `fault` to fire `fault.at` after `load_started` is cancelled.
    pub fn inject(&self, fault: Fault, load_started: CancellationToken) -> Result<(), String> {
        let hooks = self.faults.get(fault.relay).ok_or_else(|| {
            format!(
                "invalid --fault: relay {} does not exist (the lab has r0..r{})",
                fault.relay,
                self.faults.len().saturating_sub(1)
            )
        })?;
        let token = match fault.kind {
            FaultKind::Kill => hooks.kill.clone(),
            FaultKind::Stall => hooks.stall.clone(),
        };
        let shutdown = self.shutdown.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = async {
                    load_started.cancelled().await;
                    tokio::time::sleep(fault.at).await;
                } => token.cancel(),
                _ = shutdown.cancelled() => {}
            }
        });
        Ok(())
    }

    /// Stops every node and waits (bounded) for them to finish.
    pub async fn stop(self) {
        self.shutdown.cancel();
        for n in self.nodes {
            let _ = tokio::time::timeout(Duration::from_secs(3), n.task).await;
        }
    }
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
