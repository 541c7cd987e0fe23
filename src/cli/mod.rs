//! Command line: clap definitions, validation into typed configs before any dial, and the mapping
//! of outcomes to exit codes (0 done, 1 runtime failure, 2 bad input, 3 no route, 4 every route
//! failed, 130 Ctrl-C).
//! The only module that uses anyhow-style stringly errors; everything below it is typed.

use std::collections::BTreeMap;
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Args, Parser, Subcommand};
use tokio_util::sync::CancellationToken;

use crate::client::plan::{self, PlanRequest};
use crate::client::run::{self, RunConfig};
use crate::client::wiring::PathWiring;
use crate::lab::emulation::Links;
use crate::lab::shaper::{LinkSpec, Loss, Rate};
use crate::lab::{Fault, Lab};
use crate::node::{self, Limits, NodeConfig, Role};
use crate::report::sink::{EventSink, SinkConfig};
use crate::wire::addr::NodeAddr;
use crate::wire::identity::{Identity, IdentityError, NodeId};
use crate::wire::mode::Mode;
use crate::wire::setup::{MAX_HOPS, MAX_ROUTES, MAX_TOKEN_LEN};
use crate::wire::transport::{Congestion, Tuning};
use crate::{report::compare, report::plot, report::runfile, report::sweep};

/// Exit code: the run completed.
pub const EXIT_OK: i32 = 0;
/// Exit code: a runtime failure (cannot bind, cannot create identity).
pub const EXIT_FAILURE: i32 = 1;
/// Exit code: bad command line or input file.
pub const EXIT_USAGE: i32 = 2;
/// Exit code: not a single route could be established.
pub const EXIT_NO_ROUTE: i32 = 3;
/// Exit code: routes were established, but every one failed during the run.
pub const EXIT_ALL_FAILED: i32 = 4;
/// Exit code: fewer routes were established than planned (and no `--allow-partial`).
pub const EXIT_PARTIAL: i32 = 5;
/// Exit code: interrupted by Ctrl-C (the summary was still printed).
pub const EXIT_INTERRUPTED: i32 = 130;

/// `--version`: crate version, commit, and the setup protocol version spoken.
pub const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (git ",
    env!("MUX_BW_GIT_SHA"),
    ", protocol v2)"
);

/// Multi-route bandwidth measurement over QUIC.
#[derive(Debug, Parser)]
#[command(name = "mux-bw", version = VERSION, about, propagate_version = true)]
pub struct Cli {
    /// More logging on stderr (-v info, -vv debug); RUST_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a destination node (the far end of routes: sink for up, source for down).
    Serve(NodeArgs),
    /// Run an intermediate node that forwards routes to the next hop named in their setup.
    Relay(NodeArgs),
    /// Measure: set up N routes to a destination through relays and pump data on each.
    Run(RunArgs),
    /// Start a destination and K relays in this process on 127.0.0.1, then run against them.
    Lab(LabArgs),
    /// Put saved runs (NDJSON from --json or --json-file) side by side, each against the first.
    Compare(CompareArgs),
    /// Draw a saved run as an SVG: throughput per route and in total, failures, RTT.
    Plot(PlotArgs),
    /// Run a matrix of cells (routes x min-hops x mode), each several times, against real nodes
    /// or in a lab; save every run and print mean ± stddev per cell with ratios.
    Sweep(SweepArgs),
    /// Print a shell completion script (e.g. `mux-bw completions bash > /etc/bash_completion.d/mux-bw`).
    Completions {
        /// bash, zsh, fish, elvish or powershell.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

#[derive(Debug, Args)]
struct SweepArgs {
    /// Run every measurement in a fresh lab (destination and relays in this process).
    #[arg(long, conflicts_with_all = ["to", "relays", "relays_file"])]
    lab: bool,
    /// Relays in each lab, at most 1024 [default: enough for the largest cell].
    #[arg(long, value_name = "K", requires = "lab", value_parser = count_at_most(MAX_LAB_RELAYS, "relays"))]
    lab_relays: Option<usize>,
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
    /// Route counts to try, comma-separated (e.g. 1,2,4,8), each at most 1024.
    #[arg(long, value_name = "N,..", value_delimiter = ',', default_value = "1",
          value_parser = count_at_most(MAX_ROUTES, "routes"))]
    routes: Vec<usize>,
    /// Minimum hops to try, comma-separated (e.g. 1,2).
    #[arg(long, value_name = "H,..", value_delimiter = ',', default_value = "1")]
    min_hops: Vec<usize>,
    /// Modes to try, comma-separated (up, down, bidir, echo).
    #[arg(
        long,
        value_name = "MODE,..",
        value_delimiter = ',',
        value_enum,
        default_value = "up"
    )]
    mode: Vec<Mode>,
    /// Runs per cell.
    #[arg(long, value_name = "K", default_value_t = 1,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=1000))]
    runs: usize,
    /// Directory for every run's NDJSON (created if absent).
    #[arg(long, value_name = "DIR", default_value = "sweep")]
    out: PathBuf,
    /// Also write the matrix as a Markdown table to FILE.
    #[arg(long, value_name = "FILE")]
    export_markdown: Option<PathBuf>,
    /// Also write the matrix as JSON to FILE.
    #[arg(long, value_name = "FILE")]
    export_json: Option<PathBuf>,
    #[command(flatten)]
    measure: MeasureOpts,
}

