//! Self-healing: per-node circuit breakers and the choice of spare relays for `--redial`.
//! Pure: callers pass `now`; no I/O. Locking is the caller's (one short critical section).
//!
//! A failure trips the breaker of the node it is attributed to, and only that node: a relay that
//! dies never makes the destination look bad. Spare paths keep routes pairwise disjoint.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant};

use crate::wire::addr::NodeAddr;
use crate::wire::identity::NodeId;

/// Backoff after a node's first failure; doubled per further failure.
pub const BREAKER_BASE: Duration = Duration::from_millis(500);
/// Longest a breaker stays open.
pub const BREAKER_MAX: Duration = Duration::from_secs(30);

#[derive(Clone, Copy, Debug)]
struct Breaker {
    failures: u32,
    open_until: Instant,
}

/// Per-node circuit breakers with exponential backoff.
#[derive(Debug, Default)]
pub struct Breakers {
    nodes: HashMap<NodeId, Breaker>,
}

impl Breakers {
    /// Records a failure of `node`; returns how long its breaker stays open.
    pub fn trip(&mut self, node: NodeId, now: Instant) -> Duration {
        let b = self.nodes.entry(node).or_insert(Breaker {
            failures: 0,
            open_until: now,
        });
        b.failures = b.failures.saturating_add(1);
        let backoff = BREAKER_BASE
            .checked_mul(1u32 << (b.failures - 1).min(16))
            .unwrap_or(BREAKER_MAX)
            .min(BREAKER_MAX);
        b.open_until = now + backoff;
        backoff
    }

    /// A success closes the node's breaker and forgets its failures.
    pub fn reset(&mut self, node: NodeId) {
        self.nodes.remove(&node);
    }

    /// Whether `node` should not be dialed at `now`.
    pub fn is_open(&self, node: NodeId, now: Instant) -> bool {
        self.nodes.get(&node).is_some_and(|b| now < b.open_until)
    }

    /// How many failures `node` has had since its last success.
    pub fn failures(&self, node: NodeId) -> u32 {
        self.nodes.get(&node).map_or(0, |b| b.failures)
    }

    /// When `node`'s breaker closes (now, if it is closed).
    pub fn open_until(&self, node: NodeId, now: Instant) -> Instant {
        self.nodes.get(&node).map_or(now, |b| b.open_until.max(now))
    }
}

/// Chooses spare paths for failed routes, keeping intermediates disjoint across routes.
#[derive(Debug)]
pub struct Spares {
    dst: NodeAddr,
    pool: Vec<NodeAddr>,
    /// Intermediates each live route holds.
    in_use: BTreeMap<u32, Vec<NodeId>>,
    /// Per-node breakers, destination included.
    pub breakers: Breakers,
}

/// Why no spare path is available right now.
#[derive(Debug, PartialEq, Eq)]
pub enum NoSpare {
    /// The destination's breaker is open until then.
    DestinationBackoff(Instant),
    /// Not enough free relays with closed breakers.
    NotEnoughRelays { needed: usize, free: usize },
}

impl Spares {
    /// `routes`: index → current path (intermediates then destination) of every planned route.
    pub fn new(dst: NodeAddr, pool: Vec<NodeAddr>, routes: &[(u32, Vec<NodeAddr>)]) -> Self {
        let in_use = routes
            .iter()
            .map(|(i, path)| (*i, intermediates(path)))
            .collect();
        Spares {
            dst,
            pool,
            in_use,
            breakers: Breakers::default(),
        }
    }

    /// Route `index` failed, attributed to `culprit` when known: trip that node's breaker and
    /// release the route's relays.
    pub fn failed(&mut self, index: u32, culprit: Option<NodeId>, now: Instant) {
        if let Some(node) = culprit {
            self.breakers.trip(node, now);
        }
        self.in_use.remove(&index);
    }

    /// A path of `hops` links for route `index`, avoiding relays other routes hold, relays whose
    /// breaker is open, and (when others exist) the relays of `avoid` — the path that just failed
    /// for an unknown reason. Marks the chosen relays as held by `index`.
    pub fn pick(
        &mut self,
        index: u32,
        hops: usize,
        avoid: &[NodeAddr],
        now: Instant,
    ) -> Result<Vec<NodeAddr>, NoSpare> {
        if self.breakers.is_open(self.dst.id, now) {
            return Err(NoSpare::DestinationBackoff(
                self.breakers.open_until(self.dst.id, now),
            ));
        }
        let needed = hops.saturating_sub(1);
        let held: HashSet<NodeId> = self
            .in_use
            .iter()
            .filter(|(i, _)| **i != index)
            .flat_map(|(_, ids)| ids.iter().copied())
            .collect();
        // Relays that never failed first, then by how often they failed: a relay whose breaker
        // just closed again is the last choice, not the first.
        let mut usable: Vec<NodeAddr> = self
            .pool
            .iter()
            .filter(|n| !held.contains(&n.id) && !self.breakers.is_open(n.id, now))
            .copied()
            .collect();
        usable.sort_by_key(|n| self.breakers.failures(n.id));
        let avoided: HashSet<NodeId> = intermediates(avoid).into_iter().collect();
        let (fresh, stale): (Vec<NodeAddr>, Vec<NodeAddr>) =
            usable.into_iter().partition(|n| !avoided.contains(&n.id));
        let free = fresh.len() + stale.len();
        if free < needed {
            return Err(NoSpare::NotEnoughRelays { needed, free });
        }
        let mut path: Vec<NodeAddr> = fresh.into_iter().chain(stale).take(needed).collect();
        self.in_use
            .insert(index, path.iter().map(|n| n.id).collect());
        path.push(self.dst);
        Ok(path)
    }

