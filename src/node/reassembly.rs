//! The destination's reassembly of one striped transfer: segments from every route land here,
//! each verified against its route's pattern at its offset, held until the bytes before them arrive, and
//! released in order. What it holds is bounded by the transfer's reorder window and by
//! `MAX_FRAGMENTS`; duplicates, corrupt bytes and the time spent waiting behind a missing
//! segment are counted. Pure (time is passed in), so it is property-tested.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::wire::datagram::TransferFigures;
use crate::wire::stripe;

/// Most separate pieces held beyond the in-order offset: a peer sending tiny scattered segments
/// cannot make the bookkeeping outgrow the bytes.
pub const MAX_FRAGMENTS: usize = 1 << 16;

/// Why a segment was refused; the route that sent it is closed with this reason.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Violation {
    /// Its bytes are not the transfer's at that offset.
    #[error("corrupt segment at {offset}..{end}: bytes differ from the transfer's")]
    Corrupt { offset: u64, end: u64 },
    /// It ends beyond what the window allows past the in-order offset.
    #[error("segment at {offset}..{end} is beyond the reorder window (in order up to {delivered}, window {window})")]
    BeyondWindow {
        offset: u64,
        end: u64,
        delivered: u64,
        window: u64,
    },
    /// Holding it would keep more than `MAX_FRAGMENTS` separate pieces.
    #[error("more than {MAX_FRAGMENTS} separate pieces held: segments too small and scattered")]
    TooFragmented,
}

/// One transfer's reassembly buffer and its figures.
#[derive(Debug)]
pub struct Reassembly {
    window: u64,
    delivered: u64,
    /// Disjoint pieces beyond `delivered`, by offset.
    held: BTreeMap<u64, Bytes>,
    buffered: u64,
    buffer_max: u64,
    blocked_since: Option<Instant>,
    blocked: Duration,
    duplicate: u64,
    corrupt: u64,
}

impl Reassembly {
    /// An empty transfer holding at most `window` bytes.
    pub fn new(window: u64) -> Self {
        Reassembly {
            window,
            delivered: 0,
            held: BTreeMap::new(),
            buffered: 0,
            buffer_max: 0,
            blocked_since: None,
            blocked: Duration::ZERO,
            duplicate: 0,
            corrupt: 0,
        }
    }

    /// The in-order offset.
    pub fn delivered(&self) -> u64 {
        self.delivered
    }

    /// Bytes held beyond the in-order offset.
    pub fn buffered(&self) -> u64 {
        self.buffered
    }

    /// The window, in bytes.
    pub fn window(&self) -> u64 {
        self.window
    }

    /// Whether a segment ending at `end` may be taken now (else its route waits: back-pressure).
    pub fn fits(&self, end: u64) -> bool {
        end <= self.delivered.saturating_add(self.window)
    }

    /// Takes the segment `bytes` at `offset` from a route whose pattern has `seed`: verifies it,
    /// keeps what is new, releases what is now in order. Returns whether the in-order offset
    /// moved.
    pub fn offer(
        &mut self,
        offset: u64,
        bytes: Bytes,
        seed: u64,
        now: Instant,
    ) -> Result<bool, Violation> {
        let end = offset.saturating_add(bytes.len() as u64);
        if !self.fits(end) {
            return Err(Violation::BeyondWindow {
                offset,
                end,
                delivered: self.delivered,
                window: self.window,
            });
        }
        if !stripe::verify(seed, offset, &bytes) {
            self.corrupt += bytes.len() as u64;
            return Err(Violation::Corrupt { offset, end });
        }
        let pieces = self.new_pieces(offset, end);
        // A piece at the in-order offset is released at once: it never adds to what is held.
        let at_head = pieces.first().is_some_and(|p| p.0 == self.delivered);
        if self.held.len() + pieces.len() - usize::from(at_head) > MAX_FRAGMENTS {
            return Err(Violation::TooFragmented);
        }
        let mut kept = 0;
        for (a, b) in pieces {
            let piece = bytes.slice((a - offset) as usize..(b - offset) as usize);
            kept += b - a;
            self.held.insert(a, piece);
        }
        self.duplicate += (end - offset) - kept;
        self.buffered += kept;
        let before = self.delivered;
        while let Some(entry) = self.held.first_entry() {
            if *entry.key() != self.delivered {
                break;
            }
            let piece = entry.remove();
            self.delivered += piece.len() as u64;
            self.buffered -= piece.len() as u64;
        }
        self.buffer_max = self.buffer_max.max(self.buffered);
        self.track_blocking(now);
        Ok(self.delivered > before)
    }

    /// The ranges of `[offset, end)` not yet delivered nor held.
    fn new_pieces(&self, offset: u64, end: u64) -> Vec<(u64, u64)> {
        let mut cursor = offset.max(self.delivered);
        if let Some((k, v)) = self.held.range(..=cursor).next_back() {
            cursor = cursor.max(k + v.len() as u64);
        }
        let mut pieces = Vec::new();
        if cursor >= end {
            return pieces;
        }
        for (&k, v) in self.held.range(cursor..end) {
            if k > cursor {
                pieces.push((cursor, k));
            }
            cursor = cursor.max(k + v.len() as u64);
        }
        if cursor < end {
            pieces.push((cursor, end));
        }
        pieces
    }

