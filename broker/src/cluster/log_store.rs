//! The Raft log of one replica, in its own sled database (`<data_dir>/raft`): entries by
//! index, the vote, the committed id and the purge point. Appends are acknowledged to
//! openraft only once flushed and fsynced — the vote and the entries a replica has
//! acknowledged must survive a power cut, or a majority ack means nothing. One flusher
//! thread syncs for every append waiting (group commit) and answers them in order.

use std::ops::RangeBounds;
use std::path::Path;
use std::sync::mpsc;

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{AnyError, Entry, LogId, RaftLogReader, StorageError, StorageIOError, Vote};

use super::Types;
use crate::error::{Error, Result};
use crate::log::SledSync;

type Flushed = LogFlushed<Types>;

/// A replica's Raft log.
#[derive(Debug, Clone)]
pub struct LogStore {
    entries: sled::Tree,
    state: sled::Tree,
    sync: SledSync,
    flusher: mpsc::Sender<Flushed>,
}

fn be(n: u64) -> [u8; 8] {
    n.to_be_bytes()
}

fn failed(e: impl std::fmt::Display) -> StorageError<u64> {
    StorageIOError::write_logs(AnyError::error(e.to_string())).into()
}

fn unreadable(e: impl std::fmt::Display) -> StorageError<u64> {
    StorageIOError::read_logs(AnyError::error(e.to_string())).into()
}

fn encode<T: serde::Serialize>(v: &T) -> Result<Vec<u8>, StorageError<u64>> {
    let mut out = Vec::new();
    ciborium::into_writer(v, &mut out).map_err(failed)?;
    Ok(out)
}

fn decode<T: serde::de::DeserializeOwned>(b: &[u8]) -> Result<T, StorageError<u64>> {
    ciborium::from_reader(b).map_err(unreadable)
}

impl LogStore {
    /// Open (or create) the log in `dir`, and start its flusher.
    ///
    /// # Errors
    /// `Store` if sled cannot open it or the thread cannot start.
    pub fn open(dir: &Path) -> Result<Self> {
        let db = sled::Config::new()
            .path(dir)
            .cache_capacity(32 << 20)
            .open()
            .map_err(|e| {
                Error::Store(format!("{}: cannot open the Raft log: {e}", dir.display()))
            })?;
        let sync = SledSync::new(db.clone(), dir);
        let (flusher, waiting) = mpsc::channel::<Flushed>();
        let s = sync.clone();
        std::thread::Builder::new()
            .name("ewx-raft-sync".into())
            .spawn(move || flush_loop(&s, &waiting))
            .map_err(|e| Error::Store(format!("cannot start the Raft log flusher: {e}")))?;
        Ok(Self {
            entries: db.open_tree("entries")?,
            state: db.open_tree("state")?,
            sync,
            flusher,
        })
    }

    fn put_state<T: serde::Serialize>(&self, key: &str, v: &T) -> Result<(), StorageError<u64>> {
        self.state.insert(key, encode(v)?).map_err(failed)?;
        Ok(())
    }

    fn get_state<T: serde::de::DeserializeOwned>(
        &self,
        key: &str,
    ) -> Result<Option<T>, StorageError<u64>> {
        match self.state.get(key).map_err(unreadable)? {
            Some(v) => Ok(Some(decode(&v)?)),
            None => Ok(None),
        }
    }

    fn durable(&self) -> Result<(), StorageError<u64>> {
        self.sync.sync().map_err(failed)
    }
}

/// Sync once for everything waiting, then tell openraft, in order.
fn flush_loop(sync: &SledSync, waiting: &mpsc::Receiver<Flushed>) {
    while let Ok(first) = waiting.recv() {
        let mut done = vec![first];
        done.extend(waiting.try_iter());
        let r = sync.sync();
        if let Err(e) = &r {
            tracing::error!("Raft log sync failed: {e}");
        }
        for d in done {
            d.log_io_completed(
                r.as_ref()
                    .map(|_| ())
                    .map_err(|e| std::io::Error::other(e.to_string())),
            );
        }
    }
}

impl RaftLogReader<Types> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + std::fmt::Debug + Send>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry<Types>>, StorageError<u64>> {
        use std::ops::Bound;
        let from = match range.start_bound() {
            Bound::Included(&i) => i,
            Bound::Excluded(&i) => i + 1,
            Bound::Unbounded => 0,
        };
        let mut out = Vec::new();
        for kv in self.entries.range(be(from)..) {
            let (k, v) = kv.map_err(unreadable)?;
            let i = u64::from_be_bytes(k.as_ref().try_into().map_err(unreadable)?);
            if !range.contains(&i) {
                break;
            }
            out.push(decode(&v)?);
        }
        Ok(out)
    }
}

impl RaftLogStorage<Types> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<Types>, StorageError<u64>> {
        let purged: Option<LogId<u64>> = self.get_state("purged")?;
        let last = match self.entries.last().map_err(unreadable)? {
            Some((_, v)) => Some(decode::<Entry<Types>>(&v)?.log_id),
            None => purged,
        };
        Ok(LogState {
            last_purged_log_id: purged,
            last_log_id: last,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<u64>) -> Result<(), StorageError<u64>> {
        self.put_state("vote", vote)?;
        self.durable()
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<u64>>, StorageError<u64>> {
        self.get_state("vote")
    }

    async fn save_committed(&mut self, c: Option<LogId<u64>>) -> Result<(), StorageError<u64>> {
        // a hint for a faster restart (re-applying up to it); not synced on its own
        self.put_state("committed", &c)
    }

    async fn read_committed(&mut self) -> Result<Option<LogId<u64>>, StorageError<u64>> {
        Ok(self.get_state::<Option<LogId<u64>>>("committed")?.flatten())
    }

    async fn append<I>(&mut self, entries: I, callback: Flushed) -> Result<(), StorageError<u64>>
    where
        I: IntoIterator<Item = Entry<Types>> + Send,
        I::IntoIter: Send,
    {
        let mut batch = sled::Batch::default();
        for e in entries {
            batch.insert(&be(e.log_id.index), encode(&e)?);
        }
        self.entries.apply_batch(batch).map_err(failed)?;
        // visible to readers now; acknowledged once the flusher has synced it
        self.flusher
            .send(callback)
            .map_err(|_| failed("the Raft log flusher has stopped"))
    }

    async fn truncate(&mut self, log_id: LogId<u64>) -> Result<(), StorageError<u64>> {
        let mut batch = sled::Batch::default();
        for kv in self.entries.range(be(log_id.index)..) {
            batch.remove(kv.map_err(unreadable)?.0);
        }
        self.entries.apply_batch(batch).map_err(failed)?;
        self.durable()
    }

    async fn purge(&mut self, log_id: LogId<u64>) -> Result<(), StorageError<u64>> {
        self.put_state("purged", &log_id)?;
        let mut batch = sled::Batch::default();
        for kv in self.entries.range(..=be(log_id.index)) {
            batch.remove(kv.map_err(unreadable)?.0);
        }
        self.entries.apply_batch(batch).map_err(failed)?;
        self.durable()
    }
}
