//! The Raft log of one replica (`<data_dir>/raft`): entries in append-only segment files
//! (the store's [`Segments`]), each framed with its length and a CRC-32 so a start finds
//! them again and cuts off a torn tail; the vote, the committed id and the purge point in
//! a small sled database. Appends are acknowledged to openraft only once `fdatasync`ed —
//! the vote and the entries a replica has acknowledged must survive a power cut, or a
//! majority ack means nothing. One flusher thread syncs for every append waiting (group
//! commit) and answers them in order.
//!
//! Entries were once sled values: a Raft entry of a busy group commit is larger than a
//! sled log segment, and sled wrote each to a blob file of its own (created, synced, its
//! directory synced, later deleted) — about 30 KB of disk writes per message on every
//! replica. A segment takes an entry in one `write`.

use std::collections::VecDeque;
use std::ops::RangeBounds;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard, mpsc};

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{AnyError, Entry, LogId, RaftLogReader, StorageError, StorageIOError, Vote};

use super::Types;
use crate::error::{Error, Result};
use crate::log::{Place, Segments, SledSync};

type Flushed = LogFlushed<Types>;

/// Where each entry lies, oldest first (contiguous indexes).
type Index = VecDeque<(LogId<u64>, Place)>;

/// Bytes before each entry: its length and the CRC-32 of the entry bytes.
const FRAME: usize = 8;

/// A replica's Raft log.
#[derive(Debug, Clone)]
pub struct LogStore {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    segments: Arc<Segments>,
    /// Where each entry lies, oldest first (contiguous indexes).
    index: Arc<Mutex<Index>>,
    /// The last purged log id (kept in `state` too), for [`Tail`].
    purged: Arc<Mutex<Option<LogId<u64>>>>,
    state: sled::Tree,
    sync: SledSync,
    flusher: mpsc::Sender<Flushed>,
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

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// An entry framed for a segment.
fn frame(entry: &Entry<Types>) -> Result<Vec<u8>, StorageError<u64>> {
    let body = encode(entry)?;
    let len = u32::try_from(body.len()).map_err(|_| failed("a Raft entry over 4 GiB"))?;
    let mut out = Vec::with_capacity(FRAME + body.len());
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&crc32fast::hash(&body).to_be_bytes());
    out.extend_from_slice(&body);
    Ok(out)
}

/// The entry in a framed record, if it is whole and its checksum holds.
fn unframe(record: &[u8]) -> Option<Entry<Types>> {
    let (head, body) = record.split_at_checked(FRAME)?;
    let len = u32::from_be_bytes(head[..4].try_into().ok()?) as usize;
    let crc = u32::from_be_bytes(head[4..].try_into().ok()?);
    let body = body.get(..len)?;
    (crc32fast::hash(body) == crc)
        .then(|| ciborium::from_reader(body).ok())
        .flatten()
}

/// The records of one segment file: each entry's log id and place, up to the first
/// record that is cut short or does not check (a torn tail).
fn records(segment: u64, bytes: &[u8]) -> Vec<(LogId<u64>, Place)> {
    let mut out = Vec::new();
    let mut at = 0usize;
    while let Some(head) = bytes.get(at..at + FRAME) {
        let len = u32::from_be_bytes([head[0], head[1], head[2], head[3]]) as usize;
        let Some(record) = bytes.get(at..at + FRAME + len) else {
            break;
        };
        let Some(entry) = unframe(record) else { break };
        let Ok(len) = u32::try_from(record.len()) else {
            break;
        };
        out.push((
            entry.log_id,
            Place {
                segment,
                offset: at as u64,
                len,
            },
        ));
        at += record.len();
    }
    out
}

impl LogStore {
    /// Open (or create) the log in `dir`: find every entry again, cut off what a crash
    /// left unfinished, and start the flusher.
    ///
    /// # Errors
    /// `Store` if sled cannot open the state, the thread cannot start, or an entry
    /// before the last segment's tail is damaged; `File` on I/O failure.
    pub fn open(dir: &Path) -> Result<Self> {
        let db = sled::Config::new()
            .path(dir)
            .cache_capacity(8 << 20)
            .open()
            .map_err(|e| {
                Error::Store(format!("{}: cannot open the Raft log: {e}", dir.display()))
            })?;
        let sync = SledSync::new(db.clone(), dir);
        let state = db.open_tree("state")?;
        let segments = Arc::new(Segments::open(dir));
        let index = Self::recover(dir, &segments, &state)?;
        let (flusher, waiting) = mpsc::channel::<Flushed>();
        let s = segments.clone();
        std::thread::Builder::new()
            .name("ewx-raft-sync".into())
            .spawn(move || flush_loop(&s, &waiting))
            .map_err(|e| Error::Store(format!("cannot start the Raft log flusher: {e}")))?;
        let store = Self {
            shared: Arc::new(Shared {
                segments,
                index: Arc::new(Mutex::new(index)),
                purged: Arc::default(),
                state,
                sync,
                flusher,
            }),
        };
        store.adopt_sled_entries(&db)?;
        Ok(store)
    }

