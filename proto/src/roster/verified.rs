//! The verified roster: only [`super::SignedRoster::verify`] makes one. Lookups by name
//! and key, the signing keys decompressed once, the read rule's recipients.

use std::collections::{BTreeMap, HashMap};

use super::{NodeEntry, Role, RosterBody, SignedRoster};
use crate::access::may_read;
use crate::error::{Error, Result};
use crate::ids::{Digest32, NodeId};
use crate::keys::{SignPublic, Signature};
use crate::labels::Labels;

/// A verified roster with lookups. Only [`SignedRoster::verify`] makes one.
#[derive(Debug, Clone)]
pub struct Roster {
    pub(super) body: RosterBody,
    pub(super) signed: SignedRoster,
    hash: Digest32,
    by_id: BTreeMap<NodeId, usize>,
    by_key: HashMap<SignPublic, usize>,
    /// Each node's signing key decompressed once (a curve point decompression costs a
    /// third of a signature verification), in `body.nodes` order.
    verifying: Vec<Option<ed25519_dalek::VerifyingKey>>,
}

impl Roster {
    pub(super) fn index(body: RosterBody, signed: SignedRoster, hash: Digest32) -> Self {
        let by_id = body
            .nodes
            .iter()
            .enumerate()
            .map(|(i, n)| (n.id.clone(), i))
            .collect();
        let by_key = body
            .nodes
            .iter()
            .enumerate()
            .map(|(i, n)| (n.sign, i))
            .collect();
        let verifying = body.nodes.iter().map(|n| n.sign.dalek().ok()).collect();
        Self {
            body,
            signed,
            hash,
            by_id,
            by_key,
            verifying,
        }
    }

    /// Node `id`'s signing key, ready to verify with.
    ///
    /// # Errors
    /// `UnknownNode`, or `BadSignature` if its key is not a curve point.
    pub fn verifying_key(
        &self,
        id: &NodeId,
        what: &'static str,
    ) -> Result<&ed25519_dalek::VerifyingKey> {
        let i = *self
            .by_id
            .get(id)
            .ok_or_else(|| Error::UnknownNode(id.clone()))?;
        self.verifying
            .get(i)
            .and_then(Option::as_ref)
            .ok_or(Error::BadSignature { what })
    }

    /// Verify `signature` over `msg` by node `id` (strictly, as [`SignPublic::verify`]).
    ///
    /// # Errors
    /// `UnknownNode` or `BadSignature`.
    pub fn verify_signature(
        &self,
        id: &NodeId,
        what: &'static str,
        msg: &[u8],
        signature: &Signature,
    ) -> Result<()> {
        let sig = ed25519_dalek::Signature::from_bytes(&signature.0);
        self.verifying_key(id, what)?
            .verify_strict(msg, &sig)
            .map_err(|_| Error::BadSignature { what })
    }

    /// The version number.
    pub fn version(&self) -> u64 {
        self.body.version
    }

    /// The verified body.
    pub fn body(&self) -> &RosterBody {
        &self.body
    }

    /// The signed form, to pass on to others.
    pub fn signed(&self) -> &SignedRoster {
        &self.signed
    }

    /// Hash of the signed form.
    pub fn hash(&self) -> Digest32 {
        self.hash
    }

    /// Fingerprint of the council (threshold and keys), for people to compare out of band.
    pub fn council_id(&self) -> Digest32 {
        let mut parts: Vec<&[u8]> = vec![
            b"ewx/v1/council",
            std::slice::from_ref(&self.body.threshold),
        ];
        parts.extend(self.body.council.iter().map(|m| &m.key.0[..]));
        Digest32::of(&parts)
    }

    /// A node by name, revoked or not.
    pub fn node(&self, id: &NodeId) -> Option<&NodeEntry> {
        self.by_id.get(id).map(|&i| &self.body.nodes[i])
    }

    /// A node by name that is not revoked.
    ///
    /// # Errors
    /// `UnknownNode` or `Revoked`.
    pub fn active(&self, id: &NodeId) -> Result<&NodeEntry> {
        let n = self
            .node(id)
            .ok_or_else(|| Error::UnknownNode(id.clone()))?;
        if n.revoked {
            return Err(Error::Revoked(id.clone()));
        }
        Ok(n)
    }

    /// The identity key of the roster's active broker: what clients pin and what signs
    /// checkpoints.
    ///
    /// # Errors
    /// `InvalidRoster` if the roster names no active broker.
    pub fn broker_key(&self) -> Result<SignPublic> {
        self.body
            .nodes
            .iter()
            .find(|n| n.role == Role::Broker && !n.revoked)
            .map(|n| n.sign)
            .ok_or_else(|| Error::InvalidRoster("the roster names no active broker node".into()))
    }

    /// The identity keys of every active broker node: in a cluster each replica has its
    /// own, and a client accepts any of them.
    pub fn broker_keys(&self) -> Vec<SignPublic> {
        self.body
            .nodes
            .iter()
            .filter(|n| n.role == Role::Broker && !n.revoked)
            .map(|n| n.sign)
            .collect()
    }

    /// The node owning an identity key (how the broker names a TLS peer).
    pub fn node_by_key(&self, key: &SignPublic) -> Option<&NodeEntry> {
        self.by_key.get(key).map(|&i| &self.body.nodes[i])
    }

    /// Every node that must get the content key for `labels`: active, a liaison or
    /// partner, and allowed by the read rule.
    pub fn recipients<'a>(
        &'a self,
        labels: &'a Labels,
    ) -> impl Iterator<Item = &'a NodeEntry> + 'a {
        self.body.nodes.iter().filter(move |n| {
            !n.revoked && n.role.receives_content() && may_read(&n.id, &n.grants, labels)
        })
    }

    /// Is the roster within its validity period at `now_ms`?
    ///
    /// # Errors
    /// `Time` if it expired.
    pub fn check_valid_at(&self, now_ms: u64) -> Result<()> {
        match self.body.valid_until_ms {
            Some(until) if now_ms > until => Err(Error::Time(format!(
                "roster version {} expired at {until} ms",
                self.body.version
            ))),
            _ => Ok(()),
        }
    }
}
