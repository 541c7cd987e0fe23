//! Human output: one line per event on stderr, and the summary table on stdout.
//! Pure formatting plus two print calls; the layout is documented in docs/EVENTS.md.

use std::fmt::Write as _;
use std::time::Duration;

use crate::report::events::{
    Event, RouteEstablished, RouteFailure, RouteRedial, RouteRtt, RouteSample, RouteSetupFailed,
    RouteStalled, RouteState, RouteSummary, RttStats, RttSummary, Sample, Start, StripeSummary,
    Summary,
};
use crate::wire::mode::Mode;

/// One progress line for an event, or `None` for events shown otherwise. `mode` is the run's
/// (from its `start`): it says which way a sample's figures count.
pub fn line(event: &Event, t: Duration, mode: Mode) -> Option<String> {
    let text = match event {
        Event::Start(s) => start_text(s),
        Event::RouteEstablished(e) => established_text(e),
        Event::RouteSetupFailed(e) => setup_failed_text(e),
        Event::RouteFailure(e) => failure_text(e),
        Event::RouteStalled(e) => stalled_text(e),
        Event::RouteRedial(e) => redial_text(e),
        Event::Sample(s) => sample_text(s, mode),
        Event::Error(e) => format!("error: {}", e.error),
        // Probes are many; the summary shows their distribution.
        Event::Probe(_) => return None,
        Event::Summary(_) => return None,
        Event::RelayScan(r) => crate::report::scan::row_text(r),
        Event::ScanSummary(_) => return None,
    };
    Some(format!("[+{:.2}s] {text}", t.as_secs_f64()))
}

fn start_text(s: &Start) -> String {
    let links = match &s.config.links {
        Some(l) => format!(
            " · emulated links: relay {}, direct {}",
            link_text(&l.relay),
            link_text(&l.direct)
        ),
        None => String::new(),
    };
    let (length, stripe) = match &s.config.stripe {
        Some(st) => (
            st.bytes.map_or_else(
                || {
                    humantime::format_duration(Duration::from_nanos(s.config.duration_ns))
                        .to_string()
                },
                fmt_bytes,
            ),
            format!(
                " · striped: {}, {} segments, window {}",
                st.scheduler,
                fmt_bytes(u64::from(st.segment_bytes)),
                fmt_bytes(u64::from(st.reorder_window_bytes))
            ),
        ),
        None => (
            humantime::format_duration(Duration::from_nanos(s.config.duration_ns)).to_string(),
            String::new(),
        ),
    };
    format!(
        "mux-bw {} → {} · {} route(s) · min-hops {} · mode {} · {length}{stripe}{links}",
        s.version,
        short_uri(&s.config.to),
        s.config.routes,
        s.config.min_hops,
        s.config.mode.as_str(),
    )
}

fn established_text(e: &RouteEstablished) -> String {
    format!(
        "R{} ✓ established {} ({} hop{}, setup {})",
        e.route_index,
        via(&e.path),
        e.hops,
        if e.hops == 1 { "" } else { "s" },
        fmt_duration(Duration::from_nanos(e.setup_ns))
    )
}

fn setup_failed_text(e: &RouteSetupFailed) -> String {
    let at = match (e.failed_hop, &e.node) {
        (Some(h), Some(n)) => format!(" at hop {h} (node {})", short(n)),
        (Some(h), None) => format!(" at hop {h}"),
        _ => String::new(),
    };
    format!("R{} ✗ setup-failed{at} err={}", e.route_index, e.error)
}

fn failure_text(e: &RouteFailure) -> String {
    format!(
        "R{} ✗ pump-failed before={}/{} after {} err={}{}",
        e.route_index,
        fmt_bytes(e.bytes_sent_before_failure),
        fmt_bytes(e.bytes_received_before_failure),
        fmt_duration(Duration::from_nanos(e.elapsed_ns)),
        e.error,
        at_hop(e.failed_hop, e.node.as_deref()),
    )
}

fn stalled_text(e: &RouteStalled) -> String {
    format!(
        "R{} ⚠ stalled: no bytes for {} (sent {}, received {})",
        e.route_index,
        fmt_duration(Duration::from_nanos(e.stalled_ns)),
        fmt_bytes(e.bytes_sent),
        fmt_bytes(e.bytes_received),
    )
}

