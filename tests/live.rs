//! The live view on a real terminal: `script` (util-linux) gives the lab's stderr an 80-column
//! pty; the drawn lines come in route order, fit 80 columns, count the time down, end with the
//! total, and show a killed route as FAILED. Skipped when `script` is not installed.

mod common;

use std::process::Command;

use common::bin;

/// Escape sequences removed, one entry per drawn line (carriage returns and padding dropped).
fn drawn_lines(raw: &str) -> Vec<String> {
    let mut out = String::new();
    let mut chars = raw.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // CSI: ESC [ params final-byte; each ends a line as far as we are concerned.
            if chars.peek() == Some(&'[') {
                chars.next();
                for p in chars.by_ref() {
                    if p.is_ascii_alphabetic() {
                        break;
                    }
                }
            }
            out.push('\n');
        } else if c == '\r' {
            out.push('\n');
        } else {
            out.push(c);
        }
    }
    out.lines()
        .map(|l| l.trim_end().to_string())
        .filter(|l| !l.is_empty())
        .collect()
}

/// The route index of a route line of the view (`R12  [`), if it is one.
fn route_of(line: &str) -> Option<u32> {
    let rest = line.trim_start().strip_prefix('R')?;
    let (n, tail) = rest.split_once(' ')?;
    tail.trim_start().starts_with('[').then(|| n.parse().ok())?
}

#[test]
fn live_view_on_a_terminal_is_ordered_fits_80_columns_and_marks_the_failure() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("tty.log");
    let cmd = format!(
        "stty cols 80 rows 40; '{}' lab --link-rate 20mbit --routes 4 --min-hops 2 --omit 1s \
         --duration 2s --fault kill:2@1.5s --live always 2>&1 >/dev/null",
        bin()
    );
    let status = match Command::new("script")
        .args(["-q", "-e", "-c", &cmd])
        .arg(&log)
        .output()
    {
        Ok(out) => out.status,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            eprintln!("no `script`: skipped");
            return;
        }
        Err(e) => panic!("cannot run script: {e}"),
    };
    assert!(status.success(), "{status}");
    let raw = String::from_utf8_lossy(&std::fs::read(&log).unwrap()).into_owned();
    let lines = drawn_lines(&raw);
    let view: Vec<&String> = lines
        .iter()
        .filter(|l| {
            route_of(l).is_some()
                || ["total ", "setting up:", "warm-up:", "measuring:"]
                    .iter()
                    .any(|p| l.starts_with(p))
        })
        .collect();
    for l in &view {
        assert!(
            l.chars().count() <= 80,
            "{} columns: {l}",
            l.chars().count()
        );
    }
    // Every redraw lists the routes in index order (each frame starts with its header).
    let mut previous: Option<u32> = None;
    for l in &view {
        match route_of(l) {
            Some(r) => {
                assert!(
                    previous.is_none_or(|p| p < r),
                    "R{r} after R{previous:?}: {view:#?}"
                );
                previous = Some(r);
            }
            None => previous = None,
        }
    }
    let has = |needle: &str| view.iter().any(|l| l.contains(needle));
    assert!(has("s left"), "no time left: {view:#?}");
    assert!(
        view.iter().any(|l| l.starts_with("total ")),
        "no total: {view:#?}"
    );
    assert!(
        view.iter()
            .any(|l| l.starts_with("R2   [                ] FAILED: ")),
        "no failure shown: {view:#?}"
    );
}
