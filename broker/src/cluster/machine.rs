//! The replicated state machine: the broker's own store, applied by its writer thread.
//! Each committed entry is one group commit on every replica, with the entry's time, and
//! the same atomic sled write records the entry's log id (a Merkle append is not
//! idempotent: nothing may be applied twice) and, for membership entries, the membership.

use std::io::Cursor;

use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{
    AnyError, BasicNode, Entry, EntryPayload, LogId, RaftSnapshotBuilder, SnapshotMeta,
    StorageError, StorageIOError, StoredMembership,
};
use tokio::sync::{mpsc, oneshot};

use super::Types;
use super::entry::{Answer, Answers, Change};
use crate::log::sequencer::Outcome;
use crate::log::{Applying, Part, ReplicaJob, Store};

const APPLIED: &str = "raft_applied";
const MEMBERSHIP: &str = "raft_membership";

type Membership = StoredMembership<u64, BasicNode>;

/// The state machine of one replica.
#[derive(Debug)]
pub struct Machine {
    writer: mpsc::Sender<ReplicaJob>,
    applied: Option<LogId<u64>>,
    membership: Membership,
    /// Signs each checkpoint this replica makes and proposes the signature.
    signer: Signer,
}

/// A replica's own checkpoint signatures: each replica signs the checkpoint it computed
/// and proposes the signature through the log, so every replica stores every signature.
#[derive(Debug, Clone)]
pub struct Signer {
    /// This replica's keys.
    pub keys: std::sync::Arc<ewx_proto::NodeKeys>,
    /// Where the signature is proposed.
    pub log: crate::log::LogHandle,
}

impl Signer {
    fn sign(&self, size: u64, bytes: &[u8]) {
        let cp = match ewx_proto::checkpoint::SignedCheckpoint::decode(bytes) {
            Ok(cp) => cp,
            Err(e) => return tracing::error!("own checkpoint unreadable: {e}"),
        };
        let (signature, log) = (cp.replica_sign(&self.keys), self.log.clone());
        tokio::spawn(async move {
            if let Err(e) = log.replica_sign(size, signature).await {
                tracing::warn!(size, "replica signature not recorded: {e}");
            }
        });
    }
}

fn sm_error(e: impl std::fmt::Display) -> StorageError<u64> {
    StorageIOError::write_state_machine(AnyError::error(e.to_string())).into()
}

fn cbor<T: serde::Serialize>(v: &T) -> Result<Vec<u8>, StorageError<u64>> {
    let mut out = Vec::new();
    ciborium::into_writer(v, &mut out).map_err(sm_error)?;
    Ok(out)
}

fn read<T: serde::de::DeserializeOwned>(
    store: &Store,
    key: &str,
) -> crate::error::Result<Option<T>> {
    match store.meta_value(key)? {
        Some(v) => ciborium::from_reader(v.as_ref())
            .map(Some)
            .map_err(|e| crate::error::Error::Store(format!("{key}: {e}"))),
        None => Ok(None),
    }
}

impl Machine {
    /// Over `store` (to read where it stands) and the replica writer applying to it.
    ///
    /// # Errors
    /// `Store` if the recorded Raft state cannot be read.
    pub fn new(
        store: &Store,
        writer: mpsc::Sender<ReplicaJob>,
        signer: Signer,
    ) -> crate::error::Result<Self> {
        Ok(Self {
            writer,
            signer,
            applied: read(store, APPLIED)?,
            membership: read(store, MEMBERSHIP)?.unwrap_or_default(),
        })
    }

    /// Apply committed entries in one job (as few commits as they allow); each
    /// checkpoint made is signed and its signature proposed.
    async fn run(&self, parts: Vec<Part>) -> Result<Vec<Vec<Outcome>>, StorageError<u64>> {
        let (reply, answer) = oneshot::channel();
        let job = ReplicaJob::Apply(Applying { parts, reply });
        self.writer
            .send(job)
            .await
            .map_err(|_| sm_error("the replica writer has stopped"))?;
        let (outcomes, made) = answer
            .await
            .map_err(|_| sm_error("the replica writer has stopped"))?;
        for (size, bytes) in made {
            self.signer.sign(size, &bytes);
        }
        Ok(outcomes)
    }
}

impl RaftStateMachine<Types> for Machine {
    type SnapshotBuilder = NoSnapshots;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogId<u64>>, Membership), StorageError<u64>> {
        Ok((self.applied, self.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Answers>, StorageError<u64>>
    where
        I: IntoIterator<Item = Entry<Types>> + Send,
        I::IntoIter: Send,
    {
        let mut parts = Vec::new();
        let mut last = None;
        for entry in entries {
            let log_id = entry.log_id;
            let mut meta = vec![(APPLIED, cbor(&log_id)?)];
            let (now_ms, ops) = match entry.payload {
                EntryPayload::Blank => (0, Vec::new()),
                EntryPayload::Membership(m) => {
                    let stored = StoredMembership::new(Some(log_id), m);
                    meta.push((MEMBERSHIP, cbor(&stored)?));
                    self.membership = stored;
                    (0, Vec::new())
                }
                EntryPayload::Normal(p) => (
                    p.now_ms,
                    p.changes.into_iter().map(Change::into_op).collect(),
                ),
            };
            parts.push(Part { now_ms, ops, meta });
            last = Some(log_id);
        }
        if parts.is_empty() {
            return Ok(Vec::new());
        }
        let outcomes = self.run(parts).await?;
        self.applied = last;
        Ok(outcomes
            .into_iter()
            .map(|o| Answers(o.into_iter().map(Answer::of).collect()))
            .collect())
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        NoSnapshots
    }

    async fn begin_receiving_snapshot(
        &mut self,
    ) -> Result<Box<Cursor<Vec<u8>>>, StorageError<u64>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        _meta: &SnapshotMeta<u64, BasicNode>,
        _snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError<u64>> {
        Err(sm_error(
            "snapshots are not supported yet: a replica catches up from the Raft log",
        ))
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<Types>>, StorageError<u64>> {
        Ok(None)
    }
}

/// The log is never compacted yet, so no snapshot is ever needed.
#[derive(Debug)]
pub struct NoSnapshots;

impl RaftSnapshotBuilder<Types> for NoSnapshots {
    async fn build_snapshot(&mut self) -> Result<Snapshot<Types>, StorageError<u64>> {
        Err(sm_error("snapshots are not supported yet"))
    }
}
