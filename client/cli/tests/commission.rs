//! `ewx exercise`, `ewx commission` and `ewx report breach` from flags, as people use them
//! against a real broker on loopback with the demo network: a notice amended (the change
//! and the threshold grown past shown), an invitation answered, the year's calendar; two
//! reports cited by an attribution, a finding signed, dissented from and adopted, and a
//! snapback fired on it — with clear errors for what the fold refuses.
#![allow(clippy::unwrap_used)]

mod support;

use support::*;

const DAY: u64 = 86_400_000;

fn notice(troops: u32, start_ms: u64) -> String {
    serde_json::json!({
        "name": "IRON WOLF-27", "purpose": "brigade field training",
        "states": ["LT", "PL"], "command_level": "division",
        "start_ms": start_ms, "end_ms": start_ms + 5 * DAY,
        "area": "Pabradė training area", "troops": troops, "tanks": 40,
        "armoured_vehicles": 200, "artillery": 36, "aircraft": 0, "helicopters": 6,
        "sorties": 0, "observation_invited": true,
    })
    .to_string()
}

/// The 32-hex-digit id after `word` in `text`.
fn id_after(text: &str, word: &str) -> String {
    let at = text
        .find(word)
        .unwrap_or_else(|| panic!("{word:?} in {text}"))
        + word.len();
    text[at..].trim_start()[..32].to_string()
}

#[test]
fn exercises_from_the_command_line() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    let (rt, broker) = demo_broker(p);
    let addr = broker.local_addr().to_string();
    let a = addr.as_str();
    // 20 days ahead: inside the 42 days a notifiable exercise must be notified
    let start = ewx_net::now_ms() + 20 * DAY;
    std::fs::write(p.join("v1.json"), notice(12_500, start)).unwrap();
    std::fs::write(p.join("v2.json"), notice(15_500, start)).unwrap();
    let out = ok(
        p,
        a,
        "PL",
        &[
            "exercise", "notify", "--file", "v1.json", "--invite", "GB,TR",
        ],
    );
    assert!(
        out.contains("EXERCISE notified") && out.contains("FLAG LATE"),
        "{out}"
    );
    let case = id_after(&out, "as case");
    let e = fails(
        p,
        a,
        "UA",
        &["exercise", "amend", &case, "--file", "v2.json"],
    );
    assert!(e.contains("not a party"), "{e}");
    let out = ok(
        p,
        a,
        "PL",
        &["exercise", "amend", &case, "--file", "v2.json"],
    );
    assert!(out.contains("troops: 12500 -> 15500"), "{out}");
    assert!(out.contains("GREW PAST A THRESHOLD"), "{out}");
    let out = ok(
        p,
        a,
        "GB",
        &["exercise", "answer", &case, "--accept", "--text", "two"],
    );
    assert!(out.contains("accepted"), "{out}");
    let e = fails(p, a, "GB", &["exercise", "answer", &case, "--decline"]);
    assert!(e.contains("stage out of order"), "{e}");
    let e = fails(p, a, "GB", &["exercise", "answer", &case]);
    assert!(e.contains("--accept") || e.contains("--decline"), "{e}");
    let show = ok(p, a, "TR", &["case", "show", &case]);
    assert!(show.starts_with("===== EXERCISE"), "{show}");
    assert!(show.contains("troops: 12500 -> 15500"), "{show}");

    // the calendar, as JP (the broader group reads exercise notices too)
    let year = ewx_cli::text::year_of(start).to_string();
    let cal = ok(
        p,
        a,
        "JP",
        &["exercise", "calendar", "--year", &year, "--json"],
    );
    let v: serde_json::Value = serde_json::from_str(cal.trim()).unwrap();
    assert_eq!(v["case"], case.as_str());
    assert_eq!(
        (v["troops"].as_u64(), v["notices"].as_u64()),
        (Some(15_500), Some(2))
    );
    assert!(v["flags"].to_string().contains("GREW"), "{cal}");
    let none = ok(p, a, "JP", &["exercise", "calendar", "--year", "1999"]);
    assert!(none.contains("no exercises notified for 1999"), "{none}");
    rt.block_on(broker.shutdown()).unwrap();
}

