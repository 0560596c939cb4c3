//! One case, folded: the opening message starts it, each reply is checked against the
//! state so far and the roster in force, then applied. Nothing here reads a clock: the
//! times are the broker's log times of the messages.

use std::collections::BTreeMap;

use super::book::CaseBook;
use super::state::{Answer, Case, CaseMessage, Party, Status};
use super::{CaseType, MAX_PARTIES, MAX_WITHIN_MS, MIN_WITHIN_MS, Refusal, RefusalKind, Stage};
use crate::access::may_read;
use crate::ids::NodeId;
use crate::labels::Labels;
use crate::payload::Kind;
use crate::roster::{Role, Roster};

pub(crate) fn refuse<T>(kind: RefusalKind, detail: impl Into<String>) -> Result<T, Refusal> {
    Err(Refusal::new(kind, detail))
}

/// May everyone who can read `reply` also read `case`? (No reply may reach further than
/// the case it belongs to.)
pub(crate) fn within_labels(reply: &Labels, case: &Labels) -> bool {
    reply.level >= case.level
        && case.compartments.is_subset(&reply.compartments)
        && (case.rel_to.is_empty()
            || (!reply.rel_to.is_empty() && reply.rel_to.is_subset(&case.rel_to)))
        && reply.exercise == case.exercise
}

/// The parties named by `sender`, checked: some, not too many, no repeats, not the
/// sender, each an active node that receives content and may read `labels`.
pub(crate) fn named_parties(
    parties: &[NodeId],
    sender: &NodeId,
    labels: &Labels,
    roster: &Roster,
    at_ms: u64,
) -> Result<BTreeMap<NodeId, Party>, Refusal> {
    if parties.is_empty() || parties.len() > MAX_PARTIES {
        return refuse(
            RefusalKind::BadTag,
            format!(
                "a case names 1 to {MAX_PARTIES} parties, not {}",
                parties.len()
            ),
        );
    }
    let mut named = BTreeMap::new();
    for p in parties {
        let ok = roster
            .active(p)
            .is_ok_and(|n| n.role.receives_content() && may_read(&n.id, &n.grants, labels));
        if !ok && p != sender {
            return refuse(
                RefusalKind::NotPermitted,
                format!("party {p} may not read a case labelled {labels}"),
            );
        }
        let party = Party {
            added_ms: at_ms,
            answers: Vec::new(),
        };
        if p == sender || named.insert(p.clone(), party).is_some() {
            return refuse(
                RefusalKind::BadTag,
                format!("party {p} is named twice or is the sender"),
            );
        }
    }
    Ok(named)
}

