//! The demo's mechanism scene, on the broker's simulated clock: Ukraine requests
//! consultations and every guarantor acknowledges and consults, one decides after the
//! 72 h deadline (shown LATE); PL's exercise is amended and observers answer; the
//! commission adopts a finding of armed attack, which fires a snapback: JP and KR
//! reimpose and a third party is left overdue. Each case's matrix is printed as UA folds
//! it.

use std::fmt::Write as _;
use std::time::Duration;

use ewx_client::cases::{CaseView, default_parties};
use ewx_proto::case::{CaseTag, CaseType, Citation, Stage, Status};
use ewx_proto::payload::{CaseReply, ConsultationRequest, Decision, SanctionsTrigger};
use ewx_proto::{Digest32, Level, MessageId, NodeId, Payload, Precedence};
use ewx_testkit::id;

use super::Demo;
use super::drafts::draft;
use crate::error::Result;

const H: u64 = 3_600_000;
/// The guarantor that decides late.
const LATE: &str = "FR";
/// The snapback party that never answers.
const SILENT: &str = "TR";

fn said(text: &str, decision: Option<Decision>, in_force_ms: Option<u64>) -> Payload {
    Payload::CaseReply(CaseReply {
        text: text.into(),
        decision,
        in_force_ms,
        statement: None,
    })
}

impl Demo {
    /// Play both cases and print their matrices.
    pub(super) async fn cases(&mut self) -> Result<()> {
        let _ = writeln!(
            self.text,
            "\n  cases (the broker's clock is simulated: 72 h pass in a moment)"
        );
        let consultation = self.consultation().await?;
        let exercise = self.exercise_amended().await?;
        let (attribution, finding) = self.attribution().await?;
        let snapback = self.snapback(attribution, finding).await?;
        self.clock.advance(25 * H);
        // let the broker's ticker record the snapback's passed deadline
        tokio::time::sleep(Duration::from_millis(1200)).await;
        let ua = self.client("UA")?;
        let mut shown = vec![("consultation", consultation)];
        shown.extend(exercise.map(|e| ("exercise", e)));
        shown.extend([("attribution", attribution), ("snapback", snapback)]);
        for (what, id) in shown {
            let view = ua.case(id).await?;
            let _ = writeln!(self.text);
            for line in crate::cases::matrix(&view, self.clock.now_ms()).lines() {
                let _ = writeln!(self.text, "  {line}");
            }
            match what {
                "exercise" => self.check_exercise(&view),
                "attribution" => self.check_attribution(&view),
                _ => self.check_case(what, &view),
            }
        }
        Ok(())
    }

    fn check_case(&mut self, what: &str, view: &CaseView) {
        let c = &view.case;
        self.expect(
            view.disagreements.is_empty(),
            format!(
                "the {what}'s deadlines agree with the broker's record: {:?}",
                view.disagreements
            ),
        );
        let late = |n: &str, s: Stage| {
            c.parties
                .get(&id(n))
                .and_then(|p| p.answer(s))
                .map(|a| a.late)
        };
        if what == "consultation" {
            let others_on_time = c
                .parties
                .keys()
                .filter(|p| p.as_str() != LATE)
                .all(|p| late(p.as_str(), Stage::Decided) == Some(false));
            self.expect(
                late(LATE, Stage::Decided) == Some(true) && others_on_time,
                format!("only {LATE} decided late"),
            );
            self.expect(
                view.recorded
                    .iter()
                    .any(|(s, m)| *s == Stage::Decided && m == &[id(LATE)]),
                format!("the broker recorded {LATE} missing at 72 h"),
            );
        } else {
            self.expect(
                matches!(c.status, Status::Fired { .. }) && c.cites.len() == 1,
                "the snapback fired on the adopted finding".into(),
            );
            self.expect(
                late("JP", Stage::Reimposed) == Some(false)
                    && late("KR", Stage::Reimposed) == Some(false),
                "JP and KR reimposed in time".into(),
            );
            self.expect(
                view.recorded
                    .iter()
                    .any(|(s, m)| *s == Stage::Reimposed && m == &[id(SILENT)]),
                format!("the broker recorded {SILENT} overdue"),
            );
        }
    }

