//! Command line: clap definitions, validation into typed configs before any dial, and the mapping
//! of outcomes to exit codes (0 done, 1 runtime failure, 2 bad input, 3 no route, 4 every route
//! failed, 130 Ctrl-C).
//! The only module that uses anyhow-style stringly errors; everything below it is typed.
//! Flags live in `args` (values parsed by `parse`), are validated into configs by `config`, and
//! each subcommand has its runner: `serve`, `run` (run and lab), `sweep`, `report` (compare, plot).

mod args;
mod config;
mod exporter;
mod parse;
mod report;
mod run;
mod scan;
mod serve;
mod sweep;

use std::io::Write;

use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;

use crate::node::Role;
use args::{CompareArgs, LabArgs, NodeArgs, PlotArgs, RunArgs, SweepArgs};

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
    ", protocol v3)"
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
    #[command(mut_arg("listen", |a| a.help(
        "UDP address to listen on [default: 0.0.0.0:7600; port 0 picks one]"
    )))]
    Serve(NodeArgs),
    /// Run an intermediate node that forwards routes to the next hop named in their setup.
    #[command(mut_arg("listen", |a| a.help(
        "UDP address to listen on [default: 0.0.0.0:7601; port 0 picks one]"
    )))]
    Relay(NodeArgs),
    /// Measure: set up N routes to a destination through relays and pump data on each.
    Run(RunArgs),
    /// Start a destination and K relays in this process on 127.0.0.1, then run against them.
    #[command(mut_arg("token", |a| a.help(
        "Token the lab's nodes require and its client presents [default: a fresh random one]"
    )))]
    Lab(LabArgs),
    /// Put saved runs (NDJSON from --json or --json-file) side by side, each against the first.
    Compare(CompareArgs),
    /// Draw a saved run as an SVG: throughput per route and in total, failures, RTT.
    Plot(PlotArgs),
    /// Run a matrix of cells (routes x min-hops x mode), each several times, against real nodes
    /// or in a lab; save every run and print mean ± stddev per cell with ratios.
    Sweep(SweepArgs),
    /// Rank relays: measure each through its own two-hop route (client → relay → destination)
    /// and the direct path as the reference; `--out` saves the ranking.
    Scan(scan::ScanArgs),
    /// Serve Prometheus probes: each scrape of /probe?target=NAME runs one short measurement
    /// of a target in --config and answers with its figures as metrics (blackbox_exporter
    /// style); /metrics is the exporter's own.
    Exporter(exporter::ExporterArgs),
    /// Print a shell completion script (e.g. `mux-bw completions bash > /etc/bash_completion.d/mux-bw`).
    Completions {
        /// bash, zsh, fish, elvish or powershell.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
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
    let cli = match parse() {
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

/// The command line, plus what derive alone cannot say: where a node's token came from.
fn parse() -> Result<Cli, clap::Error> {
    use clap::{CommandFactory, FromArgMatches};
    let matches = Cli::command().try_get_matches()?;
    let mut cli = Cli::from_arg_matches(&matches)?;
    if let (Command::Serve(a) | Command::Relay(a), Some((_, sub))) =
        (&mut cli.command, matches.subcommand())
    {
        a.token_from_env =
            sub.value_source("token") == Some(clap::parser::ValueSource::EnvVariable);
    }
    Ok(cli)
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
            // clap's whole message: the value and flag, the valid values or a "did you mean",
            // the usage line. Only its first word becomes ours, like every other error.
            let text = e.render().to_string();
            let text = text.strip_prefix("error: ").unwrap_or(&text);
            let _ = write!(std::io::stderr(), "mux-bw: error: {text}");
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
    // Colour only for a person at a terminal, and never against NO_COLOR (no-color.org).
    let colour = {
        use std::io::IsTerminal;
        std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
    };
    // No internal error logging: it reports a failed write on stderr, panicking if that fails.
    let _ = tracing_subscriber::fmt()
        .with_ansi(colour)
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .log_internal_errors(false)
        .try_init();
}

/// The binary's name, as completion scripts must spell it.
const BIN_NAME: &str = "mux-bw";

/// Works around clap_complete's bash generator for a hyphenated binary name (clap-rs/clap
/// #6421, open in clap_complete 4.6.11): its word loop builds the state `mux__bw__subcmd__lab`
/// but its `case` arms spell it `mux__subcmd__bw__subcmd__lab`, so no subcommand's flags ever
/// complete. The arms are respelled as the loop spells them; a fixed generator leaves nothing
/// to replace.
fn fix_bash_arms(script: &str) -> String {
    let escaped = BIN_NAME.replace('-', "__");
    let wrong = BIN_NAME.replace('-', "__subcmd__");
    script.replace(
        &format!("{wrong}__subcmd__"),
        &format!("{escaped}__subcmd__"),
    )
}

async fn dispatch(cli: Cli) -> i32 {
    let result = match cli.command {
        Command::Serve(a) => serve::run_node(Role::Destination, a).await,
        Command::Relay(a) => serve::run_node(Role::Relay, a).await,
        Command::Run(a) => run::run_client(a).await,
        Command::Lab(a) => run::run_lab(a).await,
        Command::Compare(a) => report::run_compare(a),
        Command::Plot(a) => report::run_plot(a),
        Command::Sweep(a) => sweep::run_sweep(a).await,
        Command::Exporter(a) => exporter::run_exporter(a).await,
        Command::Scan(a) => scan::run_scan(a).await,
        Command::Completions { shell } => {
            use clap::CommandFactory;
            // Into memory first: clap_complete panics on a failing writer.
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), BIN_NAME, &mut script);
            let mut script = String::from_utf8_lossy(&script).into_owned();
            if shell == clap_complete::Shell::Bash {
                script = fix_bash_arms(&script);
            }
            write_stdout(&script).map(|()| EXIT_OK)
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
    fn every_bash_state_has_its_case_arm() {
        let mut raw = Vec::new();
        let shell = clap_complete::Shell::Bash;
        clap_complete::generate(shell, &mut Cli::command(), BIN_NAME, &mut raw);
        let script = fix_bash_arms(&String::from_utf8(raw).unwrap());
        let states: Vec<&str> = script
            .lines()
            .filter_map(|l| l.trim().strip_prefix("cmd=\""))
            .filter_map(|l| l.strip_suffix('"'))
            .filter(|s| !s.is_empty())
            .collect();
        assert!(states.contains(&"mux__bw__subcmd__lab"), "{states:?}");
        for state in states {
            let arm = format!("\n        {state})\n");
            assert!(script.contains(&arm), "no case arm for state {state}");
        }
    }

    #[test]
    fn tuning_flags_default_to_the_library_defaults() {
        let Command::Lab(lab) = Cli::try_parse_from(["mux-bw", "lab"]).unwrap().command else {
            panic!("not lab");
        };
        assert_eq!(
            lab.opts.measure.tuning.tuning(),
            crate::wire::transport::Tuning::default()
        );
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
}