impl Case {
    /// Start a case from its opening message.
    ///
    /// # Errors
    /// `BadTag`, `NotPermitted` (a consultation opened by a non-liaison, a party that may
    /// not read the case), `NotAnAttester` (a snapback opened by a non-attester).
    pub fn open(msg: &CaseMessage<'_>, roster: &Roster, book: &CaseBook) -> Result<Self, Refusal> {
        let tag = msg.tag;
        if tag.stage != Stage::Open || tag.case.is_some() || tag.characterisation.is_some() {
            return refuse(
                RefusalKind::BadTag,
                "an opening message has stage open, names no case and characterises nothing",
            );
        }
        let mut case = Self {
            id: msg.id,
            case_type: tag.case_type,
            opener: msg.sender.clone(),
            labels: msg.labels.clone(),
            opened_ms: msg.log_ms,
            opened_index: msg.log_index,
            parties: BTreeMap::new(),
            status: Status::Open,
            statement: None,
            within_ms: None,
            attestations: Vec::new(),
            fired_ms: None,
            threshold: 0,
            cites: Vec::new(),
            unchecked: Vec::new(),
            votes: Vec::new(),
            adopted: None,
            thread: vec![(msg.log_index, msg.log_ms, Stage::Open)],
            recorded: BTreeMap::new(),
        };
        match tag.case_type {
            CaseType::Consultation => {
                if tag.statement.is_some() || tag.within_ms.is_some() || !tag.cites.is_empty() {
                    return refuse(
                        RefusalKind::BadTag,
                        "a consultation carries no statement, answer period or citation",
                    );
                }
                liaison(msg, "request consultations", roster)?;
            }
            CaseType::Snapback => {
                let (Some(statement), Some(within)) = (tag.statement, tag.within_ms) else {
                    return refuse(
                        RefusalKind::BadTag,
                        "a snapback trigger carries its statement hash and answer period",
                    );
                };
                case.statement = Some(statement);
                case.within_ms = Some(answer_period(within)?);
                if tag.cites.is_empty() {
                    case.attest(msg, roster)?;
                } else {
                    case.fire_on_finding(msg, roster, book)?;
                }
            }
            CaseType::Exercise => {
                if tag.statement.is_some() || !tag.cites.is_empty() {
                    return refuse(
                        RefusalKind::BadTag,
                        "an exercise notice carries no statement or citation",
                    );
                }
                if msg.kind != Kind::ExerciseNotice {
                    return refuse(
                        RefusalKind::BadTag,
                        "an exercise case opens with an exercise notice",
                    );
                }
                liaison(msg, "notify exercises", roster)?;
                match (tag.parties.is_empty(), tag.within_ms) {
                    (true, None) => return Ok(case),
                    (false, Some(within)) => case.within_ms = Some(answer_period(within)?),
                    _ => {
                        return refuse(
                            RefusalKind::BadTag,
                            "invited observers and an answer period come together",
                        );
                    }
                }
            }
            CaseType::Attribution => {
                case.open_attribution(msg, roster, book)?;
                return Ok(case);
            }
        }
        case.parties = named_parties(&tag.parties, msg.sender, msg.labels, roster, msg.log_ms)?;
        Ok(case)
    }

    /// Check a reply against the case and, if it fits, apply it.
    ///
    /// # Errors
    /// The rule it breaks; the case is then unchanged.
    pub fn apply(&mut self, msg: &CaseMessage<'_>, roster: &Roster) -> Result<(), Refusal> {
        let tag = msg.tag;
        if tag.case != Some(self.id) || tag.case_type != self.case_type {
            return refuse(
                RefusalKind::BadTag,
                format!(
                    "the reply is tagged as a {} but the case is a {}",
                    tag.case_type, self.case_type
                ),
            );
        }
        let votes = matches!(tag.stage, Stage::Finding | Stage::Dissent);
        let finding = tag.stage == Stage::Finding;
        if (!finding && (tag.within_ms.is_some() || tag.characterisation.is_some()))
            || !tag.cites.is_empty()
            || (!matches!(tag.stage, Stage::AddParties | Stage::Finding) && !tag.parties.is_empty())
            || (tag.stage != Stage::Attest && !votes && tag.statement.is_some())
        {
            return refuse(
                RefusalKind::BadTag,
                format!("a {} reply carries fields it may not", tag.stage),
            );
        }
        if !within_labels(msg.labels, &self.labels) {
            return refuse(
                RefusalKind::LabelsWider,
                format!(
                    "reply labelled {} but the case is {}",
                    msg.labels, self.labels
                ),
            );
        }
        if let Status::Withdrawn { .. } = self.status {
            return refuse(
                RefusalKind::Closed,
                format!("case {} was withdrawn", self.id),
            );
        }
        match tag.stage {
            Stage::Open => refuse(RefusalKind::BadTag, "a reply cannot open a case"),
            Stage::AddParties | Stage::Withdrawn | Stage::Amended | Stage::Corrected
                if msg.sender != &self.opener =>
            {
                refuse(
                    RefusalKind::NotAParty,
                    format!("only the opener {} may send {}", self.opener, tag.stage),
                )
            }
            Stage::Amended | Stage::Corrected => {
                if self.case_type != CaseType::Exercise || msg.kind != Kind::ExerciseNotice {
                    return refuse(
                        RefusalKind::BadTag,
                        format!("{} carries a new notice in an exercise case", tag.stage),
                    );
                }
                self.push(msg);
                Ok(())
            }
            Stage::AddParties if self.case_type == CaseType::Attribution => refuse(
                RefusalKind::BadTag,
                "an attribution's parties are named by its adopted finding",
            ),
            Stage::AddParties => {
                let added =
                    named_parties(&tag.parties, msg.sender, &self.labels, roster, msg.log_ms)?;
                if let Some(p) = added.keys().find(|p| self.parties.contains_key(*p)) {
                    return refuse(RefusalKind::BadTag, format!("{p} is a party already"));
                }
                self.parties.extend(added);
                self.push(msg);
                Ok(())
            }
            Stage::Withdrawn if self.adopted.is_some() => refuse(
                RefusalKind::StageOutOfOrder,
                "a finding was adopted: the attribution can no longer be withdrawn",
            ),
            Stage::Withdrawn => {
                self.status = Status::Withdrawn { at_ms: msg.log_ms };
                self.push(msg);
                Ok(())
            }
            Stage::Attest => {
                if self.case_type != CaseType::Snapback || tag.statement != self.statement {
                    return refuse(
                        RefusalKind::BadTag,
                        "an attestation names the snapback's own statement hash",
                    );
                }
                self.attest(msg, roster)?;
                self.push(msg);
                Ok(())
            }
            Stage::Finding | Stage::Dissent => {
                self.vote(msg, roster)?;
                self.push(msg);
                Ok(())
            }
            stage => self.answer(msg, stage),
        }
    }

