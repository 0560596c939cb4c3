//! Receipts: a recipient's signature over `(message id, envelope hash, time)`. Logged by
//! the broker and forwarded to the sender, a receipt is non-repudiable proof that a
//! warning reached a partner — the broker cannot forge one.

use serde::{Deserialize, Serialize};

use crate::cbor::len_prefix;
use crate::error::Result;
use crate::ids::{Digest32, MessageId, NodeId};
use crate::keys::{NodeKeys, Signature};
use crate::roster::Roster;

const DOMAIN: &[u8] = b"ewx/v1/receipt";

/// A signed acknowledgement of one message by one recipient.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Receipt {
    /// The message.
    pub id: MessageId,
    /// SHA-256 of the envelope as received.
    pub envelope_hash: Digest32,
    /// Who received it.
    pub by: NodeId,
    /// When (recipient's clock, ms since the Unix epoch).
    pub time_ms: u64,
    /// `by`'s ed25519 signature.
    pub signature: Signature,
}

fn message(id: &MessageId, hash: &Digest32, by: &NodeId, time_ms: u64) -> Vec<u8> {
    let by = by.as_str().as_bytes();
    let mut m = Vec::with_capacity(DOMAIN.len() + 16 + 32 + 8 + by.len() + 8);
    m.extend_from_slice(DOMAIN);
    m.extend_from_slice(&id.0);
    m.extend_from_slice(&hash.0);
    m.extend_from_slice(&len_prefix(by.len()));
    m.extend_from_slice(by);
    m.extend_from_slice(&time_ms.to_be_bytes());
    m
}

impl Receipt {
    /// Sign a receipt for the envelope `(id, envelope_hash)` at `time_ms`.
    pub fn sign(keys: &NodeKeys, id: MessageId, envelope_hash: Digest32, time_ms: u64) -> Self {
        let signature = keys.sign(&message(&id, &envelope_hash, &keys.node, time_ms));
        Self {
            id,
            envelope_hash,
            by: keys.node.clone(),
            time_ms,
            signature,
        }
    }

    /// Check the signature against `by`'s key in the roster (revoked keys still verify
    /// receipts they signed earlier: revocation does not rewrite history).
    ///
    /// # Errors
    /// `UnknownNode`, `BadSignature`.
    pub fn verify(&self, roster: &Roster) -> Result<()> {
        roster.verify_signature(
            &self.by,
            "receipt",
            &message(&self.id, &self.envelope_hash, &self.by, self.time_ms),
            &self.signature,
        )
    }
}
