//! The `ewx-broker` binary as an operator runs it: `--help`, clear errors for a bad
//! config or a world-readable key, the `listening on ADDR` line, and a graceful SIGTERM.
#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ewx_proto::access::Grants;
use ewx_proto::{NodeKeys, Role};
use ewx_testkit::Network;

const BIN: &str = env!("CARGO_BIN_EXE_ewx-broker");

fn write_network(dir: &Path, key_mode: u32) {
    write_roster(dir, 1);
    let broker = broker_keys();
    let key = dir.join("broker.key");
    std::fs::write(&key, broker.to_secret_file().as_bytes()).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(key_mode)).unwrap();
    std::fs::write(
        dir.join("broker.toml"),
        "listen = '127.0.0.1:0'\ndata_dir = 'data'\nkey = 'broker.key'\nroster = 'roster.cbor'\n",
    )
    .unwrap();
}

/// Run `ewx-broker --config DIR/broker.toml ARGS` to its end.
fn broker(dir: &Path, args: &[&str]) -> std::process::Output {
    Command::new(BIN)
        .arg("--config")
        .arg(dir.join("broker.toml"))
        .args(args)
        .output()
        .unwrap()
}

fn broker_keys() -> NodeKeys {
    ewx_testkit::keys("BROKER")
}

fn write_roster(dir: &Path, version: u64) {
    let roster = Network::new("cli-test")
        .version(version)
        .node("BROKER", Role::Broker, Grants::none())
        .signed();
    std::fs::write(dir.join("roster.cbor"), roster.encode().unwrap()).unwrap();
}

#[test]
fn help_explains_the_options() {
    let out = Command::new(BIN).arg("--help").output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for word in [
        "--config",
        "--listen",
        "--data-dir",
        "--log-format",
        "SIGHUP",
        "Example",
    ] {
        assert!(text.contains(word), "--help lacks {word}:\n{text}");
    }
}

#[test]
fn bad_setups_fail_with_a_clear_message() {
    let out = Command::new(BIN)
        .args(["--config", "/nonexistent/broker.toml"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("/nonexistent/broker.toml: no such file") && err.contains("--config FILE"),
        "{err}"
    );
    // not a terminal: plain text, no colour codes
    assert!(!err.contains('\u{1b}'), "colour codes in {err:?}");

    let dir = tempfile::tempdir().unwrap();
    write_network(dir.path(), 0o644);
    let out = broker(dir.path(), &[]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("chmod 600"), "{err}");
    // --check-config finds the same, and says the broker would not start
    let out = broker(dir.path(), &["--check-config"]);
    assert!(!out.status.success());
    let found = String::from_utf8_lossy(&out.stdout);
    assert!(
        found
            .lines()
            .any(|l| l.starts_with("BAD") && l.contains("chmod 600")),
        "{found}"
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("would not start"),
        "{out:?}"
    );
}

#[test]
fn check_config_passes_a_usable_configuration_without_serving() {
    let dir = tempfile::tempdir().unwrap();
    write_network(dir.path(), 0o600);
    let out = broker(dir.path(), &["--check-config"]);
    let found = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{found}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        found.contains("BROKER is an active broker of the roster"),
        "{found}"
    );
    assert!(found.contains("a new store will be created"), "{found}");
    assert!(found.trim_end().ends_with("usable"), "{found}");
    assert!(!found.contains("BAD"), "{found}");
    // it created nothing
    assert!(!dir.path().join("data").exists());
}

#[test]
fn listens_reloads_the_roster_on_sighup_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    write_network(dir.path(), 0o600);
    let mut child = Command::new(BIN)
        .arg("--config")
        .arg(dir.path().join("broker.toml"))
        .args(["--log-format", "json"])
        .env("RUST_LOG", "info")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let deadline = Instant::now() + Duration::from_secs(30);
    let listening = loop {
        assert!(Instant::now() < deadline, "no 'listening on' line");
        let line = lines.next().expect("broker exited early").unwrap();
        if line.contains("listening on 127.0.0.1:") {
            break line;
        }
    };
    assert!(listening.starts_with('{'), "json log line: {listening}");
    // a second broker on the same data directory is told why it cannot start
    let second = broker(dir.path(), &[]);
    assert!(!second.status.success());
    let err = String::from_utf8_lossy(&second.stderr);
    assert!(
        err.contains("in use by another process") && err.contains("data_dir"),
        "{err}"
    );
    let pid = child.id().to_string();
    // SIGHUP installs a newer roster file
    write_roster(dir.path(), 2);
    assert!(
        Command::new("kill")
            .args(["-HUP", &pid])
            .status()
            .unwrap()
            .success()
    );
    loop {
        assert!(Instant::now() < deadline, "roster not reloaded");
        let line = lines.next().expect("broker exited early").unwrap();
        if line.contains("roster in force") {
            assert!(line.contains("\"version\":2"), "{line}");
            break;
        }
    }
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    let status = child.wait().unwrap();
    assert!(status.success(), "exit {status:?}; log: {rest:?}");
    assert!(rest.iter().any(|l| l.contains("stopped")), "{rest:?}");
    assert!(dir.path().join("data").join("db").exists(), "store created");
}
