//! A store as one value, and back: what a replica far behind the Raft log installs
//! instead of replaying entries the others have compacted away. The image is taken while
//! the writer applies nothing (so it is one consistent state); installing it adds what
//! the store lacks and replaces the small mutable trees, in one atomic sled write, so a
//! crash leaves the store as it was or as the image.

use std::collections::HashMap;

use ewx_proto::audit::{Entry, Event};
use ewx_proto::{MessageId, Precedence};
use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;
use sled::Transactional;
use sled::transaction::{ConflictableTransactionError, TransactionError};

use super::placement::SEGMENT_END;
use super::{Store, be, read_u64};
use crate::error::{Error, Result};
use crate::log::{Batch, NewMessage};

/// `meta` keys that describe the store's own files, never copied to another store.
const LOCAL_META: [&str; 2] = ["schema", SEGMENT_END];

/// One store's content. Envelopes dropped by retention are not in it; every audit entry
/// is (the record outlives its content).
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Image {
    /// Stored envelopes: (log index, envelope).
    pub messages: Vec<(u64, ByteBuf)>,
    /// Every audit entry, from index 0.
    pub audit: Vec<ByteBuf>,
    /// Every signed checkpoint, oldest first.
    pub checkpoints: Vec<ByteBuf>,
    /// Every roster that was in force: (version, signed roster).
    pub rosters: Vec<(u64, ByteBuf)>,
    /// Durable cursors: (key, next index).
    pub cursors: Vec<(ByteBuf, u64)>,
    /// Receipt keys.
    pub receipts: Vec<ByteBuf>,
    /// The shared `meta` values (newest roster, what a replicated log recorded).
    pub meta: Vec<(String, ByteBuf)>,
}

impl Image {
    /// A `meta` value of the image.
    pub fn meta_value(&self, key: &str) -> Option<&[u8]> {
        self.meta
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_slice())
    }

    /// The envelope at a log index.
    pub fn message(&self, index: u64) -> Option<&[u8]> {
        let i = self
            .messages
            .binary_search_by_key(&index, |(i, _)| *i)
            .ok()?;
        Some(self.messages[i].1.as_slice())
    }

    /// A roster of the image, by version.
    pub fn roster(&self, version: u64) -> Option<&[u8]> {
        self.rosters
            .iter()
            .find(|(v, _)| *v == version)
            .map(|(_, r)| r.as_slice())
    }
}

fn all<T>(tree: &sled::Tree, f: impl Fn(sled::IVec, sled::IVec) -> T) -> Result<Vec<T>> {
    tree.iter()
        .map(|kv| kv.map(|(k, v)| f(k, v)).map_err(Error::from))
        .collect()
}

fn buf(v: sled::IVec) -> ByteBuf {
    ByteBuf::from(v.to_vec())
}

impl Store {
    /// The whole store as an [`Image`]. Call it while nothing is committed (from the
    /// writer's thread), or the image may mix two states.
    ///
    /// # Errors
    /// `Store` on I/O failure or a damaged store.
    pub fn image(&self) -> Result<Image> {
        let mut messages = Vec::with_capacity(self.places.len());
        for k in self.places.iter().keys() {
            let Some(index) = read_u64(&k?) else { continue };
            if let Some(bytes) = self.message(index)? {
                messages.push((index, ByteBuf::from(bytes.to_vec())));
            }
        }
        Ok(Image {
            messages,
            audit: all(&self.audit, |_, v| buf(v))?,
            checkpoints: all(&self.checkpoints, |_, v| buf(v))?,
            rosters: all(&self.rosters, |k, v| {
                (read_u64(&k).unwrap_or_default(), buf(v))
            })?,
            cursors: all(&self.cursors, |k, v| {
                (buf(k), read_u64(&v).unwrap_or_default())
            })?,
            receipts: all(&self.receipts, |k, _| buf(k))?,
            meta: all(&self.meta, |k, v| {
                (String::from_utf8_lossy(&k).into_owned(), buf(v))
            })?
            .into_iter()
            .filter(|(k, _)| !LOCAL_META.contains(&k.as_str()))
            .collect(),
        })
    }

