//! What a Raft entry carries and what applying it answers. An entry is one group commit
//! as the leader proposed it: the changes in arrival order and the time they are logged
//! at (replicas never read their own clock while applying, so they all decide alike).

use ewx_proto::audit::Event;
use ewx_proto::checkpoint::Cosignature;
use ewx_proto::frame::RejectReason;
use ewx_proto::receipt::Receipt;
use serde::{Deserialize, Serialize};

use crate::core::Rejection;
use crate::log::sequencer::{Op, Outcome};

/// One proposed group commit.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Proposal {
    /// Log time of every entry it appends (the leader's clock when it proposed).
    pub now_ms: u64,
    /// The changes, in order.
    pub changes: Vec<Change>,
}

/// A change to the log, as replicated: envelopes and rosters travel as the signed bytes
/// and are checked again by every replica.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Change {
    /// An envelope, exactly as signed.
    Publish(#[serde(with = "serde_bytes")] Vec<u8>),
    /// An audit entry.
    Audit(Event),
    /// Durable cursors, with an audit entry if given.
    Cursors(Vec<(serde_bytes::ByteBuf, u64)>, Option<Event>),
    /// A verified receipt.
    Receipt(Receipt),
    /// A roster update (signed bytes) and its `RosterChanged` entry.
    Roster(#[serde(with = "serde_bytes")] Vec<u8>, Event),
    /// A witness co-signature for the checkpoint of this size.
    Cosign(u64, Cosignature),
    /// A replica's own signature of the checkpoint of this size.
    ReplicaSign(u64, Cosignature),
    /// Time passed: checkpoint and retention if due.
    Tick,
}

/// What applying one entry answers, one per change.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Answers(pub Vec<Answer>);

/// The outcome of one change.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Answer {
    /// A publish: its log index, or why not.
    Published(Result<u64, Refusal>),
    /// A receipt: newly logged or a duplicate.
    Receipt(Result<bool, Refusal>),
    /// Cursors or a roster written.
    Done(bool),
    /// A co-signature added.
    Cosigned(Result<(), Refusal>),
    /// Nothing to answer.
    Nothing,
}

/// A [`Rejection`] on the wire.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Refusal {
    /// Which check failed.
    pub reason: RejectReason,
    /// What exactly.
    pub detail: String,
}

impl From<Rejection> for Refusal {
    fn from(r: Rejection) -> Self {
        Self {
            reason: r.reason,
            detail: r.detail,
        }
    }
}

impl From<Refusal> for Rejection {
    fn from(r: Refusal) -> Self {
        Rejection::new(r.reason, r.detail)
    }
}

impl Change {
    /// A request's operation as a replicated change; the operation back if it is not
    /// one (a read, answered locally) or cannot be encoded.
    pub fn of(op: Op) -> Result<Self, Box<Op>> {
        Ok(match op {
            Op::Publish(_, bytes) | Op::Replicated(bytes) => Change::Publish(bytes),
            Op::Audit(e) => Change::Audit(e),
            Op::Cursors(c, e) => Change::Cursors(
                c.into_iter()
                    .map(|(k, v)| (serde_bytes::ByteBuf::from(k), v))
                    .collect(),
                e,
            ),
            Op::Receipt(r) => Change::Receipt(r),
            Op::Roster(roster, e) => match roster.signed().encode() {
                Ok(b) => Change::Roster(b, e),
                Err(_) => return Err(Box::new(Op::Roster(roster, e))),
            },
            Op::Cosign(size, c) => Change::Cosign(size, c),
            Op::ReplicaSign(size, c) => Change::ReplicaSign(size, c),
            Op::Tick => Change::Tick,
            Op::Cases(q) => return Err(Box::new(Op::Cases(q))),
        })
    }

    /// The operation a replica applies for it.
    pub fn into_op(self) -> Op {
        match self {
            Change::Publish(bytes) => Op::Replicated(bytes),
            Change::Audit(e) => Op::Audit(e),
            Change::Cursors(c, e) => {
                Op::Cursors(c.into_iter().map(|(k, v)| (k.into_vec(), v)).collect(), e)
            }
            Change::Receipt(r) => Op::Receipt(r),
            Change::Roster(bytes, e) => {
                match ewx_proto::SignedRoster::decode(&bytes).and_then(|s| s.verify()) {
                    Ok(roster) => Op::Roster(std::sync::Arc::new(roster), e),
                    Err(err) => {
                        // every replica refuses it alike: log why, keep the entry
                        tracing::error!("replicated roster does not verify: {err}");
                        Op::Audit(e)
                    }
                }
            }
            Change::Cosign(size, c) => Op::Cosign(size, c),
            Change::ReplicaSign(size, c) => Op::ReplicaSign(size, c),
            Change::Tick => Op::Tick,
        }
    }
}

impl Answer {
    /// From a writer's outcome.
    pub fn of(o: Outcome) -> Self {
        match o {
            Outcome::Published(r) => Answer::Published(r.map_err(Refusal::from)),
            Outcome::Receipt(r) => Answer::Receipt(r.map_err(Refusal::from)),
            Outcome::Done(b) => Answer::Done(b),
            Outcome::Cosigned(r) => Answer::Cosigned(r.map_err(Refusal::from)),
            Outcome::Cases(_) | Outcome::Nothing => Answer::Nothing,
        }
    }

    /// Back to the outcome a request task waits for.
    pub fn into_outcome(self) -> Outcome {
        match self {
            Answer::Published(r) => Outcome::Published(r.map_err(Rejection::from)),
            Answer::Receipt(r) => Outcome::Receipt(r.map_err(Rejection::from)),
            Answer::Done(b) => Outcome::Done(b),
            Answer::Cosigned(r) => Outcome::Cosigned(r.map_err(Rejection::from)),
            Answer::Nothing => Outcome::Nothing,
        }
    }
}
