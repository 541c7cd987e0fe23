//! `mux-bw sweep`: the matrix of cells (routes x min-hops x mode), each run K times, reduced to
//! mean ± stddev per cell with its ratio to the first cell. Pure: the CLI runs the cells and
//! hands over what the saved NDJSON files say; this module does the arithmetic and the tables.

use std::fmt::Write as _;

use serde::Serialize;

use crate::report::human::fmt_rate_pm;
use crate::wire::mode::Mode;

/// One cell of the matrix.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Cell {
    /// Routes.
    pub routes: usize,
    /// Minimum hops.
    pub min_hops: usize,
    /// Data pattern.
    pub mode: Mode,
}

impl Cell {
    /// File-name friendly name, e.g. `r4-h2-up`.
    pub fn slug(&self) -> String {
        format!("r{}-h{}-{}", self.routes, self.min_hops, self.mode.as_str())
    }
}

/// What one run of a cell gave.
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    /// Aggregate goodput (bits/s), failures (route failures + routes never set up), the
    /// share of first-link packets lost (`None` for runs that did not count them) and the
    /// routes established, as read back from the run's saved NDJSON.
    Measured {
        bps: f64,
        failures: u64,
        loss: Option<f64>,
        routes: usize,
    },
    /// The run could not measure anything; why.
    Failed(String),
}

/// The figures of one cell over its runs.
#[derive(Clone, Debug, Serialize)]
pub struct CellStats {
    /// Which cell.
    #[serde(flatten)]
    pub cell: Cell,
    /// Runs attempted.
    pub runs: usize,
    /// Runs that measured every planned route: the only ones averaged.
    pub measured: usize,
    /// Routes established in each run that got fewer than planned (PARTIAL runs, never
    /// averaged with whole ones).
    pub partial_runs: Vec<usize>,
    /// Mean aggregate goodput over the measured runs, bits/s.
    pub mean_bps: Option<f64>,
    /// Sample standard deviation over the measured runs, bits/s (0 for one run).
    pub stddev_bps: Option<f64>,
    /// Route failures and unestablished routes, summed over runs.
    pub failures: u64,
    /// Mean over the measured runs of the share of first-link packets lost (see `compare`).
    pub first_link_loss: Option<f64>,
    /// Mean over the first cell's mean.
    pub ratio_to_first: Option<f64>,
    /// Why runs failed, if any did.
    pub errors: Vec<String>,
}

/// Mean and sample standard deviation; `None` for no values.
pub fn mean_stddev(v: &[f64]) -> Option<(f64, f64)> {
    if v.is_empty() {
        return None;
    }
    let n = v.len() as f64;
    let mean = v.iter().sum::<f64>() / n;
    let var = if v.len() > 1 {
        v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0)
    } else {
        0.0
    };
    Some((mean, var.sqrt()))
}

/// Reduces every cell's outcomes; ratios are to the first cell.
pub fn stats(cells: &[(Cell, Vec<Outcome>)]) -> Vec<CellStats> {
    let mut out: Vec<CellStats> = cells
        .iter()
        .map(|(cell, outcomes)| {
            let whole = |o: &&Outcome| matches!(o, Outcome::Measured { routes, .. } if *routes >= cell.routes);
            let rates: Vec<f64> = outcomes
                .iter()
                .filter(whole)
                .filter_map(|o| match o {
                    Outcome::Measured { bps, .. } => Some(*bps),
                    Outcome::Failed(_) => None,
                })
                .collect();
            let ms = mean_stddev(&rates);
            let losses: Vec<f64> = outcomes
                .iter()
                .filter(whole)
                .filter_map(|o| match o {
                    Outcome::Measured { loss, .. } => *loss,
                    Outcome::Failed(_) => None,
                })
                .collect();
            let partial_runs = outcomes
                .iter()
                .filter_map(|o| match o {
                    Outcome::Measured { routes, .. } if *routes < cell.routes => Some(*routes),
                    _ => None,
                })
                .collect();
            CellStats {
                cell: *cell,
                runs: outcomes.len(),
                measured: rates.len(),
                partial_runs,
                mean_bps: ms.map(|m| m.0),
                stddev_bps: ms.map(|m| m.1),
                failures: outcomes
                    .iter()
                    .map(|o| match o {
                        Outcome::Measured { failures, .. } => *failures,
                        Outcome::Failed(_) => 0,
                    })
                    .sum(),
                first_link_loss: mean_stddev(&losses).map(|m| m.0),
                ratio_to_first: None,
                errors: outcomes
                    .iter()
                    .filter_map(|o| match o {
                        Outcome::Failed(e) => Some(e.clone()),
                        Outcome::Measured { .. } => None,
                    })
                    .collect(),
            }
        })
        .collect();
    let first = out.first().and_then(|c| c.mean_bps);
    for c in &mut out {
        c.ratio_to_first = match (c.mean_bps, first) {
            (Some(m), Some(f)) => crate::report::compare::ratio(m, f),
            _ => None,
        };
    }
    out
}