#[derive(Debug, Args)]
struct CompareArgs {
    /// Saved runs; `-` reads one from stdin. The first is the baseline.
    #[arg(value_name = "RUN.ndjson", required = true)]
    runs: Vec<String>,
    /// Print the comparison as JSON instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
struct PlotArgs {
    /// A saved run; `-` reads it from stdin.
    #[arg(value_name = "RUN.ndjson")]
    run: String,
    /// SVG file to write.
    #[arg(short, long, value_name = "OUT.svg")]
    output: PathBuf,
}

#[derive(Debug, Args)]
struct NodeArgs {
    /// UDP address to listen on [default: 0.0.0.0:7600 for serve, 0.0.0.0:7601 for relay; port 0 picks one].
    #[arg(long, value_name = "ADDR")]
    listen: Option<SocketAddr>,
    /// Private key file; created (mode 0600) if absent. Without it the node id changes every start.
    #[arg(long, value_name = "FILE")]
    identity: Option<PathBuf>,
    /// Also write this node's mbw:// URI to FILE.
    #[arg(long, value_name = "FILE")]
    node_file: Option<PathBuf>,
    /// Setup headers must carry this token (required unless --open).
    #[arg(long, env = "MUX_BW_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Accept routes from anyone, without a token.
    #[arg(long, conflicts_with = "token")]
    open: bool,
    /// Drop connections that send no setup header within this time (e.g. 5s, 500ms; at most 1m).
    #[arg(long, value_name = "DUR", default_value = "5s", value_parser = duration_in(NONZERO, MINUTE))]
    header_timeout: Duration,
    /// Refuse routes longer than this many links.
    #[arg(long, value_name = "N", default_value_t = Limits::default().max_hops,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=MAX_HOPS as u64))]
    max_hops: usize,
    /// Refuse more than this many routes at once from one client IP.
    #[arg(long, value_name = "N", default_value_t = Limits::default().max_routes_per_client)]
    max_routes_per_client: usize,
    /// Refuse handshakes beyond this many open connections.
    #[arg(long, value_name = "N", default_value_t = Limits::default().max_connections)]
    max_connections: usize,
    /// Longest onward setup this relay performs, whatever budget a client's header asks for
    /// (at most 1h).
    #[arg(long, value_name = "DUR", default_value = "10s", value_parser = duration_in(NONZERO, HOUR))]
    max_setup_timeout: Duration,
    /// On SIGINT/SIGTERM, let established routes run this long before closing them (at most 1h).
    #[arg(long, value_name = "DUR", default_value = "5s", value_parser = duration_in(Duration::ZERO, HOUR))]
    drain_timeout: Duration,
    #[command(flatten)]
    tuning: TuningArgs,
}

/// QUIC settings shared by every command that opens connections.
#[derive(Clone, Copy, Debug, Args)]
struct TuningArgs {
    /// Per-stream receive window in bytes (K, M, G = KiB, MiB, GiB): the most a peer may send
    /// on one stream ahead of the reader. Must cover the path's bandwidth x RTT.
    #[arg(long, value_name = "BYTES", default_value = "8M", value_parser = parse_size)]
    stream_window: u64,
    /// Per-connection receive window in bytes.
    #[arg(long, value_name = "BYTES", default_value = "16M", value_parser = parse_size)]
    conn_window: u64,
    /// Send buffer in bytes (unacknowledged data included).
    #[arg(long, value_name = "BYTES", default_value = "16M", value_parser = parse_size)]
    send_window: u64,
    /// Congestion controller.
    #[arg(long = "cc", value_enum, default_value_t = Congestion::Cubic)]
    congestion: Congestion,
    /// UDP socket send buffer in bytes (0 = OS default).
    #[arg(long, value_name = "BYTES", default_value = "4M", value_parser = parse_size_or_zero)]
    socket_send_buffer: u64,
    /// UDP socket receive buffer in bytes (0 = OS default). Big enough for fast long paths; on a
    /// CPU-bound host a big one turns loss into queueing delay.
    #[arg(long, value_name = "BYTES", default_value = "512K", value_parser = parse_size_or_zero)]
    socket_recv_buffer: u64,
}

impl LinkArgs {
    /// The emulated links (relay links, direct link), or `None` when no link flag was given.
    fn links(&self) -> Option<(LinkSpec, LinkSpec)> {
        let any = self.link_rate.is_some()
            || self.link_delay.is_some()
            || self.link_loss.is_some()
            || self.direct_rate.is_some()
            || self.direct_delay.is_some();
        if !any {
            return None;
        }
        let loss = self.link_loss.map_or(0.0, |l| l.0);
        let relay = LinkSpec {
            rate: self.link_rate,
            delay: self.link_delay.unwrap_or_default(),
            loss,
        };
        let direct = LinkSpec {
            rate: self.direct_rate.or(self.link_rate),
            delay: self.direct_delay.or(self.link_delay).unwrap_or_default(),
            loss,
        };
        Some((relay, direct))
    }
}

impl TuningArgs {
    fn tuning(&self) -> Tuning {
        Tuning {
            stream_window: self.stream_window,
            conn_window: self.conn_window,
            send_window: self.send_window,
            congestion: self.congestion,
            socket_send_buffer: self.socket_send_buffer as usize,
            socket_recv_buffer: self.socket_recv_buffer as usize,
        }
    }
}

fn parse_size_or_zero(s: &str) -> Result<u64, String> {
    if s.trim() == "0" {
        Ok(0)
    } else {
        parse_size(s)
    }
}

/// Parses `1048576`, `512K`, `8M`, `1G` (binary units; an optional `iB`/`B` suffix is allowed).
fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let t = t
        .strip_suffix("iB")
        .or_else(|| t.strip_suffix('B'))
        .unwrap_or(t);
    let (num, shift) = match t.char_indices().last() {
        Some((i, 'K' | 'k')) => (&t[..i], 10),
        Some((i, 'M' | 'm')) => (&t[..i], 20),
        Some((i, 'G' | 'g')) => (&t[..i], 30),
        _ => (t, 0),
    };
    let n: u64 = num
        .parse()
        .map_err(|_| "expected a size in bytes like 8M, 512K or 1048576".to_string())?;
    let v = n
        .checked_mul(1 << shift)
        .filter(|v| (1024..=(1u64 << 32)).contains(v))
        .ok_or_else(|| "expected a size from 1K to 4G".to_string())?;
    Ok(v)
}

#[derive(Debug, Args)]
struct RunArgs {
    /// Destination node, as printed by `mux-bw serve`: mbw://<node-id>@host:port.
    #[arg(long, value_name = "NODE")]
    to: String,
    /// A relay node URI; repeat for a pool.
    #[arg(long = "relay", value_name = "NODE")]
    relays: Vec<String>,
    /// File with one relay URI per line; `#` starts a comment.
    #[arg(long, value_name = "FILE")]
    relays_file: Option<PathBuf>,
    #[command(flatten)]
    opts: RunOpts,
}

