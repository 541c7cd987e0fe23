//! The measuring side: plans routes, sets them up, pumps and probes each one, samples, and
//! summarizes. Never imports `node`.

pub mod endpoints;
pub mod plan;
pub mod probe;
pub mod pump;
pub mod redial;
pub mod run;
pub mod sampler;
pub mod scan;
pub mod slot;
pub mod stripe;
pub mod summary;
pub mod supervisor;
pub mod table;
pub mod wiring;