fn redial_text(e: &RouteRedial) -> String {
    format!(
        "R{} ↻ redialed {} (attempt {}, setup {})",
        e.route_index,
        via(&e.path),
        e.attempt,
        fmt_duration(Duration::from_nanos(e.setup_ns))
    )
}

/// `A/N routes  TOTAL UNIT  R0 x  R1 y …`: every route's figure in the total's unit, counted
/// the way the total is (sent in `up`, received in `down` and `echo`), so they add up to it; in
/// `bidir` each route shows `↑sent ↓received`, and all of those add up to the total.
fn sample_text(s: &Sample, mode: Mode) -> String {
    let (div, _, prec) = rate_unit(s.aggregate_bps);
    let mut l = format!(
        "{}/{} routes  {:>10}",
        s.active_routes,
        s.routes.len(),
        fmt_rate(s.aggregate_bps)
    );
    let fig = |bps: u64| format!("{:.prec$}", bps as f64 / div);
    for r in &s.routes {
        let _ = match r.state {
            RouteState::Up => write!(l, "  R{} {}", r.route_index, route_figure(r, mode, fig)),
            RouteState::Stalled => write!(l, "  R{} 0!", r.route_index),
            RouteState::Failed => write!(l, "  R{} -", r.route_index),
            RouteState::Pending => write!(l, "  R{} …", r.route_index),
            RouteState::SetupFailed => write!(l, "  R{} ✗", r.route_index),
        };
    }
    if let Some(st) = &s.stripe {
        let _ = write!(l, "  in order {}", fig(st.in_order_bps));
    }
    if s.omitted {
        l.push_str("  (omitted)");
    }
    l
}

/// One route's share of a sample's total: its rate in the run's direction, or both ways.
fn route_figure(r: &RouteSample, mode: Mode, fig: impl Fn(u64) -> String) -> String {
    match mode {
        Mode::Up => fig(r.sent_bps),
        Mode::Down | Mode::Echo => fig(r.received_bps),
        Mode::Bidir => format!("↑{} ↓{}", fig(r.sent_bps), fig(r.received_bps)),
    }
}

/// Share of the first link's packets lost, or "-" when none were sent.
fn fmt_loss(lost: u64, sent: u64) -> String {
    if sent == 0 {
        "-".into()
    } else {
        format!("{:.2}%", lost as f64 * 100.0 / sent as f64)
    }
}

/// The end-of-run table: one row per route, the RTT lines when probed, and a total.
pub fn summary_table(s: &Summary) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<5} {:<6} {:<13} {:>12} {:>12} {:>14} {:>7}  path / error",
        "route", "hops", "state", "sent", "received", "mean rate", "loss"
    );
    for r in &s.routes {
        let _ = writeln!(out, "{}", route_row(r));
    }
    if let Some(rtt) = &s.rtt {
        rtt_lines(&mut out, rtt);
    }
    if let Some(st) = &s.stripe {
        let _ = writeln!(out, "{}", stripe_line(st, s.duration_ns));
    }
    out.push_str(&total_line(s));
    out
}

/// `striped: X in order = E% of the routes' sum; buffer peak B; resent R; …`, and every
/// integrity count that is not 0.
fn stripe_line(st: &StripeSummary, measured_ns: u64) -> String {
    let mut l = format!(
        "striped: {} in order = {:.0}% of the routes' sum; buffer peak {}; resent {}; blocked {:.0}% of the time",
        fmt_rate(st.in_order_bps),
        st.efficiency * 100.0,
        fmt_bytes(st.buffer_peak_bytes),
        st.segments_resent,
        st.blocked_ns as f64 * 100.0 / measured_ns.max(1) as f64,
    );
    if let Some(ns) = st.transfer_ns {
        let t = Duration::from_nanos(ns).as_secs_f64();
        let _ = write!(l, "; {} in {t:.2}s", fmt_bytes(st.delivered_bytes));
    }
    for (what, n) in [
        ("duplicate", st.duplicate_bytes),
        ("CORRUPT", st.corrupt_bytes),
        ("MISSING", st.missing_bytes),
    ] {
        if n > 0 {
            let _ = write!(l, "; {what} {}", fmt_bytes(n));
        }
    }
    l
}

