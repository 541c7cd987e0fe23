//! `sweep`: a matrix of cells, each run several times (against real nodes or a fresh lab per
//! run), every run saved and read back for the matrix.

use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use tokio_util::sync::CancellationToken;

use super::args::SweepArgs;
use super::config::{build_config, node_pool, random_token, token_bytes, wired, Shape};
use super::parse::MAX_LAB_RELAYS;
use super::{interrupt_token, write_stdout, UsageError, EXIT_INTERRUPTED, EXIT_OK};
use crate::client::run::{self, RunConfig};
use crate::lab::emulation::Links;
use crate::lab::topology::LinkPlan;
use crate::lab::Lab;
use crate::report::sink::{EventSink, SinkConfig};
use crate::report::{compare, runfile, sweep};
use crate::wire::addr::NodeAddr;

/// Where a sweep's runs go.
enum Target {
    /// Nodes given on the command line, the same for every run.
    Nodes { dst: NodeAddr, pool: Vec<NodeAddr> },
    /// A fresh lab of this many relays for every run, so no run inherits another's state.
    Lab { relays: usize },
}

/// What every run of one sweep shares.
struct Sweep<'a> {
    args: &'a SweepArgs,
    target: Target,
    links: Option<LinkPlan>,
    interrupt: CancellationToken,
}

/// Every measured cell with the outcomes of its runs, in matrix order.
type Results = Vec<(sweep::Cell, Vec<sweep::Outcome>)>;

/// `sweep`: the whole matrix, printed and exported.
pub(super) async fn run_sweep(a: SweepArgs) -> anyhow::Result<i32> {
    if a.links.given() && !a.lab {
        return Err(
            UsageError("link emulation (--link-*, --direct-*) needs --lab".to_string()).into(),
        );
    }
    let cells = cells(&a);
    token_bytes(a.measure.token.as_deref())?;
    let target = target(&a, &cells)?;
    let links = match target {
        Target::Lab { relays } => a.links.plan(relays)?,
        Target::Nodes { .. } => None,
    };
    std::fs::create_dir_all(&a.out)
        .map_err(|e| UsageError(format!("cannot create --out '{}': {e}", a.out.display())))?;
    let sweep = Sweep {
        args: &a,
        target,
        links,
        interrupt: interrupt_token(),
    };
    let results = sweep.measure(&cells).await;
    report(&a, &results)?;
    Ok(if sweep.interrupt.is_cancelled() {
        EXIT_INTERRUPTED
    } else {
        EXIT_OK
    })
}

/// The matrix: every routes x min-hops x mode combination, in flag order.
fn cells(a: &SweepArgs) -> Vec<sweep::Cell> {
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
    cells
}

/// The nodes from `--to`/`--relay`, or a lab big enough for the largest cell (refused above
/// the lab's limit, before anything runs).
fn target(a: &SweepArgs, cells: &[sweep::Cell]) -> Result<Target, UsageError> {
    if let Some(to) = &a.to {
        let (dst, pool) = node_pool(to, &a.relays, a.relays_file.as_deref())?;
        return Ok(Target::Nodes { dst, pool });
    }
    if let Some(relays) = a.lab_relays {
        return Ok(Target::Lab { relays });
    }
    let relays_for = |c: &sweep::Cell| c.routes * c.min_hops.saturating_sub(1);
    let Some(biggest) = cells.iter().max_by_key(|c| relays_for(c)) else {
        return Ok(Target::Lab { relays: 0 });
    };
    let needed = relays_for(biggest);
    if needed > MAX_LAB_RELAYS {
        return Err(UsageError(format!(
            "sweep --lab: the cell --routes {} --min-hops {} needs {needed} relays, \
             above the limit of {MAX_LAB_RELAYS}; pass --lab-relays K with --allow-overlap",
            biggest.routes, biggest.min_hops
        )));
    }
    Ok(Target::Lab { relays: needed })
}

/// A bar on a terminal; otherwise nothing (progress goes to stderr as lines instead).
fn progress_bar(total: u64) -> indicatif::ProgressBar {
    use std::io::IsTerminal;
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
    bar
}

