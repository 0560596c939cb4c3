//! Cases end to end, on a real broker with a simulated clock: a consultation through its
//! 24 h and 72 h deadlines (reminders only to the parties that have not answered, late
//! answers recorded as late, the index rebuilt after a restart), a snapback fired by
//! 2 of 3 attesters, every refusal with its own reason and audit entry, the parties'
//! folds agreeing with the broker's record, and a tampered `CaseDeadline` entry failing
//! the audit.
#![allow(clippy::unwrap_used)]

use ewx_client::cases::{CaseView, default_parties};
use ewx_client::{Client, Error};
use ewx_net::Clock;
use ewx_proto::audit::Event;
use ewx_proto::case::{CaseTag, CaseType, RefusalKind, Stage, Status, statement_hash};
use ewx_proto::frame::RejectReason;
use ewx_proto::payload::{ConsultationRequest, SanctionsTrigger};
use ewx_proto::{Labels, Level, MessageId, Payload};
use ewx_tests::cases::{
    deadlines, draft, labels, no_reminder, refused, rejection_audited, reminder, reply, text,
};
use ewx_tests::{TestNet, audit_events, copy_dir, id, verify_copy};

const H: u64 = 3_600_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consultation_runs_through_its_deadlines_on_a_simulated_clock() {
    let net = TestNet::new();
    let clock = Clock::simulated();
    let broker = net.start_broker_with_clock(&clock, &[6 * H, H]).await;
    let ua = net.client_with_clock(&broker, "UA", &clock).await;
    let pl = net.client_with_clock(&broker, "PL", &clock).await;
    let us = net.client_with_clock(&broker, "US", &clock).await;
    let xx = net.client_with_clock(&broker, "XX", &clock).await;
    let (mut pl_rem, mut us_rem) = (pl.reminders().unwrap(), us.reminders().unwrap());
    let core = labels("CORE");
    // the default parties of a consultation are the liaisons but the sender: PL here
    assert_eq!(
        default_parties(&net.roster, &id("UA"), &core, CaseType::Consultation),
        [id("PL")]
    );
    let request = Payload::ConsultationRequest(ConsultationRequest::new(
        "UA-2026-001".into(),
        "armed attack on the eastern border".into(),
        clock.now_ms(),
        clock.now_ms(),
    ));
    let open = CaseTag::open(CaseType::Consultation, vec![id("PL"), id("US")]);
    let ack = ua
        .publish_case(draft("consult.request", core.clone(), request, open))
        .await
        .unwrap();
    let case = ack.id;
    let c = CaseType::Consultation;
    for who in [&pl, &us] {
        reply(who, case, c, Stage::Acknowledged).await.unwrap();
    }
    reply(&pl, case, c, Stage::Consulted).await.unwrap();

    // bad input, each refused with its own reason
    assert_eq!(
        refused(reply(&pl, case, c, Stage::Acknowledged).await),
        RefusalKind::StageOutOfOrder
    );
    assert_eq!(
        refused(reply(&xx, case, c, Stage::Acknowledged).await),
        RefusalKind::NotAParty
    );
    assert_eq!(
        refused(reply(&pl, MessageId([7; 16]), c, Stage::Decided).await),
        RefusalKind::UnknownCase
    );
    let green = Labels::new(Level::Green, Labels::parse_compartments("CORE").unwrap());
    let wide = draft(
        "consult.request",
        green,
        text("x"),
        CaseTag::reply(case, c, Stage::Consulted),
    );
    match us.publish_case(wide).await {
        Err(Error::Rejected {
            reason: RejectReason::Case(RefusalKind::LabelsWider),
            ..
        }) => {}
        other => panic!("{other:?}"),
    }

    // T-6 h of the 24 h deadline: only US, which has not consulted, is reminded
    clock.advance(18 * H + 1000);
    let r = reminder(&mut us_rem).await.expect("US is reminded at T-6h");
    assert_eq!((r.case, r.stage), (case, Stage::Consulted));
    no_reminder(&mut pl_rem).await;
    clock.advance(5 * H);
    assert!(reminder(&mut us_rem).await.is_some(), "T-1h");
    clock.advance(H);
    let found = deadlines(&broker, 1).await;
    assert_eq!(found, [(Stage::Consulted, vec!["US".to_string()])]);
    assert!(reminder(&mut us_rem).await.is_some(), "and when it passes");
    // a late answer is recorded as late, not refused
    reply(&us, case, c, Stage::Consulted).await.unwrap();
    let view = us.case(case).await.unwrap();
    assert!(
        view.case.parties[&id("US")]
            .answer(Stage::Consulted)
            .unwrap()
            .late
    );
    assert!(
        !view.case.parties[&id("PL")]
            .answer(Stage::Consulted)
            .unwrap()
            .late
    );
    assert!(view.disagreements.is_empty(), "{:?}", view.disagreements);
    assert!(matches!(
        view.items[0].payload,
        Some(Payload::ConsultationRequest(_))
    ));

    // the broker restarts: its case index is rebuilt from the log
    for cl in [ua, pl, us, xx] {
        cl.close().await;
    }
    broker.shutdown().await.unwrap();
    let broker = net.start_broker_with_clock(&clock, &[6 * H, H]).await;
    let pl = net.client_with_clock(&broker, "PL", &clock).await;
    let us = net.client_with_clock(&broker, "US", &clock).await;
    let mut us_rem = us.reminders().unwrap();
    assert_eq!(
        refused(reply(&pl, case, c, Stage::Consulted).await),
        RefusalKind::StageOutOfOrder
    );
    reply(&pl, case, c, Stage::Decided).await.unwrap();
    clock.advance(48 * H);
    let found = deadlines(&broker, 2).await;
    assert_eq!(found[1], (Stage::Decided, vec!["US".to_string()]));
    let r = reminder(&mut us_rem)
        .await
        .expect("US is reminded when the 72 h deadline passes");
    assert_eq!(r.stage, Stage::Decided);
    let view = pl.case(case).await.unwrap();
    assert_eq!(view.recorded.len(), 2);
    assert!(view.disagreements.is_empty());
    assert_eq!(view.case.status, Status::Open);
    assert_eq!(pl.cases(10).await.unwrap().len(), 1);
    let jp = net.client_with_clock(&broker, "JP", &clock).await;
    assert!(
        jp.cases(10).await.unwrap().is_empty(),
        "JP may not read a CORE case"
    );
    assert!(matches!(
        jp.case(case).await,
        Err(Error::Rejected {
            reason: RejectReason::Case(RefusalKind::UnknownCase),
            ..
        })
    ));

    // every refusal is in the audit log with its reason
    let rejected: Vec<String> = audit_events(broker.store())
        .into_iter()
        .filter_map(|e| match e {
            Event::Rejected { reason, .. } => Some(reason),
            _ => None,
        })
        .collect();
    for why in [
        "stage out of order",
        "not a party",
        "unknown case",
        "labels wider",
    ] {
        assert!(
            rejected.iter().any(|r| r.contains(why)),
            "{why} not audited in {rejected:?}"
        );
    }
    for cl in [pl, us, jp] {
        cl.close().await;
    }
    broker.shutdown().await.unwrap();
    let summary = verify_copy(&net.data_dir(), &net.roster, 0).await.unwrap();
    assert_eq!((summary.cases, summary.case_deadlines), (1, 2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapback_fires_at_two_attesters_and_a_tampered_deadline_fails_the_audit() {
    let net = TestNet::new();
    let clock = Clock::simulated();
    let broker = net.start_broker_with_clock(&clock, &[H]).await;
    let ua = net.client_with_clock(&broker, "UA", &clock).await;
    let pl = net.client_with_clock(&broker, "PL", &clock).await;
    let jp = net.client_with_clock(&broker, "JP", &clock).await;
    let kr = net.client_with_clock(&broker, "KR", &clock).await;
    let statement = "armed attack on Ukraine, 2026-12-01";
    let mut tag = CaseTag::open(CaseType::Snapback, vec![id("JP"), id("KR"), id("US")]);
    tag.statement = Some(statement_hash(statement));
    tag.within_ms = Some(24 * H);
    let trigger = Payload::SanctionsTrigger(SanctionsTrigger {
        regime: "Compact snapback annex".into(),
        measure: "reimpose suspended measures".into(),
        effective_ms: clock.now_ms(),
        statement: Some(statement.into()),
    });
    let s = labels("SANCTIONS");
    let case = ua
        .publish_case(draft("sanctions.snapback", s.clone(), trigger, tag))
        .await
        .unwrap()
        .id;
    let sb = CaseType::Snapback;
    assert_eq!(
        refused(reply(&jp, case, sb, Stage::Reimposed).await),
        RefusalKind::StageOutOfOrder,
        "not fired"
    );
    let attest = |c: &Client| {
        let mut t = CaseTag::reply(case, sb, Stage::Attest);
        t.statement = Some(statement_hash(statement));
        let d = draft("sanctions.snapback", s.clone(), text("attested"), t);
        let c = c.clone();
        async move { c.publish_case(d).await.map(|a| a.log_index) }
    };
    assert_eq!(refused(attest(&kr).await), RefusalKind::NotAnAttester);
    assert_eq!(
        refused(attest(&ua).await),
        RefusalKind::DuplicateAttestation
    );
    attest(&pl).await.unwrap();
    reply(&jp, case, sb, Stage::Reimposed).await.unwrap();
    reply(&kr, case, sb, Stage::Reimposed).await.unwrap();
    let view: CaseView = jp.case(case).await.unwrap();
    assert!(matches!(view.case.status, Status::Fired { .. }));
    assert_eq!(view.case.attestations.len(), 2);
    clock.advance(24 * H + 1000);
    let found = deadlines(&broker, 1).await;
    assert_eq!(found, [(Stage::Reimposed, vec!["US".to_string()])]);
    for cl in [ua, pl, jp, kr] {
        cl.close().await;
    }
    broker.shutdown().await.unwrap();
    let sound = verify_copy(&net.data_dir(), &net.roster, 0).await.unwrap();
    assert_eq!(sound.case_deadlines, 1);

    // a CaseDeadline entry edited to say nobody was missing
    let copy = tempfile::tempdir().unwrap();
    copy_dir(&net.data_dir(), copy.path());
    let at = {
        let db = sled::open(copy.path()).unwrap();
        let audit = db.open_tree("audit").unwrap();
        let mut at = None;
        for kv in audit.iter() {
            let (k, v) = kv.unwrap();
            let mut e = ewx_proto::audit::Entry::decode(&v).unwrap();
            if let Event::CaseDeadline { missing, .. } = &mut e.event {
                missing.clear();
                audit.insert(k, e.encode().unwrap()).unwrap();
                at = Some(e.index);
            }
        }
        db.flush().unwrap();
        at.unwrap()
    };
    match verify_copy(copy.path(), &net.roster, 0).await {
        Err(Error::Unsound(f)) => assert_eq!(f.index, at, "{f}"),
        other => panic!("a tampered CaseDeadline verified: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_party_without_a_content_key_is_refused_and_audited() {
    let net = TestNet::new();
    let broker = net.start_broker().await;
    let ua = net.client(&broker, "UA").await;
    let tag = CaseTag::open(CaseType::Consultation, vec![id("PL"), id("US")]);
    let request = text("request");
    let env = ua
        .seal(draft("consult.request", labels("CORE"), request, tag))
        .await
        .unwrap();
    // UA names US as a party but wraps no content key for it
    let bytes = ewx_tests::resigned(&env, "UA", |h| {
        h.recipients.retain(|w| w.node.as_str() != "US")
    });
    match ua.publish_envelope(&bytes).await {
        Err(Error::Rejected {
            reason: RejectReason::Case(RefusalKind::NotPermitted),
            detail,
        }) => {
            assert!(detail.contains("US"), "{detail}");
        }
        other => panic!("{other:?}"),
    }
    let audited = rejection_audited(&broker, "gets no content key").await;
    assert!(audited, "the refusal is in the audit log");
    ua.close().await;
    broker.shutdown().await.unwrap();
}
