//! Questions to the case index as committed so far: the cases a node may see, one case,
//! and — for the operations listener — counts by status and the running cases with their
//! next deadline (metadata from headers only).

use super::super::ops::{BoardCase, CaseAnswer, CaseQuery, Outcome};
use super::Sequencer;

impl Sequencer {
    /// Answer a case query from the index as committed so far.
    pub fn query(&self, query: CaseQuery) -> Outcome {
        match query {
            CaseQuery::Tally { now_ms } => return Outcome::Cases(self.tally(now_ms)),
            CaseQuery::Board { now_ms, limit } => {
                return Outcome::Cases(self.board(now_ms, limit));
            }
            CaseQuery::List { .. } | CaseQuery::Case { .. } => {}
        }
        let Some(roster) = self.roster.as_deref() else {
            return Outcome::Cases(CaseAnswer::List(Vec::new()));
        };
        Outcome::Cases(match query {
            CaseQuery::List { node, limit } => {
                CaseAnswer::List(self.cases.visible(&node, roster, limit))
            }
            CaseQuery::Case { node, case } => CaseAnswer::Case(
                self.cases
                    .case_for(&node, &case, roster)
                    .cloned()
                    .map(Box::new),
            ),
            CaseQuery::Tally { now_ms } => self.tally(now_ms),
            CaseQuery::Board { now_ms, limit } => self.board(now_ms, limit),
        })
    }

    /// Cases by status, and deadlines passed by `now_ms` with a party missing.
    fn tally(&self, now_ms: u64) -> CaseAnswer {
        use ewx_proto::case::Status;
        let mut by = [("open", 0), ("fired", 0), ("adopted", 0), ("withdrawn", 0)];
        let mut overdue = 0;
        for case in self.cases.book().cases() {
            let slot = match case.status {
                Status::Open => 0,
                Status::Fired { .. } => 1,
                Status::Adopted { .. } => 2,
                Status::Withdrawn { .. } => 3,
            };
            by[slot].1 += 1;
            overdue += case
                .deadlines()
                .iter()
                .filter(|d| d.due_ms <= now_ms && !case.missing(d.stage, d.due_ms).is_empty())
                .count() as u64;
        }
        CaseAnswer::Tally {
            by_status: by.to_vec(),
            overdue,
        }
    }

    /// The cases still running (not withdrawn; open, fired, or owing an answer by a
    /// deadline): upcoming deadlines first, then overdue ones, then those without one.
    fn board(&self, now_ms: u64, limit: usize) -> CaseAnswer {
        use ewx_proto::case::Status;
        let mut running: Vec<BoardCase> = self
            .cases
            .book()
            .cases()
            .filter(|c| !matches!(c.status, Status::Withdrawn { .. }))
            .filter_map(|c| {
                let next = c.deadlines().into_iter().find_map(|d| {
                    let who = c.unanswered(d.stage);
                    (!who.is_empty()).then_some((d.stage, d.due_ms, who))
                });
                let status = match c.status {
                    Status::Open => "open",
                    Status::Fired { .. } => "fired",
                    Status::Adopted { .. } if next.is_some() => "adopted",
                    Status::Adopted { .. } | Status::Withdrawn { .. } => return None,
                };
                if status != "open" && next.is_none() {
                    return None;
                }
                Some(BoardCase {
                    case: c.id,
                    case_type: c.case_type,
                    opener: c.opener.clone(),
                    opened_ms: c.opened_ms,
                    status,
                    messages: c.thread.len() as u64,
                    parties: c.parties.len() as u64,
                    next,
                })
            })
            .collect();
        running.sort_by_key(|c| match &c.next {
            Some((_, due, _)) if *due >= now_ms => (0, *due),
            Some((_, due, _)) => (1, u64::MAX - due),
            None => (2, u64::MAX - c.opened_ms),
        });
        let total = running.len() as u64;
        running.truncate(limit);
        CaseAnswer::Board {
            cases: running,
            total,
        }
    }
}
