//! The committed JSON Schema (docs/events.schema.json) is generated from the event types, real
//! lab output validates against it, and every example line in docs/EVENTS.md is an event this
//! version writes. Regenerate with `make schema` after changing an event, and the examples from
//! real runs of the commands EVENTS.md names.

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

const EVENTS_MD: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/EVENTS.md");

/// Every line of every ```json block of docs/EVENTS.md, with its 1-based line number.
fn documented_event_lines(doc: &str) -> Vec<(usize, &str)> {
    let mut lines = Vec::new();
    let mut in_json = false;
    for (i, line) in doc.lines().enumerate() {
        match line.trim_end() {
            "```json" if !in_json => in_json = true,
            "```" if in_json => in_json = false,
            l if in_json && !l.trim().is_empty() => lines.push((i + 1, line)),
            _ => {}
        }
    }
    assert!(!in_json, "docs/EVENTS.md: a ```json block is not closed");
    lines
}

/// A documented line and the `start` and `summary` lines put around it to make a saved run.
struct DocLine<'a> {
    n: usize,
    line: &'a str,
    start: (usize, &'a str),
    summary: (usize, &'a str),
}

/// Why a documented line is not an event this version writes: not valid against the committed
/// schema, not read back by the saved-run reader (`runfile::parse`, given `start` and `summary`
/// around it), or not what the writer writes for the event it reads as (a field the types lack).
fn doc_line_problems(validator: &jsonschema::Validator, d: &DocLine) -> Vec<String> {
    let value: serde_json::Value = match serde_json::from_str(d.line) {
        Ok(v) => v,
        Err(e) => return vec![format!("not JSON: {e}")],
    };
    let mut problems: Vec<String> = validator
        .iter_errors(&value)
        .map(|e| {
            let text: String = e.to_string().chars().take(300).collect();
            format!("schema: at `{}`: {text}", e.instance_path)
        })
        .collect();
    problems.extend(version_problems(&value));
    let ((a, start), (b, summary)) = (d.start, d.summary);
    let (run, lines) = match value["type"].as_str() {
        // A scan's events are not part of a run: the schema and the round trip check them.
        Some("relay_scan" | "scan_summary") => return problems_but_run(problems, &value),
        Some("start") => (format!("{}\n{summary}\n", d.line), format!("{}, {b}", d.n)),
        Some("summary") => (format!("{start}\n{}\n", d.line), format!("{a}, {}", d.n)),
        _ => (
            format!("{start}\n{}\n{summary}\n", d.line),
            format!("{a}, {}, {b}", d.n),
        ),
    };
    if let Err(e) = mux_bw::report::runfile::parse("run", &run) {
        problems.push(format!(
            "reader, on the run of EVENTS.md lines {lines}: {e}"
        ));
    }
    problems_but_run(problems, &value)
}

/// `problems`, plus whether the line reads as an `Event` that writes back the same.
fn problems_but_run(mut problems: Vec<String>, value: &serde_json::Value) -> Vec<String> {
    match serde_json::from_value::<mux_bw::report::events::Event>(value.clone()) {
        Err(e) => problems.push(format!("not an Event: {e}")),
        Ok(event) => {
            let t = Duration::from_nanos(value["t_ns"].as_u64().unwrap_or_default());
            let line = mux_bw::report::events::to_json_line(&event, t);
            let written: serde_json::Value = serde_json::from_str(&line).unwrap();
            if written != *value {
                problems.push(format!(
                    "writer: the types write this event as\n  {written}"
                ));
            }
        }
    }
    problems
}

/// The versions a `start` or `summary` names must be this build's.
fn version_problems(value: &serde_json::Value) -> Vec<String> {
    let mut problems = Vec::new();
    let protocol = mux_bw::wire::setup::PROTOCOL_VERSION;
    if value.get("protocol_version").is_some_and(|v| v != protocol) {
        problems.push(format!("protocol_version is not {protocol}"));
    }
    let version = env!("CARGO_PKG_VERSION");
    if value.get("version").is_some_and(|v| v != version) {
        problems.push(format!("version is not {version}"));
    }
    problems
}

#[test]
fn every_events_md_example_is_an_event_this_version_writes() {
    let doc = std::fs::read_to_string(EVENTS_MD).unwrap();
    let schema: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(SCHEMA).unwrap()).unwrap();
    let validator = jsonschema::validator_for(&schema).unwrap();
    let lines = documented_event_lines(&doc);
    let first = |ty: &str| {
        let needle = format!("{{\"type\":\"{ty}\"");
        *lines
            .iter()
            .find(|(_, l)| l.starts_with(&needle))
            .unwrap_or_else(|| panic!("docs/EVENTS.md has no {ty} example"))
    };
    let (start, summary) = (first("start"), first("summary"));
    let mut types = std::collections::BTreeSet::new();
    let mut problems = Vec::new();
    for &(n, line) in &lines {
        let d = DocLine {
            n,
            line,
            start,
            summary,
        };
        for p in doc_line_problems(&validator, &d) {
            problems.push(format!("docs/EVENTS.md line {n}: {p}"));
        }
        if let Ok(v) = serde_json::from_str::<serde_json::Value>(line) {
            types.insert(v["type"].as_str().unwrap_or_default().to_string());
        }
    }
    assert!(
        problems.is_empty(),
        "docs/EVENTS.md: {} problem(s) in its {} example lines (regenerate them from real runs):\n{}",
        problems.len(),
        lines.len(),
        problems.join("\n")
    );
    for ty in [
        "start",
        "route_established",
        "route_setup_failed",
        "route_failure",
        "route_stalled",
        "route_redial",
        "sample",
        "probe",
        "summary",
        "error",
        "relay_scan",
        "scan_summary",
    ] {
        assert!(types.contains(ty), "docs/EVENTS.md shows no {ty} example");
    }
}
