//! The write set of one group commit: everything the sequencer decided for a batch of
//! commands, written atomically by whichever log implementation is in use.

use ewx_proto::checkpoint::SignedCheckpoint;
use ewx_proto::frame::RejectReason;
use ewx_proto::{MessageId, NodeId, Precedence};

use super::LogRead;
use crate::core::Rejection;

fn internal(e: impl std::fmt::Display) -> Rejection {
    Rejection::new(RejectReason::Internal, e.to_string())
}

/// One message in a batch.
#[derive(Debug)]
pub struct NewMessage {
    /// Its log index.
    pub index: u64,
    /// Its precedence lane.
    pub precedence: Precedence,
    /// Its id.
    pub id: MessageId,
    /// The envelope as received.
    pub bytes: bytes::Bytes,
}

/// Everything one group commit writes.
#[derive(Debug, Default)]
pub struct Batch {
    /// New envelopes.
    pub messages: Vec<NewMessage>,
    /// New audit entries (index, bytes).
    pub audit: Vec<(u64, Vec<u8>)>,
    /// Cursor updates (key, next index).
    pub cursors: Vec<(Vec<u8>, u64)>,
    /// A checkpoint (size, signed bytes).
    pub checkpoint: Option<(u64, Vec<u8>)>,
    /// Checkpoints rewritten with new witness co-signatures (size, bytes).
    pub cosigned: Vec<(u64, Vec<u8>)>,
    /// A newly accepted roster: (version, signed bytes).
    pub roster: Option<(u64, Vec<u8>)>,
    /// Receipts logged: (message id, recipient).
    pub receipts: Vec<(MessageId, NodeId)>,
    /// Bookkeeping of a replicated log, written in the same atomic commit (key, value in
    /// the `meta` tree): which Raft entry this batch applies, so none is applied twice.
    pub meta: Vec<(&'static str, Vec<u8>)>,
    /// Applied from a replicated log that is durable already (a Raft log fsynced on a
    /// majority): written atomically but not synced on its own — after a crash the
    /// replica applies again from the last log id it recorded.
    pub replicated: bool,
    /// Envelopes to drop by retention, once the rest is durable and answered
    /// ([`crate::log::LogCommit::retain`]; not a write that needs syncing).
    pub prune: Option<Prune>,
}

/// Retention: drop the oldest envelopes while their index is below `keep_from` or they
/// were created before `min_created_ms`. Audit entries always stay (the audit log names
/// envelopes by hash), so the record survives its content.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Prune {
    /// Keep envelopes from this log index on…
    pub keep_from: u64,
    /// …and those created at or after this time.
    pub min_created_ms: u64,
}

impl Batch {
    /// Nothing to write (retention aside)?
    pub fn is_empty(&self) -> bool {
        self.messages.is_empty()
            && self.audit.is_empty()
            && self.cursors.is_empty()
            && self.checkpoint.is_none()
            && self.roster.is_none()
            && self.receipts.is_empty()
            && self.cosigned.is_empty()
            && self.meta.is_empty()
    }
}

/// Change the stored checkpoint of `size` (or the one amended earlier in this batch) and
/// write it back in this batch.
pub(crate) fn amend_checkpoint(
    batch: &mut Batch,
    size: u64,
    log: &dyn LogRead,
    change: impl FnOnce(&mut SignedCheckpoint) -> Result<(), Rejection>,
) -> Result<(), Rejection> {
    let stored = match batch.cosigned.iter().rposition(|(s, _)| *s == size) {
        Some(i) => batch.cosigned.remove(i).1,
        None => match log.checkpoint(size).map_err(internal)? {
            Some(b) => b.to_vec(),
            None => {
                return Err(Rejection::new(
                    RejectReason::Malformed,
                    format!("no checkpoint of size {size}"),
                ));
            }
        },
    };
    let mut cp = SignedCheckpoint::decode(&stored).map_err(internal)?;
    let changed = change(&mut cp);
    // written back either way: a refused change must not drop earlier ones in the batch
    batch.cosigned.push((size, cp.encode().map_err(internal)?));
    changed
}