    /// The route on `path` is up: close the breakers of every node on it.
    pub fn succeeded(&mut self, path: &[NodeAddr]) {
        for n in path {
            self.breakers.reset(n.id);
        }
    }
}

fn intermediates(path: &[NodeAddr]) -> Vec<NodeId> {
    path.split_last()
        .map(|(_, mids)| mids.iter().map(|n| n.id).collect())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::wire::addr::test_node as node;

    #[test]
    fn breaker_backs_off_exponentially_and_resets() {
        let mut b = Breakers::default();
        let t = Instant::now();
        let id = NodeId([1; 16]);
        assert!(!b.is_open(id, t));
        assert_eq!(b.trip(id, t), Duration::from_millis(500));
        assert_eq!(b.trip(id, t), Duration::from_secs(1));
        assert_eq!(b.trip(id, t), Duration::from_secs(2));
        assert!(b.is_open(id, t + Duration::from_millis(1999)));
        assert!(!b.is_open(id, t + Duration::from_secs(2)));
        for _ in 0..40 {
            b.trip(id, t);
        }
        assert_eq!(b.open_until(id, t), t + BREAKER_MAX);
        b.reset(id);
        assert!(!b.is_open(id, t));
    }

    #[test]
    fn relay_failure_trips_the_relay_not_the_destination() {
        let (dst, r1, r2, r3) = (node(0), node(1), node(2), node(3));
        let routes = vec![(0, vec![r1, dst]), (1, vec![r2, dst])];
        let mut s = Spares::new(dst, vec![r1, r2, r3], &routes);
        let t = Instant::now();
        s.failed(0, Some(r1.id), t);
        assert!(s.breakers.is_open(r1.id, t));
        assert!(!s.breakers.is_open(dst.id, t));
        // Route 0 gets the only relay that is neither held by route 1 nor broken.
        assert_eq!(s.pick(0, 2, &[r1, dst], t), Ok(vec![r3, dst]));
    }

    #[test]
    fn spares_stay_disjoint_and_run_out_honestly() {
        let (dst, r1, r2) = (node(0), node(1), node(2));
        let routes = vec![(0, vec![r1, dst]), (1, vec![r2, dst])];
        let mut s = Spares::new(dst, vec![r1, r2], &routes);
        let t = Instant::now();
        s.failed(0, Some(r1.id), t);
        assert_eq!(
            s.pick(0, 2, &[r1, dst], t),
            Err(NoSpare::NotEnoughRelays { needed: 1, free: 0 })
        );
        // Once r1's breaker closes, it may be used again.
        let later = t + BREAKER_BASE;
        assert_eq!(s.pick(0, 2, &[r1, dst], later), Ok(vec![r1, dst]));
    }

    #[test]
    fn unattributed_failure_prefers_fresh_relays_but_may_reuse() {
        let (dst, r1, r2) = (node(0), node(1), node(2));
        let mut s = Spares::new(dst, vec![r1, r2], &[(0, vec![r1, dst])]);
        let t = Instant::now();
        s.failed(0, None, t);
        assert_eq!(s.pick(0, 2, &[r1, dst], t), Ok(vec![r2, dst]));
        let mut s = Spares::new(dst, vec![r1], &[(0, vec![r1, dst])]);
        s.failed(0, None, t);
        assert_eq!(s.pick(0, 2, &[r1, dst], t), Ok(vec![r1, dst]));
    }

    #[test]
    fn relays_that_failed_before_are_the_last_choice() {
        let (dst, r1, r2, r3) = (node(0), node(1), node(2), node(3));
        let mut s = Spares::new(dst, vec![r1, r2, r3], &[(0, vec![r1, dst])]);
        let t = Instant::now();
        s.failed(0, Some(r1.id), t);
        s.breakers.trip(r2.id, t);
        // Both breakers closed again; r3 never failed, then r2 (once) before r1 (once, but
        // listed first) keeps pool order among equals.
        let later = t + BREAKER_BASE;
        assert_eq!(s.pick(0, 2, &[], later), Ok(vec![r3, dst]));
        s.failed(0, None, later);
        let mut s2 = Spares::new(dst, vec![r1, r2], &[]);
        s2.breakers.trip(r1.id, t);
        s2.breakers.trip(r1.id, t);
        s2.breakers.trip(r2.id, t);
        assert_eq!(s2.pick(0, 2, &[], t + BREAKER_MAX), Ok(vec![r2, dst]));
    }

    #[test]
    fn destination_backoff_blocks_every_path() {
        let (dst, r1) = (node(0), node(1));
        let mut s = Spares::new(dst, vec![r1], &[]);
        let t = Instant::now();
        s.failed(0, Some(dst.id), t);
        assert!(matches!(
            s.pick(0, 1, &[], t),
            Err(NoSpare::DestinationBackoff(_))
        ));
        assert_eq!(s.pick(0, 1, &[], t + BREAKER_BASE), Ok(vec![dst]));
    }
}
