//! Reading saved runs: the NDJSON a run wrote (`--json`, `--json-file`), parsed back for
//! `compare`, `plot` and `sweep` through the very types the writer serializes
//! (`report::events`). Every line must be an `Event`: a missing field or one of the wrong type
//! is an error naming the file, the line and the field path, never a default. Lenient only
//! about fields it does not know (the format grows); strict about what makes a file a mux-bw
//! run of this schema.

use std::collections::BTreeMap;
use std::io::{BufRead, Read};

use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::Value;

use crate::report::events::{ConfigView, Event, ProbePhase, Sample, Summary, SCHEMA_VERSION};
use crate::wire::mode::Mode;

/// Why a file is not a run this version can read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RunFileError {
    /// The file could not be read.
    #[error("cannot read '{0}': {1}")]
    Read(String, String),
    /// The file, or one line of it, is larger than any run this version writes.
    #[error("'{0}' {1} is larger than {limit}: not a mux-bw run", limit = crate::files::fmt_limit(*.2))]
    TooLarge(String, &'static str, u64),
    /// A line is not JSON.
    #[error("'{0}' line {1} is not JSON: expected mux-bw NDJSON (from --json or --json-file)")]
    NotJson(String, usize),
    /// The first event is not a mux-bw `start`.
    #[error("'{0}' is not mux-bw NDJSON: its first line is not a mux-bw start event")]
    NotMuxBw(String),
    /// Written by a version with another schema.
    #[error("'{0}' has event schema {1}, this mux-bw reads schema {SCHEMA_VERSION}")]
    Schema(String, u64),
    /// The run never finished.
    #[error("'{0}' has no summary event: the run was cut short before it ended")]
    NoSummary(String),
    /// A line lacks a field its event always has, or has one of the wrong type.
    #[error("'{file}' line {line}: {event} field `{path}`: {problem}")]
    Field {
        /// The file name (or `-`).
        file: String,
        /// 1-based line number.
        line: usize,
        /// The event's `type` (`event` when the line has none).
        event: String,
        /// Where in the event, e.g. `routes[0].route_index`.
        path: String,
        /// `missing`, or what is wrong with the value.
        problem: String,
    },
    /// A line is an event type this version does not know.
    #[error(
        "'{0}' line {1}: unknown event type '{2}' (this mux-bw reads schema {SCHEMA_VERSION}; \
         written by a newer mux-bw?)"
    )]
    UnknownEvent(String, usize, String),
    /// A `start` after the first line: two runs in one file.
    #[error("'{0}' line {1}: a second start event: a saved run holds one run")]
    SecondStart(String, usize),
    /// A scan's event in a run.
    #[error("'{0}' line {1}: a scan event ({2}): compare and plot read runs, not scans")]
    ScanEvent(String, usize, &'static str),
}

/// One interval of a run.
#[derive(Clone, Debug, PartialEq)]
pub struct Interval {
    /// Start of the interval, seconds since the run started.
    pub start: f64,
    /// End of the interval, seconds since the run started.
    pub t: f64,
    /// Warm-up interval left out of the summary.
    pub omitted: bool,
    /// Aggregate goodput, bits/s.
    pub aggregate_bps: f64,
    /// (route index, goodput bits/s in the run's direction) of each route that had come up
    /// (`up`, `stalled`, `failed`); `pending` and `setup_failed` entries are left out, so a
    /// route that never came up is not drawn or counted as a route at 0.
    pub routes: Vec<(u32, f64)>,
}

/// A saved run.
#[derive(Clone, Debug)]
pub struct Run {
    /// The file name (or `-`).
    pub label: String,
    /// `start.config`.
    pub config: ConfigView,
    /// Every sample.
    pub intervals: Vec<Interval>,
    /// (seconds since start, route index, error) of each `route_failure`.
    pub failures: Vec<(f64, u32, String)>,
    /// (seconds since start, phase, RTT ms) of each answered probe.
    pub probes: Vec<(f64, ProbePhase, f64)>,
    /// Route index → path of node ids, from `route_established`/`route_redial`.
    pub paths: BTreeMap<u32, Vec<String>>,
    /// The `summary` event.
    pub summary: Summary,
}

/// Largest saved run read: a 7-day run sampled every second with 1024 routes is about this size.
pub const MAX_RUN_FILE: u64 = 1 << 30;
/// Longest line read: a `sample` or `summary` of 1024 routes is well under 1 MiB.
pub const MAX_LINE: u64 = 16 << 20;

/// Reads `path` (`-` = stdin), line by line: at most `MAX_RUN_FILE` bytes and `MAX_LINE` per
/// line, so a device (`/dev/zero`) or a stray huge file is refused instead of filling memory.
pub fn load(path: &str) -> Result<Run, RunFileError> {
    let read_err = |e: std::io::Error| RunFileError::Read(path.to_string(), e.to_string());
    if path == "-" {
        parse_reader(path, std::io::stdin().lock())
    } else {
        let file = std::fs::File::open(path).map_err(read_err)?;
        parse_reader(path, std::io::BufReader::new(file))
    }
}