#[test]
fn the_commission_from_the_command_line() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    let (rt, broker) = demo_broker(p);
    let addr = broker.local_addr().to_string();
    let a = addr.as_str();
    let flags = [
        "report",
        "breach",
        "--observed",
        "heavy-weapons-outside-withdrawal-lines",
        "--lat",
        "48.015",
        "--lon",
        "37.802",
        "--sensor",
        "uav",
        "--count",
        "3",
        "--description",
        "three howitzers",
    ];
    let r1 = id_after(&ok(p, a, "MON1", &flags), "filed report");
    let r2 = id_after(&ok(p, a, "MON1", &flags), "filed report");
    let bad = fails(
        p,
        a,
        "MON1",
        &[
            "report",
            "breach",
            "--observed",
            "x",
            "--lat",
            "1",
            "--lon",
            "1",
        ],
    );
    assert!(bad.contains("not valid ceasefire report JSON"), "{bad}");
    let csv = ok(p, a, "GB", &["report", "export"]);
    assert!(
        csv.contains(&r1) && csv.contains("48.015000,37.802000,1000"),
        "{csv}"
    );

    let cite = format!("{r1},{r2}");
    let open = [
        "commission",
        "open",
        "--cite",
        &cite,
        "--question",
        "who fired?",
    ];
    let e = fails(p, a, "GB", &open);
    assert!(e.contains("not a commission member"), "{e}");
    let out = ok(p, a, "US", &open);
    let case = id_after(&out, "opened attribution");
    let e = fails(p, a, "US", &["commission", "sign", &case]);
    assert!(e.contains("no finding is signed"), "{e}");
    let sign = [
        "commission",
        "sign",
        &case,
        "--verdict",
        "responsible",
        "--responsible",
        "the occupying force",
        "--characterisation",
        "armed-attack",
        "--remedy",
        "withdraw the howitzers",
        "--remedy-within-hours",
        "48",
        "--reasoning",
        "both reports",
    ];
    let out = ok(p, a, "US", &sign);
    assert!(
        out.contains("signed finding") && !out.contains("ADOPTED"),
        "{out}"
    );
    let out = ok(
        p,
        a,
        "DE",
        &["commission", "dissent", &case, "--text", "unclear"],
    );
    assert!(out.contains("dissented"), "{out}");
    let e = fails(p, a, "DE", &["commission", "sign", &case]);
    assert!(e.contains("duplicate attestation"), "{e}");
    let out = ok(p, a, "FR", &["commission", "sign", &case]);
    assert!(out.contains("ADOPTED"), "{out}");
    let json = ok(p, a, "FR", &["case", "show", &case, "--json"]);
    let v: serde_json::Value = serde_json::from_str(json.trim()).unwrap();
    assert!(
        v["state"].as_str().unwrap().starts_with("ADOPTED"),
        "{json}"
    );
    assert_eq!(v["votes"].as_array().unwrap().len(), 3, "{json}");
    assert_eq!(v["cites"].as_array().unwrap().len(), 2, "{json}");

    let fire = [
        "commission",
        "snapback",
        &case,
        "--parties",
        "JP,KR",
        "--regime",
        "annex",
        "--measure",
        "reimpose",
    ];
    let e = fails(p, a, "JP", &fire);
    assert!(!e.is_empty(), "JP may not read the attribution");
    let out = ok(p, a, "UA", &fire);
    assert!(out.contains("FIRED"), "{out}");
    let snap = id_after(&out, "snapback");
    ok(
        p,
        a,
        "JP",
        &["case", "reply", &snap, "--stage", "reimposed"],
    );
    let show = ok(p, a, "UA", &["case", "show", &snap]);
    assert!(
        show.contains("FIRED by a finding") && show.contains(&case),
        "{show}"
    );
    rt.block_on(broker.shutdown()).unwrap();
}