fn cell_text(c: &CellStats) -> String {
    let mut t = match (c.mean_bps, c.stddev_bps) {
        (Some(m), Some(sd)) => fmt_rate_pm(m, sd),
        _ if !c.partial_runs.is_empty() => String::new(),
        _ => "FAILED".to_string(),
    };
    if !c.partial_runs.is_empty() {
        let got: Vec<String> = c.partial_runs.iter().map(usize::to_string).collect();
        let sep = if t.is_empty() { "" } else { " " };
        let _ = write!(
            t,
            "{sep}PARTIAL ({} of {} routes)",
            got.join(","),
            c.cell.routes
        );
    }
    if let Some(r) = c.ratio_to_first {
        let _ = write!(t, " ({r:.2}x)");
    }
    if c.failures > 0 {
        let _ = write!(t, " f={}", c.failures);
    }
    // Shown once it rounds to something: most cells on clean links lose nothing worth a column.
    if let Some(l) = c.first_link_loss.filter(|l| *l >= 0.00005) {
        let _ = write!(t, " loss {:.2}%", l * 100.0);
    }
    if c.measured < c.runs && c.measured > 0 {
        let _ = write!(t, " {}/{} runs", c.measured, c.runs);
    }
    t
}

/// Columns are (min-hops, mode) pairs in the order seen; rows are route counts.
fn layout(stats: &[CellStats]) -> (Vec<usize>, Vec<(usize, Mode)>) {
    let mut rows = Vec::new();
    let mut cols = Vec::new();
    for c in stats {
        if !rows.contains(&c.cell.routes) {
            rows.push(c.cell.routes);
        }
        let col = (c.cell.min_hops, c.cell.mode);
        if !cols.contains(&col) {
            cols.push(col);
        }
    }
    (rows, cols)
}

fn find(stats: &[CellStats], routes: usize, (h, m): (usize, Mode)) -> Option<&CellStats> {
    stats
        .iter()
        .find(|c| c.cell.routes == routes && c.cell.min_hops == h && c.cell.mode == m)
}

/// The matrix as a text table (rows: routes; columns: min-hops/mode), then the failed cells'
/// reasons. Rates are aggregate means ± stddev (Mbit/s) with the ratio to the first cell.
pub fn render(stats: &[CellStats]) -> String {
    let (rows, cols) = layout(stats);
    let width = 44;
    let mut out = format!("{:<8}", "routes");
    for (h, m) in &cols {
        let _ = write!(out, " {:<width$}", format!("min-hops {h}, {}", m.as_str()));
    }
    out.push('\n');
    for r in rows {
        let _ = write!(out, "{r:<8}");
        for col in &cols {
            let text = find(stats, r, *col).map_or("-".to_string(), cell_text);
            let _ = write!(out, " {text:<width$}");
        }
        out.push('\n');
    }
    for c in stats.iter().filter(|c| !c.errors.is_empty()) {
        let _ = writeln!(out, "{}: {}", c.cell.slug(), c.errors.join("; "));
    }
    out
}

