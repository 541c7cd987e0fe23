//! Human output with an optional live view on stderr, with event lines printed above it: a
//! header with the load's elapsed and remaining time, one line per route in route-index order
//! (a bar, rate, bytes, state; a failure shown the moment it is reported), and a total line,
//! each at most 80 columns. What the view shows is kept and formatted by `LiveModel` (pure,
//! unit-tested); indicatif only draws its lines. Only the human view uses indicatif.

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::Mutex;
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::report::events::{Event, RouteState, Sample};
use crate::report::human::{self, fmt_bytes, fmt_rate};
use crate::wire::mode::Mode;

/// Widest line the live view draws: an 80-column terminal never wraps it.
pub const WIDTH: usize = 80;

/// Cells between the brackets of a route's bar.
const BAR_CELLS: usize = 16;

/// Renders events for people: lines on stderr, the summary table on stdout, and bars when live.
pub struct HumanView {
    live: Option<Live>,
    /// The run's mode, from its `start`: which way sample figures count.
    mode: Mutex<Mode>,
}

/// The live view: the model and one indicatif line per model line.
struct Live {
    multi: MultiProgress,
    /// The model and the bars drawing its lines; locked only to update and redraw them.
    state: Mutex<(LiveModel, Vec<ProgressBar>)>,
}

impl HumanView {
    /// `live`: draw the live view (callers pass true only when stderr is a terminal, or for
    /// `--live always`).
    pub fn new(live: bool) -> Self {
        HumanView {
            live: live.then(|| Live {
                multi: MultiProgress::with_draw_target(ProgressDrawTarget::stderr()),
                state: Mutex::new((LiveModel::default(), Vec::new())),
            }),
            mode: Mutex::new(Mode::Up),
        }
    }

    /// Shows one event: lines (and bars) on stderr, ignoring errors there (nowhere to report
    /// them). Returns what goes to stdout, the summary table, for the caller to write.
    pub fn show(&self, event: &Event, t: Duration) -> Option<String> {
        if let Event::ScanSummary(s) = event {
            return Some(crate::report::scan::table(s));
        }
        if let Event::Summary(s) = event {
            if let Some(live) = &self.live {
                let _ = live.multi.clear();
            }
            return Some(human::summary_table(s) + "\n");
        }
        let mode = {
            let mut mode = self.mode.lock().unwrap_or_else(|p| p.into_inner());
            if let Event::Start(s) = event {
                *mode = s.config.mode;
            }
            *mode
        };
        if let Some(live) = &self.live {
            live.update(event, t);
        }
        if let Some(line) = human::line(event, t, mode) {
            match &self.live {
                // Hidden when stderr is not a terminal (even with --live always): print plainly.
                Some(live) if !live.multi.is_hidden() => {
                    let _ = live.multi.println(line);
                }
                _ => {
                    let _ = writeln!(std::io::stderr(), "{line}");
                }
            }
        }
        None
    }
}

impl Live {
    /// Applies `event` to the model and redraws every line (adding a bar per new line).
    fn update(&self, event: &Event, t: Duration) {
        // Critical sections are one update and redraw; a poisoned lock is still usable.
        let mut guard = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let (model, bars) = &mut *guard;
        model.tick(t);
        model.apply(event);
        let lines = model.lines(WIDTH);
        while bars.len() < lines.len() {
            // invariant: the template is a constant known to parse.
            let style = ProgressStyle::with_template("{msg}").expect("valid template");
            bars.push(self.multi.add(ProgressBar::new(1).with_style(style)));
        }
        for (bar, line) in bars.iter().zip(lines) {
            bar.set_message(line);
        }
    }
}

