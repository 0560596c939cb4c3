//! The `ewx` binary as a person uses it, against a real broker on loopback: key and roster
//! management, publish → subscribe, clear errors for bad input, and the demo.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::{Command, Stdio};

mod support;

use support::{EWX, run as ewx};

fn ok(dir: &Path, args: &[&str]) -> String {
    let out = ewx(dir, args);
    assert!(
        out.status.success(),
        "ewx {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn fails(dir: &Path, args: &[&str]) -> String {
    let out = ewx(dir, args);
    assert!(!out.status.success(), "ewx {args:?} should fail");
    String::from_utf8(out.stderr).unwrap()
}

#[test]
fn help_lists_commands_with_examples() {
    let d = tempfile::tempdir().unwrap();
    let top = ok(d.path(), &["--help"]);
    for c in [
        "keygen",
        "roster",
        "publish",
        "subscribe",
        "status",
        "demo",
        "--broker",
        "--key",
        "--roster",
        "--profile",
    ] {
        assert!(top.contains(c), "--help lacks {c}");
    }
    for c in ["keygen", "publish", "subscribe", "status", "demo"] {
        let h = ok(d.path(), &[c, "--help"]);
        assert!(h.contains("Example"), "ewx {c} --help has no example");
    }
    let h = ok(d.path(), &["roster", "sign", "--help"]);
    assert!(h.contains("Example"));
}

#[test]
fn bad_input_gives_clear_errors() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    assert!(fails(p, &["publish"]).contains("--topic"));
    assert!(fails(p, &["status"]).contains("--broker"));
    let e = fails(
        p,
        &[
            "status",
            "--broker",
            "127.0.0.1:9",
            "--roster",
            "r.cbor",
            "--key",
            "nope.key",
        ],
    );
    assert!(e.contains("nope.key"), "{e}");
    assert!(fails(p, &["keygen", "--node", "pl", "--out", "k"]).contains("invalid node id"));
    ok(p, &["keygen", "--node", "PL", "--out", "k"]);
    assert!(fails(p, &["keygen", "--node", "PL", "--out", "k"]).contains("refusing to overwrite"));
    std::fs::write(p.join("junk.cbor"), b"junk").unwrap();
    assert!(fails(p, &["roster", "show", "--roster", "junk.cbor"]).contains("not a roster file"));
    // a secret key others can read is refused, with the fix
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(p.join("k/PL.key"), std::fs::Permissions::from_mode(0o644)).unwrap();
    std::fs::write(
        p.join("r.cbor"),
        ewx_testkit::Network::compact().signed().encode().unwrap(),
    )
    .unwrap();
    let e = fails(
        p,
        &[
            "status",
            "--broker",
            "127.0.0.1:9",
            "--roster",
            "r.cbor",
            "--key",
            "k/PL.key",
        ],
    );
    assert!(e.contains("chmod 600"), "{e}");
}

