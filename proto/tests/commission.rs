//! Exercise cases (amendments, corrections, observation invitations answered by a
//! deadline) and Special Commission attributions (cited reports, findings adopted at k
//! distinct members, dissents kept, the remedy's deadline, a snapback fired by an adopted
//! finding of armed attack), each transition on log time, each refusal with its kind, and
//! the broker's, a party's and an auditor's folds equal.
#![allow(clippy::unwrap_used)]

mod support;

use std::collections::BTreeSet;

use ewx_proto::case::{
    CaseTag, CaseType, Characterisation, Citation, Finding, Refusal, RefusalKind, Remedy, Stage,
    Status, Verdict, finding_hash,
};
use ewx_proto::{Digest32, Kind, Labels, MessageId};
use ewx_testkit::id;
use support::*;

const D: u64 = 24 * H;

fn kind(r: Result<MessageId, Refusal>) -> RefusalKind {
    r.unwrap_err().kind
}

/// An exercise notice's labels: the exercise flag set, so it never reads as a warning.
fn drill() -> Labels {
    let mut l = core_labels();
    l.exercise = true;
    l
}

/// A case without the deadlines the broker recorded (a party sees only the messages).
fn unrecorded(case: Option<&ewx_proto::case::Case>) -> Option<ewx_proto::case::Case> {
    case.cloned().map(|mut c| {
        c.recorded.clear();
        c
    })
}

fn reply(case: MessageId, ty: CaseType, stage: Stage) -> CaseTag {
    CaseTag::reply(case, ty, stage)
}

#[test]
fn an_exercise_is_amended_by_its_notifier_and_invited_observers_answer_by_the_deadline() {
    let mut log = Log::new();
    let ex = CaseType::Exercise;
    let notice = Kind::ExerciseNotice;
    let mut open = CaseTag::open(ex, nodes(&["US", "GB"]));
    // invitations without a period, a period without invitations, the wrong payload
    assert_eq!(
        kind(log.send_kind(T0, "PL", &drill(), open.clone(), notice)),
        RefusalKind::BadTag
    );
    open.within_ms = Some(7 * D);
    assert_eq!(
        kind(log.send_kind(T0, "PL", &drill(), open.clone(), Kind::CaseReply)),
        RefusalKind::BadTag
    );
    // only a liaison notifies
    let mut by_partner = CaseTag::open(ex, Vec::new());
    assert_eq!(
        kind(log.send_kind(T0, "JP", &drill(), by_partner.clone(), notice)),
        RefusalKind::NotPermitted
    );
    by_partner.within_ms = Some(D);
    assert_eq!(
        kind(log.send_kind(T0, "UA", &drill(), by_partner, notice)),
        RefusalKind::BadTag
    );
    let case = log.send_kind(T0, "PL", &drill(), open, notice).unwrap();
    // amendments and corrections: the notifier only, with a new notice
    let amend = reply(case, ex, Stage::Amended);
    assert_eq!(
        kind(log.send_kind(T0 + H, "US", &drill(), amend.clone(), notice)),
        RefusalKind::NotAParty
    );
    assert_eq!(
        kind(log.send_kind(T0 + H, "PL", &drill(), amend.clone(), Kind::CaseReply)),
        RefusalKind::BadTag
    );
    log.send_kind(T0 + H, "PL", &drill(), amend, notice)
        .unwrap();
    let correct = reply(case, ex, Stage::Corrected);
    log.send_kind(T0 + 2 * H, "PL", &drill(), correct, notice)
        .unwrap();
    // an exercise case's replies keep the exercise flag
    assert_eq!(
        kind(log.send(
            T0 + 2 * H,
            "US",
            &core_labels(),
            reply(case, ex, Stage::Answered)
        )),
        RefusalKind::LabelsWider
    );
    // US answers once, JP is not invited
    let answer = reply(case, ex, Stage::Answered);
    log.send(T0 + 3 * H, "US", &drill(), answer.clone())
        .unwrap();
    assert_eq!(
        kind(log.send(T0 + 3 * H, "US", &drill(), answer.clone())),
        RefusalKind::StageOutOfOrder
    );
    assert_eq!(
        kind(log.send(T0 + 3 * H, "TR", &drill(), answer.clone())),
        RefusalKind::NotAParty
    );
    // the deadline passes: GB had not answered; its answer afterwards is late
    log.at(T0 + 7 * D);
    let state = log.book.get(&case).unwrap();
    assert_eq!(state.recorded[&Stage::Answered], nodes(&["GB"]));
    log.send(T0 + 8 * D, "GB", &drill(), answer).unwrap();
    let state = log.book.get(&case).unwrap();
    assert!(state.parties[&id("GB")].answers[0].late);
    assert!(!state.parties[&id("US")].answers[0].late);
    let stages: Vec<Stage> = state.thread.iter().map(|(_, _, s)| *s).collect();
    assert_eq!(
        stages,
        [
            Stage::Open,
            Stage::Amended,
            Stage::Corrected,
            Stage::Answered,
            Stage::Answered
        ]
    );
    // a notice without invitations has no deadline
    let plain = CaseTag::open(ex, Vec::new());
    let quiet = log
        .send_kind(T0 + 9 * D, "DE", &drill(), plain, notice)
        .unwrap();
    assert!(log.book.get(&quiet).unwrap().deadlines().is_empty());
    // the same state at the broker, a party and the auditor
    assert_eq!(log.audit().unwrap().get(&case), log.book.get(&case));
    assert_eq!(
        unrecorded(log.party().get(&case)),
        unrecorded(log.book.get(&case))
    );
}

