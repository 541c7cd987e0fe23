//! What crosses the wire for a striped transfer (`--stripe`): the transfer a route joins (in its
//! setup header), the segment framing on a route's stream, and the payload pattern that lets the
//! destination verify every byte without being told what to expect. The pattern's seed is the
//! route's own (`proof::ReportKey::stripe_seed`), known to the client and the destination only:
//! a relay can drop or repeat a route's bytes, never make up bytes that verify. Pure; decoders check every
//! length first and never panic. See docs/PROTOCOL.md, "Striped transfers".

use crate::wire::setup::{DecodeError, Reader};

/// Length of a transfer id (random, chosen by the client).
pub const TRANSFER_ID_LEN: usize = 16;
/// Bytes of a segment header on the stream: offset (8), length (4).
pub const SEGMENT_HEADER_LEN: usize = 12;
/// Largest segment a destination accepts (and `--segment` allows).
pub const MAX_SEGMENT: u32 = 1 << 20;
/// Largest reorder window a destination accepts (and `--reorder-window` allows).
pub const MAX_REORDER_WINDOW: u32 = 256 << 20;

/// How a route takes part in a striped transfer, as its setup header says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StripeSpec {
    /// The transfer: random, so two runs (or two clients) never share one.
    pub transfer: [u8; TRANSFER_ID_LEN],
    /// Most bytes the destination holds beyond its in-order offset (`--reorder-window`).
    pub window: u32,
    /// `false`: create the transfer or join it (every route at the start of a run); `true`: a
    /// redialed route, which must find the transfer (a destination that lost it nacks).
    pub rejoin: bool,
}

const STRIPE_NONE: u8 = 0;
const STRIPE_OPEN: u8 = 1;
const STRIPE_REJOIN: u8 = 2;

/// A transfer id as both ends name it (in nacks and in `start.config.stripe`): lowercase hex.
pub fn transfer_hex(id: &[u8; TRANSFER_ID_LEN]) -> String {
    id.iter().map(|b| format!("{b:02x}")).collect()
}

/// Appends the stripe field of a setup header: one byte (0 none, 1 open, 2 rejoin), then for a
/// transfer its id and window.
pub fn encode_spec(spec: Option<&StripeSpec>, out: &mut Vec<u8>) {
    let Some(s) = spec else {
        out.push(STRIPE_NONE);
        return;
    };
    out.push(if s.rejoin { STRIPE_REJOIN } else { STRIPE_OPEN });
    out.extend_from_slice(&s.transfer);
    out.extend_from_slice(&s.window.to_be_bytes());
}

/// Reads the stripe field of a setup header.
pub(crate) fn decode_spec(r: &mut Reader<'_>) -> Result<Option<StripeSpec>, DecodeError> {
    let rejoin = match r.u8("stripe kind")? {
        STRIPE_NONE => return Ok(None),
        STRIPE_OPEN => false,
        STRIPE_REJOIN => true,
        k => return Err(DecodeError::IllegalValue(format!("stripe kind {k}"))),
    };
    let mut transfer = [0u8; TRANSFER_ID_LEN];
    transfer.copy_from_slice(r.take(TRANSFER_ID_LEN, "transfer id")?);
    let window = r.u32("reorder window")?;
    if window == 0 || window > MAX_REORDER_WINDOW {
        return Err(DecodeError::IllegalValue(format!(
            "reorder window {window} (1 to {MAX_REORDER_WINDOW} bytes)"
        )));
    }
    Ok(Some(StripeSpec {
        transfer,
        window,
        rejoin,
    }))
}

/// The bytes of the stripe field, for the route proof's transcript (so no relay can move a
/// route into another transfer unnoticed).
pub fn spec_bytes(spec: Option<&StripeSpec>) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + TRANSFER_ID_LEN + 4);
    encode_spec(spec, &mut out);
    out
}

/// One segment's header: where its bytes belong in the transfer, and how many follow.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SegmentHeader {
    pub offset: u64,
    pub len: u32,
}

impl SegmentHeader {
    /// The 12 bytes on the stream.
    pub fn encode(&self) -> [u8; SEGMENT_HEADER_LEN] {
        let mut out = [0u8; SEGMENT_HEADER_LEN];
        out[..8].copy_from_slice(&self.offset.to_be_bytes());
        out[8..].copy_from_slice(&self.len.to_be_bytes());
        out
    }

