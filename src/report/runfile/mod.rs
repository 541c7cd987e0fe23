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
    /// With `--stripe`: (in-order goodput bits/s, most bytes held in the reorder buffer).
    pub stripe: Option<(f64, f64)>,
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
        stripe: s
            .stripe
            .as_ref()
            .map(|st| (st.in_order_bps as f64, st.buffer_max_bytes as f64)),
    }
}

#[cfg(test)]
mod tests;
