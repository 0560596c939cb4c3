//! `ewx case` as people use it, against a real broker on loopback with the demo network:
//! open a consultation and a snapback, reply, attest, list, show and watch, with clear
//! errors for what the case fold refuses.
#![allow(clippy::unwrap_used)]

mod support;

use std::process::Command;

use support::*;

#[test]
fn cases_from_the_command_line() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    let (rt, broker) = demo_broker(p);
    let addr = broker.local_addr().to_string();
    let a = addr.as_str();
    let help = Command::new(EWX).args(["case", "--help"]).output().unwrap();
    assert!(String::from_utf8_lossy(&help.stdout).contains("Example"));

    // a consultation to every other liaison by default
    let out = ok(
        p,
        a,
        "UA",
        &[
            "case",
            "open",
            "consultation",
            "--summary",
            "strike on Lviv",
            "--json",
        ],
    );
    let case = field(&out, "case");
    assert!(out.contains("\"PL\"") && !out.contains("\"JP\""), "{out}");
    ok(
        p,
        a,
        "PL",
        &[
            "case",
            "reply",
            &case,
            "--stage",
            "acknowledged",
            "--text",
            "received",
        ],
    );
    let e = fails(
        p,
        a,
        "PL",
        &["case", "reply", &case, "--stage", "acknowledged"],
    );
    assert!(e.contains("stage out of order"), "{e}");
    let e = fails(
        p,
        a,
        "PL",
        &[
            "case",
            "reply",
            &case,
            "--stage",
            "decided",
            "--decision",
            "maybe",
        ],
    );
    assert!(e.contains("join, decline or measure"), "{e}");
    let e = fails(p, a, "JP", &["case", "show", &case]);
    assert!(e.contains("no case") && e.contains("JP"), "{e}");
    let e = fails(p, a, "PL", &["case", "show", "not-a-case"]);
    assert!(e.contains("not a case id"), "{e}");
    let show = ok(p, a, "UA", &["case", "show", &case]);
    assert!(
        show.contains("CONSULTATION") && show.contains("consulted"),
        "{show}"
    );
    let pl_row = show
        .lines()
        .find(|l| l.trim_start().starts_with("PL"))
        .unwrap();
    assert!(
        pl_row.contains("T+") && pl_row.contains("due in"),
        "{pl_row}"
    );
    let list = ok(p, a, "GB", &["case", "list"]);
    assert!(
        list.contains(&case) && list.contains("0/7 answered"),
        "{list}"
    );
    assert!(ok(p, a, "JP", &["case", "list"]).contains("no cases"));

    // a snapback: UA triggers (1 of 2), GB attests: fired; JP reimposes
    let out = ok(
        p,
        a,
        "UA",
        &[
            "case",
            "open",
            "snapback",
            "--statement",
            "armed attack, 2026-12-02",
            "--regime",
            "annex",
            "--measure",
            "reimpose",
            "--parties",
            "JP,KR",
            "--json",
        ],
    );
    let snap = field(&out, "case");
    let e = fails(p, a, "US", &["case", "attest", &snap]);
    assert!(e.contains("not an attester"), "{e}");
    let e = fails(
        p,
        a,
        "JP",
        &["case", "reply", &snap, "--stage", "reimposed"],
    );
    assert!(e.contains("not fired"), "{e}");
    ok(p, a, "GB", &["case", "attest", &snap]);
    ok(
        p,
        a,
        "JP",
        &[
            "case",
            "reply",
            &snap,
            "--stage",
            "reimposed",
            "--text",
            "in force",
        ],
    );
    let json = ok(p, a, "KR", &["case", "show", &snap, "--json"]);
    assert!(field(&json, "state").starts_with("FIRED"), "{json}");
    let v: serde_json::Value = serde_json::from_str(json.trim()).unwrap();
    assert_eq!(v["parties"]["JP"]["reimposed"]["late"], false, "{json}");
    assert_eq!(v["parties"]["KR"]["reimposed"]["overdue"], false, "{json}");
    let watch = ok(p, a, "KR", &["case", "watch", &snap, "--count", "1"]);
    assert!(watch.contains("SNAPBACK"), "{watch}");
    rt.block_on(broker.shutdown()).unwrap();
}

#[test]
fn ceasefire_reports_are_filed_and_exported() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    let (rt, broker) = demo_broker(p);
    let addr = broker.local_addr().to_string();
    let a = addr.as_str();
    let report = |count: u32| {
        format!(
            r#"{{"window":{{"start_ms":1800000000000,"end_ms":1800000600000}},
            "location":{{"lat_e6":48015000,"lon_e6":37802000,"precision_m":500}},
            "sensor":"uav","observed":"projectile-in-flight","count":{count},
            "casualties":[0,1,"corroborated"],"description":"rockets, \"two\" impacts"}}"#
        )
    };
    std::fs::write(p.join("breach.json"), report(2)).unwrap();
    std::fs::write(p.join("empty.json"), report(0)).unwrap();
    std::fs::write(
        p.join("blame.json"),
        report(1).replace("\"count\"", "\"attribution\":\"X\",\"count\""),
    )
    .unwrap();
    let out = ok(p, a, "UA", &["report", "breach", "--file", "breach.json"]);
    assert!(out.contains("filed report"), "{out}");
    let e = fails(p, a, "UA", &["report", "breach", "--file", "empty.json"]);
    assert!(e.contains("at least one event"), "{e}");
    let e = fails(p, a, "UA", &["report", "breach", "--file", "blame.json"]);
    assert!(e.contains("not valid ceasefire report JSON"), "{e}");

    let csv = ok(p, a, "PL", &["report", "export"]);
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines.len(), 2, "{csv}");
    assert!(lines[0].starts_with("log_index,id,sender,created_ms,start_ms,"));
    assert!(
        lines[1].contains(",UA,") && lines[1].contains("48.015000,37.802000,500"),
        "{csv}"
    );
    assert!(
        lines[1].contains("projectile-in-flight,2,")
            && lines[1].ends_with("\"rockets, \"\"two\"\" impacts\""),
        "{csv}"
    );
    let jsonl = ok(p, a, "GB", &["report", "export", "--format", "jsonl"]);
    let v: serde_json::Value = serde_json::from_str(jsonl.trim()).unwrap();
    assert_eq!(v["report"]["count"], 2);
    assert_eq!(v["sender"], "UA");
    let e = fails(p, a, "JP", &["report", "export"]);
    assert!(
        e.contains("NotPermitted") || e.contains("not permitted"),
        "{e}"
    );
    rt.block_on(broker.shutdown()).unwrap();
}
