//! `make bench`: what `--metrics` costs a relay's forwarding. Real processes, as deployed: a
//! destination, a relay started fresh for each measurement, and `mux-bw run` through it for
//! one route. The relay runs once without `--metrics` and once with it while a scraper reads
//! its `/metrics` ten times a second (ten times a 1 s scrape interval), in paired rounds whose
//! order alternates; the ratio with / without is taken within each round, and the median and
//! range over rounds printed. Without `--bench` (`cargo test --all-targets`) one short round
//! checks that both cases run.

#[path = "../tests/common/mod.rs"]
mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{http, run, summary, NodeProc};
use serde_json::json;

/// Between two scrapes of the relay's `/metrics`.
const SCRAPE_EVERY: Duration = Duration::from_millis(100);

/// The relay's forwarding rate, bits/s, over one run through a fresh relay, scraped or not;
/// and how many scrapes answered.
fn forwarding(dst: &NodeProc, metrics: bool, duration: &str, omit: &str) -> (f64, u64) {
    let extra: &[&str] = if metrics {
        &["--token", "b", "--metrics", "127.0.0.1:0"]
    } else {
        &["--token", "b"]
    };
    let relay = NodeProc::start("relay", extra);
    let stop = Arc::new(AtomicBool::new(false));
    let scrapes = Arc::new(AtomicU64::new(0));
    let scraper = metrics.then(|| {
        let addr = relay.metrics_addr();
        let (stop, scrapes) = (stop.clone(), scrapes.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let (status, body) = http(&addr, "GET", "/metrics", &[]);
                if status == 200 && body.contains("mux_bw_route_payload_bytes_total") {
                    scrapes.fetch_add(1, Ordering::Relaxed);
                }
                std::thread::sleep(SCRAPE_EVERY);
            }
        })
    });
    let out = run(
        &[
            "run",
            "--to",
            &dst.uri,
            "--relay",
            &relay.uri,
            "--min-hops",
            "2",
            "--token",
            "b",
            "--duration",
            duration,
            "--omit",
            omit,
            "--json",
        ],
        Duration::from_secs(60),
    );
    stop.store(true, Ordering::Relaxed);
    if let Some(s) = scraper {
        let _ = s.join();
    }
    assert_eq!(out.code, 0, "{}", out.stderr);
    let events = out.events();
    let summary = summary(&events);
    (
        summary["aggregate_bps"].as_f64().unwrap_or(0.0),
        scrapes.load(Ordering::Relaxed),
    )
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let (rounds, duration, omit) = if full {
        (9, "3s", "1s")
    } else {
        (1, "300ms", "100ms")
    };
    let dst = NodeProc::start("serve", &["--token", "b"]);
    let mut ratios = Vec::new();
    let (mut on, mut off) = (Vec::new(), Vec::new());
    for round in 0..rounds {
        // Alternate which case goes first, so neither always follows the other.
        let first_on = round % 2 == 0;
        let a = forwarding(&dst, first_on, duration, omit);
        let b = forwarding(&dst, !first_on, duration, omit);
        let ((with, scrapes), (without, _)) = if first_on { (a, b) } else { (b, a) };
        assert!(scrapes > 0 || !full, "the scraper never got an answer");
        let ratio = with / without;
        eprintln!(
            "round {round}: with --metrics {:.2} Gbit/s ({scrapes} scrapes), without {:.2} Gbit/s, ratio {ratio:.3}",
            with / 1e9,
            without / 1e9
        );
        ratios.push(ratio);
        on.push(with);
        off.push(without);
    }
    let median = |v: &[f64]| {
        let mut v = v.to_vec();
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let min = ratios.iter().copied().fold(f64::INFINITY, f64::min);
    let max = ratios.iter().copied().fold(0.0, f64::max);
    println!(
        "relay forwarding, --metrics scraped every {SCRAPE_EVERY:?} / without: median {:.3} ({min:.3}..{max:.3}) over {rounds} paired rounds; {:.2} vs {:.2} Gbit/s (medians)",
        median(&ratios),
        median(&on) / 1e9,
        median(&off) / 1e9
    );
    if full {
        let path =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench-metrics.json");
        let report = json!({
            "ratio_median": median(&ratios),
            "ratio_min": min,
            "ratio_max": max,
            "ratios": ratios,
            "with_metrics_bps": on,
            "without_metrics_bps": off,
            "scrape_every_ms": SCRAPE_EVERY.as_millis() as u64,
        });
        match std::fs::write(&path, report.to_string()) {
            Ok(()) => println!("wrote {}", path.display()),
            Err(e) => eprintln!("cannot write {}: {e}", path.display()),
        }
    }
}