    async fn reply(
        &self,
        who: &str,
        case: MessageId,
        ty: CaseType,
        stage: Stage,
        payload: Payload,
    ) -> Result<()> {
        self.answer(who, ty, CaseTag::reply(case, ty, stage), payload)
            .await
    }

    async fn consultation(&mut self) -> Result<MessageId> {
        let ua = self.client("UA")?;
        let now = self.clock.now_ms();
        let request = Payload::ConsultationRequest(ConsultationRequest::new(
            "UA-2026-017".into(),
            "missile strike on Lviv: armed attack".into(),
            now - H,
            now,
        ));
        let mut d = draft(
            "consult.request",
            Level::Amber,
            "CORE",
            Precedence::Immediate,
            request,
        )?;
        let parties = default_parties(&self.roster, &id("UA"), &d.labels, CaseType::Consultation);
        d.case = Some(CaseTag::open(CaseType::Consultation, parties.clone()));
        let case = ua.publish_case(d).await?.id;
        let names: Vec<&str> = parties.iter().map(NodeId::as_str).collect();
        let _ = writeln!(
            self.text,
            "  UA  opens consultation {case} with {}",
            names.join(" ")
        );
        let c = CaseType::Consultation;
        for p in &names {
            self.reply(
                p,
                case,
                c,
                Stage::Acknowledged,
                said("received", None, None),
            )
            .await?;
        }
        self.clock.advance(H);
        for p in &names {
            self.reply(p, case, c, Stage::Consulted, said("consulted", None, None))
                .await?;
        }
        self.clock.advance(29 * H);
        for p in names.iter().filter(|p| **p != LATE) {
            self.reply(
                p,
                case,
                c,
                Stage::Decided,
                said("joins the collective response", Some(Decision::Join), None),
            )
            .await?;
        }
        self.clock.advance(43 * H);
        self.reply(
            LATE,
            case,
            c,
            Stage::Decided,
            said("a measure of its own", Some(Decision::Measure), None),
        )
        .await?;
        let _ = writeln!(
            self.text,
            "  all acknowledge and consult at T+1h; six decide at T+30h, {LATE} at T+73h (after the 72 h deadline)"
        );
        Ok(case)
    }

    /// UA fires the snapback on the commission's adopted finding; JP and KR reimpose.
    async fn snapback(&mut self, attribution: MessageId, finding: Digest32) -> Result<MessageId> {
        let ua = self.client("UA")?;
        let parties = vec![id("JP"), id("KR"), id(SILENT)];
        let mut tag = CaseTag::open(CaseType::Snapback, parties);
        tag.statement = Some(finding);
        tag.within_ms = Some(24 * H);
        tag.cites = vec![Citation {
            id: attribution,
            hash: finding,
        }];
        let trigger = Payload::SanctionsTrigger(SanctionsTrigger {
            regime: "Compact snapback annex".into(),
            measure: "reimpose the suspended measures".into(),
            effective_ms: self.clock.now_ms(),
            statement: Some(format!("adopted finding {finding} of case {attribution}")),
        });
        let mut d = draft(
            "sanctions.snapback",
            Level::Amber,
            "SANCTIONS",
            Precedence::Immediate,
            trigger,
        )?;
        d.case = Some(tag);
        let case = ua.publish_case(d).await?.id;
        let sb = CaseType::Snapback;
        self.clock.advance(2 * H);
        let in_force = Some(self.clock.now_ms() + 24 * H);
        for p in ["JP", "KR"] {
            self.reply(
                p,
                case,
                sb,
                Stage::Reimposed,
                said("reimposed", None, in_force),
            )
            .await?;
        }
        let _ = writeln!(
            self.text,
            "  UA  fires snapback {case} on the adopted finding: FIRED; JP and KR reimpose, {SILENT} does not"
        );
        Ok(case)
    }
}
