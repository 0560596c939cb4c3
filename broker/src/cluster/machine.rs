//! The replicated state machine: the broker's own store, applied by its writer thread.
//! Each committed entry is one group commit on every replica, with the entry's time, and
//! the same atomic sled write records the entry's log id (a Merkle append is not
//! idempotent: nothing may be applied twice) and, for membership entries, the membership.

use std::io::Cursor;

use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{
    AnyError, BasicNode, Entry, EntryPayload, LogId, SnapshotMeta, StorageError, StorageIOError,
    StoredMembership,
};
use tokio::sync::{mpsc, oneshot};

use super::entry::{Answer, Answers, Change};
use super::{Types, snapshot};
use crate::log::sequencer::Outcome;
use crate::log::{Applying, Image, Part, ReplicaJob, Store};

const APPLIED: &str = "raft_applied";
const MEMBERSHIP: &str = "raft_membership";

type Membership = StoredMembership<u64, BasicNode>;

/// The state machine of one replica.
#[derive(Debug)]
pub struct Machine {
    writer: mpsc::Sender<ReplicaJob>,
    /// The store the writer applies to (read for snapshots).
    store: Store,
    /// The roster in force: snapshots are verified against it.
    roster: ewx_net::RosterCell,
    applied: Option<LogId<u64>>,
    membership: Membership,
    /// The last snapshot built or installed.
    snapshot: Option<snapshot::Meta>,
    /// Counts the snapshots installed.
    installed: std::sync::Arc<std::sync::atomic::AtomicU64>,
    /// Has openraft read its initial state (asking for the snapshot's description only)?
    started: bool,
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
        (store, roster): (&Store, ewx_net::RosterCell),
        writer: mpsc::Sender<ReplicaJob>,
        (signer, installed): (Signer, std::sync::Arc<std::sync::atomic::AtomicU64>),
    ) -> crate::error::Result<Self> {
        Ok(Self {
            writer,
            signer,
            installed,
            started: false,
            applied: read(store, APPLIED)?,
            membership: read(store, MEMBERSHIP)?.unwrap_or_default(),
            snapshot: read(store, snapshot::SNAPSHOT)?,
            store: store.clone(),
            roster,
        })
    }

    /// Replace the store with a verified snapshot's image (on the writer's thread), and
    /// take the log id and membership it reflects.
    async fn install(&mut self, image: Image) -> Result<(), StorageError<u64>> {
        let (reply, done) = oneshot::channel();
        let store = self.store.clone();
        let change = Box::new(move |width| {
            store.install(&image)?;
            store.recover(width)
        });
        self.writer
            .send(ReplicaJob::Reload((change, reply)))
            .await
            .map_err(|_| sm_error("the replica writer has stopped"))?;
        done.await
            .map_err(|_| sm_error("the replica writer has stopped"))?
            .map_err(sm_error)?;
        self.applied = read(&self.store, APPLIED).map_err(sm_error)?;
        self.membership = read(&self.store, MEMBERSHIP)
            .map_err(sm_error)?
            .unwrap_or_default();
        Ok(())
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
    type SnapshotBuilder = snapshot::Builder;

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
        let mut held = 0;
        for entry in entries {
            let log_id = entry.log_id;
            if self.applied.is_some_and(|a| log_id.index <= a.index) {
                // reflected already by an installed snapshot, which was taken later
                // than it said: applying it again would log it twice
                held += 1;
                continue;
            }
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
        let mut answers = vec![Answers(Vec::new()); held];
        if parts.is_empty() {
            return Ok(answers);
        }
        let outcomes = self.run(parts).await?;
        self.applied = last;
        answers.extend(
            outcomes
                .into_iter()
                .map(|o| Answers(o.into_iter().map(Answer::of).collect())),
        );
        Ok(answers)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        snapshot::Builder {
            applied: self.applied,
            membership: self.membership.clone(),
            store: self.store.clone(),
        }
    }

    async fn begin_receiving_snapshot(
        &mut self,
    ) -> Result<Box<Cursor<Vec<u8>>>, StorageError<u64>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<u64, BasicNode>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError<u64>> {
        let anchor = self.roster.get();
        let bytes = snapshot.into_inner();
        let size = bytes.len();
        let image = tokio::task::spawn_blocking(move || snapshot::check(&bytes, &anchor))
            .await
            .map_err(sm_error)?
            .map_err(|e| {
                tracing::error!(snapshot = %meta.snapshot_id, "cluster: snapshot refused: {e}");
                sm_error(e)
            })?;
        let (entries, envelopes) = (image.audit.len(), image.messages.len());
        self.install(image).await?;
        snapshot::record(&self.store, meta)?;
        self.snapshot = Some(meta.clone());
        self.installed
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        tracing::info!(
            snapshot = %meta.snapshot_id,
            bytes = size,
            audit_entries = entries,
            envelopes,
            applied = ?self.applied.map(|a| a.index),
            "cluster: snapshot verified and installed"
        );
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<Types>>, StorageError<u64>> {
        let first = !std::mem::replace(&mut self.started, true);
        // the newest description is the store's: a snapshot built since this replica
        // installed one (or started) is recorded there, not in `self.snapshot` — sending
        // the older one would acknowledge less than openraft chose to send
        let Some(meta) = snapshot::recorded(&self.store)?.or(self.snapshot.clone()) else {
            return Ok(None);
        };
        if first {
            // openraft's first call, as it starts, reads the description only: the image
            // is taken when a snapshot is sent (it asks again then)
            return Ok(Some(Snapshot {
                meta,
                snapshot: Box::new(Cursor::new(Vec::new())),
            }));
        }
        let bytes = snapshot::take(&self.store, &self.writer).await?;
        Ok(Some(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(bytes)),
        }))
    }
}
