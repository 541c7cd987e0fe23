//! Saved runs read back: whole runs, every event type, and every way a file can be wrong.

use super::*;
use crate::report::events::{RouteSample, RouteState};
use crate::report::fixtures::*;

#[test]
fn reads_a_run_and_refuses_other_files() {
    let text = ndjson(&[
        start(Mode::Up, 1),
        sample(1_000_000_000, 8, vec![route_sample(0, 8, 3)]),
        summary(5, vec![]),
    ]);
    let run = parse("a", &text).unwrap();
    assert_eq!(run.intervals.len(), 1);
    assert_eq!(run.intervals[0].routes, vec![(0, 8.0)]);

    // Routes that never came up are placeholders in a sample, not routes at 0.
    let never = |index, state| RouteSample {
        state,
        ..route_sample(index, 0, 0)
    };
    let text = ndjson(&[
        start(Mode::Up, 3),
        sample(
            1_000_000_000,
            8,
            vec![
                route_sample(0, 8, 3),
                never(1, RouteState::SetupFailed),
                never(2, RouteState::Pending),
            ],
        ),
        summary(5, vec![]),
    ]);
    let run = parse("a", &text).unwrap();
    assert_eq!(run.intervals[0].routes, vec![(0, 8.0)]);
    assert_eq!(run.intervals[0].t, 1.0);
    assert_eq!(run.summary.aggregate_bps, 5);
    assert_eq!(run.config.mode, Mode::Up);

    assert_eq!(
        parse("b", "hello\n").unwrap_err(),
        RunFileError::NotJson("b".into(), 1)
    );
    assert_eq!(
        parse("c", "{\"type\":\"x\"}\n").unwrap_err(),
        RunFileError::NotMuxBw("c".into())
    );
    let first = text.lines().next().unwrap();
    let v2 = first.replace("\"schema\":1", "\"schema\":2");
    assert_eq!(
        parse("d", &v2).unwrap_err(),
        RunFileError::Schema("d".into(), 2)
    );
    assert_eq!(
        parse("e", first).unwrap_err(),
        RunFileError::NoSummary("e".into())
    );
    assert!(parse("f", "").is_err());
}

#[test]
fn every_event_reads_back_as_written() {
    let events = every_event();
    // Adding a variant to `Event` breaks this match until `every_event` has one.
    let variant = |e: &Event| match e {
        Event::Start(_) => 0,
        Event::RouteEstablished(_) => 1,
        Event::RouteSetupFailed(_) => 2,
        Event::RouteFailure(_) => 3,
        Event::RouteStalled(_) => 4,
        Event::RouteRedial(_) => 5,
        Event::Sample(_) => 6,
        Event::Probe(_) => 7,
        Event::Error(_) => 8,
        Event::Summary(_) => 9,
        Event::RelayScan(_) => 10,
        Event::ScanSummary(_) => 11,
    };
    let scan = scan_events();
    let all: Vec<Event> = events.iter().chain(&scan).cloned().collect();
    let seen: std::collections::BTreeSet<i32> = all.iter().map(variant).collect();
    assert_eq!(seen.len(), 12, "every_event or scan_events lacks a variant");
    for (i, written) in ndjson(&all).lines().enumerate() {
        let v: Value = serde_json::from_str(written).unwrap();
        let (t_ns, read) = read_event("x", i + 1, &v).unwrap();
        let t = std::time::Duration::from_nanos(t_ns);
        assert_eq!(crate::report::events::to_json_line(&read, t), written);
        // `Event`'s own Deserialize (the tags of the writer) agrees.
        let derived: Event = serde_json::from_str(written).unwrap();
        assert_eq!(crate::report::events::to_json_line(&derived, t), written);
    }
    let run = parse("all", &ndjson(&events)).unwrap();
    assert_eq!(run.failures, vec![(3e-9, 0, "write timed out".to_string())]);
    assert_eq!(
        run.intervals[0].routes,
        vec![(0, 9.0)],
        "bidir counts both ways"
    );
    assert_eq!(run.paths[&0], vec!["r1".to_string(), "d".to_string()]);
    // A scan is not a run.
    let mixed = ndjson(&[start(Mode::Up, 1), scan[0].clone()]);
    assert_eq!(
        parse("s", &mixed).unwrap_err(),
        RunFileError::ScanEvent("s".into(), 2, "relay_scan")
    );
}

