//! `scan`: every relay of a pool (or of a lab) measured through its own two-hop route, the
//! direct path as the reference, ranked; `--out` keeps the ranking (also on Ctrl-C).

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;
use tokio_util::sync::CancellationToken;

use super::args::{LinkArgs, TuningArgs};
use super::config::{node_pool, random_token, token_bytes, wired};
use super::parse::{count_at_most, duration_in, HOUR, MAX_LAB_RELAYS, NONZERO, WEEK};
use super::{interrupt_token, UsageError, EXIT_INTERRUPTED, EXIT_NO_ROUTE, EXIT_OK};
use crate::client::run::RunConfig;
use crate::client::scan::{self, ScanConfig};
use crate::lab::emulation::Links;
use crate::lab::Lab;
use crate::report::events::{Event, RelayScan, ScanSummary};
use crate::report::human::short;
use crate::report::sink::{EventSink, SinkConfig};
use crate::wire::addr::NodeAddr;
use crate::wire::mode::Mode;

/// Most relays measured at once.
const MAX_PARALLEL: usize = 64;

#[derive(Debug, Args)]
pub(super) struct ScanArgs {
    /// Scan the relays of a fresh lab (destination and relays in this process).
    #[arg(long, conflicts_with_all = ["to", "relays", "relays_file"])]
    lab: bool,
    /// Relays in the lab, named r0, r1, ... (at most 1024).
    #[arg(long = "relays", value_name = "K", default_value_t = 8, requires = "lab",
          value_parser = count_at_most(MAX_LAB_RELAYS, "relays"))]
    lab_relays: usize,
    #[command(flatten)]
    links: LinkArgs,
    /// Destination node (without --lab).
    #[arg(long, value_name = "NODE", required_unless_present = "lab")]
    to: Option<String>,
    /// A relay node URI; repeat for a pool (without --lab).
    #[arg(long = "relay", value_name = "NODE")]
    relays: Vec<String>,
    /// File with one relay URI per line (without --lab).
    #[arg(long, value_name = "FILE")]
    relays_file: Option<PathBuf>,
    /// Measured load per relay (at most 7d).
    #[arg(long, value_name = "DUR", default_value = "3s", value_parser = duration_in(NONZERO, WEEK))]
    duration: Duration,
    /// Warm-up before each relay's --duration, left out of its rate: slow start is not what a
    /// relay can carry (at most 7d).
    #[arg(long, value_name = "DUR", default_value = "500ms", value_parser = duration_in(Duration::ZERO, WEEK))]
    omit: Duration,
    /// Relays measured at once (1 to 64); above 1 the client's own link may be what limits.
    #[arg(long, value_name = "K", default_value_t = 1,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=MAX_PARALLEL as u64))]
    parallel: usize,
    /// Budget for each hop's connect and setup (at most 1h).
    #[arg(long, value_name = "DUR", default_value = "5s", value_parser = duration_in(NONZERO, HOUR))]
    setup_timeout: Duration,
    /// Deadline of every read and write on a route (at most 1h).
    #[arg(long, value_name = "DUR", default_value = "10s", value_parser = duration_in(NONZERO, HOUR))]
    io_timeout: Duration,
    /// Write the ranking (the scan_summary event) as JSON to FILE, also after Ctrl-C.
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
    /// NDJSON events on stdout instead of the human table.
    #[arg(long)]
    json: bool,
    /// Token to present to the nodes (in a lab: the token its nodes require, random if absent).
    #[arg(long, env = "MUX_BW_TOKEN", hide_env_values = true)]
    token: Option<String>,
    #[command(flatten)]
    tuning: TuningArgs,
}

/// `scan`: the whole scan, its ranking printed and saved.
pub(super) async fn run_scan(a: ScanArgs) -> anyhow::Result<i32> {
    if a.links.given() && !a.lab {
        return Err(UsageError("link emulation (--link-*, --topology) needs --lab".into()).into());
    }
    let sink = EventSink::new(
        Instant::now(),
        &SinkConfig {
            json: a.json,
            ..SinkConfig::default()
        },
    )?;
    let interrupt = interrupt_token();
    let summary = if a.lab {
        scan_lab(&a, &sink, interrupt.clone()).await?
    } else {
        let to = a.to.as_deref().unwrap_or_default();
        let (dst, pool) = node_pool(to, &a.relays, a.relays_file.as_deref())?;
        let token = token_bytes(a.token.as_deref())?.unwrap_or_default();
        let named = pool
            .iter()
            .map(|r| (short(&r.id.to_string()).to_string(), *r))
            .collect();
        let cfg = scan_config(&a, dst, named, token, None, progress(a.json, pool.len()));
        scan::scan(&cfg, &sink, interrupt.clone()).await
    };
    sink.emit(Event::ScanSummary(summary.clone()));
    if let Some(path) = &a.out {
        write_out(path, &summary)?;
    }
    if let (Some(e), false) = (sink.stdout_error(), sink.stdout_gone().is_cancelled()) {
        // The scan went on (`--out` has it all); stdout lost output from here.
        return Err(anyhow::anyhow!("cannot write to stdout: {e}"));
    }
    Ok(if summary.interrupted {
        EXIT_INTERRUPTED
    } else if summary.relays_measured == 0 && summary.direct.cause.is_some() {
        EXIT_NO_ROUTE
    } else {
        EXIT_OK
    })
}

