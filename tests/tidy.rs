//! House rules that a reviewer would otherwise check by hand, over every file under `src/` at
//! any depth: each opens with a `//!` comment saying what it owns; no `unwrap()` outside tests;
//! no print macro that panics on a closed stream; and the layering of the tree (`node` and
//! `client` never import each other, `report::events` (a folder) is a leaf of types, no circle between the
//! top-level modules).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Every `.rs` file under `dir`, as (path relative to `src/`, text).
fn walk(dir: &Path, root: &Path, out: &mut Vec<(String, String)>) {
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            walk(&path, root, out);
        } else if path.extension().is_some_and(|x| x == "rs") {
            let name = path
                .strip_prefix(root)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            out.push((name, std::fs::read_to_string(&path).unwrap()));
        }
    }
}

fn sources() -> Vec<(String, String)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut out = Vec::new();
    walk(&root, &root, &mut out);
    out.sort();
    assert!(out.len() > 20, "found only {} source files", out.len());
    assert!(
        out.iter().any(|(n, _)| n.contains('/')),
        "no file below src/: the walk is not recursive"
    );
    out
}

/// The top-level module a file belongs to (`client` for `client/run.rs`, `files` for
/// `files.rs`; `lib` and `main` for the crate roots).
fn top(name: &str) -> String {
    name.split('/')
        .next()
        .unwrap()
        .trim_end_matches(".rs")
        .to_string()
}

/// The top-level modules a file's code (tests excluded) refers to through `crate::`.
fn imports(text: &str) -> BTreeSet<String> {
    let code = text.split("#[cfg(test)]").next().unwrap_or("");
    let mut out = BTreeSet::new();
    for (i, _) in code.match_indices("crate::") {
        let rest = &code[i + "crate::".len()..];
        let module: String = rest
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        if !module.is_empty() {
            out.insert(module);
        }
    }
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
        // A `tests.rs` is a module's unit tests (declared `#[cfg(test)] mod tests;`, checked
        // below); elsewhere everything after the first `#[cfg(test)]` is test code.
        if name.ends_with("/tests.rs") {
            let parent = name.trim_end_matches("tests.rs").to_string() + "mod.rs";
            let declared = sources()
                .iter()
                .any(|(n, t)| *n == parent && t.contains("#[cfg(test)]\nmod tests;"));
            assert!(
                declared,
                "src/{name} is not declared as #[cfg(test)] mod tests;"
            );
            continue;
        }
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

#[test]
fn node_and_client_never_import_each_other() {
    for (name, text) in sources() {
        let uses = imports(&text);
        match top(&name).as_str() {
            "node" => assert!(!uses.contains("client"), "src/{name} imports crate::client"),
            "client" => assert!(!uses.contains("node"), "src/{name} imports crate::node"),
            _ => {}
        }
    }
}

#[test]
fn events_are_a_leaf_of_types() {
    let files: Vec<(String, String)> = sources()
        .into_iter()
        .filter(|(n, _)| n.starts_with("report/events/"))
        .collect();
    assert!(files.len() >= 2, "src/report/events/ not found");
    for (name, text) in files {
        let code = text.split("#[cfg(test)]").next().unwrap_or("");
        for line in code.lines().filter(|l| l.contains("crate::")) {
            assert!(
                line.contains("crate::wire::"),
                "src/{name}: the event types may import only wire types: {}",
                line.trim()
            );
        }
    }
}

#[test]
fn no_circle_between_top_level_modules() {
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (name, text) in sources() {
        let from = top(&name);
        if from == "lib" || from == "main" {
            continue;
        }
        let entry = graph.entry(from.clone()).or_default();
        entry.extend(imports(&text).into_iter().filter(|m| *m != from));
    }
    // Depth-first search for a back edge, naming the circle found.
    fn visit(
        m: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) {
        if let Some(i) = path.iter().position(|p| p == m) {
            panic!("module circle: {} -> {m}", path[i..].join(" -> "));
        }
        if done.contains(m) {
            return;
        }
        path.push(m.to_string());
        for next in graph.get(m).into_iter().flatten() {
            visit(next, graph, path, done);
        }
        path.pop();
        done.insert(m.to_string());
    }
    let mut done = BTreeSet::new();
    for m in graph.keys() {
        visit(m, &graph, &mut Vec::new(), &mut done);
    }
}

#[test]
fn the_layering_check_can_fail() {
    // The rules above must see an import when there is one.
    let uses = imports("//! x\nuse crate::client::run::RunConfig;\n");
    assert!(uses.contains("client"));
    assert_eq!(top("node/relay.rs"), "node");
    assert_eq!(top("files.rs"), "files");
}

/// A file that grows past 600 lines does more than one job: split it (a module's unit tests
/// may move to its folder's `tests.rs`).
#[test]
fn no_source_file_over_600_lines() {
    for (name, text) in sources() {
        let lines = text.lines().count();
        assert!(lines <= 600, "src/{name} has {lines} lines: split it");
    }
}
