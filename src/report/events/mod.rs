//! The event stream: every fact a run reports, as serde types, and their JSON encoding. Field
//! names are a contract (extend freely, rename never). See docs/EVENTS.md. A leaf: it imports
//! only wire types; `report::sink` writes these events out and `report::runfile` reads saved
//! runs back into the same types.

use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

mod route;
mod sample;
mod scan;
mod start;
mod summary;

pub use route::*;
pub use sample::*;
pub use scan::*;
pub use start::*;
pub use summary::*;

/// Version of the event schema; bumped only for incompatible changes.
pub const SCHEMA_VERSION: u32 = 1;

/// One event. Serialized with a `type` tag in snake_case.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Event {
    /// First event of a run: versions and the whole validated configuration.
    Start(Start),
    /// A route's setup got an ack from every hop.
    RouteEstablished(RouteEstablished),
    /// A route could not be set up; `failed_hop` says where.
    RouteSetupFailed(RouteSetupFailed),
    /// An established route's pump ended with an error before the run ended.
    RouteFailure(RouteFailure),
    /// An established route moved no bytes for `--stall-timeout` (a warning; it may recover).
    RouteStalled(RouteStalled),
    /// A failed route was set up again through spare relays (`--redial`).
    RouteRedial(RouteRedial),
    /// Per-interval throughput.
    Sample(Sample),
    /// One RTT probe (idle baseline or under load).
    Probe(Probe),
    /// Last event of a run.
    Summary(Summary),
    /// A run-level error that is not about one route.
    Error(ErrorEvent),
    /// `scan`: one relay (or the direct path) measured through its own two-hop route.
    RelayScan(RelayScan),
    /// `scan`: the last event, every row ranked by rate.
    ScanSummary(ScanSummary),
}

/// `error` event.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
pub struct ErrorEvent {
    /// What went wrong.
    pub error: String,
}

/// Reads an `Option` the writer always writes (`null` when there is none): a saved run without
/// the field is refused, not read as `None`. (Fields the writer leaves out when `None` carry
/// `skip_serializing_if` instead, and their absence means `None`.)
pub(super) fn present<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::deserialize(d)
}

/// One NDJSON line: the event plus the fields every event carries.
#[derive(Serialize, JsonSchema)]
pub struct EventLine<'a> {
    #[serde(flatten)]
    event: &'a Event,
    /// Schema version, `SCHEMA_VERSION`.
    schema: u32,
    /// Nanoseconds since the run started.
    t_ns: u64,
}

/// Encodes one event as a JSON line (without the newline).
pub fn to_json_line(event: &Event, t: Duration) -> String {
    let line = EventLine {
        event,
        schema: SCHEMA_VERSION,
        t_ns: t.as_nanos() as u64,
    };
    // invariant: these types contain only strings, numbers, bools, options and vectors,
    // which serde_json always serializes.
    serde_json::to_string(&line).expect("event serializes")
}

/// The JSON Schema of one NDJSON line, generated from these types (committed as
/// docs/events.schema.json; a test keeps the two equal).
pub fn json_schema() -> String {
    let schema = schemars::schema_for!(EventLine<'static>);
    // invariant: a schema is plain JSON data.
    serde_json::to_string_pretty(&schema).expect("schema serializes") + "\n"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_event_has_type_schema_and_time() {
        let ev = Event::RouteEstablished(RouteEstablished {
            route_index: 7,
            path: vec!["a".into(), "b".into()],
            hops: 2,
            setup_ns: 42,
        });
        let v: serde_json::Value =
            serde_json::from_str(&to_json_line(&ev, Duration::from_millis(3))).unwrap();
        assert_eq!(v["type"], "route_established");
        assert_eq!(v["schema"], SCHEMA_VERSION);
        assert_eq!(v["t_ns"], 3_000_000);
        assert_eq!(v["route_index"], 7);
        assert_eq!(v["hops"], 2);
    }
}
