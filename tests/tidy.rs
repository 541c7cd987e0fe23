//! House rules that a reviewer would otherwise check by hand: every source file opens with a
//! `//!` comment saying what it owns, and no `unwrap()` on anything outside tests.

use std::path::Path;

fn sources() -> Vec<(String, String)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut out: Vec<(String, String)> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "rs"))
        .map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            (name, std::fs::read_to_string(e.path()).unwrap())
        })
        .collect();
    out.sort();
    assert!(out.len() > 10, "found only {} source files", out.len());
    out
}

#[test]
fn every_module_says_what_it_owns() {
    for (name, text) in sources() {
        assert!(
            text.starts_with("//!"),
            "src/{name} does not open with a //! module comment"
        );
    }
}

#[test]
fn no_unwrap_outside_tests() {
    for (name, text) in sources() {
        // Everything after the first `#[cfg(test)]` is test code.
        let code = text.split("#[cfg(test)]").next().unwrap_or("");
        for (i, line) in code.lines().enumerate() {
            assert!(
                !line.contains(".unwrap()"),
                "src/{name}:{}: unwrap() outside tests: {}",
                i + 1,
                line.trim()
            );
        }
    }
}

#[test]
fn no_print_macros_that_panic_on_a_closed_stream() {
    // println!/eprintln! panic when stdout/stderr is closed or full (`2>/dev/full`, `| head`):
    // write with writeln! and handle (stdout) or ignore (stderr) the error instead.
    for (name, text) in sources() {
        for (i, line) in text.lines().enumerate() {
            let code = line.split("//").next().unwrap_or("");
            for mac in ["println!", "print!(", "dbg!("] {
                assert!(
                    !code.contains(mac),
                    "src/{name}:{}: {mac} can panic on a closed stream: {}",
                    i + 1,
                    line.trim()
                );
            }
        }
    }
}
