//! Hostile and broken peers against real nodes on 127.0.0.1 port 0: garbage, truncated and
//! oversized headers, wrong tokens and versions, loops, forwarding to things that are not
//! mux-bw nodes, silent connections, and a connect flood. Every case ends in a nack or a
//! close, never a hang or a panic.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use mux_bw::node::{Limits, Role};
use mux_bw::wire::addr::NodeAddr;
use mux_bw::wire::identity::NodeId;
use mux_bw::wire::mode::Mode;
use mux_bw::wire::setup::{self, SetupRequest, REPLY_PREFIX_LEN};
use mux_bw::wire::tls;
use mux_bw::wire::transport;
use quinn::Endpoint;

use common::inproc::{client, start, start_with, TOKEN};

fn request(next: Vec<NodeAddr>) -> SetupRequest {
    SetupRequest {
        route_index: 5,
        hop_index: 0,
        mode: Mode::Up,
        setup_timeout_ms: 500,
        token: TOKEN.to_vec(),
        client_key: mux_bw::wire::proof::ClientHalf::new().unwrap().public(),
        stripe: None,
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
    let p = setup::decode_reply_prefix(&prefix).map_err(|e| e.to_string())?;
    let mut msg = vec![0u8; p.message_len];
    recv.read_exact(&mut msg).await.map_err(|e| e.to_string())?;
    Ok(p.nack
        .map(|(h, _)| (h, String::from_utf8_lossy(&msg).into_owned())))
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
    bad_mode[setup::REQUEST_PREFIX_LEN + 5] = 77;
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
        "protocol version mismatch: peer speaks v9, this node speaks v3"
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

fn client_at(ip: &str) -> Endpoint {
    let tuning = transport::Tuning::default();
    transport::endpoint(format!("{ip}:0").parse().unwrap(), None, &tuning).unwrap()
}

/// 1000 connections that complete the handshake and then say nothing: one source may hold at
/// most 256 of them (the rest are closed at once), every one is dropped by the header timeout,
/// memory stays bounded, and a client from another address is served throughout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_flood_of_silent_peers_is_capped_per_source_and_dropped() {
    const FLOOD: usize = 1000;
    // Long enough that the whole flood is connected before the first silent ones time out.
    let relay = common::NodeProc::start("relay", &["--token", "s3cret", "--header-timeout", "6s"]);
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

    // While the flood sits there silently, a real route from another source works.
    let other = client_at("127.0.0.2");
    let ok = send_raw(&other, &relay_addr, &request(vec![dst.addr]).encode()).await;
    assert_eq!(ok, Ok(None));
    let rss_during = rss_kib(relay.pid());

    // Every silent connection is dropped: beyond the per-source cap at once, the others by the
    // header timeout. Under a flood some close frames are lost on loopback; the relay then
    // answers the next packet with a stateless reset, which also proves it dropped the
    // connection.
    let (mut timed_out, mut capped) = (0, 0);
    for c in &conns {
        let reason = tokio::time::timeout(Duration::from_secs(15), c.closed())
            .await
            .expect("silent connection not dropped");
        let reason = reason.to_string();
        if reason.contains("no setup header in time") {
            timed_out += 1;
        } else if reason.contains("without a setup header") || reason.contains("handshake") {
            capped += 1;
        } else {
            assert_eq!(reason, "reset by peer");
        }
    }
    // One source holds at most 256 at once; on a busy machine the first ones may time out
    // before the flood is over and make room for a few more.
    assert!(
        timed_out >= 128,
        "only {timed_out} held until the header timeout"
    );
    assert!(
        capped > FLOOD / 2,
        "only {capped} refused over the cap of 256"
    );
    assert!(t.elapsed() < Duration::from_secs(30), "{:?}", t.elapsed());
    let grown_mib = rss_during.saturating_sub(rss_before) / 1024;
    assert!(
        grown_mib < 128,
        "relay grew {grown_mib} MiB for {FLOOD} silent connections"
    );
    eprintln!(
        "flood: {FLOOD} connections, {timed_out} held until the header timeout, {capped} refused \
         over the per-source cap, all gone by {:?}; relay RSS {} -> {} KiB",
        t.elapsed(),
        rss_before,
        rss_during
    );
}

/// Forwards datagrams from the returned address to `to`, and drops everything coming back: a
/// client behind it can send Initials but never complete a handshake.
async fn one_way_proxy(to: SocketAddr) -> SocketAddr {
    let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = sock.local_addr().unwrap();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 65536];
        while let Ok((n, from)) = sock.recv_from(&mut buf).await {
            if from != to {
                let _ = sock.send_to(&buf[..n], to).await;
            }
        }
    });
    addr
}

/// About a thousand QUIC Initials that never complete once shut a node for 30 s: each held a
/// connection slot until QUIC's idle timeout. Now unvalidated handshakes have a budget of their
/// own (beyond it a stateless Retry, which a spoofer or a half-open client never answers) and
/// a 5 s deadline, so a real client is served in the middle of the flood.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_open_handshakes_do_not_lock_clients_out() {
    let dst = common::NodeProc::start("serve", &["--token", "s3cret"]);
    let dst_addr: NodeAddr = dst.uri.parse().unwrap();
    let proxy = one_way_proxy(dst_addr.addr).await;
    let attacker = client();
    let mut half_open = Vec::new();
    for _ in 0..1030 {
        // Each connect sends one Initial through the proxy; no answer ever comes back.
        half_open.push(
            attacker
                .connect(proxy, &tls::server_name(&dst_addr.id))
                .unwrap(),
        );
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let t = Instant::now();
    let real = client();
    let link =
        transport::setup_link(&real, &dst_addr, &request(vec![]), Duration::from_secs(5)).await;
    assert!(link.is_ok(), "refused during the flood: {:?}", link.err());
    assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
    drop(half_open);
}

