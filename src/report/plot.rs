//! `mux-bw plot`: a saved run as an SVG: per-route and aggregate throughput over time with failure
//! markers, and idle vs loaded RTT when the run was probed.

use std::path::Path;

use plotters::prelude::*;

use crate::report::events::ProbePhase;
use crate::report::runfile::Run;

/// Why a plot could not be drawn.
#[derive(Debug, thiserror::Error)]
#[error("cannot draw '{path}': {reason}")]
pub struct PlotError {
    path: String,
    reason: String,
}

const PALETTE: [RGBColor; 8] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(23, 190, 207),
];

/// Draws `run` into an SVG file at `out`.
pub fn plot(run: &Run, out: &Path) -> Result<(), PlotError> {
    let err = |e: &dyn std::fmt::Display| PlotError {
        path: out.display().to_string(),
        reason: e.to_string(),
    };
    let with_rtt = !run.probes.is_empty();
    let height = if with_rtt { 900 } else { 560 };
    let root = SVGBackend::new(out, (1000, height)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let (top, bottom) = if with_rtt {
        let (a, b) = root.split_vertically(560);
        (a, Some(b))
    } else {
        (root.clone(), None)
    };
    throughput_chart(run, &top).map_err(|e| err(&e))?;
    if let Some(area) = bottom {
        rtt_chart(run, &area).map_err(|e| err(&e))?;
    }
    root.present().map_err(|e| err(&e))?;
    Ok(())
}

/// A rate is a mean over its interval: draw it flat across the interval, not as a slope
/// between interval ends.
fn steps(intervals: impl Iterator<Item = (f64, f64, f64)>) -> Vec<(f64, f64)> {
    intervals.flat_map(|(a, b, v)| [(a, v), (b, v)]).collect()
}

type Area<'a> = DrawingArea<SVGBackend<'a>, plotters::coord::Shift>;
type DrawResult = Result<(), Box<dyn std::error::Error>>;

type TimeChart<'a, 'b> = ChartContext<
    'a,
    SVGBackend<'b>,
    Cartesian2d<plotters::coord::types::RangedCoordf64, plotters::coord::types::RangedCoordf64>,
>;

/// A chart with time (s) across and `y_desc` up, mesh drawn.
fn time_chart<'a, 'b>(
    area: &'a Area<'b>,
    title: &str,
    title_size: u32,
    t_max: f64,
    y_max: f64,
    y_desc: &str,
) -> Result<TimeChart<'a, 'b>, Box<dyn std::error::Error>> {
    let mut chart = ChartBuilder::on(area)
        .caption(title, ("sans-serif", title_size))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(0f64..t_max, 0f64..y_max)?;
    chart
        .configure_mesh()
        .x_desc("time since start (s)")
        .y_desc(y_desc)
        .draw()?;
    Ok(chart)
}

/// Goodput over time: one line per route, the aggregate, and a marker at each route failure.
fn throughput_chart(run: &Run, area: &Area<'_>) -> DrawResult {
    let t_max = run.intervals.last().map_or(1.0, |i| i.t).max(1e-3);
    let y_max = run
        .intervals
        .iter()
        .map(|i| i.aggregate_bps / 1e6)
        .fold(1.0, f64::max)
        * 1.1;
    let title = format!(
        "{}: {} route(s), mode {}",
        run.label.rsplit('/').next().unwrap_or(&run.label),
        run.config.routes,
        run.config.mode.as_str()
    );
    let mut chart = time_chart(area, &title, 20, t_max, y_max, "goodput (Mbit/s)")?;
    route_lines(&mut chart, run)?;
    let aggregate = steps(
        run.intervals
            .iter()
            .map(|i| (i.start, i.t, i.aggregate_bps / 1e6)),
    );
    chart
        .draw_series(LineSeries::new(aggregate, BLACK.stroke_width(3)))?
        .label("aggregate")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLACK.stroke_width(3)));
    if !run.failures.is_empty() {
        failure_markers(&mut chart, run, y_max)?;
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;
    Ok(())
}

/// One line per route sampled, in route order, labelled with its path.
fn route_lines(chart: &mut TimeChart<'_, '_>, run: &Run) -> DrawResult {
    let mut indices: Vec<u32> = run
        .intervals
        .iter()
        .flat_map(|i| i.routes.iter().map(|(r, _)| *r))
        .collect();
    indices.sort_unstable();
    indices.dedup();
    for (k, idx) in indices.iter().enumerate() {
        let color = PALETTE[k % PALETTE.len()];
        let points: Vec<(f64, f64)> = steps(run.intervals.iter().filter_map(|i| {
            i.routes
                .iter()
                .find(|(r, _)| r == idx)
                .map(|(_, bps)| (i.start, i.t, bps / 1e6))
        }));
        chart
            .draw_series(LineSeries::new(points, color.stroke_width(2)))?
            .label(route_label(run, *idx))
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
    }
    Ok(())
}

/// `R2 via a,b` (the intermediates' short ids), `R2 direct`, or `R2` when no path was seen.
fn route_label(run: &Run, idx: u32) -> String {
    match run.paths.get(&idx) {
        Some(path) => {
            let mids: Vec<&str> = path[..path.len().saturating_sub(1)]
                .iter()
                .map(|n| n.get(..8).unwrap_or(n))
                .collect();
            if mids.is_empty() {
                format!("R{idx} direct")
            } else {
                format!("R{idx} via {}", mids.join(","))
            }
        }
        None => format!("R{idx}"),
    }
}

/// A red vertical line at each route failure, with `R<i> failed` at its top.
fn failure_markers(chart: &mut TimeChart<'_, '_>, run: &Run, y_max: f64) -> DrawResult {
    chart
        .draw_series(
            run.failures.iter().map(|(t, _, _)| {
                PathElement::new(vec![(*t, 0.0), (*t, y_max)], RED.stroke_width(2))
            }),
        )?
        .label("route failure")
        .legend(|(x, y)| {
            PathElement::new(vec![(x + 10, y - 8), (x + 10, y + 8)], RED.stroke_width(2))
        });
    chart.draw_series(run.failures.iter().map(|(t, idx, _)| {
        Text::new(
            format!("R{idx} failed"),
            (*t, y_max * 0.97),
            ("sans-serif", 14).into_font().color(&RED),
        )
    }))?;
    Ok(())
}

fn rtt_chart(run: &Run, area: &Area<'_>) -> DrawResult {
    let t_max = run
        .probes
        .iter()
        .map(|p| p.0)
        .fold(run.intervals.last().map_or(1.0, |i| i.t), f64::max)
        .max(1e-3);
    let y_max = run.probes.iter().map(|p| p.2).fold(0.1, f64::max) * 1.1;
    let title = "RTT probes: idle baseline, then under load";
    let mut chart = time_chart(area, title, 18, t_max, y_max, "RTT (ms)")?;
    for (phase, label, color) in [
        (ProbePhase::Idle, "idle", PALETTE[2]),
        (ProbePhase::Loaded, "loaded", PALETTE[3]),
    ] {
        let points: Vec<(f64, f64)> = run
            .probes
            .iter()
            .filter(|p| p.1 == phase)
            .map(|p| (p.0, p.2))
            .collect();
        chart
            .draw_series(
                points
                    .into_iter()
                    .map(|p| Circle::new(p, 3, color.filled())),
            )?
            .label(label)
            .legend(move |(x, y)| Circle::new((x + 10, y), 3, color.filled()));
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;
    Ok(())
}
