//! [`Chain`] replays an audit log entry by entry: order, hash links and times, building
//! the Merkle tree as it goes, and names the first index that does not fit with a typed
//! [`ChainFault`]. The broker appends through it; auditors verify through it.

use crate::error::{Error, Result};
use crate::ids::Digest32;
use crate::merkle::{MerkleTree, leaf_hash};

use super::entry::{Entry, Event};

/// Why an audit log stops being a sound chain at some index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChainFault {
    /// The stored bytes do not decode as an entry.
    Undecodable(String),
    /// The entry carries another index than its position (an entry missing or moved).
    WrongIndex {
        /// The index the entry says.
        says: u64,
    },
    /// There is no entry at this index, though later ones exist.
    Missing,
    /// The entry names another hash for the entry before it: that one was altered.
    BrokenLink,
    /// The entry's time is before the previous entry's.
    TimeBackwards {
        /// This entry's time.
        time_ms: u64,
        /// The previous entry's.
        previous_ms: u64,
    },
    /// The last signed checkpoint covers more entries than the log holds.
    CheckpointBeyondLog {
        /// Entries the checkpoint covers.
        covers: u64,
        /// Entries in the log.
        len: u64,
    },
    /// The log's entries do not hash to the root its last checkpoint signed.
    CheckpointMismatch,
}

impl std::fmt::Display for ChainFault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ChainFault::Undecodable(e) => write!(f, "{e}"),
            ChainFault::WrongIndex { says } => write!(f, "entry says index {says}"),
            ChainFault::Missing => write!(f, "missing entry"),
            ChainFault::BrokenLink => {
                write!(f, "previous-hash link does not match the entry before it")
            }
            ChainFault::TimeBackwards {
                time_ms,
                previous_ms,
            } => write!(
                f,
                "time {time_ms} is before the previous entry's {previous_ms}"
            ),
            ChainFault::CheckpointBeyondLog { covers, len } => write!(
                f,
                "last checkpoint covers {covers} entries, the log has {len}"
            ),
            ChainFault::CheckpointMismatch => {
                write!(f, "the audit log does not match its last checkpoint")
            }
        }
    }
}

/// Hash that the next entry's `prev` must carry.
pub fn chain_hash(entry_bytes: &[u8]) -> Digest32 {
    Digest32::of(&[entry_bytes])
}

/// Replays an audit log: checks order and chain links and builds the Merkle tree.
/// The broker uses it to append, auditors to verify.
#[derive(Debug, Clone, Default)]
pub struct Chain {
    prev: Digest32,
    last_time_ms: u64,
    tree: MerkleTree,
}

impl Chain {
    /// An empty log.
    pub fn new() -> Self {
        Self::default()
    }

    /// Entries so far (= the next index).
    pub fn len(&self) -> u64 {
        self.tree.len()
    }

    /// No entries yet?
    pub fn is_empty(&self) -> bool {
        self.tree.is_empty()
    }

    /// The hash the next entry must name as `prev`.
    pub fn head(&self) -> Digest32 {
        self.prev
    }

    /// The Merkle tree of all entries so far.
    pub fn tree(&self) -> &MerkleTree {
        &self.tree
    }

    /// Build, encode and append the next entry.
    ///
    /// # Errors
    /// Only on an encoder bug.
    pub fn append(&mut self, time_ms: u64, event: Event) -> Result<(Entry, Vec<u8>)> {
        // entry times never go backwards, even if the broker's clock does
        let time_ms = time_ms.max(self.last_time_ms);
        let entry = Entry {
            index: self.len(),
            prev: self.prev,
            time_ms,
            event,
        };
        let bytes = entry.encode()?;
        self.accept(&bytes, time_ms);
        Ok((entry, bytes))
    }

    /// Check and append stored entry bytes.
    ///
    /// # Errors
    /// `AuditChain` naming the index and the [`ChainFault`] if the bytes do not decode,
    /// the index is not the next one, `prev` does not match or time goes backwards.
    pub fn push(&mut self, bytes: &[u8]) -> Result<Entry> {
        let index = self.len();
        let bad = |fault| Error::AuditChain { index, fault };
        let entry =
            Entry::decode(bytes).map_err(|e| bad(ChainFault::Undecodable(e.to_string())))?;
        if entry.index != index {
            return Err(bad(ChainFault::WrongIndex { says: entry.index }));
        }
        if entry.prev != self.prev {
            return Err(bad(ChainFault::BrokenLink));
        }
        if entry.time_ms < self.last_time_ms {
            return Err(bad(ChainFault::TimeBackwards {
                time_ms: entry.time_ms,
                previous_ms: self.last_time_ms,
            }));
        }
        self.accept(bytes, entry.time_ms);
        Ok(entry)
    }

    fn accept(&mut self, bytes: &[u8], time_ms: u64) {
        self.last_time_ms = time_ms;
        self.prev = chain_hash(bytes);
        self.tree.push(leaf_hash(bytes));
    }
}
