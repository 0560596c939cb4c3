//! The Special Commission and exercise cases end to end, on a real broker with a
//! simulated clock: a monitor's reports cited by id and envelope hash (a report the member
//! may not read refused and audited), a finding adopted at 2 distinct members with a
//! dissent kept, the remedy's deadline reminded and recorded, a snapback fired by the
//! adopted finding of armed attack, the index rebuilt after a restart, the audit sound;
//! an exercise notice amended (the changed figure and the threshold it grew past shown)
//! and its invited observers answering by the deadline.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;

use ewx_client::Client;
use ewx_net::Clock;
use ewx_proto::case::{
    CaseTag, CaseType, Characterisation, Citation, Finding, RefusalKind, Remedy, Stage, Status,
    Verdict, finding_hash,
};
use ewx_proto::exercise::Flag;
use ewx_proto::frame::StartAt;
use ewx_proto::payload::{CaseReply, Decision, ExerciseNotice, SanctionsTrigger};
use ewx_proto::{Labels, Level, MessageId, Payload, Precedence};
use ewx_tests::cases::{
    breach, deadlines, draft, labels, no_reminder, refused, rejection_audited, reminder, reply,
    text,
};
use ewx_tests::{TestNet, bulletin, id, next, subscribe, verify_copy};

const H: u64 = 3_600_000;
const D: u64 = 24 * H;

/// MON1 files a report with `labels`: its id and envelope hash.
async fn file(mon: &Client, l: Labels, count: u32) -> Citation {
    let mut d = bulletin(
        "ceasefire.report",
        Level::Amber,
        "CEASEFIRE",
        Precedence::Priority,
        "x",
    );
    d.labels = l;
    d.payload = Payload::CeasefireReport(breach(count));
    let env = mon.seal(d).await.unwrap();
    let ack = mon.publish_envelope(&env.encode().unwrap()).await.unwrap();
    Citation {
        id: ack.id,
        hash: env.hash(),
    }
}

fn finding(case: MessageId) -> Finding {
    Finding {
        case,
        verdict: Verdict::Responsible("the occupying force".into()),
        characterisation: Characterisation::ArmedAttack,
        remedy: Some(Remedy {
            text: "withdraw the artillery behind the line".into(),
            within_ms: 2 * D,
        }),
        owed_by: Vec::new(),
        reasoning: "both reports place the fire inside the zone".into(),
    }
}

