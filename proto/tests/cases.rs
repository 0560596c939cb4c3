//! The case fold: every transition and deadline of a consultation and a snapback, each
//! refusal with its own kind, and the same state at the broker (headers only), a party
//! and an auditor replaying the audit log (a property test over random event orders).
#![allow(clippy::unwrap_used)]

mod support;

use ewx_proto::audit::Event;

use ewx_proto::case::{
    CONSULT_WITHIN_MS, CaseTag, CaseType, DECIDE_WITHIN_MS, Refusal, RefusalKind, Stage, Status,
};
use ewx_proto::{Digest32, Labels, Level, MessageId};
use ewx_testkit::id;
use proptest::prelude::*;
use support::*;

const GUARANTORS: [&str; 7] = ["US", "GB", "PL", "DE", "FR", "TR", "LT"];

fn open_consultation(log: &mut Log) -> MessageId {
    let tag = CaseTag::open(CaseType::Consultation, nodes(&GUARANTORS));
    log.send(T0, "UA", &core_labels(), tag).unwrap()
}

fn snapback_tag(statement: u8) -> CaseTag {
    let mut tag = CaseTag::open(CaseType::Snapback, nodes(&["JP", "KR", "US", "DE"]));
    tag.statement = Some(Digest32([statement; 32]));
    tag.within_ms = Some(24 * H);
    tag
}

fn kind(r: Result<MessageId, Refusal>) -> RefusalKind {
    r.unwrap_err().kind
}

#[test]
fn a_consultation_runs_24_and_72_hours_from_the_logged_request() {
    let mut log = Log::new();
    let case = open_consultation(&mut log);
    let c = CaseType::Consultation;
    for g in GUARANTORS {
        log.reply(T0 + H, g, case, c, Stage::Acknowledged).unwrap();
    }
    for g in &GUARANTORS[..6] {
        log.reply(T0 + 20 * H, g, case, c, Stage::Consulted)
            .unwrap();
    }
    assert!(log.book.due(T0 + CONSULT_WITHIN_MS - 1).is_empty());
    let due = log.book.due(T0 + CONSULT_WITHIN_MS);
    assert_eq!(due.len(), 1);
    assert_eq!(due[0].stage, Stage::Consulted);
    assert_eq!(due[0].missing, nodes(&["LT"]));
    // LT consults late: recorded, flagged, not refused
    log.reply(T0 + 30 * H, "LT", case, c, Stage::Consulted)
        .unwrap();
    let state = log.book.get(&case).unwrap();
    let lt = &state.parties[&id("LT")];
    assert!(lt.answer(Stage::Consulted).unwrap().late);
    assert!(
        !state.parties[&id("US")]
            .answer(Stage::Consulted)
            .unwrap()
            .late
    );
    assert_eq!(state.recorded[&Stage::Consulted], nodes(&["LT"]));
    for g in GUARANTORS.iter().filter(|g| **g != "FR") {
        log.reply(T0 + 50 * H, g, case, c, Stage::Decided).unwrap();
    }
    log.reply(T0 + 80 * H, "FR", case, c, Stage::Decided)
        .unwrap();
    let state = log.book.get(&case).unwrap();
    assert_eq!(state.recorded[&Stage::Decided], nodes(&["FR"]));
    assert!(
        state.parties[&id("FR")]
            .answer(Stage::Decided)
            .unwrap()
            .late
    );
    assert_eq!(state.status, Status::Open);
    assert_eq!(log.book.next_due(), None, "every deadline recorded");
    let audited = log.audit().unwrap();
    assert_eq!(audited.get(&case), log.book.get(&case));
    assert_eq!(
        log.party().get(&case).map(|c| &c.parties),
        Some(&state.parties)
    );
}

