//! Human output with an optional live view: one indicatif bar per route (rate, bytes, state) on
//! stderr, with event lines printed above the bars. Only the human view uses indicatif.

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::Mutex;
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::report::events::{Event, RouteEstablished, RouteRedial, RouteSample, RouteState};
use crate::report::human::{self, fmt_bytes, fmt_rate};
use crate::wire::mode::Mode;

/// Renders events for people: lines on stderr, the summary table on stdout, and bars when live.
pub struct HumanView {
    live: Option<Live>,
    /// The run's mode, from its `start`: which way sample figures count.
    mode: Mutex<Mode>,
}

struct Live {
    multi: MultiProgress,
    /// Bar per route index; locked only to look up or add a bar.
    bars: Mutex<BTreeMap<u32, ProgressBar>>,
}

impl HumanView {
    /// `live`: draw per-route bars (callers pass true only when stderr is a terminal).
    pub fn new(live: bool) -> Self {
        HumanView {
            live: live.then(|| Live {
                multi: MultiProgress::with_draw_target(ProgressDrawTarget::stderr()),
                bars: Mutex::new(BTreeMap::new()),
            }),
            mode: Mutex::new(Mode::Up),
        }
    }

    /// Shows one event: lines (and bars) on stderr, ignoring errors there (nowhere to report
    /// them). Returns what goes to stdout, the summary table, for the caller to write.
    pub fn show(&self, event: &Event, t: Duration) -> Option<String> {
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
            live.update(event, mode);
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
    fn bars(&self) -> std::sync::MutexGuard<'_, BTreeMap<u32, ProgressBar>> {
        // Critical sections are single map operations; a poisoned map is still usable.
        self.bars.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn update(&self, event: &Event, mode: Mode) {
        match event {
            Event::RouteRedial(e) if self.bars().contains_key(&e.route_index) => {}
            Event::RouteEstablished(RouteEstablished {
                route_index, hops, ..
            })
            | Event::RouteRedial(RouteRedial {
                route_index, hops, ..
            }) => {
                // invariant: the template is a constant known to parse.
                let style = ProgressStyle::with_template("{prefix:>4} [{bar:30}] {msg}")
                    .expect("valid template")
                    .progress_chars("=> ");
                let bar = self.multi.add(ProgressBar::new(1).with_style(style));
                bar.set_prefix(format!("R{route_index}"));
                bar.set_message(format!("established, {hops} hops"));
                self.bars().insert(*route_index, bar);
            }
            Event::Sample(s) => {
                // Each route's rate counted the way the sample's total is.
                let rate = |r: &RouteSample| match mode {
                    Mode::Up => r.sent_bps,
                    Mode::Down | Mode::Echo => r.received_bps,
                    Mode::Bidir => r.sent_bps + r.received_bps,
                };
                let max = s.routes.iter().map(rate).max().unwrap_or(0).max(1);
                let bars = self.bars();
                for r in &s.routes {
                    if let Some(bar) = bars.get(&r.route_index) {
                        let rate = rate(r);
                        bar.set_length(max);
                        bar.set_position(rate);
                        let state = match r.state {
                            RouteState::Up => "up",
                            RouteState::Stalled => "STALLED",
                            RouteState::Failed => "FAILED",
                            RouteState::Pending => "pending",
                            RouteState::SetupFailed => "SETUP FAILED",
                        };
                        bar.set_message(format!(
                            "{:>13}  {:>9} sent  {:>9} recv  {state}",
                            fmt_rate(rate),
                            fmt_bytes(r.bytes_sent),
                            fmt_bytes(r.bytes_received)
                        ));
                    }
                }
            }
            Event::RouteFailure(f) => {
                if let Some(bar) = self.bars().get(&f.route_index) {
                    bar.set_position(0);
                    bar.set_message(format!("FAILED: {}", f.error));
                }
            }
            _ => {}
        }
    }
}
