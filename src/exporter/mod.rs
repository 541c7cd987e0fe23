//! `mux-bw exporter`: continuous measurement as Prometheus targets, the way
//! blackbox_exporter and iperf3_exporter work. Each scrape of `/probe?target=NAME` runs one
//! short measurement of a configured target, fitted into the scrape's timeout
//! (`X-Prometheus-Scrape-Timeout-Seconds` minus `--timeout-offset`), and answers with what it
//! measured (`results`). Probes of one target run one at a time (two measurements of one path
//! would halve each other); probes of different targets at most `--max-concurrent` at once.
//! `/metrics` is the exporter's own: probes run and failed by cause, the last probe's
//! duration, build and process series.

pub mod probe;
pub mod results;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hyper::header::ALLOW;
use hyper::http::request::Parts;
use hyper::{HeaderMap, Method, StatusCode};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::{Registry, Unit};
use tokio::sync::{Mutex, Semaphore};
use tokio_util::sync::CancellationToken;

use crate::client::run::RunConfig;
use crate::metrics::http::{self, Handler, Reply};
use crate::metrics::{process_registry, Exposition, PREFIX};
use probe::{Failure, Outcome};

/// The longest probe: shorter than a metrics connection lives (`http::MAX_CONNECTION_AGE`).
pub const MAX_PROBE: Duration = Duration::from_secs(290);

/// The header in which Prometheus says how long it waits for a scrape.
pub const TIMEOUT_HEADER: &str = "x-prometheus-scrape-timeout-seconds";

/// One configured probe target.
#[derive(Clone, Debug)]
pub struct Target {
    /// Its name in `/probe?target=NAME` and in the exporter's labels.
    pub name: String,
    /// The measurement, as `run` would make it; fitted into each scrape's time.
    pub config: RunConfig,
    /// Fewer routes than planned still counts as success (`allow_partial`).
    pub allow_partial: bool,
}