/// Two monitor reports in the log, and the attribution opened on them by US.
fn attribution(log: &mut Log) -> (MessageId, Vec<Citation>) {
    let cf = ceasefire_labels();
    let reports: Vec<Citation> = (0..2)
        .map(|i| {
            let (id, hash) = log.publish(T0 + i, "MON1", &cf, Kind::CeasefireReport);
            Citation { id, hash }
        })
        .collect();
    let mut open = CaseTag::open(CaseType::Attribution, Vec::new());
    open.cites = reports.clone();
    let case = log.send(T0 + H, "US", &cf, open).unwrap();
    (case, reports)
}

fn finding(case: MessageId, characterisation: Characterisation) -> Finding {
    Finding {
        case,
        verdict: Verdict::Responsible("the occupying force".into()),
        characterisation,
        remedy: Some(Remedy {
            text: "withdraw the heavy weapons behind the line".into(),
            within_ms: 2 * D,
        }),
        owed_by: Vec::new(),
        reasoning: "both reports place the fire inside the line".into(),
    }
}

#[test]
fn an_attribution_cites_reports_its_opener_may_read_by_id_and_hash() {
    let mut log = Log::new();
    let cf = ceasefire_labels();
    let (r, hash) = log.publish(T0, "MON1", &cf, Kind::CeasefireReport);
    let mut narrow = cf.clone();
    narrow.rel_to = BTreeSet::from([id("UA"), id("PL")]);
    let (secret, secret_hash) = log.publish(T0, "MON1", &narrow, Kind::CeasefireReport);
    let (bulletin, bulletin_hash) = log.publish(T0, "UA", &cf, Kind::Bulletin);
    let open = |cites: Vec<Citation>| {
        let mut t = CaseTag::open(CaseType::Attribution, Vec::new());
        t.cites = cites;
        t
    };
    let good = Citation { id: r, hash };
    let cases = [
        ("GB", vec![good], RefusalKind::NotAMember),
        ("MON1", vec![good], RefusalKind::NotAMember),
        ("US", vec![], RefusalKind::BadTag),
        ("US", vec![good, good], RefusalKind::BadTag),
        (
            "US",
            vec![Citation {
                id: r,
                hash: Digest32([0; 32]),
            }],
            RefusalKind::BadCitation,
        ),
        (
            "US",
            vec![Citation {
                id: bulletin,
                hash: bulletin_hash,
            }],
            RefusalKind::BadCitation,
        ),
        (
            "US",
            vec![
                good,
                Citation {
                    id: secret,
                    hash: secret_hash,
                },
            ],
            RefusalKind::NotPermitted,
        ),
    ];
    for (who, cites, want) in cases {
        assert_eq!(kind(log.send(T0 + H, who, &cf, open(cites))), want, "{who}");
    }
    let mut with_parties = open(vec![good]);
    with_parties.parties = nodes(&["FR"]);
    assert_eq!(
        kind(log.send(T0 + H, "US", &cf, with_parties)),
        RefusalKind::BadTag
    );
    let case = log.send(T0 + H, "US", &cf, open(vec![good])).unwrap();
    assert_eq!(log.book.get(&case).unwrap().cites, [good]);
    assert_eq!(log.audit().unwrap().get(&case), log.book.get(&case));
}