/// One route's row: its counters, then its path, or its error and where it happened.
fn route_row(r: &RouteSummary) -> String {
    let detail = match &r.error {
        Some(e) => format!("{e}{}", at_hop(r.failed_hop, r.node.as_deref())),
        None => r
            .path
            .iter()
            .map(|p| short(p))
            .collect::<Vec<_>>()
            .join(" → "),
    };
    let detail = match (r.failures, r.redials) {
        (0, 0) => detail,
        (f, n) => format!("{detail} ({f} failure(s), redialed {n}×)"),
    };
    format!(
        "R{:<4} {:<6} {:<13} {:>12} {:>12} {:>14} {:>7}  {}",
        r.route_index,
        r.hops,
        r.state,
        fmt_bytes(r.bytes_sent),
        fmt_bytes(r.bytes_received),
        fmt_rate(r.mean_bps),
        fmt_loss(r.lost_packets, r.sent_packets),
        detail
    )
}

/// The idle and loaded RTT distributions, on which routes, and the increase under load.
fn rtt_lines(out: &mut String, rtt: &RttSummary) {
    let list = |idx: &[u32]| {
        let names: Vec<String> = idx.iter().map(|i| format!("R{i}")).collect();
        if names.is_empty() {
            "-".to_string()
        } else {
            names.join(",")
        }
    };
    let idle_on = list(rtt.route_index.as_slice());
    let loaded_on = list(&rtt.routes_probed);
    for (phase, on, stats) in [
        ("idle", &idle_on, &rtt.idle),
        ("loaded", &loaded_on, &rtt.loaded),
    ] {
        let _ = match stats {
            Some(st) => {
                let ms = |ns: u64| ns as f64 / 1e6;
                writeln!(
                    out,
                    "rtt {phase:<6} {on}: min {:.2} p50 {:.2} p90 {:.2} p99 {:.2} max {:.2} ms, {} RPM ({} probes, {} lost)",
                    ms(st.min_ns),
                    ms(st.p50_ns),
                    ms(st.p90_ns),
                    ms(st.p99_ns),
                    ms(st.max_ns),
                    st.rpm,
                    st.count,
                    st.lost
                )
            }
            None => writeln!(out, "rtt {phase:<6} {on}: no answer"),
        };
    }
    if let Some(inc) = rtt.latency_increase_ns {
        let _ = writeln!(
            out,
            "latency increase under load: {:+.2} ms",
            inc as f64 / 1e6
        );
    }
    route_rtt_lines(out, &rtt.routes);
}

/// `--probe-rtt all`: one line per route, idle and loaded p50/p90/p99 side by side.
fn route_rtt_lines(out: &mut String, routes: &[RouteRtt]) {
    let fmt = |st: &Option<RttStats>| match st {
        Some(s) => {
            let ms = |ns: u64| ns as f64 / 1e6;
            format!(
                "p50 {:.2} p90 {:.2} p99 {:.2} ms ({} probes, {} lost)",
                ms(s.p50_ns),
                ms(s.p90_ns),
                ms(s.p99_ns),
                s.count,
                s.lost
            )
        }
        None => "no answer".to_string(),
    };
    for r in routes {
        let _ = writeln!(
            out,
            "rtt R{:<5} idle {}  loaded {}",
            r.route_index,
            fmt(&r.idle),
            fmt(&r.loaded)
        );
    }
}

/// The last line: routes up and failed, bytes, time and rate, and what makes the figures
/// suspect (interrupted, partial, late samples).
fn total_line(s: &Summary) -> String {
    let mut out = format!(
        "total {}/{} routes up, {} failed, {} setup failed, {} in {:.2}s = {}{}",
        s.routes_established - s.routes_failed,
        s.routes_planned,
        s.routes_failed,
        s.routes_setup_failed,
        fmt_bytes(s.aggregate_bytes),
        Duration::from_nanos(s.duration_ns).as_secs_f64(),
        fmt_rate(s.aggregate_bps),
        if s.interrupted { " (interrupted)" } else { "" }
    );
    if s.partial {
        let _ = write!(
            out,
            " PARTIAL: {} of {} planned routes established",
            s.routes_established, s.routes_planned
        );
    }
    if s.late_samples > 0 {
        let _ = write!(out, " ({} late samples)", s.late_samples);
    }
    out
}

