//! Shell completion works for real: bash sources the generated script and its completion
//! function is called the way bash calls it on <TAB>, for the top level and for a subcommand.

mod common;

use std::process::Command;

use common::bin;

/// What bash offers for the words `line` (the last one being completed): sources
/// `mux-bw completions bash`, sets `COMP_WORDS`/`COMP_CWORD`/`COMP_LINE`/`COMP_POINT`, calls
/// the function `complete -p mux-bw` names with (command, current word, previous word).
/// `None` when there is no bash to run.
fn complete(line: &[&str]) -> Option<Vec<String>> {
    let words: Vec<String> = line.iter().map(|w| format!("'{w}'")).collect();
    let script = format!(
        r#"source <("$0" completions bash) || exit 7
f=$(complete -p mux-bw | sed -E 's/.*-F ([^ ]+).*/\1/')
COMP_WORDS=({words})
COMP_CWORD=$(( ${{#COMP_WORDS[@]}} - 1 ))
COMP_LINE="${{COMP_WORDS[*]}}"
COMP_POINT=${{#COMP_LINE}}
"$f" mux-bw "${{COMP_WORDS[COMP_CWORD]}}" "${{COMP_WORDS[COMP_CWORD-1]}}"
printf '%s\n' "${{COMPREPLY[@]}}""#,
        words = words.join(" ")
    );
    let out = match Command::new("bash")
        .args(["--norc", "--noprofile", "-c", &script, bin()])
        .output()
    {
        Ok(out) => out,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        Err(e) => panic!("cannot run bash: {e}"),
    };
    assert!(
        out.status.success(),
        "bash failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    Some(text.lines().map(str::to_string).collect())
}

#[test]
fn bash_completes_a_subcommands_flags() {
    let Some(offered) = complete(&["mux-bw", "lab", "--du"]) else {
        eprintln!("no bash: skipped");
        return;
    };
    assert_eq!(offered, ["--duration"], "mux-bw lab --du<TAB>");
    let Some(offered) = complete(&["mux-bw", "compare", "--js"]) else {
        return;
    };
    assert_eq!(offered, ["--json"], "mux-bw compare --js<TAB>");
}

#[test]
fn bash_completes_subcommand_names() {
    let Some(offered) = complete(&["mux-bw", "sw"]) else {
        eprintln!("no bash: skipped");
        return;
    };
    assert_eq!(offered, ["sweep"], "mux-bw sw<TAB>");
}
