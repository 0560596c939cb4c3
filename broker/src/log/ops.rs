//! The operations the writer sequences and what each comes to: what a request task hands
//! the log, and what it gets back once the batch is durable (or refused).

use std::sync::Arc;

use ewx_proto::audit::Event;
use ewx_proto::case::{Case, CaseEntry, CaseType, Stage};
use ewx_proto::checkpoint::Cosignature;
use ewx_proto::frame::RejectReason;
use ewx_proto::receipt::Receipt;
use ewx_proto::{Envelope, MessageId, NodeId, Roster};

use crate::core::Rejection;

/// One change to the log.
#[derive(Debug)]
pub enum Op {
    /// Store an accepted envelope (decoded and checked, with its bytes as received).
    Publish(Box<Envelope>, Vec<u8>),
    /// Store an envelope a replicated log committed: checked again here, by every
    /// replica alike (decoding, strict signature, publish rights, recipients), against
    /// the roster the log has in force.
    Replicated(Vec<u8>),
    /// Append an audit entry.
    Audit(Event),
    /// Set durable cursors (key, next index), with an audit entry if given.
    Cursors(Vec<(Vec<u8>, u64)>, Option<Event>),
    /// Log a verified receipt unless this recipient's receipt is logged already.
    Receipt(Receipt),
    /// Persist a newly accepted roster and log its `RosterChanged` entry; from then on
    /// the case fold checks against it.
    Roster(Arc<Roster>, Event),
    /// Read the case index as committed so far.
    Cases(CaseQuery),
    /// Add a witness's (verified) co-signature to the stored checkpoint of `size`.
    Cosign(u64, Cosignature),
    /// Add a cluster replica's signature to the stored checkpoint of `size` (verified
    /// here, against the roster in force: every replica checks it alike).
    ReplicaSign(u64, Cosignature),
    /// Time passed: sign a checkpoint and apply retention if due.
    Tick,
}

impl Op {
    /// Its outcome when the log refuses every write (after a failed commit).
    pub fn refused(&self, why: &str) -> Outcome {
        match self {
            Op::Publish(..) | Op::Replicated(_) => Outcome::Published(Err(storage_failed(why))),
            Op::Receipt(_) => Outcome::Receipt(Err(storage_failed(why))),
            Op::Cursors(..) | Op::Roster(..) => Outcome::Done(false),
            Op::Cosign(..) | Op::ReplicaSign(..) => Outcome::Cosigned(Err(storage_failed(why))),
            Op::Audit(_) | Op::Tick => Outcome::Nothing,
            Op::Cases(_) => Outcome::Cases(CaseAnswer::List(Vec::new())),
        }
    }
}

/// What an operation comes to (final only once its batch is durable).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// A publish: its log index, or why it was refused.
    Published(Result<u64, Rejection>),
    /// A receipt: `true` if newly logged, `false` if a duplicate.
    Receipt(Result<bool, Rejection>),
    /// Cursors or a roster written (`false`: the commit failed).
    Done(bool),
    /// A co-signature added (also if this witness had co-signed already).
    Cosigned(Result<(), Rejection>),
    /// What a case query found.
    Cases(CaseAnswer),
    /// Nothing to answer (an audit entry, a tick).
    Nothing,
}

/// A question to the case index, on behalf of a node (who sees only cases it may read).
#[derive(Debug, Clone)]
pub enum CaseQuery {
    /// The cases `node` may see, newest first.
    List {
        /// Who asks.
        node: NodeId,
        /// At most this many.
        limit: usize,
    },
    /// One case, if `node` may see it.
    Case {
        /// Who asks.
        node: NodeId,
        /// Which.
        case: MessageId,
    },
    /// How many cases stand where, and the deadlines passed with parties missing (for
    /// the metrics; counts only, nothing of any case's contents).
    Tally {
        /// The time to measure deadlines against.
        now_ms: u64,
    },
    /// The cases still running, soonest deadline first, with who has not answered it
    /// (for the ops dashboard: the index's metadata, nothing of any contents).
    Board {
        /// The time deadlines are measured against.
        now_ms: u64,
        /// At most this many.
        limit: usize,
    },
}

/// A running case as the ops dashboard shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BoardCase {
    /// The case.
    pub case: MessageId,
    /// Its mechanism.
    pub case_type: CaseType,
    /// Who opened it.
    pub opener: NodeId,
    /// When (log time).
    pub opened_ms: u64,
    /// `open`, `fired` or `adopted`.
    pub status: &'static str,
    /// Messages in its thread.
    pub messages: u64,
    /// Parties expected to answer.
    pub parties: u64,
    /// The soonest deadline someone has not answered: (stage, due), and who.
    pub next: Option<(Stage, u64, Vec<NodeId>)>,
}

/// The answer to a [`CaseQuery`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CaseAnswer {
    /// Cases to list.
    List(Vec<CaseEntry>),
    /// The case folded so far (`None`: unknown, or not for this node).
    Case(Option<Box<Case>>),
    /// Cases by status (`open`, `fired`, `adopted`, `withdrawn`), and deadlines passed
    /// with parties that have not answered.
    Tally {
        /// (status, cases).
        by_status: Vec<(&'static str, u64)>,
        /// Deadlines passed with a party missing.
        overdue: u64,
    },
    /// The running cases: the first `limit`, and how many there are.
    Board {
        /// Upcoming deadlines first (soonest first), then overdue ones (most recent
        /// first), then cases without a deadline (newest first).
        cases: Vec<BoardCase>,
        /// Running cases in all.
        total: u64,
    },
}

/// The refusal of every write once a commit has failed (nothing of it was kept).
pub fn storage_failed(why: &str) -> Rejection {
    Rejection::new(
        RejectReason::StorageFull,
        format!("the broker's storage failed ({why}); nothing was kept, and it must be restarted"),
    )
}

impl Outcome {
    /// The outcome when its batch could not be committed: nothing of it was kept.
    pub fn uncommitted(self, why: &str) -> Self {
        match self {
            Outcome::Published(Ok(_)) => Outcome::Published(Err(storage_failed(why))),
            Outcome::Published(Err(e)) => Outcome::Published(Err(e)),
            Outcome::Receipt(_) => Outcome::Receipt(Err(storage_failed(why))),
            Outcome::Done(_) => Outcome::Done(false),
            Outcome::Cosigned(_) => Outcome::Cosigned(Err(storage_failed(why))),
            Outcome::Cases(a) => Outcome::Cases(a),
            Outcome::Nothing => Outcome::Nothing,
        }
    }
}
