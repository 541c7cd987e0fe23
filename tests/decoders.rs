//! Property tests of the wire decoders: any bytes at all are refused or decoded, never a panic,
//! and every valid setup request survives a round trip; and of a striped transfer's reassembly:
//! whatever segments arrive, in any order, overlapping or corrupt, it never holds more than its
//! window, never releases a byte out of order, and counts every duplicate and corrupt byte.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use mux_bw::wire::addr::NodeAddr;
use mux_bw::wire::datagram::Datagram;
use mux_bw::wire::identity::NodeId;
use mux_bw::wire::mode::Mode;
use mux_bw::wire::proof::KEY_LEN;
use mux_bw::wire::setup::*;
use mux_bw::wire::stripe::{
    self, SegmentHeader, StripeSpec, MAX_REORDER_WINDOW, SEGMENT_HEADER_LEN,
};

use proptest::prelude::*;

fn node() -> impl Strategy<Value = NodeAddr> {
    (
        any::<[u8; 16]>(),
        any::<bool>(),
        any::<[u8; 16]>(),
        any::<u16>(),
    )
        .prop_map(|(id, v4, ip, port)| {
            let ip = if v4 {
                IpAddr::V4(Ipv4Addr::new(ip[0], ip[1], ip[2], ip[3]))
            } else {
                IpAddr::V6(Ipv6Addr::from(ip))
            };
            NodeAddr {
                id: NodeId(id),
                addr: SocketAddr::new(ip, port),
            }
        })
}

fn request() -> impl Strategy<Value = SetupRequest> {
    (
        any::<u32>(),
        0u8..4,
        0u8..4,
        any::<u32>(),
        proptest::collection::vec(any::<u8>(), 0..=MAX_TOKEN_LEN),
        any::<[u8; KEY_LEN]>(),
        proptest::collection::vec(node(), 0..4),
        proptest::option::of((any::<[u8; 16]>(), 1..=MAX_REORDER_WINDOW, any::<bool>())),
    )
        .prop_map(
            |(route_index, hop_index, mode, setup_timeout_ms, token, client_key, next, stripe)| {
                SetupRequest {
                    route_index,
                    hop_index,
                    mode: [Mode::Up, Mode::Down, Mode::Bidir, Mode::Echo][usize::from(mode % 4)],
                    setup_timeout_ms,
                    token,
                    client_key,
                    stripe: stripe.map(|(transfer, window, rejoin)| StripeSpec {
                        transfer,
                        window,
                        rejoin,
                    }),
                    next,
                }
            },
        )
}

proptest! {
    #[test]
    fn decoders_never_panic_on_any_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        if let Ok(prefix) = <[u8; REQUEST_PREFIX_LEN]>::try_from(bytes.get(..REQUEST_PREFIX_LEN).unwrap_or(&[])) {
            let _ = decode_request_prefix(&prefix);
        }
        if let Ok(prefix) = <[u8; REPLY_PREFIX_LEN]>::try_from(bytes.get(..REPLY_PREFIX_LEN).unwrap_or(&[])) {
            let _ = decode_reply_prefix(&prefix);
        }
        let _ = decode_request_body(&bytes);
        let _ = Datagram::decode(&bytes);
        if let Ok(head) = <[u8; SEGMENT_HEADER_LEN]>::try_from(bytes.get(..SEGMENT_HEADER_LEN).unwrap_or(&[])) {
            if let Ok(h) = SegmentHeader::decode(&head) {
                prop_assert!(h.len > 0 && h.len <= stripe::MAX_SEGMENT);
                prop_assert_eq!(SegmentHeader::decode(&h.encode()), Ok(h));
            }
        }
    }

    #[test]
    fn reassembly_holds_at_most_its_window_and_releases_only_in_order(
        segs in proptest::collection::vec((0u64..4096, 1usize..512, any::<bool>()), 1..200),
    ) {
        use mux_bw::node::reassembly::{Reassembly, Violation};
        const SEED: u64 = 7;
        let window = 1024;
        let mut r = Reassembly::new(window);
        let t = std::time::Instant::now();
        let (mut dup_or_new, mut corrupt) = (0u64, 0u64);
        for (offset, len, flip) in segs {
            let mut b = vec![0u8; len];
            stripe::fill(SEED, offset, &mut b);
            if flip {
                b[len / 2] ^= 0x10;
            }
            let before = r.delivered();
            match r.offer(offset, bytes::Bytes::from(b), SEED, t) {
                Ok(_) => dup_or_new += len as u64,
                Err(Violation::Corrupt { .. }) => {
                    prop_assert!(flip);
                    corrupt += len as u64;
                }
                Err(Violation::BeyondWindow { end, .. }) => prop_assert!(end > before + window),
                Err(Violation::TooFragmented) => prop_assert!(false, "2 000 pieces at most"),
            }
            prop_assert!(r.buffered() <= window);
            prop_assert!(r.delivered() >= before);
        }
        let f = r.figures(0, t);
        prop_assert_eq!(f.corrupt, corrupt);
        // Every accepted byte was delivered, is held, or was a duplicate.
        prop_assert_eq!(dup_or_new, r.delivered() + r.buffered() + f.duplicate);
    }

    #[test]
    fn valid_requests_round_trip(req in request()) {
        let bytes = req.encode();
        let prefix: [u8; REQUEST_PREFIX_LEN] = bytes[..REQUEST_PREFIX_LEN].try_into().unwrap();
        let len = decode_request_prefix(&prefix).unwrap();
        prop_assert_eq!(len, bytes.len() - REQUEST_PREFIX_LEN);
        prop_assert!(len <= MAX_BODY_LEN);
        prop_assert_eq!(decode_request_body(&bytes[REQUEST_PREFIX_LEN..]).unwrap(), req);
    }

    #[test]
    fn bodies_with_valid_prefix_and_random_tail_never_panic(
        req in request(),
        tail in proptest::collection::vec(any::<u8>(), 0..64),
        cut in 0usize..200,
    ) {
        let mut body = req.encode()[REQUEST_PREFIX_LEN..].to_vec();
        body.truncate(cut.min(body.len()));
        body.extend_from_slice(&tail);
        let _ = decode_request_body(&body);
    }
}