#[derive(Debug, Args)]
struct LabArgs {
    /// Number of relays to start (named r0, r1, ... in --via and --fault), at most 1024.
    #[arg(long = "relays", value_name = "K", default_value_t = 8,
          value_parser = count_at_most(MAX_LAB_RELAYS, "relays"))]
    relay_count: usize,
    /// Inject a fault: kill:R@T (relay R drops all connections T after the load starts) or
    /// stall:R@T (relay R stops reading and forwarding, connections stay open). Repeatable.
    #[arg(long = "fault", value_name = "KIND:R@T")]
    faults: Vec<Fault>,
    /// Run every node as a child process (killed with this one, even by SIGKILL); faults become
    /// signals: kill = SIGKILL, stall = SIGSTOP.
    #[arg(long)]
    processes: bool,
    #[command(flatten)]
    links: LinkArgs,
    #[command(flatten)]
    opts: RunOpts,
}

/// Flags shared by `run` and `lab`.
#[derive(Debug, Args)]
struct RunOpts {
    /// Number of routes, each its own chain of QUIC connections (at most 1024).
    ///
    /// The limit is measured (docs/PERFORMANCE.md): on a 2-core host 1024 routes were all up
    /// after 3.0 to 8.3 s (direct) and 3.8 to 5.9 s (two hops); at 2048 up to 131 setups failed
    /// per run.
    #[arg(long, value_name = "N", default_value_t = 1,
          value_parser = count_at_most(MAX_ROUTES, "routes"))]
    routes: usize,
    /// Links per route: 1 = direct, H >= 2 = H-1 relays (never direct).
    #[arg(long, value_name = "H", default_value_t = 1)]
    min_hops: usize,
    /// Pin route IDX through these relays in order, e.g. `--via 2=mbw://...` (lab: `--via 2=r3`).
    #[arg(long, value_name = "IDX=NODE[,NODE..]")]
    via: Vec<String>,
    /// Data pattern: up (client → destination), down, bidir (both at once) or echo (the
    /// destination returns what it gets; a window of bytes stays in flight).
    #[arg(long, value_enum, default_value_t = Mode::Up)]
    mode: Mode,
    #[command(flatten)]
    measure: MeasureOpts,
    /// NDJSON events on stdout instead of human output.
    #[arg(long)]
    json: bool,
    /// Also write NDJSON events to FILE (the terminal keeps human output unless --json).
    #[arg(long, value_name = "FILE")]
    json_file: Option<PathBuf>,
    /// Live per-route bars on stderr: auto = when stderr is a terminal and output is human.
    #[arg(long, value_enum, default_value_t = Live::Auto)]
    live: Live,
}

/// How each measurement runs: shared by `run`, `lab` and `sweep`.
#[derive(Debug, Args)]
struct MeasureOpts {
    /// Let routes share relays when the pool is too small for disjoint routes.
    #[arg(long)]
    allow_overlap: bool,
    /// Accept a run in which fewer routes came up than planned (exit 0 instead of 5; the
    /// summary still says PARTIAL).
    #[arg(long)]
    allow_partial: bool,
    /// Set a failed route up again through spare relays (kept disjoint), with backoff; emits
    /// route_redial. Up to 5 attempts per failure.
    #[arg(long)]
    redial: bool,
    /// Length of the measured load phase (e.g. 10s, 1m, 500ms; at most 7d).
    #[arg(long, value_name = "DUR", default_value = "10s", value_parser = duration_in(NONZERO, WEEK))]
    duration: Duration,
    /// Warm-up before --duration: sampled (marked omitted) but left out of the summary (at
    /// most 7d).
    #[arg(long, value_name = "DUR", default_value = "0s", value_parser = duration_in(Duration::ZERO, WEEK))]
    omit: Duration,
    /// Sample period (10ms to 1h).
    #[arg(long, value_name = "DUR", default_value = "1s", value_parser = duration_in(MIN_INTERVAL, HOUR))]
    interval: Duration,
    /// Budget for each hop's connect and setup (at most 1h).
    #[arg(long, value_name = "DUR", default_value = "5s", value_parser = duration_in(NONZERO, HOUR))]
    setup_timeout: Duration,
    /// Deadline of every read and write on a route (at most 1h).
    #[arg(long, value_name = "DUR", default_value = "30s", value_parser = duration_in(NONZERO, HOUR))]
    io_timeout: Duration,
    /// Warn (route_stalled) when an established route moves no bytes this long (at most 1h).
    #[arg(long, value_name = "DUR", default_value = "5s", value_parser = duration_in(NONZERO, HOUR))]
    stall_timeout: Duration,
    /// Measure RTT on the first established route: idle baseline, then under load.
    #[arg(long)]
    probe_rtt: bool,
    /// Gap between RTT probes under load (1ms to 1h).
    #[arg(long, value_name = "DUR", default_value = "100ms", value_parser = duration_in(MIN_PROBE_INTERVAL, HOUR), requires = "probe_rtt")]
    probe_interval: Duration,
    /// Token to present to nodes started with --token.
    #[arg(long, env = "MUX_BW_TOKEN", hide_env_values = true)]
    token: Option<String>,
    #[command(flatten)]
    tuning: TuningArgs,
}

/// The lab's emulated links.
#[derive(Debug, Args)]
struct LinkArgs {
    /// Emulate a bottleneck of this rate on every link that touches a relay, each direction
    /// (tc units: 50mbit, 1gbit, 512kbit, or bits/s).
    #[arg(long, value_name = "RATE")]
    link_rate: Option<Rate>,
    /// One-way delay added on every link that touches a relay, each direction (at most 10s).
    #[arg(long, value_name = "DUR", value_parser = duration_in(Duration::ZERO, MAX_LINK_DELAY))]
    link_delay: Option<Duration>,
    /// Random loss on every emulated link, in percent (e.g. 0.5).
    #[arg(long, value_name = "PCT")]
    link_loss: Option<Loss>,
    /// Bottleneck of the direct client-destination link [default: --link-rate].
    #[arg(long, value_name = "RATE")]
    direct_rate: Option<Rate>,
    /// One-way delay of the direct link, at most 10s [default: --link-delay].
    #[arg(long, value_name = "DUR", value_parser = duration_in(Duration::ZERO, MAX_LINK_DELAY))]
    direct_delay: Option<Duration>,
}

/// When to draw the live view.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum Live {
    /// When stderr is a terminal.
    Auto,
    /// Always (human output only).
    Always,
    /// Never.
    Never,
}

