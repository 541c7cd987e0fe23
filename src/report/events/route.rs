//! The events about one route's life: established, setup failed, failure, redial, stalled.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::wire::close::Cause;

/// `route_established` event.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
pub struct RouteEstablished {
    /// Route index.
    pub route_index: u32,
    /// Node ids after the client, ending with the destination.
    pub path: Vec<String>,
    /// Links in the route (`path.len()`).
    pub hops: usize,
    /// Time from first dial to the chain's ack.
    pub setup_ns: u64,
}

/// `route_setup_failed` event.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
pub struct RouteSetupFailed {
    /// Route index.
    pub route_index: u32,
    /// Index into `path` of the node that failed, when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failed_hop: Option<u8>,
    /// Id of that node, when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// Human-readable cause.
    pub error: String,
    /// Machine-readable cause.
    pub cause: Cause,
    /// The planned path.
    pub path: Vec<String>,
}

/// `route_failure` event.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
pub struct RouteFailure {
    /// Route index.
    pub route_index: u32,
    /// Human-readable cause (names the timeout when one fired).
    pub error: String,
    /// Machine-readable cause.
    pub cause: Cause,
    /// Goodput bytes delivered before the failure (confirmed by the far end in `up` mode).
    pub bytes_sent_before_failure: u64,
    /// Bytes received by the client before the failure.
    pub bytes_received_before_failure: u64,
    /// Time since this route's pump started.
    pub elapsed_ns: u64,
    /// Index into the route's path of the hop that failed, when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failed_hop: Option<u8>,
    /// Id of that node, when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
}

/// `route_redial` event.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
pub struct RouteRedial {
    /// Route index (unchanged by the redial).
    pub route_index: u32,
    /// Redial attempt that succeeded (1 = first).
    pub attempt: u32,
    /// The new path: node ids after the client, ending with the destination.
    pub path: Vec<String>,
    /// Links in the new path.
    pub hops: usize,
    /// Time to set up the new path.
    pub setup_ns: u64,
}

/// `route_stalled` event.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
pub struct RouteStalled {
    /// Route index.
    pub route_index: u32,
    /// How long the route has moved no bytes.
    pub stalled_ns: u64,
    /// Cumulative goodput bytes delivered so far.
    pub bytes_sent: u64,
    /// Cumulative bytes received so far.
    pub bytes_received: u64,
}
