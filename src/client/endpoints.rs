//! Client endpoints (UDP sockets) by first link, and the rewriting of emulated-link proxy
//! addresses back to the nodes' own in error messages.

use std::collections::HashMap;
use std::net::SocketAddr;

/// Most routes over one first link that share a client endpoint (UDP socket). Fewer sockets
/// and endpoint driver tasks save CPU per byte with many routes, but one endpoint's driver
/// receives for all of its connections and they all wait on one socket's send buffer: in the
/// loopback bench (docs/PERFORMANCE.md) one endpoint for all 256 routes lost a third of the
/// throughput; 32 did best at 256 routes, and caps of 8 to 32 were alike at 64.
pub(crate) const ROUTES_PER_ENDPOINT: usize = 32;

/// Client endpoints (UDP sockets) by first-hop address, each with the number of routes dialed
/// from it. Routes whose first link differs never share a socket, so one link's full queue cannot
/// block another link's sends (issue 6: 44 instead of 76 Mbit/s over four 20 mbit links); up to
/// `ROUTES_PER_ENDPOINT` routes over the same first link share one, as they share that link's
/// queue anyway.
pub(crate) struct EndpointPool<T> {
    pub(crate) by_first_hop: HashMap<SocketAddr, Vec<(T, usize)>>,
}

impl<T: Clone> EndpointPool<T> {
    pub(crate) fn new() -> Self {
        EndpointPool {
            by_first_hop: HashMap::new(),
        }
    }

    /// An endpoint for one more route whose first link goes to `first`; `make` makes a new one
    /// when every endpoint to `first` is full.
    pub(crate) fn get_or_make<E>(
        &mut self,
        first: SocketAddr,
        make: impl FnOnce() -> Result<T, E>,
    ) -> Result<T, E> {
        let pool = self.by_first_hop.entry(first).or_default();
        if let Some((ep, n)) = pool.last_mut().filter(|(_, n)| *n < ROUTES_PER_ENDPOINT) {
            *n += 1;
            return Ok(ep.clone());
        }
        let ep = make()?;
        pool.push((ep.clone(), 1));
        Ok(ep)
    }

    /// Every endpoint made, leaving the pool empty.
    pub(crate) fn drain(&mut self) -> impl Iterator<Item = T> + '_ {
        self.by_first_hop
            .drain()
            .flat_map(|(_, v)| v)
            .map(|(ep, _)| ep)
    }
}

/// `msg` with every address `from` of `pairs` (a whole address: not followed by a digit)
/// written as its `to`, in one pass, so a replacement is never replaced again.
pub(crate) fn unwire(msg: &str, pairs: &[(String, String)]) -> String {
    let mut out = String::with_capacity(msg.len());
    let mut rest = msg;
    'scan: while let Some(c) = rest.chars().next() {
        for (from, to) in pairs {
            if let Some(after) = rest.strip_prefix(from.as_str()) {
                if !after.starts_with(|c: char| c.is_ascii_digit()) {
                    out.push_str(to);
                    rest = after;
                    continue 'scan;
                }
            }
        }
        out.push(c);
        rest = &rest[c.len_utf8()..];
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_share_an_endpoint_only_over_the_same_first_link_and_up_to_the_cap() {
        let (a, b): (SocketAddr, SocketAddr) = (
            "127.0.0.1:1000".parse().unwrap(),
            "127.0.0.1:2000".parse().unwrap(),
        );
        let mut pool = EndpointPool::new();
        let mut made = 0;
        let mut get = |pool: &mut EndpointPool<u32>, at| {
            pool.get_or_make(at, || -> Result<u32, ()> {
                made += 1;
                Ok(made)
            })
            .unwrap()
        };
        let over_a: Vec<u32> = (0..ROUTES_PER_ENDPOINT + 1)
            .map(|_| get(&mut pool, a))
            .collect();
        assert!(over_a[..ROUTES_PER_ENDPOINT].iter().all(|&e| e == 1));
        assert_eq!(
            over_a[ROUTES_PER_ENDPOINT], 2,
            "a full endpoint is not shared further"
        );
        assert_eq!(
            get(&mut pool, b),
            3,
            "another first link gets its own socket"
        );
        assert_eq!(get(&mut pool, a), 2);
        let mut all: Vec<u32> = pool.drain().collect();
        all.sort_unstable();
        assert_eq!(all, [1, 2, 3]);
        assert_eq!(pool.drain().count(), 0);
    }

    #[test]
    fn errors_name_the_nodes_not_the_emulated_links_proxies() {
        let pairs = [
            ("127.0.0.1:4012".to_string(), "127.0.0.1:9".to_string()),
            ("127.0.0.1:40123".to_string(), "127.0.0.1:4012".to_string()),
        ];
        assert_eq!(
            unwire(
                "connect to 127.0.0.1:40123 timed out; hop 1 at 127.0.0.1:4012",
                &pairs
            ),
            "connect to 127.0.0.1:4012 timed out; hop 1 at 127.0.0.1:9"
        );
        assert_eq!(unwire("no address here ✗", &pairs), "no address here ✗");
    }
}
