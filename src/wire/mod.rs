//! Everything both ends of a link share: addresses, identities and pinning, the wire codecs,
//! the route proof, and QUIC endpoints and setup dials.

pub mod addr;
pub mod close;
pub mod datagram;
pub mod identity;
pub mod mode;
pub mod proof;
pub mod setup;
pub mod stripe;
pub mod tls;
pub mod transport;
