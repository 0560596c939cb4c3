//! Snapshots, so the Raft log can be compacted: a replica too far behind for the log
//! the others kept installs the leader's store instead ([`Image`]).
//!
//! Building a snapshot only records where the state machine stands (its applied log id
//! and membership): the store *is* the snapshot. Sending one streams the store as it is
//! then — at or after that point, never before — with the log id it really reflects, and
//! the receiver records that id and skips the entries it already holds, so nothing is
//! applied twice. Before installing, the receiver verifies the image as an auditor
//! would: the hash chain, every envelope's signature and rights, every checkpoint's
//! signature and root, and at least one checkpoint signed by two replicas.

use std::io::Cursor;

use ewx_proto::Roster;
use ewx_proto::audit::{Lookup, Verifier};
use openraft::storage::Snapshot;
use openraft::{AnyError, BasicNode, LogId, RaftSnapshotBuilder, SnapshotMeta, StorageError};
use openraft::{StorageIOError, StoredMembership};
use tokio::sync::{mpsc, oneshot};

use super::Types;
use crate::log::{Image, ReplicaJob, Store};

/// `meta` key of the last snapshot built or installed.
pub const SNAPSHOT: &str = "raft_snapshot";

/// A snapshot's description.
pub type Meta = SnapshotMeta<u64, BasicNode>;

fn snapshot_error(e: impl std::fmt::Display) -> StorageError<u64> {
    StorageIOError::read_snapshot(None, AnyError::error(e.to_string())).into()
}

/// Records a snapshot: where the state machine stood when openraft asked.
#[derive(Debug)]
pub struct Builder {
    /// The applied log id then.
    pub applied: Option<LogId<u64>>,
    /// The membership then.
    pub membership: StoredMembership<u64, BasicNode>,
    /// Where the description is kept.
    pub store: Store,
}

impl RaftSnapshotBuilder<Types> for Builder {
    async fn build_snapshot(&mut self) -> Result<Snapshot<Types>, StorageError<u64>> {
        let meta = Meta {
            last_log_id: self.applied,
            last_membership: self.membership.clone(),
            snapshot_id: self.applied.map_or_else(
                || "0".into(),
                |id| format!("{}-{}", id.leader_id.term, id.index),
            ),
        };
        record(&self.store, &meta)?;
        tracing::info!(snapshot = %meta.snapshot_id, "cluster: snapshot recorded; the Raft log before it may be compacted");
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(Vec::new())),
        })
    }
}

/// Keep `meta` as the current snapshot's description (durable before the log is purged).
///
/// # Errors
/// If it cannot be written.
pub fn record(store: &Store, meta: &Meta) -> Result<(), StorageError<u64>> {
    let mut bytes = Vec::new();
    ciborium::into_writer(meta, &mut bytes).map_err(snapshot_error)?;
    store.put_meta(SNAPSHOT, &bytes).map_err(snapshot_error)
}

/// The current snapshot's description, if one was built or installed.
///
/// # Errors
/// If it cannot be read.
pub fn recorded(store: &Store) -> Result<Option<Meta>, StorageError<u64>> {
    match store.meta_value(SNAPSHOT).map_err(snapshot_error)? {
        Some(v) => ciborium::from_reader(v.as_ref())
            .map(Some)
            .map_err(snapshot_error),
        None => Ok(None),
    }
}

/// The store as it is now, encoded: taken on the writer's thread while it applies nothing.
///
/// # Errors
/// If the writer has stopped or the store cannot be read.
pub async fn take(
    store: &Store,
    writer: &mpsc::Sender<ReplicaJob>,
) -> Result<Vec<u8>, StorageError<u64>> {
    let (tx, rx) = oneshot::channel();
    let store = store.clone();
    let job = ReplicaJob::Hold(Box::new(move || {
        let _ = tx.send(store.image());
    }));
    writer.send(job).await.map_err(snapshot_error)?;
    let image = rx.await.map_err(snapshot_error)?.map_err(snapshot_error)?;
    tokio::task::spawn_blocking(move || {
        let mut bytes = Vec::new();
        ciborium::into_writer(&image, &mut bytes).map(|()| bytes)
    })
    .await
    .map_err(snapshot_error)?
    .map_err(snapshot_error)
}

/// Decode a received snapshot and verify it as an auditor would, against the roster in
/// force (the replica's trust anchor).
///
/// # Errors
/// A message naming what does not verify.
pub fn check(bytes: &[u8], anchor: &Roster) -> Result<Image, String> {
    let image: Image =
        ciborium::from_reader(bytes).map_err(|e| format!("the snapshot does not decode: {e}"))?;
    let mut verifier = Verifier::new(anchor.clone()).map_err(|e| e.to_string())?;
    let mut lookup = Source(&image);
    for entry in &image.audit {
        verifier
            .push(entry, &mut lookup)
            .map_err(|e| format!("the snapshot's audit log does not verify: {e}"))?;
    }
    let checkpoints: Vec<Vec<u8>> = image.checkpoints.iter().map(|c| c.to_vec()).collect();
    let summary = verifier
        .finish(&checkpoints, &Default::default(), 0)
        .map_err(|e| format!("the snapshot's checkpoints do not verify: {e}"))?;
    if anchor.broker_keys().len() >= 2 && summary.replica_signed == 0 && !image.audit.is_empty() {
        return Err("no checkpoint of the snapshot is signed by two replicas".into());
    }
    Ok(image)
}

/// The image's envelopes and rosters, for the verifier.
struct Source<'a>(&'a Image);

impl Lookup for Source<'_> {
    fn envelope(&mut self, log_index: u64) -> Option<Vec<u8>> {
        self.0.message(log_index).map(<[u8]>::to_vec)
    }

    fn roster(&mut self, version: u64) -> Option<Vec<u8>> {
        self.0.roster(version).map(<[u8]>::to_vec)
    }
}
