//! The case index: the proto case fold run from headers only, in log order, plus what
//! the broker does with it — refuse a case message the fold refuses (with the fold's own
//! reason), record each deadline as it passes (a `CaseDeadline` audit entry naming who
//! had not answered), and remind the parties that have not answered before each deadline
//! and when it passes. Time is always the log time handed in; nothing here reads a clock.

use std::collections::HashSet;

use ewx_proto::audit::Event;
use ewx_proto::case::{
    Case, CaseBook, CaseEntry, CaseMessage, Refusal, Reminder, Stage, check_recipients,
};
use ewx_proto::frame::RejectReason;
use ewx_proto::roster::Role;
use ewx_proto::{Header, MessageId, NodeId, Roster, may_read};

use super::Rejection;

/// A reminder for one node.
pub type Reminding = (NodeId, Reminder);

/// The broker's cases and the reminders it has sent.
#[derive(Debug, Default)]
pub struct CaseIndex {
    book: CaseBook,
    /// Offsets before a deadline to remind at (ms, any order).
    offsets: Vec<u64>,
    /// Reminder points already passed: (case, stage, offset).
    reminded: HashSet<(MessageId, Stage, u64)>,
    /// No reminder scan before this time (one a second at most: reminders are set hours
    /// ahead, and a scan walks every deadline within the longest offset).
    next_scan_ms: u64,
}

/// Least time between two reminder scans.
const SCAN_EVERY_MS: u64 = 1000;

/// The refusal the client gets for a case message the fold refuses.
pub fn case_rejection(r: Refusal) -> Rejection {
    Rejection::new(RejectReason::Case(r.kind), r.to_string())
}

impl CaseIndex {
    /// Continue from a book rebuilt from the log, reminding `offsets` ms before each
    /// deadline. Reminder points already passed at `now_ms` are not sent again.
    pub fn new(book: CaseBook, offsets: Vec<u64>, now_ms: u64) -> Self {
        let mut index = Self {
            book,
            offsets,
            reminded: HashSet::new(),
            next_scan_ms: 0,
        };
        let _ = index.reminders(now_ms, None);
        index
    }

    /// The fold so far.
    pub fn book(&self) -> &CaseBook {
        &self.book
    }

    /// Note a message about to be logged that a case may cite (a ceasefire report).
    pub fn note(&mut self, header: &Header, envelope_hash: ewx_proto::Digest32) {
        self.book
            .note(header.id, header.kind, &header.labels, envelope_hash);
    }

    /// Check and fold a published message's case tag, if it has one.
    ///
    /// # Errors
    /// `Case(kind)` with the fold's reason; the index is then unchanged.
    pub fn admit(
        &mut self,
        header: &Header,
        log_index: u64,
        now_ms: u64,
        roster: &Roster,
    ) -> Result<(), Rejection> {
        let Some(tag) = &header.case else {
            return Ok(());
        };
        check_recipients(header).map_err(case_rejection)?;
        let msg = CaseMessage {
            id: header.id,
            sender: &header.sender,
            kind: header.kind,
            labels: &header.labels,
            tag,
            log_index,
            log_ms: now_ms,
        };
        self.book.apply(&msg, roster).map_err(case_rejection)
    }

    /// Every deadline passed by `now_ms`: its `CaseDeadline` entry, and a reminder to
    /// each party that has not answered at all.
    pub fn deadlines(
        &mut self,
        now_ms: u64,
        roster: Option<&Roster>,
    ) -> (Vec<Event>, Vec<Reminding>) {
        let mut events = Vec::new();
        let mut reminders = Vec::new();
        for due in self.book.due(now_ms) {
            self.book.record(&due);
            self.reminded
                .retain(|(c, s, _)| (*c, *s) != (due.case, due.stage));
            if let (Some(case), Some(roster)) = (self.book.get(&due.case), roster) {
                reminders.extend(remind(case, due.stage, due.due_ms, now_ms, roster));
            }
            events.push(Event::CaseDeadline {
                case: due.case,
                stage: due.stage,
                due_ms: due.due_ms,
                missing: due.missing,
            });
        }
        (events, reminders)
    }

    /// Reminders whose time has come: for each deadline ahead, the latest reminder point
    /// passed and not yet sent (earlier points passed over are not sent late).
    pub fn reminders(&mut self, now_ms: u64, roster: Option<&Roster>) -> Vec<Reminding> {
        let Some(&longest) = self.offsets.iter().max() else {
            return Vec::new();
        };
        if now_ms < self.next_scan_ms {
            return Vec::new();
        }
        self.next_scan_ms = now_ms.saturating_add(SCAN_EVERY_MS);
        let mut out = Vec::new();
        for (due, id, stage) in self.book.pending_until(now_ms.saturating_add(longest)) {
            let passed: Vec<u64> = self
                .offsets
                .iter()
                .copied()
                .filter(|&o| due.saturating_sub(o) <= now_ms)
                .collect();
            let fresh = passed
                .iter()
                .any(|&o| !self.reminded.contains(&(id, stage, o)));
            for &o in &passed {
                self.reminded.insert((id, stage, o));
            }
            if let (true, Some(case), Some(roster)) = (fresh, self.book.get(&id), roster) {
                out.extend(remind(case, stage, due, now_ms, roster));
            }
        }
        out
    }

    /// The cases `node` may see (newest first): those whose labels it may read, or all
    /// for an auditor (who sees this metadata in the audit log anyway).
    pub fn visible(&self, node: &NodeId, roster: &Roster, limit: usize) -> Vec<CaseEntry> {
        let mut cases: Vec<&Case> = self
            .book
            .cases()
            .filter(|c| may_see(node, c, roster))
            .collect();
        cases.sort_by_key(|c| std::cmp::Reverse(c.opened_index));
        cases
            .into_iter()
            .take(limit)
            .map(|c| CaseEntry {
                case: c.id,
                case_type: c.case_type,
                opened_ms: c.opened_ms,
                messages: c.thread.len() as u64,
            })
            .collect()
    }

