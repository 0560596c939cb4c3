//! Every case of a log, with the deadlines still to pass in time order: the broker's case
//! index, a party's tracker and an auditor's recomputation are each one `CaseBook` fed
//! the same messages in the same order.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use super::state::{Case, CaseMessage};
use super::{CaseType, Deadline, Refusal, RefusalKind, Stage};
use crate::audit::{Entry, Event};
use crate::ids::{Digest32, MessageId, NodeId};
use crate::labels::Labels;
use crate::payload::Kind;
use crate::roster::Roster;

/// A deadline that has passed, and who had not answered by it: what the broker records
/// as a `CaseDeadline` audit entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Due {
    /// The case.
    pub case: MessageId,
    /// Its type.
    pub case_type: CaseType,
    /// The stage that was due.
    pub stage: Stage,
    /// When.
    pub due_ms: u64,
    /// Parties without an answer by then.
    pub missing: Vec<NodeId>,
}

/// A ceasefire report in the log, as an attribution may cite it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// Its envelope hash.
    pub hash: Digest32,
    /// Who may read it.
    pub labels: Labels,
}

/// The cases of one log.
#[derive(Debug, Clone, Default)]
pub struct CaseBook {
    /// Boxed: a case is large, and map nodes move their values as they split.
    cases: BTreeMap<MessageId, Box<Case>>,
    /// Deadlines not yet recorded: (due, case, stage), earliest first.
    pending: BTreeSet<(u64, MessageId, Stage)>,
    /// Every ceasefire report logged (small, and few beside the traffic), for citations.
    reports: HashMap<MessageId, Report>,
    /// Folding one thread only: citations of messages it was not shown are noted as
    /// unchecked instead of refused.
    partial: bool,
}

impl CaseBook {
    /// An empty book for a whole log (the broker's, an auditor's): every citation must
    /// resolve.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty book for one case's thread, at a party: a citation of a message not in
    /// the thread is recorded as unchecked (the broker and the auditors checked it).
    pub fn partial() -> Self {
        Self {
            partial: true,
            ..Self::default()
        }
    }

    /// Folding one thread only?
    pub fn is_partial(&self) -> bool {
        self.partial
    }

    /// Note a logged message an attribution may cite (only ceasefire reports are kept).
    pub fn note(&mut self, id: MessageId, kind: Kind, labels: &Labels, hash: Digest32) {
        if kind == Kind::CeasefireReport {
            let labels = labels.clone();
            self.reports.insert(id, Report { hash, labels });
        }
    }

    /// A logged ceasefire report.
    pub fn report(&self, id: &MessageId) -> Option<&Report> {
        self.reports.get(id)
    }

    /// A case by id.
    pub fn get(&self, id: &MessageId) -> Option<&Case> {
        self.cases.get(id).map(|c| &**c)
    }

    /// Every case, oldest id first.
    pub fn cases(&self) -> impl Iterator<Item = &Case> {
        self.cases.values().map(|c| &**c)
    }

    /// How many cases.
    pub fn len(&self) -> usize {
        self.cases.len()
    }

    /// No cases?
    pub fn is_empty(&self) -> bool {
        self.cases.is_empty()
    }

    /// Check a case message and, if the fold accepts it, apply it.
    ///
    /// # Errors
    /// The rule it breaks (`UnknownCase` for a reply to a case not in the book); the book
    /// is then unchanged.
    pub fn apply(&mut self, msg: &CaseMessage<'_>, roster: &Roster) -> Result<(), Refusal> {
        let Some(id) = msg.tag.case else {
            if self.cases.contains_key(&msg.id) {
                return Err(Refusal::new(RefusalKind::BadTag, "case opened twice"));
            }
            let case = Case::open(msg, roster, self)?;
            self.track(msg.id, Vec::new(), unrecorded(&case));
            self.cases.insert(msg.id, Box::new(case));
            return Ok(());
        };
        let Some(case) = self.cases.get_mut(&id) else {
            return Err(Refusal::new(
                RefusalKind::UnknownCase,
                format!("no case {id} in the log"),
            ));
        };
        let before = case.deadlines();
        case.apply(msg, roster)?;
        let after = unrecorded(case);
        self.track(id, before, after);
        Ok(())
    }

