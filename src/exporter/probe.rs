//! One probe: a target's measurement fitted into the time the scrape allows, run quietly
//! (its events kept in `--save-runs` when asked), and what came of it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use super::Target;
use crate::client::run::{self, RunConfig};
use crate::report::events::{Event, Summary};
use crate::report::sink::{EventSink, SinkConfig, Tap};
use crate::wire::close::Cause;

/// The least measured load a probe runs: below it a rate says little, and a probe that the
/// scrape leaves less time than this fails with `budget` instead of reporting noise.
pub const MIN_MEASURE: Duration = Duration::from_millis(200);

/// Time kept for what surrounds the measured load: the routes' end and the answer (0.1 to
/// 0.2 s on loopback, measured); the deadline plus `ANSWER_GRACE` bounds the answer.
const RESERVE: Duration = Duration::from_millis(300);

/// After the deadline, how long a cut run may take to emit its summary before the probe is
/// answered without it: well inside the default `--timeout-offset`.
const ANSWER_GRACE: Duration = Duration::from_millis(200);

/// Also kept with `probe_rtt`: the idle baseline's 10 probes before the load.
const IDLE_RESERVE: Duration = Duration::from_millis(500);

/// The share of a probe's time its routes' setup may take at most.
const SETUP_SHARE: u32 = 4;

/// Saved runs kept per target in `--save-runs`: the newest ones.
pub const KEEP_RUNS: usize = 16;

/// Why a probe failed, when it did not because of its routes (their causes say that).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Failure {
    /// The target's previous probe, or `--max-concurrent` others, held it past its deadline.
    Busy,
    /// The scrape's timeout leaves less than `MIN_MEASURE` to measure.
    Budget,
    /// The measurement was still running at the deadline and was cut.
    Deadline,
    /// The exporter is shutting down.
    Shutdown,
    /// A route never came up, or failed during the run: the routes' causes say why.
    Routes,
    /// A striped transfer lost or corrupted bytes.
    Integrity,
    /// This host could not run the measurement (no thread for its events).
    Local,
}

impl Failure {
    /// The `cause` label of a probe-level failure.
    pub fn name(self) -> &'static str {
        match self {
            Failure::Busy => "busy",
            Failure::Budget => "budget",
            Failure::Deadline => "deadline",
            Failure::Shutdown => "shutdown",
            Failure::Routes => "routes",
            Failure::Integrity => "integrity",
            Failure::Local => "local",
        }
    }
}

/// What one probe found.
#[derive(Debug)]
pub struct Outcome {
    /// The run's summary, if the measurement ran.
    pub summary: Option<Summary>,
    /// Each established route's setup time, by route index (the last setup of a redialed one).
    pub setups: BTreeMap<u32, Duration>,
    /// Why the probe failed; `None` for `probe_success 1`.
    pub failure: Option<Failure>,
    /// From the request to the answer.
    pub elapsed: Duration,
}

impl Outcome {
    /// A probe that never measured.
    pub fn without_run(failure: Failure, started: Instant) -> Self {
        Outcome {
            summary: None,
            setups: BTreeMap::new(),
            failure: Some(failure),
            elapsed: started.elapsed(),
        }
    }

    /// The causes of the probe's failure, for the exporter's failure counter: the routes'
    /// own causes (each once), or the probe-level one.
    pub fn causes(&self) -> Vec<&'static str> {
        match (self.failure, &self.summary) {
            (None, _) => Vec::new(),
            (Some(Failure::Routes), Some(s)) => {
                let mut c: Vec<&'static str> = s
                    .routes
                    .iter()
                    .filter_map(|r| r.cause.map(Cause::name))
                    .collect();
                c.sort_unstable();
                c.dedup();
                if c.is_empty() {
                    c.push(Failure::Routes.name());
                }
                c
            }
            (Some(f), _) => vec![f.name()],
        }
    }
}

/// `cfg` fitted into `remaining`: the setup budget at most a quarter of it, the measured load
/// (warm-up and duration, scaled alike) into what is left after the reserves. `None` when
/// less than `MIN_MEASURE` of load would be left. A sized striped transfer keeps its size:
/// the deadline alone bounds it.
pub fn fit(cfg: &RunConfig, remaining: Duration) -> Option<RunConfig> {
    let setup_timeout = cfg.setup_timeout.min(remaining / SETUP_SHARE);
    let idle = if cfg.probe_rtt {
        IDLE_RESERVE
    } else {
        Duration::ZERO
    };
    let avail = remaining.checked_sub(setup_timeout + RESERVE + idle)?;
    let sized = cfg.stripe.is_some_and(|s| s.bytes.is_some());
    let want = cfg.omit + cfg.duration;
    let (omit, duration) = if sized || want <= avail {
        (cfg.omit, cfg.duration)
    } else {
        let share = avail.as_secs_f64() / want.as_secs_f64();
        (cfg.omit.mul_f64(share), cfg.duration.mul_f64(share))
    };
    (sized || duration >= MIN_MEASURE).then(|| RunConfig {
        setup_timeout,
        // A route silent for half the measurement is reported stalled within it.
        stall_timeout: cfg.stall_timeout.min(duration / 2).max(MIN_MEASURE / 2),
        omit,
        duration,
        load_started: CancellationToken::new(),
        ..cfg.clone()
    })
}

