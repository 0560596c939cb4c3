//! The k-of-n panels of the roster in a case: the snapback's attesters, and the Special
//! Commission whose members cite reports, sign findings and dissents, and adopt a
//! finding at k distinct members (distinct keys). An adopted finding of armed attack may
//! fire a snapback that cites it.

use std::collections::BTreeMap;

use super::book::CaseBook;
use super::commission::{Characterisation, Vote};
use super::fold::{named_parties, refuse};
use super::state::{Attestation, Case, CaseMessage, Party, Status};
use super::{
    CaseType, Deadline, MAX_CITES, MAX_WITHIN_MS, MIN_WITHIN_MS, Refusal, RefusalKind, Stage,
};
use crate::access::may_read;
use crate::ids::{Digest32, NodeId};
use crate::keys::SignPublic;
use crate::roster::{Panel, Roster};

fn member_of(panel: Option<&Panel>, sender: &NodeId, roster: &Roster) -> Option<(SignPublic, u8)> {
    let node = roster.active(sender).ok()?;
    let p = panel?;
    p.members
        .contains(sender)
        .then_some((node.sign, p.threshold))
}

/// The sender's key and the panel's threshold, or `kind` naming what it is not.
fn check_panel(
    panel: Option<&Panel>,
    (kind, what): (RefusalKind, &str),
    sender: &NodeId,
    roster: &Roster,
) -> Result<(SignPublic, u8), Refusal> {
    member_of(panel, sender, roster).ok_or_else(|| {
        let version = roster.version();
        Refusal::new(
            kind,
            format!("{sender} is not {what} in roster version {version}"),
        )
    })
}

fn check_attester(sender: &NodeId, roster: &Roster) -> Result<(SignPublic, u8), Refusal> {
    let not = (RefusalKind::NotAnAttester, "an attester");
    check_panel(roster.body().attesters.as_ref(), not, sender, roster)
}

fn check_member(sender: &NodeId, roster: &Roster) -> Result<(SignPublic, u8), Refusal> {
    let not = (RefusalKind::NotAMember, "a commission member");
    check_panel(roster.body().commission.as_ref(), not, sender, roster)
}

impl Case {
    /// Count an attestation (refusing a non-attester, a repeated node or key); fire at
    /// the threshold.
    pub(crate) fn attest(&mut self, msg: &CaseMessage<'_>, roster: &Roster) -> Result<(), Refusal> {
        let (key, threshold) = check_attester(msg.sender, roster)?;
        if self
            .attestations
            .iter()
            .any(|a| &a.node == msg.sender || a.key == key)
        {
            return refuse(
                RefusalKind::DuplicateAttestation,
                format!("{} (or its key) has attested this case already", msg.sender),
            );
        }
        self.attestations.push(Attestation {
            node: msg.sender.clone(),
            key,
            log_ms: msg.log_ms,
        });
        self.threshold = threshold;
        if self.status == Status::Open && self.attestations.len() >= usize::from(threshold) {
            self.status = Status::Fired { at_ms: msg.log_ms };
            self.fired_ms = Some(msg.log_ms);
        }
        Ok(())
    }

    /// A snapback opened on an adopted finding of armed attack: the commission's k
    /// signatures are its attestation, so it fires at once. The opener is an attester or
    /// a commission member.
    pub(crate) fn fire_on_finding(
        &mut self,
        msg: &CaseMessage<'_>,
        roster: &Roster,
        book: &CaseBook,
    ) -> Result<(), Refusal> {
        if check_attester(msg.sender, roster).is_err() {
            check_member(msg.sender, roster).map_err(|_| {
                Refusal::new(
                    RefusalKind::NotAnAttester,
                    format!(
                        "{} is neither an attester nor a commission member",
                        msg.sender
                    ),
                )
            })?;
        }
        let tag = msg.tag;
        let [cite] = tag.cites.as_slice() else {
            return refuse(RefusalKind::BadTag, "a snapback cites one finding");
        };
        if tag.statement != Some(cite.hash) {
            return refuse(
                RefusalKind::BadTag,
                "a snapback fired by a finding attests the finding's hash",
            );
        }
        match book.get(&cite.id) {
            Some(c) if c.fires_snapback(&cite.hash) => {}
            Some(_) => {
                return refuse(
                    RefusalKind::BadCitation,
                    format!(
                        "case {} has no adopted finding {} of armed attack",
                        cite.id, cite.hash
                    ),
                );
            }
            None if book.is_partial() => self.unchecked.push(cite.id),
            None => {
                return refuse(
                    RefusalKind::BadCitation,
                    format!("no attribution case {} in the log", cite.id),
                );
            }
        }
        self.cites = tag.cites.clone();
        self.status = Status::Fired { at_ms: msg.log_ms };
        self.fired_ms = Some(msg.log_ms);
        Ok(())
    }