#[test]
fn a_finding_is_adopted_at_k_distinct_members_with_dissents_kept_and_the_remedy_tracked() {
    let mut log = Log::new();
    let cf = ceasefire_labels();
    let (case, _) = attribution(&mut log);
    let f = finding(case, Characterisation::ArmedAttack);
    let hash = finding_hash(&f);
    let at = T0 + 2 * H;
    assert_eq!(
        kind(log.send_kind(at, "GB", &cf, f.tag(), Kind::Finding)),
        RefusalKind::NotAMember
    );
    log.send_kind(at, "US", &cf, f.tag(), Kind::Finding)
        .unwrap();
    assert_eq!(log.book.get(&case).unwrap().status, Status::Open, "1 of 2");
    assert_eq!(
        kind(log.send(at, "FR", &cf, f.tag())),
        RefusalKind::BadTag,
        "a signature without the finding itself"
    );
    assert_eq!(
        kind(log.send_kind(at, "US", &cf, f.tag(), Kind::Finding)),
        RefusalKind::DuplicateAttestation
    );
    // a dissent names a finding signed in this case
    let mut dissent = reply(case, CaseType::Attribution, Stage::Dissent);
    dissent.statement = Some(Digest32([9; 32]));
    assert_eq!(
        kind(log.send(at, "DE", &cf, dissent.clone())),
        RefusalKind::BadTag
    );
    dissent.statement = Some(hash);
    log.send(at + H, "DE", &cf, dissent.clone()).unwrap();
    assert_eq!(
        kind(log.send_kind(at + H, "DE", &cf, f.tag(), Kind::Finding)),
        RefusalKind::DuplicateAttestation,
        "one vote per member"
    );
    // FR signs the same hash with other terms in its header: refused
    let mut other = f.tag();
    other.characterisation = Some(Characterisation::CeasefireBreach);
    assert_eq!(
        kind(log.send_kind(at + H, "FR", &cf, other, Kind::Finding)),
        RefusalKind::BadTag
    );
    // a remedy before adoption, then FR adopts
    let remedied = reply(case, CaseType::Attribution, Stage::Remedied);
    assert_eq!(
        kind(log.send(at + H, "FR", &cf, remedied.clone())),
        RefusalKind::StageOutOfOrder
    );
    let adopted_at = at + 2 * H;
    log.send_kind(adopted_at, "FR", &cf, f.tag(), Kind::Finding)
        .unwrap();
    let state = log.book.get(&case).unwrap();
    assert_eq!(state.status, Status::Adopted { at_ms: adopted_at });
    assert_eq!(state.adopted, Some((hash, adopted_at)));
    let dissents: Vec<&str> = state
        .votes
        .iter()
        .filter(|v| v.stage == Stage::Dissent)
        .map(|v| v.node.as_str())
        .collect();
    assert_eq!(dissents, ["DE"], "the dissent is kept");
    // no owers named: the members report compliance by the remedy's deadline
    let due = adopted_at + 2 * D;
    assert_eq!(state.due(Stage::Remedied), Some(due));
    assert_eq!(
        state.parties.keys().map(|n| n.as_str()).collect::<Vec<_>>(),
        ["DE", "FR", "US"]
    );
    log.send(adopted_at + D, "FR", &cf, remedied).unwrap();
    assert_eq!(
        kind(log.send(
            adopted_at + D,
            "US",
            &cf,
            reply(case, CaseType::Attribution, Stage::Withdrawn)
        )),
        RefusalKind::StageOutOfOrder,
        "an adopted finding stands"
    );
    log.at(due);
    let state = log.book.get(&case).unwrap();
    assert_eq!(state.recorded[&Stage::Remedied], nodes(&["DE", "US"]));
    assert_eq!(log.audit().unwrap().get(&case), log.book.get(&case));
    assert_eq!(
        unrecorded(log.party().get(&case)),
        unrecorded(log.book.get(&case))
    );
}

