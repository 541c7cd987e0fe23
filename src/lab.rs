//! The embedded lab: a destination and K relays in this process on 127.0.0.1 port 0, each with a
//! fresh identity and its own QUIC endpoint, so `mux-bw lab` shows the whole system with no setup.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::addr::NodeAddr;
use crate::identity::{Identity, IdentityError};
use crate::node::{self, NodeConfig, Role, RunningNode};
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
}

impl Lab {
    /// Starts a destination and `relays` relays on loopback, all requiring `token` if given.
    pub fn start(relays: usize, token: Option<Vec<u8>>) -> Result<Lab, LabError> {
        let shutdown = CancellationToken::new();
        let loopback = "127.0.0.1:0".parse().expect("literal address"); // invariant: constant
        let mut nodes = Vec::with_capacity(relays + 1);
        for role in
            std::iter::once(Role::Destination).chain(std::iter::repeat_n(Role::Relay, relays))
        {
            let identity = Identity::ephemeral()?;
            let cfg = NodeConfig {
                role,
                id: identity.id,
                token: token.clone(),
                header_timeout: Duration::from_secs(5),
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
        })
    }

    /// Stops every node and waits (bounded) for them to finish.
    pub async fn stop(self) {
        self.shutdown.cancel();
        for n in self.nodes {
            let _ = tokio::time::timeout(Duration::from_secs(3), n.task).await;
        }
    }
}
