//! Hostile and broken peers against real nodes on 127.0.0.1 port 0: garbage, truncated and
//! oversized headers, wrong tokens and versions, loops, forwarding to things that are not
//! mux-bw nodes, silent connections, and a connect flood. Every case ends in a nack or a
//! close, never a hang or a panic.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use mux_bw::addr::NodeAddr;
use mux_bw::identity::{Identity, NodeId};
use mux_bw::node::{self, Faults, Limits, NodeConfig, Role};
use mux_bw::protocol::{self, Mode, SetupRequest, REPLY_PREFIX_LEN};
use mux_bw::tls;
use mux_bw::transport;
use quinn::Endpoint;
use tokio_util::sync::CancellationToken;

const TOKEN: &[u8] = b"s3cret";

struct Node {
    addr: NodeAddr,
    _stop: tokio_util::sync::DropGuard,
}

fn start(role: Role, header_timeout: Duration) -> Node {
    start_with(role, header_timeout, Limits::default())
}

fn start_with(role: Role, header_timeout: Duration, limits: Limits) -> Node {
    let identity = Identity::ephemeral().unwrap();
    let cfg = NodeConfig {
        role,
        id: identity.id,
        token: Some(TOKEN.to_vec()),
        header_timeout,
        limits,
        drain_timeout: Duration::from_millis(100),
        tuning: transport::Tuning::default(),
        faults: Faults::default(),
    };
    let stop = CancellationToken::new();
    let listen = "127.0.0.1:0".parse().unwrap();
    let running = node::start(listen, &identity, cfg, stop.clone()).unwrap();
    Node {
        addr: running.addr,
        _stop: stop.drop_guard(),
    }
}

fn client() -> Endpoint {
    let tuning = transport::Tuning::default();
    transport::endpoint("127.0.0.1:0".parse().unwrap(), None, &tuning).unwrap()
}

fn request(next: Vec<NodeAddr>) -> SetupRequest {
    SetupRequest {
        route_index: 5,
        hop_index: 0,
        mode: Mode::Up,
        setup_timeout_ms: 500,
        token: TOKEN.to_vec(),
        next,
    }
}

/// Sends `bytes` as the setup header and returns the reply: `Ok(None)` for ack,
/// `Ok(Some((hop, message)))` for nack, `Err` when the node closed without a reply.
async fn send_raw(
    ep: &Endpoint,
    to: &NodeAddr,
    bytes: &[u8],
) -> Result<Option<(u8, String)>, String> {
    let conn = ep
        .connect(to.addr, &tls::server_name(&to.id))
        .map_err(|e| e.to_string())?
        .await
        .map_err(|e| e.to_string())?;
    let (mut send, mut recv) = conn.open_bi().await.map_err(|e| e.to_string())?;
    send.write_all(bytes).await.map_err(|e| e.to_string())?;
    let _ = send.finish();
    let mut prefix = [0u8; REPLY_PREFIX_LEN];
    let read = tokio::time::timeout(Duration::from_secs(5), recv.read_exact(&mut prefix)).await;
    read.map_err(|_| "no reply in 5s".to_string())?
        .map_err(|e| e.to_string())?;
    let p = protocol::decode_reply_prefix(&prefix).map_err(|e| e.to_string())?;
    let mut msg = vec![0u8; p.message_len];
    recv.read_exact(&mut msg).await.map_err(|e| e.to_string())?;
    Ok(p.failed_hop
        .map(|h| (h, String::from_utf8_lossy(&msg).into_owned())))
}

async fn nack(ep: &Endpoint, to: &NodeAddr, bytes: &[u8]) -> (u8, String) {
    match send_raw(ep, to, bytes).await {
        Ok(Some(n)) => n,
        other => panic!("expected a nack, got {other:?}"),
    }
}

#[tokio::test]
async fn garbage_truncated_and_oversized_headers_get_a_nack() {
    let dst = start(Role::Destination, Duration::from_secs(2));
    let ep = client();
    let (hop, msg) = nack(&ep, &dst.addr, b"GET / HTTP/1.1\r\n\r\n").await;
    assert_eq!(
        (hop, msg.as_str()),
        (
            transport::HOP_SELF,
            "not a mux-bw setup message (bad magic)"
        )
    );

    let full = request(vec![]).encode();
    let (_, msg) = nack(&ep, &dst.addr, &full[..5]).await;
    assert!(msg.contains("truncated"), "{msg}");
    let (_, msg) = nack(&ep, &dst.addr, &full[..full.len() - 1]).await;
    assert!(msg.contains("truncated"), "{msg}");

    let mut huge = full.clone();
    huge[6..8].copy_from_slice(&u16::MAX.to_be_bytes());
    let (_, msg) = nack(&ep, &dst.addr, &huge).await;
    assert!(msg.contains("too long"), "{msg}");

    let mut bad_mode = full.clone();
    bad_mode[protocol::REQUEST_PREFIX_LEN + 5] = 77;
    let (_, msg) = nack(&ep, &dst.addr, &bad_mode).await;
    assert!(msg.contains("mode 77"), "{msg}");

    // The node still serves a proper request afterwards.
    assert_eq!(send_raw(&ep, &dst.addr, &full).await, Ok(None));
}