    /// Does this case hold the adopted finding `hash`, of armed attack?
    fn fires_snapback(&self, hash: &Digest32) -> bool {
        self.case_type == CaseType::Attribution
            && self.adopted.is_some_and(|(h, _)| &h == hash)
            && self.adopted_vote().and_then(|v| v.characterisation)
                == Some(Characterisation::ArmedAttack)
    }

    /// Each finding signed in the case and how many members signed it, in the order
    /// they were first signed.
    pub fn signatures(&self) -> Vec<(Digest32, usize)> {
        let mut counts: Vec<(Digest32, usize)> = Vec::new();
        for v in self.votes.iter().filter(|v| v.stage == Stage::Finding) {
            match counts.iter_mut().find(|(h, _)| *h == v.hash) {
                Some((_, n)) => *n += 1,
                None => counts.push((v.hash, 1)),
            }
        }
        counts
    }

    /// The first signature of the adopted finding (its terms).
    pub fn adopted_vote(&self) -> Option<&Vote> {
        let (hash, _) = self.adopted?;
        self.votes
            .iter()
            .find(|v| v.stage == Stage::Finding && v.hash == hash)
    }

    /// An attribution opened by a member, citing ceasefire reports it may read by id and
    /// envelope hash.
    pub(crate) fn open_attribution(
        &mut self,
        msg: &CaseMessage<'_>,
        roster: &Roster,
        book: &CaseBook,
    ) -> Result<(), Refusal> {
        let tag = msg.tag;
        if !tag.parties.is_empty() || tag.statement.is_some() || tag.within_ms.is_some() {
            return refuse(
                RefusalKind::BadTag,
                "an attribution names no parties, statement or period: its members are the \
                 commission's",
            );
        }
        let (_, threshold) = check_member(msg.sender, roster)?;
        if tag.cites.is_empty() || tag.cites.len() > MAX_CITES {
            return refuse(
                RefusalKind::BadTag,
                format!("an attribution cites 1 to {MAX_CITES} reports"),
            );
        }
        let grants = &roster
            .active(msg.sender)
            .map_err(|_| Refusal::new(RefusalKind::NotAMember, "opener not active"))?
            .grants;
        for (i, c) in tag.cites.iter().enumerate() {
            if tag.cites[..i].iter().any(|d| d.id == c.id) {
                return refuse(RefusalKind::BadTag, format!("report {} cited twice", c.id));
            }
            match book.report(&c.id) {
                Some(r) if r.hash != c.hash => {
                    return refuse(
                        RefusalKind::BadCitation,
                        format!("report {} has a different envelope hash", c.id),
                    );
                }
                Some(r) if !may_read(msg.sender, grants, &r.labels) => {
                    return refuse(
                        RefusalKind::NotPermitted,
                        format!("{} may not read the report {} it cites", msg.sender, c.id),
                    );
                }
                Some(_) => {}
                None if book.is_partial() => self.unchecked.push(c.id),
                None => {
                    return refuse(
                        RefusalKind::BadCitation,
                        format!("no ceasefire report {} in the log", c.id),
                    );
                }
            }
        }
        self.cites = tag.cites.clone();
        self.threshold = threshold;
        Ok(())
    }

