//! QUIC plumbing shared by every role: endpoints, pinned dials, and the dialer's half of route
//! setup (send the header, wait for ack/nack). One QUIC connection per link per route, so each
//! route has its own congestion controller.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use quinn::{Connection, Endpoint, RecvStream, SendStream, VarInt};

use crate::wire::addr::NodeAddr;
use crate::wire::identity::{Identity, NodeId};
use crate::wire::setup::{self, SetupReply, SetupRequest, REPLY_PREFIX_LEN};
use crate::wire::tls;

use crate::wire::close::{cause_of, Cause, CLOSE_DONE, CLOSE_REFUSED};

/// Nack hop value meaning "the node that sent this reply"; the dialer rewrites it to that node's
/// index in the path (used when the header could not be parsed far enough to know the index).
pub const HOP_SELF: u8 = u8::MAX;

/// Why an endpoint could not be created.
#[derive(Debug, thiserror::Error)]
pub enum EndpointError {
    /// TLS configuration was rejected.
    #[error("tls configuration: {0}")]
    Tls(#[from] rustls::Error),
    /// The QUIC crypto layer rejected the TLS configuration.
    #[error("quic crypto configuration: {0}")]
    Crypto(String),
    /// The UDP socket could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// Congestion controller of every QUIC connection a node or client makes or accepts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Congestion {
    /// CUBIC (quinn's default).
    #[default]
    Cubic,
    /// BBR (experimental in quinn).
    Bbr,
    /// NewReno.
    Newreno,
}

/// QUIC flow-control windows and congestion control. The defaults let one route fill a
/// 1 Gbit/s x 50 ms path (bandwidth-delay product 6.25 MB); quinn's own defaults (1.25 MB stream
/// window) cap such a path at a fraction of that.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tuning {
    /// Bytes a peer may send on one stream before we read them.
    pub stream_window: u64,
    /// Bytes a peer may send on the whole connection before we read them.
    pub conn_window: u64,
    /// Bytes we buffer for sending (unacknowledged included).
    pub send_window: u64,
    /// Congestion controller.
    pub congestion: Congestion,
    /// UDP socket send buffer to ask the OS for, bytes (0 = OS default). Per socket, so several
    /// routes' worth of packets can sit in slower links' queues without the socket blocking.
    pub socket_send_buffer: usize,
    /// UDP socket receive buffer, bytes (0 = OS default). Large enough that a fast, long path
    /// (1 Gbit/s x 50 ms) loses no packets in bursts at the receiver, small enough that a
    /// CPU-bound receiver does not hide its overload in a deep queue. Measured in the lab
    /// (1 route over an emulated 1 gbit, 25 ms link; 4 relay routes on bare loopback):
    /// OS default 208 KiB: ~100-130 Mbit/s; 256 KiB: 320-940 (unstable); 512 KiB: 977-980,
    /// loaded RTT p50 ~13 ms; 1 MiB: 977, loaded RTT p50 60-225 ms.
    pub socket_recv_buffer: usize,
}

impl Default for Tuning {
    fn default() -> Self {
        Tuning {
            stream_window: 8 << 20,
            conn_window: 16 << 20,
            send_window: 16 << 20,
            congestion: Congestion::Cubic,
            socket_send_buffer: 4 << 20,
            socket_recv_buffer: 512 << 10,
        }
    }
}

impl Congestion {
    /// The name used on the command line and in events.
    pub fn as_str(self) -> &'static str {
        match self {
            Congestion::Cubic => "cubic",
            Congestion::Bbr => "bbr",
            Congestion::Newreno => "newreno",
        }
    }
}

/// `v` as a QUIC varint, saturating.
pub(crate) fn varint(v: u64) -> VarInt {
    VarInt::from_u64(v).unwrap_or(VarInt::MAX)
}

/// Connection-level receive window a node gives a peer until its setup header passed the checks
/// (`node` raises it to `Tuning::conn_window` then): enough for the largest header, so a stranger
/// cannot make the node buffer megabytes.
pub const STRANGER_WINDOW: u64 = 16 << 10;