/// Runs `target`'s measurement as fitted into `deadline`; `shutdown` ends it early. Answers
/// as soon as the run's summary is out; the run then ends its routes on its own task, holding
/// `hold` (the probe's turn) until it has.
pub async fn measure(
    target: &Target,
    deadline: tokio::time::Instant,
    started: Instant,
    save: Option<&Path>,
    shutdown: &CancellationToken,
    hold: impl Send + 'static,
) -> Outcome {
    let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
    // The budget was enough before the wait for this probe's turn: the wait took it.
    let Some(cfg) = fit(&target.config, remaining) else {
        return Outcome::without_run(Failure::Busy, started);
    };
    let setups = Arc::new(Mutex::new(BTreeMap::new()));
    let (summary_tx, summary_rx) = tokio::sync::oneshot::channel();
    let sink_cfg = SinkConfig {
        json_file: save.map(run_file),
        quiet: true,
        tap: Some(tap(setups.clone(), summary_tx)),
        ..SinkConfig::default()
    };
    // The directory was checked at start; a file that cannot be made now is not kept.
    let sink = match EventSink::new(Instant::now(), &sink_cfg) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!("cannot save the probe of {}: {e}", target.name);
            let unsaved = SinkConfig {
                json_file: None,
                ..sink_cfg
            };
            match EventSink::new(Instant::now(), &unsaved) {
                Ok(s) => s,
                Err(_) => return Outcome::without_run(Failure::Local, started),
            }
        }
    };
    let interrupt = shutdown.child_token();
    let cut = CancellationToken::new();
    {
        let (interrupt, cut) = (interrupt.clone(), cut.clone());
        tokio::spawn(async move {
            tokio::select! {
                _ = tokio::time::sleep_until(deadline) => {
                    cut.cancel();
                    interrupt.cancel();
                }
                _ = interrupt.cancelled() => {}
            }
        });
    }
    let save = save.map(Path::to_path_buf);
    let run = tokio::spawn(async move {
        let _hold = hold;
        let summary = run::run(&cfg, Arc::new(sink), interrupt.clone()).await;
        interrupt.cancel();
        if let Some(dir) = save {
            prune(&dir, KEEP_RUNS);
        }
        summary
    });
    // The answer waits for the summary only until the deadline and a grace for the cut run to
    // say what it measured; a run whose routes do not end by then is answered as `deadline`
    // (it goes on ending them on its own task, holding the turn).
    let summary = tokio::select! {
        s = summary_rx => match s {
            Ok(s) => s,
            Err(_) => match run.await {
                Ok(s) => s,
                Err(_) => return Outcome::without_run(Failure::Local, started),
            },
        },
        _ = tokio::time::sleep_until(deadline + ANSWER_GRACE) => {
            return Outcome::without_run(Failure::Deadline, started);
        }
    };
    let failure = if cut.is_cancelled() {
        Some(Failure::Deadline)
    } else if summary.interrupted {
        Some(Failure::Shutdown)
    } else {
        verdict(&summary, target.allow_partial)
    };
    let setups = std::mem::take(&mut *setups.lock().unwrap_or_else(|p| p.into_inner()));
    Outcome {
        summary: Some(summary),
        setups,
        failure,
        elapsed: started.elapsed(),
    }
}

/// What a probe takes from its run's events as they are emitted: each route's setup time,
/// and the summary (sent on `summary`).
fn tap(
    setups: Arc<Mutex<BTreeMap<u32, Duration>>>,
    summary: tokio::sync::oneshot::Sender<Summary>,
) -> Tap {
    let summary = Mutex::new(Some(summary));
    Tap(Arc::new(move |e: &Event| {
        let (route, ns) = match e {
            Event::RouteEstablished(r) => (r.route_index, r.setup_ns),
            Event::RouteRedial(r) => (r.route_index, r.setup_ns),
            Event::Summary(s) => {
                let tx = summary.lock().unwrap_or_else(|p| p.into_inner()).take();
                if let Some(tx) = tx {
                    let _ = tx.send(s.clone());
                }
                return;
            }
            _ => return,
        };
        let mut s = setups.lock().unwrap_or_else(|p| p.into_inner());
        s.insert(route, Duration::from_nanos(ns));
    }))
}