#[test]
fn only_an_adopted_finding_of_armed_attack_fires_a_snapback_that_cites_it() {
    let mut log = Log::new();
    let cf = ceasefire_labels();
    let (case, _) = attribution(&mut log);
    let f = finding(case, Characterisation::ArmedAttack);
    let hash = finding_hash(&f);
    let snapback = |hash: Digest32| {
        let mut t = CaseTag::open(CaseType::Snapback, nodes(&["JP", "KR"]));
        t.statement = Some(hash);
        t.within_ms = Some(D);
        t.cites = vec![Citation { id: case, hash }];
        t
    };
    let sl = sanctions_labels();
    log.send_kind(T0 + 2 * H, "US", &cf, f.tag(), Kind::Finding)
        .unwrap();
    assert_eq!(
        kind(log.send(T0 + 2 * H, "UA", &sl, snapback(hash))),
        RefusalKind::BadCitation,
        "not adopted yet"
    );
    log.send_kind(T0 + 3 * H, "DE", &cf, f.tag(), Kind::Finding)
        .unwrap();
    assert_eq!(
        kind(log.send(T0 + 3 * H, "JP", &sl, snapback(hash))),
        RefusalKind::NotAnAttester
    );
    let mut mismatched = snapback(hash);
    mismatched.statement = Some(Digest32([1; 32]));
    assert_eq!(
        kind(log.send(T0 + 3 * H, "UA", &sl, mismatched)),
        RefusalKind::BadTag
    );
    let fired_at = T0 + 4 * H;
    let sb = log.send(fired_at, "UA", &sl, snapback(hash)).unwrap();
    let state = log.book.get(&sb).unwrap();
    assert_eq!(state.status, Status::Fired { at_ms: fired_at });
    assert_eq!(state.due(Stage::Reimposed), Some(fired_at + D));
    log.reply(fired_at + H, "JP", sb, CaseType::Snapback, Stage::Reimposed)
        .unwrap();
    // a finding of a ceasefire breach does not fire one
    let (case2, _) = attribution(&mut log);
    let breach = finding(case2, Characterisation::CeasefireBreach);
    log.send_kind(T0 + 5 * H, "US", &cf, breach.tag(), Kind::Finding)
        .unwrap();
    log.send_kind(T0 + 5 * H, "FR", &cf, breach.tag(), Kind::Finding)
        .unwrap();
    let mut t = snapback(finding_hash(&breach));
    t.cites[0].id = case2;
    assert_eq!(
        kind(log.send(T0 + 6 * H, "PL", &sl, t)),
        RefusalKind::BadCitation
    );
    assert_eq!(log.audit().unwrap().get(&sb), log.book.get(&sb));
    // a party folding the snapback's thread alone cannot check the citation: it says so
    let mut party = ewx_proto::case::CaseBook::partial();
    let (mid, sender, k, labels, tag, index, t) =
        log.delivered.iter().find(|d| d.0 == sb).cloned().unwrap();
    let msg = ewx_proto::case::CaseMessage {
        id: mid,
        sender: &sender,
        kind: k,
        labels: &labels,
        tag: &tag,
        log_index: index,
        log_ms: t,
    };
    party.apply(&msg, &log.roster).unwrap();
    assert_eq!(party.get(&sb).unwrap().unchecked, [case]);
}

#[test]
fn a_finding_hash_binds_every_field_and_its_tag() {
    let f = finding(MessageId([1; 16]), Characterisation::ArmedAttack);
    let mut g = f.clone();
    g.reasoning.push('.');
    assert_ne!(finding_hash(&f), finding_hash(&g));
    assert!(f.matches(&f.tag()));
    assert!(!g.matches(&f.tag()));
    let mut t = f.tag();
    t.within_ms = Some(1);
    assert!(!f.matches(&t));
    assert!(f.validate().is_ok());
    let mut bad = f.clone();
    bad.reasoning = " ".into();
    assert!(bad.validate().is_err());
    let mut owed = f;
    owed.remedy = None;
    owed.owed_by = nodes(&["UA"]);
    assert!(owed.validate().is_err());
}
