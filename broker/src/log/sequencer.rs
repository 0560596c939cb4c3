//! The sequencing decisions as one pure step: the operations of a group commit and the
//! time go in; the write set ([`Batch`]), one [`Outcome`] per operation and the messages
//! to fan out come back. It assigns log indexes, enforces unique ids and the anti-replay
//! window, appends the hash-chained audit entries, signs checkpoints when due and decides
//! retention. Nothing is written here: the writer commits the batch (to sled, or to a
//! replicated log) and only then hands out the outcomes.

use std::collections::HashSet;
use std::sync::Arc;

use bytes::Bytes;
use ewx_proto::audit::{Chain, Event};
use ewx_proto::frame::RejectReason;
use ewx_proto::receipt::Receipt;
use ewx_proto::{Envelope, MessageId, NodeKeys, Roster};

use super::batch::{Batch, NewMessage};

mod queries;
mod signing;

pub use super::ops::{BoardCase, CaseAnswer, CaseQuery, Op, Outcome};
use super::{INLINE_BYTES, LogRead, Recovered, Stored};
use crate::config::{CheckpointPolicy, Retention};
use crate::core::Rejection;
use crate::core::cases::{CaseIndex, Reminding};

/// The sequencer's policies, from the configuration.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Checkpoint cadence.
    pub checkpoint: CheckpointPolicy,
    /// Anti-replay window width.
    pub replay_width: u64,
    /// Envelope retention.
    pub retention: Retention,
    /// Commands the writer holds waiting (as many as its channel).
    pub queue: usize,
    /// Remind the parties of a case this many ms before each deadline.
    pub reminders_ms: Vec<u64>,
}

/// One group commit, decided.
#[derive(Debug, Default)]
pub struct Step {
    /// What to write, atomically.
    pub batch: Batch,
    /// One per operation, in order.
    pub outcomes: Vec<Outcome>,
    /// Newly stored messages, for the live fan-out once durable.
    pub live: Vec<Arc<Stored>>,
    /// Case reminders to push once durable.
    pub reminders: Vec<Reminding>,
    /// Receipts newly logged, for the senders of their messages (pushed once durable).
    pub receipts: Vec<(ewx_proto::NodeId, Receipt)>,
    /// Message ids placed in this step.
    ids: HashSet<MessageId>,
}

impl Step {
    /// Must this step be committed before another part joins it? A batch holds at most
    /// one checkpoint, one roster and one retention decision, and later parts must find
    /// a checkpoint in the store to amend it.
    pub fn full(&self) -> bool {
        self.batch.checkpoint.is_some() || self.batch.roster.is_some() || self.batch.prune.is_some()
    }
}

/// Where a publish went: a new index, or the one an identical envelope has already.
#[derive(Debug)]
enum Placed {
    New(Arc<Stored>),
    Again(u64),
}

impl Placed {
    /// Its log index; a new message also goes to `live` (the fan-out).
    fn index(self, live: &mut Vec<Arc<Stored>>) -> u64 {
        match self {
            Placed::New(stored) => {
                let index = stored.index;
                live.push(stored);
                index
            }
            Placed::Again(index) => index,
        }
    }
}

/// The sequencer: the log's state between commits.
#[derive(Debug)]
pub struct Sequencer {
    state: Recovered,
    settings: Settings,
    keys: Arc<NodeKeys>,
    last_checkpoint_ms: u64,
    /// The roster in force, as the log records it (the case fold's rules use it).
    roster: Option<Arc<Roster>>,
    cases: CaseIndex,
}

fn internal(e: impl std::fmt::Display) -> Rejection {
    Rejection::new(RejectReason::Internal, e.to_string())
}

impl Sequencer {
    /// Continue from `state`, signing checkpoints with `keys`; the checkpoint interval
    /// runs from the last checkpoint's log time; `now_ms` starts the case reminders.
    pub fn new(mut state: Recovered, settings: Settings, keys: Arc<NodeKeys>, now_ms: u64) -> Self {
        let book = std::mem::take(&mut state.cases);
        let cases = CaseIndex::new(book, settings.reminders_ms.clone(), now_ms);
        Self {
            roster: state.in_force.clone(),
            last_checkpoint_ms: state.checkpoint_ms,
            state,
            settings,
            keys,
            cases,
        }
    }

    /// Start over from `state` (the store was replaced underneath), same policies.
    pub fn restart(&mut self, state: Recovered, now_ms: u64) {
        *self = Self::new(state, self.settings.clone(), self.keys.clone(), now_ms);
    }

    /// Next message-log index (everything below is decided).
    pub fn next_index(&self) -> u64 {
        self.state.next_index
    }

    /// The audit chain so far.
    pub fn chain(&self) -> &Chain {
        &self.state.chain
    }

    /// The policies.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// Decide one group commit. `closing`: the last one before shutdown (checkpoint
    /// whatever is new). `log` answers the lookups (ids, receipts, checkpoints) against
    /// what is durable.
    #[cfg(test)]
    pub fn step(&mut self, ops: Vec<Op>, now_ms: u64, closing: bool, log: &dyn LogRead) -> Step {
        let mut step = Step::default();
        self.step_into(&mut step, ops, now_ms, closing, log);
        step
    }

