//! Route planning: which intermediates each route goes through. Pure: no I/O, no clock.
//!
//! Rules (docs/ARCHITECTURE.md): a route has exactly `min_hops` links unless pinned with `--via`;
//! intermediates are pairwise disjoint across routes unless `allow_overlap`; no route repeats a
//! node or uses the destination as an intermediate; `min_hops >= 2` never plans a direct route.

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;

use crate::wire::addr::NodeAddr;
use crate::wire::identity::NodeId;
use crate::wire::setup::{MAX_HOPS, MAX_ROUTES};

/// A planned route: its index and the nodes after the client, ending with the destination.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlannedRoute {
    /// Route index, carried in every header and event about this route.
    pub index: u32,
    /// Intermediates then the destination.
    pub path: Vec<NodeAddr>,
}

impl PlannedRoute {
    /// Number of links.
    pub fn hops(&self) -> usize {
        self.path.len()
    }

    /// Node ids as strings, for events.
    pub fn path_ids(&self) -> Vec<String> {
        self.path.iter().map(|n| n.id.to_string()).collect()
    }
}

/// What to plan.
#[derive(Clone, Debug)]
pub struct PlanRequest {
    /// The destination every route ends at.
    pub dst: NodeAddr,
    /// Relays available for unpinned routes.
    pub pool: Vec<NodeAddr>,
    /// Number of routes (indices 0..routes).
    pub routes: usize,
    /// Links per unpinned route; at least this many for pinned ones.
    pub min_hops: usize,
    /// Route index → intermediates given with `--via`.
    pub pins: BTreeMap<usize, Vec<NodeAddr>>,
    /// Let routes share intermediates.
    pub allow_overlap: bool,
}

/// Why no plan exists. Each message names the values and what was expected.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PlanError {
    /// `--routes 0`.
    #[error("invalid --routes 0: expected at least 1")]
    NoRoutes,
    /// More routes than `MAX_ROUTES`.
    #[error("invalid --routes {0}: expected 1 to {MAX_ROUTES} (the measured limit, docs/PERFORMANCE.md)")]
    TooManyRoutes(usize),
    /// `--min-hops` out of range.
    #[error("invalid --min-hops {0}: expected 1 to {MAX_HOPS}")]
    MinHops(usize),
    /// A pin names a route that does not exist.
    #[error(
        "invalid --via {index}=...: route index {index} is out of range for --routes {routes}"
    )]
    PinIndex { index: usize, routes: usize },
    /// A pinned route is too short or too long.
    #[error("invalid --via {index}=...: gives route {index} {hops} hops, expected {min} to {MAX_HOPS} (--min-hops {min})")]
    PinHops {
        index: usize,
        hops: usize,
        min: usize,
    },
    /// A node appears twice in one route, or is the destination.
    #[error("invalid route {index}: node {node} appears twice or is the destination")]
    Loop { index: usize, node: NodeId },
    /// A relay would have to forward to a node of the other IP version: a relay dials onward
    /// from the socket it listens on, so an IPv4 relay cannot reach an IPv6 address.
    #[error("invalid route {index}: relay {from} at {from_addr} ({}) cannot forward to {to} at {to_addr} ({}): consecutive hops must use the same IP version", family(.from_addr), family(.to_addr))]
    MixedFamilies {
        index: usize,
        from: NodeId,
        from_addr: SocketAddr,
        to: NodeId,
        to_addr: SocketAddr,
    },
    /// The relay list names the destination or a relay twice.
    #[error("invalid relay list: node {0} is listed twice or is the destination")]
    Pool(NodeId),
    /// Routes through relays, and not one relay given.
    #[error("--min-hops {0} needs relays: pass --relay, --relays-file, or use lab")]
    NoRelays(usize),
    /// Not enough relays for disjoint routes.
    #[error("--routes {routes} --min-hops {min_hops} needs {needed} disjoint relays, {given} given (pass --allow-overlap to share relays)")]
    TooFewRelays {
        routes: usize,
        min_hops: usize,
        needed: usize,
        given: usize,
    },
    /// Pins put one relay on two routes.
    #[error("relay {node} is on routes {a} and {b}: routes must not share relays (pass --allow-overlap to share relays)")]
    PinnedOverlap { node: NodeId, a: usize, b: usize },
    /// Even with overlap allowed, one route needs more distinct relays than exist.
    #[error("--min-hops {min_hops} needs {needed} distinct relays per route, {given} given")]
    TooFewForOneRoute {
        min_hops: usize,
        needed: usize,
        given: usize,
    },
}

