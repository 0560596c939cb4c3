//! The systemd unit in `broker/deploy/` as systemd reads it: `systemd-analyze verify`
//! accepts it (with this build's binary in place of /usr/local/bin/ewx-broker), and
//! `systemd-analyze security` rates its exposure at most 2.0 of 10 ("OK").
#![allow(clippy::unwrap_used)]

use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_ewx-broker");

#[test]
fn the_systemd_unit_verifies_and_is_hardened() {
    let unit = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/deploy/ewx-broker.service"
    ))
    .unwrap();
    assert!(
        unit.contains("--check-config"),
        "ExecStartPre checks the config"
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ewx-broker.service");
    std::fs::write(&path, unit.replace("/usr/local/bin/ewx-broker", BIN)).unwrap();
    let verify = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .expect("systemd-analyze (Debian package systemd; .ci/run installs it)");
    assert!(
        verify.status.success() && verify.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&verify.stderr)
    );
    let security = Command::new("systemd-analyze")
        .args(["security", "--offline=yes", "--threshold=20"])
        .arg(&path)
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&security.stdout);
    assert!(security.status.success(), "exposure above 2.0:\n{report}");
    assert!(report.contains("Overall exposure level"), "{report}");
}