/// What the live view shows, kept from the events. Pure.
#[derive(Debug, Default)]
pub struct LiveModel {
    /// Routes asked for, from `start`.
    planned: usize,
    /// Warm-up and measured load, from `start`.
    omit_ns: u64,
    duration_ns: u64,
    /// When the load started (the first sample's start) and the latest sample's end, since
    /// the run started.
    load_start_ns: Option<u64>,
    now_ns: u64,
    /// By route index, so lines come in route order whatever order setups finish in.
    routes: BTreeMap<u32, Row>,
    /// The run's direction, from `start`: which way a route's rate counts.
    mode: Mode,
    /// The latest sample's totals.
    total: Option<Total>,
}

/// One route's line.
#[derive(Clone, Debug, PartialEq)]
struct Row {
    state: RowState,
    rate_bps: u64,
    sent: u64,
    received: u64,
    /// Share of the bar to fill (0..=1): the rate over the fastest route's in the sample.
    fill: f64,
}

#[derive(Clone, Debug, PartialEq)]
enum RowState {
    /// Set up; no sample yet.
    Established(usize),
    Up,
    Stalled,
    /// The pump failed (the error), until a redial brings the route back.
    Failed(String),
    /// Never set up (the error).
    SetupFailed(String),
}

#[derive(Clone, Debug, PartialEq)]
struct Total {
    active: usize,
    aggregate_bps: u64,
    sent: u64,
    received: u64,
}

impl Row {
    fn new(state: RowState) -> Self {
        Row {
            state,
            rate_bps: 0,
            sent: 0,
            received: 0,
            fill: 0.0,
        }
    }
}

impl LiveModel {
    /// Moves the clock to `t` since the run started (any event's time), so the time left
    /// counts down between samples too (probes come every `--probe-interval`).
    pub fn tick(&mut self, t: Duration) {
        self.now_ns = self.now_ns.max(t.as_nanos() as u64);
    }

    /// Takes in one event.
    pub fn apply(&mut self, event: &Event) {
        match event {
            Event::Start(s) => {
                self.planned = s.config.routes;
                self.mode = s.config.mode;
                self.omit_ns = s.config.omit_ns;
                self.duration_ns = s.config.duration_ns;
            }
            Event::RouteEstablished(e) => self.set_up(e.route_index, e.hops),
            Event::RouteRedial(e) => self.set_up(e.route_index, e.hops),
            Event::RouteSetupFailed(e) => {
                let row = self.routes.entry(e.route_index);
                let row = row.or_insert_with(|| Row::new(RowState::SetupFailed(String::new())));
                row.state = match row.state {
                    // A redial attempt of a failed route that failed in turn: still FAILED.
                    RowState::Failed(_) => RowState::Failed(e.error.clone()),
                    RowState::Up | RowState::Stalled => return,
                    _ => RowState::SetupFailed(e.error.clone()),
                };
            }
            Event::RouteFailure(f) => {
                let row = self.row(f.route_index);
                row.state = RowState::Failed(f.error.clone());
                row.rate_bps = 0;
                row.fill = 0.0;
                row.sent = row.sent.max(f.bytes_sent_before_failure);
                row.received = row.received.max(f.bytes_received_before_failure);
            }
            Event::RouteStalled(s) => {
                let row = self.row(s.route_index);
                if matches!(row.state, RowState::Up | RowState::Established(_)) {
                    row.state = RowState::Stalled;
                }
            }
            Event::Sample(s) => self.sample(s),
            _ => {}
        }
    }

    fn row(&mut self, index: u32) -> &mut Row {
        self.routes
            .entry(index)
            .or_insert_with(|| Row::new(RowState::Up))
    }

    fn set_up(&mut self, index: u32, hops: usize) {
        let row = self.row(index);
        row.state = RowState::Established(hops);
        row.rate_bps = 0;
        row.fill = 0.0;
    }