    /// Keep `pending` in step with a case's deadlines after a change.
    fn track(&mut self, id: MessageId, before: Vec<Deadline>, after: Vec<Deadline>) {
        for d in before {
            self.pending.remove(&(d.due_ms, id, d.stage));
        }
        for d in after {
            self.pending.insert((d.due_ms, id, d.stage));
        }
    }

    /// Deadlines not yet recorded that fall due by `until_ms`: (due, case, stage).
    pub fn pending_until(&self, until_ms: u64) -> Vec<(u64, MessageId, Stage)> {
        self.pending
            .iter()
            .take_while(|(due, ..)| *due <= until_ms)
            .copied()
            .collect()
    }

    /// The earliest deadline not yet recorded.
    pub fn next_due(&self) -> Option<u64> {
        self.pending.first().map(|(due, ..)| *due)
    }

    /// Deadlines passed by `now_ms` and not yet recorded, earliest first.
    pub fn due(&self, now_ms: u64) -> Vec<Due> {
        self.pending
            .iter()
            .take_while(|(due, ..)| *due <= now_ms)
            .filter_map(|(due, id, stage)| {
                let case = self.cases.get(id)?;
                Some(Due {
                    case: *id,
                    case_type: case.case_type,
                    stage: *stage,
                    due_ms: *due,
                    missing: case.missing(*stage, *due),
                })
            })
            .collect()
    }

    /// Mark a passed deadline as recorded (its `CaseDeadline` entry is in the log).
    pub fn record(&mut self, due: &Due) {
        self.pending.remove(&(due.due_ms, due.case, due.stage));
        if let Some(case) = self.cases.get_mut(&due.case) {
            case.recorded.insert(due.stage, due.missing.clone());
        }
    }

    /// Replay one audit entry (`roster`: the roster in force at it), as an auditor and a
    /// restarting broker do: a `Published` case message is folded, a `CaseDeadline`
    /// entry must be exactly the deadline the fold says passed, and no other entry may be
    /// logged at or after a deadline the broker has not yet recorded.
    ///
    /// # Errors
    /// What the entry contradicts, in a sentence.
    pub fn replay(&mut self, entry: &Entry, roster: Option<&Roster>) -> Result<(), String> {
        if let Event::CaseDeadline {
            case,
            stage,
            due_ms,
            missing,
        } = &entry.event
        {
            let expected = self
                .due(entry.time_ms)
                .into_iter()
                .find(|d| d.case == *case && d.stage == *stage);
            return match expected {
                Some(d) if d.due_ms == *due_ms && d.missing == *missing => {
                    self.record(&d);
                    Ok(())
                }
                Some(d) => Err(format!(
                    "CaseDeadline of case {case} ({stage}) says due {due_ms} missing {}, \
                     the fold says due {} missing {}",
                    names(missing),
                    d.due_ms,
                    names(&d.missing)
                )),
                None => Err(format!(
                    "CaseDeadline of case {case} ({stage}): no such deadline has passed by {}",
                    entry.time_ms
                )),
            };
        }
        if let Some((due, id, stage)) = self.pending.first() {
            if *due <= entry.time_ms {
                return Err(format!(
                    "the {stage} deadline of case {id} passed at {due} without its \
                     CaseDeadline entry"
                ));
            }
        }
        if let Event::Published {
            id,
            kind,
            labels,
            envelope_hash,
            ..
        } = &entry.event
        {
            self.note(*id, *kind, labels, *envelope_hash);
        }
        if let Event::Published {
            id,
            sender,
            kind,
            labels,
            log_index,
            case: Some(tag),
            ..
        } = &entry.event
        {
            let roster = roster.ok_or("a case message before any roster was in force")?;
            let msg = CaseMessage {
                id: *id,
                sender,
                kind: *kind,
                labels,
                tag,
                log_index: *log_index,
                log_ms: entry.time_ms,
            };
            self.apply(&msg, roster)
                .map_err(|r| format!("the log holds a case message the fold refuses ({r})"))?;
        }
        Ok(())
    }
}

/// A case's deadlines not yet recorded as passed.
fn unrecorded(case: &Case) -> Vec<Deadline> {
    case.deadlines()
        .into_iter()
        .filter(|d| !case.recorded.contains_key(&d.stage))
        .collect()
}

fn names(nodes: &[NodeId]) -> String {
    let v: Vec<&str> = nodes.iter().map(NodeId::as_str).collect();
    format!("[{}]", v.join(" "))
}
