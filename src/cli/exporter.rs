//! `exporter`: the probe targets of a TOML file, each validated as the flags of `mux-bw run`
//! before the exporter listens, then served until SIGINT/SIGTERM (`crate::exporter`).
//!
//! ```toml
//! [defaults]                      # optional: keys every target starts from
//! duration = "5s"
//! token_file = "/run/credentials/mux-bw-exporter.service/token"
//!
//! [targets.eu-mux]                # /probe?target=eu-mux
//! to = "mbw://<id>@203.0.113.7:7600"
//! relays_file = "/etc/mux-bw/relays.txt"
//! routes = 4
//! min_hops = 2
//! probe_rtt = true
//! ```
//!
//! A key is a `run` flag without its dashes (`min_hops` is `--min-hops`); `true` gives a switch,
//! a list repeats the flag (`relay = [..]`, also spelled `relays`). `token_file` and `token_env`
//! name where the token is (otherwise `token`, or MUX_BW_TOKEN as for `run`). Output flags are
//! the exporter's own and refused.

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Args, Parser};
use tokio_util::sync::CancellationToken;

use super::args::RunArgs;
use super::parse::{duration_in, NONZERO};
use super::run::client_config;
use super::{interrupt_token, UsageError, EXIT_OK};
use crate::exporter::{self, Exporter, Settings, Target, MAX_PROBE};
use crate::metrics::http;

/// Largest config file read.
const MAX_CONFIG: u64 = 1 << 20;
/// Largest token file read.
const MAX_TOKEN_FILE: u64 = 4096;
/// Most targets in one config.
const MAX_TARGETS: usize = 1024;
/// Most probes at once (each is a whole measurement on this host).
const MAX_CONCURRENT: u64 = 64;

/// The longest a stopping exporter waits for its probes in flight to answer.
const SETTLE: Duration = Duration::from_secs(3);

/// The keys that say where a target's token is.
const TOKEN_KEYS: [&str; 3] = ["token", "token_file", "token_env"];

/// `run` flags that say where output goes: the exporter's answers are its output.
const OUTPUT_KEYS: [&str; 3] = ["json", "json_file", "live"];

#[derive(Debug, Args)]
pub(super) struct ExporterArgs {
    /// HTTP address for /probe?target=NAME and /metrics (port 0 picks one, said on stderr).
    /// It has no token: bind it where only your Prometheus reaches.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:9642")]
    listen: SocketAddr,
    /// The targets: a TOML file with one [targets.NAME] table of `run` flags each
    /// (docs/DEPLOY.md).
    #[arg(long, value_name = "FILE")]
    config: PathBuf,
    /// Probes of different targets that may run at once (1 to 64). Probes of one target always
    /// run one at a time; targets that share a link would halve each other's rate.
    #[arg(long, value_name = "N", default_value_t = 1,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=MAX_CONCURRENT))]
    max_concurrent: usize,
    /// Taken off the scrape's timeout (X-Prometheus-Scrape-Timeout-Seconds), so the answer
    /// gets back before Prometheus gives up (at most 1m).
    #[arg(long, value_name = "DUR", default_value = "500ms",
          value_parser = duration_in(Duration::ZERO, Duration::from_secs(60)))]
    timeout_offset: Duration,
    /// A probe's time when the request names no timeout, as with curl (at most 290s).
    #[arg(long, value_name = "DUR", default_value = "30s", value_parser = duration_in(NONZERO, MAX_PROBE))]
    default_timeout: Duration,
    /// Keep each probe's events (NDJSON, as `run --json` writes them) in DIR/TARGET/<start
    /// Unix ms>.ndjson, the newest 16 per target, for `mux-bw compare` and `plot`.
    #[arg(long, value_name = "DIR")]
    save_runs: Option<PathBuf>,
    /// Check the config (every target as `run` would) and exit: 0 when it is good.
    #[arg(long)]
    check_config: bool,
}

