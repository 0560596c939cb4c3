//! The demo's transparency and commission scenes: PL amends its exercise notice (the
//! troop figure grows past the observation threshold, shown as a change and a flag) and
//! two invited observers answer; MON1 files two breach reports; the Special Commission
//! (US, FR, DE; 2 needed) opens an attribution on them, US and FR sign a finding of armed
//! attack and DE dissents, which adopts it; the snapback is then fired on that finding.

use std::fmt::Write as _;

use ewx_client::Client;
use ewx_client::cases::CaseView;
use ewx_proto::case::{
    CaseTag, CaseType, Characterisation, Citation, Finding, Remedy, Stage, Status, Verdict,
    finding_hash,
};
use ewx_proto::ceasefire::{CeasefireReport, Observed, Place, Sensor, Window};
use ewx_proto::exercise::Flag;
use ewx_proto::payload::{CaseReply, Decision};
use ewx_proto::{Digest32, Level, MessageId, Payload, Precedence};
use ewx_testkit::MONITOR;

use super::Demo;
use super::drafts::{anakonda, draft};
use crate::error::Result;

const H: u64 = 3_600_000;

fn said(text: &str, decision: Option<Decision>) -> Payload {
    Payload::CaseReply(CaseReply {
        text: text.into(),
        decision,
        in_force_ms: None,
        statement: None,
    })
}

/// A monitor's report of heavy weapons firing inside the withdrawal zone.
fn report(now_ms: u64, count: u32, lat_e6: i32) -> CeasefireReport {
    CeasefireReport {
        window: Window {
            start_ms: now_ms - 2 * H,
            end_ms: now_ms - H,
        },
        location: Place {
            lat_e6,
            lon_e6: 37_802_000,
            precision_m: 300,
        },
        controlled_by: Some("UA".into()),
        sensor: Sensor::Uav,
        observed: Observed::HeavyWeaponsOutsideWithdrawalLines,
        count,
        description: "122 mm artillery firing from inside the withdrawal zone".into(),
        ..Default::default()
    }
}

impl Demo {
    /// A case reply placed where its case type goes (an exercise reply labelled EXERCISE).
    pub(super) async fn answer(
        &self,
        who: &str,
        ty: CaseType,
        tag: CaseTag,
        payload: Payload,
    ) -> Result<()> {
        let (topic, level, comps) = ewx_client::cases::placement(ty);
        let mut d = draft(topic, level, comps, Precedence::Immediate, payload)?;
        d.labels.exercise = ty == CaseType::Exercise;
        d.case = Some(tag);
        self.client(who)?.publish_case(d).await?;
        Ok(())
    }

    /// PL amends ANAKONDA-26 upwards; GB accepts the observation invitation, TR declines.
    pub(super) async fn exercise_amended(&mut self) -> Result<Option<MessageId>> {
        let Some(case) = self.exercise else {
            self.expect(false, "the exercise notice opened a case".into());
            return Ok(None);
        };
        let ex = CaseType::Exercise;
        let tag = CaseTag::reply(case, ex, Stage::Amended);
        let amended = Payload::ExerciseNotice(anakonda(15_500));
        self.answer("PL", ex, tag, amended).await?;
        let answered = |n| (n, CaseTag::reply(case, ex, Stage::Answered));
        let (gb, t) = answered("GB");
        let accept = said("two observers, arriving on day 1", Some(Decision::Accept));
        self.answer(gb, ex, t, accept).await?;
        let (tr, t) = answered("TR");
        let decline = said("no observers available", Some(Decision::Decline));
        self.answer(tr, ex, t, decline).await?;
        let _ = writeln!(
            self.text,
            "  PL  amends exercise case {case}: troops 12500 -> 15500; GB accepts the observation invitation, TR declines"
        );
        Ok(Some(case))
    }

