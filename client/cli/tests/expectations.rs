//! What a new user expects of `ewx` and was not given before (issue 16, part 3): a broker
//! that is down is reported in seconds, with advice; `--rel-to` naming a node the roster
//! does not have is refused; several `ewx publish` runs of one node at the same moment all
//! get stored; error output is plain text when it is not a terminal.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

mod support;

/// A bulletin from `b.txt`, as `ewx publish` flags.
const PUBLISH: [&str; 9] = [
    "publish",
    "--topic",
    "ew.air.missile",
    "--level",
    "AMBER",
    "--compartments",
    "CORE",
    "--file",
    "b.txt",
];

use support::{ewx, fails, run};

#[test]
fn a_broker_that_is_down_is_reported_in_seconds_with_advice() {
    let d = tempfile::tempdir().unwrap();
    assert!(
        run(d.path(), &["demo", "--write-network", "net"])
            .status
            .success()
    );
    // a socket that never answers: what a stopped broker behind a firewall looks like
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = silent.local_addr().unwrap().to_string();
    let started = Instant::now();
    let err = fails(d.path(), &addr, "UA", &["--connect-timeout", "1", "status"]);
    assert!(
        err.contains("no answer within 1s") && err.contains("is the broker running"),
        "{err}"
    );
    assert!(err.contains("--connect-timeout"), "{err}");
    // not a terminal: no progress line, no colour codes
    assert!(
        !err.contains("connecting to") || err.starts_with("ewx:"),
        "{err}"
    );
    assert!(!err.contains('\u{1b}'), "colour codes in {err:?}");
    // it gave up; the old behaviour sat silent for 30 s
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "took {:?}",
        started.elapsed()
    );
    let bad = fails(d.path(), &addr, "UA", &["--connect-timeout", "0", "status"]);
    assert!(bad.contains("more than 0"), "{bad}");
}

#[test]
fn publishing_checks_rel_to_and_survives_a_crowd() {
    let d = tempfile::tempdir().unwrap();
    let (rt, broker) = support::demo_broker(d.path());
    let addr = broker.local_addr().to_string();
    std::fs::write(d.path().join("b.txt"), "Drills\nCheck the sirens").unwrap();
    let publish = |extra: &[&str]| {
        let args: Vec<&str> = PUBLISH.iter().chain(extra).copied().collect();
        ewx(d.path(), &addr, "UA", &args)
    };
    // a node the roster does not have is refused by name (it was accepted silently,
    // then sealing failed with a misleading "not releasable to UA")
    let out = publish(&["--rel-to", "UA,ZZ"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--rel-to ZZ: no such node in the roster"),
        "{err}"
    );

    // six runs of one node at the same moment: each stored once, none refused as a
    // replay of another's sequence number
    let runs: Vec<_> = (0..6)
        .map(|_| {
            std::thread::spawn({
                let (dir, addr) = (d.path().to_path_buf(), addr.clone());
                move || ewx(&dir, &addr, "UA", &PUBLISH)
            })
        })
        .collect();
    let mut indexes = Vec::new();
    for r in runs {
        let out = r.join().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8(out.stdout).unwrap();
        let index: u64 = text
            .split("log index ")
            .nth(1)
            .and_then(|t| t.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no log index in {text:?}"));
        indexes.push(index);
    }
    indexes.sort_unstable();
    indexes.dedup();
    assert_eq!(indexes.len(), 6, "{indexes:?}");
    rt.block_on(broker.shutdown()).unwrap();
}

#[test]
fn taxii_serve_says_what_is_missing_before_it_connects() {
    let d = tempfile::tempdir().unwrap();
    // no configuration
    let out = run(d.path(), &["--profile", ".", "taxii", "serve"]);
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(!out.status.success());
    assert!(
        err.contains("taxii.toml") && err.contains("TAXII section"),
        "{err}"
    );
    // no collection
    std::fs::write(d.path().join("taxii.toml"), "title = 'x'\n").unwrap();
    let err =
        String::from_utf8(run(d.path(), &["--profile", ".", "taxii", "serve"]).stderr).unwrap();
    assert!(err.contains("no [[collection]]"), "{err}");
    // a public address without credentials
    std::fs::write(
        d.path().join("taxii.toml"),
        "[[collection]]\nalias = 'ew'\ntopics = 'ew.>'\n",
    )
    .unwrap();
    let args = ["--profile", ".", "taxii", "serve", "--listen", "0.0.0.0:0"];
    let err = String::from_utf8(run(d.path(), &args).stderr).unwrap();
    assert!(
        err.contains("not loopback") && err.contains("[auth]"),
        "{err}"
    );
    // a users file others can read
    std::fs::write(d.path().join("u"), "misp:a-long-password\n").unwrap();
    std::fs::write(
        d.path().join("taxii.toml"),
        "[auth]\nusers_file = 'u'\n[[collection]]\nalias = 'ew'\ntopics = 'ew.>'\n",
    )
    .unwrap();
    let err = String::from_utf8(run(d.path(), &args).stderr).unwrap();
    assert!(err.contains("chmod 600"), "{err}");
    let help = String::from_utf8(run(d.path(), &["taxii", "serve", "--help"]).stdout).unwrap();
    assert!(
        help.contains("TAXII 2.1") && help.contains("--listen"),
        "{help}"
    );
}
