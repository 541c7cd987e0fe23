//! Three real processes as the README documents: `serve`, two `relay`s with persistent
//! identities and node files, and `run` pinning their ids; what `run` is told when a node
//! cannot be used (unreachable, a missing or wrong token).

mod common;

use std::time::Duration;

use common::{of_type, run, NodeProc};

#[test]
fn serve_two_relays_and_run_as_separate_processes() {
    let dir = tempfile::tempdir().unwrap();
    let file = |n: &str| dir.path().join(n).to_string_lossy().into_owned();
    let dst = NodeProc::start(
        "serve",
        &[
            "--identity",
            &file("dst.key"),
            "--node-file",
            &file("dst.uri"),
        ],
    );
    let r1 = NodeProc::start(
        "relay",
        &[
            "--identity",
            &file("r1.key"),
            "--node-file",
            &file("r1.uri"),
        ],
    );
    let r2 = NodeProc::start("relay", &["--identity", &file("r2.key")]);
    assert_eq!(
        std::fs::read_to_string(file("dst.uri")).unwrap().trim(),
        dst.uri
    );
    std::fs::write(file("relays"), format!("# pool\n{}\n", r2.uri)).unwrap();

    let out = run(
        &[
            "run",
            "--to",
            &dst.uri,
            "--relay",
            &r1.uri,
            "--relays-file",
            &file("relays"),
            "--routes",
            "2",
            "--min-hops",
            "2",
            "--duration",
            "1s",
            "--interval",
            "500ms",
            "--json",
        ],
        Duration::from_secs(30),
    );
    assert_eq!(out.code, 0, "stderr: {}", out.stderr);
    let events = out.events();
    let est = of_type(&events, "route_established");
    assert_eq!(est.len(), 2);
    let mut relays: Vec<&str> = est.iter().map(|e| e["path"][0].as_str().unwrap()).collect();
    relays.sort();
    let mut expected = vec![r1.id(), r2.id()];
    expected.sort();
    assert_eq!(relays, expected);
    for e in &est {
        assert_eq!(e["path"][1], dst.id());
    }
    let summary = &of_type(&events, "summary")[0];
    assert!(
        summary["aggregate_bytes"].as_u64().unwrap() > 0,
        "{summary}"
    );

    // The identity file keeps the id across restarts.
    drop(dst);
    let again = NodeProc::start("serve", &["--identity", &file("dst.key")]);
    assert_eq!(again.id(), expected_id(&file("dst.uri")));
}

fn expected_id(uri_file: &str) -> String {
    let uri = std::fs::read_to_string(uri_file).unwrap();
    uri.trim()
        .trim_start_matches("mbw://")
        .split('@')
        .next()
        .unwrap()
        .to_string()
}

#[test]
fn setup_failure_names_the_unreachable_relay() {
    let dst = NodeProc::start("serve", &[]);
    let dead = NodeProc::start("relay", &[]);
    let dead_uri = dead.uri.clone();
    let dead_id = dead.id().to_string();
    drop(dead);
    let out = run(
        &[
            "run",
            "--to",
            &dst.uri,
            "--relay",
            &dead_uri,
            "--min-hops",
            "2",
            "--setup-timeout",
            "1s",
            "--duration",
            "1s",
            "--json",
        ],
        Duration::from_secs(30),
    );
    assert_eq!(out.code, 3, "stderr: {}", out.stderr);
    let events = out.events();
    let failed = of_type(&events, "route_setup_failed");
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0]["route_index"], 0);
    assert_eq!(failed[0]["failed_hop"], 0);
    assert_eq!(failed[0]["node"], dead_id.as_str());
}

/// A client that presents no token is told the node needs one; a wrong token is still
/// "bad token".
#[test]
fn a_missing_token_is_named_as_missing_not_as_bad() {
    let dst = NodeProc::start("serve", &["--token", "sesame"]);
    let setup = |token: Option<&str>| {
        let mut args = vec!["run", "--to", &dst.uri, "--duration", "1s", "--json"];
        if let Some(t) = token {
            args.extend(["--token", t]);
        }
        let out = run(&args, Duration::from_secs(30));
        assert_eq!(out.code, 3, "stderr: {}", out.stderr);
        let events = out.events();
        let failed = of_type(&events, "route_setup_failed");
        assert_eq!(failed.len(), 1, "{}", out.stdout);
        assert_eq!(failed[0]["cause"], "refused");
        assert_eq!(failed[0]["failed_hop"], 0);
        failed[0]["error"].as_str().unwrap().to_string()
    };
    let error = setup(None);
    let needs = "this node requires a token (--token or MUX_BW_TOKEN)";
    assert!(error.contains(needs), "{error}");
    assert!(!error.contains("bad token"), "{error}");
    let error = setup(Some("guess"));
    assert!(error.contains("bad token"), "{error}");
    assert!(!error.contains("requires a token"), "{error}");
}