    fn sample(&mut self, s: &Sample) {
        self.load_start_ns.get_or_insert(s.interval_start_ns);
        self.now_ns = self.now_ns.max(s.interval_end_ns);
        // Each route's rate counted the way the sample's total is.
        let mode = self.mode;
        let rate = |r: &crate::report::events::RouteSample| match mode {
            Mode::Up => r.sent_bps,
            Mode::Down | Mode::Echo => r.received_bps,
            Mode::Bidir => r.sent_bps + r.received_bps,
        };
        let fastest = s.routes.iter().map(rate).max().unwrap_or(0).max(1);
        for r in &s.routes {
            // Routes that never came up have their line from their setup events, not samples.
            if matches!(r.state, RouteState::Pending | RouteState::SetupFailed) {
                continue;
            }
            let row = self.row(r.route_index);
            row.sent = r.bytes_sent;
            row.received = r.bytes_received;
            let failed = matches!(row.state, RowState::Failed(_));
            match r.state {
                // A failure stays marked (rate 0) until a redial, whatever the interval moved.
                _ if failed => continue,
                RouteState::Failed => row.state = RowState::Failed(String::new()),
                RouteState::Stalled => row.state = RowState::Stalled,
                RouteState::Up => row.state = RowState::Up,
                RouteState::Pending | RouteState::SetupFailed => {}
            }
            if matches!(row.state, RowState::Failed(_)) {
                row.rate_bps = 0;
                row.fill = 0.0;
            } else {
                row.rate_bps = rate(r);
                row.fill = row.rate_bps as f64 / fastest as f64;
            }
        }
        self.total = Some(Total {
            active: s.active_routes,
            aggregate_bps: s.aggregate_bps,
            sent: s
                .routes
                .iter()
                .fold(0, |n, r| n.saturating_add(r.bytes_sent)),
            received: s
                .routes
                .iter()
                .fold(0, |n, r| n.saturating_add(r.bytes_received)),
        });
    }

    /// The view's lines, each at most `width` columns: the header, one line per route in
    /// route-index order, and the total once a sample came in.
    pub fn lines(&self, width: usize) -> Vec<String> {
        let mut lines = vec![fit(&self.header(), width)];
        for (index, row) in &self.routes {
            lines.push(route_line(*index, row, width));
        }
        if let Some(t) = &self.total {
            let line = format!(
                "total {:>3}/{:<3} up {:>13}  {:>9} sent  {:>9} recv",
                t.active,
                self.planned.max(self.routes.len()),
                fmt_rate(t.aggregate_bps),
                fmt_bytes(t.sent),
                fmt_bytes(t.received)
            );
            lines.push(fit(&line, width));
        }
        lines
    }

    /// `setting up: 2/4 routes` before the load, then the load's elapsed time of its whole
    /// length, the part that is warm-up, and the time left.
    fn header(&self) -> String {
        let Some(start) = self.load_start_ns else {
            let done = self.routes.len();
            return format!("setting up: {done}/{} routes", self.planned);
        };
        let total = self.omit_ns + self.duration_ns;
        let elapsed = self.now_ns.saturating_sub(start).min(total);
        let left = total - elapsed;
        let phase = if elapsed < self.omit_ns {
            "warm-up"
        } else {
            "measuring"
        };
        let warm = if self.omit_ns > 0 {
            format!(" (first {} omitted)", secs(self.omit_ns))
        } else {
            String::new()
        };
        format!(
            "{phase}: {} of {}{warm}, {} left",
            secs(elapsed),
            secs(total),
            secs(left)
        )
    }
}

/// `R3  [=========>      ]   19.5 Mbit/s     7.1MB sent      0B recv  up`, or the failure in
/// place of the figures, at most `width` columns.
fn route_line(index: u32, row: &Row, width: usize) -> String {
    let filled = ((row.fill.clamp(0.0, 1.0) * BAR_CELLS as f64).round() as usize).min(BAR_CELLS);
    let bar = match filled {
        0 => " ".repeat(BAR_CELLS),
        n => format!("{}>{}", "=".repeat(n - 1), " ".repeat(BAR_CELLS - n)),
    };
    let figures = |state: &str| {
        format!(
            "{:>13}  {:>9} sent  {:>9} recv  {state}",
            fmt_rate(row.rate_bps),
            fmt_bytes(row.sent),
            fmt_bytes(row.received)
        )
    };
    let tail = match &row.state {
        RowState::Established(hops) => format!("established, {hops} hops"),
        RowState::Up => figures("up"),
        RowState::Stalled => figures("STALLED"),
        RowState::Failed(e) if e.is_empty() => "FAILED".to_string(),
        RowState::Failed(e) => format!("FAILED: {e}"),
        RowState::SetupFailed(e) => format!("SETUP FAILED: {e}"),
    };
    fit(&format!("{:<4} [{bar}] {tail}", format!("R{index}")), width)
}

