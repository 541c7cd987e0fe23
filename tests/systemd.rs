//! The service units in contrib/systemd pass `systemd-analyze verify` (with their `ExecStart`
//! pointed at this build's binary, so the check covers the command line too); skipped, saying
//! why, where systemd-analyze is not installed (`.ci/run` installs it).

use std::path::Path;
use std::process::Command;

#[test]
fn service_units_verify() {
    if Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("skipped: systemd-analyze not installed");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let units = std::fs::read_dir("contrib/systemd").unwrap();
    let mut paths = Vec::new();
    for entry in units {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains("ExecStart=/usr/local/bin/mux-bw "), "{name}");
        let local = text.replace("/usr/local/bin/mux-bw", env!("CARGO_BIN_EXE_mux-bw"));
        let copy = dir.path().join(&name);
        std::fs::write(&copy, local).unwrap();
        paths.push(copy);
    }
    assert!(paths.len() >= 3, "units in contrib/systemd: {paths:?}");
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .args(&paths)
        .output()
        .unwrap();
    let said =
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && said.trim().is_empty(),
        "systemd-analyze verify: {said}"
    );
    for unit in ["relay", "serve", "exporter"] {
        let path = format!("contrib/systemd/mux-bw-{unit}.service");
        assert!(Path::new(&path).exists(), "{path}");
    }
}
