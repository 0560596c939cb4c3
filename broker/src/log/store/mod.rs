//! The durable store, in sled, with the envelopes of large commits in append-only segment
//! files (see `placement`). One writer (see `writer`) commits batches in a single
//! multi-tree sled transaction, then flushes sled and `fdatasync`s its data file, so a
//! `PublishAck` means the envelope *and* its audit entry survive a crash or a power cut.
//! Readers (delivery lanes, auditors) read concurrently.
//!
//! Trees: `places` (index → the envelope, or where it lies in a segment), `ids` (message
//! id → index), `audit` (index → entry), `cursors` (node ‖ name ‖ precedence → next
//! index), `checkpoints` (size → signed checkpoint), `rosters` (version → signed roster,
//! every roster ever in force), `receipts`, `meta` (schema, newest roster, end of the
//! segments). A publish writes three keys (`places`, `ids`, `audit`); which indexes each
//! precedence lane holds is kept in memory ([`LaneIndex`]), rebuilt from the audit log on
//! start.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use ewx_proto::{MessageId, NodeId, Precedence};
use sled::Transactional;
use sled::transaction::{ConflictableTransactionError, TransactionError};

use crate::error::{Error, Result};

mod guard;
mod image;
mod lanes;
mod placement;
mod recovery;
mod segments;
mod sync;
mod traits;

pub use guard::guarded;
pub use image::Image;
pub use segments::{Place, Segments};
pub use sync::SledSync;

use lanes::LaneIndex;
use placement::SEGMENT_END;

use super::Recovered;
use super::batch::Batch;

/// Version of the layout above; a store with another version is refused. Version 1 also
/// wrote `lanes` and `topics` trees, version 2 kept every envelope in a `log` tree: such
/// stores are upgraded when opened.
pub const SCHEMA: u32 = 3;

/// The sled store.
#[derive(Debug, Clone)]
pub struct Store {
    dir: PathBuf,
    db: sled::Db,
    places: sled::Tree,
    segments: Arc<Segments>,
    lanes: LaneIndex,
    ids: sled::Tree,
    audit: sled::Tree,
    cursors: sled::Tree,
    checkpoints: sled::Tree,
    receipts: sled::Tree,
    rosters: sled::Tree,
    meta: sled::Tree,
    synced: Arc<SledSync>,
    timings: Timings,
}

/// Time the commits spent in sled's transaction and in the sync, for the writer's profile.
#[derive(Debug, Clone, Default)]
struct Timings(Arc<[std::sync::atomic::AtomicU64; 2]>);

impl Timings {
    fn add(&self, transaction: std::time::Duration, sync: std::time::Duration) {
        use std::sync::atomic::Ordering::Relaxed;
        self.0[0].fetch_add(transaction.as_nanos() as u64, Relaxed);
        self.0[1].fetch_add(sync.as_nanos() as u64, Relaxed);
    }

    fn get(&self) -> (std::time::Duration, std::time::Duration) {
        use std::sync::atomic::Ordering::Relaxed;
        let d = |i: usize| std::time::Duration::from_nanos(self.0[i].load(Relaxed));
        (d(0), d(1))
    }
}

fn be(n: u64) -> [u8; 8] {
    n.to_be_bytes()
}

fn read_u64(v: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(v.try_into().ok()?))
}

/// Key of a durable cursor.
pub fn cursor_key(node: &NodeId, name: &str, precedence: Precedence) -> Vec<u8> {
    let mut k = Vec::with_capacity(node.as_str().len() + name.len() + 3);
    k.extend_from_slice(node.as_str().as_bytes());
    k.push(0);
    k.extend_from_slice(name.as_bytes());
    k.push(0);
    k.push(precedence as u8);
    k
}

fn receipt_key(id: &MessageId, by: &NodeId) -> Vec<u8> {
    let mut k = id.0.to_vec();
    k.extend_from_slice(by.as_str().as_bytes());
    k
}

