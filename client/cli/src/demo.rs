//! `ewx demo`: the Compact exchange in one process. An embedded broker on loopback with a
//! temporary store and the demo network; every node connects over real QUIC and plays its
//! part; then a table of what each node received and was denied, the FLASH latency, and
//! an offline verification of the audit log. The report says whether every expectation
//! held, so the command can exit non-zero when one did not.

use ewx_net::now_ms;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ewx_proto::frame::{ExerciseFilter, RejectReason, StartAt};
use ewx_proto::payload::{
    Bulletin, ConsultationRequest, ConsultationResponse, ExerciseNotice, SanctionsTrigger, Stance,
};
use ewx_proto::{Draft, Kind, Labels, Level, Payload, Precedence, Topic, TopicPattern};

use crate::error::{Error, Result};
use crate::network;
use ewx_client::{Client, SubscriptionOptions};
use ewx_testkit::{BROADER, CORE};

/// What the demo found.
#[derive(Debug)]
pub struct Report {
    /// The printed narrative and table.
    pub text: String,
    /// Expectations that failed (empty: success).
    pub failures: Vec<String>,
}

#[derive(Debug, Default, Clone)]
struct Seen {
    kinds: Vec<Kind>,
    core: usize,
    exercise: usize,
    flash_latency: Option<Duration>,
    denied: Vec<String>,
}

fn draft(
    topic: &str,
    level: Level,
    comps: &str,
    precedence: Precedence,
    payload: Payload,
) -> Result<Draft> {
    Ok(Draft {
        topic: Topic::new(topic)?,
        precedence,
        labels: Labels::new(level, Labels::parse_compartments(comps)?),
        payload,
        seq: 0,
        expires_ms: None,
        receipt: false,
    })
}

fn bulletin(headline: &str, body: &str) -> Payload {
    Payload::Bulletin(Bulletin {
        headline: headline.into(),
        body: body.into(),
        area: Some("Kyiv oblast".into()),
        event_ms: Some(now_ms()),
        confidence: Some("high".into()),
    })
}

