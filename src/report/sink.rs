//! Where a run's events go: NDJSON on stdout (for jq), human lines and the live view, and a
//! `--json-file` copy. Each output has a thread of its own fed by a bounded queue, so a slow
//! reader (`| jq` on a busy host, `| (sleep 3; cat)`) never blocks a pump, the sampler or the
//! prober. An output that falls `QUEUE` events behind drops the newest ones and counts them
//! (`summary.events_dropped`); the summary itself waits for room and for every output to finish,
//! so it is never lost.
//!
//! The sink never fails the run: a closed stdout (`| head`) stops stdout output and ends the run
//! quietly; any other stdout error (a full disk) stops stdout output and is reported at the end.

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use crate::report::events::{to_json_line, Event};
use crate::report::live::HumanView;

/// Events that may wait for one output before new ones are dropped. A sample of 1024 routes is
/// about 200 KB of JSON, so this bounds the backlog of a stalled output at some hundreds of MB
/// only in the worst case, and is minutes of output in the usual ones.
pub const QUEUE: usize = 4096;

/// Where a run's events go.
#[derive(Debug, Default)]
pub struct SinkConfig {
    /// NDJSON on stdout; otherwise human output.
    pub json: bool,
    /// Also write NDJSON to this file.
    pub json_file: Option<std::path::PathBuf>,
    /// Draw live per-route bars on stderr (human output only).
    pub live: bool,
    /// No human output at all (benchmarks, embedding); JSON outputs are unaffected.
    pub quiet: bool,
    /// Also hand every event to this function, on the emitting task, after the outputs took
    /// it (the exporter picks out what it needs); it must be quick.
    pub tap: Option<Tap>,
}

/// A function that sees every event of a run as it is emitted.
#[derive(Clone)]
pub struct Tap(pub Arc<dyn Fn(&Event) + Send + Sync>);

impl std::fmt::Debug for Tap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Tap")
    }
}

/// What the stdout writer reports back.
#[derive(Default)]
struct StdoutState {
    gone: CancellationToken,
    /// The first stdout write error that is not a closed pipe; stdout output stops there.
    error: OnceLock<String>,
}

/// One event for an output: its JSON line when some output needs JSON, and the event itself
/// for the human view.
struct Item {
    line: Option<Arc<str>>,
    event: Option<Event>,
    t: Duration,
}

/// An output thread and its queue.
struct Output {
    tx: Mutex<Option<SyncSender<Item>>>,
    thread: Mutex<Option<JoinHandle<()>>>,
    dropped: AtomicU64,
}

impl Output {
    fn spawn(name: &str, mut write: impl FnMut(Item) + Send + 'static) -> std::io::Result<Self> {
        let (tx, rx) = mpsc::sync_channel::<Item>(QUEUE);
        let thread = std::thread::Builder::new()
            .name(name.to_string())
            .spawn(move || {
                for item in rx {
                    write(item);
                }
            })?;
        Ok(Output {
            tx: Mutex::new(Some(tx)),
            thread: Mutex::new(Some(thread)),
            dropped: AtomicU64::new(0),
        })
    }

