//! `mux-bw compare`: saved runs side by side, each against the first, in the manner of
//! hyperfine's "ran 3.62 ± 0.05 times faster", with a warning for each setting that makes a run
//! not comparable with the baseline. Pure: takes parsed runs, returns a report.

use std::time::Duration;

use serde::Serialize;

use crate::report::events::{LinkView, LinksView};
use crate::report::human::fmt_rate;
use crate::report::runfile::Run;

/// What one run measured, reduced to the figures a comparison needs.
#[derive(Clone, Debug, Serialize)]
pub struct RunStats {
    /// File name, as given.
    pub label: String,
    /// The shortest suffix of whole path components that tells this run from the others
    /// (`sw/r1.ndjson` next to `other/r1.ndjson`); what the table prints.
    pub name: String,
    /// Routes asked for.
    pub routes: u64,
    /// Links per route: "2", or "1-3" when they differ.
    pub hops: String,
    /// Mean aggregate goodput over the measured part, bits/s (the summary's).
    pub mean_bps: f64,
    /// Median of the measured intervals' aggregate goodput, bits/s.
    pub median_bps: f64,
    /// 10th percentile of the intervals' aggregate goodput, bits/s (the bad moments).
    pub p10_bps: f64,
    /// Slowest and fastest route's mean goodput, bits/s.
    pub route_min_bps: f64,
    /// See `route_min_bps`.
    pub route_max_bps: f64,
    /// Route failures plus routes never set up.
    pub failures: u64,
    /// Median RTT under load, ns, when probed.
    pub loaded_rtt_p50_ns: Option<f64>,
    /// With `--probe-rtt all`: the lowest and highest of the routes' own loaded p50, ns.
    pub route_loaded_rtt_p50_ns: Option<(f64, f64)>,
    /// Share of the routes' first-link packets QUIC declared lost (all routes together);
    /// `None` when nothing was sent.
    pub first_link_loss: Option<f64>,
    /// With `--stripe`: the one transfer's in-order goodput, bits/s.
    pub striped_bps: Option<f64>,
    /// With `--stripe`: in-order goodput over the routes' sum.
    pub stripe_efficiency: Option<f64>,
}

/// A run against the first run.
#[derive(Clone, Debug, Serialize)]
pub struct Ratio {
    /// This run's label.
    pub label: String,
    /// The first run's label.
    pub baseline: String,
    /// Mean throughput over the baseline's; `None` when the baseline moved nothing.
    pub throughput: Option<f64>,
    /// Loaded RTT p50 over the baseline's; `None` unless both were probed.
    pub loaded_rtt: Option<f64>,
    /// A striped run's in-order goodput over the baseline's (striped, else mean) throughput.
    pub striped: Option<f64>,
}

/// The whole comparison.
#[derive(Clone, Debug, Serialize)]
pub struct Comparison {
    /// One entry per run, in the order given.
    pub runs: Vec<RunStats>,
    /// One entry per run after the first.
    pub ratios: Vec<Ratio>,
    /// One entry per setting in which a run differs from the first: its ratio compares
    /// different measurements.
    pub warnings: Vec<Warning>,
}

/// A setting in which a run differs from the baseline.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Warning {
    /// The run's name (as in `RunStats::name`).
    pub run: String,
    /// The baseline's name.
    pub baseline: String,
    /// `duration`, `omit`, `mode`, `links` or `version`.
    pub field: &'static str,
    /// The run's setting.
    pub value: String,
    /// The baseline's setting.
    pub baseline_value: String,
    /// The whole warning as one sentence.
    pub message: String,
}

/// The shortest suffix of whole path components of each label that no other (different)
/// label ends with: `sw/r1.ndjson` and `other/r1.ndjson` stay apart, `a/x.ndjson` next to
/// `b/y.ndjson` is `x.ndjson`. A file given twice gets the same name twice.
pub fn unique_names(labels: &[&str]) -> Vec<String> {
    let parts: Vec<Vec<&str>> = labels
        .iter()
        .map(|l| {
            l.split('/')
                .filter(|c| !c.is_empty() && *c != ".")
                .collect()
        })
        .collect();
    let suffix = |p: &[&str], k: usize| p[p.len().saturating_sub(k)..].join("/");
    labels
        .iter()
        .zip(&parts)
        .map(|(label, own)| {
            (1..=own.len())
                .map(|k| suffix(own, k))
                .find(|mine| {
                    labels
                        .iter()
                        .zip(&parts)
                        .filter(|(other, _)| *other != label)
                        .all(|(_, p)| suffix(p, mine.matches('/').count() + 1) != *mine)
                })
                .unwrap_or_else(|| label.to_string())
        })
        .collect()
}

/// How the lab's links are reported in a warning.
fn fmt_links(links: Option<&LinksView>) -> String {
    let one = |l: &LinkView| {
        let rate = l.rate_bps.map_or("unlimited".to_string(), fmt_rate);
        let mut s = format!("{rate}, {} delay", fmt_ns(l.delay_ns));
        if l.loss_pct > 0.0 {
            s += &format!(", {:.2}% loss", l.loss_pct);
        }
        s
    };
    match links {
        None => "none (no emulated links)".to_string(),
        Some(l) => format!("relay links {}; direct {}", one(&l.relay), one(&l.direct)),
    }
}

