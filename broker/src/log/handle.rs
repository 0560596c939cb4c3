//! [`LogHandle`], the typed way into the writer: one method per operation, each
//! returning once its batch is durable (or refused).

use ewx_proto::audit::Event;
use ewx_proto::checkpoint::Cosignature;
use ewx_proto::frame::RejectReason;
use ewx_proto::receipt::Receipt;
use ewx_proto::{Envelope, Roster};
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};

use super::super::sequencer::{CaseAnswer, CaseQuery, Op, Outcome};
use crate::core::Rejection;

/// An operation and where its outcome goes (`None`: nobody waits).
#[derive(Debug)]
pub(crate) struct Command {
    /// The operation.
    pub op: Op,
    /// Where its outcome goes.
    pub reply: Option<oneshot::Sender<Outcome>>,
}

/// The typed handle to the writer. Cheap to clone; the writer stops when the last one
/// is dropped, after a last checkpoint of whatever is new.
#[derive(Debug, Clone)]
pub struct LogHandle {
    /// Bounded: when full, callers wait (backpressure on every request task).
    tx: mpsc::Sender<Command>,
}

fn shutting_down() -> Rejection {
    Rejection::new(RejectReason::Internal, "broker is shutting down".into())
}

impl LogHandle {
    /// Has the writer stopped (shut down, or its thread gone)?
    pub fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }

    async fn call(&self, op: Op) -> Option<Outcome> {
        let (reply, answer) = oneshot::channel();
        let cmd = Command {
            op,
            reply: Some(reply),
        };
        self.tx.send(cmd).await.ok()?;
        answer.await.ok()
    }

    /// Store an accepted envelope; its log index once durable.
    ///
    /// # Errors
    /// `Replay` for a seen id or seq, `StorageFull` after a failed commit, `Internal` at
    /// shutdown.
    pub async fn publish(&self, envelope: Envelope, bytes: Vec<u8>) -> Result<u64, Rejection> {
        match self.call(Op::Publish(Box::new(envelope), bytes)).await {
            Some(Outcome::Published(r)) => r,
            _ => Err(shutting_down()),
        }
    }

    /// Append an audit entry (waits only for room in the queue; lost only at shutdown).
    pub async fn audit(&self, event: Event) {
        let cmd = Command {
            op: Op::Audit(event),
            reply: None,
        };
        if self.tx.send(cmd).await.is_err() {
            tracing::warn!("writer gone; audit entry not written");
        }
    }

    /// Set durable cursors (and log `event`); `true` once durable.
    pub async fn set_cursors(&self, cursors: Vec<(Vec<u8>, u64)>, event: Option<Event>) -> bool {
        matches!(
            self.call(Op::Cursors(cursors, event)).await,
            Some(Outcome::Done(true))
        )
    }

    /// Log a verified receipt: `true` if new, `false` if a duplicate.
    ///
    /// # Errors
    /// `StorageFull` after a failed commit, `Internal` at shutdown.
    pub async fn receipt(&self, receipt: Receipt) -> Result<bool, Rejection> {
        match self.call(Op::Receipt(receipt)).await {
            Some(Outcome::Receipt(r)) => r,
            _ => Err(shutting_down()),
        }
    }

    /// Persist a newly accepted roster and its `RosterChanged` entry; `true` once durable.
    pub async fn roster(&self, roster: Arc<Roster>, event: Event) -> bool {
        matches!(
            self.call(Op::Roster(roster, event)).await,
            Some(Outcome::Done(true))
        )
    }

    /// Ask the case index (as committed so far).
    ///
    /// # Errors
    /// `Internal` at shutdown.
    pub async fn cases(&self, query: CaseQuery) -> Result<CaseAnswer, Rejection> {
        match self.call(Op::Cases(query)).await {
            Some(Outcome::Cases(a)) => Ok(a),
            _ => Err(shutting_down()),
        }
    }

    /// Add this replica's signature to the stored checkpoint of `size` entries (through
    /// the replicated log, so every replica stores it).
    ///
    /// # Errors
    /// As [`LogHandle::cosign`].
    pub async fn replica_sign(&self, size: u64, signature: Cosignature) -> Result<(), Rejection> {
        match self.call(Op::ReplicaSign(size, signature)).await {
            Some(Outcome::Cosigned(r)) => r,
            _ => Err(shutting_down()),
        }
    }

    /// Add a verified co-signature to the stored checkpoint of `size` entries.
    ///
    /// # Errors
    /// `Malformed` for an unknown checkpoint, `StorageFull`, `Internal`.
    pub async fn cosign(&self, size: u64, cosignature: Cosignature) -> Result<(), Rejection> {
        match self.call(Op::Cosign(size, cosignature)).await {
            Some(Outcome::Cosigned(r)) => r,
            _ => Err(shutting_down()),
        }
    }

    /// Time passed: checkpoint and retention if due. Dropped if the queue is full (the
    /// writer is busy and checkpoints by count anyway).
    pub fn tick(&self) {
        let _ = self.tx.try_send(Command {
            op: Op::Tick,
            reply: None,
        });
    }
}

impl LogHandle {
    /// A handle whose commands go to `tx` (a replicated log's proposer reads them).
    pub(crate) fn over(tx: mpsc::Sender<Command>) -> Self {
        Self { tx }
    }
}