fn link_text(l: &crate::report::events::LinkView) -> String {
    let rate = l.rate_bps.map_or("unlimited".to_string(), fmt_rate);
    let mut t = format!("{rate} +{}", fmt_duration(Duration::from_nanos(l.delay_ns)));
    if l.loss_pct > 0.0 {
        t += &format!(" {:.2}% loss", l.loss_pct);
    }
    t
}

/// "via a,b" for the intermediates of a path, or "direct".
fn via(path: &[String]) -> String {
    match path.split_last() {
        Some((_, mids)) if !mids.is_empty() => format!(
            "via {}",
            mids.iter().map(|m| short(m)).collect::<Vec<_>>().join(",")
        ),
        _ => "direct".to_string(),
    }
}

fn at_hop(hop: Option<u8>, node: Option<&str>) -> String {
    match (hop, node) {
        (Some(h), Some(n)) => format!(" (hop {h}, node {})", short(n)),
        (Some(h), None) => format!(" (hop {h})"),
        _ => String::new(),
    }
}

/// First 8 characters of a node id, enough to tell nodes apart in a run.
pub fn short(id: &str) -> &str {
    id.get(..8).unwrap_or(id)
}

fn short_uri(uri: &str) -> String {
    match uri.split_once('@') {
        Some((scheme_id, host)) => {
            let id = scheme_id.trim_start_matches(crate::wire::addr::SCHEME);
            format!("{}..@{host}", short(id))
        }
        None => uri.to_string(),
    }
}

/// The decimal unit a rate is printed in: (divisor, unit, decimals).
fn rate_unit(bps: u64) -> (f64, &'static str, usize) {
    match bps {
        1_000_000_000.. => (1e9, "Gbit/s", 2),
        1_000_000.. => (1e6, "Mbit/s", 1),
        1_000.. => (1e3, "kbit/s", 1),
        _ => (1.0, "bit/s", 0),
    }
}

/// Bits per second with a decimal unit, as iperf3 prints them.
pub fn fmt_rate(bps: u64) -> String {
    let (div, unit, prec) = rate_unit(bps);
    format!("{:.prec$} {unit}", bps as f64 / div)
}

/// A mean and its spread in the mean's unit, e.g. `49.3 ± 0.2 Mbit/s`.
pub fn fmt_rate_pm(mean: f64, sd: f64) -> String {
    let (div, unit, prec) = if mean >= 1e9 {
        (1e9, "Gbit/s", 2)
    } else if mean >= 1e6 {
        (1e6, "Mbit/s", 1)
    } else {
        (1e3, "kbit/s", 1)
    };
    format!("{:.prec$} ± {:.prec$} {unit}", mean / div, sd / div)
}

/// Bytes with a decimal unit.
pub fn fmt_bytes(n: u64) -> String {
    let b = n as f64;
    if b >= 1e9 {
        format!("{:.2}GB", b / 1e9)
    } else if b >= 1e6 {
        format!("{:.1}MB", b / 1e6)
    } else if b >= 1e3 {
        format!("{:.1}kB", b / 1e3)
    } else {
        format!("{n}B")
    }
}