/// Lower bound of a duration flag that must be greater than zero.
const NONZERO: Duration = Duration::from_nanos(1);
const MINUTE: Duration = Duration::from_secs(60);
const HOUR: Duration = Duration::from_secs(3600);
const WEEK: Duration = Duration::from_secs(7 * 24 * 3600);
/// Shortest `--interval`: below this the sampler's own lateness distorts every rate.
const MIN_INTERVAL: Duration = Duration::from_millis(10);
/// Shortest `--probe-interval`.
const MIN_PROBE_INTERVAL: Duration = Duration::from_millis(1);
/// Longest emulated one-way delay (`--link-delay`, `--direct-delay`).
const MAX_LINK_DELAY: Duration = Duration::from_secs(10);

/// The parser of a duration flag accepting `min..=max` (`NONZERO` as `min`: anything above 0s).
/// Every duration flag has a bound, so no deadline computed from one can overflow an `Instant`.
fn duration_in(
    min: Duration,
    max: Duration,
) -> impl Fn(&str) -> Result<Duration, String> + Clone + Send + Sync + 'static {
    move |s: &str| {
        let d = humantime::parse_duration(s)
            .map_err(|e| format!("expected a duration like 10s, 500ms or 1m ({e})"))?;
        if (min..=max).contains(&d) {
            return Ok(d);
        }
        let fmt = |d| humantime::format_duration(d).to_string();
        Err(if min == NONZERO {
            format!("expected a duration above 0s and at most {}", fmt(max))
        } else {
            format!("expected a duration from {} to {}", fmt(min), fmt(max))
        })
    }
}

/// Most relays `lab --relays` and `sweep --lab-relays` start: each is a node with its own
/// socket; 1024 of them carry `--routes 1024 --min-hops 2` (docs/PERFORMANCE.md).
const MAX_LAB_RELAYS: usize = 1024;

/// The parser of a count flag accepting `0..=max` (a zero that makes no sense is refused with
/// its own message later, e.g. by `client::plan::plan`).
fn count_at_most(
    max: usize,
    what: &'static str,
) -> impl Fn(&str) -> Result<usize, String> + Clone + Send + Sync + 'static {
    move |s: &str| {
        let n: usize = s
            .trim()
            .parse()
            .map_err(|_| format!("expected a number of {what} up to {max}"))?;
        if n > max {
            return Err(format!(
                "{n} {what} is above the limit of {max} (measured, see docs/PERFORMANCE.md)"
            ));
        }
        Ok(n)
    }
}

/// A bad-input error: printed as one line, exit code 2.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

impl UsageError {
    fn of(e: impl std::fmt::Display) -> Self {
        UsageError(e.to_string())
    }
}

/// Entry point of the binary: parses `std::env::args` and returns the exit code.
pub fn main() -> i32 {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => return clap_exit(e),
    };
    init_tracing(cli.verbose);
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            let _ = writeln!(
                std::io::stderr(),
                "mux-bw: error: cannot start async runtime: {e}"
            );
            return EXIT_FAILURE;
        }
    };
    rt.block_on(dispatch(cli))
}

fn clap_exit(e: clap::Error) -> i32 {
    use clap::error::ErrorKind;
    match e.kind() {
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => match e.print() {
            Err(err) if err.kind() != std::io::ErrorKind::BrokenPipe => {
                let _ = writeln!(
                    std::io::stderr(),
                    "mux-bw: error: cannot write to stdout: {err}"
                );
                EXIT_FAILURE
            }
            _ => EXIT_OK,
        },
        ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            let _ = e.print();
            EXIT_USAGE
        }
        _ => {
            // One line: clap's first line already names the value and the flag.
            let text = e.render().to_string();
            let first = text.lines().next().unwrap_or("invalid arguments");
            let first = first.strip_prefix("error: ").unwrap_or(first);
            let _ = writeln!(std::io::stderr(), "mux-bw: error: {first}");
            EXIT_USAGE
        }
    }
}

fn init_tracing(verbose: u8) {
    let default = match verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    // No internal error logging: it reports a failed write on stderr, panicking if that fails.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .log_internal_errors(false)
        .try_init();
}

async fn dispatch(cli: Cli) -> i32 {
    let result = match cli.command {
        Command::Serve(a) => run_node(Role::Destination, a).await,
        Command::Relay(a) => run_node(Role::Relay, a).await,
        Command::Run(a) => run_client(a).await,
        Command::Lab(a) => run_lab(a).await,
        Command::Compare(a) => run_compare(a),
        Command::Plot(a) => run_plot(a),
        Command::Sweep(a) => run_sweep(a).await,
        Command::Completions { shell } => {
            use clap::CommandFactory;
            // Into memory first: clap_complete panics on a failing writer.
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "mux-bw", &mut script);
            write_stdout(&String::from_utf8_lossy(&script)).map(|()| EXIT_OK)
        }
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            let code = if e.is::<UsageError>() {
                EXIT_USAGE
            } else {
                EXIT_FAILURE
            };
            let _ = writeln!(std::io::stderr(), "mux-bw: error: {e}");
            code
        }
    }
}

/// Cancelled on the first SIGINT (Ctrl-C) or SIGTERM. The handlers are installed before this
/// returns, so a signal that arrives right after a node prints its address is not lost.
fn interrupt_token() -> CancellationToken {
    let token = CancellationToken::new();
    let t = token.clone();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let int = signal(SignalKind::interrupt());
        let term = signal(SignalKind::terminate());
        tokio::spawn(async move {
            let wait = |s: std::io::Result<tokio::signal::unix::Signal>| async move {
                match s {
                    Ok(mut s) => {
                        s.recv().await;
                    }
                    Err(_) => std::future::pending::<()>().await,
                }
            };
            tokio::select! {
                _ = wait(int) => {}
                _ = wait(term) => {}
            }
            t.cancel();
        });
    }
    #[cfg(not(unix))]
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            t.cancel();
        }
    });
    token
}

