//! The flags of every subcommand, as clap derive structs; what they mean is in their doc
//! comments, which are also `--help`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use super::parse::*;
use super::UsageError;
use crate::client::stripe::scheduler::Scheduler;
use crate::lab::shaper::{LinkSpec, Loss, Rate};
use crate::lab::topology::{self, LinkPlan};
use crate::lab::Fault;
use crate::node::Limits;
use crate::wire::mode::Mode;
use crate::wire::setup::{MAX_HOPS, MAX_ROUTES};
use crate::wire::transport::{Congestion, Tuning};

#[derive(Debug, Args)]
pub(super) struct SweepArgs {
    /// Run every measurement in a fresh lab (destination and relays in this process).
    #[arg(long, conflicts_with_all = ["to", "relays", "relays_file"])]
    pub(super) lab: bool,
    /// Relays in each lab, at most 1024 [default: enough for the largest cell].
    #[arg(long, value_name = "K", requires = "lab", value_parser = count_at_most(MAX_LAB_RELAYS, "relays"))]
    pub(super) lab_relays: Option<usize>,
    #[command(flatten)]
    pub(super) links: LinkArgs,
    /// Destination node (without --lab).
    #[arg(long, value_name = "NODE", required_unless_present = "lab")]
    pub(super) to: Option<String>,
    /// A relay node URI; repeat for a pool (without --lab).
    #[arg(long = "relay", value_name = "NODE")]
    pub(super) relays: Vec<String>,
    /// File with one relay URI per line (without --lab).
    #[arg(long, value_name = "FILE")]
    pub(super) relays_file: Option<PathBuf>,
    /// Route counts to try, comma-separated (e.g. 1,2,4,8), each at most 1024.
    #[arg(long, value_name = "N,..", value_delimiter = ',', default_value = "1",
          value_parser = count_at_most(MAX_ROUTES, "routes"))]
    pub(super) routes: Vec<usize>,
    /// Minimum hops to try, comma-separated (e.g. 1,2).
    #[arg(long, value_name = "H,..", value_delimiter = ',', default_value = "1")]
    pub(super) min_hops: Vec<usize>,
    /// Modes to try, comma-separated (up, down, bidir, echo).
    #[arg(
        long,
        value_name = "MODE,..",
        value_delimiter = ',',
        value_enum,
        default_value = "up"
    )]
    pub(super) mode: Vec<Mode>,
    /// Runs per cell.
    #[arg(long, value_name = "K", default_value_t = 1,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=1000))]
    pub(super) runs: usize,
    /// Directory for every run's NDJSON (created if absent).
    #[arg(long, value_name = "DIR", default_value = "sweep")]
    pub(super) out: PathBuf,
    /// Also write the matrix as a Markdown table to FILE.
    #[arg(long, value_name = "FILE")]
    pub(super) export_markdown: Option<PathBuf>,
    /// Also write the matrix as JSON to FILE.
    #[arg(long, value_name = "FILE")]
    pub(super) export_json: Option<PathBuf>,
    #[command(flatten)]
    pub(super) measure: MeasureOpts,
}

#[derive(Debug, Args)]
pub(super) struct CompareArgs {
    /// Saved runs; `-` reads one from stdin. The first is the baseline.
    #[arg(value_name = "RUN.ndjson", required = true)]
    pub(super) runs: Vec<String>,
    /// Print the comparison as JSON instead of a table.
    #[arg(long)]
    pub(super) json: bool,
}

#[derive(Debug, Args)]
pub(super) struct PlotArgs {
    /// A saved run; `-` reads it from stdin.
    #[arg(value_name = "RUN.ndjson")]
    pub(super) run: String,
    /// SVG file to write.
    #[arg(short, long, value_name = "OUT.svg")]
    pub(super) output: PathBuf,
}