    fn tx(&self) -> std::sync::MutexGuard<'_, Option<SyncSender<Item>>> {
        self.tx.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues `item`, or counts it dropped when the output is `QUEUE` events behind.
    fn offer(&self, item: Item) {
        if let Some(tx) = self.tx().as_ref() {
            if let Err(TrySendError::Full(_)) = tx.try_send(item) {
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Queues the last item, waiting for room, then lets the thread write everything and end.
    fn finish(&self, item: Item) {
        if let Some(tx) = self.tx().take() {
            let _ = tx.send(item);
        }
        let thread = self.thread.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(t) = thread {
            let _ = t.join();
        }
    }
}

/// Where events go. Shared by all tasks of a run; `emit` never fails, never panics, and never
/// waits for an output, except for the summary.
pub struct EventSink {
    start: Instant,
    json: bool,
    stdout: Option<Output>,
    file: Option<Output>,
    state: Arc<StdoutState>,
    tap: Option<Tap>,
}

impl EventSink {
    /// Opens the sink; fails only if `json_file` cannot be created (or a thread not started).
    pub fn new(start: Instant, cfg: &SinkConfig) -> std::io::Result<Self> {
        let state = Arc::new(StdoutState::default());
        let file = match &cfg.json_file {
            Some(p) => Some(file_output(std::fs::File::create(p)?)?),
            None => None,
        };
        let human = (!cfg.json && !cfg.quiet).then(|| HumanView::new(cfg.live));
        let stdout = if cfg.json || human.is_some() {
            Some(stdout_output(human, state.clone())?)
        } else {
            None
        };
        Ok(EventSink {
            start,
            json: cfg.json,
            stdout,
            file,
            state,
            tap: cfg.tap.clone(),
        })
    }

    /// Time since the run started, as stamped on events.
    pub fn elapsed(&self) -> Duration {
        self.start.elapsed()
    }

    /// When the run started.
    pub fn start(&self) -> Instant {
        self.start
    }

    /// Cancelled once stdout is closed (`| head`): the run should end quietly.
    pub fn stdout_gone(&self) -> CancellationToken {
        self.state.gone.clone()
    }

    /// Why stdout output stopped, if it failed other than by being closed (e.g. a full disk):
    /// the run went on, and the caller reports this once it ends.
    pub fn stdout_error(&self) -> Option<&str> {
        self.state.error.get().map(String::as_str)
    }

    /// Hands one event to every output. The summary is the last event: it carries the count of
    /// events dropped so far, and `emit` returns only once every output has written it.
    pub fn emit(&self, mut event: Event) {
        let t = self.elapsed();
        let outputs = [&self.stdout, &self.file];
        let last = matches!(event, Event::Summary(_) | Event::ScanSummary(_));
        if let Event::Summary(s) = &mut event {
            s.events_dropped = outputs
                .iter()
                .flat_map(|o| o.as_ref())
                .map(|o| o.dropped.load(Ordering::Relaxed))
                .sum();
        }
        // The tap sees an event once the outputs have it (the summary once it is written).
        let tapped = self.tap.as_ref().map(|tap| (tap, event.clone()));
        let needs_json = self.json || self.file.is_some();
        let line: Option<Arc<str>> = needs_json.then(|| (to_json_line(&event, t) + "\n").into());
        let human = (!self.json).then_some(event);
        if let Some(file) = &self.file {
            let item = Item {
                line: line.clone(),
                event: None,
                t,
            };
            if last {
                file.finish(item);
            } else {
                file.offer(item);
            }
        }
        if let Some(out) = &self.stdout {
            let item = Item {
                line,
                event: human,
                t,
            };
            if last {
                out.finish(item);
            } else if !self.state.gone.is_cancelled() {
                out.offer(item);
            }
        }
        if let Some((tap, event)) = tapped {
            (tap.0)(&event);
        }
    }
}

/// The `--json-file` writer; a failing file is reported once on stderr and then skipped.
fn file_output(file: std::fs::File) -> std::io::Result<Output> {
    let mut f = std::io::BufWriter::new(file);
    let mut failed = false;
    Output::spawn("mux-bw json-file", move |item| {
        let Some(line) = item.line else { return };
        if failed {
            return;
        }
        if let Err(e) = f.write_all(line.as_bytes()).and_then(|_| f.flush()) {
            failed = true;
            let _ = writeln!(
                std::io::stderr(),
                "mux-bw: warning: --json-file write failed, no more events go there: {e}"
            );
        }
    })
}

/// The stdout writer: NDJSON lines, or the human view (lines on stderr, the summary table on
/// stdout). A closed stdout fires `gone`; another error is kept in `error`; both stop output.
fn stdout_output(human: Option<HumanView>, state: Arc<StdoutState>) -> std::io::Result<Output> {
    Output::spawn("mux-bw stdout", move |item| {
        if state.gone.is_cancelled() || state.error.get().is_some() {
            return;
        }
        let text: Option<String> = match (&human, item.event) {
            (Some(view), Some(event)) => view.show(&event, item.t),
            _ => item.line.map(|l| l.to_string()),
        };
        let Some(text) = text else { return };
        let mut out = std::io::stdout().lock();
        if let Err(e) = out.write_all(text.as_bytes()).and_then(|_| out.flush()) {
            if e.kind() == std::io::ErrorKind::BrokenPipe {
                state.gone.cancel();
            } else {
                let _ = state.error.set(e.to_string());
            }
        }
    })
}