/// `s` cut to `width` columns (characters), ending in `…` when cut.
pub fn fit(s: &str, width: usize) -> String {
    if s.chars().count() <= width {
        return s.to_string();
    }
    let mut cut: String = s.chars().take(width.saturating_sub(1)).collect();
    cut.push('…');
    cut
}

/// Nanoseconds as `2.5s`.
fn secs(ns: u64) -> String {
    format!("{:.1}s", ns as f64 / 1e9)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::events::{RouteEstablished, RouteFailure, RouteSetupFailed};
    use crate::report::fixtures::{route_sample, sample, start};
    use crate::wire::close::Cause;
    use crate::wire::mode::Mode;

    const S: u64 = 1_000_000_000;

    fn established(route_index: u32) -> Event {
        Event::RouteEstablished(RouteEstablished {
            route_index,
            path: vec!["r".into(), "d".into()],
            hops: 2,
            setup_ns: 1,
        })
    }

    fn failure(route_index: u32, error: &str) -> Event {
        Event::RouteFailure(RouteFailure {
            route_index,
            error: error.into(),
            cause: Cause::Killed,
            bytes_sent_before_failure: 5,
            bytes_received_before_failure: 0,
            elapsed_ns: 1,
            failed_hop: Some(0),
            node: None,
        })
    }

    /// A model after `start` (3 routes, 1 s warm-up + 3 s) and `events`.
    fn model(events: &[Event]) -> LiveModel {
        let mut m = LiveModel::default();
        let mut start = start(Mode::Up, 3);
        if let Event::Start(s) = &mut start {
            s.config.omit_ns = S;
        }
        m.apply(&start);
        for e in events {
            m.apply(e);
        }
        m
    }

    /// A sample of routes 0..3 at `rates`, ending `end` s after a load that started at 0.5 s.
    fn rates(end: u64, rates: [u64; 3]) -> Event {
        let routes = (0..3)
            .map(|r| route_sample(r, rates[r as usize], 0))
            .collect();
        let mut e = sample(S / 2 + end * S, rates.iter().sum(), routes);
        if let Event::Sample(s) = &mut e {
            s.interval_start_ns = S / 2 + (end - 1) * S;
        }
        e
    }

    #[test]
    fn routes_come_in_index_order_whatever_order_they_set_up_in() {
        let m = model(&[established(2), established(0), established(1)]);
        let lines = m.lines(WIDTH);
        assert_eq!(lines[0], "setting up: 3/3 routes");
        let names: Vec<&str> = lines[1..].iter().map(|l| &l[..2]).collect();
        assert_eq!(names, ["R0", "R1", "R2"], "{lines:#?}");
        assert!(lines[1].ends_with("established, 2 hops"), "{}", lines[1]);
    }

    #[test]
    fn a_failure_shows_at_once_and_stays_until_a_redial() {
        let mut m = model(&[established(0), established(1), established(2)]);
        m.apply(&rates(1, [20_000_000, 20_000_000, 10_000_000]));
        assert!(
            m.lines(WIDTH)[2].contains("19.9 Mbit/s") || m.lines(WIDTH)[2].contains("20.0 Mbit/s")
        );
        m.apply(&failure(1, "connection lost: node killed"));
        let line = &m.lines(WIDTH)[2];
        assert_eq!(
            line,
            "R1   [                ] FAILED: connection lost: node killed"
        );
        // The next sample still carries the bytes of the interval the route died in.
        let mut next = rates(2, [20_000_000, 3_000_000, 20_000_000]);
        if let Event::Sample(s) = &mut next {
            s.routes[1].state = RouteState::Failed;
        }
        m.apply(&next);
        assert!(
            m.lines(WIDTH)[2].starts_with("R1   [                ] FAILED"),
            "{:?}",
            m.lines(WIDTH)
        );
        m.apply(&Event::RouteSetupFailed(RouteSetupFailed {
            route_index: 1,
            failed_hop: Some(0),
            node: None,
            error: "refused".into(),
            cause: Cause::Refused,
            path: vec![],
        }));
        assert!(
            m.lines(WIDTH)[2].ends_with("] FAILED: refused"),
            "{:?}",
            m.lines(WIDTH)
        );
        m.apply(&established(1));
        assert!(m.lines(WIDTH)[2].ends_with("established, 2 hops"));
    }

    #[test]
    fn header_counts_down_and_total_sums_the_routes() {
        let mut m = model(&[established(0), established(1), established(2)]);
        m.omit_ns = 2 * S;
        m.apply(&rates(1, [40_000_000, 20_000_000, 0]));
        let lines = m.lines(WIDTH);
        assert_eq!(
            lines[0],
            "warm-up: 1.0s of 5.0s (first 2.0s omitted), 4.0s left"
        );
        assert!(
            lines[1].starts_with("R0   [===============>] "),
            "{}",
            lines[1]
        );
        assert!(
            lines[2].starts_with("R1   [=======>        ] "),
            "{}",
            lines[2]
        );
        assert_eq!(
            lines[4],
            "total   3/3   up   60.0 Mbit/s        30B sent        60B recv"
        );
        m.apply(&rates(3, [1, 1, 1]));
        assert_eq!(
            m.lines(WIDTH)[0],
            "measuring: 3.0s of 5.0s (first 2.0s omitted), 2.0s left"
        );
        m.tick(Duration::from_millis(4_200));
        assert_eq!(
            m.lines(WIDTH)[0],
            "measuring: 3.7s of 5.0s (first 2.0s omitted), 1.3s left"
        );
        m.apply(&rates(6, [1, 1, 1]));
        assert!(m.lines(WIDTH)[0].ends_with(", 0.0s left"));
    }

    #[test]
    fn every_line_fits_80_columns() {
        let huge = u64::MAX / 4;
        let mut m = model(&[established(999_999)]);
        let mut e = rates(1, [huge, huge, huge]);
        if let Event::Sample(s) = &mut e {
            for r in &mut s.routes {
                r.bytes_sent = huge;
                r.bytes_received = huge;
            }
            s.routes[0].state = RouteState::Stalled;
        }
        m.apply(&e);
        m.apply(&failure(2, &"a very long error message ".repeat(10)));
        m.apply(&Event::RouteSetupFailed(RouteSetupFailed {
            route_index: 7,
            failed_hop: None,
            node: None,
            error: "x".repeat(200),
            cause: Cause::Refused,
            path: vec![],
        }));
        let lines = m.lines(WIDTH);
        assert_eq!(lines.len(), 1 + 5 + 1, "{lines:#?}");
        for l in &lines {
            assert!(
                l.chars().count() <= WIDTH,
                "{} columns: {l}",
                l.chars().count()
            );
        }
        assert!(lines.iter().any(|l| l.ends_with('…')), "{lines:#?}");
        // An ordinary line is not cut.
        let m = model(&[established(0)]);
        let mut m = m;
        m.apply(&rates(1, [599_400_000, 0, 0]));
        let line = &m.lines(WIDTH)[1];
        assert!(
            line.ends_with("  up") && line.chars().count() <= WIDTH,
            "{line}"
        );
        assert_eq!(fit("abcdef", 4), "abc…");
    }
}