fn fmt_ns(ns: u64) -> String {
    humantime::format_duration(Duration::from_nanos(ns)).to_string()
}

/// The settings of `run` that differ from `base`'s, as warnings (names from `unique_names`).
pub fn warnings(base: (&Run, &str), run: (&Run, &str)) -> Vec<Warning> {
    let (b, r) = (&base.0.config, &run.0.config);
    let links = |c: &crate::report::events::ConfigView| fmt_links(c.links.as_ref());
    let settings = [
        ("duration", fmt_ns(r.duration_ns), fmt_ns(b.duration_ns)),
        ("omit", fmt_ns(r.omit_ns), fmt_ns(b.omit_ns)),
        (
            "mode",
            r.mode.as_str().to_string(),
            b.mode.as_str().to_string(),
        ),
        ("links", links(r), links(b)),
        (
            "version",
            run.0.summary.version.to_string(),
            base.0.summary.version.to_string(),
        ),
    ];
    settings
        .into_iter()
        .filter(|(_, value, base_value)| value != base_value)
        .map(|(field, value, baseline_value)| Warning {
            message: format!(
                "{} differs from the baseline {} in {field}: {value} vs {baseline_value}; \
                 its ratio compares different measurements",
                run.1, base.1
            ),
            run: run.1.to_string(),
            baseline: base.1.to_string(),
            field,
            value,
            baseline_value,
        })
        .collect()
}

/// Quantile `q` (0..1) of `v` by nearest rank; `0.0` for no values.
pub fn quantile(v: &[f64], q: f64) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let rank = ((q * s.len() as f64).ceil() as usize).clamp(1, s.len());
    s[rank - 1]
}

/// `a / b`, or `None` when `b` is zero (a ratio to nothing is not a number to print).
pub fn ratio(a: f64, b: f64) -> Option<f64> {
    (b > 0.0).then(|| a / b)
}

/// Reduces a run to its figures (named by its label).
pub fn stats(run: &Run) -> RunStats {
    let s = &run.summary;
    let rates: Vec<f64> = run
        .intervals
        .iter()
        .filter(|i| !i.omitted)
        .map(|i| i.aggregate_bps)
        .collect();
    let set_up = || s.routes.iter().filter(|r| r.state != "setup_failed");
    let route_rates: Vec<f64> = set_up().map(|r| r.mean_bps as f64).collect();
    let mut hops: Vec<usize> = s.routes.iter().map(|r| r.hops).collect();
    hops.sort_unstable();
    hops.dedup();
    let hops = match (hops.first(), hops.last()) {
        (Some(a), Some(b)) if a == b => a.to_string(),
        (Some(a), Some(b)) => format!("{a}-{b}"),
        _ => "-".to_string(),
    };
    let setup_failed = s
        .routes
        .iter()
        .filter(|r| r.state == "setup_failed")
        .count() as u64;
    let pump_failures: u64 = s.routes.iter().map(|r| u64::from(r.failures)).sum();
    let lost: u64 = set_up().map(|r| r.lost_packets).sum();
    let sent: u64 = set_up().map(|r| r.sent_packets).sum();
    let loaded = s.rtt.as_ref().and_then(|rtt| rtt.loaded.as_ref());
    RunStats {
        label: run.label.clone(),
        name: run.label.clone(),
        routes: s.routes_planned as u64,
        hops,
        mean_bps: s.aggregate_bps as f64,
        median_bps: quantile(&rates, 0.5),
        p10_bps: quantile(&rates, 0.1),
        route_min_bps: route_rates.iter().copied().reduce(f64::min).unwrap_or(0.0),
        route_max_bps: route_rates.iter().copied().reduce(f64::max).unwrap_or(0.0),
        failures: setup_failed + pump_failures,
        loaded_rtt_p50_ns: loaded.map(|l| l.p50_ns as f64),
        route_loaded_rtt_p50_ns: route_rtt_range(s),
        first_link_loss: ratio(lost as f64, sent as f64),
        striped_bps: s.stripe.as_ref().map(|st| st.in_order_bps as f64),
        stripe_efficiency: s.stripe.as_ref().map(|st| st.efficiency),
    }
}

/// The spread of the routes' own loaded p50 (`--probe-rtt all`), lowest and highest.
fn route_rtt_range(s: &crate::report::events::Summary) -> Option<(f64, f64)> {
    let p50s: Vec<f64> = s
        .rtt
        .iter()
        .flat_map(|rtt| &rtt.routes)
        .filter_map(|r| r.loaded.as_ref().map(|l| l.p50_ns as f64))
        .collect();
    let lo = p50s.iter().copied().reduce(f64::min)?;
    let hi = p50s.iter().copied().reduce(f64::max)?;
    Some((lo, hi))
}

