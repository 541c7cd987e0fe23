//! QUIC datagrams on an established route: the destination's MACed delivery reports and pongs,
//! the client's pings, and the hop probes that find a silent node. Pure encode/decode.

use crate::wire::proof::TAG_LEN;
use crate::wire::setup::{DecodeError, Reader};

/// A QUIC datagram on an established route. Relays forward datagrams verbatim both ways (but
/// answer a `HopPing` meant for them), so these travel end to end without queueing behind bulk
/// stream data. Reports and pongs carry the destination's MAC under the route's report key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Datagram {
    /// Destination → client: total payload bytes received so far on the route; `seq` counts
    /// the route's reports from 0.
    Report {
        seq: u32,
        received: u64,
        tag: [u8; TAG_LEN],
    },
    /// Client → destination: an RTT probe; the client matches answers by `seq`.
    Ping { seq: u32 },
    /// Destination → client: the probe's `seq`, returned.
    Pong { seq: u32, tag: [u8; TAG_LEN] },
    /// Client → the node at `hop` of its path: are you there? (Finds the hop that went silent.)
    HopPing { hop: u8, seq: u32 },
    /// That node → client: here, answering `seq`.
    HopPong { hop: u8, seq: u32 },
}

const DG_REPORT: u8 = 1;
const DG_PING: u8 = 2;
const DG_PONG: u8 = 3;
const DG_HOP_PING: u8 = 4;
const DG_HOP_PONG: u8 = 5;

impl Datagram {
    /// Encodes to at most 45 bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = self.mac_input();
        match self {
            Datagram::Report { tag, .. } | Datagram::Pong { tag, .. } => out.extend_from_slice(tag),
            _ => {}
        }
        out
    }

    /// The bytes a report's or pong's MAC covers: everything before the tag.
    pub fn mac_input(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(13 + TAG_LEN);
        match *self {
            Datagram::Report { seq, received, .. } => {
                out.push(DG_REPORT);
                out.extend_from_slice(&seq.to_be_bytes());
                out.extend_from_slice(&received.to_be_bytes());
            }
            Datagram::Ping { seq } => {
                out.push(DG_PING);
                out.extend_from_slice(&seq.to_be_bytes());
            }
            Datagram::Pong { seq, .. } => {
                out.push(DG_PONG);
                out.extend_from_slice(&seq.to_be_bytes());
            }
            Datagram::HopPing { hop, seq } => {
                out.push(DG_HOP_PING);
                out.push(hop);
                out.extend_from_slice(&seq.to_be_bytes());
            }
            Datagram::HopPong { hop, seq } => {
                out.push(DG_HOP_PONG);
                out.push(hop);
                out.extend_from_slice(&seq.to_be_bytes());
            }
        }
        out
    }

    /// Decodes a datagram; unknown types and wrong lengths are errors.
    pub fn decode(b: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader { buf: b };
        let tag = |r: &mut Reader<'_>| -> Result<[u8; TAG_LEN], DecodeError> {
            let mut t = [0u8; TAG_LEN];
            t.copy_from_slice(r.take(TAG_LEN, "tag")?);
            Ok(t)
        };
        let d = match r.u8("datagram type")? {
            DG_REPORT => {
                let seq = r.u32("report sequence")?;
                let v = r.take(8, "report")?;
                let mut received = [0u8; 8];
                received.copy_from_slice(v);
                Datagram::Report {
                    seq,
                    received: u64::from_be_bytes(received),
                    tag: tag(&mut r)?,
                }
            }
            DG_PING => Datagram::Ping {
                seq: r.u32("probe sequence")?,
            },
            DG_PONG => Datagram::Pong {
                seq: r.u32("probe sequence")?,
                tag: tag(&mut r)?,
            },
            DG_HOP_PING => Datagram::HopPing {
                hop: r.u8("hop")?,
                seq: r.u32("probe sequence")?,
            },
            DG_HOP_PONG => Datagram::HopPong {
                hop: r.u8("hop")?,
                seq: r.u32("probe sequence")?,
            },
            t => return Err(DecodeError::IllegalValue(format!("datagram type {t}"))),
        };
        if !r.buf.is_empty() {
            return Err(DecodeError::Malformed("trailing bytes"));
        }
        Ok(d)
    }

    /// The hop a `HopPing` is for, read from its first bytes without a full decode (relays look
    /// at every datagram they forward).
    pub fn hop_ping_target(b: &[u8]) -> Option<u8> {
        match b {
            [DG_HOP_PING, hop, _, _, _, _] => Some(*hop),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn datagrams_round_trip_and_reject_garbage() {
        for d in [
            Datagram::Report {
                seq: 3,
                received: 1 << 40,
                tag: [7; TAG_LEN],
            },
            Datagram::Ping { seq: 7 },
            Datagram::Pong {
                seq: u32::MAX,
                tag: [1; TAG_LEN],
            },
            Datagram::HopPing { hop: 2, seq: 9 },
            Datagram::HopPong { hop: 2, seq: 9 },
        ] {
            let b = d.encode();
            assert_eq!(Datagram::decode(&b), Ok(d));
            for cut in 0..b.len() {
                assert!(Datagram::decode(&b[..cut]).is_err());
            }
            let mut long = b.clone();
            long.push(0);
            assert!(Datagram::decode(&long).is_err());
        }
        assert!(Datagram::decode(&[9, 0, 0]).is_err());
    }
}
