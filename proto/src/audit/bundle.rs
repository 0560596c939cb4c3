//! An audit bundle: everything needed to prove, offline and without the broker, that a
//! message was published by its sender and is in the broker's signed (and witnessed)
//! log — the envelope, its `Published` entry, an inclusion proof, a checkpoint and the
//! roster in force. Decoded through the crate's strict CBOR path like every other input.

use serde::{Deserialize, Serialize};

use crate::cbor;
use crate::checkpoint::SignedCheckpoint;
use crate::envelope::Envelope;
use crate::error::{Error, Result};
use crate::ids::{Digest32, MessageId, NodeId};
use crate::merkle::{leaf_hash, verify_inclusion};
use crate::roster::{Roster, SignedRoster};

use super::entry::{Entry, Event};

/// Largest bundle file accepted (an envelope of at most 1 MiB plus a few KiB).
pub const MAX_BUNDLE_BYTES: usize = 2 << 20;

/// The proof of one message.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Bundle {
    /// Format version, 1.
    pub v: u8,
    /// Audit index of the `Published` entry.
    pub index: u64,
    /// The `Published` entry as stored.
    #[serde(with = "serde_bytes")]
    pub entry: Vec<u8>,
    /// The envelope as published.
    #[serde(with = "serde_bytes")]
    pub envelope: Vec<u8>,
    /// A signed (preferably witnessed) checkpoint covering the entry.
    #[serde(with = "serde_bytes")]
    pub checkpoint: Vec<u8>,
    /// Inclusion proof of the entry in that checkpoint's tree.
    pub proof: Vec<Digest32>,
    /// The roster in force when it was published.
    #[serde(with = "serde_bytes")]
    pub roster: Vec<u8>,
}

/// What a verified bundle proves.
#[derive(Debug, Clone)]
pub struct BundleReport {
    /// Message id.
    pub id: MessageId,
    /// Who signed it.
    pub sender: NodeId,
    /// Where.
    pub topic: String,
    /// Audit index.
    pub index: u64,
    /// Size of the checkpoint proving inclusion.
    pub checkpoint_size: u64,
    /// Witnesses who co-signed that checkpoint.
    pub witnesses: Vec<NodeId>,
}

/// Of `checkpoints`, the one to prove entry `index` with: it must cover the entry; the
/// most witnessed wins, then the smallest. Returns its bytes and size.
pub fn pick_checkpoint(checkpoints: &[Vec<u8>], index: u64) -> Option<(Vec<u8>, u64)> {
    checkpoints
        .iter()
        .filter_map(|b| {
            let s = SignedCheckpoint::decode(b).ok()?;
            let size = s.checkpoint().ok()?.size;
            (size > index).then_some((s.cosignatures.len(), std::cmp::Reverse(size), b, size))
        })
        .max_by_key(|(w, size, ..)| (*w, *size))
        .map(|(_, _, b, size)| (b.clone(), size))
}

fn bad(what: &str, e: &dyn std::fmt::Display) -> Error {
    Error::Bundle(format!("{what}: {e}"))
}

impl Bundle {
    /// Encode for a file.
    ///
    /// # Errors
    /// Only on an encoder bug.
    pub fn encode(&self) -> Result<Vec<u8>> {
        cbor::encode("audit bundle", self)
    }

    /// Decode a bundle file.
    ///
    /// # Errors
    /// `TooLarge`, `Malformed`, `TrailingBytes`, or `UnsupportedVersion`.
    pub fn decode(bytes: &[u8]) -> Result<Self> {
        let b: Bundle = cbor::decode("audit bundle", bytes, MAX_BUNDLE_BYTES)?;
        if b.v != 1 {
            return Err(Error::UnsupportedVersion {
                what: "audit bundle",
                version: u64::from(b.v),
            });
        }
        Ok(b)
    }

    /// Verify offline: the roster is the trusted council's, the checkpoint is the broker's,
    /// the entry is in it, the envelope is the one the entry names and its sender signed
    /// it with the right to publish it.
    ///
    /// # Errors
    /// `Bundle` saying which check failed.
    pub fn verify(&self, anchor: &Roster) -> Result<BundleReport> {
        let roster = SignedRoster::decode(&self.roster)
            .and_then(|s| s.verify())
            .map_err(|e| bad("roster", &e))?;
        if roster.council_id() != anchor.council_id() {
            return Err(Error::Bundle(
                "its roster is not signed by the council you trust".into(),
            ));
        }
        let broker = roster.broker_key().map_err(|e| bad("roster", &e))?;
        let signed =
            SignedCheckpoint::decode(&self.checkpoint).map_err(|e| bad("checkpoint", &e))?;
        let cp = signed.verify(&broker).map_err(|e| bad("checkpoint", &e))?;
        verify_inclusion(
            &leaf_hash(&self.entry),
            self.index,
            cp.size,
            &self.proof,
            &cp.root,
        )
        .map_err(|e| bad("inclusion", &e))?;
        let entry = Entry::decode(&self.entry).map_err(|e| bad("entry", &e))?;
        let Event::Published {
            id,
            sender,
            topic,
            envelope_hash,
            ..
        } = entry.event
        else {
            return Err(Error::Bundle("the entry is not a publication".into()));
        };
        if entry.index != self.index {
            return Err(Error::Bundle("the entry's index does not match".into()));
        }
        let env = Envelope::decode(&self.envelope, usize::MAX).map_err(|e| bad("envelope", &e))?;
        if env.hash() != envelope_hash || env.header().id != id {
            return Err(Error::Bundle(
                "the envelope is not the one the entry names".into(),
            ));
        }
        env.verify(&roster).map_err(|e| bad("envelope", &e))?;
        let witnesses = signed
            .verify_cosignatures(&roster)
            .map_err(|e| bad("witness", &e))?;
        Ok(BundleReport {
            id,
            sender,
            topic: topic.to_string(),
            index: self.index,
            checkpoint_size: cp.size,
            witnesses,
        })
    }
}
