//! The committed JSON Schema (docs/events.schema.json) is generated from the event types, and real
//! lab output validates against it. Regenerate with `make schema` after changing an event.

mod common;

use std::time::Duration;

use common::run;

const SCHEMA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/events.schema.json");

#[test]
fn committed_schema_matches_the_types() {
    let generated = mux_bw::report::events::json_schema();
    if std::env::var_os("UPDATE_SCHEMA").is_some() {
        std::fs::write(SCHEMA, &generated).unwrap();
    }
    let committed = std::fs::read_to_string(SCHEMA).unwrap_or_default();
    assert!(
        committed == generated,
        "docs/events.schema.json is stale: run `make schema`"
    );
}

#[test]
fn real_lab_output_validates_against_the_schema() {
    let schema: serde_json::Value =
        serde_json::from_str(&mux_bw::report::events::json_schema()).unwrap();
    let validator = jsonschema::validator_for(&schema).unwrap();
    let missing_index = serde_json::json!({"type": "route_established", "schema": 1, "t_ns": 0});
    assert!(
        validator.validate(&missing_index).is_err(),
        "schema accepts anything"
    );
    let ghost = "1=mbw://00000000000000000000000000000001@127.0.0.1:9";
    let out = run(
        &[
            "lab",
            "--json",
            "--routes",
            "3",
            "--min-hops",
            "2",
            "--duration",
            "2s",
            "--interval",
            "500ms",
            "--probe-rtt",
            "--via",
            ghost,
            "--setup-timeout",
            "300ms",
            "--fault",
            "kill:1@1s",
            "--stall-timeout",
            "300ms",
            "--omit",
            "500ms",
            "--allow-partial",
        ],
        Duration::from_secs(30),
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    let mut seen = std::collections::BTreeSet::new();
    for event in out.events() {
        if let Err(e) = validator.validate(&event) {
            panic!("{event}\ndoes not match the schema: {e}");
        }
        seen.insert(event["type"].as_str().unwrap().to_string());
    }
    for ty in [
        "start",
        "route_established",
        "route_setup_failed",
        "route_failure",
        "sample",
        "probe",
        "summary",
    ] {
        assert!(seen.contains(ty), "no {ty} event to validate; saw {seen:?}");
    }
}