fn family(addr: &SocketAddr) -> &'static str {
    if addr.is_ipv4() {
        "IPv4"
    } else {
        "IPv6"
    }
}

/// Plans every route, or says why it cannot. Deterministic: relays are used in pool order.
pub fn plan(req: &PlanRequest) -> Result<Vec<PlannedRoute>, PlanError> {
    check_request(req)?;
    let owner = check_pins(req)?;
    let mut assigned = req.pins.clone();
    assigned.extend(assign_unpinned(req, &owner)?);
    let routes: Vec<PlannedRoute> = (0..req.routes)
        .map(|i| {
            let mut path = assigned.remove(&i).unwrap_or_default();
            path.push(req.dst);
            PlannedRoute {
                index: i as u32,
                path,
            }
        })
        .collect();
    routes.iter().try_for_each(check_families)?;
    Ok(routes)
}

/// The counts are in range and the pool lists no node twice (nor the destination).
fn check_request(req: &PlanRequest) -> Result<(), PlanError> {
    if req.routes == 0 {
        return Err(PlanError::NoRoutes);
    }
    if req.routes > MAX_ROUTES {
        return Err(PlanError::TooManyRoutes(req.routes));
    }
    if req.min_hops == 0 || req.min_hops > MAX_HOPS {
        return Err(PlanError::MinHops(req.min_hops));
    }
    let mut seen = HashSet::from([req.dst.id]);
    for r in &req.pool {
        if !seen.insert(r.id) {
            return Err(PlanError::Pool(r.id));
        }
    }
    Ok(())
}

/// Checks each pinned route's shape and, unless overlap is allowed, that no two share a relay.
/// Returns which route first pinned each relay.
fn check_pins(req: &PlanRequest) -> Result<BTreeMap<NodeId, usize>, PlanError> {
    let mut owner: BTreeMap<NodeId, usize> = BTreeMap::new();
    for (&index, mids) in &req.pins {
        if index >= req.routes {
            return Err(PlanError::PinIndex {
                index,
                routes: req.routes,
            });
        }
        let hops = mids.len() + 1;
        if hops < req.min_hops || hops > MAX_HOPS {
            return Err(PlanError::PinHops {
                index,
                hops,
                min: req.min_hops,
            });
        }
        let mut in_route = HashSet::from([req.dst.id]);
        for m in mids {
            if !in_route.insert(m.id) {
                return Err(PlanError::Loop { index, node: m.id });
            }
            if let Some(&a) = owner.get(&m.id) {
                if !req.allow_overlap {
                    return Err(PlanError::PinnedOverlap {
                        node: m.id,
                        a,
                        b: index,
                    });
                }
            }
            owner.entry(m.id).or_insert(index);
        }
    }
    Ok(owner)
}