#[test]
fn consultation_replies_are_refused_each_with_its_reason() {
    let mut log = Log::new();
    let case = open_consultation(&mut log);
    let c = CaseType::Consultation;
    let t = T0 + H;
    // out of order: consulted before acknowledged, acknowledged twice
    assert_eq!(
        kind(log.reply(t, "PL", case, c, Stage::Consulted)),
        RefusalKind::StageOutOfOrder
    );
    log.reply(t, "PL", case, c, Stage::Acknowledged).unwrap();
    assert_eq!(
        kind(log.reply(t, "PL", case, c, Stage::Acknowledged)),
        RefusalKind::StageOutOfOrder
    );
    // not a party (KR cannot even read the case; UA is the opener)
    assert_eq!(
        kind(log.reply(t, "UA", case, c, Stage::Acknowledged)),
        RefusalKind::NotAParty
    );
    // unknown case
    let other = MessageId([9; 16]);
    assert_eq!(
        kind(log.reply(t, "PL", other, c, Stage::Consulted)),
        RefusalKind::UnknownCase
    );
    // wrong type, wrong stage for the type
    assert_eq!(
        kind(log.reply(t, "GB", case, CaseType::Snapback, Stage::Reimposed)),
        RefusalKind::BadTag
    );
    assert_eq!(
        kind(log.reply(t, "GB", case, c, Stage::Reimposed)),
        RefusalKind::BadTag
    );
    // labels wider than the case's: GREEN instead of AMBER, or without CORE
    let green = Labels::new(Level::Green, Labels::parse_compartments("CORE").unwrap());
    let tag = CaseTag::reply(case, c, Stage::Acknowledged);
    assert_eq!(
        kind(log.send(t, "GB", &green, tag.clone())),
        RefusalKind::LabelsWider
    );
    let bare = Labels::new(Level::Red, Labels::parse_compartments("").unwrap());
    assert_eq!(
        kind(log.send(t, "GB", &bare, tag.clone())),
        RefusalKind::LabelsWider
    );
    // narrower is fine
    let red = Labels::new(Level::Red, Labels::parse_compartments("CORE,AIR").unwrap());
    log.send(t, "GB", &red, tag).unwrap();
    // nothing refused reached the log: the auditor agrees
    assert_eq!(log.audit().unwrap().get(&case), log.book.get(&case));
}

#[test]
fn opening_rules_parties_and_openers() {
    let mut log = Log::new();
    let l = core_labels();
    // a partner may not request consultations
    let tag = CaseTag::open(CaseType::Consultation, nodes(&["UA"]));
    assert_eq!(
        kind(log.send(T0, "JP", &sanctions_labels(), tag)),
        RefusalKind::NotPermitted
    );
    // a party that may not read the case
    let tag = CaseTag::open(CaseType::Consultation, nodes(&["PL", "JP"]));
    assert_eq!(kind(log.send(T0, "UA", &l, tag)), RefusalKind::NotPermitted);
    // no parties, the sender as a party, a party twice
    for parties in [vec![], nodes(&["UA"]), nodes(&["PL", "PL"])] {
        let tag = CaseTag::open(CaseType::Consultation, parties);
        assert_eq!(kind(log.send(T0, "UA", &l, tag)), RefusalKind::BadTag);
    }
    // a consultation with a statement, a reply tagged as an opening
    let mut tag = CaseTag::open(CaseType::Consultation, nodes(&["PL"]));
    tag.statement = Some(Digest32([1; 32]));
    assert_eq!(kind(log.send(T0, "UA", &l, tag)), RefusalKind::BadTag);
    let mut tag = CaseTag::open(CaseType::Consultation, nodes(&["PL"]));
    tag.case = Some(MessageId([3; 16]));
    assert_eq!(kind(log.send(T0, "UA", &l, tag)), RefusalKind::UnknownCase);
}

#[test]
fn the_requester_adds_parties_and_withdraws() {
    let mut log = Log::new();
    let tag = CaseTag::open(CaseType::Consultation, nodes(&["PL", "GB"]));
    let case = log.send(T0, "UA", &core_labels(), tag).unwrap();
    let c = CaseType::Consultation;
    let mut add = CaseTag::reply(case, c, Stage::AddParties);
    add.parties = nodes(&["US"]);
    assert_eq!(
        kind(log.send(T0 + H, "PL", &core_labels(), add.clone())),
        RefusalKind::NotAParty
    );
    log.send(T0 + H, "UA", &core_labels(), add.clone()).unwrap();
    assert_eq!(
        kind(log.send(T0 + H, "UA", &core_labels(), add)),
        RefusalKind::BadTag,
        "US is a party already"
    );
    log.reply(T0 + 2 * H, "US", case, c, Stage::Acknowledged)
        .unwrap();
    assert_eq!(
        kind(log.reply(T0 + 3 * H, "GB", case, c, Stage::Withdrawn)),
        RefusalKind::NotAParty
    );
    log.reply(T0 + 30 * H, "UA", case, c, Stage::Withdrawn)
        .unwrap();
    let state = log.book.get(&case).unwrap();
    assert_eq!(state.status, Status::Withdrawn { at_ms: T0 + 30 * H });
    // the 24 h deadline had passed (recorded), the 72 h one is gone
    assert_eq!(
        state.recorded[&Stage::Consulted],
        nodes(&["GB", "PL", "US"])
    );
    assert_eq!(log.book.next_due(), None);
    assert_eq!(
        kind(log.reply(T0 + 31 * H, "PL", case, c, Stage::Acknowledged)),
        RefusalKind::Closed
    );
    log.at(T0 + 100 * H);
    assert!(
        !log.book
            .get(&case)
            .unwrap()
            .recorded
            .contains_key(&Stage::Decided)
    );
    assert_eq!(log.audit().unwrap().get(&case), log.book.get(&case));
}

