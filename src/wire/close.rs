//! Why a route ended or could not be set up, typed end to end: `Cause` (the machine-readable
//! `cause` of `route_failure` and `route_setup_failed` events, and of nacks on the wire), and
//! the attribution a relay puts in a `CLOSE_DOWNSTREAM` reason (hop, node, cause, detail), encoded
//! as bytes rather than as text to be parsed back.

use quinn::{ConnectionError, VarInt};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::wire::identity::{NodeId, NODE_ID_LEN};

/// Application close code: the route is over, nothing went wrong.
pub const CLOSE_DONE: VarInt = VarInt::from_u32(0);
/// Application close code: setup was refused (details in the nack).
pub const CLOSE_REFUSED: VarInt = VarInt::from_u32(1);
/// Application close code: the next hop failed; the reason is an `Attribution`.
pub const CLOSE_DOWNSTREAM: VarInt = VarInt::from_u32(2);
/// Application close code: this node is shutting down.
pub const CLOSE_SHUTDOWN: VarInt = VarInt::from_u32(3);
/// Application close code: the node was killed by fault injection (the lab's `--fault kill`).
pub const CLOSE_KILLED: VarInt = VarInt::from_u32(4);
/// Stream reset code of a route the client gave up on (after a failure), as opposed to
/// `CLOSE_DONE`, the reset that ends a run: a striped transfer's destination keeps a transfer
/// whose routes were given up, for a redial to rejoin.
pub const RESET_ABANDONED: VarInt = VarInt::from_u32(1);
/// Application close code: the destination refused a striped route's bytes (an unknown
/// transfer, a malformed or corrupt segment, one beyond the reorder window); the reason says which.
pub const CLOSE_INTEGRITY: VarInt = VarInt::from_u32(5);

/// What went wrong, for scripts (`jq 'group_by(.cause)'`); the event's `error` says it for
/// people.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Cause {
    /// A deadline fired: connect, setup reply, or a read, write or echo-window wait.
    Timeout,
    /// A node refused the route: token, role, length, loop, a per-client or stranger cap, a
    /// malformed header.
    Refused,
    /// The node's key does not hash to the pinned id (a wrong URI, or an impostor).
    IdMismatch,
    /// The node speaks another version of the setup protocol.
    VersionMismatch,
    /// The node could not be reached: nothing answered, or the address is unusable.
    Unreachable,
    /// The connection was lost without a close from the route's nodes (idle timeout, reset,
    /// network error).
    ConnectionLost,
    /// A node closed the route (it stopped, or closed it for its own reasons).
    ClosedByPeer,
    /// A node was killed by fault injection (the lab's `--fault kill`).
    Killed,
    /// A node is shutting down (SIGINT/SIGTERM, drain time over).
    Shutdown,
    /// The destination ended its side of the stream.
    Ended,
    /// The route moved no bytes for `--stall-timeout` and a hop did not answer.
    Silent,
    /// Something not from the destination: a forged or replayed report or pong, or a route
    /// proof that does not verify.
    Forged,
    /// This host failed: no endpoint, emulated links, a task that panicked.
    Local,
    /// The destination refused a striped route's bytes: an unknown transfer, a malformed or
    /// corrupt segment, one beyond the reorder window (`--stripe`).
    Integrity,
}

impl Cause {
    const ALL: [Cause; 14] = [
        Cause::Timeout,
        Cause::Refused,
        Cause::IdMismatch,
        Cause::VersionMismatch,
        Cause::Unreachable,
        Cause::ConnectionLost,
        Cause::ClosedByPeer,
        Cause::Killed,
        Cause::Shutdown,
        Cause::Ended,
        Cause::Silent,
        Cause::Forged,
        Cause::Local,
        Cause::Integrity,
    ];

    /// The code on the wire (nack status, attribution): 1 and up, in declaration order.
    pub fn code(self) -> u8 {
        Self::ALL
            .iter()
            .position(|c| *c == self)
            .map_or(0, |i| i as u8 + 1)
    }

    /// The cause as events spell it (`unreachable`, `id_mismatch`): a bounded set of label
    /// values for metrics.
    pub fn name(self) -> &'static str {
        match self {
            Cause::Timeout => "timeout",
            Cause::Refused => "refused",
            Cause::IdMismatch => "id_mismatch",
            Cause::VersionMismatch => "version_mismatch",
            Cause::Unreachable => "unreachable",
            Cause::ConnectionLost => "connection_lost",
            Cause::ClosedByPeer => "closed_by_peer",
            Cause::Killed => "killed",
            Cause::Shutdown => "shutdown",
            Cause::Ended => "ended",
            Cause::Silent => "silent",
            Cause::Forged => "forged",
            Cause::Local => "local",
            Cause::Integrity => "integrity",
        }
    }

    /// The cause of a wire code; `None` for an unknown one.
    pub fn from_code(code: u8) -> Option<Self> {
        Self::ALL.get(usize::from(code).checked_sub(1)?).copied()
    }
}

