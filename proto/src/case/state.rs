//! A case's state: what the fold of its messages holds, and what follows from it (the
//! deadlines, who is missing). The rules that change it are in `fold` and `panel`.

use std::collections::BTreeMap;

use super::commission::Vote;
use super::{CONSULT_WITHIN_MS, CaseTag, CaseType, Citation, DECIDE_WITHIN_MS, Deadline, Stage};
use crate::ids::{Digest32, MessageId, NodeId};
use crate::keys::SignPublic;
use crate::labels::Labels;
use crate::payload::Kind;

/// A case message as the fold sees it: what the signed header says, where the log put
/// it and when.
#[derive(Debug, Clone, Copy)]
pub struct CaseMessage<'a> {
    /// The message id (an opening message's id names the case).
    pub id: MessageId,
    /// Who signed it.
    pub sender: &'a NodeId,
    /// What its (encrypted) payload is, as the signed header says.
    pub kind: Kind,
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
    /// An attribution whose finding k members signed at `at_ms`.
    Adopted {
        /// When the k-th signature was logged.
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
    /// Snapback: attestations needed (the roster's threshold when the last one came);
    /// attribution: signatures needed.
    pub threshold: u8,
    /// Attribution: the reports cited; snapback: the attribution case whose adopted
    /// finding fired it.
    pub cites: Vec<Citation>,
    /// Citations this fold could not check (a party folding one thread only).
    pub unchecked: Vec<MessageId>,
    /// Attribution: the members' findings and dissents, in log order.
    pub votes: Vec<Vote>,
    /// Attribution: the adopted finding's hash, and when the k-th signature came.
    pub adopted: Option<(Digest32, u64)>,
    /// Every message of the case: (log index, log time, stage).
    pub thread: Vec<(u64, u64, Stage)>,
    /// Deadlines the broker recorded as passed, with who had not answered.
    pub recorded: BTreeMap<Stage, Vec<NodeId>>,
}

impl Case {
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
            CaseType::Exercise => self
                .within_ms
                .map(|within| Deadline {
                    stage: Stage::Answered,
                    due_ms: self.opened_ms.saturating_add(within),
                })
                .into_iter()
                .collect(),
            CaseType::Attribution => self.remedy_deadline().into_iter().collect(),
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
}
