//! How a run reaches its nodes through something in between: the lab's emulated links put a
//! proxy in front of every node, so a path must be dialed through the proxies. The client knows
//! only this trait, never the lab.

use crate::report::events::LinksView;
use crate::wire::addr::NodeAddr;

/// Rewrites the addresses of a path before it is dialed.
pub trait PathWiring: Send + Sync + std::fmt::Debug {
    /// `path` with each hop's address replaced by the address to dial for it (node ids stay).
    fn wire_path(&self, path: &[NodeAddr]) -> std::io::Result<Vec<NodeAddr>>;
    /// What the links are, for `start.config.links`.
    fn view(&self) -> LinksView;
}
