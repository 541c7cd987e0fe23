//! `mux-bw plot`: a saved run as an SVG: per-route and aggregate throughput over time (the
//! omitted warm-up shaded, each route in its own colour and dash and a few pixels off the
//! others so equal rates stay visible, a route's line ending at its failure, a marker there),
//! and idle vs loaded RTT on a log scale when the run was probed. Pure but for the file.

use std::path::Path;

use plotters::element::DashedPathElement;
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
    let striped = run.intervals.iter().any(|i| i.stripe.is_some());
    let height = 560 + if with_rtt { 340 } else { 0 } + if striped { 300 } else { 0 };
    let root = SVGBackend::new(out, (1200, height)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let (top, rest) = root.split_vertically(560);
    throughput_chart(run, &top).map_err(|e| err(&e))?;
    let rest = if with_rtt {
        let (rtt, rest) = rest.split_vertically(340);
        rtt_chart(run, &rtt).map_err(|e| err(&e))?;
        rest
    } else {
        rest
    };
    if striped {
        buffer_chart(run, &rest).map_err(|e| err(&e))?;
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

/// Room right of each chart for its legend, so the legend never hides a line.
const LEGEND_PX: u32 = 210;

/// A legend entry's sample.
enum Mark {
    /// A line in this style, dashed (dash, gap in px) or solid.
    Line(ShapeStyle, Option<(u32, u32)>),
    /// A filled block (a shaded span).
    Block(RGBColor),
    /// A dot (a probe).
    Dot(RGBColor),
}

/// The legend, in the `LEGEND_PX` right of `area`'s chart (outside it, where it hides no
/// line and nothing clips it): one row per entry, sample then label.
fn draw_legend(area: &Area<'_>, entries: &[(String, Mark)]) -> DrawResult {
    let (w, h) = area.dim_in_pixel();
    let x = w as i32 - LEGEND_PX as i32 + 16;
    let font = ("sans-serif", 13).into_font();
    let rows = (h.saturating_sub(60) / 20) as usize;
    if entries.len() > rows {
        let more = format!("… {} more not listed", entries.len() + 1 - rows);
        let y = 48 + 20 * (rows as i32 - 1);
        area.draw(&Text::new(more, (x, y - 7), font.clone()))?;
    }
    let shown = if entries.len() > rows {
        rows.saturating_sub(1)
    } else {
        rows
    };
    for (row, (label, mark)) in (0i32..).zip(entries.iter().take(shown)) {
        let y = 48 + 20 * row;
        match mark {
            Mark::Line(style, dash) => area.draw(&legend_line(x, y, *dash, *style))?,
            Mark::Block(c) => {
                area.draw(&Rectangle::new([(x, y - 6), (x + 20, y + 6)], c.filled()))?
            }
            Mark::Dot(c) => area.draw(&Circle::new((x + 10, y), 3, c.filled()))?,
        }
        area.draw(&Text::new(label.clone(), (x + 28, y - 7), font.clone()))?;
    }
    Ok(())
}

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
        .margin_right(LEGEND_PX)
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

/// Goodput over time: the omitted warm-up shaded, one line per route (each its own colour and
/// dash, drawn a few pixels apart so equal rates stay visible, ending at the route's failure),
/// the aggregate, and a marker at each route failure.
fn throughput_chart(run: &Run, area: &Area<'_>) -> DrawResult {
    let t_max = run.intervals.last().map_or(1.0, |i| i.t).max(1e-3);
    let y_max = run
        .intervals
        .iter()
        .map(|i| i.aggregate_bps / 1e6)
        .fold(1.0, f64::max)
        * 1.1;
    let title = format!(
        "{}: {} route(s), mode {}{}",
        run.label.rsplit('/').next().unwrap_or(&run.label),
        run.config.routes,
        run.config.mode.as_str(),
        if run.config.routes > 1 {
            " (route lines drawn a few px apart)"
        } else {
            ""
        }
    );
    let mut chart = time_chart(area, &title, 20, t_max, y_max, "goodput (Mbit/s)")?;
    let mut legend = Vec::new();
    if let Some((a, b)) = omitted_span(run) {
        let span = Rectangle::new([(a, 0.0), (b, y_max)], OMITTED.filled());
        chart.draw_series(std::iter::once(span))?;
        legend.push(("warm-up (omitted)".to_string(), Mark::Block(OMITTED)));
    }
    route_lines(&mut chart, run, y_max, &mut legend)?;
    let aggregate = steps(
        run.intervals
            .iter()
            .map(|i| (i.start, i.t, i.aggregate_bps / 1e6)),
    );
    chart.draw_series(LineSeries::new(aggregate, BLACK.stroke_width(3)))?;
    legend.push((
        "aggregate".to_string(),
        Mark::Line(BLACK.stroke_width(3), None),
    ));
    let in_order: Vec<(f64, f64, f64)> = run
        .intervals
        .iter()
        .filter_map(|i| i.stripe.map(|(bps, _)| (i.start, i.t, bps / 1e6)))
        .collect();
    if !in_order.is_empty() {
        let style = IN_ORDER.stroke_width(3);
        chart.draw_series(DashedLineSeries::new(
            steps(in_order.into_iter()),
            10,
            5,
            style,
        ))?;
        legend.push((
            "in order (striped)".to_string(),
            Mark::Line(style, Some((10, 5))),
        ));
    }
    if !run.failures.is_empty() {
        failure_markers(&mut chart, run, y_max)?;
        legend.push((
            "route failure".to_string(),
            Mark::Line(RED.stroke_width(2), None),
        ));
    }
    draw_legend(area, &legend)
}

/// The striped transfer's in-order goodput: dark green, dashed.
const IN_ORDER: RGBColor = RGBColor(0, 110, 50);

/// A striped transfer's reorder buffer over time: the most bytes the destination held beyond
/// the in-order offset in each interval.
fn buffer_chart(run: &Run, area: &Area<'_>) -> DrawResult {
    let t_max = run.intervals.last().map_or(1.0, |i| i.t).max(1e-3);
    let held: Vec<(f64, f64, f64)> = run
        .intervals
        .iter()
        .filter_map(|i| i.stripe.map(|(_, b)| (i.start, i.t, b / 1e6)))
        .collect();
    let y_max = held.iter().map(|h| h.2).fold(0.1, f64::max) * 1.1;
    let title = "striped transfer: reorder buffer held at the destination";
    let mut chart = time_chart(area, title, 18, t_max, y_max, "buffer (MB, interval max)")?;
    let style = IN_ORDER.stroke_width(2);
    chart.draw_series(LineSeries::new(steps(held.into_iter()), style))?;
    draw_legend(
        area,
        &[("reorder buffer".to_string(), Mark::Line(style, None))],
    )
}

/// Fill of the omitted warm-up: light grey.
const OMITTED: RGBColor = RGBColor(215, 215, 215);

/// From the start of the first omitted interval to the end of the last, if any was omitted.
fn omitted_span(run: &Run) -> Option<(f64, f64)> {
    let omitted = || run.intervals.iter().filter(|i| i.omitted);
    let a = omitted().map(|i| i.start).reduce(f64::min)?;
    let b = omitted().map(|i| i.t).reduce(f64::max)?;
    Some((a, b))
}

/// Dash length and gap, in pixels, by style number; `None` is a solid line.
const DASHES: [Option<(u32, u32)>; 4] = [None, Some((12, 5)), Some((5, 4)), Some((2, 3))];

/// Most pixels between the lines of two adjacent routes, and across all of them.
const ROUTE_GAP_PX: f64 = 4.0;
const ROUTE_SPREAD_PX: f64 = 32.0;

/// The `k`-th route's colour and dash: 32 distinct pairs (colour and dash step together for
/// the first 8, then the dash shifts).
fn route_style(k: usize) -> (RGBColor, Option<(u32, u32)>) {
    let color = PALETTE[k % PALETTE.len()];
    let dash = DASHES[(k + k / PALETTE.len()) % DASHES.len()];
    (color, dash)
}

/// Vertical offset in pixels of the `k`-th of `n` routes: centred on the true value, adjacent
/// routes `ROUTE_GAP_PX` apart, all within `ROUTE_SPREAD_PX`.
fn route_offset_px(k: usize, n: usize) -> f64 {
    if n < 2 {
        return 0.0;
    }
    let gap = ROUTE_GAP_PX.min(ROUTE_SPREAD_PX / (n - 1) as f64);
    (k as f64 - (n - 1) as f64 / 2.0) * gap
}

/// Route `idx`'s rate as steps (Mbit/s), in pieces: a piece ends at each of the route's
/// failures (the interval's mean up to the failure time), and the next starts only once the
/// route moves bytes again (a redial); a failed route is not drawn at any rate.
fn route_segments(run: &Run, idx: u32) -> Vec<Vec<(f64, f64)>> {
    let mut failures: Vec<f64> = run
        .failures
        .iter()
        .filter(|(_, r, _)| *r == idx)
        .map(|(t, _, _)| *t)
        .collect();
    failures.sort_by(f64::total_cmp);
    let mut failures = failures.into_iter().peekable();
    let (mut pieces, mut piece, mut down) = (Vec::new(), Vec::new(), false);
    for i in &run.intervals {
        let Some(v) = i
            .routes
            .iter()
            .find(|(r, _)| *r == idx)
            .map(|(_, b)| b / 1e6)
        else {
            continue;
        };
        while failures.next_if(|f| *f <= i.start).is_some() {
            pieces.push(std::mem::take(&mut piece));
            down = true;
        }
        if down && v <= 0.0 {
            continue;
        }
        down = false;
        match failures.next_if(|f| *f <= i.t) {
            Some(f) => {
                piece.extend([(i.start, v), (f, v)]);
                pieces.push(std::mem::take(&mut piece));
                down = true;
            }
            None => piece.extend([(i.start, v), (i.t, v)]),
        }
    }
    pieces.push(piece);
    pieces.retain(|p| !p.is_empty());
    pieces
}

/// One line per route sampled, in route order, labelled with its path.
fn route_lines(
    chart: &mut TimeChart<'_, '_>,
    run: &Run,
    y_max: f64,
    legend: &mut Vec<(String, Mark)>,
) -> DrawResult {
    let mut indices: Vec<u32> = run
        .intervals
        .iter()
        .flat_map(|i| i.routes.iter().map(|(r, _)| *r))
        .collect();
    indices.sort_unstable();
    indices.dedup();
    let height_px = f64::from(chart.plotting_area().dim_in_pixel().1.max(1));
    for (k, idx) in indices.iter().enumerate() {
        let (color, dash) = route_style(k);
        let style = color.stroke_width(2);
        let dy = route_offset_px(k, indices.len()) * y_max / height_px;
        for piece in route_segments(run, *idx) {
            let points = piece.into_iter().map(move |(t, v)| (t, v + dy));
            match dash {
                None => chart.draw_series(LineSeries::new(points, style))?,
                Some((on, off)) => {
                    chart.draw_series(DashedLineSeries::new(points, on, off, style))?
                }
            };
        }
        legend.push((route_label(run, *idx), Mark::Line(style, dash)));
    }
    Ok(())
}

/// A route's legend sample: its colour and dash.
fn legend_line(
    x: i32,
    y: i32,
    dash: Option<(u32, u32)>,
    style: ShapeStyle,
) -> DashedPathElement<std::vec::IntoIter<(i32, i32)>, u32> {
    let (on, off) = dash.unwrap_or((20, 1));
    DashedPathElement::new(vec![(x, y), (x + 20, y)], on, off, style)
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
    chart.draw_series(
        run.failures
            .iter()
            .map(|(t, _, _)| PathElement::new(vec![(*t, 0.0), (*t, y_max)], RED.stroke_width(2))),
    )?;
    chart.draw_series(run.failures.iter().map(|(t, idx, _)| {
        Text::new(
            format!("R{idx} failed"),
            (*t, y_max * 0.97),
            ("sans-serif", 14).into_font().color(&RED),
        )
    }))?;
    Ok(())
}

/// RTT probes over time on a log scale, so a sub-millisecond idle baseline stays readable next
/// to a loaded RTT a hundred times larger; a dashed line at each phase's median.
fn rtt_chart(run: &Run, area: &Area<'_>) -> DrawResult {
    let t_max = run
        .probes
        .iter()
        .map(|p| p.0)
        .fold(run.intervals.last().map_or(1.0, |i| i.t), f64::max)
        .max(1e-3);
    let (lo, hi) = rtt_range(run.probes.iter().map(|p| p.2));
    let mut chart = ChartBuilder::on(area)
        .caption(
            "RTT probes: idle baseline, then under load",
            ("sans-serif", 18),
        )
        .margin(12)
        .margin_right(LEGEND_PX)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(0f64..t_max, (lo..hi).log_scale())?;
    chart
        .configure_mesh()
        .x_desc("time since start (s)")
        .y_desc("RTT (ms, log scale)")
        .y_label_formatter(&|v| fmt_ms(*v))
        .draw()?;
    let mut legend = Vec::new();
    for (phase, label, color) in [
        (ProbePhase::Idle, "idle", PALETTE[2]),
        (ProbePhase::Loaded, "loaded", PALETTE[3]),
    ] {
        let rtts: Vec<(f64, f64)> = run
            .probes
            .iter()
            .filter(|p| p.1 == phase)
            .map(|p| (p.0, p.2.max(lo)))
            .collect();
        let mut values: Vec<f64> = rtts.iter().map(|p| p.1).collect();
        values.sort_by(f64::total_cmp);
        let median = values.get(values.len() / 2).copied();
        chart.draw_series(rtts.into_iter().map(|p| Circle::new(p, 3, color.filled())))?;
        let label = match median {
            Some(m) => format!("{label} (median {})", fmt_ms(m)),
            None => label.to_string(),
        };
        legend.push((label, Mark::Dot(color)));
        if let Some(m) = median {
            let line = [(0.0, m), (t_max, m)];
            chart.draw_series(DashedLineSeries::new(line, 6, 4, color.stroke_width(1)))?;
        }
    }
    draw_legend(area, &legend)
}

/// The RTT axis (ms): from below the fastest probe to above the slowest, at least a decade,
/// never down to zero (a log axis has none).
fn rtt_range(ms: impl Iterator<Item = f64>) -> (f64, f64) {
    let (min, max) = ms
        .filter(|v| v.is_finite() && *v > 0.0)
        .fold((f64::MAX, 0.0f64), |(a, b), v| (a.min(v), b.max(v)));
    if max <= 0.0 {
        return (0.01, 1.0);
    }
    let lo = (min / 1.5).max(1e-3);
    let hi = (max * 1.5).max(lo * 10.0);
    (lo, hi)
}

/// `0.25 ms`, `42 ms`: as many decimals as a log axis label needs.
fn fmt_ms(v: f64) -> String {
    if v >= 10.0 {
        format!("{v:.0} ms")
    } else if v >= 1.0 {
        format!("{v:.1} ms")
    } else if v >= 0.1 {
        format!("{v:.2} ms")
    } else {
        format!("{v:.3} ms")
    }
}

#[cfg(test)]
mod tests;
