//! mux-bw: does spreading traffic over N disjoint routes through relays deliver more bandwidth
//! than one direct route, and what goes wrong on each route?
//!
//! The tree is the architecture (docs/ARCHITECTURE.md):
//! - `wire`: what crosses the network and is shared by both ends: node addresses and identities,
//!   TLS pinning, the setup and datagram codecs, the route proof, QUIC endpoints and setup dials.
//! - `node`: the accepting side (`serve`, `relay`): admission, policy, relaying, the far end.
//! - `client`: one measurement run: planning, setup, pumps, probes, sampling, the summary.
//! - `report`: events and everything that renders or reads them back.
//! - `lab`: nodes in one process (or children), emulated links, faults.
//! - `cli`: the command line, which wires the others together.
//!
//! `node` and `client` never import each other (a test checks it).

pub mod cli;
pub mod client;
pub mod files;
pub mod lab;
pub mod node;
pub mod report;
pub mod wire;