/// `exporter`: serves probes of the configured targets until SIGINT/SIGTERM.
pub(super) async fn run_exporter(a: ExporterArgs) -> anyhow::Result<i32> {
    let targets = read_config(&a.config)?;
    if a.check_config {
        say(&format!(
            "{}: {} target(s) ok",
            a.config.display(),
            targets.len()
        ));
        return Ok(EXIT_OK);
    }
    if let Some(dir) = &a.save_runs {
        for t in &targets {
            let d = dir.join(&t.name);
            std::fs::create_dir_all(&d).map_err(|e| {
                UsageError(format!(
                    "cannot create --save-runs directory '{}': {e}",
                    d.display()
                ))
            })?;
        }
    }
    let listener = http::bind(a.listen).await.map_err(UsageError::of)?;
    let shutdown = interrupt_token();
    let settings = Settings {
        targets,
        max_concurrent: a.max_concurrent,
        timeout_offset: a.timeout_offset,
        default_timeout: a.default_timeout,
        save_runs: a.save_runs,
    };
    let names: Vec<String> = settings.targets.iter().map(|t| t.name.clone()).collect();
    let exporter = Exporter::new(settings, shutdown.clone());
    let stop_http = CancellationToken::new();
    let server = http::spawn(
        listener_with_notice(listener),
        exporter.handler(),
        stop_http.clone(),
    );
    say(&format!("targets: {}", names.join(", ")));
    shutdown.cancelled().await;
    say("stopping");
    // The probes in flight end at once (cause `shutdown`); their answers get out before the
    // server stops.
    exporter.settle(SETTLE).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    stop_http.cancel();
    let _ = server.await;
    say("stopped");
    Ok(EXIT_OK)
}

/// Says where the exporter listens before it serves.
fn listener_with_notice(listener: tokio::net::TcpListener) -> tokio::net::TcpListener {
    if let Ok(local) = listener.local_addr() {
        say(&format!(
            "exporter on http://{local}/probe?target=NAME and http://{local}/metrics"
        ));
    }
    listener
}

fn say(line: &str) {
    let _ = writeln!(std::io::stderr(), "{line}");
}

/// The targets of a config file, each a validated measurement.
fn read_config(path: &Path) -> Result<Vec<Target>, UsageError> {
    let name = path.display().to_string();
    let bytes = crate::files::read_bounded(path, MAX_CONFIG)
        .map_err(|e| UsageError(format!("cannot read --config '{name}': {e}")))?;
    let text = String::from_utf8(bytes)
        .map_err(|_| UsageError(format!("cannot read --config '{name}': not UTF-8 text")))?;
    parse_config(&name, &text)
}

/// The targets of a config's text; `name` is the file, for messages.
fn parse_config(name: &str, text: &str) -> Result<Vec<Target>, UsageError> {
    let bad = |why: String| UsageError(format!("--config '{name}': {why}"));
    let mut doc: toml::Table = text
        .parse()
        .map_err(|e: toml::de::Error| bad(e.message().to_string()))?;
    let defaults = match doc.remove("defaults") {
        None => toml::Table::new(),
        Some(toml::Value::Table(t)) => {
            canonical(t).map_err(|e| bad(format!("[defaults]: {}", e.0)))?
        }
        Some(_) => return Err(bad("[defaults] must be a table of run flags".into())),
    };
    let targets = match doc.remove("targets") {
        Some(toml::Value::Table(t)) if !t.is_empty() => t,
        _ => {
            return Err(bad(
                "no targets: add a [targets.NAME] table of run flags".into()
            ))
        }
    };
    if let Some(key) = doc.keys().next() {
        return Err(bad(format!(
            "unknown key '{key}': expected [defaults] and [targets.NAME] tables"
        )));
    }
    if targets.len() > MAX_TARGETS {
        return Err(bad(format!(
            "{} targets; at most {MAX_TARGETS}",
            targets.len()
        )));
    }
    let mut out = Vec::new();
    for (target, value) in targets {
        if !exporter::valid_name(&target) {
            return Err(bad(format!(
                "target name '{target}': expected 1 to 64 letters, digits, '-', '_' or '.'"
            )));
        }
        let toml::Value::Table(own) = value else {
            return Err(bad(format!(
                "target '{target}' must be a table of run flags"
            )));
        };
        let own = canonical(own).map_err(|e| bad(format!("target '{target}': {}", e.0)))?;
        let mut keys = defaults.clone();
        // A target that says where its token is overrides where the defaults say it is.
        if TOKEN_KEYS.iter().any(|k| own.contains_key(*k)) {
            keys.retain(|k, _| !TOKEN_KEYS.contains(&k));
        }
        keys.extend(own);
        out.push(target_of(&target, keys).map_err(|e| bad(format!("target '{target}': {}", e.0)))?);
    }
    Ok(out)
}

