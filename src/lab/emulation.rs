//! The lab's emulated links: a UDP proxy per directed link between two nodes, shaping each
//! direction with a `shaper::Shaper` (rate, bounded queue, delay, loss). Routes are rewired by
//! giving each hop the proxy's address instead of the node's: identities are checked end to end
//! by TLS, so a proxy can only delay, drop or pass packets. See docs/LAB.md for the model.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::client::wiring::PathWiring;
use crate::lab::shaper::{LinkSpec, Shaper, Verdict};
use crate::lab::topology::LinkPlan;
use crate::report::events::LinksView;
use crate::wire::addr::NodeAddr;
use crate::wire::identity::NodeId;

/// Granularity of tokio's timer: how early a packet may leave instead of sleeping.
const TIMER_TICK: std::time::Duration = std::time::Duration::from_millis(1);

/// Largest datagram a proxy forwards.
const MAX_DATAGRAM: usize = 65_535;

/// The emulated links of one lab: created on first use, shared by every route that crosses
/// the same pair of nodes (so routes through one link compete for it, as on a real network).
pub struct Links {
    /// Each relay's link, by id (see `spec_for`).
    relay_links: HashMap<NodeId, LinkSpec>,
    /// The plan, in lab order, for `start.config.links`.
    plan: LinkPlan,
    /// Proxy address per directed link (from `None` = the client); locked only to look up or
    /// insert, never across I/O.
    proxies: Mutex<HashMap<(Option<NodeId>, NodeId), SocketAddr>>,
    /// Stops every proxy task; cancelled when the links are dropped, so no proxy outlives the
    /// run that dials through it.
    shutdown: CancellationToken,
    seed: u64,
}

impl std::fmt::Debug for Links {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Links")
            .field("plan", &self.plan)
            .finish_non_exhaustive()
    }
}

impl Links {
    /// The links of `plan` between the client, the destination and `relays` (in lab order, as
    /// the plan's); their proxies stop when the `Links` is dropped.
    pub fn new(plan: &LinkPlan, relays: &[NodeAddr]) -> Self {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64);
        Links {
            relay_links: relays
                .iter()
                .map(|r| r.id)
                .zip(plan.relays.iter().copied())
                .collect(),
            plan: plan.clone(),
            proxies: Mutex::new(HashMap::new()),
            shutdown: CancellationToken::new(),
            seed,
        }
    }

    /// The link from `from` (`None`: the client) to `to`, the last hop when `last`: the direct
    /// link for a direct route; otherwise the link of the relay it leads to, or, into the
    /// destination, of the relay it leaves. A node the plan does not know gets no shaping.
    fn spec_for(&self, from: Option<NodeId>, to: NodeId, last: bool) -> LinkSpec {
        let relay = match (from, last) {
            (None, true) => return self.plan.direct,
            (Some(relay), true) => relay,
            (_, false) => to,
        };
        self.relay_links
            .get(&relay)
            .copied()
            .unwrap_or_else(LinkSpec::transparent)
    }

    /// The path as the client must dial it: every hop's address replaced by the proxy of the
    /// link that leads to it. Must be called inside a tokio runtime.
    pub fn wire_path(&self, path: &[NodeAddr]) -> io::Result<Vec<NodeAddr>> {
        let mut from = None;
        let mut out = Vec::with_capacity(path.len());
        for (i, hop) in path.iter().enumerate() {
            let spec = self.spec_for(from, hop.id, i + 1 == path.len());
            let addr = if spec.is_transparent() {
                hop.addr
            } else {
                self.proxy(from, hop, spec)?
            };
            out.push(NodeAddr { id: hop.id, addr });
            from = Some(hop.id);
        }
        Ok(out)
    }

    fn proxy(&self, from: Option<NodeId>, to: &NodeAddr, spec: LinkSpec) -> io::Result<SocketAddr> {
        let mut proxies = self.proxies.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(a) = proxies.get(&(from, to.id)) {
            return Ok(*a);
        }
        let seed = self.seed ^ (proxies.len() as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        let addr = spawn_proxy(to.addr, spec, seed, self.shutdown.clone())?;
        proxies.insert((from, to.id), addr);
        Ok(addr)
    }
}

