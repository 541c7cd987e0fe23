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
    /// Destination → client, on each route of a striped transfer instead of `Report`: the route's
    /// received bytes and the transfer's reassembly figures; `seq` shares `Report`'s count.
    StripeReport {
        seq: u32,
        figures: TransferFigures,
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

/// How often a destination tells an uploading client how many bytes arrived (`Report`,
/// `StripeReport`), when the count changed.
pub const REPORT_INTERVAL: std::time::Duration = std::time::Duration::from_millis(20);

const DG_REPORT: u8 = 1;
const DG_PING: u8 = 2;
const DG_PONG: u8 = 3;
const DG_HOP_PING: u8 = 4;
const DG_HOP_PONG: u8 = 5;
const DG_STRIPE_REPORT: u8 = 6;

/// What a destination tells each route of a striped transfer: this route's payload bytes and the
/// transfer's in-order progress. Every field but `received` is the transfer's, and every one but
/// `buffer_max` only grows.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TransferFigures {
    /// Payload bytes that arrived on this route (this connection), duplicates included.
    pub received: u64,
    /// The transfer's in-order offset: every byte below it arrived and verified.
    pub delivered: u64,
    /// Most bytes held beyond `delivered` since the transfer's previous report on any route.
    pub buffer_max: u64,
    /// Nanoseconds the transfer spent with bytes held behind a missing segment.
    pub blocked_ns: u64,
    /// Bytes that arrived a second time (a resend of a segment that had arrived).
    pub duplicate: u64,
    /// Bytes that did not match the pattern at their offset.
    pub corrupt: u64,
}

impl TransferFigures {
    const LEN: usize = 48;

    fn encode(&self, out: &mut Vec<u8>) {
        for v in [
            self.received,
            self.delivered,
            self.buffer_max,
            self.blocked_ns,
            self.duplicate,
            self.corrupt,
        ] {
            out.extend_from_slice(&v.to_be_bytes());
        }
    }

    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let b = r.take(Self::LEN, "transfer figures")?;
        let v = |i: usize| {
            let mut x = [0u8; 8];
            x.copy_from_slice(&b[8 * i..8 * i + 8]);
            u64::from_be_bytes(x)
        };
        Ok(TransferFigures {
            received: v(0),
            delivered: v(1),
            buffer_max: v(2),
            blocked_ns: v(3),
            duplicate: v(4),
            corrupt: v(5),
        })
    }
}

impl Datagram {
    /// Encodes to at most 85 bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = self.mac_input();
        if let Some(tag) = self.tag() {
            out.extend_from_slice(tag);
        }
        out
    }

    /// The destination's MAC, on the datagrams that carry one.
    pub fn tag(&self) -> Option<&[u8; TAG_LEN]> {
        match self {
            Datagram::Report { tag, .. }
            | Datagram::Pong { tag, .. }
            | Datagram::StripeReport { tag, .. } => Some(tag),
            _ => None,
        }
    }

    /// The MAC field to set, on the datagrams that carry one.
    pub fn tag_mut(&mut self) -> Option<&mut [u8; TAG_LEN]> {
        match self {
            Datagram::Report { tag, .. }
            | Datagram::Pong { tag, .. }
            | Datagram::StripeReport { tag, .. } => Some(tag),
            _ => None,
        }
    }

    /// The bytes a report's or pong's MAC covers: everything before the tag.
    pub fn mac_input(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(5 + TransferFigures::LEN + TAG_LEN);
        match *self {
            Datagram::Report { seq, received, .. } => {
                out.push(DG_REPORT);
                out.extend_from_slice(&seq.to_be_bytes());
                out.extend_from_slice(&received.to_be_bytes());
            }
            Datagram::StripeReport { seq, figures, .. } => {
                out.push(DG_STRIPE_REPORT);
                out.extend_from_slice(&seq.to_be_bytes());
                figures.encode(&mut out);
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
            DG_STRIPE_REPORT => Datagram::StripeReport {
                seq: r.u32("report sequence")?,
                figures: TransferFigures::decode(&mut r)?,
                tag: tag(&mut r)?,
            },
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
            Datagram::StripeReport {
                seq: 4,
                figures: TransferFigures {
                    received: 1,
                    delivered: 2,
                    buffer_max: 3,
                    blocked_ns: 4,
                    duplicate: 5,
                    corrupt: u64::MAX,
                },
                tag: [2; TAG_LEN],
            },
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