async fn run_node(role: Role, a: NodeArgs) -> anyhow::Result<i32> {
    let listen = a.listen.unwrap_or_else(|| match role {
        Role::Destination => SocketAddr::from(([0, 0, 0, 0], 7600)),
        Role::Relay => SocketAddr::from(([0, 0, 0, 0], 7601)),
    });
    let token = token_bytes(a.token.as_deref())?;
    if token.is_none() && !a.open {
        return Err(UsageError(
            "a node needs --token T (or MUX_BW_TOKEN) so only your clients can use it; pass --open to accept anyone"
                .to_string(),
        )
        .into());
    }
    let identity = match &a.identity {
        // A key file that cannot be read, written or used is bad input, like any flag.
        Some(path) => Identity::load_or_create(path).map_err(|e| match e {
            IdentityError::Cert(_) => anyhow::Error::from(e),
            _ => UsageError::of(e).into(),
        })?,
        None => Identity::ephemeral()?,
    };
    let shutdown = interrupt_token();
    let cfg = NodeConfig {
        role,
        id: identity.id,
        token,
        header_timeout: a.header_timeout,
        limits: Limits {
            max_hops: a.max_hops,
            max_routes_per_client: a.max_routes_per_client,
            max_connections: a.max_connections,
            max_setup_timeout: a.max_setup_timeout,
            ..Limits::default()
        },
        drain_timeout: a.drain_timeout,
        tuning: a.tuning.tuning(),
        faults: node::Faults::default(),
    };
    let running = node::start(listen, &identity, cfg, shutdown.clone())?;
    let uri = running.addr.uri();
    let announced = match &a.node_file {
        Some(path) => std::fs::write(path, format!("{uri}\n")).map_err(|e| {
            UsageError(format!("cannot write node file '{}': {e}", path.display())).into()
        }),
        None => Ok(()),
    }
    // A closed stdout only means nobody reads the URI; the node serves on.
    .and_then(|()| write_stdout(&format!("{uri}\n")));
    if let Err(e) = announced {
        shutdown.cancel();
        let _ = running.task.await;
        return Err(e);
    }
    let what = match role {
        Role::Destination => "destination",
        Role::Relay => "relay",
    };
    let _ = writeln!(
        std::io::stderr(),
        "mux-bw {what} listening on {} (Ctrl-C to stop)",
        running.local
    );
    let _ = running.task.await;
    Ok(EXIT_OK)
}

/// Writes `text` to stdout. A closed pipe (`| head`) is not an error: the reader has what it
/// wanted. Any other failure is, exit code 1.
fn write_stdout(text: &str) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|_| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(anyhow::anyhow!("cannot write to stdout: {e}"))
        }
        _ => Ok(()),
    }
}

fn run_compare(a: CompareArgs) -> anyhow::Result<i32> {
    if a.runs.iter().filter(|r| r.as_str() == "-").count() > 1 {
        return Err(UsageError("'-' (stdin) can be given only once".to_string()).into());
    }
    let runs = a
        .runs
        .iter()
        .map(|r| runfile::load(r))
        .collect::<Result<Vec<_>, _>>()
        .map_err(UsageError::of)?;
    let c = compare::compare(&runs);
    let text = if a.json {
        // invariant: the comparison holds only numbers, strings and options.
        serde_json::to_string_pretty(&c).expect("comparison serializes") + "\n"
    } else {
        compare::render(&c)
    };
    write_stdout(&text)?;
    Ok(EXIT_OK)
}

fn run_plot(a: PlotArgs) -> anyhow::Result<i32> {
    let run = runfile::load(&a.run).map_err(UsageError::of)?;
    plot::plot(&run, &a.output)?;
    let _ = writeln!(std::io::stderr(), "wrote {}", a.output.display());
    Ok(EXIT_OK)
}

async fn run_sweep(a: SweepArgs) -> anyhow::Result<i32> {
    use std::io::IsTerminal;
    let links = a.links.links();
    if links.is_some() && !a.lab {
        return Err(
            UsageError("link emulation (--link-*, --direct-*) needs --lab".to_string()).into(),
        );
    }
    let nodes = match &a.to {
        Some(to) => {
            let dst: NodeAddr = to.parse().map_err(|e| UsageError(format!("--to: {e}")))?;
            let mut pool = Vec::new();
            for r in &a.relays {
                pool.push(r.parse().map_err(|e| UsageError(format!("--relay: {e}")))?);
            }
            if let Some(path) = &a.relays_file {
                pool.extend(read_relays_file(path)?);
            }
            Some((dst, pool))
        }
        None => None,
    };
    std::fs::create_dir_all(&a.out)
        .map_err(|e| UsageError(format!("cannot create --out '{}': {e}", a.out.display())))?;
    let mut cells = Vec::new();
    for &routes in &a.routes {
        for &min_hops in &a.min_hops {
            for &mode in &a.mode {
                cells.push(sweep::Cell {
                    routes,
                    min_hops,
                    mode,
                });
            }
        }
    }
    token_bytes(a.measure.token.as_deref())?;
    let lab_relays = match a.lab_relays {
        Some(k) => k,
        None => {
            let biggest = cells
                .iter()
                .max_by_key(|c| c.routes * c.min_hops.saturating_sub(1));
            let needed = biggest.map_or(0, |c| c.routes * c.min_hops.saturating_sub(1));
            if a.lab && needed > MAX_LAB_RELAYS {
                let c = biggest.map_or((0, 0), |c| (c.routes, c.min_hops));
                return Err(UsageError(format!(
                    "sweep --lab: the cell --routes {} --min-hops {} needs {needed} relays, \
                     above the limit of {MAX_LAB_RELAYS}; pass --lab-relays K with --allow-overlap",
                    c.0, c.1
                ))
                .into());
            }
            needed
        }
    };
    let total = (cells.len() * a.runs) as u64;
    let bar = if std::io::stderr().is_terminal() {
        indicatif::ProgressBar::new(total)
    } else {
        indicatif::ProgressBar::hidden()
    };
    // invariant: the template is a constant known to parse.
    bar.set_style(
        indicatif::ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} runs, ETA {eta}")
            .expect("valid template"),
    );
    let interrupt = interrupt_token();
    let mut results: Vec<(sweep::Cell, Vec<sweep::Outcome>)> = Vec::new();
    let mut done = 0;
    for (i, cell) in cells.iter().enumerate() {
        if interrupt.is_cancelled() {
            break;
        }
        let mut outcomes = Vec::new();
        for k in 1..=a.runs {
            if interrupt.is_cancelled() {
                break;
            }
            let msg = format!(
                "cell {} of {} ({}) run {k}/{}",
                i + 1,
                cells.len(),
                cell.slug(),
                a.runs
            );
            bar.set_message(msg.clone());
            if bar.is_hidden() {
                let _ = writeln!(std::io::stderr(), "sweep: {msg}");
            }
            let file = a.out.join(format!("{}-run{k}.ndjson", cell.slug()));
            let outcome = sweep_run(
                &a,
                *cell,
                &nodes,
                links,
                lab_relays,
                &file,
                interrupt.clone(),
            )
            .await;
            // A run cut short by Ctrl-C measured only part of its duration: leave it out.
            if !interrupt.is_cancelled() {
                outcomes.push(outcome);
            }
            done += 1;
            bar.set_position(done);
        }
        if !outcomes.is_empty() {
            results.push((*cell, outcomes));
        }
    }
    bar.finish_and_clear();
    let stats = sweep::stats(&results);
    let text = sweep::render(&stats);
    // The exports are written even when stdout fails; its error is reported last.
    let printed = write_stdout(&text);
    let _ = writeln!(std::io::stderr(), "runs saved under {}", a.out.display());
    if let Some(path) = &a.export_markdown {
        std::fs::write(path, sweep::markdown(&stats))
            .map_err(|e| anyhow::anyhow!("cannot write '{}': {e}", path.display()))?;
    }
    if let Some(path) = &a.export_json {
        // invariant: the stats hold only numbers, strings and options.
        let json = serde_json::to_string_pretty(&stats).expect("stats serialize") + "\n";
        std::fs::write(path, json)
            .map_err(|e| anyhow::anyhow!("cannot write '{}': {e}", path.display()))?;
    }
    printed?;
    Ok(if interrupt.is_cancelled() {
        EXIT_INTERRUPTED
    } else {
        EXIT_OK
    })
}