/// Parses NDJSON `text`, labelling the run `label`.
pub fn parse(label: &str, text: &str) -> Result<Run, RunFileError> {
    parse_reader(label, text.as_bytes())
}

/// Parses NDJSON read from `r`, labelling the run `label`; bounded by `MAX_RUN_FILE` and
/// `MAX_LINE`.
fn parse_reader(label: &str, r: impl BufRead) -> Result<Run, RunFileError> {
    parse_limited(label, r, MAX_RUN_FILE, MAX_LINE)
}

/// The steps: bounded lines, each one JSON, the first a mux-bw `start`, every one an `Event`
/// added to the run, and a `summary` at the end.
fn parse_limited(
    label: &str,
    r: impl BufRead,
    max_file: u64,
    max_line: u64,
) -> Result<Run, RunFileError> {
    let mut lines = Lines {
        label,
        r: r.take(max_file + 1),
        max_file,
        max_line,
        total: 0,
        number: 0,
        buf: Vec::new(),
    };
    let mut run: Option<Partial> = None;
    while let Some((n, text)) = lines.next_line()? {
        if text.trim().is_empty() {
            continue;
        }
        let v: Value =
            serde_json::from_str(text).map_err(|_| RunFileError::NotJson(label.into(), n))?;
        match &mut run {
            None => run = Some(Partial::start(label, n, &v)?),
            Some(run) => {
                let (t_ns, event) = read_event(label, n, &v)?;
                run.absorb(label, n, t_ns, event)?;
            }
        }
    }
    run.ok_or_else(|| RunFileError::NotMuxBw(label.into()))?
        .finish(label)
}

/// The lines of a reader, each at most `max_line` bytes and all at most `max_file`.
struct Lines<'a, R> {
    label: &'a str,
    r: std::io::Take<R>,
    max_file: u64,
    max_line: u64,
    total: u64,
    number: usize,
    buf: Vec<u8>,
}

impl<R: BufRead> Lines<'_, R> {
    /// The next line and its 1-based number, `None` at the end.
    fn next_line(&mut self) -> Result<Option<(usize, &str)>, RunFileError> {
        let label = self.label;
        self.buf.clear();
        let n = (&mut self.r)
            .take(self.max_line + 1)
            .read_until(b'\n', &mut self.buf)
            .map_err(|e| RunFileError::Read(label.to_string(), e.to_string()))?;
        self.total += n as u64;
        if self.total > self.max_file {
            let max = self.max_file;
            return Err(RunFileError::TooLarge(label.into(), "as a whole", max));
        }
        if self.buf.len() as u64 > self.max_line {
            let max = self.max_line;
            return Err(RunFileError::TooLarge(label.into(), "has a line that", max));
        }
        if n == 0 {
            return Ok(None);
        }
        self.number += 1;
        let text = std::str::from_utf8(&self.buf)
            .map_err(|_| RunFileError::NotJson(label.into(), self.number))?;
        Ok(Some((self.number, text)))
    }
}

/// The fields that say what a line is.
#[derive(Deserialize)]
struct Header {
    #[serde(rename = "type")]
    kind: String,
    schema: u64,
}

/// The time every line carries.
#[derive(Deserialize)]
struct Stamp {
    t_ns: u64,
}

type PathError = serde_path_to_error::Error<serde_json::Error>;

/// `v` as a `T`, or where in it and why not.
fn typed<T: DeserializeOwned>(v: &Value) -> Result<T, PathError> {
    serde_path_to_error::deserialize(v)
}

/// The event of the line `v` (line `line` of `label`) and its `t_ns`: its schema must be this
/// version's, and every field its type has must be there.
fn read_event(label: &str, line: usize, v: &Value) -> Result<(u64, Event), RunFileError> {
    let field = |event: &str, e: PathError| field_error(label, line, event, &e);
    let header: Header = typed(v).map_err(|e| field("event", e))?;
    if header.schema != u64::from(SCHEMA_VERSION) {
        return Err(RunFileError::Schema(label.into(), header.schema));
    }
    let stamp: Stamp = typed(v).map_err(|e| field(&header.kind, e))?;
    match event_of(&header.kind, v) {
        None => Err(RunFileError::UnknownEvent(label.into(), line, header.kind)),
        Some(event) => Ok((stamp.t_ns, event.map_err(|e| field(&header.kind, e))?)),
    }
}

/// The event `v` is, by its `type`; `None` for a type this version does not know. Each variant
/// is read as its own type (not through `Event`'s internally tagged `Deserialize`, which would
/// lose the path to a bad field); a test reads back every variant the writer writes.
fn event_of(kind: &str, v: &Value) -> Option<Result<Event, PathError>> {
    Some(match kind {
        "start" => typed(v).map(Event::Start),
        "route_established" => typed(v).map(Event::RouteEstablished),
        "route_setup_failed" => typed(v).map(Event::RouteSetupFailed),
        "route_failure" => typed(v).map(Event::RouteFailure),
        "route_stalled" => typed(v).map(Event::RouteStalled),
        "route_redial" => typed(v).map(Event::RouteRedial),
        "sample" => typed(v).map(Event::Sample),
        "probe" => typed(v).map(Event::Probe),
        "summary" => typed(v).map(Event::Summary),
        "error" => typed(v).map(Event::Error),
        "relay_scan" => typed(v).map(Event::RelayScan),
        "scan_summary" => typed(v).map(Event::ScanSummary),
        _ => return None,
    })
}