#[derive(Debug, Args)]
pub(super) struct NodeArgs {
    /// UDP address to listen on (the default depends on the role; see `serve --help`).
    #[arg(long, value_name = "ADDR")]
    pub(super) listen: Option<SocketAddr>,
    /// Private key file; created (mode 0600) if absent. Without it the node id changes every start.
    #[arg(long, value_name = "FILE")]
    pub(super) identity: Option<PathBuf>,
    /// Also write this node's mbw:// URI to FILE.
    #[arg(long, value_name = "FILE")]
    pub(super) node_file: Option<PathBuf>,
    /// Setup headers must carry this token (required unless --open).
    #[arg(long, env = "MUX_BW_TOKEN", hide_env_values = true)]
    pub(super) token: Option<String>,
    /// Accept routes from anyone, without a token (wins over MUX_BW_TOKEN in the environment,
    /// not over a --token typed with it).
    #[arg(long)]
    pub(super) open: bool,
    /// Whether `token` came from MUX_BW_TOKEN rather than the command line (set after parsing).
    #[arg(skip)]
    pub(super) token_from_env: bool,
    /// Drop connections that send no setup header within this time (e.g. 5s, 500ms; at most 1m).
    #[arg(long, value_name = "DUR", default_value = "5s", value_parser = duration_in(NONZERO, MINUTE))]
    pub(super) header_timeout: Duration,
    /// Refuse routes longer than this many links.
    #[arg(long, value_name = "N", default_value_t = Limits::default().max_hops,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=MAX_HOPS as u64))]
    pub(super) max_hops: usize,
    /// Refuse more than this many routes at once from one client IP.
    #[arg(long, value_name = "N", default_value_t = Limits::default().max_routes_per_client)]
    pub(super) max_routes_per_client: usize,
    /// Refuse handshakes beyond this many open connections.
    #[arg(long, value_name = "N", default_value_t = Limits::default().max_connections)]
    pub(super) max_connections: usize,
    /// Longest onward setup this relay performs, whatever budget a client's header asks for
    /// (at most 1h).
    #[arg(long, value_name = "DUR", default_value = "10s", value_parser = duration_in(NONZERO, HOUR))]
    pub(super) max_setup_timeout: Duration,
    /// On SIGINT/SIGTERM, let established routes run this long before closing them (at most 1h).
    #[arg(long, value_name = "DUR", default_value = "5s", value_parser = duration_in(Duration::ZERO, HOUR))]
    pub(super) drain_timeout: Duration,
    /// Serve Prometheus metrics at http://ADDR/metrics (e.g. 127.0.0.1:9640; port 0 picks
    /// one, said on stderr). Bind it to an address only your Prometheus reaches.
    #[arg(long, value_name = "ADDR")]
    pub(super) metrics: Option<SocketAddr>,
    #[command(flatten)]
    pub(super) tuning: TuningArgs,
}

/// QUIC settings shared by every command that opens connections.
#[derive(Clone, Copy, Debug, Args)]
pub(super) struct TuningArgs {
    /// Per-stream receive window in bytes (K, M, G = KiB, MiB, GiB): the most a peer may send
    /// on one stream ahead of the reader. Must cover the path's bandwidth x RTT.
    #[arg(long, value_name = "BYTES", default_value = "8M", value_parser = parse_size)]
    pub(super) stream_window: u64,
    /// Per-connection receive window in bytes.
    #[arg(long, value_name = "BYTES", default_value = "16M", value_parser = parse_size)]
    pub(super) conn_window: u64,
    /// Send buffer in bytes (unacknowledged data included).
    #[arg(long, value_name = "BYTES", default_value = "16M", value_parser = parse_size)]
    pub(super) send_window: u64,
    /// Congestion controller.
    #[arg(long = "cc", value_enum, default_value_t = Congestion::Cubic)]
    pub(super) congestion: Congestion,
    /// UDP socket send buffer in bytes (0 = OS default).
    #[arg(long, value_name = "BYTES", default_value = "4M", value_parser = parse_size_or_zero)]
    pub(super) socket_send_buffer: u64,
    /// UDP socket receive buffer in bytes (0 = OS default). Big enough for fast long paths; on a
    /// CPU-bound host a big one turns loss into queueing delay.
    #[arg(long, value_name = "BYTES", default_value = "512K", value_parser = parse_size_or_zero)]
    pub(super) socket_recv_buffer: u64,
}

/// The value of a flag given exactly once (not as a per-relay list).
fn only<T: Copy>(values: &[T]) -> Option<T> {
    match values {
        [one] => Some(*one),
        _ => None,
    }
}

/// Largest topology file read.
const MAX_TOPOLOGY_FILE: u64 = 1 << 20;

impl LinkArgs {
    /// Whether any link flag was given.
    pub(super) fn given(&self) -> bool {
        !self.link_rate.is_empty()
            || !self.link_delay.is_empty()
            || self.link_loss.is_some()
            || self.direct_rate.is_some()
            || self.direct_delay.is_some()
            || self.topology.is_some()
    }