impl Drop for Links {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// Buffer of a proxy socket. The proxy stands for a wire: it must not add loss of its own when
/// its task is scheduled late, so it gets deep buffers (the shaper decides every drop).
const WIRE_BUFFER: usize = 4 << 20;

/// A UDP socket on 127.0.0.1 port 0 with `WIRE_BUFFER`-sized buffers.
fn wire_socket() -> io::Result<UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
    let _ = s.set_recv_buffer_size(WIRE_BUFFER);
    let _ = s.set_send_buffer_size(WIRE_BUFFER);
    s.set_nonblocking(true)?;
    s.bind(&std::net::SocketAddr::from(([127, 0, 0, 1], 0)).into())?;
    UdpSocket::from_std(s.into())
}

/// A packet waiting for its delivery time.
struct Delayed {
    at: Instant,
    data: Vec<u8>,
    /// `None`: forward to the target through the session socket; `Some(a)`: back to `a`.
    back_to: Option<SocketAddr>,
    session: Arc<UdpSocket>,
}

/// Starts a proxy for `target` on 127.0.0.1 port 0; returns its address.
fn spawn_proxy(
    target: SocketAddr,
    spec: LinkSpec,
    seed: u64,
    shutdown: CancellationToken,
) -> io::Result<SocketAddr> {
    let listener = Arc::new(wire_socket()?);
    let addr = listener.local_addr()?;
    let (fwd_tx, fwd_rx) = mpsc::unbounded_channel::<Delayed>();
    let (rev_tx, rev_rx) = mpsc::unbounded_channel::<Delayed>();
    tokio::spawn(deliver(fwd_rx, listener.clone(), shutdown.clone()));
    tokio::spawn(deliver(rev_rx, listener.clone(), shutdown.clone()));
    let reverse = Arc::new(Mutex::new(Shaper::new(spec, seed.rotate_left(17))));
    tokio::spawn(async move {
        let mut forward = Shaper::new(spec, seed);
        let mut sessions: HashMap<SocketAddr, Arc<UdpSocket>> = HashMap::new();
        let mut buf = vec![0u8; MAX_DATAGRAM];
        loop {
            let (n, src) = tokio::select! {
                r = listener.recv_from(&mut buf) => match r {
                    Ok(x) => x,
                    Err(_) => continue,
                },
                _ = shutdown.cancelled() => return,
            };
            let session = match sessions.get(&src) {
                Some(s) => s.clone(),
                None => match open_session(target, src, &reverse, &rev_tx, &shutdown).await {
                    Ok(s) => {
                        sessions.insert(src, s.clone());
                        s
                    }
                    Err(_) => continue,
                },
            };
            if let Verdict::SendAt(at) = forward.admit(Instant::now(), n) {
                let _ = fwd_tx.send(Delayed {
                    at,
                    data: buf[..n].to_vec(),
                    back_to: None,
                    session,
                });
            }
        }
    });
    Ok(addr)
}

/// A socket toward the target for one source, and the task that carries its replies back.
async fn open_session(
    target: SocketAddr,
    src: SocketAddr,
    reverse: &Arc<Mutex<Shaper>>,
    rev_tx: &mpsc::UnboundedSender<Delayed>,
    shutdown: &CancellationToken,
) -> io::Result<Arc<UdpSocket>> {
    let sock = wire_socket()?;
    sock.connect(target).await?;
    let sock = Arc::new(sock);
    let (reader, reverse, rev_tx, shutdown) = (
        sock.clone(),
        reverse.clone(),
        rev_tx.clone(),
        shutdown.clone(),
    );
    tokio::spawn(async move {
        let mut buf = vec![0u8; MAX_DATAGRAM];
        loop {
            let n = tokio::select! {
                r = reader.recv(&mut buf) => match r {
                    Ok(n) => n,
                    Err(_) => continue,
                },
                _ = shutdown.cancelled() => return,
            };
            let verdict = reverse
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .admit(Instant::now(), n);
            if let Verdict::SendAt(at) = verdict {
                let _ = rev_tx.send(Delayed {
                    at,
                    data: buf[..n].to_vec(),
                    back_to: Some(src),
                    session: reader.clone(),
                });
            }
        }
    });
    Ok(sock)
}