    /// Decide more operations, at their own time, into a step not yet committed (a
    /// replica applies several Raft entries in one commit): decisions see the step's
    /// batch as if it were durable, so they come out as they would one commit each.
    pub fn step_into(
        &mut self,
        step: &mut Step,
        ops: Vec<Op>,
        now_ms: u64,
        closing: bool,
        log: &dyn LogRead,
    ) {
        let mut tick = closing;
        // deadlines first: every entry of this step is logged at `now_ms`, after them
        let (passed, at_deadline) = self.cases.deadlines(now_ms, self.roster.as_deref());
        for event in passed {
            self.append(&mut step.batch, now_ms, event);
        }
        step.reminders = at_deadline;
        let mut rechecked = self.recheck(&ops).into_iter();
        for op in ops {
            let outcome = match op {
                Op::Publish(envelope, bytes) => {
                    let r = self.publish(
                        &mut step.batch,
                        &mut step.ids,
                        now_ms,
                        *envelope,
                        bytes,
                        log,
                    );
                    Outcome::Published(r.map(|p| p.index(&mut step.live)))
                }
                Op::Replicated(bytes) => {
                    let checked = rechecked
                        .next()
                        .unwrap_or_else(|| Err(internal("recheck lost track")));
                    let r = checked.and_then(|envelope| {
                        self.publish(&mut step.batch, &mut step.ids, now_ms, envelope, bytes, log)
                    });
                    Outcome::Published(r.map(|p| p.index(&mut step.live)))
                }
                Op::Audit(event) => {
                    self.append(&mut step.batch, now_ms, event);
                    Outcome::Nothing
                }
                Op::Cursors(cursors, event) => {
                    step.batch.cursors.extend(cursors);
                    if let Some(e) = event {
                        self.append(&mut step.batch, now_ms, e);
                    }
                    Outcome::Done(true)
                }
                Op::Receipt(receipt) => Outcome::Receipt(self.receipt(
                    &mut step.batch,
                    &mut step.receipts,
                    now_ms,
                    receipt,
                    log,
                )),
                Op::Roster(roster, event) => {
                    Outcome::Done(self.roster(&mut step.batch, now_ms, roster, event))
                }
                Op::Cases(query) => self.query(query),
                Op::Cosign(size, c) => {
                    Outcome::Cosigned(self.cosign(&mut step.batch, size, c, log))
                }
                Op::ReplicaSign(size, c) => {
                    Outcome::Cosigned(self.replica_sign(&mut step.batch, size, c, log))
                }
                Op::Tick => {
                    tick = true;
                    Outcome::Nothing
                }
            };
            step.outcomes.push(outcome);
        }
        let ahead = self.cases.reminders(now_ms, self.roster.as_deref());
        step.reminders.extend(ahead);
        if self.checkpoint_due(tick, closing, now_ms) {
            self.checkpoint(&mut step.batch, now_ms);
        }
        if tick {
            step.batch.prune = self.retention(now_ms);
        }
    }

    fn append(&mut self, batch: &mut Batch, now_ms: u64, event: Event) -> bool {
        match self.state.chain.append(now_ms, event) {
            Ok((entry, bytes)) => {
                batch.audit.push((entry.index, bytes));
                true
            }
            Err(e) => {
                tracing::error!("cannot encode audit entry: {e}");
                false
            }
        }
    }

    fn publish(
        &mut self,
        batch: &mut Batch,
        ids: &mut HashSet<MessageId>,
        now_ms: u64,
        envelope: Envelope,
        bytes: Vec<u8>,
        log: &dyn LogRead,
    ) -> Result<Placed, Rejection> {
        let h = envelope.header();
        if ids.contains(&h.id) || self.state.seen.maybe(&h.id) {
            if let Some(index) = self.logged(batch, &h.id, &bytes, log)? {
                return Ok(Placed::Again(index));
            }
        }
        let window = self.state.replay.entry(h.sender.clone()).or_default();
        window.accept(&h.sender, h.seq, self.settings.replay_width)?;
        let index = self.state.next_index;
        if h.case.is_some() {
            let roster = self
                .roster
                .clone()
                .ok_or_else(|| internal("no roster in force"))?;
            self.cases.admit(h, index, now_ms, &roster)?;
        }
        let event = Event::published(&envelope, index);
        if let Event::Published { envelope_hash, .. } = &event {
            self.cases.note(h, *envelope_hash);
        }
        if !self.append(batch, now_ms, event) {
            return Err(internal("cannot write the audit entry"));
        }
        self.state.next_index += 1;
        ids.insert(h.id);
        self.state.seen.insert(&h.id);
        let bytes = Bytes::from(bytes);
        let inline = (bytes.len() <= INLINE_BYTES).then(|| bytes.clone());
        batch.messages.push(NewMessage {
            index,
            precedence: h.precedence,
            id: h.id,
            bytes,
        });
        // the envelope's header moves on to the fan-out: no copy
        Ok(Placed::New(Arc::new(Stored {
            index,
            header: envelope.into_header(),
            bytes: inline,
        })))
    }