    async fn monitor(&mut self) -> Result<Client> {
        if let Some(c) = self.clients.get(MONITOR) {
            return Ok(c.clone());
        }
        let c = super::connect(&self.addrs, 0, MONITOR, &self.roster, &self.clock).await?;
        self.clients.insert(MONITOR, c.clone());
        Ok(c)
    }

    /// MON1 files two reports; the commission opens an attribution on them and adopts a
    /// finding of armed attack (US and FR sign, DE dissents). Returns the case and the
    /// adopted finding's hash.
    pub(super) async fn attribution(&mut self) -> Result<(MessageId, Digest32)> {
        let mon = self.monitor().await?;
        let now = self.clock.now_ms();
        let mut cites = Vec::new();
        for (count, lat) in [(4, 48_015_000), (2, 48_021_000)] {
            let mut d = draft(
                "ceasefire.report",
                Level::Amber,
                "CEASEFIRE",
                Precedence::Priority,
                Payload::CeasefireReport(report(now, count, lat)),
            )?;
            d.receipt = false;
            let env = mon.seal(d).await?;
            let ack = mon.publish_envelope(&env.encode()?).await?;
            cites.push(Citation {
                id: ack.id,
                hash: env.hash(),
            });
        }
        let mut open = CaseTag::open(CaseType::Attribution, Vec::new());
        open.cites = cites;
        let (topic, level, comps) = ewx_client::cases::placement(CaseType::Attribution);
        let mut d = draft(
            topic,
            level,
            comps,
            Precedence::Immediate,
            said(
                "who fired the artillery inside the zone on 1 December?",
                None,
            ),
        )?;
        d.case = Some(open);
        let case = self.client("FR")?.publish_case(d).await?.id;
        let finding = Finding {
            case,
            verdict: Verdict::Responsible("the occupying force".into()),
            characterisation: Characterisation::ArmedAttack,
            remedy: Some(Remedy {
                text: "withdraw all artillery behind the agreed line".into(),
                within_ms: 48 * H,
            }),
            owed_by: Vec::new(),
            reasoning: "both reports place the firing positions east of the line".into(),
        };
        let hash = finding_hash(&finding);
        let at = CaseType::Attribution;
        for who in ["US", "FR"] {
            let f = Payload::Finding(finding.clone());
            self.answer(who, at, finding.tag(), f).await?;
        }
        let mut dissent = CaseTag::reply(case, at, Stage::Dissent);
        dissent.statement = Some(hash);
        let why = said("the reports do not exclude a provocation", None);
        self.answer("DE", at, dissent, why).await?;
        let _ = writeln!(
            self.text,
            "  {MONITOR} files 2 breach reports; FR opens attribution {case} on them; US and FR sign finding {} (armed attack): ADOPTED (2 of US FR DE); DE dissents",
            hash.short()
        );
        Ok((case, hash))
    }

    pub(super) fn check_exercise(&mut self, view: &CaseView) {
        let revisions = view.revisions();
        let grew = revisions.last().is_some_and(|r| {
            r.changes.iter().any(|c| c.field == "troops")
                && r.grew
                    .iter()
                    .any(|f| matches!(f, Flag::GrewPastThreshold { at: 13_000, .. }))
        });
        self.expect(
            revisions.len() == 2 && grew,
            "the amendment shows the troop change and the observation threshold grown past".into(),
        );
        let answered = view
            .case
            .parties
            .values()
            .filter(|p| p.answer(Stage::Answered).is_some())
            .count();
        self.expect(
            answered == 2,
            format!("2 observers answered (got {answered})"),
        );
    }

    pub(super) fn check_attribution(&mut self, view: &CaseView) {
        let c = &view.case;
        let dissents = c.votes.iter().filter(|v| v.stage == Stage::Dissent).count();
        self.expect(
            matches!(c.status, Status::Adopted { .. }) && dissents == 1 && c.cites.len() == 2,
            "the finding was adopted on 2 cited reports with 1 dissent kept".into(),
        );
        self.expect(
            c.due(Stage::Remedied).is_some(),
            "the remedy's deadline is tracked".into(),
        );
    }
}