    /// The emulated links of a lab of `relays` relays, or `None` when no link flag was given.
    pub(super) fn plan(&self, relays: usize) -> Result<Option<LinkPlan>, UsageError> {
        if let Some(path) = &self.topology {
            let cannot = |why: String| {
                UsageError(format!(
                    "cannot read --topology '{}': {why}",
                    path.display()
                ))
            };
            let bytes = crate::files::read_bounded(path, MAX_TOPOLOGY_FILE)
                .map_err(|e| cannot(e.to_string()))?;
            let text =
                String::from_utf8(bytes).map_err(|_| cannot("not UTF-8 text".to_string()))?;
            return topology::parse(&path.display().to_string(), &text, relays)
                .map(Some)
                .map_err(UsageError);
        }
        if !self.given() {
            return Ok(None);
        }
        let rates =
            topology::per_relay(&self.link_rate, relays, "--link-rate").map_err(UsageError)?;
        let delays =
            topology::per_relay(&self.link_delay, relays, "--link-delay").map_err(UsageError)?;
        let loss_pct = self.link_loss.map_or(0.0, |l| l.0);
        let direct = LinkSpec {
            rate: self.direct_rate.or(only(&self.link_rate)),
            delay: self
                .direct_delay
                .or(only(&self.link_delay))
                .unwrap_or_default(),
            loss_pct,
            ..LinkSpec::transparent()
        };
        let relays = (0..relays)
            .map(|k| LinkSpec {
                rate: rates.as_ref().map(|r| r[k]),
                delay: delays.as_ref().map_or(Duration::ZERO, |d| d[k]),
                loss_pct,
                ..LinkSpec::transparent()
            })
            .collect();
        Ok(Some(LinkPlan { direct, relays }))
    }
}

impl TuningArgs {
    pub(super) fn tuning(&self) -> Tuning {
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

#[derive(Debug, Args)]
pub(super) struct RunArgs {
    /// Destination node, as printed by `mux-bw serve`: mbw://<node-id>@host:port.
    #[arg(long, value_name = "NODE")]
    pub(super) to: String,
    /// A relay node URI; repeat for a pool.
    #[arg(long = "relay", value_name = "NODE")]
    pub(super) relays: Vec<String>,
    /// File with one relay URI per line; `#` starts a comment.
    #[arg(long, value_name = "FILE")]
    pub(super) relays_file: Option<PathBuf>,
    #[command(flatten)]
    pub(super) opts: RunOpts,
}

#[derive(Debug, Args)]
pub(super) struct LabArgs {
    /// Number of relays to start (named r0, r1, ... in --via and --fault), at most 1024.
    #[arg(long = "relays", value_name = "K", default_value_t = 8,
          value_parser = count_at_most(MAX_LAB_RELAYS, "relays"))]
    pub(super) relay_count: usize,
    /// Inject a fault: kill:R@T (relay R drops all connections T after the load starts) or
    /// stall:R@T (relay R stops reading and forwarding, connections stay open). Repeatable.
    #[arg(long = "fault", value_name = "KIND:R@T")]
    pub(super) faults: Vec<Fault>,
    /// Run every node as a child process (killed with this one, even by SIGKILL); faults become
    /// signals: kill = SIGKILL, stall = SIGSTOP.
    #[arg(long)]
    pub(super) processes: bool,
    #[command(flatten)]
    pub(super) links: LinkArgs,
    #[command(flatten)]
    pub(super) opts: RunOpts,
}