    pub(crate) fn push(&mut self, msg: &CaseMessage<'_>) {
        self.thread.push((msg.log_index, msg.log_ms, msg.tag.stage));
    }

    /// A party's answer of `stage`: the next in its order, late if after its deadline.
    fn answer(&mut self, msg: &CaseMessage<'_>, stage: Stage) -> Result<(), Refusal> {
        let order = Stage::party_stages(self.case_type);
        if !order.contains(&stage) {
            return refuse(
                RefusalKind::BadTag,
                format!("{stage} is not a stage of a {}", self.case_type),
            );
        }
        if self.case_type == CaseType::Snapback && self.fired_ms.is_none() {
            return refuse(
                RefusalKind::StageOutOfOrder,
                "the snapback has not fired: its attestations are below the threshold",
            );
        }
        if self.case_type == CaseType::Attribution && self.adopted.is_none() {
            return refuse(
                RefusalKind::StageOutOfOrder,
                "no finding has been adopted: there is no remedy to report",
            );
        }
        let due = self.due(stage);
        let Some(party) = self.parties.get_mut(msg.sender) else {
            return refuse(
                RefusalKind::NotAParty,
                format!("{} is not a party of case {}", msg.sender, self.id),
            );
        };
        let expected = order.get(party.answers.len());
        if expected != Some(&stage) {
            let after = party.answers.last().map_or("nothing", |a| a.stage.as_str());
            return refuse(
                RefusalKind::StageOutOfOrder,
                format!("{} answered {after}; {stage} cannot follow it", msg.sender),
            );
        }
        party.answers.push(Answer {
            stage,
            log_index: msg.log_index,
            log_ms: msg.log_ms,
            late: due.is_some_and(|d| msg.log_ms > d),
        });
        self.push(msg);
        Ok(())
    }
}

/// An answer period within bounds (a deadline must lie after the commit that starts it,
/// so that auditors can place it exactly, and within a year).
fn answer_period(within: u64) -> Result<u64, Refusal> {
    if (MIN_WITHIN_MS..=MAX_WITHIN_MS).contains(&within) {
        Ok(within)
    } else {
        refuse(
            RefusalKind::BadTag,
            format!("answer period {within} ms is not between 1 s and a year"),
        )
    }
}

/// Only a liaison may open a consultation or notify an exercise.
fn liaison(msg: &CaseMessage<'_>, what: &str, roster: &Roster) -> Result<(), Refusal> {
    if roster
        .active(msg.sender)
        .is_ok_and(|n| n.role == Role::Liaison)
    {
        Ok(())
    } else {
        refuse(
            RefusalKind::NotPermitted,
            format!("{} is not a liaison and may not {what}", msg.sender),
        )
    }
}