    /// Bring this store to the state of `image`, which must continue it (this store's
    /// audit log a prefix of the image's): the envelopes and audit entries it lacks are
    /// added, the cursors, checkpoints, rosters, receipts and shared `meta` values written
    /// over, in one atomic write, then synced. Check the image before (its chain and
    /// signatures): this only checks that it continues the store.
    ///
    /// # Errors
    /// `CorruptStore` if the image does not continue this store; `Store` on I/O failure.
    pub fn install(&self, image: &Image) -> Result<()> {
        let have = self.audit_len()?;
        let diverges = |reason: String| Error::CorruptStore {
            path: self.dir.clone(),
            reason: format!("the snapshot does not continue this store: {reason}"),
        };
        if (image.audit.len() as u64) < have {
            return Err(diverges(format!(
                "it has {} audit entries, this store {have}",
                image.audit.len()
            )));
        }
        if let Some(last) = have.checked_sub(1) {
            let ours = self.audit_range(last, have)?;
            if ours.first().map(|v| v.as_ref()) != Some(image.audit[last as usize].as_slice()) {
                return Err(diverges(format!("audit entry {last} differs")));
            }
        }
        let batch = Batch {
            messages: new_messages(image, have),
            ..Default::default()
        };
        let placed = self.place_envelopes(&batch)?;
        let r: Result<(), TransactionError<()>> = self.trees().transaction(
            |(places, ids, audit, cursors, checkpoints, meta, receipts, rosters)| {
                for (m, value) in batch.messages.iter().zip(&placed.values) {
                    places.insert(&be(m.index), value.as_slice())?;
                    ids.insert(&m.id.0, &be(m.index))?;
                }
                for (i, bytes) in image.audit.iter().enumerate().skip(have as usize) {
                    audit.insert(&be(i as u64), bytes.as_slice())?;
                }
                for (k, next) in &image.cursors {
                    cursors.insert(k.as_slice(), &be(*next))?;
                }
                for bytes in &image.checkpoints {
                    if let Some(size) = checkpoint_size(bytes) {
                        checkpoints.insert(&be(size), bytes.as_slice())?;
                    }
                }
                for (version, bytes) in &image.rosters {
                    rosters.insert(&be(*version), bytes.as_slice())?;
                }
                for k in &image.receipts {
                    receipts.insert(k.as_slice(), &[])?;
                }
                for (k, v) in &image.meta {
                    meta.insert(k.as_bytes(), v.as_slice())?;
                }
                if let Some(end) = &placed.segment_end {
                    meta.insert(SEGMENT_END, end.as_slice())?;
                }
                Ok::<(), ConflictableTransactionError<()>>(())
            },
        );
        r.map_err(|e| Error::Store(format!("installing a snapshot failed: {e:?}")))?;
        self.lanes
            .extend(batch.messages.iter().map(|m| (m.precedence, m.index)));
        self.sync()
    }
}

fn checkpoint_size(bytes: &[u8]) -> Option<u64> {
    let signed = ewx_proto::checkpoint::SignedCheckpoint::decode(bytes).ok()?;
    Some(signed.checkpoint().ok()?.size)
}

/// The image's envelopes this store lacks: those whose audit entries are new (from
/// index `from` on), with the id and precedence those entries give them.
fn new_messages(image: &Image, from: u64) -> Vec<NewMessage> {
    let mut named: HashMap<u64, (MessageId, Precedence)> = HashMap::new();
    for bytes in image.audit.iter().skip(from as usize) {
        if let Ok(Entry {
            event:
                Event::Published {
                    id,
                    log_index,
                    precedence,
                    ..
                },
            ..
        }) = Entry::decode(bytes)
        {
            named.insert(log_index, (id, precedence));
        }
    }
    image
        .messages
        .iter()
        .filter_map(|(index, bytes)| {
            let (id, precedence) = named.get(index).copied()?;
            Some(NewMessage {
                index: *index,
                precedence,
                id,
                bytes: bytes::Bytes::from(bytes.to_vec()),
            })
        })
        .collect()
}