/// 60 connections that send a header prefix and then megabytes of junk, on their stream and on
/// extra ones, once took a node from 56 MB to 1 GB. Before a valid header a connection may open
/// one stream and send 16 KiB: the node stays small, and shrinks back when they leave.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strangers_cannot_make_a_node_buffer_megabytes() {
    let dst = common::NodeProc::start("serve", &["--token", "s3cret", "--header-timeout", "10s"]);
    let dst_addr: NodeAddr = dst.uri.parse().unwrap();
    let before = rss_kib(dst.pid());
    let ep = client();
    let junk = vec![0x5au8; 16 << 20];
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..60 {
        let conn = ep
            .connect(dst_addr.addr, &tls::server_name(&dst_addr.id))
            .unwrap()
            .await
            .unwrap();
        let junk = junk.clone();
        tasks.spawn(async move {
            let push = |conn: quinn::Connection, junk: Vec<u8>, prefix: bool| async move {
                if let Ok((mut send, _recv)) = conn.open_bi().await {
                    if prefix {
                        let mut p = setup::REQUEST_MAGIC.to_vec();
                        p.extend_from_slice(&setup::PROTOCOL_VERSION.to_be_bytes());
                        p.extend_from_slice(&4096u16.to_be_bytes());
                        let _ = send.write_all(&p).await;
                    }
                    let _ = send.write_all(&junk).await;
                }
            };
            let extra = |conn: quinn::Connection, junk: Vec<u8>| async move {
                if let Ok(mut send) = conn.open_uni().await {
                    let _ = send.write_all(&junk).await;
                }
            };
            let _ = tokio::time::timeout(Duration::from_secs(3), async {
                tokio::join!(
                    push(conn.clone(), junk.clone(), true),
                    push(conn.clone(), junk.clone(), false),
                    extra(conn.clone(), junk),
                )
            })
            .await;
            conn
        });
    }
    let mut conns = Vec::new();
    while let Some(c) = tasks.join_next().await {
        conns.push(c.unwrap());
    }
    let during = rss_kib(dst.pid());
    for c in &conns {
        c.close(0u32.into(), b"bye");
    }
    drop(conns);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after = rss_kib(dst.pid());
    eprintln!("strangers: node RSS {before} -> {during} -> {after} KiB");
    let grown = during.saturating_sub(before) / 1024;
    assert!(grown < 64, "60 strangers grew the node by {grown} MiB");
    assert!(
        after.saturating_sub(before) / 1024 < 32,
        "node kept {} MiB after they left",
        after.saturating_sub(before) / 1024
    );
}

/// A relay once dialed on for whatever budget the client's header asked (up to 49.7 days), and
/// kept dialing after the client had gone, holding the client's route slots meanwhile. Now the
/// onward dial is capped by `--max-setup-timeout` and stops when the client closes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relays_cap_onward_dials_and_stop_when_the_client_leaves() {
    let relay = common::NodeProc::start(
        "relay",
        &[
            "--token",
            "s3cret",
            "--max-routes-per-client",
            "2",
            "--max-setup-timeout",
            "1s",
        ],
    );
    let relay_addr: NodeAddr = relay.uri.parse().unwrap();
    let silent = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let nowhere = NodeAddr {
        id: NodeId([0x33; 16]),
        addr: silent.local_addr().unwrap(),
    };
    let mut forever = request(vec![nowhere]);
    forever.setup_timeout_ms = u32::MAX;

    // The cap: a client that waits gets a nack after about 1 s, not 49.7 days.
    let ep = client();
    let t = Instant::now();
    let (hop, msg) = nack(&ep, &relay_addr, &forever.encode()).await;
    assert_eq!(hop, 1, "{msg}");
    assert!(msg.contains("timed out after 1s"), "{msg}");
    assert!(t.elapsed() < Duration::from_secs(4), "{:?}", t.elapsed());

    // Two clients that give up after 200 ms: the relay stops dialing, and their slots (the cap
    // is 2) are free for the next route.
    for _ in 0..2 {
        let conn = ep
            .connect(relay_addr.addr, &tls::server_name(&relay_addr.id))
            .unwrap()
            .await
            .unwrap();
        let (mut send, _recv) = conn.open_bi().await.unwrap();
        send.write_all(&forever.encode()).await.unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
        conn.close(0u32.into(), b"gave up");
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut buf = [0u8; 2048];
    while silent.try_recv(&mut buf).is_ok() {} // what came before the clients left
    let dst = start(Role::Destination, Duration::from_secs(2));
    assert_eq!(
        send_raw(&ep, &relay_addr, &request(vec![dst.addr]).encode()).await,
        Ok(None),
        "the abandoned requests still hold the client's slots"
    );
    let mut late = 0;
    let until = Instant::now() + Duration::from_secs(2);
    while let Ok(Ok(_)) = tokio::time::timeout_at(until.into(), silent.recv(&mut buf)).await {
        late += 1;
    }
    assert_eq!(late, 0, "the relay kept dialing after the clients left");
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
    assert_eq!(setup::decode_reply_prefix(&ack).unwrap().nack, None);
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