#[tokio::test]
async fn wrong_token_and_unknown_version_are_refused_by_name() {
    let dst = start(Role::Destination, Duration::from_secs(2));
    let ep = client();
    let mut req = request(vec![]);
    req.token = b"guess".to_vec();
    let (hop, msg) = nack(&ep, &dst.addr, &req.encode()).await;
    assert_eq!((hop, msg.as_str()), (0, "bad token"));

    let mut v9 = request(vec![]).encode();
    v9[4..6].copy_from_slice(&9u16.to_be_bytes());
    let (_, msg) = nack(&ep, &dst.addr, &v9).await;
    assert_eq!(
        msg,
        "protocol version mismatch: peer speaks v9, this node speaks v1"
    );
}

#[tokio::test]
async fn wrong_pinned_id_fails_the_handshake() {
    let dst = start(Role::Destination, Duration::from_secs(2));
    let ep = client();
    let wrong = NodeAddr {
        id: NodeId([0x42; 16]),
        addr: dst.addr.addr,
    };
    let err = send_raw(&ep, &wrong, &request(vec![]).encode())
        .await
        .unwrap_err();
    assert!(err.contains(tls::ID_MISMATCH), "{err}");
}

#[tokio::test]
async fn relay_refuses_loops_long_routes_and_roles_it_does_not_have() {
    let relay = start(Role::Relay, Duration::from_secs(2));
    let dst = start(Role::Destination, Duration::from_secs(2));
    let ep = client();
    // Forward to itself.
    let (hop, msg) = nack(
        &ep,
        &relay.addr,
        &request(vec![relay.addr, dst.addr]).encode(),
    )
    .await;
    assert_eq!(hop, 0);
    assert!(msg.contains("repeats node"), "{msg}");
    // Repeated node further down.
    let (_, msg) = nack(
        &ep,
        &relay.addr,
        &request(vec![dst.addr, dst.addr]).encode(),
    )
    .await;
    assert!(msg.contains("repeats node"), "{msg}");
    // A relay is not a destination, and a destination does not forward.
    let (_, msg) = nack(&ep, &relay.addr, &request(vec![]).encode()).await;
    assert!(msg.contains("not a destination"), "{msg}");
    let (_, msg) = nack(&ep, &dst.addr, &request(vec![relay.addr]).encode()).await;
    assert!(msg.contains("does not forward"), "{msg}");
    // The proper route works.
    assert_eq!(
        send_raw(&ep, &relay.addr, &request(vec![dst.addr]).encode()).await,
        Ok(None)
    );
}

#[tokio::test]
async fn relay_refuses_to_forward_to_something_that_is_not_a_mux_bw_node() {
    let relay = start(Role::Relay, Duration::from_secs(2));
    let ep = client();
    // A plain UDP socket that never answers QUIC.
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let not_a_node = NodeAddr {
        id: NodeId([0x11; 16]),
        addr: silent.local_addr().unwrap(),
    };
    let t = Instant::now();
    let (hop, msg) = nack(&ep, &relay.addr, &request(vec![not_a_node]).encode()).await;
    assert_eq!(hop, 1, "{msg}");
    assert!(msg.contains("timed out"), "{msg}");
    assert!(
        t.elapsed() < Duration::from_secs(3),
        "the client's 500ms setup timeout was ignored"
    );

    // A real QUIC endpoint with another identity is refused by pinning, not trusted.
    let other = start(Role::Destination, Duration::from_secs(2));
    let impostor = NodeAddr {
        id: NodeId([0x22; 16]),
        addr: other.addr.addr,
    };
    let (hop, msg) = nack(&ep, &relay.addr, &request(vec![impostor]).encode()).await;
    assert_eq!(hop, 1);
    assert!(msg.contains(tls::ID_MISMATCH), "{msg}");
}

