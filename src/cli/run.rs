//! `run` and `lab`: one measurement, its events to the outputs, its summary to an exit code.

use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use super::args::{LabArgs, Live, RunArgs, RunOpts};
use super::config::{build_config, node_pool, picked_pool, random_token, token_bytes, wired};
use super::{
    interrupt_token, UsageError, EXIT_ALL_FAILED, EXIT_FAILURE, EXIT_INTERRUPTED, EXIT_NO_ROUTE,
    EXIT_OK, EXIT_PARTIAL,
};
use crate::client::run::{self, RunConfig};
use crate::lab::emulation::Links;
use crate::lab::{Fault, Lab};
use crate::report::events::{StripeSummary, Summary};
use crate::report::sink::{EventSink, SinkConfig};
use crate::wire::addr::NodeAddr;
use crate::wire::close::Cause;

/// `run`: routes to real nodes.
pub(super) async fn run_client(a: RunArgs) -> anyhow::Result<i32> {
    let cfg = client_config(&a)?;
    measure_and_report(cfg, &a.opts).await
}

/// `run`'s flags as a validated configuration (also each of the exporter's targets).
pub(super) fn client_config(a: &RunArgs) -> Result<RunConfig, UsageError> {
    if a.opts.relays_from.is_some() && (!a.relays.is_empty() || a.relays_file.is_some()) {
        return Err(UsageError(
            "--relays-from is the relay pool: pass it instead of --relay/--relays-file".to_string(),
        ));
    }
    let (dst, pool) = node_pool(&a.to, &a.relays, a.relays_file.as_deref())?;
    let (pool, pick) = picked_pool(&a.opts, pool, &|_| None)?;
    let cfg = build_config(dst, pool, a.opts.shape(), &a.opts.measure, &|_| None)?;
    Ok(RunConfig { pick, ..cfg })
}