/// A field error with its whole path: serde names a missing field in its message and the path
/// up to the struct that lacks it, so the two are joined (`routes[0]` + `route_index`).
fn field_error(label: &str, line: usize, event: &str, e: &PathError) -> RunFileError {
    let at = e.path().to_string();
    let message = e.inner().to_string();
    let missing = message
        .strip_prefix("missing field `")
        .and_then(|m| m.strip_suffix('`'));
    let (path, problem) = match missing {
        Some(name) if at == "." => (name.to_string(), "missing".to_string()),
        Some(name) => (format!("{at}.{name}"), "missing".to_string()),
        None => (at, message),
    };
    RunFileError::Field {
        file: label.into(),
        line,
        event: event.into(),
        path,
        problem,
    }
}

/// A run being read: what its lines said so far.
struct Partial {
    config: ConfigView,
    intervals: Vec<Interval>,
    failures: Vec<(f64, u32, String)>,
    probes: Vec<(f64, ProbePhase, f64)>,
    paths: BTreeMap<u32, Vec<String>>,
    summary: Option<Summary>,
}

impl Partial {
    /// A run from its first line, which must be a mux-bw `start` of this schema.
    fn start(label: &str, line: usize, v: &Value) -> Result<Self, RunFileError> {
        if v["type"] != "start" || v["tool"] != "mux-bw" {
            return Err(RunFileError::NotMuxBw(label.into()));
        }
        let Event::Start(start) = read_event(label, line, v)?.1 else {
            return Err(RunFileError::NotMuxBw(label.into()));
        };
        Ok(Partial {
            config: start.config,
            intervals: Vec::new(),
            failures: Vec::new(),
            probes: Vec::new(),
            paths: BTreeMap::new(),
            summary: None,
        })
    }

    /// Adds the event of line `line`, emitted `t_ns` after the start.
    fn absorb(
        &mut self,
        label: &str,
        line: usize,
        t_ns: u64,
        event: Event,
    ) -> Result<(), RunFileError> {
        let t = t_ns as f64 / 1e9;
        match event {
            Event::Start(_) => return Err(RunFileError::SecondStart(label.into(), line)),
            Event::Sample(s) => self.intervals.push(interval(self.config.mode, &s)),
            Event::RouteFailure(f) => self.failures.push((t, f.route_index, f.error)),
            Event::Probe(p) => {
                if let Some(rtt) = p.rtt_ns {
                    self.probes.push((t, p.phase, rtt as f64 / 1e6));
                }
            }
            Event::RouteEstablished(e) => {
                self.paths.insert(e.route_index, e.path);
            }
            Event::RouteRedial(e) => {
                self.paths.insert(e.route_index, e.path);
            }
            Event::Summary(s) => self.summary = Some(s),
            Event::RouteSetupFailed(_) | Event::RouteStalled(_) | Event::Error(_) => {}
            Event::RelayScan(_) => {
                return Err(RunFileError::ScanEvent(label.into(), line, "relay_scan"))
            }
            Event::ScanSummary(_) => {
                return Err(RunFileError::ScanEvent(label.into(), line, "scan_summary"))
            }
        }
        Ok(())
    }

    /// The run, once it has its summary.
    fn finish(self, label: &str) -> Result<Run, RunFileError> {
        let summary = self
            .summary
            .ok_or_else(|| RunFileError::NoSummary(label.into()))?;
        Ok(Run {
            label: label.to_string(),
            config: self.config,
            intervals: self.intervals,
            failures: self.failures,
            probes: self.probes,
            paths: self.paths,
            summary,
        })
    }
}

/// A sample as an interval, each route's rate in the run's direction (both ways for `bidir`).
fn interval(mode: Mode, s: &Sample) -> Interval {
    let secs = |ns: u64| ns as f64 / 1e9;
    let routes = s
        .routes
        .iter()
        .filter(|r| r.state.came_up())
        .map(|r| {
            let (sent, received) = (r.sent_bps as f64, r.received_bps as f64);
            let bps = match mode {
                Mode::Bidir => sent + received,
                Mode::Up => sent,
                Mode::Down | Mode::Echo => received,
            };
            (r.route_index, bps)
        })
        .collect();
    Interval {
        start: secs(s.interval_start_ns),
        t: secs(s.interval_end_ns),
        omitted: s.omitted,
        aggregate_bps: s.aggregate_bps as f64,
        routes,
    }
}

#[cfg(test)]
mod tests {
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
}