/// Line 2 of a saved run (start, sample, summary) edited by `edit`, read back.
fn edited_sample(edit: impl FnOnce(&mut Value)) -> RunFileError {
    let text = ndjson(&[
        start(Mode::Up, 1),
        sample(1_000_000_000, 8, vec![route_sample(0, 8, 3)]),
        summary(5, vec![]),
    ]);
    let mut lines: Vec<String> = text.lines().map(String::from).collect();
    let mut v: Value = serde_json::from_str(&lines[1]).unwrap();
    edit(&mut v);
    lines[1] = v.to_string();
    parse("runs/a.ndjson", &lines.join("\n")).unwrap_err()
}

fn field(path: &str, problem: &str) -> RunFileError {
    RunFileError::Field {
        file: "runs/a.ndjson".into(),
        line: 2,
        event: "sample".into(),
        path: path.into(),
        problem: problem.into(),
    }
}

#[test]
fn a_missing_or_malformed_field_names_the_line_and_its_path() {
    let err = edited_sample(|v| {
        v["routes"][0]
            .as_object_mut()
            .unwrap()
            .remove("route_index");
    });
    assert_eq!(err, field("routes[0].route_index", "missing"));
    assert_eq!(
        err.to_string(),
        "'runs/a.ndjson' line 2: sample field `routes[0].route_index`: missing"
    );
    let err = edited_sample(|v| v["routes"][0]["route_index"] = "1".into());
    assert!(
        matches!(&err, RunFileError::Field { path, problem, .. }
            if path == "routes[0].route_index" && problem.starts_with("invalid type")),
        "{err}"
    );
    let err = edited_sample(|v| {
        v.as_object_mut().unwrap().remove("t_ns");
    });
    assert_eq!(err, field("t_ns", "missing"));
    // An option the writer always writes (null when none) must be there too.
    let err = edited_sample(|v| {
        v["routes"][0].as_object_mut().unwrap().remove("cwnd_bytes");
    });
    assert_eq!(err, field("routes[0].cwnd_bytes", "missing"));
    let err = edited_sample(|v| v["routes"][0]["state"] = "gone".into());
    assert!(
        matches!(&err, RunFileError::Field { path, .. } if path == "routes[0].state"),
        "{err}"
    );
    // Fields this version does not know are fine: the format grows.
    let text = ndjson(&[start(Mode::Up, 1), summary(5, vec![])]).replace("{", "{\"new\":1,");
    assert!(parse("g", &text).is_ok());
}

#[test]
fn unknown_events_and_a_second_start_are_refused() {
    let err = edited_sample(|v| v["type"] = "sampel".into());
    assert_eq!(
        err,
        RunFileError::UnknownEvent("runs/a.ndjson".into(), 2, "sampel".into())
    );
    assert!(
        err.to_string().contains("unknown event type 'sampel'"),
        "{err}"
    );
    let err = edited_sample(|v| {
        v.as_object_mut().unwrap().remove("type");
    });
    assert_eq!(
        err,
        RunFileError::Field {
            file: "runs/a.ndjson".into(),
            line: 2,
            event: "event".into(),
            path: "type".into(),
            problem: "missing".into(),
        }
    );
    let twice = ndjson(&[start(Mode::Up, 1), start(Mode::Up, 1), summary(5, vec![])]);
    assert_eq!(
        parse("h", &twice).unwrap_err(),
        RunFileError::SecondStart("h".into(), 2)
    );
}

#[test]
fn huge_inputs_are_refused_at_the_limit() {
    // One endless line (like /dev/zero) stops at MAX_LINE, not at the end of memory.
    let err = parse_reader("z", std::io::BufReader::new(std::io::repeat(b'0'))).unwrap_err();
    assert_eq!(
        err,
        RunFileError::TooLarge("z".into(), "has a line that", MAX_LINE)
    );
    assert!(err.to_string().contains("larger than 16 MiB"), "{err}");
    // Endless blank lines stop at the file limit.
    let blank = std::io::BufReader::new(std::io::repeat(b'\n'));
    let err = parse_limited("n", blank, 1 << 20, 64).unwrap_err();
    assert_eq!(
        err,
        RunFileError::TooLarge("n".into(), "as a whole", 1 << 20)
    );
    assert!(
        err.to_string().contains("as a whole is larger than 1 MiB"),
        "{err}"
    );
    let err = load("/dev/zero").unwrap_err();
    assert!(matches!(err, RunFileError::TooLarge(..)), "{err}");
}