/// Idle time after which QUIC closes a connection: longer than any `--io-timeout` default and
/// than a stall the tool must report itself (as a route event, not as a vanished connection).
const IDLE_TIMEOUT_MS: u32 = 30_000;

/// Keep-alive period: well under `IDLE_TIMEOUT_MS`, so a route that is quiet on purpose (echo
/// waiting, a relay between reports) is never closed as idle.
const KEEP_ALIVE: Duration = Duration::from_secs(5);

/// Unread datagrams buffered per connection: reports and probes are tens of bytes, read at once.
const DATAGRAM_BUFFER: usize = 64 << 10;

fn transport_config(t: &Tuning, accepting: bool) -> Arc<quinn::TransportConfig> {
    use quinn::congestion::{BbrConfig, CubicConfig, NewRenoConfig};
    let mut c = quinn::TransportConfig::default();
    c.max_idle_timeout(Some(VarInt::from_u32(IDLE_TIMEOUT_MS).into()));
    c.keep_alive_interval(Some(KEEP_ALIVE));
    c.stream_receive_window(varint(t.stream_window));
    c.datagram_receive_buffer_size(Some(DATAGRAM_BUFFER));
    if accepting {
        // A route is one bidirectional stream opened by the dialer; nothing else is accepted.
        c.max_concurrent_bidi_streams(VarInt::from_u32(1));
        c.max_concurrent_uni_streams(VarInt::from_u32(0));
        c.receive_window(varint(STRANGER_WINDOW));
    } else {
        c.receive_window(varint(t.conn_window));
    }
    c.send_window(t.send_window);
    match t.congestion {
        Congestion::Cubic => c.congestion_controller_factory(Arc::new(CubicConfig::default())),
        Congestion::Bbr => c.congestion_controller_factory(Arc::new(BbrConfig::default())),
        Congestion::Newreno => c.congestion_controller_factory(Arc::new(NewRenoConfig::default())),
    };
    Arc::new(c)
}

fn client_config(t: &Tuning) -> Result<quinn::ClientConfig, EndpointError> {
    let crypto = QuicClientConfig::try_from(tls::client_config()?)
        .map_err(|e| EndpointError::Crypto(e.to_string()))?;
    let mut cfg = quinn::ClientConfig::new(Arc::new(crypto));
    cfg.transport_config(transport_config(t, false));
    Ok(cfg)
}

/// An endpoint that can dial (always) and accept (when given an identity).
pub fn endpoint(
    bind: SocketAddr,
    identity: Option<&Identity>,
    tuning: &Tuning,
) -> Result<Endpoint, EndpointError> {
    let server = match identity {
        Some(id) => {
            let crypto = QuicServerConfig::try_from(tls::server_config(id)?)
                .map_err(|e| EndpointError::Crypto(e.to_string()))?;
            let mut cfg = quinn::ServerConfig::with_crypto(Arc::new(crypto));
            cfg.transport_config(transport_config(tuning, true));
            // Packets buffered for connections not yet accepted: small, since the node decides
            // at once.
            cfg.incoming_buffer_size(64 << 10);
            cfg.incoming_buffer_size_total(4 << 20);
            Some(cfg)
        }
        None => None,
    };
    let socket =
        udp_socket(bind, tuning).map_err(|source| EndpointError::Bind { addr: bind, source })?;
    let runtime = quinn::default_runtime().ok_or_else(|| EndpointError::Bind {
        addr: bind,
        source: std::io::Error::other("no async runtime"),
    })?;
    let mut ep = Endpoint::new(quinn::EndpointConfig::default(), server, socket, runtime)
        .map_err(|source| EndpointError::Bind { addr: bind, source })?;
    ep.set_default_client_config(client_config(tuning)?);
    Ok(ep)
}

static CLAMP_WARNED: std::sync::Once = std::sync::Once::new();

type SetBuf = fn(&socket2::Socket, usize) -> std::io::Result<()>;
type GetBuf = fn(&socket2::Socket) -> std::io::Result<usize>;