/// Flags shared by `run` and `lab`.
#[derive(Debug, Args)]
pub(super) struct RunOpts {
    /// Number of routes, each its own chain of QUIC connections (at most 1024).
    ///
    /// The limit is measured (docs/PERFORMANCE.md): on a 2-core host 1024 routes were all up
    /// after 3.0 to 8.3 s (direct) and 3.8 to 5.9 s (two hops); at 2048 up to 131 setups failed
    /// per run.
    #[arg(long, value_name = "N", default_value_t = 1,
          value_parser = count_at_most(MAX_ROUTES, "routes"))]
    pub(super) routes: usize,
    /// Links per route: 1 = direct, H >= 2 = H-1 relays (never direct).
    #[arg(long, value_name = "H", default_value_t = 1)]
    pub(super) min_hops: usize,
    /// Pin route IDX through these relays in order, e.g. `--via 2=mbw://...` (lab: `--via 2=r3`).
    #[arg(long, value_name = "IDX=NODE[,NODE..]")]
    pub(super) via: Vec<String>,
    /// Data pattern: up (client → destination), down, bidir (both at once) or echo (the
    /// destination returns what it gets; a window of bytes stays in flight).
    #[arg(long, value_enum, default_value_t = Mode::Up)]
    pub(super) mode: Mode,
    #[command(flatten)]
    pub(super) measure: MeasureOpts,
    /// NDJSON events on stdout instead of human output.
    #[arg(long)]
    pub(super) json: bool,
    /// Also write NDJSON events to FILE (the terminal keeps human output unless --json).
    #[arg(long, value_name = "FILE")]
    pub(super) json_file: Option<PathBuf>,
    /// Live per-route bars on stderr: auto = when stderr is a terminal and output is human.
    #[arg(long, value_enum, default_value_t = Live::Auto)]
    pub(super) live: Live,
    /// Take the relay pool from a scan's ranking (`scan --out FILE`): its measured relays,
    /// failed ones left out; in a lab, matched by name (rK). Implies `--pick fastest`.
    #[arg(long, value_name = "FILE")]
    pub(super) relays_from: Option<PathBuf>,
    /// Which relays the routes take first: `fastest` (by the scan's rate, needs --relays-from;
    /// with --min-hops 3 or more a route's relays are neighbours in the ranking, so its slowest
    /// is as fast as it can be) or `random` (shuffled, seed in start.config.pick). Without it,
    /// relays are used in the order given.
    #[arg(long, value_enum)]
    pub(super) pick: Option<Pick>,
}

/// How each measurement runs: shared by `run`, `lab` and `sweep`.
#[derive(Debug, Args)]
pub(super) struct MeasureOpts {
    /// Let routes share relays when the pool is too small for disjoint routes.
    #[arg(long)]
    pub(super) allow_overlap: bool,
    /// Accept a run in which fewer routes came up than planned (exit 0 instead of 5; the
    /// summary still says PARTIAL).
    #[arg(long)]
    pub(super) allow_partial: bool,
    /// Set a failed route up again through spare relays (kept disjoint), with backoff; emits
    /// route_redial. Up to 5 attempts per failure.
    #[arg(long)]
    pub(super) redial: bool,
    /// Length of the measured load phase (e.g. 10s, 1m, 500ms; at most 7d).
    #[arg(long, value_name = "DUR", default_value = "10s", value_parser = duration_in(NONZERO, WEEK))]
    pub(super) duration: Duration,
    /// Warm-up before --duration: sampled (marked omitted) but left out of the summary (at
    /// most 7d).
    #[arg(long, value_name = "DUR", default_value = "0s", value_parser = duration_in(Duration::ZERO, WEEK))]
    pub(super) omit: Duration,
    /// Sample period (10ms to 1h).
    #[arg(long, value_name = "DUR", default_value = "1s", value_parser = duration_in(MIN_INTERVAL, HOUR))]
    pub(super) interval: Duration,
    /// Budget for each hop's connect and setup (at most 1h).
    #[arg(long, value_name = "DUR", default_value = "5s", value_parser = duration_in(NONZERO, HOUR))]
    pub(super) setup_timeout: Duration,
    /// Deadline of every read and write on a route (at most 1h).
    #[arg(long, value_name = "DUR", default_value = "30s", value_parser = duration_in(NONZERO, HOUR))]
    pub(super) io_timeout: Duration,
    /// Warn (route_stalled) when an established route moves no bytes this long (at most 1h).
    #[arg(long, value_name = "DUR", default_value = "5s", value_parser = duration_in(NONZERO, HOUR))]
    pub(super) stall_timeout: Duration,
    /// Measure RTT end to end: idle baseline, then under load, on the first established route
    /// (`--probe-rtt`, `--probe-rtt=first`) or on every established route (`--probe-rtt all`:
    /// per-route figures in summary.rtt.routes).
    #[arg(long, value_enum, value_name = "WHICH", num_args = 0..=1, default_missing_value = "first")]
    pub(super) probe_rtt: Option<ProbeScope>,
    /// Gap between RTT probes under load (1ms to 1h).
    #[arg(long, value_name = "DUR", default_value = "100ms", value_parser = duration_in(MIN_PROBE_INTERVAL, HOUR), requires = "probe_rtt")]
    pub(super) probe_interval: Duration,
    /// Token to present to nodes started with --token.
    #[arg(long, env = "MUX_BW_TOKEN", hide_env_values = true)]
    pub(super) token: Option<String>,
    #[command(flatten)]
    pub(super) stripe: StripeArgs,
    #[command(flatten)]
    pub(super) tuning: TuningArgs,
}

