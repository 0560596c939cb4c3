//! What the demo's nodes publish, in order: a FLASH air-raid warning, a weekly threat
//! assessment, a Vienna Document exercise notice, a consultation request after an armed
//! attack (with receipts asked for), and a sanctions snapback.

use ewx_net::now_ms;
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

fn exercise_notice() -> Result<Draft> {
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
            start_ms: now_ms() + 10 * 86_400_000,
            end_ms: now_ms() + 19 * 86_400_000,
            area: "Orzysz training area, 53.81N 21.95E".into(),
            troops: 12_500,
            tanks: 90,
            armoured_vehicles: 340,
            artillery: 60,
            aircraft: 24,
            helicopters: 18,
            sorties: 120,
            troops_by_state: [
                ("PL".into(), 9_000),
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
            ..Default::default()
        }),
    )?;
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
