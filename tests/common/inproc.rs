//! Nodes inside the test process, on 127.0.0.1 port 0, for tests that speak the wire protocol
//! themselves (hostile peers, raw segments); each stops when its `Node` drops.

use std::time::Duration;

use mux_bw::node::{self, Faults, Limits, NodeConfig, Role};
use mux_bw::wire::addr::NodeAddr;
use mux_bw::wire::identity::Identity;
use mux_bw::wire::transport;
use quinn::Endpoint;
use tokio_util::sync::CancellationToken;

/// The token every in-process node requires.
pub const TOKEN: &[u8] = b"s3cret";

/// A running node; dropping it stops the node.
pub struct Node {
    pub addr: NodeAddr,
    _stop: tokio_util::sync::DropGuard,
}

/// A node of `role` with default limits.
pub fn start(role: Role, header_timeout: Duration) -> Node {
    start_with(role, header_timeout, Limits::default())
}

/// A node of `role` with `limits`.
pub fn start_with(role: Role, header_timeout: Duration, limits: Limits) -> Node {
    let identity = Identity::ephemeral().unwrap();
    let cfg = NodeConfig {
        role,
        id: identity.id,
        token: Some(TOKEN.to_vec()),
        header_timeout,
        limits,
        drain_timeout: Duration::from_millis(100),
        tuning: transport::Tuning::default(),
        faults: Faults::default(),
    };
    let stop = CancellationToken::new();
    let listen = "127.0.0.1:0".parse().unwrap();
    let running = node::start(listen, &identity, cfg, stop.clone()).unwrap();
    Node {
        addr: running.addr,
        _stop: stop.drop_guard(),
    }
}

/// A client endpoint on 127.0.0.1.
pub fn client() -> Endpoint {
    let tuning = transport::Tuning::default();
    transport::endpoint("127.0.0.1:0".parse().unwrap(), None, &tuning).unwrap()
}
