//! The log: what the broker has committed, and the one way to change it. The sequencing
//! decisions are a pure step ([`sequencer`]: operations and time in, [`Batch`], outcomes
//! and live messages out); the single [`writer`] thread runs that step over whatever is
//! queued (group commit), commits the batch through [`LogCommit`] and only then answers.
//! Everything else reads through [`LogRead`]. [`Store`] (sled, flush + fdatasync) is the
//! implementation of both today; a replicated log can take its place behind the traits.

mod batch;
mod ops;
mod seen;
pub(crate) mod sequencer;
mod store;
mod writer;

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use ewx_proto::audit::Chain;
use ewx_proto::{Digest32, Header, MessageId, NodeId, Precedence};

pub use batch::{Batch, NewMessage, Prune};
pub use store::{Image, Place, SCHEMA, Segments, SledSync, Store, cursor_key, guarded};
pub(crate) use writer::Command;
pub use writer::{Applying, Head, LogHandle, Made, Part, ReplicaJob, spawn, spawn_replica};

use crate::core::replay::ReplayWindow;
use crate::error::Result;

/// Envelopes up to this size ride along in the live fan-out; larger ones are read from
/// the log by each lane, so live buffers never pin much memory.
pub const INLINE_BYTES: usize = 16 << 10;

/// What the writer continues from: the state the log's recovery rebuilt.
#[derive(Debug)]
pub struct Recovered {
    /// The audit chain replayed and checked.
    pub chain: Chain,
    /// Next message-log index.
    pub next_index: u64,
    /// Anti-replay state per sender, rebuilt from the audit log.
    pub replay: HashMap<NodeId, ReplayWindow>,
    /// Size of the last checkpoint.
    pub checkpoint_size: u64,
    /// Hash of the last checkpoint body (zero if none).
    pub checkpoint_hash: Digest32,
    /// Log time of the last checkpoint (0 if none): the checkpoint interval runs from it,
    /// so replicas decide alike when the next one is due.
    pub checkpoint_ms: u64,
    /// The newest roster the broker accepted, if any.
    pub roster: Option<Vec<u8>>,
    /// Hash of the roster named by the last `RosterChanged` entry.
    pub logged_roster: Option<Digest32>,
    /// That roster, verified (what the case fold checks against).
    pub in_force: Option<Arc<ewx_proto::Roster>>,
    /// The case fold, replayed from the audit log.
    pub cases: ewx_proto::case::CaseBook,
    /// Every logged message id, approximately (for the duplicate check).
    pub seen: seen::SeenIds,
}

/// A committed message as the live fan-out carries it.
#[derive(Debug)]
pub struct Stored {
    /// Log index.
    pub index: u64,
    /// Decoded header (for routing).
    pub header: Header,
    /// Envelope bytes as received, if small (else read them from the log).
    pub bytes: Option<Bytes>,
}

/// Reading what is durable: delivery lanes, audit requests and the sequencer's lookups.
pub trait LogRead: Send + Sync + std::fmt::Debug {
    /// The envelope at a log index (`None`: never stored, or pruned by retention).
    ///
    /// # Errors
    /// If the log cannot be read.
    fn message(&self, index: u64) -> Result<Option<Bytes>>;

    /// Envelopes of one precedence lane with index in `[from, until)`, at most `limit` of
    /// them and about `max_bytes` in all.
    ///
    /// # Errors
    /// If the log cannot be read.
    fn lane(
        &self,
        precedence: Precedence,
        from: u64,
        until: u64,
        limit: usize,
        max_bytes: usize,
    ) -> Result<Vec<(u64, Bytes)>>;

    /// A durable cursor (next index to deliver), by [`cursor_key`].
    ///
    /// # Errors
    /// If the log cannot be read.
    fn cursor(&self, key: &[u8]) -> Result<Option<u64>>;

    /// The log index of a message id.
    ///
    /// # Errors
    /// If the log cannot be read.
    fn index_of(&self, id: &MessageId) -> Result<Option<u64>>;

    /// Has `by`'s receipt for `id` been logged?
    ///
    /// # Errors
    /// If the log cannot be read.
    fn has_receipt(&self, id: &MessageId, by: &NodeId) -> Result<bool>;

    /// Audit entries `[from, to)`.
    ///
    /// # Errors
    /// If the log cannot be read.
    fn audit_range(&self, from: u64, to: u64) -> Result<Vec<Bytes>>;

    /// The signed checkpoint of `size` entries.
    ///
    /// # Errors
    /// If the log cannot be read.
    fn checkpoint(&self, size: u64) -> Result<Option<Bytes>>;

    /// Signed checkpoints of `from_size` entries and more, oldest first, at most `limit`.
    ///
    /// # Errors
    /// If the log cannot be read.
    fn checkpoints_from(&self, from_size: u64, limit: usize) -> Result<Vec<Bytes>>;

    /// The newest signed checkpoint, if any.
    ///
    /// # Errors
    /// If the log cannot be read.
    fn newest_checkpoint(&self) -> Result<Option<Bytes>> {
        Ok(None)
    }

    /// A roster that was in force, by version.
    ///
    /// # Errors
    /// If the log cannot be read.
    fn roster(&self, version: u64) -> Result<Option<Bytes>>;
}

/// Committing: where a replicated log would take the local one's place.
pub trait LogCommit: Send {
    /// Write a batch atomically and make it durable (`batch.prune` aside).
    ///
    /// # Errors
    /// If it could not be made durable: then nothing of it may be acknowledged.
    fn commit(&mut self, batch: &Batch) -> Result<()>;

    /// Apply retention: drop old envelopes (never audit entries). Housekeeping after the
    /// batch is answered: a failure is logged, loses nothing and stops nothing.
    fn retain(&mut self, prune: Prune);

    /// Time spent so far writing (the transaction) and making it durable (the sync), if
    /// the log keeps count.
    fn timings(&self) -> Option<(std::time::Duration, std::time::Duration)> {
        None
    }
}

/// Where committed messages go once durable: the routing index of the delivery lanes.
pub trait Fanout: Send + Sync {
    /// These messages were just committed, in log order.
    fn committed(&self, messages: Vec<Arc<Stored>>);

    /// Do moving delivery lanes owe so much that the next ROUTINE commit should wait
    /// (backpressure: acks slow to the pace of delivery)?
    fn behind(&self) -> bool {
        false
    }

    /// These case reminders are due (their deadlines are durable in the index).
    fn remind(&self, reminders: Vec<crate::core::cases::Reminding>) {
        let _ = reminders;
    }

    /// The log grew underneath the fan-out (a replica installed a snapshot): every open
    /// lane must catch up from the log before it takes live messages again.
    fn grown(&self) {}

    /// These receipts were just logged: forward each to the sender of its message.
    fn receipted(&self, receipts: Vec<(NodeId, ewx_proto::receipt::Receipt)>) {
        let _ = receipts;
    }
}
