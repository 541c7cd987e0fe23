//! Wire format of route setup: the request header a client (or relay) sends on the first stream of
//! a link, and the ack/nack reply; the limits both ends share. Pure encode/decode; no I/O. See docs/PROTOCOL.md.
//!
//! Decoders check every length before reading and return errors, never panic, on any bytes.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use crate::wire::addr::NodeAddr;
use crate::wire::close::Cause;
use crate::wire::identity::{NodeId, NODE_ID_LEN};
use crate::wire::mode::Mode;
use crate::wire::proof::KEY_LEN;
use crate::wire::stripe::{self, StripeSpec};

/// The protocol version this build speaks. Bumped on any incompatible change.
pub const PROTOCOL_VERSION: u16 = 3;
/// First bytes of a setup request.
pub const REQUEST_MAGIC: [u8; 4] = *b"MBWQ";
/// First bytes of a setup reply.
pub const REPLY_MAGIC: [u8; 4] = *b"MBWR";
/// Fixed prefix of a request: magic, version, body length.
pub const REQUEST_PREFIX_LEN: usize = 8;
/// Fixed prefix of a reply: magic, version, status, failed hop, message length.
pub const REPLY_PREFIX_LEN: usize = 10;
/// Largest request body a node accepts.
pub const MAX_BODY_LEN: usize = 4096;
/// Most links a route may have (client → … → destination).
pub const MAX_HOPS: usize = 8;
/// Longest token accepted.
pub const MAX_TOKEN_LEN: usize = 255;
/// Longest nack message sent; longer ones are truncated.
pub const MAX_MESSAGE_LEN: usize = 1024;
/// Size of the payload chunks written on a route's stream; one shared buffer, cloned by refcount.
pub const PAYLOAD_CHUNK: usize = 64 * 1024;
/// Most routes one run may plan (`--routes`): the measured limit of setting routes up on one
/// host (docs/PERFORMANCE.md, "Route count"). Lab nodes admit that many from one address.
pub const MAX_ROUTES: usize = 1024;

/// A route-setup request as received by the node at position `hop_index` of the path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SetupRequest {
    /// Index of the route in the client's run; echoed in every event about it.
    pub route_index: u32,
    /// Position of the receiving node in the client's path (0 = first node after the client).
    pub hop_index: u8,
    /// Data pattern on the stream once the route is up.
    pub mode: Mode,
    /// Per-hop setup budget chosen by the client; relays use it when dialing onwards.
    pub setup_timeout_ms: u32,
    /// Shared secret, compared by nodes started with `--token`.
    pub token: Vec<u8>,
    /// The client's X25519 key for this route's proof (`proof`); relays pass it on unchanged.
    pub client_key: [u8; KEY_LEN],
    /// The striped transfer this route carries segments of (`--stripe`); relays pass it on.
    pub stripe: Option<StripeSpec>,
    /// Nodes after the receiver, ending with the destination; empty when the receiver is the destination.
    pub next: Vec<NodeAddr>,
}

/// The answer to a setup request, from the whole remaining chain.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SetupReply {
    /// Every hop up to the destination accepted; `proof` is the destination's route proof
    /// (`proof::Signer::answer`), which relays pass back unchanged.
    Ack { proof: Vec<u8> },
    /// Hop `failed_hop` (index into the client's path) refused or could not be reached.
    Nack {
        failed_hop: u8,
        cause: Cause,
        message: String,
    },
}

/// Why bytes are not a valid header.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    /// Not a mux-bw setup message at all.
    #[error("not a mux-bw setup message (bad magic)")]
    BadMagic,
    /// The peer speaks a different protocol version.
    #[error("protocol version mismatch: peer speaks v{peer}, this node speaks v{ours}")]
    Version { peer: u16, ours: u16 },
    /// A length field exceeds its cap.
    #[error("{what} too long: {len} > {max}")]
    TooLong {
        what: &'static str,
        len: usize,
        max: usize,
    },
    /// Ran out of bytes or had bytes left over.
    #[error("malformed setup message: {0}")]
    Malformed(&'static str),
    /// Well-formed, but a field holds a value we do not know.
    #[error("illegal value in setup message: {0}")]
    IllegalValue(String),
}