    /// Every segment's records, in order; a torn tail of the last one is cut off.
    fn recover(
        dir: &Path,
        segments: &Segments,
        state: &sled::Tree,
    ) -> Result<VecDeque<(LogId<u64>, Place)>> {
        let purged: Option<LogId<u64>> = match state.get("purged")? {
            Some(v) => Some(ciborium::from_reader(v.as_ref()).map_err(|e| {
                Error::Store(format!(
                    "{}: the purge point does not decode: {e}",
                    dir.display()
                ))
            })?),
            None => None,
        };
        let all = segments.list()?;
        let mut index: VecDeque<(LogId<u64>, Place)> = VecDeque::new();
        for (n, &segment) in all.iter().enumerate() {
            let bytes = segments.read_segment(segment)?;
            let found = records(segment, &bytes);
            let read = found.last().map_or(0, |(_, p)| p.offset + u64::from(p.len));
            if read < bytes.len() as u64 && n + 1 < all.len() {
                return Err(Error::CorruptStore {
                    path: dir.into(),
                    reason: format!(
                        "the Raft log is damaged: segment {segment} has {} bytes that are not an entry at {read}, and later segments follow",
                        bytes.len() as u64 - read
                    ),
                });
            }
            if read < bytes.len() as u64 {
                tracing::warn!(
                    segment,
                    "Raft log: cut {} bytes after the last whole entry (a write a crash interrupted)",
                    bytes.len() as u64 - read
                );
            }
            index.extend(found);
        }
        if let Some(&(_, last)) = index.back() {
            segments.cut_tail(Some(last))?;
        } else {
            segments.cut_tail(None)?;
        }
        if let Some(p) = purged {
            while index.front().is_some_and(|(id, _)| id.index <= p.index) {
                index.pop_front();
            }
        }
        Ok(index)
    }

    /// Entries an earlier version kept as sled values move to the segments, once.
    fn adopt_sled_entries(&self, db: &sled::Db) -> Result<()> {
        let old = db.open_tree("entries")?;
        if old.is_empty() {
            return Ok(());
        }
        let mut entries = Vec::new();
        for kv in &old {
            let (_, v) = kv?;
            entries.push(decode::<Entry<Types>>(&v).map_err(|e| Error::Store(e.to_string()))?);
        }
        let known = lock(&self.shared.index).back().map(|(id, _)| id.index);
        let purged = self
            .get_state::<LogId<u64>>("purged")
            .map_err(|e| Error::Store(e.to_string()))?
            .map(|p| p.index);
        entries.retain(|e| {
            known.is_none_or(|k| e.log_id.index > k) && purged.is_none_or(|p| e.log_id.index > p)
        });
        self.write(entries)
            .map_err(|e| Error::Store(e.to_string()))?;
        self.shared.segments.sync()?;
        db.drop_tree("entries")?;
        self.shared.sync.sync()?;
        tracing::info!("Raft log entries moved from sled to segment files");
        Ok(())
    }

    /// Append entries to the segments (not yet durable) and index them.
    fn write(&self, entries: Vec<Entry<Types>>) -> Result<(), StorageError<u64>> {
        let framed: Vec<(LogId<u64>, Vec<u8>)> = entries
            .iter()
            .map(|e| Ok((e.log_id, frame(e)?)))
            .collect::<Result<_, StorageError<u64>>>()?;
        let mut index = lock(&self.shared.index);
        let places = self
            .shared
            .segments
            .append(framed.iter().map(|(id, b)| (id.index, b.as_slice())))
            .map_err(failed)?;
        index.extend(framed.iter().map(|(id, _)| *id).zip(places));
        Ok(())
    }

    fn put_state<T: serde::Serialize>(&self, key: &str, v: &T) -> Result<(), StorageError<u64>> {
        self.shared.state.insert(key, encode(v)?).map_err(failed)?;
        Ok(())
    }