/// A run that completed: success when every planned route came up (or `allow_partial`), none
/// failed during the run or ended stalled, and a striped transfer lost nothing. Stricter than `run`'s
/// exit code, which is 0 while some route still carried bytes: a probe watches health.
pub fn verdict(s: &Summary, allow_partial: bool) -> Option<Failure> {
    let stripe_lost = s
        .stripe
        .as_ref()
        .is_some_and(|st| st.corrupt_bytes > 0 || st.missing_bytes > 0);
    // A route that ended stalled carried nothing for a while: as unhealthy as a failed one.
    let stalled = s.routes.iter().any(|r| r.state == "stalled");
    if s.routes_established == 0 || s.routes_failed > 0 || stalled || (s.partial && !allow_partial)
    {
        Some(Failure::Routes)
    } else if stripe_lost {
        Some(Failure::Integrity)
    } else {
        None
    }
}

/// A new run file in `dir`, named by the time it starts (Unix milliseconds), so the files sort
/// by age and a scrape's timestamp finds its run.
fn run_file(dir: &Path) -> PathBuf {
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    dir.join(format!("{ms}.ndjson"))
}

/// Deletes all but the newest `keep` run files of `dir`.
fn prune(dir: &Path, keep: usize) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut runs: Vec<PathBuf> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "ndjson"))
        .collect();
    if runs.len() <= keep {
        return;
    }
    // Same-length digit names: the name order is the age order.
    runs.sort_by_key(|p| {
        let name = p.file_name().map(|n| n.to_string_lossy().into_owned());
        let name = name.unwrap_or_default();
        (name.len(), name)
    });
    for old in &runs[..runs.len() - keep] {
        let _ = std::fs::remove_file(old);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::run::test_config;

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn a_measurement_that_fits_is_left_as_configured() {
        let cfg = test_config(S, 2 * S);
        let fitted = fit(&cfg, 10 * S).unwrap();
        assert_eq!((fitted.omit, fitted.duration), (S, 2 * S));
        assert_eq!(fitted.setup_timeout, 2500 * Duration::from_millis(1));
    }

    #[test]
    fn a_longer_one_is_scaled_into_the_scrapes_time() {
        let cfg = test_config(S, 9 * S);
        let fitted = fit(&cfg, 4 * S).unwrap();
        // A quarter for setup (1 s), the reserve (0.3 s), 2.7 s left for 10 s asked: 0.27 of each.
        assert_eq!(fitted.setup_timeout, S);
        let load = fitted.omit + fitted.duration;
        assert!(load <= 4 * S - S - RESERVE, "{load:?}");
        assert!((fitted.duration.as_secs_f64() - 9.0 * 0.27).abs() < 1e-6);
        assert!((fitted.omit.as_secs_f64() - 0.27).abs() < 1e-6);
        let with_rtt = RunConfig {
            probe_rtt: true,
            ..cfg
        };
        let fitted = fit(&with_rtt, 4 * S).unwrap();
        assert!(fitted.omit + fitted.duration <= 4 * S - S - RESERVE - IDLE_RESERVE);
    }

    #[test]
    fn too_little_time_measures_nothing() {
        let cfg = test_config(Duration::ZERO, 10 * S);
        assert!(fit(&cfg, Duration::from_millis(500)).is_none());
        assert!(fit(&cfg, Duration::ZERO).is_none());
        assert!(fit(&cfg, Duration::from_millis(700)).is_some());
    }

    #[test]
    fn a_route_that_ended_stalled_fails_the_probe() {
        use crate::report::events::Event;
        use crate::report::fixtures;
        let of = |state: &'static str| {
            let Event::Summary(s) = fixtures::summary(8, vec![fixtures::route(state, 8, 0)]) else {
                unreachable!("the fixture is a summary")
            };
            s
        };
        assert_eq!(verdict(&of("up"), false), None);
        assert_eq!(verdict(&of("stalled"), false), Some(Failure::Routes));
    }

    #[test]
    fn prune_keeps_the_newest_runs() {
        let dir = tempfile::tempdir().unwrap();
        // 999 is older than 1000 though it sorts after it as text.
        for ms in [999u64, 1000, 1001, 1002] {
            std::fs::write(dir.path().join(format!("{ms}.ndjson")), "").unwrap();
        }
        std::fs::write(dir.path().join("notes.txt"), "").unwrap();
        prune(dir.path(), 2);
        let mut left: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(left, ["1001.ndjson", "1002.ndjson", "notes.txt"]);
    }
}
