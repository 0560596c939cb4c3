//! Checkpoints: the broker's signed statement "the audit log had `size` entries with this
//! Merkle root at this time", chained to the previous checkpoint. Partners co-sign as
//! witnesses after checking consistency with the last checkpoint they saw, so a broker
//! cannot show two partners two different histories. In a cluster every replica also
//! signs each checkpoint on its own (the same size and root, computed independently), so
//! no single replica can vouch for a fork: a checkpoint counts once two replicas signed.

use serde::{Deserialize, Serialize};

use crate::cbor;
use crate::error::{Error, Result};
use crate::ids::{Digest32, NodeId};
use crate::keys::{NodeKeys, SignPublic, Signature};
use crate::roster::Roster;

const DOMAIN: &[u8] = b"ewx/v1/checkpoint";
const COSIGN_DOMAIN: &[u8] = b"ewx/v1/cosign";
const REPLICA_DOMAIN: &[u8] = b"ewx/v1/replica-sign";
/// Largest encoded checkpoint accepted.
pub const MAX_CHECKPOINT_BYTES: usize = 64 << 10;

/// What a checkpoint states.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Checkpoint {
    /// Number of audit entries covered.
    pub size: u64,
    /// Merkle root of those entries.
    pub root: Digest32,
    /// Hash of the previous checkpoint's body bytes (zero for the first).
    pub prev: Digest32,
    /// When it was made (broker clock, ms since the Unix epoch).
    pub time_ms: u64,
}

/// A witness's co-signature.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Cosignature {
    /// The witness node.
    pub witness: NodeId,
    /// Its signature over the checkpoint body.
    pub signature: Signature,
}

/// A checkpoint as stored and served: body bytes as signed, the broker's signature,
/// and any witness co-signatures.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignedCheckpoint {
    /// CBOR of [`Checkpoint`].
    #[serde(with = "serde_bytes")]
    pub body: Vec<u8>,
    /// The broker's signature.
    pub signature: Signature,
    /// Witness co-signatures.
    pub cosignatures: Vec<Cosignature>,
    /// Signatures of a cluster's replicas over the same body (none for a single broker).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub replicas: Vec<Cosignature>,
}

fn message(domain: &[u8], body: &[u8]) -> Vec<u8> {
    cbor::signed_bytes(domain, body, &[])
}

impl SignedCheckpoint {
    /// Sign a checkpoint with the broker's key.
    ///
    /// # Errors
    /// Only on an encoder bug.
    pub fn sign(checkpoint: &Checkpoint, broker: &NodeKeys) -> Result<Self> {
        let body = cbor::encode("checkpoint", checkpoint)?;
        let signature = broker.sign(&message(DOMAIN, &body));
        Ok(Self {
            body,
            signature,
            cosignatures: Vec::new(),
            replicas: Vec::new(),
        })
    }

    /// Decode the body.
    ///
    /// # Errors
    /// `Malformed`/`TrailingBytes`.
    pub fn checkpoint(&self) -> Result<Checkpoint> {
        cbor::decode_canonical("checkpoint", &self.body, MAX_CHECKPOINT_BYTES)
    }

    /// Hash of the body: what the next checkpoint's `prev` must be.
    pub fn body_hash(&self) -> Digest32 {
        Digest32::of(&[&self.body])
    }

    /// Verify the broker's signature and decode.
    ///
    /// # Errors
    /// `BadSignature`, `Malformed`.
    pub fn verify(&self, broker: &SignPublic) -> Result<Checkpoint> {
        broker.verify("checkpoint", &message(DOMAIN, &self.body), &self.signature)?;
        self.checkpoint()
    }

    /// A witness's co-signature over this checkpoint (the caller checks consistency first).
    pub fn cosign(&self, witness: &NodeKeys) -> Cosignature {
        Cosignature {
            witness: witness.node.clone(),
            signature: witness.sign(&message(COSIGN_DOMAIN, &self.body)),
        }
    }

    /// A replica's own signature over this checkpoint (it checks the body is the one it
    /// computed first).
    pub fn replica_sign(&self, replica: &NodeKeys) -> Cosignature {
        Cosignature {
            witness: replica.node.clone(),
            signature: replica.sign(&message(REPLICA_DOMAIN, &self.body)),
        }
    }

    /// Verify one replica signature against the roster: an active broker node's.
    ///
    /// # Errors
    /// `UnknownNode`, `Revoked`, `NotPermitted` for a node that is not a broker,
    /// `BadSignature`.
    pub fn verify_replica(&self, c: &Cosignature, roster: &Roster) -> Result<()> {
        let node = roster.active(&c.witness)?;
        if node.role != crate::roster::Role::Broker {
            return Err(Error::NotPermitted(format!(
                "{} is not a broker and cannot sign as a replica",
                c.witness
            )));
        }
        node.sign.verify(
            "checkpoint replica signature",
            &message(REPLICA_DOMAIN, &self.body),
            &c.signature,
        )
    }

    /// Verify every replica signature; return the distinct replicas that signed.
    ///
    /// # Errors
    /// As [`SignedCheckpoint::verify_replica`], and `Malformed` for a replica named twice.
    pub fn verify_replicas(&self, roster: &Roster) -> Result<Vec<NodeId>> {
        let mut signed: Vec<NodeId> = Vec::new();
        for c in &self.replicas {
            if signed.contains(&c.witness) {
                return Err(Error::Malformed {
                    what: "checkpoint",
                    reason: format!("replica {} signed twice", c.witness),
                });
            }
            self.verify_replica(c, roster)?;
            signed.push(c.witness.clone());
        }
        Ok(signed)
    }

    /// Verify every co-signature against the roster; return the distinct witnesses.
    ///
    /// # Errors
    /// `UnknownNode`, `Revoked`, `NotPermitted` for a broker, `BadSignature`, `Malformed`
    /// for a witness named twice.
    pub fn verify_cosignatures(&self, roster: &Roster) -> Result<Vec<NodeId>> {
        let msg = message(COSIGN_DOMAIN, &self.body);
        let mut witnesses: Vec<NodeId> = Vec::new();
        for c in &self.cosignatures {
            if witnesses.contains(&c.witness) {
                return Err(Error::Malformed {
                    what: "checkpoint",
                    reason: format!("witness {} co-signed twice", c.witness),
                });
            }
            let node = roster.active(&c.witness)?;
            if node.role == crate::roster::Role::Broker {
                return Err(Error::NotPermitted(format!(
                    "{} is a broker and cannot witness",
                    c.witness
                )));
            }
            node.sign
                .verify("checkpoint cosignature", &msg, &c.signature)?;
            witnesses.push(c.witness.clone());
        }
        Ok(witnesses)
    }

    /// Encode for the wire or storage.
    ///
    /// # Errors
    /// Only on an encoder bug.
    pub fn encode(&self) -> Result<Vec<u8>> {
        cbor::encode("checkpoint", self)
    }

    /// Decode from the wire or storage.
    ///
    /// # Errors
    /// `TooLarge`, `Malformed`, `TrailingBytes`.
    pub fn decode(bytes: &[u8]) -> Result<Self> {
        cbor::decode("checkpoint", bytes, MAX_CHECKPOINT_BYTES)
    }
}