/// A cursor over bytes being decoded; every read checks the length first.
pub(crate) struct Reader<'a> {
    pub(crate) buf: &'a [u8],
}

impl<'a> Reader<'a> {
    pub(crate) fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], DecodeError> {
        if self.buf.len() < n {
            return Err(DecodeError::Malformed(what));
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }
    pub(crate) fn u8(&mut self, what: &'static str) -> Result<u8, DecodeError> {
        Ok(self.take(1, what)?[0])
    }
    pub(crate) fn u16(&mut self, what: &'static str) -> Result<u16, DecodeError> {
        let b = self.take(2, what)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }
    pub(crate) fn u32(&mut self, what: &'static str) -> Result<u32, DecodeError> {
        let b = self.take(4, what)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
}

/// Parses the fixed request prefix; returns the body length to read next.
pub fn decode_request_prefix(prefix: &[u8; REQUEST_PREFIX_LEN]) -> Result<usize, DecodeError> {
    if prefix[..4] != REQUEST_MAGIC {
        return Err(DecodeError::BadMagic);
    }
    let version = u16::from_be_bytes([prefix[4], prefix[5]]);
    if version != PROTOCOL_VERSION {
        return Err(DecodeError::Version {
            peer: version,
            ours: PROTOCOL_VERSION,
        });
    }
    let len = u16::from_be_bytes([prefix[6], prefix[7]]) as usize;
    if len > MAX_BODY_LEN {
        return Err(DecodeError::TooLong {
            what: "setup header",
            len,
            max: MAX_BODY_LEN,
        });
    }
    Ok(len)
}

/// Parses a request body (after the prefix).
pub fn decode_request_body(body: &[u8]) -> Result<SetupRequest, DecodeError> {
    let mut r = Reader { buf: body };
    let route_index = r.u32("route index")?;
    let hop_index = r.u8("hop index")?;
    let mode_code = r.u8("mode")?;
    let mode = Mode::from_code(mode_code)
        .ok_or_else(|| DecodeError::IllegalValue(format!("mode {mode_code}")))?;
    let setup_timeout_ms = r.u32("setup timeout")?;
    let token_len = r.u8("token length")? as usize;
    let token = r.take(token_len, "token")?.to_vec();
    let mut client_key = [0u8; KEY_LEN];
    client_key.copy_from_slice(r.take(KEY_LEN, "client key")?);
    let stripe = stripe::decode_spec(&mut r)?;
    let n = r.u8("path length")? as usize;
    if hop_index as usize + 1 + n > MAX_HOPS {
        return Err(DecodeError::TooLong {
            what: "path",
            len: hop_index as usize + 1 + n,
            max: MAX_HOPS,
        });
    }
    let mut next = Vec::with_capacity(n);
    for _ in 0..n {
        let mut id = [0u8; NODE_ID_LEN];
        id.copy_from_slice(r.take(NODE_ID_LEN, "node id")?);
        let ip = match r.u8("address family")? {
            4 => {
                let b = r.take(4, "ipv4 address")?;
                IpAddr::V4(Ipv4Addr::new(b[0], b[1], b[2], b[3]))
            }
            6 => {
                let mut b = [0u8; 16];
                b.copy_from_slice(r.take(16, "ipv6 address")?);
                IpAddr::V6(Ipv6Addr::from(b))
            }
            f => return Err(DecodeError::IllegalValue(format!("address family {f}"))),
        };
        let port = r.u16("port")?;
        next.push(NodeAddr {
            id: NodeId(id),
            addr: SocketAddr::new(ip, port),
        });
    }
    if !r.buf.is_empty() {
        return Err(DecodeError::Malformed("trailing bytes"));
    }
    Ok(SetupRequest {
        route_index,
        hop_index,
        mode,
        setup_timeout_ms,
        token,
        client_key,
        stripe,
        next,
    })
}

impl SetupRequest {
    /// Encodes prefix and body. Callers keep token and path within the caps (checked by `run`'s
    /// config validation); oversized values are truncated here rather than producing bad frames.
    pub fn encode(&self) -> Vec<u8> {
        let mut body = Vec::with_capacity(64 + self.next.len() * 35);
        body.extend_from_slice(&self.route_index.to_be_bytes());
        body.push(self.hop_index);
        body.push(self.mode.code());
        body.extend_from_slice(&self.setup_timeout_ms.to_be_bytes());
        let token = &self.token[..self.token.len().min(MAX_TOKEN_LEN)];
        body.push(token.len() as u8);
        body.extend_from_slice(token);
        body.extend_from_slice(&self.client_key);
        stripe::encode_spec(self.stripe.as_ref(), &mut body);
        let fits = MAX_HOPS.saturating_sub(self.hop_index as usize + 1);
        let next = &self.next[..self.next.len().min(fits)];
        body.push(next.len() as u8);
        for hop in next {
            body.extend_from_slice(&hop.id.0);
            match hop.addr.ip() {
                IpAddr::V4(v4) => {
                    body.push(4);
                    body.extend_from_slice(&v4.octets());
                }
                IpAddr::V6(v6) => {
                    body.push(6);
                    body.extend_from_slice(&v6.octets());
                }
            }
            body.extend_from_slice(&hop.addr.port().to_be_bytes());
        }
        let mut out = Vec::with_capacity(REQUEST_PREFIX_LEN + body.len());
        out.extend_from_slice(&REQUEST_MAGIC);
        out.extend_from_slice(&PROTOCOL_VERSION.to_be_bytes());
        out.extend_from_slice(&(body.len() as u16).to_be_bytes());
        out.extend_from_slice(&body);
        out
    }
}

impl SetupReply {
    /// Encodes a reply. The reply layout is frozen across versions so that a node can always tell
    /// a peer of another version why it refused.
    pub fn encode(&self) -> Vec<u8> {
        let (status, hop, msg) = match self {
            SetupReply::Ack { proof } => (ACK, 0u8, &proof[..]),
            // A refusal keeps the plain status 1 that a node of any version reads; other
            // causes set the high bit and carry their code.
            SetupReply::Nack {
                failed_hop,
                cause: Cause::Refused,
                message,
            } => (NACK, *failed_hop, message.as_bytes()),
            SetupReply::Nack {
                failed_hop,
                cause,
                message,
            } => (
                NACK_WITH_CAUSE | cause.code(),
                *failed_hop,
                message.as_bytes(),
            ),
        };
        let msg = truncate_utf8(msg, MAX_MESSAGE_LEN);
        let mut out = Vec::with_capacity(REPLY_PREFIX_LEN + msg.len());
        out.extend_from_slice(&REPLY_MAGIC);
        out.extend_from_slice(&PROTOCOL_VERSION.to_be_bytes());
        out.push(status);
        out.push(hop);
        out.extend_from_slice(&(msg.len() as u16).to_be_bytes());
        out.extend_from_slice(msg);
        out
    }
}

/// Reply status of an ack.
const ACK: u8 = 0;
/// Reply status of a refusal (`Cause::Refused`), the one every version reads.
const NACK: u8 = 1;
/// Reply status bit of a nack for another cause, whose code is in the low bits.
const NACK_WITH_CAUSE: u8 = 0x80;

/// A parsed reply prefix: the status, and how many message bytes follow.
#[derive(Debug, PartialEq, Eq)]
pub struct ReplyPrefix {
    /// Version the replying node speaks (may differ from ours in a nack).
    pub version: u16,
    /// `None` for ack; for a nack, the failed hop and why.
    pub nack: Option<(u8, Cause)>,
    /// Length of what follows: the nack message, or the ack's route proof.
    pub message_len: usize,
}

/// Parses the fixed reply prefix.
pub fn decode_reply_prefix(p: &[u8; REPLY_PREFIX_LEN]) -> Result<ReplyPrefix, DecodeError> {
    if p[..4] != REPLY_MAGIC {
        return Err(DecodeError::BadMagic);
    }
    let version = u16::from_be_bytes([p[4], p[5]]);
    let message_len = u16::from_be_bytes([p[8], p[9]]) as usize;
    if message_len > MAX_MESSAGE_LEN {
        return Err(DecodeError::TooLong {
            what: "nack message",
            len: message_len,
            max: MAX_MESSAGE_LEN,
        });
    }
    let nack = match p[6] {
        ACK => None,
        NACK => Some((p[7], Cause::Refused)),
        s => match Cause::from_code(s & !NACK_WITH_CAUSE) {
            Some(cause) if s & NACK_WITH_CAUSE != 0 => Some((p[7], cause)),
            _ => return Err(DecodeError::IllegalValue(format!("reply status {s}"))),
        },
    };
    Ok(ReplyPrefix {
        version,
        nack,
        message_len,
    })
}

fn truncate_utf8(s: &[u8], max: usize) -> &[u8] {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while end > 0 && (s[end] & 0xC0) == 0x80 {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::datagram::Datagram;
    use crate::wire::proof::TAG_LEN;

    fn sample() -> SetupRequest {
        SetupRequest {
            route_index: 7,
            hop_index: 1,
            mode: Mode::Up,
            setup_timeout_ms: 5000,
            token: b"secret".to_vec(),
            client_key: [9; KEY_LEN],
            stripe: None,
            next: vec![
                NodeAddr {
                    id: NodeId([1; 16]),
                    addr: "127.0.0.1:7601".parse().unwrap(),
                },
                NodeAddr {
                    id: NodeId([2; 16]),
                    addr: "[::1]:7600".parse().unwrap(),
                },
            ],
        }
    }

    fn decode(bytes: &[u8]) -> Result<SetupRequest, DecodeError> {
        let prefix: [u8; REQUEST_PREFIX_LEN] = bytes
            .get(..REQUEST_PREFIX_LEN)
            .ok_or(DecodeError::Malformed("prefix"))?
            .try_into()
            .unwrap();
        let len = decode_request_prefix(&prefix)?;
        let body = bytes
            .get(REQUEST_PREFIX_LEN..REQUEST_PREFIX_LEN + len)
            .ok_or(DecodeError::Malformed("body"))?;
        decode_request_body(body)
    }

    #[test]
    fn request_round_trips() {
        let req = sample();
        assert_eq!(decode(&req.encode()), Ok(req));
    }

    #[test]
    fn every_truncation_is_an_error_not_a_panic() {
        let bytes = sample().encode();
        for cut in 0..bytes.len() {
            let prefix_ok = cut >= REQUEST_PREFIX_LEN;
            let mut b = bytes[..cut].to_vec();
            if prefix_ok {
                // keep the declared length consistent with what is there
                let body = (cut - REQUEST_PREFIX_LEN) as u16;
                b[6..8].copy_from_slice(&body.to_be_bytes());
            }
            assert!(decode(&b).is_err(), "cut at {cut} decoded");
        }
    }

    #[test]
    fn version_mismatch_names_both_versions() {
        let mut bytes = sample().encode();
        bytes[4..6].copy_from_slice(&9u16.to_be_bytes());
        let err = decode(&bytes).unwrap_err();
        assert_eq!(err, DecodeError::Version { peer: 9, ours: 3 });
        assert_eq!(
            err.to_string(),
            "protocol version mismatch: peer speaks v9, this node speaks v3"
        );
    }

    #[test]
    fn rejects_bad_magic_oversize_and_unknown_values() {
        let mut bytes = sample().encode();
        bytes[0] = b'X';
        assert_eq!(decode(&bytes), Err(DecodeError::BadMagic));

        let mut bytes = sample().encode();
        bytes[6..8].copy_from_slice(&u16::MAX.to_be_bytes());
        assert!(matches!(decode(&bytes), Err(DecodeError::TooLong { .. })));

        let mut bytes = sample().encode();
        bytes[REQUEST_PREFIX_LEN + 5] = 99; // mode
        assert!(matches!(decode(&bytes), Err(DecodeError::IllegalValue(_))));

        let mut long = sample();
        long.hop_index = MAX_HOPS as u8;
        assert!(matches!(
            decode(&long.encode()),
            Err(DecodeError::TooLong { what: "path", .. })
        ));
    }

    /// The bytes of docs/PROTOCOL.md's worked example.
    #[test]
    fn worked_example_matches_the_docs() {
        let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
        let dst = NodeAddr {
            id: "00112233445566778899aabbccddeeff".parse().unwrap(),
            addr: "127.0.0.1:7600".parse().unwrap(),
        };
        let req = SetupRequest {
            route_index: 2,
            hop_index: 0,
            mode: Mode::Up,
            setup_timeout_ms: 5000,
            token: b"s3cret".to_vec(),
            client_key: [0x11; KEY_LEN],
            stripe: None,
            next: vec![dst],
        };
        let key = "11".repeat(32);
        let bytes = req.encode();
        assert_eq!(bytes.len(), 82);
        assert_eq!(
            hex(&bytes),
            format!(
                "4d4257510003004a00000002000000001388067333637265 74{key}0001\
                 00112233445566778899aabbccddeeff047f0000011db0"
            )
            .replace(' ', "")
        );
        let onward = SetupRequest {
            hop_index: 1,
            next: vec![],
            ..req
        };
        let bytes = onward.encode();
        assert_eq!(bytes.len(), 59);
        assert_eq!(
            hex(&bytes),
            format!("4d4257510003003300000002010000001388067333637265 74{key}0000")
                .replace(' ', "")
        );
        // The same route as part of a striped transfer: kind 1 (open), id, window 16 MiB.
        let striped = SetupRequest {
            stripe: Some(StripeSpec {
                transfer: [0xab; 16],
                window: 16 << 20,
                rejoin: false,
            }),
            ..onward.clone()
        };
        assert_eq!(
            hex(&striped.encode()),
            format!(
                "4d4257510003004700000002010000001388067333637265 74{key}01{}0100000000",
                "ab".repeat(16)
            )
            .replace(' ', "")
        );
        let nack = SetupReply::Nack {
            failed_hop: 1,
            cause: Cause::Refused,
            message: "bad token".into(),
        };
        assert_eq!(
            hex(&nack.encode()),
            "4d42575200030101000962616420746f6b656e"
        );
        let report = Datagram::Report {
            seq: 0,
            received: 123_456_789,
            tag: [0; TAG_LEN],
        };
        assert_eq!(
            hex(&report.mac_input()),
            "01000000000000000007 5bcd15".replace(' ', "")
        );
        assert_eq!(hex(&Datagram::Ping { seq: 7 }.encode()), "0200000007");
    }

    #[test]
    fn reply_round_trips_and_truncates_long_messages() {
        let ack = SetupReply::Ack {
            proof: vec![1, 2, 3],
        }
        .encode();
        let p = decode_reply_prefix(ack[..REPLY_PREFIX_LEN].try_into().unwrap()).unwrap();
        assert_eq!(p.nack, None);
        assert_eq!(p.message_len, 3);
        assert_eq!(
            Datagram::hop_ping_target(&Datagram::HopPing { hop: 4, seq: 1 }.encode()),
            Some(4)
        );
        assert_eq!(
            Datagram::hop_ping_target(&Datagram::Ping { seq: 1 }.encode()),
            None
        );

        let nack = SetupReply::Nack {
            failed_hop: 2,
            cause: Cause::Timeout,
            message: "é".repeat(1000),
        }
        .encode();
        let p = decode_reply_prefix(nack[..REPLY_PREFIX_LEN].try_into().unwrap()).unwrap();
        assert_eq!(p.nack, Some((2, Cause::Timeout)));
        assert!(p.message_len <= MAX_MESSAGE_LEN);
        let msg = std::str::from_utf8(&nack[REPLY_PREFIX_LEN..]).unwrap();
        assert_eq!(msg.len(), p.message_len);
    }
}