/// The cause of a connection that ended with `e`, as the end that saw it tells it.
pub fn cause_of(e: &ConnectionError) -> Cause {
    match e {
        ConnectionError::ApplicationClosed(c) => match c.error_code {
            CLOSE_REFUSED => Cause::Refused,
            CLOSE_SHUTDOWN => Cause::Shutdown,
            CLOSE_KILLED => Cause::Killed,
            CLOSE_INTEGRITY => Cause::Integrity,
            _ => Cause::ClosedByPeer,
        },
        ConnectionError::TimedOut => Cause::Timeout,
        ConnectionError::VersionMismatch => Cause::VersionMismatch,
        ConnectionError::LocallyClosed | ConnectionError::CidsExhausted => Cause::Local,
        ConnectionError::TransportError(t)
            if t.to_string().contains(crate::wire::tls::ID_MISMATCH) =>
        {
            Cause::IdMismatch
        }
        _ => Cause::ConnectionLost,
    }
}

/// Who failed and why, as a relay reports it upstream when its link to the next hop died.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attribution {
    /// Index into the client's path of the hop that failed.
    pub hop: u8,
    /// That hop's id.
    pub node: NodeId,
    /// Why.
    pub cause: Cause,
    /// What the failure said, for people.
    pub detail: String,
}

/// First bytes of an encoded attribution, so a reason that is not one is never misread.
const MAGIC: &[u8; 4] = b"MBWA";

impl Attribution {
    /// The close reason bytes: magic, hop, node id, cause code, UTF-8 detail (truncated so the
    /// whole fits a close frame comfortably).
    pub fn encode(&self) -> Vec<u8> {
        const MAX_DETAIL: usize = 512;
        let mut detail = self.detail.as_str();
        while detail.len() > MAX_DETAIL {
            let mut end = MAX_DETAIL.min(detail.len() - 1);
            while !detail.is_char_boundary(end) {
                end -= 1;
            }
            detail = &detail[..end];
        }
        let mut out = Vec::with_capacity(MAGIC.len() + 2 + NODE_ID_LEN + detail.len());
        out.extend_from_slice(MAGIC);
        out.push(self.hop);
        out.extend_from_slice(&self.node.0);
        out.push(self.cause.code());
        out.extend_from_slice(detail.as_bytes());
        out
    }

    /// Reads an encoded attribution; `None` when the bytes are not one.
    pub fn decode(b: &[u8]) -> Option<Self> {
        let rest = b.strip_prefix(MAGIC.as_slice())?;
        let (&hop, rest) = rest.split_first()?;
        let id: [u8; NODE_ID_LEN] = rest.get(..NODE_ID_LEN)?.try_into().ok()?;
        let (&code, detail) = rest.get(NODE_ID_LEN..)?.split_first()?;
        Some(Attribution {
            hop,
            node: NodeId(id),
            cause: Cause::from_code(code)?,
            detail: String::from_utf8_lossy(detail).into_owned(),
        })
    }
}

impl std::fmt::Display for Attribution {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "hop {} ({}): {}", self.hop, self.node, self.detail)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_the_events_spelling() {
        for c in Cause::ALL {
            assert_eq!(serde_json::to_value(c).unwrap(), c.name(), "{c:?}");
        }
    }

    #[test]
    fn codes_round_trip_and_unknown_codes_are_none() {
        for c in Cause::ALL {
            assert_eq!(Cause::from_code(c.code()), Some(c));
        }
        assert_eq!(Cause::from_code(0), None);
        assert_eq!(Cause::from_code(200), None);
    }

    #[test]
    fn attribution_round_trips_and_text_is_not_misread() {
        let a = Attribution {
            hop: 2,
            node: NodeId([0xab; NODE_ID_LEN]),
            cause: Cause::Killed,
            detail: "node killed (fault injection)".into(),
        };
        assert_eq!(Attribution::decode(&a.encode()), Some(a.clone()));
        assert_eq!(
            a.to_string(),
            format!("hop 2 ({}): node killed (fault injection)", a.node)
        );
        assert_eq!(Attribution::decode(b"hop 2 (ab): text"), None);
        let enc = a.encode();
        for cut in 0..MAGIC.len() + 2 + NODE_ID_LEN {
            assert_eq!(Attribution::decode(&enc[..cut]), None, "cut at {cut}");
        }
        let long = Attribution {
            detail: "é".repeat(1000),
            ..a
        };
        let back = Attribution::decode(&long.encode()).unwrap();
        assert!(back.detail.len() <= 512 && back.detail.chars().all(|c| c == 'é'));
    }
}
