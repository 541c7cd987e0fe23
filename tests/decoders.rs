//! Property tests of the wire decoders: any bytes at all are refused or decoded, never a panic,
//! and every valid setup request survives a round trip.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use mux_bw::wire::addr::NodeAddr;
use mux_bw::wire::datagram::Datagram;
use mux_bw::wire::identity::NodeId;
use mux_bw::wire::mode::Mode;
use mux_bw::wire::proof::KEY_LEN;
use mux_bw::wire::setup::*;

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
    )
        .prop_map(
            |(route_index, hop_index, mode, setup_timeout_ms, token, client_key, next)| {
                SetupRequest {
                    route_index,
                    hop_index,
                    mode: [Mode::Up, Mode::Down, Mode::Bidir, Mode::Echo][usize::from(mode % 4)],
                    setup_timeout_ms,
                    token,
                    client_key,
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