#[test]
fn keygen_roster_broker_publish_subscribe_round_trip() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    for n in ["C1", "C2", "C3", "UA", "PL", "JP", "BROKER"] {
        let out = ok(p, &["keygen", "--node", n, "--out", "keys"]);
        assert!(out.contains("key id"));
    }
    let mode = std::fs::metadata(p.join("keys/UA.key"))
        .unwrap()
        .permissions();
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(mode.mode() & 0o777, 0o600);
    ok(
        p,
        &[
            "roster",
            "init",
            "--network",
            "t",
            "--council",
            "keys/C1.pub",
            "--council",
            "keys/C2.pub",
            "--council",
            "keys/C3.pub",
            "--threshold",
            "2",
            "--out",
            "roster.cbor",
        ],
    );
    let r = ["--roster", "roster.cbor"];
    for (n, role) in [
        ("UA", "liaison"),
        ("PL", "liaison"),
        ("JP", "partner"),
        ("BROKER", "broker"),
    ] {
        ok(
            p,
            &[
                &r[..],
                &[
                    "roster",
                    "add",
                    "--pub",
                    &format!("keys/{n}.pub"),
                    "--role",
                    role,
                ],
            ]
            .concat(),
        );
    }
    for n in ["UA", "PL"] {
        let grant = [
            "roster",
            "grant",
            "--node",
            n,
            "--clearance",
            "RED",
            "--compartments",
            "CORE,AIR",
        ];
        ok(
            p,
            &[
                &r[..],
                &grant,
                &[
                    "--publish",
                    "ew.>",
                    "--publish",
                    "exercise.>",
                    "--subscribe",
                    ">",
                ],
            ]
            .concat(),
        );
    }
    ok(
        p,
        &[
            &r[..],
            &[
                "roster",
                "grant",
                "--node",
                "JP",
                "--clearance",
                "AMBER",
                "--compartments",
                "SANCTIONS",
                "--publish",
                "sanctions.>",
                "--subscribe",
                "sanctions.>",
            ],
        ]
        .concat(),
    );
    assert!(fails(p, &[&r[..], &["roster", "verify"]].concat()).contains("needs 2"));
    ok(
        p,
        &[&r[..], &["roster", "sign", "--council-key", "keys/C1.key"]].concat(),
    );
    assert!(
        fails(
            p,
            &[&r[..], &["roster", "sign", "--council-key", "keys/UA.key"]].concat()
        )
        .contains("not a council key")
    );
    ok(
        p,
        &[&r[..], &["roster", "sign", "--council-key", "keys/C3.key"]].concat(),
    );
    assert!(ok(p, &[&r[..], &["roster", "verify"]].concat()).starts_with("ok:"));
    let table = ok(p, &[&r[..], &["roster", "show"]].concat());
    assert!(
        table.contains("valid") && table.contains("SANCTIONS") && table.contains("C3"),
        "{table}"
    );

    // a real broker with this roster
    let rt = tokio::runtime::Runtime::new().unwrap();
    let config = ewx_broker::Config::from_toml(
        "listen = '127.0.0.1:0'\ndata_dir = 'data'\nkey = 'keys/BROKER.key'\nroster = 'roster.cbor'\n",
        p,
    )
    .unwrap();
    let broker = rt.block_on(ewx_broker::Broker::start(config)).unwrap();
    let addr = broker.local_addr().to_string();
    let conn = |k: &str| {
        vec![
            "--broker".to_string(),
            addr.clone(),
            "--roster".into(),
            "roster.cbor".into(),
            "--key".into(),
            format!("keys/{k}.key"),
        ]
    };

    let status = ok(
        p,
        &conn("PL")
            .iter()
            .map(String::as_str)
            .chain(["status"])
            .collect::<Vec<_>>(),
    );
    assert!(
        status.contains("TLP:RED") && status.contains("CORE"),
        "{status}"
    );

    let publish = |who: &str, extra: &[&str], body: &str| {
        let mut args = conn(who);
        args.push("publish".into());
        args.extend(extra.iter().map(|s| s.to_string()));
        let mut child = Command::new(EWX)
            .current_dir(p)
            .args(&args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(body.as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    };
    let out = publish(
        "UA",
        &[
            "--topic",
            "ew.air.missile",
            "--level",
            "AMBER",
            "--compartments",
            "CORE",
            "--precedence",
            "FLASH",
        ],
        r#"{"headline":"Air raid","body":"Take shelter"}"#,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("log index 0"));
    let out = publish(
        "UA",
        &[
            "--topic",
            "exercise.drill",
            "--level",
            "CLEAR",
            "--exercise",
        ],
        "Drill at noon\nnothing to see",
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // JP may not publish early warnings: a clear error, non-zero exit
    let out = publish("JP", &["--topic", "ew.air", "--level", "CLEAR"], "x");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no grant to publish"));

    let mut args = conn("PL");
    args.extend(
        [
            "subscribe",
            ">",
            "--from",
            "earliest",
            "--count",
            "2",
            "--json",
        ]
        .map(String::from),
    );
    let lines = ok(p, &args.iter().map(String::as_str).collect::<Vec<_>>());
    let mut msgs: Vec<serde_json::Value> = lines
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    // lanes are independent: order by log index before looking
    msgs.sort_by_key(|m| m["log_index"].as_u64());
    assert_eq!(msgs.len(), 2);
    for key in [
        "id",
        "sender",
        "topic",
        "precedence",
        "labels",
        "exercise",
        "payload",
    ] {
        assert!(msgs[0].get(key).is_some(), "no {key} in {}", msgs[0]);
    }
    assert_eq!(msgs[0]["sender"], "UA");
    assert_eq!(msgs[0]["precedence"], "FLASH");
    assert_eq!(msgs[0]["payload"]["Bulletin"]["headline"], "Air raid");
    assert_eq!(msgs[1]["exercise"], true);
    // human form: EXERCISE first and last
    let mut args = conn("PL");
    args.extend(
        [
            "subscribe",
            "exercise.>",
            "--name",
            "human",
            "--from",
            "earliest",
            "--count",
            "1",
        ]
        .map(String::from),
    );
    let human = ok(p, &args.iter().map(String::as_str).collect::<Vec<_>>());
    let lines: Vec<&str> = human.lines().collect();
    assert!(
        lines.first().unwrap().contains("EXERCISE") && lines.last().unwrap().contains("EXERCISE"),
        "{human}"
    );
    let mut args = conn("PL");
    args.extend(["witness", "--state", "w.cbor"].map(String::from));
    let w = ok(p, &args.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(
        w.contains("co-signed") || w.contains("no checkpoint"),
        "{w}"
    );
    rt.block_on(broker.shutdown()).unwrap();

    // an audit bundle for the warning, verified offline
    let id0 = msgs[0]["id"].as_str().unwrap().to_string();
    let b = ok(
        p,
        &[
            "audit",
            "bundle",
            &id0,
            "-o",
            "w.bundle",
            "--store",
            "data",
            "--roster",
            "roster.cbor",
        ],
    );
    assert!(b.contains("wrote w.bundle"), "{b}");
    let v = ok(
        p,
        &[
            "audit",
            "verify-bundle",
            "w.bundle",
            "--roster",
            "roster.cbor",
        ],
    );
    assert!(v.starts_with("verified: message"), "{v}");
    let mut bundle = std::fs::read(p.join("w.bundle")).unwrap();
    let n = bundle.len();
    bundle[n - 40] ^= 1;
    std::fs::write(p.join("w.bundle"), bundle).unwrap();
    let out = ewx(
        p,
        &[
            "audit",
            "verify-bundle",
            "w.bundle",
            "--roster",
            "roster.cbor",
        ],
    );
    assert!(!out.status.success());

    // the auditor's view of the store: sound, then tampered
    let v = ok(
        p,
        &[
            "audit",
            "verify",
            "--store",
            "data",
            "--roster",
            "roster.cbor",
        ],
    );
    assert!(v.lines().last().unwrap().starts_with("verified:"), "{v}");
    let id = msgs[0]["id"].as_str().unwrap().to_string();
    let receipts = ok(
        p,
        &[
            "audit",
            "receipts",
            &id,
            "--store",
            "data",
            "--roster",
            "roster.cbor",
        ],
    );
    assert!(receipts.contains("at log index 0"), "{receipts}");
    {
        let db = sled::open(p.join("data")).unwrap();
        db.open_tree("audit")
            .unwrap()
            .remove(3u64.to_be_bytes())
            .unwrap();
        db.flush().unwrap();
    }
    let out = ewx(
        p,
        &[
            "audit",
            "verify",
            "--store",
            "data",
            "--roster",
            "roster.cbor",
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("first bad index: 3"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[test]
fn the_demo_passes_and_keeps_the_broader_group_out_of_core_traffic() {
    let d = tempfile::tempdir().unwrap();
    let out = ewx(d.path(), &["demo"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "demo failed:\n{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("all expectations held"));
    for n in ["JP", "KR"] {
        let row = text
            .lines()
            .find(|l| l.trim_start().starts_with(n) && l.contains("partner"))
            .unwrap();
        let cols: Vec<&str> = row.split_whitespace().collect();
        assert_eq!(cols[3], "0", "{n} got CORE traffic: {row}");
    }
    assert!(text.contains("audit log: verified"));
}

#[test]
fn the_demo_holds_on_a_cluster_whose_leader_is_stopped_midway() {
    let d = tempfile::tempdir().unwrap();
    let out = ewx(d.path(), &["demo", "--cluster"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "demo --cluster failed:\n{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("all expectations held"));
    assert!(text.contains("stopped midway"), "{text}");
    // every replica's log verifies, the surviving two alike
    assert_eq!(
        text.matches("audit log of replica")
            .filter(|_| true)
            .count(),
        3,
        "{text}"
    );
    assert!(!text.contains("FAILED"), "{text}");
}

#[test]
fn keys_example_is_what_the_generator_writes() {
    let d = tempfile::tempdir().unwrap();
    ok(d.path(), &["demo", "--write-network", "net"]);
    let committed = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../keys-example");
    let mut files = 0;
    for sub in ["", "keys", "council", "cluster"] {
        for e in std::fs::read_dir(d.path().join("net").join(sub)).unwrap() {
            let e = e.unwrap();
            if e.file_type().unwrap().is_file() {
                let rel = Path::new(sub).join(e.file_name());
                let want = std::fs::read(committed.join(&rel))
                    .unwrap_or_else(|_| panic!("keys-example lacks {}", rel.display()));
                assert_eq!(
                    std::fs::read(e.path()).unwrap(),
                    want,
                    "{} differs: regenerate keys-example",
                    rel.display()
                );
                files += 1;
            }
        }
    }
    assert!(files >= 27, "{files}");
}