/// Binds a UDP socket with the send and receive buffers `tuning` asks for. When the OS clamps
/// them (net.core.wmem_max / rmem_max), says so once on stderr: a clamped buffer can cap the rate.
fn udp_socket(bind: SocketAddr, tuning: &Tuning) -> std::io::Result<std::net::UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(bind), Type::DGRAM, Some(Protocol::UDP))?;
    if bind.is_ipv6() {
        // Best effort: dual-stack where the OS allows it.
        let _ = socket.set_only_v6(false);
    }
    // Linux reports twice the size it grants (the kernel's bookkeeping share).
    let granted = |reported: usize| {
        if cfg!(target_os = "linux") {
            reported / 2
        } else {
            reported
        }
    };
    let mut clamped = Vec::new();
    let sizes: [(&str, &str, usize, SetBuf, GetBuf); 2] = [
        (
            "send",
            "net.core.wmem_max",
            tuning.socket_send_buffer,
            Socket::set_send_buffer_size,
            Socket::send_buffer_size,
        ),
        (
            "receive",
            "net.core.rmem_max",
            tuning.socket_recv_buffer,
            Socket::set_recv_buffer_size,
            Socket::recv_buffer_size,
        ),
    ];
    for (what, sysctl, asked, set, get) in sizes {
        if asked == 0 {
            continue;
        }
        let _ = set(&socket, asked);
        let got = granted(get(&socket).unwrap_or(0));
        if got < asked {
            clamped.push(format!(
                "{what} {} KiB of {} KiB ({sysctl})",
                got / 1024,
                asked / 1024
            ));
        }
    }
    if !clamped.is_empty() {
        CLAMP_WARNED.call_once(|| {
            use std::io::Write as _; // stderr may be closed or full: ignore, never panic
            let _ = writeln!(
                std::io::stderr(),
                "mux-bw: warning: the OS clamped UDP socket buffers: {}; high rates may be capped: \
                 raise those sysctls",
                clamped.join(", ")
            );
        });
    }
    socket.bind(&bind.into())?;
    Ok(socket.into())
}

/// A client endpoint bound to the unspecified address of `peer`'s family.
pub fn client_endpoint(peer: SocketAddr, tuning: &Tuning) -> Result<Endpoint, EndpointError> {
    let bind: SocketAddr = if peer.is_ipv4() {
        "0.0.0.0:0".parse().expect("literal address") // invariant: constant is valid
    } else {
        "[::]:0".parse().expect("literal address") // invariant: constant is valid
    };
    endpoint(bind, None, tuning)
}

/// Why one link of a route could not be set up, attributed to a hop of the client's path.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct SetupFailure {
    /// Index into the client's path of the node that failed, when known.
    pub failed_hop: Option<u8>,
    /// That node's id, when known.
    pub node: Option<NodeId>,
    /// What went wrong, for scripts.
    pub cause: Cause,
    /// What went wrong, for people.
    pub message: String,
}

impl SetupFailure {
    /// A failure no hop can be blamed for.
    pub fn unattributed(cause: Cause, message: String) -> Self {
        SetupFailure {
            failed_hop: None,
            node: None,
            cause,
            message,
        }
    }
}

/// An established link: the connection and the route's stream on it.
pub struct Link {
    /// Kept to close the link and to watch for the peer closing it.
    pub conn: Connection,
    /// The route's data stream, towards the destination.
    pub send: SendStream,
    /// The route's data stream, from the destination.
    pub recv: RecvStream,
    /// The endpoint the link was dialed from, kept alive as long as the link.
    pub endpoint: Endpoint,
    /// The destination's route proof, from the ack (checked by the client, passed on by relays).
    pub proof: Vec<u8>,
}

/// Loss and congestion state of one QUIC connection, from quinn's path statistics: what iperf3
/// shows per stream as retransmits and cwnd. For a route this is its first link only; every
/// relay terminates QUIC, so later links recover their own losses out of the client's sight.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LinkStats {
    /// Packets sent, counting retransmissions.
    pub sent_packets: u64,
    /// Of those, packets declared lost (each is retransmitted if it carried data).
    pub lost_packets: u64,
    /// Current congestion window, bytes.
    pub cwnd: u64,
    /// Current smoothed RTT of the link.
    pub rtt: Duration,
}