/// One run of one sweep cell, saved to `file`; its outcome as read back from that file.
async fn sweep_run(
    a: &SweepArgs,
    cell: sweep::Cell,
    nodes: &Option<(NodeAddr, Vec<NodeAddr>)>,
    links: Option<(LinkSpec, LinkSpec)>,
    lab_relays: usize,
    file: &Path,
    interrupt: CancellationToken,
) -> sweep::Outcome {
    let shape = Shape {
        routes: cell.routes,
        min_hops: cell.min_hops,
        mode: cell.mode,
        via: &[],
    };
    let (lab, cfg) = match nodes {
        Some((dst, pool)) => (
            None,
            build_config(*dst, pool.clone(), shape, &a.measure, &|_| None),
        ),
        None => {
            let token = match token_bytes(a.measure.token.as_deref()) {
                Ok(Some(t)) => t,
                Ok(None) => match random_token() {
                    Ok(t) => t,
                    Err(e) => return sweep::Outcome::Failed(e.to_string()),
                },
                Err(e) => return sweep::Outcome::Failed(e.to_string()),
            };
            let lab = match Lab::start(lab_relays, token.clone(), false, a.measure.tuning.tuning())
                .await
            {
                Ok(l) => l,
                Err(e) => return sweep::Outcome::Failed(e.to_string()),
            };
            let cfg = build_config(lab.dst, lab.relays.clone(), shape, &a.measure, &|_| None)
                .map(|c| RunConfig { token, ..c });
            (Some(lab), cfg)
        }
    };
    let links_stop = CancellationToken::new();
    let outcome = match cfg {
        Err(e) => sweep::Outcome::Failed(e.to_string()),
        Ok(mut cfg) => {
            cfg.links =
                links.map(|(relay, direct)| wired(Links::new(relay, direct, links_stop.clone())));
            let sink_cfg = SinkConfig {
                json_file: Some(file.to_path_buf()),
                quiet: true,
                ..SinkConfig::default()
            };
            match EventSink::new(Instant::now(), &sink_cfg) {
                Err(e) => {
                    sweep::Outcome::Failed(format!("cannot create '{}': {e}", file.display()))
                }
                Ok(sink) => {
                    run::run(&cfg, Arc::new(sink), interrupt).await;
                    read_outcome(file)
                }
            }
        }
    };
    links_stop.cancel();
    if let Some(lab) = lab {
        lab.stop().await;
    }
    outcome
}

/// What a saved run says, for the sweep matrix (so the matrix always matches the files).
fn read_outcome(file: &Path) -> sweep::Outcome {
    let run = match runfile::load(&file.to_string_lossy()) {
        Ok(r) => r,
        Err(e) => return sweep::Outcome::Failed(e.to_string()),
    };
    if run.summary.routes_established == 0 {
        return sweep::Outcome::Failed("no route could be established".to_string());
    }
    let stats = compare::stats(&run);
    sweep::Outcome::Measured {
        bps: stats.mean_bps,
        failures: stats.failures,
        loss: stats.first_link_loss,
        routes: run.summary.routes_established,
    }
}

fn random_token() -> anyhow::Result<Vec<u8>> {
    use ring::rand::SecureRandom;
    let mut raw = [0u8; 16];
    ring::rand::SystemRandom::new()
        .fill(&mut raw)
        .map_err(|_| anyhow::anyhow!("no system randomness for the lab token"))?;
    Ok(raw
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<String>()
        .into_bytes())
}

/// `--token` (or `MUX_BW_TOKEN`) as bytes. An empty token is refused, never taken as none:
/// only `--open` opens a node.
fn token_bytes(token: Option<&str>) -> Result<Option<Vec<u8>>, UsageError> {
    match token {
        Some("") => Err(UsageError(format!(
            "invalid --token: empty; expected 1 to {MAX_TOKEN_LEN} bytes"
        ))),
        Some(t) if t.len() > MAX_TOKEN_LEN => Err(UsageError(format!(
            "invalid --token: {} bytes; expected 1 to {MAX_TOKEN_LEN} bytes",
            t.len()
        ))),
        Some(t) => Ok(Some(t.as_bytes().to_vec())),
        None => Ok(None),
    }
}