/// The matrix as a Markdown table.
pub fn markdown(stats: &[CellStats]) -> String {
    let (rows, cols) = layout(stats);
    let mut out = String::from("| routes |");
    for (h, m) in &cols {
        let _ = write!(out, " min-hops {h}, {} |", m.as_str());
    }
    out.push_str("\n|---:|");
    for _ in &cols {
        out.push_str("---|");
    }
    out.push('\n');
    for r in rows {
        let _ = write!(out, "| {r} |");
        for col in &cols {
            let text = find(stats, r, *col).map_or("-".to_string(), cell_text);
            let _ = write!(out, " {text} |");
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cell(routes: usize, min_hops: usize) -> Cell {
        Cell {
            routes,
            min_hops,
            mode: Mode::Up,
        }
    }

    #[test]
    fn mean_and_sample_stddev() {
        assert_eq!(mean_stddev(&[]), None);
        assert_eq!(mean_stddev(&[5.0]), Some((5.0, 0.0)));
        let (m, sd) = mean_stddev(&[2.0, 4.0, 4.0, 4.0, 5.0, 5.0, 7.0, 9.0]).unwrap();
        assert_eq!(m, 5.0);
        assert!((sd - 2.138).abs() < 1e-3, "{sd}");
    }

    #[test]
    fn matrix_with_ratios_and_a_failed_cell() {
        let measured = |bps: f64, failures: u64| Outcome::Measured {
            bps,
            failures,
            loss: Some(0.0),
            routes: 1,
        };
        let lossy = |bps: f64, loss: f64| Outcome::Measured {
            bps,
            failures: 0,
            loss: Some(loss),
            routes: 2,
        };
        let cells = vec![
            (cell(1, 1), vec![measured(50e6, 0), measured(52e6, 0)]),
            (cell(1, 2), vec![measured(48e6, 0), measured(49e6, 1)]),
            (cell(2, 1), vec![lossy(100e6, 0.01), lossy(102e6, 0.03)]),
            (
                cell(2, 2),
                vec![Outcome::Failed("needs 2 disjoint relays, 1 given".into()); 2],
            ),
        ];
        let s = stats(&cells);
        assert_eq!(s[0].ratio_to_first, Some(1.0));
        assert!((s[2].ratio_to_first.unwrap() - 101.0 / 51.0).abs() < 1e-9);
        assert_eq!(s[1].failures, 1);
        assert_eq!(s[3].mean_bps, None);
        let text = render(&s);
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].contains("min-hops 1, up") && lines[0].contains("min-hops 2, up"));
        assert!(
            lines[1].starts_with("1 ") && lines[1].contains("51.0 ± 1.4 Mbit/s (1.00x)"),
            "{text}"
        );
        assert!(lines[2].contains("FAILED"), "{text}");
        assert_eq!(s[2].first_link_loss, Some(0.02));
        assert!(
            lines[2].contains("(1.98x) loss 2.00%") && !lines[1].contains("loss"),
            "{text}"
        );
        assert!(text.contains("r2-h2-up: needs 2 disjoint relays"), "{text}");
        let md = markdown(&s);
        assert!(
            md.starts_with("| routes | min-hops 1, up | min-hops 2, up |\n|---:|---|---|\n"),
            "{md}"
        );
    }

    /// A sweep once averaged runs of 200, 124 and 33 routes into one "200 routes" cell.
    #[test]
    fn runs_with_fewer_routes_than_planned_are_partial_and_never_averaged() {
        let run = |bps: f64, routes: usize| Outcome::Measured {
            bps,
            failures: 0,
            loss: None,
            routes,
        };
        let cells = vec![
            (
                cell(200, 1),
                vec![run(4.2e9, 200), run(2.9e9, 124), run(1.1e9, 33)],
            ),
            (cell(4, 1), vec![run(1e9, 3)]),
        ];
        let s = stats(&cells);
        assert_eq!(s[0].measured, 1);
        assert_eq!(s[0].mean_bps, Some(4.2e9));
        assert_eq!(s[0].partial_runs, vec![124, 33]);
        assert_eq!(s[1].mean_bps, None);
        let text = render(&s);
        assert!(text.contains("PARTIAL (124,33 of 200 routes)"), "{text}");
        assert!(
            text.contains("PARTIAL (3 of 4 routes)") && !text.contains("FAILED"),
            "{text}"
        );
    }
}