/// `keys` spelled one way, so a target's key replaces the defaults' however either is written:
/// `min-hops` is `min_hops`, `relays` is `relay`. A key must be a flag's name: lowercase letters,
/// digits and `_`/`-`, starting with a letter.
fn canonical(keys: toml::Table) -> Result<toml::Table, UsageError> {
    let mut out = toml::Table::new();
    for (key, value) in keys {
        let plain = key.starts_with(|c: char| c.is_ascii_lowercase())
            && key
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
        if !plain {
            return Err(UsageError(format!(
                "key '{key}': expected a run flag's name (lowercase letters, digits, '_')"
            )));
        }
        let key = key.replace('-', "_");
        let key = if key == "relays" {
            "relay".to_string()
        } else {
            key
        };
        if out.insert(key.clone(), value).is_some() {
            return Err(UsageError(format!("key '{key}' given twice")));
        }
    }
    Ok(out)
}

/// One target's keys as `run` flags, parsed and validated as `run` does.
fn target_of(name: &str, mut keys: toml::Table) -> Result<Target, UsageError> {
    let token = token_of(&mut keys)?;
    let mut argv: Vec<String> = Vec::new();
    for (key, value) in &keys {
        if OUTPUT_KEYS.contains(&key.as_str()) {
            return Err(UsageError(format!(
                "'{key}' is not for a probe: the exporter's answer is its output (--save-runs keeps events)"
            )));
        }
        push_flag(&mut argv, &format!("--{}", key.replace('_', "-")), value)?;
    }
    if let Some(t) = token {
        argv.push(format!("--token={t}"));
    }
    let flags = TargetFlags::try_parse_from(&argv).map_err(|e| {
        let text = e.render().to_string();
        let first = text
            .lines()
            .next()
            .unwrap_or("")
            .trim_start_matches("error: ");
        UsageError(as_keys(first))
    })?;
    let config = client_config(&flags.run).map_err(|e| UsageError(as_keys(&e.0)))?;
    Ok(Target {
        name: name.to_string(),
        config,
        allow_partial: flags.run.opts.measure.allow_partial,
    })
}

/// A message about flags with each `--flag-name` spelled as the file's key, `flag_name`.
fn as_keys(message: &str) -> String {
    let mut out = String::new();
    let mut rest = message;
    while let Some(at) = rest.find("--") {
        let after = &rest[at + 2..];
        let starts_flag = after.starts_with(|c: char| c.is_ascii_lowercase())
            && !rest[..at].ends_with(|c: char| c.is_ascii_alphanumeric());
        out.push_str(&rest[..at]);
        if !starts_flag {
            out.push_str("--");
            rest = after;
            continue;
        }
        let end = after
            .find(|c: char| !(c.is_ascii_lowercase() || c == '-'))
            .unwrap_or(after.len());
        out.push_str(&after[..end].replace('-', "_"));
        rest = &after[end..];
    }
    out.push_str(rest);
    out
}

