//! The client end of one established route: exactly one pump task per route moves data and
//! updates that route's lock-free counters. Every read and write has a deadline (`io_timeout`),
//! so a stalled peer ends in an error naming the timeout, never a hang.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use tokio_util::sync::CancellationToken;

use crate::node::PAYLOAD_CHUNK;
use crate::protocol::Mode;
use crate::transport::{Link, CLOSE_DONE};

/// Byte counters of one route, written by its pump and read by the sampler.
#[derive(Debug, Default)]
pub struct Counters {
    /// Goodput bytes delivered to the far end (as reported by it, in `up` mode).
    pub sent: AtomicU64,
    /// Bytes received by the client.
    pub received: AtomicU64,
}

impl Counters {
    /// Current (sent, received).
    pub fn snapshot(&self) -> (u64, u64) {
        (
            self.sent.load(Ordering::Relaxed),
            self.received.load(Ordering::Relaxed),
        )
    }
}

/// Runs the route until `cancel` (clean: `Ok`) or an error (`Err` with a cause for people).
/// Closes the link either way.
pub async fn pump(
    link: Link,
    mode: Mode,
    io_timeout: Duration,
    counters: &Counters,
    cancel: CancellationToken,
) -> Result<(), String> {
    let Link {
        conn,
        mut send,
        mut recv,
    } = link;
    let timeout_msg = |what: &str| {
        format!(
            "{what} timed out after {}",
            humantime::format_duration(io_timeout)
        )
    };
    let io = async {
        match mode {
            Mode::Up => {
                let payload = Bytes::from(vec![0u8; PAYLOAD_CHUNK]);
                let writer = async {
                    loop {
                        match tokio::time::timeout(io_timeout, send.write_chunk(payload.clone()))
                            .await
                        {
                            Ok(Ok(())) => {}
                            Ok(Err(e)) => return Err(format!("write failed: {e}")),
                            Err(_) => return Err(timeout_msg("write")),
                        }
                    }
                };
                let reports = async {
                    let mut buf = [0u8; 8];
                    loop {
                        match tokio::time::timeout(io_timeout, recv.read_exact(&mut buf)).await {
                            Ok(Ok(())) => counters
                                .sent
                                .fetch_max(u64::from_be_bytes(buf), Ordering::Relaxed),
                            Ok(Err(e)) => return Err(format!("read failed: {e}")),
                            Err(_) => return Err(timeout_msg("read")),
                        };
                    }
                };
                tokio::select! {
                    r = writer => r,
                    r = reports => r,
                }
            }
            Mode::Down => loop {
                match tokio::time::timeout(io_timeout, recv.read_chunk(usize::MAX, false)).await {
                    Ok(Ok(Some(c))) => {
                        counters
                            .received
                            .fetch_add(c.bytes.len() as u64, Ordering::Relaxed);
                    }
                    Ok(Ok(None)) => return Err("destination ended the stream".to_string()),
                    Ok(Err(e)) => return Err(format!("read failed: {e}")),
                    Err(_) => return Err(timeout_msg("read")),
                }
            },
        }
    };
    let result = tokio::select! {
        _ = cancel.cancelled() => Ok(()),
        r = io => r,
        e = conn.closed() => Err(format!("connection closed: {e}")),
    };
    conn.close(CLOSE_DONE, b"run over");
    result
}