    /// Blocked time runs while bytes are held behind a missing segment.
    fn track_blocking(&mut self, now: Instant) {
        match (self.buffered > 0, self.blocked_since) {
            (true, None) => self.blocked_since = Some(now),
            (false, Some(t)) => {
                self.blocked += now.saturating_duration_since(t);
                self.blocked_since = None;
            }
            _ => {}
        }
    }

    /// Drops what is held (every route of the transfer is gone: the client resends it all).
    pub fn drop_held(&mut self, now: Instant) {
        self.held.clear();
        self.buffered = 0;
        self.track_blocking(now);
    }

    /// The figures for a report on a route that received `received` bytes; starts a new
    /// `buffer_max` period.
    pub fn figures(&mut self, received: u64, now: Instant) -> TransferFigures {
        let ongoing = self
            .blocked_since
            .map_or(Duration::ZERO, |t| now.saturating_duration_since(t));
        let f = TransferFigures {
            received,
            delivered: self.delivered,
            buffer_max: self.buffer_max,
            blocked_ns: (self.blocked + ongoing).as_nanos() as u64,
            duplicate: self.duplicate,
            corrupt: self.corrupt,
        };
        self.buffer_max = self.buffered;
        f
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEED: u64 = 99;

    fn seg(offset: u64, len: usize) -> Bytes {
        let mut b = vec![0u8; len];
        stripe::fill(SEED, offset, &mut b);
        Bytes::from(b)
    }

    #[test]
    fn out_of_order_segments_are_held_then_released_in_order() {
        let t0 = Instant::now();
        let mut r = Reassembly::new(1000);
        assert_eq!(r.offer(100, seg(100, 100), SEED, t0), Ok(false));
        assert_eq!((r.delivered(), r.buffered()), (0, 100));
        let t1 = t0 + Duration::from_millis(30);
        assert_eq!(r.offer(0, seg(0, 100), SEED, t1), Ok(true));
        assert_eq!((r.delivered(), r.buffered()), (200, 0));
        let f = r.figures(200, t1);
        assert_eq!(f.buffer_max, 100);
        assert_eq!(f.blocked_ns, 30_000_000);
        assert_eq!((f.duplicate, f.corrupt), (0, 0));
        assert_eq!(r.figures(200, t1).buffer_max, 0, "a new period");
    }

    #[test]
    fn overlaps_count_as_duplicates_and_only_new_bytes_are_kept() {
        let t = Instant::now();
        let mut r = Reassembly::new(1000);
        r.offer(0, seg(0, 50), SEED, t).unwrap();
        r.offer(100, seg(100, 50), SEED, t).unwrap();
        // 20..180 overlaps what was delivered (20..50) and what is held (100..150).
        r.offer(20, seg(20, 160), SEED, t).unwrap();
        assert_eq!(r.delivered(), 180);
        assert_eq!(r.figures(0, t).duplicate, 30 + 50);
        // A segment wholly inside a held piece is all duplicate.
        r.offer(300, seg(300, 100), SEED, t).unwrap();
        r.offer(320, seg(320, 10), SEED, t).unwrap();
        assert_eq!(r.figures(0, t).duplicate, 30 + 50 + 10);
    }

    #[test]
    fn corrupt_and_out_of_window_segments_are_refused() {
        let t = Instant::now();
        let mut r = Reassembly::new(100);
        let mut bad = seg(0, 10).to_vec();
        bad[3] ^= 0x40;
        assert_eq!(
            r.offer(0, Bytes::from(bad), SEED, t),
            Err(Violation::Corrupt { offset: 0, end: 10 })
        );
        // Right bytes at the wrong offset are corrupt too.
        assert!(r.offer(8, seg(0, 10), SEED, t).is_err());
        assert!(matches!(
            r.offer(95, seg(95, 10), SEED, t),
            Err(Violation::BeyondWindow { .. })
        ));
        assert_eq!(r.figures(0, t).corrupt, 20);
        assert_eq!(r.buffered(), 0);
    }

    #[test]
    fn scattered_tiny_segments_are_refused_before_the_bookkeeping_outgrows_the_bytes() {
        let t = Instant::now();
        let mut r = Reassembly::new(1 << 20);
        for i in 0..MAX_FRAGMENTS as u64 {
            r.offer(2 * i + 1, seg(2 * i + 1, 1), SEED, t).unwrap();
        }
        let next = 2 * MAX_FRAGMENTS as u64 + 1;
        assert_eq!(
            r.offer(next, seg(next, 1), SEED, t),
            Err(Violation::TooFragmented)
        );
        // Filling a gap still works: it joins nothing new.
        assert_eq!(r.offer(0, seg(0, 1), SEED, t), Ok(true));
    }
}
