//! `compare` and `plot`: saved runs read back and rendered.

use std::io::Write;

use super::args::{CompareArgs, PlotArgs};
use super::{write_stdout, UsageError, EXIT_OK};
use crate::report::{compare, plot, runfile};

/// `compare`: saved runs side by side, each against the first; a warning on stderr (and in
/// `--json`'s `warnings`) for each setting a run differs from the first in.
pub(super) fn run_compare(a: CompareArgs) -> anyhow::Result<i32> {
    if a.runs.iter().filter(|r| r.as_str() == "-").count() > 1 {
        return Err(UsageError("'-' (stdin) can be given only once".to_string()).into());
    }
    let runs = a
        .runs
        .iter()
        .map(|r| runfile::load(r))
        .collect::<Result<Vec<_>, _>>()
        .map_err(UsageError::of)?;
    let c = compare::compare(&runs);
    let mut err = std::io::stderr().lock();
    for w in &c.warnings {
        let _ = writeln!(err, "mux-bw: warning: {}", w.message);
    }
    drop(err);
    let text = if a.json {
        // invariant: the comparison holds only numbers, strings and options.
        serde_json::to_string_pretty(&c).expect("comparison serializes") + "\n"
    } else {
        compare::render(&c)
    };
    write_stdout(&text)?;
    Ok(EXIT_OK)
}

/// `plot`: one saved run as an SVG.
pub(super) fn run_plot(a: PlotArgs) -> anyhow::Result<i32> {
    let run = runfile::load(&a.run).map_err(UsageError::of)?;
    plot::plot(&run, &a.output)?;
    let _ = writeln!(std::io::stderr(), "wrote {}", a.output.display());
    Ok(EXIT_OK)
}