    fn get_state<T: serde::de::DeserializeOwned>(
        &self,
        key: &str,
    ) -> Result<Option<T>, StorageError<u64>> {
        match self.shared.state.get(key).map_err(unreadable)? {
            Some(v) => Ok(Some(decode(&v)?)),
            None => Ok(None),
        }
    }

    fn durable_state(&self) -> Result<(), StorageError<u64>> {
        self.shared.sync.sync().map_err(failed)
    }
}

/// Sync once for everything waiting, then tell openraft, in order.
fn flush_loop(segments: &Segments, waiting: &mpsc::Receiver<Flushed>) {
    while let Ok(first) = waiting.recv() {
        let mut done = vec![first];
        done.extend(waiting.try_iter());
        let r = segments.sync();
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
        let places: Vec<Place> = lock(&self.shared.index)
            .iter()
            .filter(|(id, _)| range.contains(&id.index))
            .map(|(_, p)| *p)
            .collect();
        let mut out = Vec::with_capacity(places.len());
        for place in places {
            let record = self
                .shared
                .segments
                .read(place)
                .map_err(unreadable)?
                .ok_or_else(|| unreadable(format!("segment {} is gone", place.segment)))?;
            out.push(unframe(&record).ok_or_else(|| {
                unreadable(format!(
                    "the entry at {} of segment {} does not check",
                    place.offset, place.segment
                ))
            })?);
        }
        Ok(out)
    }
}

impl LogStore {
    /// The id of the last entry appended (synced or about to be), or of the last one
    /// purged when none is left.
    ///
    /// # Errors
    /// When the purge point cannot be read.
    pub fn last_log_id(&self) -> Result<Option<LogId<u64>>, StorageError<u64>> {
        let last = lock(&self.shared.index).back().map(|(id, _)| *id);
        match last {
            Some(id) => Ok(Some(id)),
            None => self.get_state("purged"),
        }
    }

    /// How far the log goes, readable without holding the log open (so a replica that
    /// stops releases its files even while a task still looks at its tail).
    pub fn tail(&self) -> Result<Tail, StorageError<u64>> {
        *lock(&self.shared.purged) = self.get_state("purged")?;
        Ok(Tail {
            index: Arc::clone(&self.shared.index),
            purged: Arc::clone(&self.shared.purged),
        })
    }
}

/// The end of a replica's Raft log (see [`LogStore::tail`]).
#[derive(Debug, Clone)]
pub struct Tail {
    index: Arc<Mutex<Index>>,
    purged: Arc<Mutex<Option<LogId<u64>>>>,
}

impl Tail {
    /// The id of the last entry appended, or of the last one purged when none is left.
    pub fn last_log_id(&self) -> Option<LogId<u64>> {
        lock(&self.index)
            .back()
            .map(|(id, _)| *id)
            .or(*lock(&self.purged))
    }
}

impl RaftLogStorage<Types> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<Types>, StorageError<u64>> {
        let purged: Option<LogId<u64>> = self.get_state("purged")?;
        let last = self.last_log_id()?;
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
        self.durable_state()
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
        self.write(entries.into_iter().collect())?;
        // readable now; acknowledged once the flusher has synced it
        self.shared
            .flusher
            .send(callback)
            .map_err(|_| failed("the Raft log flusher has stopped"))
    }

    async fn truncate(&mut self, log_id: LogId<u64>) -> Result<(), StorageError<u64>> {
        let mut index = lock(&self.shared.index);
        let keep = index
            .iter()
            .take_while(|(id, _)| id.index < log_id.index)
            .count();
        index.truncate(keep);
        // the bytes after the last kept entry go (durably), appends continue there
        self.shared
            .segments
            .cut_tail(index.back().map(|(_, p)| *p))
            .map_err(failed)
    }

    async fn purge(&mut self, log_id: LogId<u64>) -> Result<(), StorageError<u64>> {
        self.put_state("purged", &log_id)?;
        *lock(&self.shared.purged) = Some(log_id);
        self.durable_state()?;
        let first_kept = {
            let mut index = lock(&self.shared.index);
            while index
                .front()
                .is_some_and(|(id, _)| id.index <= log_id.index)
            {
                index.pop_front();
            }
            index.front().map_or(log_id.index + 1, |(id, _)| id.index)
        };
        self.shared.segments.drop_before(first_kept);
        Ok(())
    }
}

#[cfg(test)]
#[path = "log_store_tests.rs"]
mod tests;