async fn run_client(a: RunArgs) -> anyhow::Result<i32> {
    let dst: NodeAddr = a.to.parse().map_err(|e| UsageError(format!("--to: {e}")))?;
    let mut pool = Vec::new();
    for r in &a.relays {
        pool.push(r.parse().map_err(|e| UsageError(format!("--relay: {e}")))?);
    }
    if let Some(path) = &a.relays_file {
        pool.extend(read_relays_file(path)?);
    }
    let cfg = build_config(dst, pool, a.opts.shape(), &a.opts.measure, &|_| None)?;
    measure_and_report(cfg, &a.opts).await
}

async fn run_lab(a: LabArgs) -> anyhow::Result<i32> {
    // Lab nodes are never open: they require the given token or a fresh random one.
    let token = match token_bytes(a.opts.measure.token.as_deref())? {
        Some(t) => t,
        None => random_token()?,
    };
    let lab = Lab::start(
        a.relay_count,
        token.clone(),
        a.processes,
        a.opts.measure.tuning.tuning(),
    )
    .await?;
    let names = lab.relays.clone();
    let by_name = move |s: &str| -> Option<NodeAddr> {
        let k: usize = s.strip_prefix('r')?.parse().ok()?;
        names.get(k).copied()
    };
    let links_stop = CancellationToken::new();
    let links = a
        .links
        .links()
        .map(|(relay, direct)| wired(Links::new(relay, direct, links_stop.clone())));
    let shape = a.opts.shape();
    let cfg = match build_config(
        lab.dst,
        lab.relays.clone(),
        shape,
        &a.opts.measure,
        &by_name,
    ) {
        Ok(c) => RunConfig { token, links, ..c },
        Err(e) => {
            lab.stop().await;
            return Err(e.into());
        }
    };
    for f in &a.faults {
        if let Err(e) = lab.inject(*f, cfg.load_started.clone()) {
            lab.stop().await;
            return Err(UsageError(e).into());
        }
    }
    if !a.opts.json {
        let _ = writeln!(
            std::io::stderr(),
            "lab: destination {} and {} relay(s) on 127.0.0.1",
            crate::report::human::short(&lab.dst.id.to_string()),
            lab.relays.len()
        );
    }
    let code = measure_and_report(cfg, &a.opts).await;
    links_stop.cancel();
    lab.stop().await;
    code
}

async fn measure_and_report(cfg: RunConfig, o: &RunOpts) -> anyhow::Result<i32> {
    use std::io::IsTerminal;
    let json = o.json;
    let sink_cfg = SinkConfig {
        json,
        json_file: o.json_file.clone(),
        live: match o.live {
            Live::Always => true,
            Live::Never => false,
            Live::Auto => std::io::stderr().is_terminal(),
        },
        quiet: false,
    };
    let sink = EventSink::new(Instant::now(), &sink_cfg).map_err(|e| {
        let path = o.json_file.as_deref().unwrap_or(Path::new("")).display();
        UsageError(format!("cannot create --json-file '{path}': {e}"))
    })?;
    let sink = Arc::new(sink);
    let gone = sink.stdout_gone();
    let interrupt = interrupt_token();
    let summary = run::run(&cfg, sink.clone(), interrupt).await;
    if summary.routes_established == 0 {
        // Every route failed. A pinned id that does not match is a wrong URI: bad input.
        let mismatch = summary
            .routes
            .iter()
            .filter(|r| r.cause == Some(crate::wire::close::Cause::IdMismatch))
            .find_map(|r| r.error.as_deref());
        if let Some(e) = mismatch {
            return Err(UsageError(format!("wrong node id in URI: {e}")).into());
        }
        if !json {
            let _ = writeln!(
                std::io::stderr(),
                "mux-bw: error: no route could be established"
            );
        }
    }
    if gone.is_cancelled() {
        // stdout closed (`| head`): the reader has what it wanted; end quietly.
        return Ok(EXIT_OK);
    }
    if let Some(e) = sink.stdout_error() {
        // The run went on (a --json-file has it all); stdout lost output from here.
        return Err(anyhow::anyhow!("cannot write to stdout: {e}"));
    }
    let all_failed =
        summary.routes_established > 0 && summary.routes_failed == summary.routes_established;
    if all_failed && !summary.interrupted && !json {
        let _ = writeln!(
            std::io::stderr(),
            "mux-bw: error: every route failed during the run"
        );
    }
    let partial = summary.partial && !o.measure.allow_partial;
    if partial && !all_failed && !summary.interrupted && !json {
        let _ = writeln!(
            std::io::stderr(),
            "mux-bw: error: only {} of {} planned routes were established (--allow-partial accepts that)",
            summary.routes_established, summary.routes_planned
        );
    }
    Ok(if summary.interrupted {
        EXIT_INTERRUPTED
    } else if summary.routes_established == 0 {
        EXIT_NO_ROUTE
    } else if all_failed {
        EXIT_ALL_FAILED
    } else if partial {
        EXIT_PARTIAL
    } else {
        EXIT_OK
    })
}

/// Largest relays file read: about 50 000 URIs.
const MAX_RELAYS_FILE: u64 = 4 << 20;

fn read_relays_file(path: &Path) -> Result<Vec<NodeAddr>, UsageError> {
    let cannot = |why: String| {
        UsageError(format!(
            "cannot read relays file '{}': {why}",
            path.display()
        ))
    };
    let bytes =
        crate::files::read_bounded(path, MAX_RELAYS_FILE).map_err(|e| cannot(e.to_string()))?;
    let text = String::from_utf8(bytes).map_err(|_| cannot("not UTF-8 text".to_string()))?;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        out.push(line.parse().map_err(|e| {
            UsageError(format!(
                "relays file '{}', line {}: {e}",
                path.display(),
                i + 1
            ))
        })?);
    }
    Ok(out)
}

/// The shape of one measurement: how many routes, how long, which way.
#[derive(Clone, Copy, Debug)]
struct Shape<'a> {
    routes: usize,
    min_hops: usize,
    mode: Mode,
    via: &'a [String],
}

impl RunOpts {
    fn shape(&self) -> Shape<'_> {
        Shape {
            routes: self.routes,
            min_hops: self.min_hops,
            mode: self.mode,
            via: &self.via,
        }
    }
}

