//! The route table: `RouteRef { dst, index } -> handle`, shared by every task of a run.
//!
//! The lock guards the map only. A call locks, looks up, clones the handle, unlocks, and only then
//! does I/O on the route — the field bug this prevents held one global mutex across the whole
//! wire round trip, serializing N routes into one. The index is part of the key and of every
//! error, so no layer can silently fall back to route 0.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::sync::{Mutex, MutexGuard};

use crate::wire::identity::NodeId;

/// Names one route of a run: its destination and its index.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RouteRef {
    /// The destination the route ends at.
    pub dst: NodeId,
    /// The route index, as in events.
    pub index: u32,
}

impl fmt::Display for RouteRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}#{}", self.dst, self.index)
    }
}

/// Why a table operation failed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TableError {
    /// No route is registered under this ref.
    #[error("no route {0}")]
    NoRoute(RouteRef),
    /// A route is already registered under this ref.
    #[error("route {0} is already registered")]
    Duplicate(RouteRef),
}

/// Map from route ref to handle; `H` is cheap to clone (an `Arc`).
pub struct RouteTable<H> {
    /// Guards the map only; never held across an `.await`.
    routes: Mutex<HashMap<RouteRef, H>>,
}

impl<H: Clone> Default for RouteTable<H> {
    fn default() -> Self {
        RouteTable {
            routes: Mutex::new(HashMap::new()),
        }
    }
}

impl<H: Clone> RouteTable<H> {
    fn map(&self) -> MutexGuard<'_, HashMap<RouteRef, H>> {
        // A panic while holding this lock cannot leave the map half-updated (every critical
        // section is a single map operation), so a poisoned lock is safe to keep using.
        self.routes.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers a route; a second registration of the same ref is refused.
    pub fn insert(&self, r: RouteRef, handle: H) -> Result<(), TableError> {
        let mut map = self.map();
        if map.contains_key(&r) {
            return Err(TableError::Duplicate(r));
        }
        map.insert(r, handle);
        Ok(())
    }

    /// Unregisters a route, returning its handle.
    pub fn remove(&self, r: RouteRef) -> Option<H> {
        self.map().remove(&r)
    }

    /// A clone of the handle registered under `r`.
    pub fn get(&self, r: RouteRef) -> Result<H, TableError> {
        self.map().get(&r).cloned().ok_or(TableError::NoRoute(r))
    }

    /// Number of registered routes.
    pub fn len(&self) -> usize {
        self.map().len()
    }

    /// Whether no route is registered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Looks up `r` and runs `op` on its handle with the lock already released.
    pub async fn call<T, E, F, Fut>(&self, r: RouteRef, op: F) -> Result<T, E>
    where
        F: FnOnce(H) -> Fut,
        Fut: Future<Output = Result<T, E>>,
        E: From<TableError>,
    {
        let handle = self.get(r)?; // the guard is dropped at the end of this statement
        op(handle).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    fn rref(index: u32) -> RouteRef {
        RouteRef {
            dst: NodeId([0xd5; 16]),
            index,
        }
    }

    #[derive(Debug, PartialEq)]
    enum CallError {
        Table(TableError),
    }

    impl From<TableError> for CallError {
        fn from(e: TableError) -> Self {
            CallError::Table(e)
        }
    }

    /// A handle whose I/O takes a while and reports which route it is.
    #[derive(Clone)]
    struct SlowRoute {
        index: u32,
        io: Duration,
    }

    async fn ask(table: &RouteTable<SlowRoute>, r: RouteRef) -> Result<u32, CallError> {
        table
            .call(r, |h| async move {
                tokio::time::sleep(h.io).await;
                Ok(h.index)
            })
            .await
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn two_hundred_calls_on_unregistered_refs_finish_fast() {
        let table = Arc::new(RouteTable::<SlowRoute>::default());
        let t = Instant::now();
        let calls: Vec<_> = (0..200)
            .map(|i| {
                let table = table.clone();
                tokio::spawn(async move { ask(&table, rref(i)).await })
            })
            .collect();
        for (i, c) in calls.into_iter().enumerate() {
            let err = c.await.unwrap().unwrap_err();
            assert_eq!(err, CallError::Table(TableError::NoRoute(rref(i as u32))));
        }
        assert!(
            t.elapsed() < Duration::from_millis(500),
            "{:?}",
            t.elapsed()
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn calls_do_not_hold_the_lock_across_io() {
        // 200 routes whose I/O takes 100 ms each: serialized by the lock this would take 20 s.
        let table = Arc::new(RouteTable::default());
        for i in 0..200 {
            let io = Duration::from_millis(100);
            table.insert(rref(i), SlowRoute { index: i, io }).unwrap();
        }
        let t = Instant::now();
        let calls: Vec<_> = (0..200)
            .map(|i| {
                let table = table.clone();
                tokio::spawn(async move { ask(&table, rref(i)).await })
            })
            .collect();
        // While every call is in its I/O, the lock is free.
        tokio::time::sleep(Duration::from_millis(30)).await;
        assert!(table.routes.try_lock().is_ok(), "lock held during I/O");
        for c in calls {
            c.await.unwrap().unwrap();
        }
        assert!(t.elapsed() < Duration::from_secs(1), "{:?}", t.elapsed());
    }

    #[tokio::test]
    async fn lock_is_free_right_after_a_call_returns() {
        let table = RouteTable::default();
        let io = Duration::from_millis(1);
        table.insert(rref(3), SlowRoute { index: 3, io }).unwrap();
        assert_eq!(ask(&table, rref(3)).await, Ok(3));
        assert!(table.routes.try_lock().is_ok());
        let _ = ask(&table, rref(4)).await;
        assert!(table.routes.try_lock().is_ok());
    }

    #[tokio::test]
    async fn every_index_reaches_its_own_route() {
        let table = RouteTable::default();
        let io = Duration::ZERO;
        for i in [0, 1, 2, 7] {
            table.insert(rref(i), SlowRoute { index: i, io }).unwrap();
        }
        for i in [0, 1, 2, 7] {
            assert_eq!(ask(&table, rref(i)).await, Ok(i));
        }
        let err = ask(&table, rref(5)).await.unwrap_err();
        let CallError::Table(e) = err;
        assert_eq!(e.to_string(), format!("no route {}#5", NodeId([0xd5; 16])));
    }

    #[test]
    fn duplicate_registration_is_refused() {
        let table = RouteTable::default();
        let h = SlowRoute {
            index: 1,
            io: Duration::ZERO,
        };
        table.insert(rref(1), h.clone()).unwrap();
        assert_eq!(
            table.insert(rref(1), h),
            Err(TableError::Duplicate(rref(1)))
        );
        assert!(table.remove(rref(1)).is_some());
        assert!(table.is_empty());
    }
}
