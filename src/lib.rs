//! mux-bw: does spreading traffic over N disjoint routes through relays deliver more bandwidth
//! than one direct route, and what goes wrong on each route?
//!
//! Module map (docs/ARCHITECTURE.md): `cli` parses and validates into a `measure::RunConfig`;
//! `route` plans disjoint paths; `transport` dials QUIC links and sends the `protocol` header;
//! `node` is the accepting side (destination or relay); `pump` moves bytes on one route;
//! `measure` runs the whole thing and emits `events`; `human` formats them; `lab` hosts nodes
//! in-process.

pub mod addr;
pub mod cli;
pub mod compare;
pub mod emulation;
pub mod events;
pub mod files;
pub mod human;
pub mod identity;
pub mod lab;
pub mod live;
pub mod measure;
pub mod node;
pub mod plot;
pub mod probe;
pub mod proof;
pub mod protocol;
pub mod pump;
pub mod redial;
pub mod route;
pub mod runfile;
pub mod shaper;
pub mod sweep;
pub mod table;
pub mod tls;
pub mod transport;
