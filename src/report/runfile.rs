//! Reading saved runs: the NDJSON a run wrote (`--json`, `--json-file`), parsed back for
//! `compare`, `plot` and `sweep`. Lenient about fields it does not know (the format grows),
//! strict about what makes a file a mux-bw run of this schema.

use std::collections::BTreeMap;
use std::io::{BufRead, Read};

use serde_json::Value;

use crate::report::events::SCHEMA_VERSION;

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
    /// (route index, goodput bits/s in the run's direction).
    pub routes: Vec<(u32, f64)>,
}

/// A saved run.
#[derive(Clone, Debug)]
pub struct Run {
    /// The file name (or `-`).
    pub label: String,
    /// `start.config`.
    pub config: Value,
    /// Every sample.
    pub intervals: Vec<Interval>,
    /// (seconds since start, route index, error) of each `route_failure`.
    pub failures: Vec<(f64, u32, String)>,
    /// (seconds since start, phase, RTT ms) of each answered probe.
    pub probes: Vec<(f64, String, f64)>,
    /// Route index → path of node ids, from `route_established`/`route_redial`.
    pub paths: BTreeMap<u32, Vec<String>>,
    /// The `summary` event.
    pub summary: Value,
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

fn parse_limited(
    label: &str,
    r: impl BufRead,
    max_file: u64,
    max_line: u64,
) -> Result<Run, RunFileError> {
    let mut r = r.take(max_file + 1);
    let mut run: Option<Run> = None;
    let mut line = Vec::new();
    let mut total = 0u64;
    for i in 1.. {
        line.clear();
        let n = (&mut r)
            .take(max_line + 1)
            .read_until(b'\n', &mut line)
            .map_err(|e| RunFileError::Read(label.to_string(), e.to_string()))?;
        total += n as u64;
        if total > max_file {
            return Err(RunFileError::TooLarge(label.into(), "as a whole", max_file));
        }
        if line.len() as u64 > max_line {
            return Err(RunFileError::TooLarge(
                label.into(),
                "has a line that",
                max_line,
            ));
        }
        if n == 0 {
            break;
        }
        let text =
            std::str::from_utf8(&line).map_err(|_| RunFileError::NotJson(label.into(), i))?;
        if text.trim().is_empty() {
            continue;
        }
        let e: Value =
            serde_json::from_str(text).map_err(|_| RunFileError::NotJson(label.into(), i))?;
        match &mut run {
            None => run = Some(start_run(label, &e)?),
            Some(run) => absorb(run, &e),
        }
    }
    let run = run.ok_or_else(|| RunFileError::NotMuxBw(label.into()))?;
    if run.summary.is_null() {
        return Err(RunFileError::NoSummary(label.into()));
    }
    Ok(run)
}

fn secs(ev: &Value, key: &str) -> f64 {
    ev[key].as_f64().unwrap_or(0.0) / 1e9
}

/// A run from its first event, which must be a mux-bw `start` of this schema.
fn start_run(label: &str, start: &Value) -> Result<Run, RunFileError> {
    if start["type"] != "start" || start["tool"] != "mux-bw" {
        return Err(RunFileError::NotMuxBw(label.into()));
    }
    let schema = start["schema"].as_u64().unwrap_or(0);
    if schema != u64::from(SCHEMA_VERSION) {
        return Err(RunFileError::Schema(label.into(), schema));
    }
    Ok(Run {
        label: label.to_string(),
        config: start["config"].clone(),
        intervals: Vec::new(),
        failures: Vec::new(),
        probes: Vec::new(),
        paths: BTreeMap::new(),
        summary: Value::Null,
    })
}

/// Adds one event to the run.
fn absorb(run: &mut Run, e: &Value) {
    let mode_is_up = run.config["mode"] == "up";
    let bidir = run.config["mode"] == "bidir";
    let index = || e["route_index"].as_u64().unwrap_or(0) as u32;
    match e["type"].as_str().unwrap_or("") {
        "sample" => run.intervals.push(Interval {
            start: secs(e, "interval_start_ns"),
            t: secs(e, "interval_end_ns"),
            omitted: e["omitted"].as_bool().unwrap_or(false),
            aggregate_bps: e["aggregate_bps"].as_f64().unwrap_or(0.0),
            routes: e["routes"]
                .as_array()
                .map(|rs| {
                    rs.iter()
                        .map(|r| {
                            let (s, rcv) = (
                                r["sent_bps"].as_f64().unwrap_or(0.0),
                                r["received_bps"].as_f64().unwrap_or(0.0),
                            );
                            let bps = if bidir {
                                s + rcv
                            } else if mode_is_up {
                                s
                            } else {
                                rcv
                            };
                            (r["route_index"].as_u64().unwrap_or(0) as u32, bps)
                        })
                        .collect()
                })
                .unwrap_or_default(),
        }),
        "route_failure" => run.failures.push((
            secs(e, "t_ns"),
            index(),
            e["error"].as_str().unwrap_or("").to_string(),
        )),
        "probe" => {
            if let Some(rtt) = e["rtt_ns"].as_f64() {
                let phase = e["phase"].as_str().unwrap_or("").to_string();
                run.probes.push((secs(e, "t_ns"), phase, rtt / 1e6));
            }
        }
        "route_established" | "route_redial" => {
            let path = e["path"]
                .as_array()
                .map(|p| {
                    p.iter()
                        .filter_map(|n| n.as_str().map(String::from))
                        .collect()
                })
                .unwrap_or_default();
            run.paths.insert(index(), path);
        }
        "summary" => run.summary = e.clone(),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const START: &str =
        r#"{"type":"start","tool":"mux-bw","schema":1,"t_ns":0,"config":{"mode":"up","routes":1}}"#;
    const SUMMARY: &str = r#"{"type":"summary","schema":1,"t_ns":9,"aggregate_bps":5,"routes":[]}"#;

    #[test]
    fn reads_a_run_and_refuses_other_files() {
        let sample = r#"{"type":"sample","schema":1,"t_ns":5,"interval_end_ns":1000000000,"omitted":false,"aggregate_bps":8,"routes":[{"route_index":0,"sent_bps":8,"received_bps":0}]}"#;
        let run = parse("a", &format!("{START}\n{sample}\n{SUMMARY}\n")).unwrap();
        assert_eq!(run.intervals.len(), 1);
        assert_eq!(run.intervals[0].routes, vec![(0, 8.0)]);
        assert_eq!(run.summary["aggregate_bps"], 5);

        assert_eq!(
            parse("b", "hello\n").unwrap_err(),
            RunFileError::NotJson("b".into(), 1)
        );
        assert_eq!(
            parse("c", "{\"type\":\"x\"}\n").unwrap_err(),
            RunFileError::NotMuxBw("c".into())
        );
        let v2 = START.replace("\"schema\":1", "\"schema\":2");
        assert_eq!(
            parse("d", &v2).unwrap_err(),
            RunFileError::Schema("d".into(), 2)
        );
        assert_eq!(
            parse("e", START).unwrap_err(),
            RunFileError::NoSummary("e".into())
        );
        assert!(parse("f", "").is_err());
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