/// The trees of [`Store::trees`], in that order.
type Trees<'a> = (
    &'a sled::Tree,
    &'a sled::Tree,
    &'a sled::Tree,
    &'a sled::Tree,
    &'a sled::Tree,
    &'a sled::Tree,
    &'a sled::Tree,
    &'a sled::Tree,
);

/// sled page cache size.
const CACHE_BYTES: u64 = 128 << 20;

impl Store {
    /// Open (or create) the store in `dir` and replay it.
    ///
    /// # Errors
    /// `CorruptStore` if the schema is unknown, the audit chain is broken, or the last
    /// checkpoint does not match the log; `Store` on I/O failure.
    pub fn open(dir: &Path, replay_width: u64) -> Result<(Self, Recovered)> {
        guarded(dir, || Self::open_unguarded(dir, replay_width))
    }

    fn open_unguarded(dir: &Path, replay_width: u64) -> Result<(Self, Recovered)> {
        std::fs::create_dir_all(dir).map_err(|reason| Error::File {
            path: dir.into(),
            reason,
        })?;
        let store = Self::open_trees(dir)?;
        let corrupt = |reason: String| Error::CorruptStore {
            path: dir.into(),
            reason,
        };
        match store.meta.get("schema")? {
            Some(v) => match v.as_ref().try_into().map(u32::from_be_bytes) {
                Ok(SCHEMA) => {}
                Ok(1) => {
                    store.upgrade_from_1()?;
                    store.upgrade_from_2()?;
                }
                Ok(2) => store.upgrade_from_2()?,
                Ok(other) => {
                    return Err(corrupt(format!(
                        "schema version {other}, this broker knows {SCHEMA}"
                    )));
                }
                Err(_) => return Err(corrupt("unreadable schema version".into())),
            },
            None if !store.audit.is_empty() || !store.places.is_empty() => {
                return Err(corrupt("data without a schema version".into()));
            }
            None => {
                store.meta.insert("schema", &SCHEMA.to_be_bytes())?;
                store.sync()?;
            }
        }
        let recovered = store.recover(replay_width).map_err(|e| match e {
            Error::Proto(p) => corrupt(p.to_string()),
            other => other,
        })?;
        Ok((store, recovered))
    }

    /// Open a store for reading only what is there — no schema write, no recovery, no
    /// checks: the auditor's view of a copied data directory, broken or not.
    ///
    /// # Errors
    /// `Store` if sled cannot open it.
    pub fn open_for_audit(dir: &Path) -> Result<Self> {
        if !dir.join("db").exists() {
            return Err(Error::Store(format!(
                "{}: no broker store here",
                dir.display()
            )));
        }
        guarded(dir, || Self::open_trees(dir))
    }