    /// Parses a header: an empty segment, one over `MAX_SEGMENT`, or one ending past 2^64 is
    /// refused before any payload is read.
    pub fn decode(b: &[u8; SEGMENT_HEADER_LEN]) -> Result<Self, DecodeError> {
        let mut o = [0u8; 8];
        o.copy_from_slice(&b[..8]);
        let offset = u64::from_be_bytes(o);
        let len = u32::from_be_bytes([b[8], b[9], b[10], b[11]]);
        if len == 0 {
            return Err(DecodeError::IllegalValue("empty segment".into()));
        }
        if len > MAX_SEGMENT {
            return Err(DecodeError::TooLong {
                what: "segment",
                len: len as usize,
                max: MAX_SEGMENT as usize,
            });
        }
        if offset.checked_add(u64::from(len)).is_none() {
            return Err(DecodeError::IllegalValue(format!(
                "segment at {offset} ends past 2^64"
            )));
        }
        Ok(SegmentHeader { offset, len })
    }

    /// One past the segment's last byte.
    pub fn end(&self) -> u64 {
        self.offset + u64::from(self.len)
    }
}

/// The 8 payload bytes at offset `8 * w` (splitmix64's finalizer): every byte depends on its
/// offset and the seed, so a segment written at the wrong place, a flipped bit or bytes made
/// without the route's seed all fail `verify`.
fn word(seed: u64, w: u64) -> [u8; 8] {
    let mut z = w.wrapping_add(seed).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    (z ^ (z >> 31)).to_le_bytes()
}

/// Calls `f` with each run of pattern bytes covering `[offset, offset + len)`, in order.
fn runs(seed: u64, offset: u64, len: usize, mut f: impl FnMut(usize, &[u8]) -> bool) -> bool {
    let (mut o, mut i) = (offset, 0);
    while i < len {
        let w = word(seed, o / 8);
        let k = (o % 8) as usize;
        let n = (8 - k).min(len - i);
        if !f(i, &w[k..k + n]) {
            return false;
        }
        i += n;
        o += n as u64;
    }
    true
}

/// Fills `buf` with the transfer's bytes at `offset`.
pub fn fill(seed: u64, offset: u64, buf: &mut [u8]) {
    runs(seed, offset, buf.len(), |i, w| {
        buf[i..i + w.len()].copy_from_slice(w);
        true
    });
}

/// Whether `buf` holds exactly the transfer's bytes at `offset`.
pub fn verify(seed: u64, offset: u64, buf: &[u8]) -> bool {
    runs(seed, offset, buf.len(), |i, w| buf[i..i + w.len()] == *w)
}

/// A segment as written on the stream: header, then the pattern.
pub fn segment(seed: u64, h: SegmentHeader) -> Vec<u8> {
    let mut out = vec![0u8; SEGMENT_HEADER_LEN + h.len as usize];
    out[..SEGMENT_HEADER_LEN].copy_from_slice(&h.encode());
    fill(seed, h.offset, &mut out[SEGMENT_HEADER_LEN..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pattern_depends_on_the_offset_and_verifies_at_any_alignment() {
        let seed = 0x1234_5678;
        let mut whole = vec![0u8; 1000];
        fill(seed, 3, &mut whole);
        // Any slice of it verifies at its own offset, and not one byte over.
        for (start, end) in [(0, 1000), (5, 6), (13, 977), (1, 9)] {
            let part = &whole[start..end];
            assert!(verify(seed, 3 + start as u64, part));
            if part.len() >= 8 {
                assert!(!verify(seed, 4 + start as u64, part), "one byte over");
            }
        }
        let mut bad = whole.clone();
        bad[500] ^= 1;
        assert!(!verify(seed, 3, &bad));
        assert!(!verify(seed + 1, 3, &whole), "another transfer's bytes");
    }

    #[test]
    fn segment_headers_refuse_empty_oversized_and_overflowing_segments() {
        let h = SegmentHeader {
            offset: 65536,
            len: 65536,
        };
        assert_eq!(SegmentHeader::decode(&h.encode()), Ok(h));
        for (offset, len) in [(0, 0), (0, MAX_SEGMENT + 1), (u64::MAX - 10, 11)] {
            let e = SegmentHeader::decode(&SegmentHeader { offset, len }.encode());
            assert!(e.is_err(), "{offset} {len}");
        }
    }

    #[test]
    fn the_spec_round_trips_and_a_zero_or_huge_window_is_refused() {
        let spec = StripeSpec {
            transfer: [7; TRANSFER_ID_LEN],
            window: 16 << 20,
            rejoin: true,
        };
        let b = spec_bytes(Some(&spec));
        assert_eq!(decode_spec(&mut Reader { buf: &b }), Ok(Some(spec)));
        assert_eq!(spec_bytes(None), vec![0]);
        for window in [0, MAX_REORDER_WINDOW + 1] {
            let b = spec_bytes(Some(&StripeSpec { window, ..spec }));
            assert!(decode_spec(&mut Reader { buf: &b }).is_err());
        }
    }
}
