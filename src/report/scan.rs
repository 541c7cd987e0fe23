//! A scan for people: one progress line per measured relay, then the ranking as a table sorted
//! by rate with the direct path marked, and a warning when the client's own link may have
//! capped relays measured at once. Pure formatting.

use crate::report::events::{RelayScan, ScanSummary};
use crate::report::human::{fmt_rate, short};
use crate::wire::close::Cause;

/// The progress line of one row: `r3 78.1 Mbit/s setup 2.1ms rtt 0.31/0.52ms`.
pub fn row_text(r: &RelayScan) -> String {
    let name = name(r);
    match (&r.cause, &r.error) {
        (Some(cause), error) => format!(
            "scan {name}: failed ({}): {}",
            cause_name(cause),
            error.as_deref().unwrap_or("")
        ),
        (None, _) => format!(
            "scan {name}: {}  setup {}  rtt idle {} loaded {}",
            fmt_rate(r.bps),
            ms(r.setup_ns),
            ms(r.rtt_idle.as_ref().map(|s| s.p50_ns)),
            ms(r.rtt_loaded.as_ref().map(|s| s.p50_ns)),
        ),
    }
}

/// The cause as it is spelled in the events (`timeout`, `refused`, ...).
fn cause_name(c: &Cause) -> String {
    serde_json::to_value(c)
        .ok()
        .and_then(|v| v.as_str().map(String::from))
        .unwrap_or_default()
}

fn name(r: &RelayScan) -> String {
    r.relay.clone().unwrap_or_else(|| "direct".to_string())
}

fn ms(ns: Option<u64>) -> String {
    ns.map_or_else(|| "-".to_string(), |n| format!("{:.2}ms", n as f64 / 1e6))
}

fn pct(loss: Option<f64>) -> String {
    loss.map_or_else(|| "-".to_string(), |l| format!("{:.2}%", l * 100.0))
}

/// The ranking: fastest relay first, the direct path where its rate puts it (marked), failed
/// relays last with their cause.
pub fn table(s: &ScanSummary) -> String {
    let mut out = format!(
        "{:<5} {:<10} {:>14} {:>9} {:>9} {:>9} {:>9} {:>7}  {}\n",
        "rank", "relay", "rate", "setup", "rtt p50", "rtt p90", "loaded", "loss", "address / error"
    );
    let mut rows: Vec<(Option<usize>, &RelayScan)> = s
        .ranking
        .iter()
        .enumerate()
        .map(|(i, r)| (Some(i + 1), r))
        .collect();
    let at = rows
        .iter()
        .position(|(_, r)| r.cause.is_some() || r.bps < s.direct.bps)
        .unwrap_or(rows.len());
    rows.insert(at, (None, &s.direct));
    for (rank, r) in rows {
        out.push_str(&row(rank, r));
    }
    out.push_str(&format!(
        "{} of {} relays measured, {} failed; direct path {}\n",
        s.relays_measured,
        s.relays_planned,
        s.relays_failed,
        fmt_rate(s.direct.bps)
    ));
    if s.client_limited {
        out.push_str(&format!(
            "warning: the {} fastest relays, measured at once, add up to within 10% of the direct \
             path: the client's own link may have capped them (scan again with --parallel 1)\n",
            s.parallel
        ));
    }
    if s.interrupted {
        out.push_str("interrupted: the rows above were measured before Ctrl-C\n");
    }
    out
}

fn row(rank: Option<usize>, r: &RelayScan) -> String {
    let rank = rank.map_or_else(|| "-".to_string(), |k| k.to_string());
    let what = match (&r.cause, &r.error) {
        (Some(c), e) => format!("{}: {}", cause_name(c), e.as_deref().unwrap_or("")),
        (None, _) => short_uri(&r.address),
    };
    format!(
        "{:<5} {:<10} {:>14} {:>9} {:>9} {:>9} {:>9} {:>7}  {}\n",
        rank,
        name(r),
        if r.cause.is_some() {
            "FAILED".to_string()
        } else {
            fmt_rate(r.bps)
        },
        ms(r.setup_ns),
        ms(r.rtt_idle.as_ref().map(|s| s.p50_ns)),
        ms(r.rtt_idle.as_ref().map(|s| s.p90_ns)),
        ms(r.rtt_loaded.as_ref().map(|s| s.p50_ns)),
        pct(r.first_link_loss),
        what
    )
}

/// `mbw://0564331f..@127.0.0.1:7601` from a whole URI.
fn short_uri(uri: &str) -> String {
    match uri.strip_prefix("mbw://").and_then(|r| r.split_once('@')) {
        Some((id, addr)) => format!("{}..@{addr}", short(id)),
        None => uri.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(name: Option<&str>, bps: u64, cause: Option<Cause>) -> RelayScan {
        RelayScan {
            relay: name.map(String::from),
            address: "mbw://0564331f00000000000000000000000a@127.0.0.1:7601".into(),
            node_id: "0564331f00000000000000000000000a".into(),
            bps,
            setup_ns: Some(2_100_000),
            rtt_idle: None,
            rtt_loaded: None,
            first_link_loss: Some(0.001),
            cause,
            error: cause.map(|_| "setup timed out after 5s".into()),
            interrupted: false,
        }
    }

    #[test]
    fn the_table_ranks_by_rate_marks_direct_and_lists_failures_last() {
        let s = ScanSummary {
            relays_planned: 3,
            relays_measured: 2,
            relays_failed: 1,
            parallel: 1,
            client_limited: false,
            interrupted: false,
            direct: row(None, 50_000_000, None),
            ranking: vec![
                row(Some("r3"), 80_000_000, None),
                row(Some("r0"), 10_000_000, None),
                row(Some("r1"), 0, Some(Cause::Timeout)),
            ],
        };
        let t = table(&s);
        let names: Vec<&str> = t
            .lines()
            .skip(1)
            .take(4)
            .map(|l| l.split_whitespace().nth(1).unwrap())
            .collect();
        assert_eq!(names, ["r3", "direct", "r0", "r1"], "{t}");
        assert!(
            t.contains("FAILED") && t.contains("timeout: setup timed out"),
            "{t}"
        );
        assert!(t.contains("2 of 3 relays measured, 1 failed"), "{t}");
        assert!(!t.contains("warning"), "{t}");
    }
}
