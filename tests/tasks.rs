//! Every task a run spawns is owned by it: after 20 sweep-style runs in one process (a fresh lab
//! per run, emulated links, RTT probes, a relay killed mid-run so pumps fail and redial), the
//! runtime's live task count is back where it started. A leaked stdout watcher, proxy, prober
//! or pump would add up run after run.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mux_bw::client::plan::{self, PlanRequest};
use mux_bw::client::run::{self, RunConfig};
use mux_bw::client::wiring::PathWiring;
use mux_bw::lab::emulation::Links;
use mux_bw::lab::shaper::{LinkSpec, Rate};
use mux_bw::lab::topology::LinkPlan;
use mux_bw::lab::{Fault, Lab};
use mux_bw::report::sink::{EventSink, SinkConfig};
use mux_bw::wire::mode::Mode;
use mux_bw::wire::transport::Tuning;
use tokio_util::sync::CancellationToken;

const RUNS: usize = 20;
const ROUTES: usize = 2;

fn alive() -> usize {
    tokio::runtime::Handle::current()
        .metrics()
        .num_alive_tasks()
}

/// One run the way `sweep --lab` does it: lab up, measure into a file, lab down.
async fn one_run(k: usize, dir: &std::path::Path) {
    let token = b"tasks".to_vec();
    let lab = Lab::start(ROUTES + 1, token.clone(), false, Tuning::default())
        .await
        .expect("lab");
    let routes = plan::plan(&PlanRequest {
        dst: lab.dst,
        pool: lab.relays.clone(),
        routes: ROUTES,
        min_hops: 2,
        pins: BTreeMap::new(),
        allow_overlap: false,
    })
    .expect("plan");
    let link = LinkSpec {
        rate: Some(Rate(50_000_000)),
        delay: Duration::from_millis(2),
        loss_pct: 0.0,
        queue: mux_bw::lab::shaper::QUEUE_TIME,
    };
    let links: Arc<dyn PathWiring> = Arc::new(Links::new(
        &LinkPlan::uniform(link, link, lab.relays.len()),
        &lab.relays,
    ));
    let cfg = RunConfig {
        dst: lab.dst,
        relays: lab.relays.clone(),
        routes,
        min_hops: 2,
        allow_overlap: false,
        mode: if k % 2 == 0 { Mode::Up } else { Mode::Bidir },
        duration: Duration::from_millis(600),
        omit: Duration::ZERO,
        interval: Duration::from_millis(100),
        setup_timeout: Duration::from_secs(5),
        io_timeout: Duration::from_secs(5),
        stall_timeout: Duration::from_secs(5),
        probe_rtt: true,
        probe_all: false,
        probe_interval: Duration::from_millis(20),
        token,
        redial: true,
        tuning: Tuning::default(),
        links: Some(links),
        load_started: CancellationToken::new(),
        warnings: Vec::new(),
        pick: None,
        stripe: None,
    };
    // Every fifth run loses relay r0 mid-run: its route fails and redials through the spare.
    if k % 5 == 4 {
        let fault: Fault = "kill:0@200ms".parse().expect("fault");
        lab.inject(fault, cfg.load_started.clone()).expect("inject");
    }
    let sink = SinkConfig {
        json_file: Some(dir.join(format!("run{k}.ndjson"))),
        quiet: true,
        ..SinkConfig::default()
    };
    let sink = Arc::new(EventSink::new(Instant::now(), &sink).expect("sink"));
    let summary = run::run(&cfg, sink, CancellationToken::new()).await;
    assert_eq!(summary.routes_established, ROUTES, "run {k}");
    drop(cfg);
    lab.stop().await;
}

/// Waits (bounded) for the live task count to fall to `baseline`; returns the last count.
async fn settle(baseline: usize) -> usize {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let n = alive();
        if n <= baseline || Instant::now() > deadline {
            return n;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_runs_leave_no_task_behind() {
    let dir = tempfile::tempdir().unwrap();
    let baseline = alive();
    let mut after = Vec::new();
    for k in 0..RUNS {
        one_run(k, dir.path()).await;
        after.push(settle(baseline).await);
    }
    assert!(
        after.iter().all(|&n| n <= baseline),
        "live tasks after each run (baseline {baseline}): {after:?}"
    );
}