    /// The replicated envelopes' checks (one verdict each, in order), as the leader
    /// made them before proposing (all but the clock skew, which needs a local clock):
    /// each decodes, its signature verifies under the roster in force (all of them in
    /// one batch when they all do), its sender may publish it, and every listed
    /// recipient may read it.
    fn recheck(&self, ops: &[Op]) -> Vec<Result<Envelope, Rejection>> {
        let replicated = ops.iter().filter_map(|op| match op {
            Op::Replicated(bytes) => Some(bytes),
            _ => None,
        });
        // a cluster just formed applies its roster first; a publish racing ahead of it
        // is refused as Unavailable, which clients retry
        let Some(roster) = self.roster.as_deref() else {
            let not_yet = || {
                Err(Rejection::new(
                    RejectReason::Unavailable,
                    "the cluster has not recorded its roster yet".into(),
                ))
            };
            return replicated.map(|_| not_yet()).collect();
        };
        let decoded: Vec<Result<Envelope, Rejection>> = replicated
            .map(|b| Envelope::decode(b, b.len()).map_err(crate::core::reject))
            .collect();
        let items: Vec<(&Envelope, &Roster)> = decoded
            .iter()
            .filter_map(|d| d.as_ref().ok().map(|e| (e, roster)))
            .collect();
        let mut verdicts = crate::net::verifier::verify_all(&items).into_iter();
        decoded
            .into_iter()
            .map(|d| {
                let envelope = d?;
                match verdicts.next() {
                    Some(Ok(())) => {}
                    Some(Err(e)) => return Err(crate::core::reject(e)),
                    None => return Err(internal("the verifier lost track")),
                }
                envelope.header().check_recipients(roster).map_err(|e| {
                    Rejection::new(RejectReason::RecipientNotPermitted, e.to_string())
                })?;
                Ok(envelope)
            })
            .collect()
    }

    /// Where a message id already lies, if it does: its index when `bytes` are the very
    /// envelope stored there (a publish retried after a lost ack gets the original
    /// index, and nothing is stored twice); `Replay` when another envelope claims the id.
    fn logged(
        &self,
        batch: &Batch,
        id: &MessageId,
        bytes: &[u8],
        log: &dyn LogRead,
    ) -> Result<Option<u64>, Rejection> {
        let found = match batch.messages.iter().find(|m| &m.id == id) {
            Some(m) => Some((m.index, m.bytes.clone())),
            None => match log.index_of(id).map_err(internal)? {
                Some(index) => Some((
                    index,
                    log.message(index).map_err(internal)?.unwrap_or_default(),
                )),
                None => None,
            },
        };
        match found {
            None => Ok(None),
            Some((index, stored)) if stored.as_ref() == bytes => Ok(Some(index)),
            Some(_) => Err(Rejection::new(
                RejectReason::Replay,
                format!("message id {id} is already in the log"),
            )),
        }
    }

    fn roster(
        &mut self,
        batch: &mut Batch,
        now_ms: u64,
        roster: Arc<Roster>,
        event: Event,
    ) -> bool {
        if self
            .roster
            .as_ref()
            .is_some_and(|r| r.hash() == roster.hash())
        {
            return true; // in force already (replicas starting together each propose it)
        }
        let bytes = match roster.signed().encode() {
            Ok(b) => b,
            Err(e) => {
                tracing::error!("cannot encode the roster: {e}");
                return false;
            }
        };
        batch.roster = Some((roster.version(), bytes));
        self.roster = Some(roster);
        self.append(batch, now_ms, event)
    }

    fn receipt(
        &mut self,
        batch: &mut Batch,
        forward: &mut Vec<(ewx_proto::NodeId, Receipt)>,
        now_ms: u64,
        receipt: Receipt,
        log: &dyn LogRead,
    ) -> Result<bool, Rejection> {
        let key = (receipt.id, receipt.by.clone());
        let dup =
            batch.receipts.contains(&key) || log.has_receipt(&key.0, &key.1).map_err(internal)?;
        if !dup {
            // its message's sender gets it (the message is durable: receipts name stored ones)
            let stored = match batch.messages.iter().find(|m| m.id == receipt.id) {
                Some(m) => Some(m.bytes.clone()),
                None => log
                    .index_of(&receipt.id)
                    .and_then(|i| i.map(|i| log.message(i)).transpose())
                    .map_err(internal)?
                    .flatten(),
            };
            if let Ok(sender) = crate::core::admission::receipt_target(&receipt, stored.as_deref())
            {
                forward.push((sender, receipt.clone()));
            }
            batch.receipts.push(key);
            self.append(batch, now_ms, Event::Receipt(receipt));
        }
        Ok(!dup)
    }
}

#[cfg(test)]
#[path = "sequencer_tests.rs"]
mod tests;