/// Prints the matrix and writes the exports; the exports are written even when stdout fails,
/// whose error is reported last.
fn report(a: &SweepArgs, results: &Results) -> anyhow::Result<()> {
    let stats = sweep::stats(results);
    let printed = write_stdout(&sweep::render(&stats));
    if a.measure.stripe.stripe {
        let _ = writeln!(
            std::io::stderr(),
            "cells: the striped transfer's in-order goodput (--stripe)"
        );
    }
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
    printed
}

impl Sweep<'_> {
    /// Runs every cell `--runs` times, until done or interrupted.
    async fn measure(&self, cells: &[sweep::Cell]) -> Results {
        let runs = self.args.runs;
        let bar = progress_bar((cells.len() * runs) as u64);
        let mut results = Vec::new();
        for (i, cell) in cells.iter().enumerate() {
            let mut outcomes = Vec::new();
            for k in 1..=runs {
                if self.interrupt.is_cancelled() {
                    break;
                }
                let msg = format!(
                    "cell {} of {} ({}) run {k}/{runs}",
                    i + 1,
                    cells.len(),
                    cell.slug()
                );
                bar.set_message(msg.clone());
                if bar.is_hidden() {
                    let _ = writeln!(std::io::stderr(), "sweep: {msg}");
                }
                let file = self.args.out.join(format!("{}-run{k}.ndjson", cell.slug()));
                let outcome = self.run(*cell, &file).await;
                // A run cut short by Ctrl-C measured only part of its duration: leave it out.
                if !self.interrupt.is_cancelled() {
                    outcomes.push(outcome);
                }
                bar.inc(1);
            }
            if !outcomes.is_empty() {
                results.push((*cell, outcomes));
            }
        }
        bar.finish_and_clear();
        results
    }

    /// One run of one cell, saved to `file`; its outcome as read back from that file.
    async fn run(&self, cell: sweep::Cell, file: &Path) -> sweep::Outcome {
        let shape = Shape {
            routes: cell.routes,
            min_hops: cell.min_hops,
            mode: cell.mode,
            via: &[],
        };
        let measure = &self.args.measure;
        let (lab, token) = match self.target {
            Target::Nodes { dst, ref pool } => {
                return match build_config(dst, pool.clone(), shape, measure, &|_| None) {
                    Ok(cfg) => self.measure_into(cfg, file).await,
                    Err(e) => sweep::Outcome::Failed(e.to_string()),
                };
            }
            Target::Lab { relays } => match self.start_lab(relays).await {
                Ok(started) => started,
                Err(e) => return sweep::Outcome::Failed(e.to_string()),
            },
        };
        let outcome = match build_config(lab.dst, lab.relays.clone(), shape, measure, &|_| None) {
            Ok(cfg) => self.measure_into(RunConfig { token, ..cfg }, file).await,
            Err(e) => sweep::Outcome::Failed(e.to_string()),
        };
        lab.stop().await;
        outcome
    }

    /// A lab for one run and its token: the given one or a fresh random one.
    async fn start_lab(&self, relays: usize) -> anyhow::Result<(Lab, Vec<u8>)> {
        let measure = &self.args.measure;
        let token = match token_bytes(measure.token.as_deref())? {
            Some(t) => t,
            None => random_token()?,
        };
        let lab = Lab::start(relays, token.clone(), false, measure.tuning.tuning()).await?;
        Ok((lab, token))
    }

    /// Measures `cfg` (through the emulated links, if any) into `file` and reads it back.
    async fn measure_into(&self, mut cfg: RunConfig, file: &Path) -> sweep::Outcome {
        cfg.links = self
            .links
            .as_ref()
            .map(|plan| wired(Links::new(plan, &cfg.relays)));
        let sink_cfg = SinkConfig {
            json_file: Some(file.to_path_buf()),
            quiet: true,
            ..SinkConfig::default()
        };
        let outcome = match EventSink::new(Instant::now(), &sink_cfg) {
            Err(e) => sweep::Outcome::Failed(format!("cannot create '{}': {e}", file.display())),
            Ok(sink) => {
                run::run(&cfg, Arc::new(sink), self.interrupt.clone()).await;
                read_outcome(file)
            }
        };
        outcome
    }
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
        // A striped run's figure is its one transfer's in-order goodput.
        bps: stats.striped_bps.unwrap_or(stats.mean_bps),
        failures: stats.failures,
        loss: stats.first_link_loss,
        routes: run.summary.routes_established,
    }
}
