//! A node's metrics: connections, routes by outcome, bytes moved, setup time, header timeouts,
//! drain state, build info. Counters are shared atomics the node bumps as it works; the
//! byte counters are resolved once, so the forwarding path never looks up a label set.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Registry, Unit};

use super::{Exposition, PREFIX};
use crate::wire::close::Cause;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CauseLabel {
    cause: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    outcome: &'static str,
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DirectionLabel {
    direction: &'static str,
}

/// Why a node turned a connection away before any route was asked for (the `cause` label of
/// `mux_bw_connections_refused_total`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// `--max-connections` connections were open.
    ConnectionLimit,
    /// The unvalidated-handshake budget was spent and a Retry was not possible.
    UnvalidatedLimit,
    /// The handshake failed (TLS, version, the peer gave up).
    HandshakeFailed,
    /// The handshake did not finish within `node::HANDSHAKE_TIMEOUT`.
    HandshakeTimeout,
    /// Too many connections from one IP without a setup header.
    StrangerLimit,
}

impl Refusal {
    const ALL: [Refusal; 5] = [
        Refusal::ConnectionLimit,
        Refusal::UnvalidatedLimit,
        Refusal::HandshakeFailed,
        Refusal::HandshakeTimeout,
        Refusal::StrangerLimit,
    ];

    fn name(self) -> &'static str {
        match self {
            Refusal::ConnectionLimit => "connection_limit",
            Refusal::UnvalidatedLimit => "unvalidated_limit",
            Refusal::HandshakeFailed => "handshake_failed",
            Refusal::HandshakeTimeout => "handshake_timeout",
            Refusal::StrangerLimit => "stranger_limit",
        }
    }
}

/// Why a node refused a route it was asked for (the `reason` label of a nacked route).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Nack {
    /// The header could not be decoded.
    Malformed,
    /// The header speaks another protocol version.
    Version,
    /// The token was missing or wrong.
    Token,
    /// A relay asked to be a destination, or the other way round.
    Role,
    /// The route is longer than `--max-hops`.
    Hops,
    /// The path repeats a node.
    Loop,
    /// `--max-routes-per-client` routes from one IP were up.
    ClientLimit,
    /// A striped route the destination could not take (unknown transfer, window mismatch).
    Integrity,
    /// A relay's onward setup failed with this cause.
    NextHop(Cause),
}

impl Nack {
    /// The reasons a node gives itself (a next hop's causes appear as they happen).
    const OWN: [Nack; 8] = [
        Nack::Malformed,
        Nack::Version,
        Nack::Token,
        Nack::Role,
        Nack::Hops,
        Nack::Loop,
        Nack::ClientLimit,
        Nack::Integrity,
    ];

    fn reason(self) -> String {
        match self {
            Nack::Malformed => "malformed".into(),
            Nack::Version => "version".into(),
            Nack::Token => "token".into(),
            Nack::Role => "role".into(),
            Nack::Hops => "hops".into(),
            Nack::Loop => "loop".into(),
            Nack::ClientLimit => "client_limit".into(),
            Nack::Integrity => "integrity".into(),
            Nack::NextHop(c) => format!("next_hop_{}", c.name()),
        }
    }

    fn labels(self) -> RouteLabels {
        RouteLabels {
            outcome: "nacked",
            reason: self.reason(),
        }
    }
}

/// The label set of an acknowledged route (no reason).
const ACKED: RouteLabels = RouteLabels {
    outcome: "acked",
    reason: String::new(),
};

/// Payload bytes a node moved on its routes: a relay's forwarded bytes, a destination's
/// received (`ToDestination`) and sent (`ToClient`) ones.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// From the client towards the destination.
    ToDestination,
    /// From the destination back towards the client.
    ToClient,
}

/// Setup-time buckets: 1 ms to ~16 s, doubling (loopback routes to far intercontinental ones).
const SETUP_BUCKETS: u16 = 15;

/// Everything a node counts. Cloning shares the counters.
#[derive(Clone, Debug)]
pub struct NodeMetrics {
    exposition: Exposition,
    connections_open: Gauge,
    connections_accepted: Counter,
    refused: Family<CauseLabel, Counter>,
    routes_active: Gauge,
    routes: Family<RouteLabels, Counter>,
    /// `bytes` resolved once for each direction: the forwarding path only adds.
    to_destination: Counter,
    to_client: Counter,
    setup: Histogram,
    header_timeouts: Counter,
    draining: Gauge,
}