/// Validates flags into a `RunConfig`: plans routes, resolves `--via` names. No I/O but DNS.
/// `lab_name` resolves lab relay names like `r3`.
fn build_config(
    dst: NodeAddr,
    pool: Vec<NodeAddr>,
    shape: Shape<'_>,
    o: &MeasureOpts,
    lab_name: &dyn Fn(&str) -> Option<NodeAddr>,
) -> Result<RunConfig, UsageError> {
    let mut pins = BTreeMap::new();
    for v in shape.via {
        let (idx, nodes) = parse_via(v, &pool, lab_name)?;
        if pins.insert(idx, nodes).is_some() {
            return Err(UsageError(format!(
                "invalid --via '{v}': route {idx} pinned twice"
            )));
        }
    }
    let plan = plan::plan(&PlanRequest {
        dst,
        pool: pool.clone(),
        routes: shape.routes,
        min_hops: shape.min_hops,
        pins,
        allow_overlap: o.allow_overlap,
    })
    .map_err(UsageError::of)?;
    Ok(RunConfig {
        dst,
        relays: pool,
        routes: plan,
        min_hops: shape.min_hops,
        allow_overlap: o.allow_overlap,
        mode: shape.mode,
        duration: o.duration,
        omit: o.omit,
        interval: o.interval,
        setup_timeout: o.setup_timeout,
        io_timeout: o.io_timeout,
        stall_timeout: o.stall_timeout,
        probe_rtt: o.probe_rtt,
        probe_interval: o.probe_interval,
        token: token_bytes(o.token.as_deref())?.unwrap_or_default(),
        redial: o.redial,
        tuning: o.tuning.tuning(),
        links: None,
        load_started: CancellationToken::new(),
    })
}

/// The lab's emulated links as what a run dials through.
fn wired(links: Links) -> Arc<dyn PathWiring> {
    Arc::new(links)
}

/// `IDX=NODE[,NODE..]` where NODE is a URI, a node id from the pool, or a lab name.
fn parse_via(
    v: &str,
    pool: &[NodeAddr],
    lab_name: &dyn Fn(&str) -> Option<NodeAddr>,
) -> Result<(usize, Vec<NodeAddr>), UsageError> {
    let bad = |why: String| UsageError(format!("invalid --via '{v}': {why}"));
    let (idx, list) = v
        .split_once('=')
        .ok_or_else(|| bad("expected IDX=NODE[,NODE..]".to_string()))?;
    let idx: usize = idx
        .trim()
        .parse()
        .map_err(|_| bad(format!("route index '{idx}' is not a number")))?;
    let mut nodes = Vec::new();
    for name in list.split(',').map(str::trim) {
        let node = if let Some(n) = lab_name(name) {
            n
        } else if let Ok(id) = name.parse::<NodeId>() {
            *pool
                .iter()
                .find(|p| p.id == id)
                .ok_or_else(|| bad(format!("node id {id} is not in the relay list")))?
        } else {
            name.parse::<NodeAddr>().map_err(|e| bad(e.to_string()))?
        };
        nodes.push(node);
    }
    Ok((idx, nodes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::setup::PROTOCOL_VERSION;
    use clap::CommandFactory;

    #[test]
    fn clap_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn tuning_flags_default_to_the_library_defaults_and_parse_sizes() {
        let Command::Lab(lab) = Cli::try_parse_from(["mux-bw", "lab"]).unwrap().command else {
            panic!("not lab");
        };
        assert_eq!(lab.opts.measure.tuning.tuning(), Tuning::default());
        assert_eq!(parse_size("8M"), Ok(8 << 20));
        assert_eq!(parse_size("512KiB"), Ok(512 << 10));
        assert_eq!(parse_size("1048576"), Ok(1 << 20));
        assert_eq!(parse_size("2g"), Ok(2 << 30));
        for bad in ["", "M", "8X", "-1", "1", "5G"] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn version_names_the_protocol_spoken() {
        assert!(VERSION.ends_with(&format!(", protocol v{PROTOCOL_VERSION})")));
        assert!(VERSION.starts_with(env!("CARGO_PKG_VERSION")));
    }

    #[test]
    fn nodes_need_a_token_or_open() {
        let parse = |args: &[&str]| Cli::try_parse_from(["mux-bw", "relay"].iter().chain(args));
        assert!(parse(&["--open"]).is_ok());
        assert!(parse(&["--token", "t", "--open"]).is_err());
        assert!(parse(&["--max-hops", "0"]).is_err());
        assert!(parse(&["--max-hops", "9"]).is_err());
        assert!(parse(&["--max-hops", "3"]).is_ok());
    }

    fn opts(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(["mux-bw", "lab"].iter().chain(args))
    }

    #[test]
    fn durations_parse_and_reject_zero_and_garbage() {
        assert!(opts(&["--duration", "3s"]).is_ok());
        assert!(opts(&["--duration", "500ms"]).is_ok());
        for bad in ["0s", "abc", "10", ""] {
            let err = opts(&["--duration", bad]).unwrap_err();
            assert_eq!(err.kind(), clap::error::ErrorKind::ValueValidation, "{bad}");
        }
    }

    #[test]
    fn via_accepts_ids_lab_names_and_uris() {
        let node = |n: u8| NodeAddr {
            id: NodeId([n; 16]),
            addr: "127.0.0.1:9".parse().unwrap(),
        };
        let pool = vec![node(1), node(2)];
        let lab = |s: &str| (s == "r1").then(|| node(2));
        let (i, n) = parse_via(&format!("3={},r1", node(1).id), &pool, &lab).unwrap();
        assert_eq!((i, n), (3, vec![node(1), node(2)]));
        let (_, n) = parse_via(&format!("0={}", node(7).uri()), &pool, &lab).unwrap();
        assert_eq!(n, vec![node(7)]);
        for bad in ["x=r1", "2", "1=nonsense", &format!("1={}", node(9).id)] {
            let err = parse_via(bad, &pool, &lab).unwrap_err();
            assert!(err.to_string().contains(bad), "{err}");
        }
    }

    #[test]
    fn relays_file_skips_comments_and_names_bad_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("relays");
        let id = NodeId([1; 16]);
        std::fs::write(&path, format!("# pool\n\nmbw://{id}@127.0.0.1:1 # r0\n")).unwrap();
        assert_eq!(read_relays_file(&path).unwrap().len(), 1);
        std::fs::write(&path, "mbw://bad\n").unwrap();
        let err = read_relays_file(&path).unwrap_err().to_string();
        assert!(err.contains("line 1"), "{err}");
    }
}