/// Compares every run with the first, and warns of every setting a run differs in.
pub fn compare(runs: &[Run]) -> Comparison {
    let labels: Vec<&str> = runs.iter().map(|r| r.label.as_str()).collect();
    let names = unique_names(&labels);
    let stats: Vec<RunStats> = runs
        .iter()
        .zip(&names)
        .map(|(run, name)| RunStats {
            name: name.clone(),
            ..stats(run)
        })
        .collect();
    let ratios = match stats.split_first() {
        Some((base, rest)) => rest
            .iter()
            .map(|r| Ratio {
                label: r.label.clone(),
                baseline: base.label.clone(),
                throughput: ratio(r.mean_bps, base.mean_bps),
                loaded_rtt: match (r.loaded_rtt_p50_ns, base.loaded_rtt_p50_ns) {
                    (Some(a), Some(b)) => ratio(a, b),
                    _ => None,
                },
                striped: r
                    .striped_bps
                    .and_then(|x| ratio(x, base.striped_bps.unwrap_or(base.mean_bps))),
            })
            .collect(),
        None => Vec::new(),
    };
    let warnings = match (runs.first(), names.first()) {
        (Some(base), Some(base_name)) => runs
            .iter()
            .zip(&names)
            .skip(1)
            .flat_map(|(run, name)| warnings((base, base_name), (run, name)))
            .collect(),
        _ => Vec::new(),
    };
    Comparison {
        runs: stats,
        ratios,
        warnings,
    }
}

/// The comparison as a table and one sentence per ratio; a ratio over runs that differ in a
/// setting names the settings (the warnings say how).
pub fn render(c: &Comparison) -> String {
    use std::fmt::Write as _;
    let width = c.runs.iter().map(|r| r.name.len()).fold(24, usize::max);
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<width$} {:>6} {:>5} {:>14} {:>14} {:>14} {:>27} {:>8} {:>7} {:>11} {:>19} {:>14} {:>5}",
        "run",
        "routes",
        "hops",
        "mean",
        "median",
        "p10",
        "per-route min..max",
        "failures",
        "loss",
        "loaded p50",
        "per-route p50",
        "striped",
        "eff"
    );
    for r in &c.runs {
        let rtt = r
            .loaded_rtt_p50_ns
            .map_or("-".to_string(), |ns| format!("{:.2} ms", ns / 1e6));
        let loss = r
            .first_link_loss
            .map_or("-".to_string(), |l| format!("{:.2}%", l * 100.0));
        let route_rtt = r
            .route_loaded_rtt_p50_ns
            .map_or("-".to_string(), |(lo, hi)| {
                format!("{:.2}..{:.2} ms", lo / 1e6, hi / 1e6)
            });
        let striped = r.striped_bps.map_or("-".into(), |b| fmt_rate(b as u64));
        let eff = r
            .stripe_efficiency
            .map_or("-".into(), |e| format!("{:.0}%", e * 100.0));
        let _ = writeln!(
            out,
            "{:<width$} {:>6} {:>5} {:>14} {:>14} {:>14} {:>27} {:>8} {:>7} {:>11} {:>19} {:>14} {:>5}",
            r.name,
            r.routes,
            r.hops,
            fmt_rate(r.mean_bps as u64),
            fmt_rate(r.median_bps as u64),
            fmt_rate(r.p10_bps as u64),
            format!(
                "{}..{}",
                fmt_rate(r.route_min_bps as u64),
                fmt_rate(r.route_max_bps as u64)
            ),
            r.failures,
            loss,
            rtt,
            route_rtt,
            striped,
            eff
        );
    }
    for (q, run) in c.ratios.iter().zip(c.runs.iter().skip(1)) {
        let _ = writeln!(out, "{}", ratio_line(c, q, &run.name));
    }
    out
}

/// `b delivered 3.62x a's throughput; loaded p50 RTT 1.40x a's`, and the settings in which
/// `name` differs from the baseline.
fn ratio_line(c: &Comparison, q: &Ratio, name: &str) -> String {
    let base = c.runs.first().map_or("-", |r| r.name.as_str());
    let tp = match q.throughput {
        Some(x) => format!("{name} delivered {x:.2}x {base}'s throughput"),
        None => format!("{name}: {base} moved no data, no ratio"),
    };
    let rtt = q.loaded_rtt.map_or(String::new(), |x| {
        format!("; loaded p50 RTT {x:.2}x {base}'s")
    });
    let striped = q.striped.map_or(String::new(), |x| {
        format!("; its striped transfer arrived in order at {x:.2}x {base}'s throughput")
    });
    let rtt = format!("{rtt}{striped}");
    let differs: Vec<&str> = c
        .warnings
        .iter()
        .filter(|w| w.run == name)
        .map(|w| w.field)
        .collect();
    if differs.is_empty() {
        format!("{tp}{rtt}")
    } else {
        format!("{tp}{rtt} (not comparable: {} differ)", differs.join(", "))
    }
}

#[cfg(test)]
mod tests;