/// `flag` with `value` as command-line words.
fn push_flag(argv: &mut Vec<String>, flag: &str, value: &toml::Value) -> Result<(), UsageError> {
    let word = |v: &toml::Value| match v {
        toml::Value::String(s) => Ok(s.clone()),
        toml::Value::Integer(i) => Ok(i.to_string()),
        toml::Value::Float(f) => Ok(f.to_string()),
        other => Err(UsageError(format!(
            "'{}' = {other}: expected a string, a number, true or a list of them",
            &flag[2..]
        ))),
    };
    match value {
        toml::Value::Boolean(true) => argv.push(flag.to_string()),
        toml::Value::Boolean(false) => {}
        toml::Value::Array(items) => {
            for v in items {
                argv.push(format!("{flag}={}", word(v)?));
            }
        }
        // One word, so a value that starts with '-' stays a value.
        v => argv.push(format!("{flag}={}", word(v)?)),
    }
    Ok(())
}

/// The token from `token_file` or `token_env` (taken out of the keys), if either is given.
fn token_of(keys: &mut toml::Table) -> Result<Option<String>, UsageError> {
    let file = keys.remove("token_file");
    let env = keys.remove("token_env");
    let given = usize::from(file.is_some()) + usize::from(env.is_some());
    if given + usize::from(keys.contains_key("token")) > 1 {
        return Err(UsageError(
            "give the token one way: token, token_file or token_env".into(),
        ));
    }
    match (file, env) {
        (Some(toml::Value::String(path)), _) => {
            let bytes = crate::files::read_bounded(Path::new(&path), MAX_TOKEN_FILE)
                .map_err(|e| UsageError(format!("cannot read token_file '{path}': {e}")))?;
            let text = String::from_utf8(bytes)
                .map_err(|_| UsageError(format!("token_file '{path}': not UTF-8 text")))?;
            Ok(Some(text.trim_end_matches(['\n', '\r']).to_string()))
        }
        (_, Some(toml::Value::String(var))) => std::env::var(&var)
            .map(Some)
            .map_err(|_| UsageError(format!("token_env '{var}': not set in the environment"))),
        (None, None) => Ok(None),
        _ => Err(UsageError(
            "token_file and token_env take a string: a path, a variable's name".into(),
        )),
    }
}

/// A target's flags, parsed by the same definitions as `run`'s.
#[derive(Debug, Parser)]
#[command(name = "target", no_binary_name = true)]
struct TargetFlags {
    #[command(flatten)]
    run: RunArgs,
}