/// Run the demo, printing progress into the report text.
///
/// # Errors
/// Only if the demo could not even start (no loopback, no temp dir); failed expectations
/// are reported in [`Report::failures`].
pub async fn run() -> Result<Report> {
    let mut text = String::new();
    let mut failures = Vec::new();
    let mut expect = |ok: bool, what: String| {
        if !ok {
            failures.push(what);
        }
    };
    let dir =
        tempfile::tempdir().map_err(|e| Error::File(format!("cannot make a temp dir: {e}")))?;
    network::write(dir.path())?;
    let config = ewx_broker::Config::from_toml(
        "listen = '127.0.0.1:0'\ndata_dir = 'data'\nkey = 'keys/BROKER.key'\nroster = 'roster.cbor'\n\
         [checkpoint]\nevery_entries = 50\ninterval_ms = 500\n",
        dir.path(),
    )?;
    let broker = ewx_broker::Broker::start(config).await?;
    let addr = broker.local_addr();
    let roster = ewx_testkit::Network::compact().roster();
    let _ = writeln!(
        text,
        "ewx demo: the Kyiv Security Compact exchange on {addr} (DEMO KEYS ONLY)"
    );
    let _ = writeln!(
        text,
        "  roster v{} of {}, council 2 of 3, {} nodes\n",
        roster.version(),
        ewx_testkit::NETWORK,
        roster.body().nodes.len()
    );

    let mut clients = BTreeMap::new();
    for n in CORE.iter().chain(&BROADER) {
        clients.insert(
            *n,
            Client::connect(addr, ewx_testkit::keys(n), roster.clone()).await?,
        );
    }
    let client = |n: &str| {
        clients
            .get(n)
            .cloned()
            .ok_or_else(|| Error::Unexpected(format!("no client {n}")))
    };
    let seen: Arc<Mutex<BTreeMap<String, Seen>>> = Arc::default();
    let flash_sent: Arc<Mutex<Option<Instant>>> = Arc::default();
    let mut collectors = Vec::new();
    for (name, c) in &clients {
        let mut sub = c
            .subscribe_with(
                "demo",
                TopicPattern::new(">")?,
                SubscriptionOptions {
                    from: StartAt::Latest,
                    ..Default::default()
                },
            )
            .await?;
        let (seen, flash_sent, c, name) = (
            seen.clone(),
            flash_sent.clone(),
            c.clone(),
            name.to_string(),
        );
        collectors.push(tokio::spawn(async move {
            while let Some(d) = sub.next().await {
                let Ok(d) = d else { continue };
                let h = d.envelope.header().clone();
                {
                    let mut all = seen.lock().unwrap_or_else(|p| p.into_inner());
                    let s = all.entry(name.clone()).or_default();
                    s.kinds.push(h.kind);
                    s.core +=
                        usize::from(h.labels.compartments.iter().any(|c| c.as_str() == "CORE"));
                    s.exercise += usize::from(h.labels.exercise);
                    if h.precedence == Precedence::Flash {
                        s.flash_latency = flash_sent
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .map(|t| t.elapsed());
                    }
                }
                // guarantors answer Ukraine's consultation request
                if let (Some(Payload::ConsultationRequest(req)), true) =
                    (d.payload.as_ref(), name != "UA")
                {
                    let answer = Payload::ConsultationResponse(ConsultationResponse {
                        case_id: req.case_id.clone(),
                        stance: Stance::Acknowledged,
                        statement: format!("{name} will consult within 24 h"),
                    });
                    if let Ok(dr) = draft(
                        "consult.response",
                        Level::Amber,
                        "CORE",
                        Precedence::Immediate,
                        answer,
                    ) {
                        let _ = c.publish(dr).await;
                    }
                }
            }
        }));
    }

    // JP tries to read early-warning traffic: refused by the broker
    let jp = client("JP")?;
    let denied = jp
        .subscribe(
            "ew",
            TopicPattern::new("ew.>")?,
            StartAt::Latest,
            ExerciseFilter::All,
        )
        .await;
    let jp_denied = matches!(
        denied,
        Err(ewx_client::Error::Rejected {
            reason: RejectReason::NotPermitted,
            ..
        })
    );
    expect(jp_denied, "JP's subscription to ew.> is refused".into());
    seen.lock()
        .unwrap_or_else(|p| p.into_inner())
        .entry("JP".into())
        .or_default()
        .denied
        .push("ew.>".into());
    let _ = writeln!(
        text,
        "  JP  subscribe ew.>           -> {}",
        if jp_denied {
            "DENIED (no grant for military early warning)"
        } else {
            "NOT DENIED"
        }
    );

    let ua = client("UA")?;
    let mut receipts = ua
        .receipts()
        .ok_or_else(|| Error::Unexpected("receipts taken".into()))?;
    *flash_sent.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
    let steps: Vec<(&str, Draft)> = vec![
        (
            "UA",
            draft(
                "ew.air.missile",
                Level::Amber,
                "CORE,AIR",
                Precedence::Flash,
                bulletin(
                    "AIR RAID: ballistic missiles launched toward Kyiv",
                    "Take shelter. Impact expected within 6 minutes.",
                ),
            )?,
        ),
        (
            "UA",
            draft(
                "ew.assessment.weekly",
                Level::Amber,
                "CORE",
                Precedence::Priority,
                bulletin(
                    "Weekly threat assessment",
                    "Force build-up near the north-eastern border continues.",
                ),
            )?,
        ),
        ("PL", {
            let mut d = draft(
                "exercise.notice",
                Level::Clear,
                "",
                Precedence::Routine,
                Payload::ExerciseNotice(ExerciseNotice {
                    name: "ANAKONDA-26".into(),
                    purpose: "defensive command-post and field training".into(),
                    states: vec!["PL".into(), "LT".into(), "US".into()],
                    command_level: "corps".into(),
                    start_ms: now_ms() + 86_400_000,
                    end_ms: now_ms() + 10 * 86_400_000,
                    area: "Orzysz training area, 53.81N 21.95E".into(),
                    troops: 12_500,
                    tanks: 90,
                    armoured_vehicles: 340,
                    artillery: 60,
                    aircraft: 24,
                    helicopters: 18,
                    sorties: 120,
                }),
            )?;
            d.labels.exercise = true;
            d
        }),
        ("UA", {
            let req = ConsultationRequest::new(
                "UA-2026-11-001".into(),
                "Armed attack on Kharkiv oblast".into(),
                now_ms() - 3_600_000,
                now_ms(),
            );
            let mut d = draft(
                "consult.request",
                Level::Red,
                "CORE",
                Precedence::Immediate,
                Payload::ConsultationRequest(req),
            )?;
            d.receipt = true;
            d
        }),
        (
            "UA",
            draft(
                "sanctions.snapback",
                Level::Green,
                "SANCTIONS",
                Precedence::Priority,
                Payload::SanctionsTrigger(SanctionsTrigger {
                    regime: "Compact sanctions annex".into(),
                    measure: "snapback of suspended measures".into(),
                    effective_ms: now_ms(),
                }),
            )?,
        ),
    ];
    let mut consult_id = None;
    for (who, d) in steps {
        let (topic, prec, labels, kind) = (
            d.topic.clone(),
            d.precedence,
            d.labels.clone(),
            d.payload.kind(),
        );
        let ack = client(who)?.publish(d).await?;
        if kind == Kind::ConsultationRequest {
            consult_id = Some(ack.id);
        }
        let _ = writeln!(
            text,
            "  {who:<3} publish {:<22} {:<9} {:<28} -> log #{}",
            topic.as_str(),
            prec.as_str(),
            labels.to_string(),
            ack.log_index
        );
    }

    // a forgery: UA's name, somebody else's signature
    let env = ua
        .seal(draft(
            "ew.air.missile",
            Level::Amber,
            "CORE",
            Precedence::Flash,
            bulletin("FAKE: all clear", "forged"),
        )?)
        .await?;
    let forged = env.with_signature(ewx_proto::keys::Signature([0x42; 64]));
    let r = ua.publish_envelope(&forged.encode()?).await;
    let rejected = matches!(
        r,
        Err(ewx_client::Error::Rejected {
            reason: RejectReason::BadSignature,
            ..
        })
    );
    expect(rejected, "a forged envelope is rejected".into());
    let _ = writeln!(
        text,
        "  ??  publish forged \"all clear\"  -> {}",
        if rejected {
            "REJECTED (bad signature)"
        } else {
            "ACCEPTED"
        }
    );

    // wait for the traffic: 5 + 7 responses at each core node, 2 at JP and KR
    let want = |n: &str| {
        if BROADER.contains(&n) {
            2
        } else {
            5 + CORE.len() - 1
        }
    };
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let done = {
            let all = seen.lock().unwrap_or_else(|p| p.into_inner());
            CORE.iter()
                .chain(&BROADER)
                .all(|n| all.get(*n).is_some_and(|s| s.kinds.len() >= want(n)))
        };
        if done || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut receipt_from = BTreeSet::new();
    while let Ok(Some(r)) = tokio::time::timeout(Duration::from_millis(500), receipts.recv()).await
    {
        if Some(r.id) == consult_id {
            receipt_from.insert(r.by.to_string());
        }
    }
    tokio::time::sleep(Duration::from_millis(300)).await; // let late deliveries show up
    for c in clients.values() {
        c.clone().close().await;
    }
    for t in collectors {
        t.abort();
    }
    broker.shutdown().await?;

    let seen = seen.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let _ = writeln!(
        text,
        "\n  node  role     received  CORE  exercise  denied  FLASH latency"
    );
    for n in CORE.iter().chain(&BROADER) {
        let s = seen.get(*n).cloned().unwrap_or_default();
        let role = if BROADER.contains(n) {
            "partner"
        } else {
            "liaison"
        };
        let lat = s.flash_latency.map_or("-".to_string(), |d| {
            format!("{:.1} ms", d.as_secs_f64() * 1000.0)
        });
        let denied = if s.denied.is_empty() {
            "-".to_string()
        } else {
            s.denied.join(",")
        };
        let _ = writeln!(
            text,
            "  {n:<5} {role:<8} {:>8}  {:>4}  {:>8}  {denied:<6}  {lat}",
            s.kinds.len(),
            s.core,
            s.exercise
        );
        expect(
            s.kinds.len() == want(n),
            format!(
                "{n} received {} messages, expected {}",
                s.kinds.len(),
                want(n)
            ),
        );
        if BROADER.contains(n) {
            expect(
                s.core == 0,
                format!("{n} received {} CORE messages", s.core),
            );
            expect(
                s.kinds.contains(&Kind::SanctionsTrigger),
                format!("{n} got the sanctions snapback"),
            );
        } else {
            expect(
                s.flash_latency.is_some(),
                format!("{n} got the FLASH warning"),
            );
        }
    }
    let guarantors: BTreeSet<String> = CORE[1..].iter().map(|s| s.to_string()).collect();
    let all_receipts = guarantors.is_subset(&receipt_from);
    expect(
        all_receipts,
        format!(
            "receipts for the consultation request from every guarantor (got {receipt_from:?})"
        ),
    );
    let _ = writeln!(
        text,
        "\n  consultation request: receipts from {} of {} guarantors; deadlines 24 h / 72 h",
        guarantors.intersection(&receipt_from).count(),
        guarantors.len()
    );

    let copy = crate::offline::StoreCopy::open(&dir.path().join("data"))?;
    match ewx_client::audit::verify(&copy, roster.clone(), 0, &mut |_, _| {}).await {
        Ok(s) => {
            let _ = writeln!(
                text,
                "  audit log: verified: {} entries, {} envelopes signed by their senders, {} receipts, {} signed checkpoints, root {}",
                s.entries,
                s.envelopes,
                s.receipts,
                s.checkpoints,
                s.root.short()
            );
        }
        Err(ewx_client::Error::Unsound(f)) => {
            let _ = writeln!(text, "  audit log: FAILED: {f}");
            failures.push(format!("audit verification: {f}"));
        }
        Err(e) => failures.push(format!("audit verification could not run: {e}")),
    }
    Ok(Report { text, failures })
}
