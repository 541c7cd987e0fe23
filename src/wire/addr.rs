//! Node addresses: the `mbw://<node-id>@host:port` URI that nodes print and clients pin.
//!
//! Parsing resolves the host once, so everything after the CLI works with a `SocketAddr`.
//! This module owns no sockets.

use std::fmt;
use std::net::{SocketAddr, ToSocketAddrs};
use std::str::FromStr;

use crate::wire::identity::{NodeId, NodeIdError};

/// URI scheme of a mux-bw node.
pub const SCHEME: &str = "mbw://";

/// Where a node listens and who it must be.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct NodeAddr {
    /// The id the peer's certificate must hash to.
    pub id: NodeId,
    /// Resolved UDP address.
    pub addr: SocketAddr,
}

impl NodeAddr {
    /// The URI form, parseable by `FromStr`.
    pub fn uri(&self) -> String {
        self.to_string()
    }
}

impl fmt::Display for NodeAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{SCHEME}{}@{}", self.id, self.addr)
    }
}

/// Why a string is not a node address.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AddrError {
    /// Wrong overall shape.
    #[error("invalid node '{0}': expected mbw://<node-id>@host:port")]
    Form(String),
    /// The id part is not an id.
    #[error("invalid node '{uri}': {source}")]
    Id {
        uri: String,
        #[source]
        source: NodeIdError,
    },
    /// The host part does not resolve.
    #[error("invalid node '{uri}': cannot resolve '{host}': {reason}")]
    Resolve {
        uri: String,
        host: String,
        reason: String,
    },
}

impl FromStr for NodeAddr {
    type Err = AddrError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let form = || AddrError::Form(s.to_string());
        let rest = s.trim().strip_prefix(SCHEME).ok_or_else(form)?;
        let (id, host) = rest.split_once('@').ok_or_else(form)?;
        let id: NodeId = id.parse().map_err(|source| AddrError::Id {
            uri: s.to_string(),
            source,
        })?;
        if host.is_empty() || !host.contains(':') || host.contains('/') {
            return Err(form());
        }
        let addr = host
            .to_socket_addrs()
            .map_err(|e| AddrError::Resolve {
                uri: s.to_string(),
                host: host.to_string(),
                reason: e.to_string(),
            })?
            .next()
            .ok_or_else(|| AddrError::Resolve {
                uri: s.to_string(),
                host: host.to_string(),
                reason: "no address".to_string(),
            })?;
        Ok(NodeAddr { id, addr })
    }
}

/// A node on 127.0.0.1 whose id is sixteen `n` bytes, for tests.
#[cfg(test)]
pub(crate) fn test_node(n: u8) -> NodeAddr {
    NodeAddr {
        id: NodeId([n; 16]),
        addr: SocketAddr::from(([127, 0, 0, 1], 7000 + u16::from(n))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "00112233445566778899aabbccddeeff";

    #[test]
    fn parses_and_prints_uri() {
        let uri = format!("mbw://{ID}@127.0.0.1:7600");
        let a: NodeAddr = uri.parse().unwrap();
        assert_eq!(a.addr, "127.0.0.1:7600".parse().unwrap());
        assert_eq!(a.to_string(), uri);
        let v6: NodeAddr = format!("mbw://{ID}@[::1]:9").parse().unwrap();
        assert_eq!(v6.addr, "[::1]:9".parse().unwrap());
    }

    #[test]
    fn rejects_other_forms_naming_the_value() {
        for bad in [
            "127.0.0.1:7600".to_string(),
            format!("http://{ID}@127.0.0.1:7600"),
            format!("mbw://{ID}127.0.0.1:7600"),
            format!("mbw://{ID}@127.0.0.1"),
            format!("mbw://{ID}@"),
            "mbw://xyz@127.0.0.1:1".to_string(),
        ] {
            let err = bad.parse::<NodeAddr>().unwrap_err();
            assert!(err.to_string().contains(&bad), "{err}");
        }
    }
}