/// A lab of `--relays` relays (with its emulated links), scanned, then stopped.
async fn scan_lab(
    a: &ScanArgs,
    sink: &EventSink,
    interrupt: CancellationToken,
) -> anyhow::Result<ScanSummary> {
    let plan = a.links.plan(a.lab_relays)?;
    let token = match token_bytes(a.token.as_deref())? {
        Some(t) => t,
        None => random_token()?,
    };
    let lab = Lab::start(a.lab_relays, token.clone(), false, a.tuning.tuning()).await?;
    let links = plan.map(|p| wired(Links::new(&p, &lab.relays)));
    let named = lab
        .relays
        .iter()
        .enumerate()
        .map(|(k, r)| (format!("r{k}"), *r))
        .collect();
    let cfg = scan_config(
        a,
        lab.dst,
        named,
        token,
        links,
        progress(a.json, lab.relays.len()),
    );
    let summary = scan::scan(&cfg, sink, interrupt).await;
    drop(cfg);
    lab.stop().await;
    Ok(summary)
}

/// The scan's settings; each relay's run replaces the routes.
fn scan_config(
    a: &ScanArgs,
    dst: NodeAddr,
    relays: Vec<(String, NodeAddr)>,
    token: Vec<u8>,
    links: Option<Arc<dyn crate::client::wiring::PathWiring>>,
    on_row: Arc<dyn Fn(&RelayScan) + Send + Sync>,
) -> ScanConfig {
    let base = RunConfig {
        dst,
        relays: Vec::new(),
        routes: Vec::new(),
        min_hops: 2,
        allow_overlap: false,
        mode: Mode::Up,
        duration: a.duration,
        omit: a.omit,
        interval: a.duration.min(Duration::from_secs(1)),
        setup_timeout: a.setup_timeout,
        io_timeout: a.io_timeout,
        stall_timeout: a.io_timeout,
        probe_rtt: true,
        probe_all: false,
        probe_interval: Duration::from_millis(100),
        token,
        redial: false,
        tuning: a.tuning.tuning(),
        links,
        load_started: CancellationToken::new(),
        warnings: Vec::new(),
        pick: None,
        stripe: None,
    };
    ScanConfig {
        base,
        relays,
        parallel: a.parallel,
        on_row,
        scratch: std::env::temp_dir().join(format!("mux-bw-scan-{}", std::process::id())),
    }
}

/// A progress bar over the rows (the direct path and every relay) on a terminal, for human
/// output; nothing otherwise (the rows' lines and events say the same).
fn progress(json: bool, relays: usize) -> Arc<dyn Fn(&RelayScan) + Send + Sync> {
    use std::io::IsTerminal;
    if json || !std::io::stderr().is_terminal() {
        return Arc::new(|_: &RelayScan| {});
    }
    let bar = indicatif::ProgressBar::new(relays as u64 + 1);
    // invariant: the template is a constant known to parse.
    bar.set_style(
        indicatif::ProgressStyle::with_template("scan [{bar:30}] {pos}/{len} rows, ETA {eta}")
            .expect("valid template"),
    );
    Arc::new(move |_: &RelayScan| {
        bar.inc(1);
        if bar.position() >= bar.length().unwrap_or(0) {
            bar.finish_and_clear();
        }
    })
}

/// The ranking as pretty JSON.
fn write_out(path: &std::path::Path, summary: &ScanSummary) -> anyhow::Result<()> {
    // invariant: the summary holds only numbers, strings, options and vectors.
    let json = serde_json::to_string_pretty(summary).expect("scan summary serializes") + "\n";
    std::fs::write(path, json)
        .map_err(|e| anyhow::anyhow!("cannot write --out '{}': {e}", path.display()))?;
    let _ = writeln!(std::io::stderr(), "ranking saved to {}", path.display());
    Ok(())
}