/// One transfer striped over the routes.
#[derive(Debug, Args)]
pub(super) struct StripeArgs {
    /// Split one upload stream over the routes (segments of --segment bytes, each on the route
    /// --scheduler picks) and measure how fast it arrives in order at the destination, which
    /// verifies every byte; a failed route's unconfirmed segments are resent over the others.
    /// Upload only (--mode up); RTT probes and --redial work as usual.
    #[arg(long)]
    pub(super) stripe: bool,
    /// Which route carries each segment: round-robin (in turn), weighted (by measured rate,
    /// skipping a route at its cap) or earliest-arrival (where it is predicted to arrive
    /// first; docs/STRIPE.md).
    #[arg(long, value_enum, default_value_t = Scheduler::EarliestArrival, requires = "stripe")]
    pub(super) scheduler: Scheduler,
    /// Payload bytes per segment (1K to 1M).
    #[arg(long, value_name = "BYTES", default_value = "64K", value_parser = parse_size, requires = "stripe")]
    pub(super) segment: u64,
    /// Most bytes the destination holds beyond the in-order offset; a route further ahead is
    /// not read until the gap fills (at least 2 segments, at most 256M).
    #[arg(long, value_name = "BYTES", default_value = "16M", value_parser = parse_size, requires = "stripe")]
    pub(super) reorder_window: u64,
    /// End the run once this many bytes arrived in order (time to transfer in the summary),
    /// instead of after --duration (up to 4G).
    #[arg(long, value_name = "BYTES", value_parser = parse_size, requires = "stripe", conflicts_with = "duration")]
    pub(super) bytes: Option<u64>,
}

/// The lab's emulated links.
#[derive(Debug, Args)]
pub(super) struct LinkArgs {
    /// Emulate a bottleneck of this rate on every link that touches a relay, each direction
    /// (tc units: 50mbit, 1gbit, 512kbit, or bits/s); a comma-separated list gives one rate per
    /// relay, r0 first.
    #[arg(long, value_name = "RATE[,..]", value_delimiter = ',')]
    pub(super) link_rate: Vec<Rate>,
    /// One-way delay added on every link that touches a relay, each direction (at most 10s);
    /// a comma-separated list gives one per relay, r0 first.
    #[arg(long, value_name = "DUR[,..]", value_delimiter = ',',
          value_parser = duration_in(Duration::ZERO, MAX_LINK_DELAY))]
    pub(super) link_delay: Vec<Duration>,
    /// Random loss on every emulated link, in percent (e.g. 0.5).
    #[arg(long, value_name = "PCT")]
    pub(super) link_loss: Option<Loss>,
    /// Bottleneck of the direct client-destination link [default: --link-rate, when it is
    /// one value].
    #[arg(long, value_name = "RATE")]
    pub(super) direct_rate: Option<Rate>,
    /// One-way delay of the direct link, at most 10s [default: --link-delay, when it is one
    /// value].
    #[arg(long, value_name = "DUR", value_parser = duration_in(Duration::ZERO, MAX_LINK_DELAY))]
    pub(super) direct_delay: Option<Duration>,
    /// Every link from a TOML file: `[defaults]`, `[direct]` and `[relay.rK]` sections with
    /// `rate`, `delay`, `loss` (percent) and `queue` (docs/LAB.md).
    #[arg(long, value_name = "FILE", conflicts_with_all = [
        "link_rate", "link_delay", "link_loss", "direct_rate", "direct_delay"
    ])]
    pub(super) topology: Option<PathBuf>,
}

/// `--probe-rtt`'s routes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub(super) enum ProbeScope {
    /// The first established route (still up).
    First,
    /// Every established route.
    All,
}

/// `--pick`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub(super) enum Pick {
    /// The scan's fastest relays first.
    Fastest,
    /// A random order.
    Random,
}

/// When to draw the live view.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub(super) enum Live {
    /// When stderr is a terminal.
    Auto,
    /// Always (human output only).
    Always,
    /// Never.
    Never,
}