/// Intermediates for every unpinned route: `min_hops - 1` each, in pool order, from relays no
/// pin took (or cycling through the whole pool with overlap allowed).
fn assign_unpinned(
    req: &PlanRequest,
    owner: &BTreeMap<NodeId, usize>,
) -> Result<BTreeMap<usize, Vec<NodeAddr>>, PlanError> {
    let per_route = req.min_hops - 1;
    let unpinned: Vec<usize> = (0..req.routes)
        .filter(|i| !req.pins.contains_key(i))
        .collect();
    if per_route == 0 || unpinned.is_empty() {
        return Ok(BTreeMap::new());
    }
    if req.pool.is_empty() {
        return Err(PlanError::NoRelays(req.min_hops));
    }
    if req.allow_overlap {
        if req.pool.len() < per_route {
            return Err(PlanError::TooFewForOneRoute {
                min_hops: req.min_hops,
                needed: per_route,
                given: req.pool.len(),
            });
        }
        return Ok(unpinned
            .iter()
            .enumerate()
            .map(|(k, &i)| {
                let mids = (0..per_route)
                    .map(|j| req.pool[(k * per_route + j) % req.pool.len()])
                    .collect();
                (i, mids)
            })
            .collect());
    }
    let free: Vec<NodeAddr> = req
        .pool
        .iter()
        .filter(|r| !owner.contains_key(&r.id))
        .copied()
        .collect();
    let needed = unpinned.len() * per_route;
    if free.len() < needed {
        let pinned: usize = req.pins.values().map(Vec::len).sum();
        return Err(PlanError::TooFewRelays {
            routes: req.routes,
            min_hops: req.min_hops,
            needed: needed + pinned,
            given: free.len() + owner.len(),
        });
    }
    Ok(unpinned
        .iter()
        .zip(free.chunks_exact(per_route))
        .map(|(&i, mids)| (i, mids.to_vec()))
        .collect())
}