/// How the exporter runs its probes.
#[derive(Clone, Debug)]
pub struct Settings {
    /// The targets, by name.
    pub targets: Vec<Target>,
    /// Probes of different targets that may run at once.
    pub max_concurrent: usize,
    /// Taken off the scrape's timeout, for the answer to get back in time.
    pub timeout_offset: Duration,
    /// A probe's time when the request does not say (a scrape by hand with curl).
    pub default_timeout: Duration,
    /// Keep each probe's events as NDJSON in DIR/TARGET/ (the newest `probe::KEEP_RUNS`).
    pub save_runs: Option<PathBuf>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    target: String,
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FailureLabels {
    target: String,
    cause: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TargetLabel {
    target: String,
}

/// The exporter's own series. Labels are the configured target names and fixed causes.
#[derive(Debug)]
struct Own {
    exposition: Exposition,
    probes: Family<ResultLabels, Counter>,
    failures: Family<FailureLabels, Counter>,
    last_duration: Family<TargetLabel, Gauge<f64, std::sync::atomic::AtomicU64>>,
}

impl Own {
    fn new(targets: &[Target]) -> Self {
        let mut registry = process_registry("exporter");
        let r = registry.sub_registry_with_prefix(PREFIX);
        let own = Own {
            exposition: Exposition::new(Registry::default()),
            probes: Family::default(),
            failures: Family::default(),
            last_duration: Family::default(),
        };
        let r = r.sub_registry_with_prefix("exporter");
        r.register(
            "probes",
            "Probes run, by target and result (success, failure)",
            own.probes.clone(),
        );
        r.register(
            "probe_failures",
            "Failed probes by target and cause (a route's cause, or routes, busy, budget, deadline, shutdown, integrity, local)",
            own.failures.clone(),
        );
        r.register_with_unit(
            "last_probe_duration",
            "How long each target's last probe took",
            Unit::Seconds,
            own.last_duration.clone(),
        );
        // Known series start at 0, so `rate()` and alerts see them before the first probe.
        for t in targets {
            for result in ["success", "failure"] {
                let _ = own.probes.get_or_create(&ResultLabels {
                    target: t.name.clone(),
                    result,
                });
            }
        }
        Own {
            exposition: Exposition::new(registry),
            ..own
        }
    }

    fn record(&self, target: &str, o: &Outcome) {
        let result = if o.failure.is_none() {
            "success"
        } else {
            "failure"
        };
        self.probes
            .get_or_create(&ResultLabels {
                target: target.to_string(),
                result,
            })
            .inc();
        for cause in o.causes() {
            self.failures
                .get_or_create(&FailureLabels {
                    target: target.to_string(),
                    cause,
                })
                .inc();
        }
        self.last_duration
            .get_or_create(&TargetLabel {
                target: target.to_string(),
            })
            .set(o.elapsed.as_secs_f64());
    }
}

/// A target and the lock that keeps its probes one at a time.
#[derive(Debug)]
struct Slot {
    target: Target,
    busy: Arc<Mutex<()>>,
}

/// The exporter: its targets, the limits on probes, its own series.
#[derive(Debug)]
pub struct Exporter {
    slots: BTreeMap<String, Slot>,
    running: Arc<Semaphore>,
    settings: Settings,
    own: Own,
    shutdown: CancellationToken,
}

impl Exporter {
    /// An exporter of `settings`; `shutdown` ends the probes in flight.
    pub fn new(settings: Settings, shutdown: CancellationToken) -> Arc<Self> {
        let own = Own::new(&settings.targets);
        let slots = settings
            .targets
            .iter()
            .map(|t| {
                let slot = Slot {
                    target: t.clone(),
                    busy: Arc::new(Mutex::new(())),
                };
                (t.name.clone(), slot)
            })
            .collect();
        Arc::new(Exporter {
            slots,
            running: Arc::new(Semaphore::new(settings.max_concurrent.max(1))),
            settings,
            own,
            shutdown,
        })
    }

    /// The HTTP handler: `/probe`, `/metrics`, `/` (what is here), 404 for anything else.
    pub fn handler(self: &Arc<Self>) -> Handler {
        let me = self.clone();
        Arc::new(move |parts: Parts| {
            let me = me.clone();
            Box::pin(async move { me.answer(parts).await })
        })
    }

    async fn answer(self: Arc<Self>, parts: Parts) -> Reply {
        match parts.uri.path() {
            "/metrics" => http::metrics(&self.own.exposition, &parts),
            "/probe" if parts.method != Method::GET && parts.method != Method::HEAD => {
                let mut r = http::text(StatusCode::METHOD_NOT_ALLOWED, "use GET or HEAD\n");
                r.headers_mut()
                    .insert(ALLOW, hyper::header::HeaderValue::from_static("GET, HEAD"));
                r
            }
            "/probe" => self.probe_request(&parts).await,
            "/" => http::text(StatusCode::OK, self.index()),
            _ => http::text(
                StatusCode::NOT_FOUND,
                "not found: this exporter serves /probe?target=NAME and /metrics\n",
            ),
        }
    }

    /// Waits up to `limit` for the probes in flight, which `shutdown` cut, to give back their
    /// turns: by then their answers (`shutdown`) are written or on their way.
    pub async fn settle(&self, limit: Duration) {
        let all = self.settings.max_concurrent.max(1);
        let _ = tokio::time::timeout(limit, async {
            while self.running.available_permits() < all {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await;
    }

    /// The page at `/`: what to scrape.
    fn index(&self) -> String {
        let mut page = String::from(
            "mux-bw exporter\n/probe?target=NAME  one measurement, as metrics\n/metrics            the exporter's own\ntargets:\n",
        );
        for name in self.slots.keys() {
            page.push_str(&format!("  {name}\n"));
        }
        page
    }

    async fn probe_request(self: Arc<Self>, parts: &Parts) -> Reply {
        let started = Instant::now();
        let name = match target_param(parts.uri.query().unwrap_or("")) {
            Some(n) => n,
            None => {
                return http::text(
                    StatusCode::BAD_REQUEST,
                    "missing target: ask /probe?target=NAME\n",
                )
            }
        };
        if !self.slots.contains_key(&name) {
            let known: Vec<&str> = self.slots.keys().map(String::as_str).collect();
            return http::text(
                StatusCode::BAD_REQUEST,
                format!(
                    "unknown target '{name}'; configured: {}\n",
                    known.join(", ")
                ),
            );
        }
        let budget = self.budget(&parts.headers);
        let deadline = tokio::time::Instant::from_std(started) + budget;
        let outcome = self.probe(&name, deadline, started).await;
        let accept = parts
            .headers
            .get(hyper::header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let (body, kind) = results::exposition(&outcome).encode(accept);
        http::reply(StatusCode::OK, kind, body)
    }

    /// The time a probe may take: the scrape's timeout less the offset, or the default.
    fn budget(&self, headers: &HeaderMap) -> Duration {
        let asked = headers
            .get(TIMEOUT_HEADER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<f64>().ok())
            .filter(|s| s.is_finite() && *s > 0.0)
            .map(|s| Duration::from_secs_f64(s.min(MAX_PROBE.as_secs_f64())));
        match asked {
            Some(t) => t.saturating_sub(self.settings.timeout_offset),
            None => self.settings.default_timeout,
        }
        .min(MAX_PROBE)
    }

    /// One probe of `name`: waits its turn, measures, counts the result. A scraper that hangs up
    /// while the probe waits (hyper then drops this future) costs no measurement; once the
    /// measurement started it runs on a task of its own, so a hang-up does not cut it in half
    /// and it is still counted.
    async fn probe(
        self: &Arc<Self>,
        name: &str,
        deadline: tokio::time::Instant,
        started: Instant,
    ) -> Outcome {
        let Some(slot) = self.slots.get(name) else {
            return Outcome::without_run(Failure::Local, started);
        };
        // A scrape that leaves too little time fails as such, without waiting for a turn.
        let budget = deadline.saturating_duration_since(tokio::time::Instant::now());
        let early = if probe::fit(&slot.target.config, budget).is_none() {
            Err(Failure::Budget)
        } else {
            // Only the wait for its turn is cut at the deadline; a measurement ends itself there.
            let turn = tokio::time::timeout_at(deadline, async {
                let mine = slot.busy.clone().lock_owned().await;
                (mine, self.running.clone().acquire_owned().await)
            })
            .await;
            match turn {
                Err(_) => Err(Failure::Busy),
                Ok((_, Err(_))) => Err(Failure::Shutdown),
                Ok((mine, Ok(running))) => Ok((mine, running)),
            }
        };
        let outcome = match early {
            Err(why) => Outcome::without_run(why, started),
            Ok(turn) => {
                let (me, name) = (self.clone(), name.to_string());
                let task =
                    tokio::spawn(async move { me.measure(&name, deadline, started, turn).await });
                return task
                    .await
                    .unwrap_or_else(|_| Outcome::without_run(Failure::Local, started));
            }
        };
        self.own.record(name, &outcome);
        outcome
    }

    /// The measurement of a probe that has its turn (`turn`, held until the run is over).
    async fn measure(
        &self,
        name: &str,
        deadline: tokio::time::Instant,
        started: Instant,
        turn: impl Send + 'static,
    ) -> Outcome {
        let Some(slot) = self.slots.get(name) else {
            return Outcome::without_run(Failure::Local, started);
        };
        let save = self
            .settings
            .save_runs
            .as_ref()
            .map(|dir| dir.join(&slot.target.name));
        let outcome = probe::measure(
            &slot.target,
            deadline,
            started,
            save.as_deref(),
            &self.shutdown,
            turn,
        )
        .await;
        self.own.record(name, &outcome);
        outcome
    }
}

/// The value of `target=` in a query string (names are plain: letters, digits, `-_.`).
fn target_param(query: &str) -> Option<String> {
    query
        .split('&')
        .find_map(|kv| kv.strip_prefix("target="))
        .filter(|v| !v.is_empty())
        .map(str::to_string)
}

/// Whether `name` can be a target's name: 1 to 64 letters, digits, `-`, `_` or `.`, so it is
/// safe in a URL, a label and a directory name as it is.
pub fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn target_names_are_safe_in_urls_labels_and_paths() {
        assert!(valid_name("eu-4x2_relays.v1"));
        for bad in ["", ".", "..", "a/b", "a b", "é", "a%2F", &"x".repeat(65)] {
            assert!(!valid_name(bad), "{bad:?}");
        }
    }

    #[test]
    fn the_target_comes_from_the_query() {
        assert_eq!(target_param("target=eu").as_deref(), Some("eu"));
        assert_eq!(target_param("x=1&target=eu&y").as_deref(), Some("eu"));
        assert_eq!(target_param("target="), None);
        assert_eq!(target_param(""), None);
    }
}
