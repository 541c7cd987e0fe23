//! mux-bw: does spreading traffic over N disjoint routes through relays deliver more bandwidth
//! than one direct route, and what goes wrong on each route?
//!
//! The tree is the architecture (docs/ARCHITECTURE.md):
//! - `wire`: what crosses the network and is shared by both ends: `addr`, `identity`, `tls`,
//!   `mode`, `setup` (request/reply codecs), `datagram`, `close` (causes, close codes, hop
//!   attribution), `proof` (the destination's route proof), `transport` (endpoints, setup dials).
//! - `node`: the accepting side (`serve`, `relay`): `admit` (budgets, policy), `far_end`, `relay`.
//! - `client`: one measurement run: `plan`, `table`, `redial`, `endpoints`, `slot`,
//!   `supervisor`, `pump`, `probe`, `sampler`, `summary`, `run`, `wiring`, and `scan`.
//! - `report`: `events` (the types), `sink` (outputs), `human`, `live`, `scan`, and the readers of
//!   saved runs: `runfile`, `compare`, `sweep`, `plot`.
//! - `lab`: nodes in one process (or children), `emulation` (proxies), `shaper`, `topology`.
//! - `exporter`: Prometheus probes (`/probe?target=`): one fitted measurement per scrape.
//! - `metrics`: what nodes and the exporter serve at `/metrics`, and the HTTP server.
//! - `cli`: the command line (`args`, `parse`, `config`, and one runner per subcommand).
//! - `files`: bounded whole-file reads.
//!
//! `node` and `client` never import each other (a test checks it).

pub mod cli;
pub mod client;
pub mod exporter;
pub mod files;
pub mod lab;
pub mod metrics;
pub mod node;
pub mod report;
pub mod wire;