/// Sends queued packets at their delivery times (in order: times are non-decreasing per
/// direction, because the link is FIFO and the delay fixed).
async fn deliver(
    mut rx: mpsc::UnboundedReceiver<Delayed>,
    listener: Arc<UdpSocket>,
    shutdown: CancellationToken,
) {
    loop {
        let p = tokio::select! {
            p = rx.recv() => match p {
                Some(p) => p,
                None => return,
            },
            _ = shutdown.cancelled() => return,
        };
        // Sleep only for packets due more than one timer tick from now: a sleep lasts at least
        // a tick (about 1 ms), so sleeping for each packet of a fast link would pace it at one
        // packet per tick. Packets due within the tick go now, up to a tick early.
        if p.at > Instant::now() + TIMER_TICK {
            tokio::select! {
                _ = tokio::time::sleep_until(p.at.into()) => {}
                _ = shutdown.cancelled() => return,
            }
        }
        // A send that fails (peer gone, buffer full) is a lost packet, as on a real link.
        let _ = match p.back_to {
            None => p.session.send(&p.data).await,
            Some(a) => listener.send_to(&p.data, a).await,
        };
    }
}

impl PathWiring for Links {
    fn wire_path(&self, path: &[NodeAddr]) -> io::Result<Vec<NodeAddr>> {
        Links::wire_path(self, path)
    }

    fn view(&self) -> LinksView {
        let relay = self
            .plan
            .relays
            .first()
            .copied()
            .unwrap_or_else(LinkSpec::transparent);
        LinksView {
            relay: relay.into(),
            direct: self.plan.direct.into(),
            relays: self.plan.relays.iter().map(|&l| l.into()).collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lab::shaper::Rate;
    use std::time::Duration;

    #[tokio::test]
    async fn proxy_delays_both_directions() {
        let echo = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let echo_addr = echo.local_addr().unwrap();
        tokio::spawn(async move {
            let mut b = [0u8; 64];
            while let Ok((n, a)) = echo.recv_from(&mut b).await {
                let _ = echo.send_to(&b[..n], a).await;
            }
        });
        let spec = LinkSpec {
            rate: Some(Rate(100_000_000)),
            delay: Duration::from_millis(30),
            loss_pct: 0.0,
            queue: crate::lab::shaper::QUEUE_TIME,
        };
        let links = Links::new(&LinkPlan::uniform(spec, spec, 0), &[]);
        let node = NodeAddr {
            id: NodeId([1; 16]),
            addr: echo_addr,
        };
        let wired = links.wire_path(&[node]).unwrap();
        assert_ne!(wired[0].addr, echo_addr);
        assert_eq!(links.wire_path(&[node]).unwrap(), wired, "links are shared");
        let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let t = Instant::now();
        client.send_to(b"ping", wired[0].addr).await.unwrap();
        let mut b = [0u8; 64];
        let n = tokio::time::timeout(Duration::from_secs(2), client.recv(&mut b))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(&b[..n], b"ping");
        let rtt = t.elapsed();
        assert!(rtt >= Duration::from_millis(60), "{rtt:?}");
        assert!(rtt < Duration::from_millis(500), "{rtt:?}");
        drop(links);
    }

    #[test]
    fn transparent_links_are_not_proxied() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let none = LinkSpec {
                rate: None,
                delay: Duration::ZERO,
                loss_pct: 0.0,
                queue: crate::lab::shaper::QUEUE_TIME,
            };
            let links = Links::new(&LinkPlan::uniform(none, none, 0), &[]);
            let node = NodeAddr {
                id: NodeId([1; 16]),
                addr: "127.0.0.1:9".parse().unwrap(),
            };
            assert_eq!(links.wire_path(&[node]).unwrap(), vec![node]);
        });
    }
}