impl LinkStats {
    /// The connection's figures now.
    pub fn of(conn: &Connection) -> Self {
        let path = conn.stats().path;
        LinkStats {
            sent_packets: path.sent_packets,
            lost_packets: path.lost_packets,
            cwnd: path.cwnd,
            rtt: path.rtt,
        }
    }
}

/// Extra wait per remaining hop for a setup reply (see `setup_link`).
const SETUP_MARGIN: Duration = Duration::from_millis(250);

/// First connect attempt's budget; doubled per attempt up to `MAX_ATTEMPT`.
const FIRST_ATTEMPT: Duration = Duration::from_millis(250);
const MAX_ATTEMPT: Duration = Duration::from_secs(2);

/// Connects to `hop` within `budget`. A node that is still starting (nothing listens yet, so
/// the handshake gets no answer) is retried with fresh attempts at growing intervals rather
/// than left to QUIC's own slower retransmission backoff; a definite answer (wrong id,
/// refusal) ends the wait at once.
async fn connect_with_retry(
    endpoint: &Endpoint,
    hop: &NodeAddr,
    budget: Duration,
) -> Result<Connection, (Cause, String)> {
    let deadline = tokio::time::Instant::now() + budget;
    let mut attempt = FIRST_ATTEMPT;
    loop {
        let connecting = endpoint
            .connect(hop.addr, &tls::server_name(&hop.id))
            .map_err(|e| (Cause::Unreachable, format!("cannot dial {}: {e}", hop.addr)))?;
        let until = (tokio::time::Instant::now() + attempt).min(deadline);
        match tokio::time::timeout_at(until, connecting).await {
            Ok(Ok(c)) => return Ok(c),
            Ok(Err(e)) => {
                let cause = match cause_of(&e) {
                    Cause::ConnectionLost => Cause::Unreachable,
                    c => c,
                };
                return Err((cause, format!("connect to {} failed: {e}", hop.addr)));
            }
            Err(_) if until >= deadline => {
                let took = humantime::format_duration(budget);
                let message = format!("connect to {} timed out after {took}", hop.addr);
                return Err((Cause::Timeout, message));
            }
            Err(_) => attempt = (attempt * 2).min(MAX_ATTEMPT),
        }
    }
}

/// Sends the request on a new stream of `conn` and reads the chain's reply.
async fn ask(
    conn: &Connection,
    req: &SetupRequest,
) -> Result<(SendStream, RecvStream, SetupReply), (Cause, String)> {
    let lost =
        |e: &dyn std::fmt::Display, what: &str| (Cause::ConnectionLost, format!("{what}{e}"));
    let (mut send, mut recv) = conn.open_bi().await.map_err(|e| lost(&e, ""))?;
    send.write_all(&req.encode())
        .await
        .map_err(|e| lost(&e, ""))?;
    let mut prefix = [0u8; REPLY_PREFIX_LEN];
    recv.read_exact(&mut prefix)
        .await
        .map_err(|e| lost(&e, "no setup reply: "))?;
    let p = setup::decode_reply_prefix(&prefix).map_err(|e| {
        let cause = match e {
            setup::DecodeError::Version { .. } => Cause::VersionMismatch,
            _ => Cause::Refused,
        };
        (cause, e.to_string())
    })?;
    let mut msg = vec![0u8; p.message_len];
    recv.read_exact(&mut msg)
        .await
        .map_err(|e| lost(&e, "truncated setup reply: "))?;
    let reply = match p.nack {
        None => SetupReply::Ack { proof: msg },
        Some((failed_hop, cause)) => SetupReply::Nack {
            failed_hop,
            // A node of another version tells why in a plain nack; the version says it all.
            cause: if p.version != setup::PROTOCOL_VERSION {
                Cause::VersionMismatch
            } else {
                cause
            },
            message: String::from_utf8_lossy(&msg).into_owned(),
        },
    };
    Ok((send, recv, reply))
}

/// Closes a connection whose setup was abandoned (its `setup_link` future dropped: a relay that
/// shuts down, a client that stops) unless the setup finished; a dropped connection would
/// close with code 0 and an empty reason.
struct Abandoned(Option<Connection>);

