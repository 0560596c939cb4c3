//! One case, folded: the opening message starts it, each reply is checked against the
//! state so far and the roster in force, then applied. Nothing here reads a clock: the
//! times are the broker's log times of the messages.

use std::collections::BTreeMap;

use super::{
    CONSULT_WITHIN_MS, CaseTag, CaseType, DECIDE_WITHIN_MS, Deadline, MAX_PARTIES, MAX_WITHIN_MS,
    MIN_WITHIN_MS, Refusal, RefusalKind, Stage,
};
use crate::access::may_read;
use crate::ids::{Digest32, MessageId, NodeId};
use crate::keys::SignPublic;
use crate::labels::Labels;
use crate::roster::{Role, Roster};

/// A case message as the fold sees it: what the signed header says, where the log put
/// it and when.
#[derive(Debug, Clone, Copy)]
pub struct CaseMessage<'a> {
    /// The message id (an opening message's id names the case).
    pub id: MessageId,
    /// Who signed it.
    pub sender: &'a NodeId,
    /// Its labels.
    pub labels: &'a Labels,
    /// Its case tag.
    pub tag: &'a CaseTag,
    /// Its message-log index.
    pub log_index: u64,
    /// The broker's log time of it.
    pub log_ms: u64,
}

/// One party's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// The stage answered.
    pub stage: Stage,
    /// Where the answer is in the message log.
    pub log_index: u64,
    /// When it was logged.
    pub log_ms: u64,
    /// Logged after the stage's deadline (recorded, not refused).
    pub late: bool,
}

/// A party expected to answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Party {
    /// When it was named (the opening, or a later `AddParties`).
    pub added_ms: u64,
    /// Its answers, in stage order.
    pub answers: Vec<Answer>,
}

impl Party {
    /// Its answer of `stage`, if any.
    pub fn answer(&self, stage: Stage) -> Option<&Answer> {
        self.answers.iter().find(|a| a.stage == stage)
    }
}

/// One attester's signature on a snapback's statement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attestation {
    /// Who.
    pub node: NodeId,
    /// With which key (two nodes sharing a key count once).
    pub key: SignPublic,
    /// When it was logged.
    pub log_ms: u64,
}

/// Where a case stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Open: a consultation running, or a snapback waiting for attestations.
    Open,
    /// A snapback whose attestations met the threshold at `at_ms`.
    Fired {
        /// When the threshold was met.
        at_ms: u64,
    },
    /// Withdrawn by its opener at `at_ms`.
    Withdrawn {
        /// When.
        at_ms: u64,
    },
}

/// A case: the fold of its messages so far.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Case {
    /// The opening message's id.
    pub id: MessageId,
    /// The mechanism.
    pub case_type: CaseType,
    /// Who opened it.
    pub opener: NodeId,
    /// The opening message's labels: no reply may be readable more widely.
    pub labels: Labels,
    /// When the opening message was logged: the deadlines count from here.
    pub opened_ms: u64,
    /// Where it is in the message log.
    pub opened_index: u64,
    /// Expected to answer.
    pub parties: BTreeMap<NodeId, Party>,
    /// Where it stands.
    pub status: Status,
    /// Snapback: the attested statement's hash.
    pub statement: Option<Digest32>,
    /// Snapback: the answer period once fired.
    pub within_ms: Option<u64>,
    /// Snapback: the distinct attestations so far.
    pub attestations: Vec<Attestation>,
    /// Snapback: when the attestations met the threshold (kept after a withdrawal).
    pub fired_ms: Option<u64>,
    /// Snapback: attestations needed (the roster's threshold when the last one came).
    pub threshold: u8,
    /// Every message of the case: (log index, log time, stage).
    pub thread: Vec<(u64, u64, Stage)>,
    /// Deadlines the broker recorded as passed, with who had not answered.
    pub recorded: BTreeMap<Stage, Vec<NodeId>>,
}