#[test]
fn a_snapback_fires_at_k_distinct_attesters_and_tracks_reimposition() {
    let mut log = Log::new();
    let s = sanctions_labels();
    // JP is no attester; UA is (2 of UA, PL, GB)
    assert_eq!(
        kind(log.send(T0, "JP", &s, snapback_tag(1))),
        RefusalKind::NotAnAttester
    );
    let mut no_statement = snapback_tag(1);
    no_statement.statement = None;
    assert_eq!(
        kind(log.send(T0, "UA", &s, no_statement)),
        RefusalKind::BadTag
    );
    let mut instant = snapback_tag(1);
    instant.within_ms = Some(0);
    assert_eq!(kind(log.send(T0, "UA", &s, instant)), RefusalKind::BadTag);
    let case = log.send(T0, "UA", &s, snapback_tag(1)).unwrap();
    let sb = CaseType::Snapback;
    // not fired yet: no reimposition, no deadline
    assert_eq!(
        kind(log.reply(T0 + H, "JP", case, sb, Stage::Reimposed)),
        RefusalKind::StageOutOfOrder
    );
    assert_eq!(log.book.next_due(), None);
    // UA again, a non-attester, a different statement
    let mut attest = CaseTag::reply(case, sb, Stage::Attest);
    attest.statement = Some(Digest32([1; 32]));
    assert_eq!(
        kind(log.send(T0 + H, "UA", &s, attest.clone())),
        RefusalKind::DuplicateAttestation
    );
    assert_eq!(
        kind(log.send(T0 + H, "US", &s, attest.clone())),
        RefusalKind::NotAnAttester
    );
    let mut other = attest.clone();
    other.statement = Some(Digest32([2; 32]));
    assert_eq!(kind(log.send(T0 + H, "PL", &s, other)), RefusalKind::BadTag);
    log.send(T0 + 2 * H, "PL", &s, attest.clone()).unwrap();
    assert_eq!(
        kind(log.send(T0 + 2 * H, "PL", &s, attest.clone())),
        RefusalKind::DuplicateAttestation
    );
    let state = log.book.get(&case).unwrap();
    assert_eq!(state.status, Status::Fired { at_ms: T0 + 2 * H });
    assert_eq!(state.due(Stage::Reimposed), Some(T0 + 26 * H));
    // a third attestation after firing counts but changes nothing
    log.send(T0 + 3 * H, "GB", &s, attest).unwrap();
    assert_eq!(log.book.get(&case).unwrap().attestations.len(), 3);
    log.reply(T0 + 4 * H, "JP", case, sb, Stage::Reimposed)
        .unwrap();
    log.reply(T0 + 5 * H, "KR", case, sb, Stage::Reimposed)
        .unwrap();
    assert_eq!(
        kind(log.reply(T0 + 5 * H, "KR", case, sb, Stage::Reimposed)),
        RefusalKind::StageOutOfOrder
    );
    assert_eq!(
        kind(log.reply(T0 + 5 * H, "FR", case, sb, Stage::Reimposed)),
        RefusalKind::NotAParty
    );
    log.at(T0 + 26 * H);
    let state = log.book.get(&case).unwrap();
    assert_eq!(state.recorded[&Stage::Reimposed], nodes(&["DE", "US"]));
    log.reply(T0 + 27 * H, "US", case, sb, Stage::Reimposed)
        .unwrap();
    assert!(
        log.book.get(&case).unwrap().parties[&id("US")]
            .answer(Stage::Reimposed)
            .unwrap()
            .late
    );
    assert_eq!(log.audit().unwrap().get(&case), log.book.get(&case));
}

