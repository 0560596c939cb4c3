//! Audit entries: every event the broker decides on, hash-chained (each entry names the
//! previous entry's hash) and used as the leaves of the Merkle tree. [`Chain`] replays a
//! log entry by entry and reports the first index that does not fit.

use serde::{Deserialize, Serialize};

use crate::cbor;
use crate::error::{Error, Result};
use crate::ids::{Digest32, MessageId, NodeId};
use crate::labels::Labels;
use crate::merkle::{MerkleTree, leaf_hash};
use crate::payload::{Kind, Precedence};
use crate::receipt::Receipt;
use crate::topic::{Topic, TopicPattern};

/// Largest encoded entry (a `Receipt` or `Published` is a few hundred bytes).
pub const MAX_ENTRY_BYTES: usize = 64 << 10;

/// What happened.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Event {
    /// An envelope was accepted and stored at `log_index`.
    Published {
        /// Message id.
        id: MessageId,
        /// Signer.
        sender: NodeId,
        /// Sender sequence number.
        seq: u64,
        /// Topic.
        topic: Topic,
        /// Kind.
        kind: Kind,
        /// Precedence.
        precedence: Precedence,
        /// Labels.
        labels: Labels,
        /// Where the envelope is in the message log.
        log_index: u64,
        /// SHA-256 of the envelope bytes.
        envelope_hash: Digest32,
    },
    /// A subscriber acknowledged every delivery up to `through_index` (one entry per ack
    /// batch, not per message).
    Delivered {
        /// The subscriber.
        to: NodeId,
        /// Its subscription name.
        subscription: String,
        /// The precedence lane acknowledged.
        precedence: Precedence,
        /// Highest message-log index acknowledged in that lane.
        through_index: u64,
    },
    /// A recipient's signed receipt.
    Receipt(Receipt),
    /// Something was refused; repeated rejections on one connection are folded into one
    /// entry with `count` over `window_ms`.
    Rejected {
        /// The authenticated node, if the connection got that far.
        from: Option<NodeId>,
        /// Why.
        reason: String,
        /// Hash of the offending envelope, if it decoded.
        envelope_hash: Option<Digest32>,
        /// How many rejections this entry stands for.
        count: u32,
        /// Over how many ms.
        window_ms: u64,
    },
    /// A subscription was accepted.
    Subscribed {
        /// The subscriber.
        node: NodeId,
        /// Its subscription name.
        subscription: String,
        /// The pattern.
        pattern: TopicPattern,
    },
    /// A subscription was refused.
    Denied {
        /// The node.
        node: NodeId,
        /// The pattern asked for.
        pattern: String,
        /// Why.
        reason: String,
    },
    /// A new roster came into force.
    RosterChanged {
        /// Its version.
        version: u64,
        /// Hash of the signed roster.
        hash: Digest32,
    },
}

/// One audit log entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Entry {
    /// Position in the audit log, from 0.
    pub index: u64,
    /// Hash of the previous entry's bytes (zero for entry 0).
    pub prev: Digest32,
    /// Broker time (ms since the Unix epoch).
    pub time_ms: u64,
    /// What happened.
    pub event: Event,
}

impl Entry {
    /// Encode as stored.
    ///
    /// # Errors
    /// Only on an encoder bug.
    pub fn encode(&self) -> Result<Vec<u8>> {
        cbor::encode("audit entry", self)
    }

    /// Decode stored bytes.
    ///
    /// # Errors
    /// `TooLarge`, `Malformed`, `TrailingBytes`.
    pub fn decode(bytes: &[u8]) -> Result<Self> {
        cbor::decode("audit entry", bytes, MAX_ENTRY_BYTES)
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
    /// `AuditChain` naming the index if the bytes do not decode, the index is not the
    /// next one, or `prev` does not match.
    pub fn push(&mut self, bytes: &[u8]) -> Result<Entry> {
        let index = self.len();
        let bad = |reason: String| Error::AuditChain { index, reason };
        let entry = Entry::decode(bytes).map_err(|e| bad(e.to_string()))?;
        if entry.index != index {
            return Err(bad(format!(
                "entry says index {}, expected {index}",
                entry.index
            )));
        }
        if entry.prev != self.prev {
            return Err(bad(
                "previous-hash link does not match the entry before it".into()
            ));
        }
        if entry.time_ms < self.last_time_ms {
            return Err(bad(format!(
                "time {} is before the previous entry's {}",
                entry.time_ms, self.last_time_ms
            )));
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