    /// A case `node` may see.
    pub fn case_for(&self, node: &NodeId, id: &MessageId, roster: &Roster) -> Option<&Case> {
        self.book.get(id).filter(|c| may_see(node, c, roster))
    }
}

fn may_see(node: &NodeId, case: &Case, roster: &Roster) -> bool {
    roster
        .active(node)
        .is_ok_and(|n| n.role == Role::Auditor || may_read(&n.id, &n.grants, &case.labels))
}

/// Reminders of `stage` to the parties of `case` that have not answered it and may still
/// read the case under the roster in force.
fn remind(case: &Case, stage: Stage, due_ms: u64, now_ms: u64, roster: &Roster) -> Vec<Reminding> {
    case.unanswered(stage)
        .into_iter()
        .filter(|p| {
            roster.active(p).is_ok_and(|n| {
                n.role.receives_content() && may_read(&n.id, &n.grants, &case.labels)
            })
        })
        .map(|p| {
            let r = Reminder {
                case: case.id,
                case_type: case.case_type,
                stage,
                due_ms,
                sent_ms: now_ms,
            };
            (p, r)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::fixture::{NOW, roster};
    use ewx_proto::case::{CONSULT_WITHIN_MS, CaseTag, CaseType};
    use ewx_proto::{Labels, Level};
    use ewx_testkit::id;

    const H: u64 = 3_600_000;

    fn header(sender: &str, n: u8, tag: CaseTag) -> Header {
        let roster = roster();
        let mut env = crate::core::fixture::warning(&roster, 1).header().clone();
        env.id = MessageId([n; 16]);
        env.sender = id(sender);
        env.labels = Labels::new(Level::Amber, Labels::parse_compartments("CORE").unwrap());
        env.case = Some(tag);
        env
    }

    #[test]
    fn reminders_go_to_parties_that_have_not_answered_once_per_point() {
        let roster = roster();
        let mut index = CaseIndex::new(CaseBook::new(), vec![6 * H, H], NOW);
        let open = header(
            "UA",
            1,
            CaseTag::open(CaseType::Consultation, vec![id("PL"), id("GB")]),
        );
        index.admit(&open, 0, NOW, &roster).unwrap();
        let case = MessageId([1; 16]);
        let reply = |n, from: &str, stage| {
            header(from, n, CaseTag::reply(case, CaseType::Consultation, stage))
        };
        index
            .admit(&reply(2, "PL", Stage::Acknowledged), 1, NOW + H, &roster)
            .unwrap();
        index
            .admit(&reply(3, "PL", Stage::Consulted), 2, NOW + H, &roster)
            .unwrap();
        // a refusal carries the fold's own reason
        let e = index
            .admit(&reply(4, "JP", Stage::Acknowledged), 3, NOW + H, &roster)
            .unwrap_err();
        assert_eq!(
            e.reason,
            RejectReason::Case(ewx_proto::case::RefusalKind::NotAParty)
        );
        assert!(
            index.reminders(NOW + 17 * H, Some(&roster)).is_empty(),
            "T-7h: nothing yet"
        );
        let r = index.reminders(NOW + 18 * H, Some(&roster));
        let to: Vec<_> = r.iter().map(|(n, r)| (n.as_str(), r.stage)).collect();
        assert_eq!(
            to,
            [("GB", Stage::Consulted)],
            "T-6h: only GB has not consulted"
        );
        assert!(
            index.reminders(NOW + 19 * H, Some(&roster)).is_empty(),
            "sent once"
        );
        assert_eq!(
            index.reminders(NOW + 23 * H, Some(&roster)).len(),
            1,
            "T-1h"
        );
        let (events, at) = index.deadlines(NOW + CONSULT_WITHIN_MS, Some(&roster));
        assert_eq!(events.len(), 1);
        assert!(
            matches!(&events[0], Event::CaseDeadline { missing, .. } if missing == &[id("GB")])
        );
        assert_eq!(at.len(), 1, "and at the deadline");
        // a broker restarting after T-6h and T-1h of the 72 h deadline sends one, not two
        let mut restarted = CaseIndex::new(index.book().clone(), vec![6 * H, H], NOW + 24 * H);
        assert!(restarted.reminders(NOW + 24 * H, Some(&roster)).is_empty());
        let late = restarted.reminders(NOW + 71 * H + 1, Some(&roster));
        assert_eq!(
            late.len(),
            2,
            "PL and GB have not decided: one reminder each"
        );
        assert!(
            restarted
                .reminders(NOW + 71 * H + 2, Some(&roster))
                .is_empty()
        );
    }

    #[test]
    fn cases_are_listed_only_to_nodes_that_may_read_them() {
        let roster = roster();
        let mut index = CaseIndex::new(CaseBook::new(), vec![H], NOW);
        let open = header(
            "UA",
            1,
            CaseTag::open(CaseType::Consultation, vec![id("PL")]),
        );
        index.admit(&open, 0, NOW, &roster).unwrap();
        assert_eq!(index.visible(&id("PL"), &roster, 10).len(), 1);
        assert_eq!(index.visible(&id("AUDIT1"), &roster, 10).len(), 1);
        assert!(
            index.visible(&id("JP"), &roster, 10).is_empty(),
            "JP may not read CORE"
        );
        assert!(
            index
                .case_for(&id("JP"), &MessageId([1; 16]), &roster)
                .is_none()
        );
    }
}