async fn sign(c: &Client, f: &Finding) -> ewx_client::Result<u64> {
    let d = draft(
        "ceasefire.attribution",
        labels("CEASEFIRE"),
        Payload::Finding(f.clone()),
        f.tag(),
    );
    c.publish_case(d).await.map(|a| a.log_index)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_finding_on_cited_reports_is_adopted_and_fires_a_snapback() {
    let net = TestNet::new();
    let clock = Clock::simulated();
    let broker = net.start_broker_with_clock(&clock, &[H]).await;
    let c = |n: &'static str| net.client_with_clock(&broker, n, &clock);
    let (mon, us, pl, xx, ua, jp) = (
        c("MON1").await,
        c("US").await,
        c("PL").await,
        c("XX").await,
        c("UA").await,
        c("JP").await,
    );
    let (mut us_reminders, mut pl_reminders) = (us.reminders().unwrap(), pl.reminders().unwrap());
    let mut received = subscribe(&us, "cf", "ceasefire.report", StartAt::Latest).await;
    let cf = labels("CEASEFIRE");
    let r1 = file(&mon, cf.clone(), 2).await;
    let r2 = file(&mon, cf.clone(), 3).await;
    let mut narrow = cf.clone();
    narrow.rel_to = BTreeSet::from([id("MON1"), id("UA")]);
    let secret = file(&mon, narrow, 1).await;
    let mut cites = Vec::new();
    for _ in 0..2 {
        let d = next(&mut received).await;
        let h = d.envelope.header();
        cites.push(Citation {
            id: h.id,
            hash: d.envelope.hash(),
        });
    }
    assert_eq!(cites, [r1, r2], "US received both reports, hashes as filed");
    let open = |cites: Vec<Citation>| {
        let mut t = CaseTag::open(CaseType::Attribution, Vec::new());
        t.cites = cites;
        let what = text("did the artillery fire of 1 December breach the ceasefire?");
        draft("ceasefire.attribution", cf.clone(), what, t)
    };
    // a report US may not read, a wrong hash, a non-member: refused with their reasons
    let e = us.publish_case(open(vec![cites[0], secret])).await;
    assert_eq!(refused(e.map(|a| a.log_index)), RefusalKind::NotPermitted);
    assert!(
        rejection_audited(&broker, "may not read the report").await,
        "the refused citation is in the audit log"
    );
    let mut wrong = cites[1];
    wrong.hash = cites[0].hash;
    let e = us.publish_case(open(vec![wrong])).await;
    assert_eq!(refused(e.map(|a| a.log_index)), RefusalKind::BadCitation);
    let e = ua.publish_case(open(cites.clone())).await;
    assert_eq!(refused(e.map(|a| a.log_index)), RefusalKind::NotAMember);
    let case = us.publish_case(open(cites.clone())).await.unwrap().id;

    // US signs, XX dissents, PL signs: adopted at 2 of 3
    let f = finding(case);
    sign(&us, &f).await.unwrap();
    let mut dissent = CaseTag::reply(case, CaseType::Attribution, Stage::Dissent);
    dissent.statement = Some(finding_hash(&f));
    let d = draft(
        "ceasefire.attribution",
        cf.clone(),
        text("the evidence does not exclude the other side"),
        dissent,
    );
    xx.publish_case(d).await.unwrap();
    assert_eq!(
        refused(sign(&xx, &f).await),
        RefusalKind::DuplicateAttestation
    );
    assert_eq!(refused(sign(&ua, &f).await), RefusalKind::NotAMember);
    sign(&pl, &f).await.unwrap();
    let view = pl.case(case).await.unwrap();
    assert!(matches!(view.case.status, Status::Adopted { .. }));
    assert!(view.disagreements.is_empty(), "{:?}", view.disagreements);
    let dissents = view.case.votes.iter().filter(|v| v.stage == Stage::Dissent);
    assert_eq!(
        dissents.map(|v| v.node.as_str()).collect::<Vec<_>>(),
        ["XX"]
    );
    assert_eq!(view.case.cites, cites);
    assert!(
        view.items
            .iter()
            .any(|i| matches!(&i.payload, Some(Payload::Finding(g)) if g == &f)),
        "PL reads the finding it signed"
    );

    // UA, an attester, fires the snapback on the adopted finding: at once
    let mut tag = CaseTag::open(CaseType::Snapback, vec![id("JP"), id("KR")]);
    tag.statement = Some(finding_hash(&f));
    tag.within_ms = Some(D);
    tag.cites = vec![Citation {
        id: case,
        hash: finding_hash(&f),
    }];
    let trigger = Payload::SanctionsTrigger(SanctionsTrigger {
        regime: "Compact snapback annex".into(),
        measure: "reimpose suspended measures".into(),
        effective_ms: clock.now_ms(),
        statement: None,
    });
    let sb = ua
        .publish_case(draft(
            "sanctions.snapback",
            labels("SANCTIONS"),
            trigger,
            tag,
        ))
        .await
        .unwrap()
        .id;
    reply(&jp, sb, CaseType::Snapback, Stage::Reimposed)
        .await
        .unwrap();
    let view = jp.case(sb).await.unwrap();
    assert!(matches!(view.case.status, Status::Fired { .. }));
    assert_eq!(
        view.case.unchecked,
        [case],
        "JP cannot read the attribution"
    );

    // the remedy: reminded an hour ahead to the members who have not reported, then
    // recorded as passed; US reports, so only PL and XX are missing
    reply(&us, case, CaseType::Attribution, Stage::Remedied)
        .await
        .unwrap();
    clock.advance(2 * D - H + 1000);
    let r = reminder(&mut pl_reminders).await.unwrap();
    assert_eq!((r.case, r.stage), (case, Stage::Remedied));
    no_reminder(&mut us_reminders).await;
    clock.advance(H);
    let found = deadlines(&broker, 2).await;
    assert!(
        found.contains(&(Stage::Remedied, vec!["PL".to_string(), "XX".to_string()])),
        "{found:?}"
    );
    for cl in [mon, us, pl, xx, ua, jp] {
        cl.close().await;
    }
    broker.shutdown().await.unwrap();
    let sound = verify_copy(&net.data_dir(), &net.roster, 0).await.unwrap();
    assert_eq!(sound.cases, 2);

    // after a restart the index is rebuilt from the log, citations included
    let broker = net.start_broker_with_clock(&clock, &[H]).await;
    let pl = net.client_with_clock(&broker, "PL", &clock).await;
    let view = pl.case(case).await.unwrap();
    assert!(matches!(view.case.status, Status::Adopted { .. }));
    assert_eq!(
        refused(sign(&pl, &f).await),
        RefusalKind::DuplicateAttestation
    );
    pl.close().await;
    broker.shutdown().await.unwrap();
}

fn notice(troops: u32, start_ms: u64) -> ExerciseNotice {
    ExerciseNotice {
        name: "NORTHERN SHIELD".into(),
        purpose: "field training".into(),
        states: vec!["PL".into()],
        command_level: "corps".into(),
        start_ms,
        end_ms: start_ms + 5 * D,
        area: "Drawsko Pomorskie".into(),
        troops,
        observation_invited: true,
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_amended_exercise_shows_its_changes_and_observers_answer_by_the_deadline() {
    let net = TestNet::new();
    let clock = Clock::simulated();
    let broker = net.start_broker_with_clock(&clock, &[H]).await;
    let pl = net.client_with_clock(&broker, "PL", &clock).await;
    let us = net.client_with_clock(&broker, "US", &clock).await;
    let xx = net.client_with_clock(&broker, "XX", &clock).await;
    let (topic, level, comps) = ewx_client::cases::placement(CaseType::Exercise);
    let mut drill = Labels::new(level, Labels::parse_compartments(comps).unwrap());
    drill.exercise = true;
    let start = clock.now_ms() + 60 * D;
    let mut tag = CaseTag::open(CaseType::Exercise, vec![id("US"), id("XX")]);
    tag.within_ms = Some(14 * D);
    let n1 = Payload::ExerciseNotice(notice(12_000, start));
    let case = pl
        .publish_case(draft(topic, drill.clone(), n1, tag))
        .await
        .unwrap()
        .id;
    // only the notifier amends; then the figure grows past the observation threshold
    let amend = |troops| {
        let t = CaseTag::reply(case, CaseType::Exercise, Stage::Amended);
        draft(
            topic,
            drill.clone(),
            Payload::ExerciseNotice(notice(troops, start)),
            t,
        )
    };
    let e = us.publish_case(amend(9_000)).await.map(|a| a.log_index);
    assert_eq!(refused(e), RefusalKind::NotAParty);
    clock.advance(D);
    pl.publish_case(amend(15_500)).await.unwrap();
    let accept = Payload::CaseReply(CaseReply {
        text: "two observers".into(),
        decision: Some(Decision::Accept),
        in_force_ms: None,
        statement: None,
    });
    let t = CaseTag::reply(case, CaseType::Exercise, Stage::Answered);
    us.publish_case(draft(topic, drill.clone(), accept, t))
        .await
        .unwrap();
    // a reply without the EXERCISE label would read as real traffic: refused
    let mut plain = drill.clone();
    plain.exercise = false;
    let t = CaseTag::reply(case, CaseType::Exercise, Stage::Answered);
    let e = xx
        .publish_case(draft(topic, plain, text("declined"), t))
        .await
        .map(|a| a.log_index);
    assert_eq!(refused(e), RefusalKind::LabelsWider);
    let view = xx.case(case).await.unwrap();
    let revisions = view.revisions();
    assert_eq!(revisions.len(), 2);
    let change = &revisions[1].changes;
    assert_eq!(change.len(), 1);
    assert_eq!(
        (
            change[0].field,
            change[0].before.as_str(),
            change[0].after.as_str()
        ),
        ("troops", "12000", "15500")
    );
    assert!(
        revisions[1]
            .grew
            .iter()
            .any(|f| matches!(f, Flag::GrewPastThreshold { at: 13_000, .. })),
        "{:?}",
        revisions[1].grew
    );
    // the deadline passes with XX silent
    clock.advance(13 * D + 1000);
    let found = deadlines(&broker, 1).await;
    assert_eq!(found, [(Stage::Answered, vec!["XX".to_string()])]);
    for cl in [pl, us, xx] {
        cl.close().await;
    }
    broker.shutdown().await.unwrap();
    verify_copy(&net.data_dir(), &net.roster, 0).await.unwrap();
}