impl NodeMetrics {
    /// A node's registry: its series, build info for `role` (`destination`, `relay`), and the
    /// process collector.
    pub fn new(role: &'static str) -> Self {
        let mut registry = super::process_registry(role);
        let r = registry.sub_registry_with_prefix(PREFIX);
        let bytes: Family<DirectionLabel, Counter> = Family::default();
        let dir = |direction| DirectionLabel { direction };
        let m = NodeMetrics {
            exposition: Exposition::new(Registry::default()),
            connections_open: Gauge::default(),
            connections_accepted: Counter::default(),
            refused: Family::default(),
            routes_active: Gauge::default(),
            routes: Family::default(),
            to_destination: bytes.get_or_create_owned(&dir("to_destination")),
            to_client: bytes.get_or_create_owned(&dir("to_client")),
            setup: Histogram::new(exponential_buckets(0.001, 2.0, SETUP_BUCKETS)),
            header_timeouts: Counter::default(),
            draining: Gauge::default(),
        };
        m.register(r, bytes);
        // Known series start at 0, so `rate()` and alerts see them before the first event.
        for why in Refusal::ALL {
            let _ = m.refused.get_or_create(&CauseLabel { cause: why.name() });
        }
        let _ = m.routes.get_or_create(&ACKED);
        for why in Nack::OWN {
            let _ = m.routes.get_or_create(&why.labels());
        }
        NodeMetrics {
            exposition: Exposition::new(registry),
            ..m
        }
    }

    fn register(&self, r: &mut Registry, bytes: Family<DirectionLabel, Counter>) {
        r.register(
            "connections_open",
            "QUIC connections open now (past their handshake)",
            self.connections_open.clone(),
        );
        r.register(
            "connections_accepted",
            "QUIC connections whose handshake completed",
            self.connections_accepted.clone(),
        );
        r.register(
            "connections_refused",
            "Connections turned away before a route was asked for, by cause",
            self.refused.clone(),
        );
        r.register(
            "routes_active",
            "Routes established through or at this node and not yet over",
            self.routes_active.clone(),
        );
        r.register(
            "routes",
            "Routes asked of this node, by outcome (acked, nacked) and the nack's reason",
            self.routes.clone(),
        );
        r.register_with_unit(
            "route_payload",
            "Payload bytes this node moved on routes (forwarded by a relay, received or sent by a destination), by direction",
            Unit::Bytes,
            bytes,
        );
        r.register_with_unit(
            "route_setup",
            "From a connection's handshake to its route's ack (a relay's includes its onward setup)",
            Unit::Seconds,
            self.setup.clone(),
        );
        r.register(
            "header_timeouts",
            "Connections closed because no setup header arrived within --header-timeout",
            self.header_timeouts.clone(),
        );
        r.register(
            "draining",
            "1 while the node drains its routes after SIGINT/SIGTERM, else 0",
            self.draining.clone(),
        );
    }

    /// What `/metrics` serves.
    pub fn exposition(&self) -> &Exposition {
        &self.exposition
    }

    /// A connection was turned away before asking for a route.
    pub(crate) fn refused(&self, why: Refusal) {
        self.refused
            .get_or_create(&CauseLabel { cause: why.name() })
            .inc();
    }

    /// A connection finished its handshake: counted open until the guard drops.
    pub(crate) fn connection_open(&self) -> Open {
        self.connections_accepted.inc();
        self.connections_open.inc();
        Open(self.connections_open.clone())
    }

    /// A route was refused with a nack.
    pub(crate) fn nacked(&self, why: Nack) {
        self.routes.get_or_create(&why.labels()).inc();
    }

    /// A route was acknowledged `setup` after its connection's handshake: counted active until
    /// the guard drops.
    pub(crate) fn acked(&self, setup: Duration) -> Open {
        self.routes.get_or_create(&ACKED).inc();
        self.setup.observe(setup.as_secs_f64());
        self.routes_active.inc();
        Open(self.routes_active.clone())
    }

    /// A connection sent no setup header in time.
    pub(crate) fn header_timeout(&self) {
        self.header_timeouts.inc();
    }

    /// The node stopped accepting and drains its routes.
    pub(crate) fn draining(&self) {
        self.draining.set(1);
    }

    /// The counter of payload bytes moving in `d`.
    pub(crate) fn payload(&self, d: Direction) -> &Counter {
        match d {
            Direction::ToDestination => &self.to_destination,
            Direction::ToClient => &self.to_client,
        }
    }

    /// Routes established and not yet over: what a shutdown has to drain.
    pub fn routes_active(&self) -> usize {
        usize::try_from(self.routes_active.get()).unwrap_or(0)
    }
}

/// Counts one open thing (a connection, an active route) in a gauge until dropped.
pub(crate) struct Open(Gauge);

impl Drop for Open {
    fn drop(&mut self) {
        self.0.dec();
    }
}