fn fmt_duration(d: Duration) -> String {
    if d >= Duration::from_secs(1) {
        format!("{:.2}s", d.as_secs_f64())
    } else {
        format!("{:.1}ms", d.as_secs_f64() * 1e3)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units() {
        assert_eq!(fmt_rate(412_800_000), "412.8 Mbit/s");
        assert_eq!(fmt_rate(5_700_000_000), "5.70 Gbit/s");
        assert_eq!(fmt_rate(999), "999 bit/s");
        assert_eq!(fmt_bytes(12_400_000), "12.4MB");
        assert_eq!(fmt_bytes(0), "0B");
        assert_eq!(fmt_rate_pm(2.51e9, 3e7), "2.51 ± 0.03 Gbit/s");
        assert_eq!(fmt_rate_pm(49.3e6, 2e5), "49.3 ± 0.2 Mbit/s");
        assert_eq!(fmt_loss(0, 0), "-");
        assert_eq!(fmt_loss(0, 10_000), "0.00%");
        assert_eq!(fmt_loss(512, 10_240), "5.00%");
    }

    fn sample_of(aggregate_bps: u64, routes: &[(u64, u64, RouteState)]) -> Sample {
        let routes: Vec<RouteSample> = routes
            .iter()
            .enumerate()
            .map(|(i, &(sent_bps, received_bps, state))| RouteSample {
                state,
                ..crate::report::fixtures::route_sample(i as u32, sent_bps, received_bps)
            })
            .collect();
        Sample {
            interval_start_ns: 0,
            interval_end_ns: 1_000_000_000,
            omitted: false,
            active_routes: routes.iter().filter(|r| r.state.is_active()).count(),
            aggregate_bps,
            late: false,
            routes,
            stripe: None,
        }
    }

    #[test]
    fn sample_figures_are_in_the_unit_of_the_total() {
        use RouteState::*;
        let one = sample_of(9_457_100_000, &[(9_457_100_000, 0, Up)]);
        assert_eq!(
            sample_text(&one, Mode::Up),
            "1/1 routes  9.46 Gbit/s  R0 9.46"
        );
        let s = sample_of(
            2_400_000_000,
            &[
                (596_900_000, 0, Up),
                (1_203_100_000, 0, Up),
                (600_000_000, 0, Up),
                (0, 0, Stalled),
                (0, 0, Failed),
                (0, 0, Pending),
                (0, 0, SetupFailed),
            ],
        );
        assert_eq!(
            sample_text(&s, Mode::Up),
            "4/7 routes  2.40 Gbit/s  R0 0.60  R1 1.20  R2 0.60  R3 0!  R4 -  R5 …  R6 ✗"
        );
        let slow = sample_of(47_800_000, &[(47_800_000, 0, Up)]);
        assert_eq!(
            sample_text(&slow, Mode::Up),
            "1/1 routes  47.8 Mbit/s  R0 47.8"
        );
        // Down and echo count what the client received (echo also sends).
        let echo = sample_of(47_800_000, &[(48_000_000, 47_800_000, Up)]);
        assert_eq!(
            sample_text(&echo, Mode::Echo),
            "1/1 routes  47.8 Mbit/s  R0 47.8"
        );
    }

    #[test]
    fn bidir_sample_figures_are_up_and_down_and_add_up() {
        let s = sample_of(
            188_400_000,
            &[
                (47_800_000, 46_100_000, RouteState::Up),
                (48_800_000, 45_700_000, RouteState::Up),
            ],
        );
        assert_eq!(
            sample_text(&s, Mode::Bidir),
            "2/2 routes  188.4 Mbit/s  R0 ↑47.8 ↓46.1  R1 ↑48.8 ↓45.7"
        );
    }

    #[test]
    fn the_total_line_counts_setup_failures() {
        let Event::Summary(mut s) = crate::report::fixtures::summary(0, Vec::new()) else {
            unreachable!("fixtures::summary builds a summary")
        };
        (s.routes_planned, s.routes_established, s.partial) = (1, 0, true);
        s.routes_setup_failed = 1;
        let total = total_line(&s);
        assert!(
            total.starts_with("total 0/1 routes up, 0 failed, 1 setup failed, 0B in 3.00s"),
            "{total}"
        );
    }

    #[test]
    fn failure_line_reads_like_the_design() {
        let ev = Event::RouteFailure(RouteFailure {
            route_index: 3,
            error: "write timed out after 30s".into(),
            cause: crate::wire::close::Cause::Timeout,
            bytes_sent_before_failure: 12_400_000,
            bytes_received_before_failure: 12_100_000,
            elapsed_ns: 2_310_000_000,
            failed_hop: Some(2),
            node: Some("91bc0123aaaa".into()),
        });
        assert_eq!(
            line(&ev, Duration::from_millis(2310), Mode::Up).unwrap(),
            "[+2.31s] R3 ✗ pump-failed before=12.4MB/12.1MB after 2.31s \
             err=write timed out after 30s (hop 2, node 91bc0123)"
        );
    }
}
