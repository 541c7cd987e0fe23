//! Events and their renderers and readers: the NDJSON types, the sink, human lines and the live
//! view, saved runs, compare, sweep tables and plots.

pub mod compare;
pub mod events;
#[cfg(test)]
pub(crate) mod fixtures;
pub mod human;
pub mod live;
pub mod plot;
pub mod runfile;
pub mod scan;
pub mod sink;
pub mod sweep;
