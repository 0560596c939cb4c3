//! Audit entries: every event the broker decides on, as stored (hash-chained through
//! `prev`, and the leaves of the Merkle tree).

use serde::{Deserialize, Serialize};

use crate::case::{CaseTag, Stage};
use crate::cbor;
use crate::error::Result;
use crate::ids::{Digest32, MessageId, NodeId};
use crate::labels::Labels;
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
        /// The header's case tag, if it belongs to a case (so the case fold survives
        /// the envelope's retention).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        case: Option<CaseTag>,
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
    /// A case deadline passed; `missing` had not answered by it (late answers count as
    /// missing). Auditors recompute it from the case fold.
    CaseDeadline {
        /// The case (its opening message's id).
        case: MessageId,
        /// The stage that was due.
        stage: Stage,
        /// When it was due (broker log time).
        due_ms: u64,
        /// The parties that had not answered.
        missing: Vec<NodeId>,
    },
    /// A new roster came into force.
    RosterChanged {
        /// Its version.
        version: u64,
        /// Hash of the signed roster.
        hash: Digest32,
    },
}

impl Event {
    /// The `Published` entry of an envelope stored at `log_index`: what the audit log
    /// keeps of it (its header's public facts and its hash), so the record survives the
    /// envelope's retention.
    pub fn published(envelope: &crate::Envelope, log_index: u64) -> Self {
        let h = envelope.header();
        Event::Published {
            id: h.id,
            sender: h.sender.clone(),
            seq: h.seq,
            topic: h.topic.clone(),
            kind: h.kind,
            precedence: h.precedence,
            labels: h.labels.clone(),
            log_index,
            envelope_hash: envelope.hash(),
            case: h.case.clone(),
        }
    }
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