/// The configured names, for tests of the file format.
#[cfg(test)]
fn names(targets: &[Target]) -> Vec<&str> {
    targets.iter().map(|t| t.name.as_str()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const URI: &str = "mbw://0564331f0564331f0564331f0564331f@127.0.0.1:7600";

    fn parse(text: &str) -> Result<Vec<Target>, String> {
        parse_config("x.toml", text).map_err(|e| e.0)
    }

    #[test]
    fn keys_are_run_flags_and_defaults_apply_to_every_target() {
        let text = format!(
            "[defaults]\nduration = \"2s\"\ntoken = \"t\"\n\n[targets.a]\nto = \"{URI}\"\n\n[targets.b]\nto = \"{URI}\"\nroutes = 3\nduration = \"1s\"\nprobe_rtt = true\nallow_partial = true\n"
        );
        let t = parse(&text).unwrap();
        assert_eq!(names(&t), ["a", "b"]);
        assert_eq!(t[0].config.duration, Duration::from_secs(2));
        assert_eq!(t[1].config.duration, Duration::from_secs(1));
        assert_eq!(t[1].config.routes.len(), 3);
        assert!(t[1].config.probe_rtt && !t[0].config.probe_rtt);
        assert!(t[1].allow_partial && !t[0].allow_partial);
        assert_eq!(t[0].config.token, b"t");
    }

    #[test]
    fn bad_configs_name_the_target_and_the_key() {
        let cases = [
            ("", "no targets"),
            ("[targets.a]\nroutes = 2\n", "target 'a'"),
            (
                &format!("[targets.a]\nto = \"{URI}\"\nroutes = \"many\"\n"),
                "routes",
            ),
            (
                &format!("[targets.a]\nto = \"{URI}\"\nbogus = 1\n"),
                "bogus",
            ),
            (
                &format!("[targets.a]\nto = \"{URI}\"\njson = true\n"),
                "'json' is not for a probe",
            ),
            (
                &format!("[targets.\"a/b\"]\nto = \"{URI}\"\n"),
                "target name 'a/b'",
            ),
            (
                &format!("[targets.a]\nto = \"{URI}\"\nrelay = {{ x = 1 }}\n"),
                "expected a string",
            ),
            (
                &format!("[targets.a]\nto = \"{URI}\"\ntoken = \"t\"\ntoken_env = \"X\"\n"),
                "one way",
            ),
            (
                &format!("[targets.a]\nto = \"{URI}\"\ntoken_env = \"MUX_BW_SURELY_UNSET\"\n"),
                "not set",
            ),
            (
                &format!("[targets.a]\nto = \"{URI}\"\nmin_hops = 2\n"),
                "needs relays",
            ),
            ("[targets.a\n", "x.toml"),
            ("other = 1\n[targets.a]\n", "unknown key 'other'"),
        ];
        for (text, want) in cases {
            let e = parse(text)
                .err()
                .unwrap_or_else(|| panic!("{text:?} was accepted"));
            assert!(e.contains(want), "{text:?}: {e}");
            assert!(e.starts_with("--config 'x.toml'"), "{e}");
            assert!(!e.contains('\n'), "one line: {e}");
        }
    }

    #[test]
    fn a_targets_own_token_overrides_the_defaults_token_source() {
        let text = format!(
            "[defaults]\ntoken_env = \"MUX_BW_SURELY_UNSET\"\n\n[targets.a]\nto = \"{URI}\"\ntoken = \"mine\"\n"
        );
        assert_eq!(parse(&text).unwrap()[0].config.token, b"mine");
    }

    #[test]
    fn keys_are_flag_names_however_spelled_and_values_may_start_with_a_dash() {
        let text = format!(
            "[defaults]\nrelays = [\"{URI}\"]\ntoken = \"-x\"\n\n[targets.a]\nto = \"{URI}\"\nmin-hops = 1\nrelay = []\n"
        );
        let t = parse(&text).unwrap();
        assert_eq!(t[0].config.token, b"-x");
        assert!(
            t[0].config.relays.is_empty(),
            "the target's relay list replaces the defaults'"
        );
        for bad in [
            "\"routes=2\" = 1",
            "\"\" = true",
            "Routes = 2",
            "json-file = \"x\"",
        ] {
            let e = parse(&format!("[targets.a]\nto = \"{URI}\"\n{bad}\n")).unwrap_err();
            assert!(
                e.contains("key") || e.contains("not for a probe"),
                "{bad}: {e}"
            );
        }
    }

    #[test]
    fn flags_in_messages_are_spelled_as_keys() {
        assert_eq!(
            as_keys("invalid value 'eu-1' for '--min-hops <H>': no"),
            "invalid value 'eu-1' for 'min_hops <H>': no"
        );
        assert_eq!(
            as_keys("--min-hops 2 needs relays: pass --relay, --relays-file"),
            "min_hops 2 needs relays: pass relay, relays_file"
        );
        assert_eq!(as_keys("a--b -- --7"), "a--b -- --7");
    }

    #[test]
    fn the_token_comes_from_a_file_without_its_newline() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "s3cret\n").unwrap();
        let text = format!(
            "[targets.a]\nto = \"{URI}\"\ntoken_file = \"{}\"\n",
            path.display()
        );
        assert_eq!(parse(&text).unwrap()[0].config.token, b"s3cret");
    }

    #[test]
    fn relays_is_a_list_of_relay_flags() {
        let relay = URI
            .replace("0564331f@", "0564331e@")
            .replace(":7600", ":7601");
        let text = format!(
            "[targets.a]\nto = \"{URI}\"\nrelays = [\"{relay}\"]\nmin_hops = 2\nroutes = 1\n"
        );
        let t = parse(&text).unwrap();
        assert_eq!(t[0].config.routes[0].path.len(), 2);
    }
}
