//! Case requests: which cases a node may read, and a case's thread (its envelopes with
//! their log times) for the node to verify, open and fold itself. The broker's index
//! only says which messages belong to a case; every party recomputes the state.

use ewx_proto::case::{CaseThread, RefusalKind, THREAD_PAGE, ThreadMessage};
use ewx_proto::frame::{RejectReason, Response};
use ewx_proto::{Envelope, MessageId, may_read};

use super::session::{Outcome, Session};
use crate::core::Rejection;
use crate::log::sequencer::{CaseAnswer, CaseQuery};

/// Most cases one `Cases` answer lists.
const MAX_LIST: usize = 1000;

impl Session {
    pub(super) async fn cases(&self, limit: u32) -> Outcome {
        let query = CaseQuery::List {
            node: self.node.clone(),
            limit: (limit as usize).min(MAX_LIST),
        };
        match self.shared.writer.cases(query).await {
            Ok(CaseAnswer::List(list)) => Ok(Response::Cases(list)),
            Ok(CaseAnswer::Case(_) | CaseAnswer::Tally { .. } | CaseAnswer::Board { .. }) => {
                Ok(Response::Cases(Vec::new()))
            }
            Err(r) => Err((r, None)),
        }
    }

    pub(super) async fn case_thread(&self, case: MessageId, after: Option<u64>) -> Outcome {
        let query = CaseQuery::Case {
            node: self.node.clone(),
            case,
        };
        let found = match self.shared.writer.cases(query).await {
            Ok(CaseAnswer::Case(found)) => found,
            Ok(CaseAnswer::List(_) | CaseAnswer::Tally { .. } | CaseAnswer::Board { .. }) => None,
            Err(r) => return Err((r, None)),
        };
        let Some(found) = found else {
            return Err((
                Rejection::new(
                    RejectReason::Case(RefusalKind::UnknownCase),
                    format!("no case {case} that {} may read", self.node),
                ),
                None,
            ));
        };
        let roster = self.shared.roster.get();
        let me = roster
            .active(&self.node)
            .map_err(|e| (crate::core::reject(e), None))?;
        let budget = self.shared.config.limits.max_frame_bytes / 2;
        let (mut messages, mut bytes, mut more) = (Vec::new(), 0, false);
        for (log_index, log_ms, ..) in found
            .thread
            .iter()
            .filter(|t| after.is_none_or(|a| t.0 > a))
        {
            if messages.len() >= THREAD_PAGE || bytes > budget {
                more = true;
                break;
            }
            let stored = self
                .shared
                .log
                .message(*log_index)
                .map_err(|e| (Rejection::new(RejectReason::Internal, e.to_string()), None))?;
            // an envelope this node may not read is withheld, like a pruned one
            let envelope = stored
                .filter(|b| {
                    Envelope::decode(b, usize::MAX)
                        .is_ok_and(|e| may_read(&me.id, &me.grants, &e.header().labels))
                })
                .map(|b| b.to_vec());
            bytes += envelope.as_ref().map_or(0, Vec::len);
            messages.push(ThreadMessage {
                log_index: *log_index,
                log_ms: *log_ms,
                envelope,
            });
        }
        Ok(Response::CaseThread(CaseThread {
            case,
            messages,
            more,
            recorded: found.recorded.clone().into_iter().collect(),
        }))
    }
}