#[tokio::test]
async fn a_peer_that_sends_nothing_is_dropped_after_the_header_timeout() {
    let dst = start(Role::Destination, Duration::from_millis(300));
    let ep = client();
    let conn = ep
        .connect(dst.addr.addr, &tls::server_name(&dst.addr.id))
        .unwrap()
        .await
        .unwrap();
    let t = Instant::now();
    let reason = tokio::time::timeout(Duration::from_secs(5), conn.closed())
        .await
        .unwrap();
    assert!(
        t.elapsed() >= Duration::from_millis(250),
        "{:?}",
        t.elapsed()
    );
    assert!(
        reason.to_string().contains("no setup header in time"),
        "{reason}"
    );
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_flood_of_silent_peers_is_dropped_and_the_relay_stays_responsive() {
    const FLOOD: usize = 1000;
    let relay = common::NodeProc::start("relay", &["--token", "s3cret", "--header-timeout", "2s"]);
    let relay_addr: NodeAddr = relay.uri.parse().unwrap();
    let dst = start(Role::Destination, Duration::from_secs(5));
    let rss_before = rss_kib(relay.pid());

    let ep = client();
    let t = Instant::now();
    let mut conns = Vec::with_capacity(FLOOD);
    let mut pending = tokio::task::JoinSet::new();
    for _ in 0..FLOOD {
        let connecting = ep
            .connect(relay_addr.addr, &tls::server_name(&relay_addr.id))
            .unwrap();
        pending.spawn(connecting);
        // Bound the handshakes in flight so the flood measures the relay, not our own queue.
        if pending.len() >= 100 {
            if let Some(Ok(Ok(c))) = pending.join_next().await {
                conns.push(c);
            }
        }
    }
    while let Some(r) = pending.join_next().await {
        if let Ok(Ok(c)) = r {
            conns.push(c);
        }
    }
    assert_eq!(conns.len(), FLOOD, "handshakes failed during the flood");

    // While the flood sits there silently, a real route through the relay still works.
    let ok = send_raw(&ep, &relay_addr, &request(vec![dst.addr]).encode()).await;
    assert_eq!(ok, Ok(None));
    let rss_during = rss_kib(relay.pid());

    // Every silent connection is dropped by the header timeout. Under a flood some close frames
    // are lost on loopback; the relay then answers the next packet with a stateless reset, which
    // also proves it dropped the connection.
    let mut explicit = 0;
    for c in &conns {
        let reason = tokio::time::timeout(Duration::from_secs(10), c.closed())
            .await
            .expect("silent connection not dropped");
        let reason = reason.to_string();
        if reason.contains("no setup header") {
            explicit += 1;
        } else {
            assert_eq!(reason, "reset by peer");
        }
    }
    assert!(
        explicit > FLOOD / 2,
        "only {explicit} connections got the close reason"
    );
    assert!(
        t.elapsed() >= Duration::from_secs(2),
        "dropped before the header timeout"
    );
    assert!(t.elapsed() < Duration::from_secs(30), "{:?}", t.elapsed());
    let grown_mib = rss_during.saturating_sub(rss_before) / 1024;
    assert!(
        grown_mib < 128,
        "relay grew {grown_mib} MiB for {FLOOD} silent connections"
    );
    eprintln!(
        "flood: {FLOOD} connections dropped by {:?} ({explicit} with reason); relay RSS {} -> {} KiB",
        t.elapsed(),
        rss_before,
        rss_during
    );
}

#[tokio::test]
async fn unreachable_destination_is_attributed_to_its_hop_not_the_relay() {
    let relay = start(Role::Relay, Duration::from_secs(2));
    let ep = client();
    let gone = start(Role::Destination, Duration::from_secs(2));
    let gone_addr = gone.addr;
    drop(gone);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let req = request(vec![gone_addr]);
    let err = transport::setup_link(&ep, &relay.addr, &req, Duration::from_millis(500))
        .await
        .err()
        .expect("setup must fail");
    assert_eq!(err.failed_hop, Some(1), "{err:?}");
    assert_eq!(err.node, Some(gone_addr.id), "{err:?}");
    let _: SocketAddr = relay.addr.addr;
}

#[tokio::test]
async fn routes_per_client_and_connections_are_capped() {
    let limits = Limits {
        max_routes_per_client: 1,
        max_connections: 2,
        ..Limits::default()
    };
    let dst = start_with(Role::Destination, Duration::from_secs(2), limits);
    let ep = client();
    // First route holds the client's only slot; a second from the same IP is refused by name.
    let req = request(vec![]).encode();
    let conn = ep
        .connect(dst.addr.addr, &tls::server_name(&dst.addr.id))
        .unwrap()
        .await
        .unwrap();
    let (mut send, mut recv) = conn.open_bi().await.unwrap();
    send.write_all(&req).await.unwrap();
    let mut ack = [0u8; REPLY_PREFIX_LEN];
    recv.read_exact(&mut ack).await.unwrap();
    assert_eq!(
        protocol::decode_reply_prefix(&ack).unwrap().failed_hop,
        None
    );
    let (_, msg) = nack(&ep, &dst.addr, &req).await;
    assert_eq!(msg, "too many routes from 127.0.0.1 (limit 1)");
    // Two connections are open now (the route, and the refused one until it closes); with the
    // refused one gone, a third handshake beyond the cap of two is refused outright.
    // (The refused connection's permit is returned once the node has closed it.)
    let mut second = None;
    for _ in 0..40 {
        let c = ep.connect(dst.addr.addr, &tls::server_name(&dst.addr.id));
        if let Ok(c) = c.unwrap().await {
            second = Some(c);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _second = second.expect("a second connection fits under a cap of 2");
    let third = ep
        .connect(dst.addr.addr, &tls::server_name(&dst.addr.id))
        .unwrap()
        .await;
    assert!(third.is_err(), "third connection accepted over a cap of 2");
    // Closing the route frees its slot.
    conn.close(0u32.into(), b"done");
    drop(conn);
}
