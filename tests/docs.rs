//! The docs' commands are real: every `mux-bw ...` line in a shell block of README.md and
//! docs/GUIDE.md parses with the command line the binary uses (flags renamed or removed fail
//! here), the README says how `mux-bw` gets on PATH, and no instruction assumes `sudo`.

use clap::Parser;
use mux_bw::cli::Cli;

/// A URI to stand in for `"$(cat dst.uri)"` and the like.
const SOME_URI: &str = "mbw://00112233445566778899aabbccddeeff@127.0.0.1:7600";

fn doc(name: &str) -> String {
    std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(name)).unwrap()
}

/// The `mux-bw` command lines of every ```sh block, continuation lines joined, comments,
/// pipes and redirections cut, and `$NAME` expanded where the block sets `NAME="..."`.
fn commands(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut in_sh = false;
    let mut pending = String::new();
    let mut vars: Vec<(String, String)> = Vec::new();
    for line in text.lines() {
        if line.starts_with("```") {
            in_sh = line.trim() == "```sh";
            continue;
        }
        if !in_sh {
            continue;
        }
        let line = line.split(" #").next().unwrap_or_default().trim_end();
        if let Some(head) = line.strip_suffix('\\') {
            pending.push_str(head);
            continue;
        }
        pending.push_str(line);
        let full = std::mem::take(&mut pending);
        if let Some((name, value)) = full.split_once("=\"") {
            if name.bytes().all(|b| b.is_ascii_uppercase() || b == b'_') {
                vars.push((
                    format!("${name} "),
                    value.trim_end_matches('"').to_string() + " ",
                ));
                continue;
            }
        }
        let cmd = full
            .split(['|', '>', '&', ';'])
            .next()
            .unwrap_or_default()
            .trim();
        if cmd.starts_with("mux-bw ") || cmd.starts_with("./target/release/mux-bw ") {
            let mut cmd = cmd.to_string() + " ";
            for (name, value) in &vars {
                cmd = cmd.replace(name, value);
            }
            out.push(cmd.trim().to_string());
        }
    }
    out
}

/// Words of a command, with shell substitutions and variables replaced by plausible values.
fn words(cmd: &str) -> Vec<String> {
    let mut cmd = cmd.to_string();
    while let Some(i) = cmd.find("$(") {
        let end = cmd[i..].find(')').map_or(cmd.len(), |j| i + j + 1);
        cmd.replace_range(i..end, SOME_URI);
    }
    cmd.split_whitespace()
        .map(|w| {
            let w = w.trim_matches(|c| c == '"' || c == '\'');
            if w.starts_with("$(") || w.starts_with('$') {
                SOME_URI.to_string()
            } else {
                w.to_string()
            }
        })
        .collect()
}

#[test]
fn every_documented_command_parses() {
    let mut checked = 0;
    for name in ["README.md", "docs/GUIDE.md"] {
        for cmd in commands(&doc(name)) {
            if let Err(e) = Cli::try_parse_from(words(&cmd)) {
                panic!("{name}: `{cmd}` does not parse:\n{e}");
            }
            checked += 1;
        }
    }
    assert!(
        checked >= 20,
        "only {checked} commands found: the extraction broke"
    );
}

#[test]
fn the_readme_says_how_mux_bw_gets_on_path_and_nothing_needs_sudo() {
    let readme = doc("README.md");
    assert!(
        readme.contains("make install"),
        "README calls mux-bw without saying how to get it"
    );
    assert!(
        doc("Makefile").contains("\ninstall:"),
        "no make install target"
    );
    for name in [
        "README.md",
        "docs/GUIDE.md",
        "docs/LAB.md",
        "docs/PERFORMANCE.md",
    ] {
        let text = doc(name);
        assert!(
            !text.contains("sudo "),
            "{name} assumes sudo; say 'as root'"
        );
    }
}
