//! One planned route as the run tracks it across every incarnation (`--redial`): its counters,
//! path, state flags, last error and first-link QUIC figures. Shared by the supervisor, the
//! sampler and the summary; every lock guards one field and is never held across I/O.

use std::sync::atomic::{AtomicBool, AtomicU32};
use std::sync::{Arc, Mutex};

use crate::client::pump::{Counters, PumpError};
use crate::wire::addr::NodeAddr;
use crate::wire::transport::{self};

/// One planned route as the run tracks it, across every incarnation (`--redial`).
pub(crate) struct Slot {
    pub(crate) index: u32,
    /// Shared by each incarnation's `RouteLive`; read by the sampler.
    pub(crate) counters: Arc<Counters>,
    /// Current (or last) path; locked only to read or replace it.
    pub(crate) path: Mutex<Vec<NodeAddr>>,
    /// Whether the route was ever established.
    pub(crate) established: AtomicBool,
    /// Set while the route is down after a failure, or before its first setup succeeds; read by
    /// the sampler.
    pub(crate) failed: AtomicBool,
    /// Set while a route whose first setup failed may still come up (`--redial` is trying).
    pub(crate) pending: AtomicBool,
    /// Set by the sampler while the route moves no bytes (`--stall-timeout`).
    pub(crate) stalled: AtomicBool,
    /// Tells the route's pump that it stalled, so it looks for a silent hop.
    pub(crate) stall: tokio::sync::Notify,
    /// The failure that took it down, for the summary (cleared by a redial).
    pub(crate) error: Mutex<Option<PumpError>>,
    pub(crate) failures: AtomicU32,
    pub(crate) redials: AtomicU32,
    /// The first link's QUIC statistics across incarnations; locked only to read or swap.
    pub(crate) first_link: Mutex<FirstLink>,
}

/// The first link of every incarnation of a route, for cumulative loss figures.
#[derive(Default)]
pub(crate) struct FirstLink {
    /// (sent, lost) packets of the incarnations that ended.
    pub(crate) ended: (u64, u64),
    /// The current incarnation's connection, while it is up.
    pub(crate) live: Option<quinn::Connection>,
}

/// A route's first-link figures at an instant: cumulative packet counts over every incarnation,
/// and the current link's state while one is up.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct LinkReading {
    pub(crate) sent_packets: u64,
    pub(crate) lost_packets: u64,
    pub(crate) now: Option<transport::LinkStats>,
}

impl Slot {
    pub(crate) fn new(index: u32, path: Vec<NodeAddr>) -> Self {
        Slot {
            index,
            counters: Arc::new(Counters::default()),
            path: Mutex::new(path),
            established: AtomicBool::new(false),
            failed: AtomicBool::new(false),
            pending: AtomicBool::new(false),
            stalled: AtomicBool::new(false),
            stall: tokio::sync::Notify::new(),
            error: Mutex::new(None),
            failures: AtomicU32::new(0),
            redials: AtomicU32::new(0),
            first_link: Mutex::new(FirstLink::default()),
        }
    }

    pub(crate) fn first_link(&self) -> std::sync::MutexGuard<'_, FirstLink> {
        self.first_link.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A new incarnation's first link is up.
    pub(crate) fn link_up(&self, conn: quinn::Connection) {
        self.link_down();
        self.first_link().live = Some(conn);
    }

    /// The current incarnation ended: its counts join the totals.
    pub(crate) fn link_down(&self) {
        let mut l = self.first_link();
        if let Some(conn) = l.live.take() {
            let st = transport::LinkStats::of(&conn);
            l.ended.0 += st.sent_packets;
            l.ended.1 += st.lost_packets;
        }
    }

    pub(crate) fn link_reading(&self) -> LinkReading {
        let l = self.first_link();
        let now = l.live.as_ref().map(transport::LinkStats::of);
        let (sent, lost) = now.map_or((0, 0), |n| (n.sent_packets, n.lost_packets));
        LinkReading {
            sent_packets: l.ended.0 + sent,
            lost_packets: l.ended.1 + lost,
            now,
        }
    }

    pub(crate) fn path(&self) -> Vec<NodeAddr> {
        self.path.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub(crate) fn error(&self) -> Option<PumpError> {
        self.error.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub(crate) fn set_error(&self, e: Option<PumpError>) {
        *self.error.lock().unwrap_or_else(|p| p.into_inner()) = e;
    }
}