fn refuse<T>(kind: RefusalKind, detail: impl Into<String>) -> Result<T, Refusal> {
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
fn named_parties(
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

fn check_attester(sender: &NodeId, roster: &Roster) -> Result<(SignPublic, u8), Refusal> {
    let panel = roster.body().attesters.as_ref();
    let node = roster.active(sender).ok();
    match (panel, node) {
        (Some(p), Some(n)) if p.members.contains(sender) => Ok((n.sign, p.threshold)),
        _ => refuse(
            RefusalKind::NotAnAttester,
            format!(
                "{sender} is not an attester in roster version {}",
                roster.version()
            ),
        ),
    }
}

impl Case {
    /// Start a case from its opening message.
    ///
    /// # Errors
    /// `BadTag`, `NotPermitted` (a consultation opened by a non-liaison, a party that may
    /// not read the case), `NotAnAttester` (a snapback opened by a non-attester).
    pub fn open(msg: &CaseMessage<'_>, roster: &Roster) -> Result<Self, Refusal> {
        let tag = msg.tag;
        if tag.stage != Stage::Open || tag.case.is_some() {
            return refuse(
                RefusalKind::BadTag,
                "an opening message has stage open and names no case",
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
            thread: vec![(msg.log_index, msg.log_ms, Stage::Open)],
            recorded: BTreeMap::new(),
        };
        match tag.case_type {
            CaseType::Consultation => {
                if tag.statement.is_some() || tag.within_ms.is_some() {
                    return refuse(
                        RefusalKind::BadTag,
                        "a consultation carries no statement or answer period",
                    );
                }
                let liaison = roster
                    .active(msg.sender)
                    .is_ok_and(|n| n.role == Role::Liaison);
                if !liaison {
                    return refuse(
                        RefusalKind::NotPermitted,
                        format!(
                            "{} is not a liaison and may not request consultations",
                            msg.sender
                        ),
                    );
                }
            }
            CaseType::Snapback => {
                let (Some(statement), Some(within)) = (tag.statement, tag.within_ms) else {
                    return refuse(
                        RefusalKind::BadTag,
                        "a snapback trigger carries its statement hash and answer period",
                    );
                };
                if !(MIN_WITHIN_MS..=MAX_WITHIN_MS).contains(&within) {
                    return refuse(
                        RefusalKind::BadTag,
                        format!("answer period {within} ms is not between 1 s and a year"),
                    );
                }
                case.statement = Some(statement);
                case.within_ms = Some(within);
                case.attest(msg, roster)?;
            }
        }
        case.parties = named_parties(&tag.parties, msg.sender, msg.labels, roster, msg.log_ms)?;
        Ok(case)
    }

    /// The case's deadlines: a consultation's at 24 h and 72 h after the request, a
    /// snapback's once it fired. A withdrawal drops the deadlines after it.
    pub fn deadlines(&self) -> Vec<Deadline> {
        let all = match self.case_type {
            CaseType::Consultation => vec![
                Deadline {
                    stage: Stage::Consulted,
                    due_ms: self.opened_ms.saturating_add(CONSULT_WITHIN_MS),
                },
                Deadline {
                    stage: Stage::Decided,
                    due_ms: self.opened_ms.saturating_add(DECIDE_WITHIN_MS),
                },
            ],
            CaseType::Snapback => match (self.fired_ms, self.within_ms) {
                (Some(at), Some(within)) => vec![Deadline {
                    stage: Stage::Reimposed,
                    due_ms: at.saturating_add(within),
                }],
                _ => Vec::new(),
            },
        };
        match self.status {
            Status::Withdrawn { at_ms } => all.into_iter().filter(|d| d.due_ms <= at_ms).collect(),
            _ => all,
        }
    }

    /// When `stage` is due, if it has a deadline.
    pub fn due(&self, stage: Stage) -> Option<u64> {
        self.deadlines()
            .into_iter()
            .find(|d| d.stage == stage)
            .map(|d| d.due_ms)
    }

    /// Who had not answered `stage` by `due_ms` (late answers count as missing).
    pub fn missing(&self, stage: Stage, due_ms: u64) -> Vec<NodeId> {
        self.parties
            .iter()
            .filter(|(_, p)| p.answer(stage).is_none_or(|a| a.log_ms > due_ms))
            .map(|(n, _)| n.clone())
            .collect()
    }

    /// Who has not answered `stage` at all yet (the parties a reminder goes to).
    pub fn unanswered(&self, stage: Stage) -> Vec<NodeId> {
        self.parties
            .iter()
            .filter(|(_, p)| p.answer(stage).is_none())
            .map(|(n, _)| n.clone())
            .collect()
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
        if tag.within_ms.is_some()
            || (tag.stage != Stage::AddParties && !tag.parties.is_empty())
            || (tag.stage != Stage::Attest && tag.statement.is_some())
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
            Stage::AddParties | Stage::Withdrawn if msg.sender != &self.opener => refuse(
                RefusalKind::NotAParty,
                format!("only the opener {} may {} ", self.opener, tag.stage),
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
            stage => self.answer(msg, stage),
        }
    }

    fn push(&mut self, msg: &CaseMessage<'_>) {
        self.thread.push((msg.log_index, msg.log_ms, msg.tag.stage));
    }

    /// Count an attestation (refusing a non-attester, a repeated node or key); fire at
    /// the threshold.
    fn attest(&mut self, msg: &CaseMessage<'_>, roster: &Roster) -> Result<(), Refusal> {
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