impl Drop for Abandoned {
    fn drop(&mut self) {
        if let Some(conn) = self.0.take() {
            if conn.close_reason().is_none() {
                conn.close(CLOSE_DONE, b"setup abandoned");
            }
        }
    }
}

/// Dials `hop` (which sits at `req.hop_index` of the client's path), sends the setup request and
/// waits for the chain's answer. Connect is bounded by `setup_timeout`; the answer by
/// `setup_timeout` plus `SETUP_MARGIN` per remaining hop, since each relay bounds its own dial
/// the same way.
pub async fn setup_link(
    endpoint: &Endpoint,
    hop: &NodeAddr,
    req: &SetupRequest,
    setup_timeout: Duration,
) -> Result<Link, SetupFailure> {
    let here = req.hop_index;
    let at_hop = |(cause, message): (Cause, String)| SetupFailure {
        failed_hop: Some(here),
        node: Some(hop.id),
        cause,
        message,
    };
    let conn = connect_with_retry(endpoint, hop, setup_timeout)
        .await
        .map_err(at_hop)?;
    let mut abandoned = Abandoned(Some(conn.clone()));
    // Each relay down the chain bounds its own dial and wait the same way, so give every level
    // a margin over the next: a timeout deep in the chain then arrives as an attributed nack
    // before this side gives up.
    let remaining = req.next.len() as u32 + 1;
    let budget = (setup_timeout + SETUP_MARGIN) * remaining;
    let outcome = match tokio::time::timeout(budget, ask(&conn, req)).await {
        Ok(Ok(o)) => o,
        Ok(Err(e)) => {
            conn.close(CLOSE_REFUSED, b"setup failed");
            return Err(at_hop(e));
        }
        Err(_) => {
            conn.close(CLOSE_REFUSED, b"setup timed out");
            let message = format!(
                "no setup reply within {} ({remaining} hops x ({} + {} margin))",
                humantime::format_duration(budget),
                humantime::format_duration(setup_timeout),
                humantime::format_duration(SETUP_MARGIN)
            );
            return Err(SetupFailure::unattributed(Cause::Timeout, message));
        }
    };
    match outcome {
        (send, recv, SetupReply::Ack { proof }) => {
            abandoned.0 = None;
            Ok(Link {
                conn,
                send,
                recv,
                endpoint: endpoint.clone(),
                proof,
            })
        }
        (
            _,
            _,
            SetupReply::Nack {
                failed_hop,
                cause,
                message,
            },
        ) => {
            conn.close(CLOSE_REFUSED, b"setup refused");
            Err(attribute_nack(hop, req, failed_hop, cause, message))
        }
    }
}

/// A nack as a failure of the hop it names: `HOP_SELF` is the node dialed; an index further
/// down names a node of `req.next`.
fn attribute_nack(
    hop: &NodeAddr,
    req: &SetupRequest,
    failed_hop: u8,
    cause: Cause,
    message: String,
) -> SetupFailure {
    let here = req.hop_index;
    let failed_hop = if failed_hop == HOP_SELF {
        here
    } else {
        failed_hop
    };
    let node = if failed_hop == here {
        Some(hop.id)
    } else {
        failed_hop
            .checked_sub(here + 1)
            .and_then(|i| req.next.get(i as usize))
            .map(|n| n.id)
    };
    SetupFailure {
        failed_hop: Some(failed_hop),
        node,
        cause,
        message,
    }
}

/// Stream chunks taken per read: one chunk is one STREAM frame (about one packet), so reading
/// many per call takes the connection lock and wakes the reader once per batch, not per packet.
const READ_BATCH: usize = 32;

/// Buffers for one `read_chunks` call.
pub(crate) fn chunk_batch() -> Vec<Bytes> {
    vec![Bytes::new(); READ_BATCH]
}

/// Payload bytes in `chunks`.
pub(crate) fn chunks_len(chunks: &[Bytes]) -> u64 {
    chunks.iter().map(|c| c.len() as u64).sum()
}