/// `lab`: a destination and relays in this process (or as children), then one run against them.
pub(super) async fn run_lab(a: LabArgs) -> anyhow::Result<i32> {
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
    let links = match a.links.plan(a.relay_count) {
        Ok(plan) => plan.map(|p| wired(Links::new(&p, &lab.relays))),
        Err(e) => {
            lab.stop().await;
            return Err(e.into());
        }
    };
    let shape = a.opts.shape();
    let picked = picked_pool(&a.opts, lab.relays.clone(), &by_name);
    let built = picked.and_then(|(pool, pick)| {
        build_config(lab.dst, pool, shape, &a.opts.measure, &by_name)
            .map(|c| RunConfig { pick, ..c })
    });
    let mut cfg = match built {
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
    cfg.warnings
        .extend(idle_faults(&a.faults, &lab.relays, &cfg));
    for w in &cfg.warnings {
        let _ = writeln!(std::io::stderr(), "mux-bw: warning: {w}");
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
    lab.stop().await;
    code
}

/// A warning for each fault on a relay that no planned route goes through: it would fire and
/// change nothing (unless `--redial` later picks that relay as a spare).
fn idle_faults(faults: &[Fault], relays: &[NodeAddr], cfg: &RunConfig) -> Vec<String> {
    let used = |relay: &NodeAddr| cfg.routes.iter().any(|r| r.path.contains(relay));
    faults
        .iter()
        .filter(|f| relays.get(f.relay).is_some_and(|r| !used(r)))
        .map(|f| {
            let spare = if cfg.redial {
                " unless --redial picks it as a spare"
            } else {
                ""
            };
            format!(
                "--fault on relay r{}: no planned route goes through it, so it changes nothing{spare}",
                f.relay
            )
        })
        .collect()
}

/// Runs `cfg` with its events going where `o` says, and maps the summary to an exit code.
async fn measure_and_report(cfg: RunConfig, o: &RunOpts) -> anyhow::Result<i32> {
    let sink = Arc::new(open_sink(o)?);
    let gone = sink.stdout_gone();
    let summary = run::run(&cfg, sink.clone(), interrupt_token()).await;
    if summary.routes_established == 0 {
        // Every route failed. A pinned id that does not match is a wrong URI: bad input.
        let mismatch = summary
            .routes
            .iter()
            .filter(|r| r.cause == Some(Cause::IdMismatch))
            .find_map(|r| r.error.as_deref());
        if let Some(e) = mismatch {
            return Err(UsageError(format!("wrong node id in URI: {e}")).into());
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
    let (code, why) = verdict(&summary, o.measure.allow_partial);
    if let (Some(why), false) = (why, o.json) {
        let _ = writeln!(std::io::stderr(), "mux-bw: error: {why}");
    }
    Ok(code)
}

/// The outputs `o` asks for: NDJSON on stdout or human output, `--json-file`, the live view.
fn open_sink(o: &RunOpts) -> Result<EventSink, UsageError> {
    use std::io::IsTerminal;
    let sink_cfg = SinkConfig {
        json: o.json,
        json_file: o.json_file.clone(),
        live: match o.live {
            Live::Always => true,
            Live::Never => false,
            Live::Auto => std::io::stderr().is_terminal(),
        },
        quiet: false,
        tap: None,
    };
    EventSink::new(Instant::now(), &sink_cfg).map_err(|e| {
        let path = o.json_file.as_deref().unwrap_or(Path::new("")).display();
        UsageError(format!("cannot create --json-file '{path}': {e}"))
    })
}

/// What a finished run means to the shell: its exit code and, unless it is 0, why (for human
/// output; the summary event says the same to `--json` readers). Ctrl-C wins over the rest.
fn verdict(s: &Summary, allow_partial: bool) -> (i32, Option<String>) {
    let all_failed = s.routes_established > 0 && s.routes_failed == s.routes_established;
    if s.interrupted {
        return (EXIT_INTERRUPTED, None);
    }
    if s.routes_established == 0 {
        return (EXIT_NO_ROUTE, Some("no route could be established".into()));
    }
    if all_failed {
        return (
            EXIT_ALL_FAILED,
            Some("every route failed during the run".into()),
        );
    }
    if let Some(why) = s.stripe.as_ref().and_then(stripe_fault) {
        return (EXIT_FAILURE, Some(why));
    }
    if s.partial && !allow_partial {
        let why = format!(
            "only {} of {} planned routes were established (--allow-partial accepts that)",
            s.routes_established, s.routes_planned
        );
        return (EXIT_PARTIAL, Some(why));
    }
    (EXIT_OK, None)
}

/// What makes a striped transfer a failure: bytes that arrived corrupt, or never arrived.
fn stripe_fault(st: &StripeSummary) -> Option<String> {
    if st.corrupt_bytes > 0 {
        Some(format!(
            "the destination received {} corrupt bytes of the striped transfer",
            st.corrupt_bytes
        ))
    } else if st.missing_bytes > 0 {
        Some(format!(
            "{} bytes of the striped transfer never arrived in order",
            st.missing_bytes
        ))
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::fixtures;

    fn striped(corrupt: u64, missing: u64) -> Summary {
        let crate::report::events::Event::Summary(mut s) =
            fixtures::summary(8, vec![fixtures::route("up", 8, 0)])
        else {
            unreachable!("the fixture is a summary")
        };
        s.stripe = Some(StripeSummary {
            corrupt_bytes: corrupt,
            missing_bytes: missing,
            ..fixtures::stripe_summary()
        });
        s
    }

    #[test]
    fn a_striped_transfer_with_corrupt_or_missing_bytes_fails() {
        assert_eq!(verdict(&striped(0, 0), false), (EXIT_OK, None));
        let (code, why) = verdict(&striped(12, 0), false);
        assert_eq!(code, EXIT_FAILURE);
        assert!(why.unwrap().contains("12 corrupt bytes"));
        let (code, why) = verdict(&striped(0, 65536), false);
        assert_eq!(code, EXIT_FAILURE);
        assert!(why
            .unwrap()
            .contains("65536 bytes of the striped transfer never arrived"));
        let mut s = striped(0, 65536);
        s.interrupted = true;
        assert_eq!(verdict(&s, false).0, EXIT_INTERRUPTED, "Ctrl-C wins");
    }
}