#[test]
fn an_auditor_refuses_deadline_entries_the_fold_does_not_give() {
    let acknowledged = || {
        let mut log = Log::new();
        let case = open_consultation(&mut log);
        let c = CaseType::Consultation;
        log.reply(T0 + H, "PL", case, c, Stage::Acknowledged)
            .unwrap();
        (log, case)
    };
    let (log, case) = acknowledged();
    let sound = log.entries.len();
    // a CaseDeadline naming the wrong parties, appended in a sound chain
    let (mut forged, _) = acknowledged();
    forged.append(
        T0 + CONSULT_WITHIN_MS,
        Event::CaseDeadline {
            case,
            stage: Stage::Consulted,
            due_ms: T0 + CONSULT_WITHIN_MS,
            missing: nodes(&["PL"]),
        },
    );
    let e = forged.audit().unwrap_err();
    assert!(e.contains(&format!("first bad index: {sound}")), "{e}");
    assert!(e.contains("the fold says"), "{e}");
    // a deadline recorded before it is due
    let mut early = Log::new();
    open_consultation(&mut early);
    early.append(
        T0 + H,
        Event::CaseDeadline {
            case,
            stage: Stage::Consulted,
            due_ms: T0 + H,
            missing: vec![],
        },
    );
    assert!(early.audit().unwrap_err().contains("no such deadline"));
    // a deadline passed over in silence: an entry logged after it without its record
    let mut silent = Log::new();
    open_consultation(&mut silent);
    silent.append(
        T0 + DECIDE_WITHIN_MS,
        Event::RosterChanged {
            version: 1,
            hash: silent.roster.hash(),
        },
    );
    let e = silent.audit().unwrap_err();
    assert!(e.contains("without its CaseDeadline entry"), "{e}");
}

#[derive(Debug, Clone)]
enum Act {
    Stage(usize, Stage),
    Attest(usize),
    Add(usize),
    Withdraw,
    Wait(u64),
}

fn act() -> impl Strategy<Value = Act> {
    let stage = prop::sample::select(vec![
        Stage::Acknowledged,
        Stage::Consulted,
        Stage::Decided,
        Stage::Reimposed,
        Stage::Open,
    ]);
    prop_oneof![
        6 => (0..10usize, stage).prop_map(|(p, s)| Act::Stage(p, s)),
        2 => (0..4usize).prop_map(Act::Attest),
        1 => (0..10usize).prop_map(Act::Add),
        1 => Just(Act::Withdraw),
        3 => (0..30 * H).prop_map(Act::Wait),
    ]
}

const ACTORS: [&str; 10] = ["US", "GB", "PL", "DE", "FR", "TR", "LT", "JP", "KR", "UA"];

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]
    /// Whatever the order of replies, refusals and waits, the broker's book (headers),
    /// a party's fold of its deliveries and an auditor's replay of the audit log agree.
    #[test]
    fn broker_party_and_auditor_agree(acts in prop::collection::vec((any::<bool>(), act()), 0..60)) {
        let mut log = Log::new();
        let consult = open_consultation(&mut log);
        let snap = log.send(T0, "UA", &sanctions_labels(), snapback_tag(5)).unwrap();
        let mut t = T0;
        for (on_snap, a) in acts {
            let (case, ty) = if on_snap { (snap, CaseType::Snapback) } else { (consult, CaseType::Consultation) };
            let r = match a {
                Act::Stage(p, s) => log.reply(t, ACTORS[p], case, ty, s).map(|_| ()),
                Act::Attest(p) => {
                    let mut tag = CaseTag::reply(case, ty, Stage::Attest);
                    tag.statement = Some(Digest32([5; 32]));
                    log.send(t, ["UA", "PL", "GB", "US"][p], &sanctions_labels(), tag).map(|_| ())
                }
                Act::Add(p) => {
                    let mut tag = CaseTag::reply(case, ty, Stage::AddParties);
                    tag.parties = vec![id(ACTORS[p])];
                    let labels = if on_snap { sanctions_labels() } else { core_labels() };
                    log.send(t, "UA", &labels, tag).map(|_| ())
                }
                Act::Withdraw => log.reply(t, "UA", case, ty, Stage::Withdrawn).map(|_| ()),
                Act::Wait(ms) => { t += ms; log.at(t); Ok(()) }
            };
            // refused or accepted, the book never holds a late answer as on time
            let _ = r;
        }
        log.at(t + 200 * H);
        let audited = log.audit().map_err(TestCaseError::fail)?;
        let party = log.party();
        for case in [consult, snap] {
            prop_assert_eq!(audited.get(&case), log.book.get(&case));
            let (mut p, mut b) = (party.get(&case).cloned().unwrap(), log.book.get(&case).cloned().unwrap());
            // the party never sees the broker's CaseDeadline entries, only the messages
            p.recorded.clear();
            b.recorded.clear();
            prop_assert_eq!(p, b);
        }
        for c in log.book.cases() {
            for p in c.parties.values() {
                for a in &p.answers {
                    let late = c.due(a.stage).is_some_and(|d| a.log_ms > d);
                    prop_assert_eq!(a.late, late);
                }
            }
        }
    }
}
