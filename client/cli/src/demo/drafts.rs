//! What the demo's nodes publish, in order: a FLASH air-raid warning, a weekly threat
//! assessment, a Vienna Document exercise notice (an exercise case inviting observers), a
//! consultation request after an armed attack (with receipts asked for), and a sanctions
//! snapback.

use ewx_net::now_ms;
use ewx_proto::case::{CaseTag, CaseType};
use ewx_proto::payload::{
    Bulletin, ConsultationRequest, ConsultationResponse, ExerciseNotice, SanctionsTrigger, Stance,
};
use ewx_proto::{Draft, Labels, Level, Payload, Precedence, Topic};

use crate::error::Result;

/// A draft on `topic` with labels `level` + `comps` (comma-separated compartments).
pub(super) fn draft(
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
        case: None,
    })
}

/// A bulletin about Kyiv oblast.
pub(super) fn bulletin(headline: &str, body: &str) -> Payload {
    Payload::Bulletin(Bulletin {
        headline: headline.into(),
        body: body.into(),
        area: Some("Kyiv oblast".into()),
        event_ms: Some(now_ms()),
        confidence: Some("high".into()),
    })
}

/// A guarantor's acknowledgement of Ukraine's consultation request.
pub(super) fn consultation_answer(node: &str, req: &ConsultationRequest) -> Result<Draft> {
    let answer = Payload::ConsultationResponse(ConsultationResponse {
        case_id: req.case_id.clone(),
        stance: Stance::Acknowledged,
        statement: format!("{node} will consult within 24 h"),
    });
    draft(
        "consult.response",
        Level::Amber,
        "CORE",
        Precedence::Immediate,
        answer,
    )
}

/// Who PL invites to observe ANAKONDA-26, and how long they have to answer.
pub(super) const OBSERVERS: [&str; 3] = ["GB", "TR", "DE"];
const ANSWER_WITHIN_MS: u64 = 14 * 86_400_000;

/// PL's notice of ANAKONDA-26: declared at 12,500 troops, just under the 13,000 at which
/// observation becomes obligatory (an amendment later shows it larger).
pub(super) fn anakonda(troops: u32) -> ExerciseNotice {
    // whole days, so that the amendment's dates match the notice's
    let day = now_ms() / 86_400_000 * 86_400_000;
    ExerciseNotice {
        name: "ANAKONDA-26".into(),
        purpose: "defensive command-post and field training".into(),
        states: vec!["PL".into(), "LT".into(), "US".into()],
        command_level: "corps".into(),
        start_ms: day + 10 * 86_400_000,
        end_ms: day + 19 * 86_400_000,
        area: "Orzysz training area, 53.81N 21.95E".into(),
        troops,
        tanks: 90,
        armoured_vehicles: 340,
        artillery: 60,
        aircraft: 24,
        helicopters: 18,
        sorties: 120,
        troops_by_state: [
            ("PL".into(), troops - 3_500),
            ("LT".into(), 1_500),
            ("US".into(), 2_000),
        ]
        .into(),
        coordinates: vec![(53_810_000, 21_950_000)],
        phases: vec![
            "deployment".into(),
            "defence".into(),
            "counter-attack".into(),
        ],
        observation_invited: true,
        ..Default::default()
    }
}

fn exercise_notice() -> Result<Draft> {
    let mut d = draft(
        "exercise.notice",
        Level::Clear,
        "",
        Precedence::Routine,
        Payload::ExerciseNotice(anakonda(12_500)),
    )?;
    let observers = OBSERVERS.iter().map(|n| ewx_testkit::id(n)).collect();
    let mut tag = CaseTag::open(CaseType::Exercise, observers);
    tag.within_ms = Some(ANSWER_WITHIN_MS);
    d.case = Some(tag);
    d.labels.exercise = true;
    Ok(d)
}

fn consultation_request() -> Result<Draft> {
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
    Ok(d)
}

/// Who publishes what, in order.
pub(super) fn script() -> Result<Vec<(&'static str, Draft)>> {
    Ok(vec![
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
        ("PL", exercise_notice()?),
        ("UA", consultation_request()?),
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
                    statement: None,
                }),
            )?,
        ),
    ])
}