    /// The data directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn open_trees(dir: &Path) -> Result<Self> {
        // sled caches up to 1 GiB by default; the broker's hot data is the recent tail
        let db = sled::Config::new()
            .path(dir)
            .cache_capacity(CACHE_BYTES)
            .open()
            .map_err(|e| match e {
                sled::Error::Corruption { .. } | sled::Error::ReportableBug(_) => {
                    Error::CorruptStore {
                        path: dir.into(),
                        reason: format!("the store is damaged: {e}"),
                    }
                }
                // sled's words for a lock another process holds
                sled::Error::Io(e) if e.to_string().contains("could not acquire lock") => {
                    Error::Store(format!(
                        "{}: the store is in use by another process (an ewx-broker already \
                         running on this data directory?); stop it, or give this broker \
                         another data_dir",
                        dir.display()
                    ))
                }
                e => Error::Store(format!("{}: cannot open the store: {e}", dir.display())),
            })?;
        let t = |name: &str| db.open_tree(name);
        Ok(Self {
            dir: dir.into(),
            places: t("places")?,
            segments: Arc::new(Segments::open(dir)),
            lanes: LaneIndex::default(),
            ids: t("ids")?,
            audit: t("audit")?,
            cursors: t("cursors")?,
            checkpoints: t("checkpoints")?,
            receipts: t("receipts")?,
            rosters: t("rosters")?,
            meta: t("meta")?,
            synced: Arc::new(SledSync::new(db.clone(), dir)),
            timings: Timings::default(),
            db,
        })
    }

    /// Schema 1 to 2: drop the `lanes` and `topics` trees (the lanes are rebuilt in
    /// memory by recovery; the per-topic index was never read).
    fn upgrade_from_1(&self) -> Result<()> {
        for old in ["lanes", "topics"] {
            self.db.drop_tree(old)?;
        }
        self.meta.insert("schema", &2u32.to_be_bytes())?;
        tracing::info!("store upgraded from schema 1 to 2");
        self.sync()
    }

    /// A roster that was in force, by version.
    ///
    /// # Errors
    /// `Store` on I/O failure.
    pub fn roster(&self, version: u64) -> Result<Option<sled::IVec>> {
        Ok(self.rosters.get(be(version))?)
    }

    /// The signed checkpoint of `size` entries.
    ///
    /// # Errors
    /// `Store` on I/O failure.
    pub fn checkpoint(&self, size: u64) -> Result<Option<sled::IVec>> {
        Ok(self.checkpoints.get(be(size))?)
    }

    /// Signed checkpoints of `from_size` entries and more, oldest first, at most `limit`.
    ///
    /// # Errors
    /// `Store` on I/O failure.
    pub fn checkpoints_from(&self, from_size: u64, limit: usize) -> Result<Vec<sled::IVec>> {
        self.checkpoints
            .range(be(from_size)..)
            .take(limit)
            .map(|kv| Ok(kv?.1))
            .collect()
    }

    /// Number of audit entries stored (keys are dense from 0 in a sound store).
    ///
    /// # Errors
    /// `Store` on I/O failure.
    pub fn audit_len(&self) -> Result<u64> {
        Ok(self
            .audit
            .last()?
            .and_then(|(k, _)| read_u64(&k))
            .map_or(0, |i| i + 1))
    }

    /// Every tree a commit may write, for one sled transaction over all of them.
    fn trees(&self) -> Trees<'_> {
        (
            &self.places,
            &self.ids,
            &self.audit,
            &self.cursors,
            &self.checkpoints,
            &self.meta,
            &self.receipts,
            &self.rosters,
        )
    }

    /// Write a batch atomically and make it durable.
    ///
    /// # Errors
    /// `Store` if the transaction, flush or sync fails (then nothing of it is acknowledged).
    pub fn commit(&self, batch: &Batch) -> Result<()> {
        let started = std::time::Instant::now();
        // the envelopes of a large batch first, durable before sled records where they lie
        let placed = self.place_envelopes(batch)?;
        let r: Result<(), TransactionError<()>> = self.trees().transaction(
            |(places, ids, audit, cursors, checkpoints, meta, receipts, rosters)| {
                for (m, value) in batch.messages.iter().zip(&placed.values) {
                    places.insert(&be(m.index), value.as_slice())?;
                    ids.insert(&m.id.0, &be(m.index))?;
                }
                for (i, bytes) in &batch.audit {
                    audit.insert(&be(*i), bytes.as_slice())?;
                }
                for (k, next) in &batch.cursors {
                    cursors.insert(k.as_slice(), &be(*next))?;
                }
                if let Some((size, bytes)) = &batch.checkpoint {
                    checkpoints.insert(&be(*size), bytes.as_slice())?;
                }
                if let Some(end) = &placed.segment_end {
                    meta.insert(SEGMENT_END, end.as_slice())?;
                }
                if let Some((version, r)) = &batch.roster {
                    meta.insert("roster", r.as_slice())?;
                    rosters.insert(&be(*version), r.as_slice())?;
                }
                for (size, bytes) in &batch.cosigned {
                    checkpoints.insert(&be(*size), bytes.as_slice())?;
                }
                for (id, by) in &batch.receipts {
                    receipts.insert(receipt_key(id, by), &[])?;
                }
                for (key, value) in &batch.meta {
                    meta.insert(*key, value.as_slice())?;
                }
                Ok::<(), ConflictableTransactionError<()>>(())
            },
        );
        r.map_err(|e| Error::Store(format!("commit failed: {e:?}")))?;
        // readers never look past the durable head, so the lanes may learn of these now
        self.lanes
            .extend(batch.messages.iter().map(|m| (m.precedence, m.index)));
        let written = std::time::Instant::now();
        let synced = if batch.replicated {
            Ok(())
        } else {
            self.sync()
        };
        self.timings.add(written - started, written.elapsed());
        synced
    }

    /// Flush sled and fsync what it wrote ([`SledSync`]).
    fn sync(&self) -> Result<()> {
        self.synced.sync()
    }

    /// Envelopes of one precedence lane with index in `[from, until)`, at most `limit`
    /// of them and about `max_bytes` in all (so a stalled reader pins little memory).
    /// `until` is the writer's durable head: nothing not yet synced is ever read.
    ///
    /// # Errors
    /// `Store` on I/O failure.
    pub fn lane(
        &self,
        precedence: Precedence,
        from: u64,
        until: u64,
        limit: usize,
        max_bytes: usize,
    ) -> Result<Vec<(u64, Bytes)>> {
        if from >= until {
            return Ok(Vec::new());
        }
        let indexes = self.lanes.range(precedence, from, until, limit);
        self.messages(&indexes, max_bytes)
    }

    /// A durable cursor (next index to deliver).
    ///
    /// # Errors
    /// `Store` on I/O failure.
    pub fn cursor(&self, key: &[u8]) -> Result<Option<u64>> {
        Ok(self.cursors.get(key)?.and_then(|v| read_u64(&v)))
    }

    /// Has `by` already had a receipt for `id` logged?
    ///
    /// # Errors
    /// `Store` on I/O failure.
    pub fn has_receipt(&self, id: &MessageId, by: &NodeId) -> Result<bool> {
        Ok(self.receipts.contains_key(receipt_key(id, by))?)
    }

    /// The log index of a message id.
    ///
    /// # Errors
    /// `Store` on I/O failure.
    pub fn index_of(&self, id: &MessageId) -> Result<Option<u64>> {
        Ok(self.ids.get(id.0)?.and_then(|v| read_u64(&v)))
    }

    /// Audit entries `[from, to)`.
    ///
    /// # Errors
    /// `Store` on I/O failure.
    pub fn audit_range(&self, from: u64, to: u64) -> Result<Vec<sled::IVec>> {
        self.audit
            .range(be(from)..be(to))
            .map(|kv| Ok(kv?.1))
            .collect()
    }

    /// Every stored checkpoint, oldest first.
    ///
    /// # Errors
    /// `Store` on I/O failure.
    pub fn checkpoints(&self) -> Result<Vec<sled::IVec>> {
        self.checkpoints.iter().map(|kv| Ok(kv?.1)).collect()
    }

    /// A value of the `meta` tree written through [`Batch::meta`].
    ///
    /// # Errors
    /// `Store` on I/O failure.
    pub fn meta_value(&self, key: &str) -> Result<Option<sled::IVec>> {
        Ok(self.meta.get(key)?)
    }

    /// Write a `meta` value outside any batch (bookkeeping of a replicated log that no
    /// batch carries), durable on return.
    ///
    /// # Errors
    /// `Store` on I/O failure.
    pub fn put_meta(&self, key: &str, value: &[u8]) -> Result<()> {
        self.meta.insert(key, value)?;
        self.sync()
    }

    /// Number of stored envelopes (after retention). Walks the index (sled counts a tree
    /// by reading it): call it once, not per message.
    pub fn message_count(&self) -> usize {
        self.places.len()
    }
}