    /// A member's signed finding or dissent: one each per member and key; a finding is
    /// adopted when `threshold` members have signed the same hash with the same terms.
    pub(crate) fn vote(&mut self, msg: &CaseMessage<'_>, roster: &Roster) -> Result<(), Refusal> {
        let tag = msg.tag;
        if self.case_type != CaseType::Attribution {
            return refuse(
                RefusalKind::BadTag,
                format!("{} belongs in an attribution case", tag.stage),
            );
        }
        let (key, threshold) = check_member(msg.sender, roster)?;
        if self
            .votes
            .iter()
            .any(|v| &v.node == msg.sender || v.key == key)
        {
            return refuse(
                RefusalKind::DuplicateAttestation,
                format!(
                    "{} (or its key) has signed in this case already",
                    msg.sender
                ),
            );
        }
        let Some(hash) = tag.statement else {
            return refuse(RefusalKind::BadTag, "a finding or dissent names its hash");
        };
        if tag.stage == Stage::Finding && msg.kind != crate::payload::Kind::Finding {
            return refuse(
                RefusalKind::BadTag,
                "a finding's signature carries the finding itself",
            );
        }
        let vote = Vote {
            node: msg.sender.clone(),
            key,
            stage: tag.stage,
            hash,
            characterisation: tag.characterisation,
            within_ms: tag.within_ms,
            owed_by: tag.parties.clone(),
            log_index: msg.log_index,
            log_ms: msg.log_ms,
        };
        let earlier = self
            .votes
            .iter()
            .find(|v| v.stage == Stage::Finding && v.hash == hash);
        if tag.stage == Stage::Dissent {
            if earlier.is_none() || tag.characterisation.is_some() || tag.within_ms.is_some() {
                return refuse(
                    RefusalKind::BadTag,
                    "a dissent names a finding signed in this case, and nothing else",
                );
            }
            self.votes.push(vote);
            return Ok(());
        }
        self.check_terms(&vote, earlier, msg, roster)?;
        self.votes.push(vote);
        self.threshold = threshold;
        let signed = self
            .signatures()
            .into_iter()
            .find_map(|(h, n)| (h == hash).then_some(n))
            .unwrap_or(0);
        if self.adopted.is_none() && signed >= usize::from(threshold) {
            self.adopt(msg.log_ms, roster);
        }
        Ok(())
    }

    fn check_terms(
        &self,
        vote: &Vote,
        earlier: Option<&Vote>,
        msg: &CaseMessage<'_>,
        roster: &Roster,
    ) -> Result<(), Refusal> {
        if let Some((adopted, _)) = self.adopted
            && adopted != vote.hash
        {
            return refuse(
                RefusalKind::StageOutOfOrder,
                format!("finding {adopted} was adopted already"),
            );
        }
        let Some(characterisation) = vote.characterisation else {
            return refuse(
                RefusalKind::BadTag,
                "a finding carries its characterisation",
            );
        };
        if let Some(e) = earlier {
            if (e.characterisation, e.within_ms, &e.owed_by)
                != (Some(characterisation), vote.within_ms, &vote.owed_by)
            {
                return refuse(
                    RefusalKind::BadTag,
                    format!(
                        "the header's terms differ from {}'s for the same hash",
                        e.node
                    ),
                );
            }
            return Ok(());
        }
        if vote
            .within_ms
            .is_some_and(|w| !(MIN_WITHIN_MS..=MAX_WITHIN_MS).contains(&w))
        {
            return refuse(RefusalKind::BadTag, "a remedy period is 1 s to a year");
        }
        if !vote.owed_by.is_empty() {
            if vote.within_ms.is_none() {
                return refuse(RefusalKind::BadTag, "nodes owe a remedy only with a period");
            }
            named_parties(&vote.owed_by, msg.sender, &self.labels, roster, msg.log_ms)?;
        }
        Ok(())
    }

    /// Adopt the finding just signed by the threshold: the remedy's owers (or, with none
    /// named, the commission's members who may read the case) become the parties.
    fn adopt(&mut self, at_ms: u64, roster: &Roster) {
        let Some(last) = self.votes.last() else {
            return;
        };
        self.adopted = Some((last.hash, at_ms));
        self.status = Status::Adopted { at_ms };
        let Some(first) = self.adopted_vote() else {
            return;
        };
        if first.within_ms.is_none() {
            return;
        }
        let owers: Vec<NodeId> = if first.owed_by.is_empty() {
            let members = roster.body().commission.as_ref();
            members
                .map(|p| p.members.clone())
                .unwrap_or_default()
                .into_iter()
                .filter(|m| {
                    roster
                        .active(m)
                        .is_ok_and(|n| may_read(&n.id, &n.grants, &self.labels))
                })
                .collect()
        } else {
            first.owed_by.clone()
        };
        self.parties = owers
            .into_iter()
            .map(|p| {
                let party = Party {
                    added_ms: at_ms,
                    answers: Vec::new(),
                };
                (p, party)
            })
            .collect::<BTreeMap<_, _>>();
    }

    /// An adopted finding's remedy deadline.
    pub(crate) fn remedy_deadline(&self) -> Option<Deadline> {
        let (_, at_ms) = self.adopted?;
        let within = self.adopted_vote()?.within_ms?;
        Some(Deadline {
            stage: Stage::Remedied,
            due_ms: at_ms.saturating_add(within),
        })
    }
}