/// Consecutive hops of a route use the same IP version (a relay dials from its own socket).
fn check_families(r: &PlannedRoute) -> Result<(), PlanError> {
    match r
        .path
        .windows(2)
        .find(|w| w[0].addr.is_ipv4() != w[1].addr.is_ipv4())
    {
        Some(w) => Err(PlanError::MixedFamilies {
            index: r.index as usize,
            from: w[0].id,
            from_addr: w[0].addr,
            to: w[1].id,
            to_addr: w[1].addr,
        }),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::wire::addr::test_node as node;

    fn req(routes: usize, min_hops: usize, pool: usize) -> PlanRequest {
        PlanRequest {
            dst: node(0),
            pool: (1..=pool as u8).map(node).collect(),
            routes,
            min_hops,
            pins: BTreeMap::new(),
            allow_overlap: false,
        }
    }

    fn intermediates(routes: &[PlannedRoute]) -> Vec<NodeId> {
        routes
            .iter()
            .flat_map(|r| r.path[..r.path.len() - 1].iter().map(|n| n.id))
            .collect()
    }

    #[test]
    fn disjoint_routes_with_one_intermediate() {
        let routes = plan(&req(4, 2, 5)).unwrap();
        assert_eq!(routes.len(), 4);
        for (i, r) in routes.iter().enumerate() {
            assert_eq!(r.index as usize, i);
            assert_eq!(r.hops(), 2);
            assert_eq!(r.path.last(), Some(&node(0)));
        }
        let mids = intermediates(&routes);
        assert_eq!(mids.len(), mids.iter().collect::<HashSet<_>>().len());
    }

    #[test]
    fn min_hops_three_gives_two_intermediates() {
        let routes = plan(&req(2, 3, 4)).unwrap();
        assert!(routes.iter().all(|r| r.hops() == 3));
        assert_eq!(intermediates(&routes).len(), 4);
    }

    #[test]
    fn min_hops_one_is_direct_and_needs_no_relays() {
        let routes = plan(&req(3, 1, 0)).unwrap();
        assert!(routes.iter().all(|r| r.path == vec![node(0)]));
    }

    /// It used to suggest `--allow-overlap`, which then failed differently.
    #[test]
    fn routes_through_relays_with_no_relay_at_all_say_where_relays_come_from() {
        for overlap in [false, true] {
            let mut r = req(2, 2, 0);
            r.allow_overlap = overlap;
            let err = plan(&r).unwrap_err().to_string();
            assert_eq!(
                err,
                "--min-hops 2 needs relays: pass --relay, --relays-file, or use lab"
            );
        }
    }

    #[test]
    fn too_few_relays_names_the_numbers() {
        let err = plan(&req(8, 2, 5)).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("--routes 8 --min-hops 2 needs 8 disjoint relays, 5 given"),
            "{err}"
        );
        let mut r = req(8, 2, 5);
        r.allow_overlap = true;
        let routes = plan(&r).unwrap();
        assert!(routes.iter().all(|r| r.hops() == 2));
    }

    #[test]
    fn via_pins_a_route_and_others_avoid_its_relay() {
        let mut r = req(3, 2, 3);
        r.pins.insert(2, vec![node(1)]);
        let routes = plan(&r).unwrap();
        assert_eq!(routes[2].path, vec![node(1), node(0)]);
        let mids = intermediates(&routes);
        assert_eq!(mids.len(), 3);
        assert_eq!(mids.len(), mids.iter().collect::<HashSet<_>>().len());
    }

    #[test]
    fn bad_plans_are_refused() {
        assert_eq!(plan(&req(0, 1, 0)), Err(PlanError::NoRoutes));
        assert_eq!(plan(&req(1, 0, 0)), Err(PlanError::MinHops(0)));
        assert_eq!(plan(&req(1, 9, 9)), Err(PlanError::MinHops(9)));

        let mut r = req(2, 2, 3);
        r.pins.insert(5, vec![node(1)]);
        assert!(matches!(
            plan(&r),
            Err(PlanError::PinIndex { index: 5, .. })
        ));

        let mut r = req(2, 3, 3);
        r.pins.insert(0, vec![node(1)]);
        assert!(matches!(plan(&r), Err(PlanError::PinHops { hops: 2, .. })));

        let mut r = req(2, 2, 3);
        r.pins.insert(0, vec![node(1)]);
        r.pins.insert(1, vec![node(1)]);
        assert!(matches!(plan(&r), Err(PlanError::PinnedOverlap { .. })));

        let mut r = req(1, 2, 3);
        r.pins.insert(0, vec![node(0)]);
        assert!(matches!(plan(&r), Err(PlanError::Loop { .. })));

        let mut r = req(1, 2, 2);
        r.pool.push(node(1));
        assert_eq!(plan(&r), Err(PlanError::Pool(node(1).id)));

        assert_eq!(
            plan(&req(MAX_ROUTES, 1, 0)).map(|r| r.len()),
            Ok(MAX_ROUTES)
        );
        assert_eq!(
            plan(&req(MAX_ROUTES + 1, 1, 0)),
            Err(PlanError::TooManyRoutes(MAX_ROUTES + 1))
        );
    }

    #[test]
    fn a_relay_never_forwards_across_ip_versions() {
        let v6 = |n: u8| NodeAddr {
            id: NodeId([n; 16]),
            addr: SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, 7000 + u16::from(n))),
        };
        // IPv4 relay to an IPv6 destination, and the reverse.
        for (dst, relay) in [(v6(0), node(1)), (node(0), v6(1))] {
            let mut r = req(1, 2, 0);
            r.dst = dst;
            r.pool = vec![relay];
            let err = plan(&r).unwrap_err();
            assert!(
                matches!(err, PlanError::MixedFamilies { index: 0, .. }),
                "{err}"
            );
            let text = err.to_string();
            for part in [
                relay.id.to_string(),
                dst.id.to_string(),
                relay.addr.to_string(),
            ] {
                assert!(text.contains(&part), "{text} lacks {part}");
            }
        }
        // The client's own link may change version: it binds to the first hop's family.
        let mut r = req(1, 2, 0);
        r.dst = v6(0);
        r.pool = vec![v6(1)];
        assert!(plan(&r).is_ok());
        let mut r = req(1, 1, 0);
        r.dst = v6(0);
        assert!(plan(&r).is_ok());
    }
}
