//! The roster: the signed directory of who is in the exchange, with which keys, role and
//! grants. It is valid only with signatures from `threshold` of its council keys (k-of-n),
//! so no single operator can add a reader or swap a key; an update must also meet the
//! threshold of the council already trusted, and may never lower the version.

use std::collections::BTreeSet;
use std::fmt;

use ed25519_dalek::{Signer, SigningKey};
use serde::{Deserialize, Serialize};

use crate::access::Grants;
use crate::cbor;
use crate::error::{Error, Result};
use crate::ids::{Digest32, NodeId};
use crate::keys::{KemPublic, SignPublic, Signature};

mod verified;

pub use verified::Roster;

/// Largest encoded roster accepted (a few thousand nodes).
pub const MAX_ROSTER_BYTES: usize = 4 << 20;
const DOMAIN: &[u8] = b"ewx/v1/roster";

/// What a node does in the exchange.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// A national liaison node: publishes assessments and warnings.
    Liaison,
    /// A partner that receives what its grants allow (and may publish within them).
    Partner,
    /// Verifies the audit log; receives no content keys unless its grants say so.
    Auditor,
    /// The broker: routes sealed envelopes and never receives a content key.
    Broker,
    /// A ceasefire monitor: files breach reports and receives what its grants allow.
    Monitor,
}

impl Role {
    /// May nodes of this role publish? (Brokers and auditors never do.)
    pub fn publishes(self) -> bool {
        matches!(self, Role::Liaison | Role::Partner | Role::Monitor)
    }

    /// Do nodes of this role get content keys? Brokers route and auditors verify sealed
    /// envelopes; neither needs to read them.
    pub fn receives_content(self) -> bool {
        matches!(self, Role::Liaison | Role::Partner | Role::Monitor)
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Role::Liaison => "liaison",
            Role::Partner => "partner",
            Role::Auditor => "auditor",
            Role::Broker => "broker",
            Role::Monitor => "monitor",
        })
    }
}

/// One node in the roster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeEntry {
    /// Its name.
    pub id: NodeId,
    /// What it does.
    pub role: Role,
    /// Identity key: signs envelopes, receipts, checkpoints; authenticates TLS.
    pub sign: SignPublic,
    /// Receives wrapped content keys.
    pub kem: KemPublic,
    /// What it may read, publish and subscribe to.
    pub grants: Grants,
    /// Revoked nodes are refused at connect and never chosen as recipients.
    pub revoked: bool,
}

/// One council member (a key that co-signs rosters).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CouncilMember {
    /// Who holds it, for people.
    pub name: String,
    /// The ed25519 key.
    pub key: SignPublic,
}

/// The signed content of a roster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RosterBody {
    /// Format version, 1.
    pub v: u8,
    /// Name of the exchange, so rosters of two networks cannot be swapped.
    pub network: String,
    /// Strictly increasing with every change.
    pub version: u64,
    /// When it was issued (ms since the Unix epoch).
    pub issued_ms: u64,
    /// Not valid after this time, if set.
    pub valid_until_ms: Option<u64>,
    /// Signatures needed from `council`.
    pub threshold: u8,
    /// The keys allowed to sign the next roster.
    pub council: Vec<CouncilMember>,
    /// Every node.
    pub nodes: Vec<NodeEntry>,
    /// Who may attest the event that fires a snapback, and how many must.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attesters: Option<Panel>,
    /// The Special Commission: who may open attribution cases and sign findings, and how
    /// many signatures adopt one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commission: Option<Panel>,
}

/// A k-of-n panel of nodes (the snapback attesters, the Special Commission): a statement counts when `threshold`
/// distinct members, with distinct keys, have signed it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Panel {
    /// The members (roster nodes that publish).
    pub members: Vec<NodeId>,
    /// Signatures needed, 1 to the number of members.
    pub threshold: u8,
}

/// One council member's signature over the body bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CouncilSignature {
    /// The signing key (must be on a council).
    pub key: SignPublic,
    /// ed25519 over `"ewx/v1/roster" || len || body`.
    pub signature: Signature,
}

/// The roster as distributed: body bytes exactly as signed, plus signatures.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignedRoster {
    /// CBOR of [`RosterBody`], signed as these exact bytes.
    #[serde(with = "serde_bytes")]
    pub body: Vec<u8>,
    /// Council signatures, in any order.
    pub signatures: Vec<CouncilSignature>,
}

/// Does X25519 with this key give the all-zero output for any secret (a low-order point)?
fn is_low_order(key: &KemPublic) -> bool {
    let probe = x25519_dalek::StaticSecret::from([0x5a; 32]);
    !probe
        .diffie_hellman(&x25519_dalek::PublicKey::from(key.0))
        .was_contributory()
}

fn signed_message(body: &[u8]) -> Vec<u8> {
    cbor::signed_bytes(DOMAIN, body, &[])
}

impl RosterBody {
    /// Check internal consistency.
    ///
    /// # Errors
    /// `InvalidRoster` naming the first problem.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::InvalidRoster(m));
        if self.v != 1 {
            return Err(Error::UnsupportedVersion {
                what: "roster",
                version: self.v.into(),
            });
        }
        if self.council.is_empty() {
            return bad("the council is empty".into());
        }
        if self.threshold == 0 || usize::from(self.threshold) > self.council.len() {
            return bad(format!(
                "threshold {} must be between 1 and the council size {}",
                self.threshold,
                self.council.len()
            ));
        }
        let mut keys = BTreeSet::new();
        if let Some(m) = self.council.iter().find(|m| !keys.insert(m.key)) {
            return bad(format!("council key of {:?} appears twice", m.name));
        }
        let (mut ids, mut signs, mut kems) = (BTreeSet::new(), BTreeSet::new(), BTreeSet::new());
        for n in &self.nodes {
            if !ids.insert(&n.id) {
                return bad(format!("node {} appears twice", n.id));
            }
            if !signs.insert(n.sign) || !kems.insert(n.kem) {
                return bad(format!("node {} shares a key with another node", n.id));
            }
            n.sign
                .dalek()
                .map_err(|e| Error::InvalidRoster(format!("node {}: {e}", n.id)))?;
            if is_low_order(&n.kem) {
                return bad(format!("node {} has a low-order x25519 key", n.id));
            }
        }
        if let Some(p) = &self.attesters {
            self.validate_panel("attesters", p, &ids)?;
        }
        if let Some(p) = &self.commission {
            self.validate_panel("commission", p, &ids)?;
        }
        Ok(())
    }
}

impl RosterBody {
    fn validate_panel(&self, what: &str, panel: &Panel, ids: &BTreeSet<&NodeId>) -> Result<()> {
        let bad = |m: String| Err(Error::InvalidRoster(m));
        if panel.threshold == 0 || usize::from(panel.threshold) > panel.members.len() {
            return bad(format!(
                "{what}: threshold {} must be between 1 and the {} members",
                panel.threshold,
                panel.members.len()
            ));
        }
        let mut seen = BTreeSet::new();
        for m in &panel.members {
            if !seen.insert(m) {
                return bad(format!("{what}: {m} is named twice"));
            }
            let publishes =
                ids.contains(m) && self.nodes.iter().any(|n| &n.id == m && n.role.publishes());
            if !publishes {
                return bad(format!("{what}: {m} is not a node that publishes"));
            }
        }
        Ok(())
    }
}

impl SignedRoster {
    /// Encode and validate a body, with no signatures yet.
    ///
    /// # Errors
    /// `InvalidRoster` if the body is inconsistent.
    pub fn new(body: &RosterBody) -> Result<Self> {
        body.validate()?;
        Ok(Self {
            body: cbor::encode("roster", body)?,
            signatures: Vec::new(),
        })
    }

    /// Add (or replace) one council member's signature.
    pub fn sign(&mut self, key: &SigningKey) {
        let public = SignPublic(key.verifying_key().to_bytes());
        let signature = Signature(key.sign(&signed_message(&self.body)).to_bytes());
        self.signatures.retain(|s| s.key != public);
        self.signatures.push(CouncilSignature {
            key: public,
            signature,
        });
    }

    /// The wire encoding.
    ///
    /// # Errors
    /// Only on an encoder bug.
    pub fn encode(&self) -> Result<Vec<u8>> {
        cbor::encode("roster", self)
    }

    /// Decode the wire encoding (signatures are not checked here).
    ///
    /// # Errors
    /// `TooLarge`, `Malformed`, `TrailingBytes`.
    pub fn decode(bytes: &[u8]) -> Result<Self> {
        cbor::decode("roster", bytes, MAX_ROSTER_BYTES)
    }

    /// Decode the body without checking signatures (for display of unsigned drafts).
    ///
    /// # Errors
    /// `Malformed` if the body does not decode.
    pub fn body(&self) -> Result<RosterBody> {
        cbor::decode_canonical("roster body", &self.body, MAX_ROSTER_BYTES)
    }

    /// SHA-256 of the wire encoding with signatures — what `RosterChanged` records.
    ///
    /// # Errors
    /// Only on an encoder bug.
    pub fn hash(&self) -> Result<Digest32> {
        Ok(Digest32::of(&[&self.encode()?]))
    }

    /// Verify a roster from a **trusted source** — the operator's own file — with trust
    /// anchored in the council it names. Anyone can make a roster that passes this with a
    /// council of their own: a roster received over the network must instead go through
    /// [`SignedRoster::verify_update`] against one already trusted. Compare
    /// [`Roster::council_id`] out of band when installing a roster file.
    ///
    /// # Errors
    /// See [`SignedRoster::verify_update`].
    pub fn verify(&self) -> Result<Roster> {
        self.verify_against(None)
    }

    /// Verify a roster offered as a replacement for `trusted`: version not lower, threshold
    /// met by the trusted council *and* by its own council.
    ///
    /// # Errors
    /// `RosterRollback`, `UnknownSigner`, `DuplicateSigner`, `BadSignature`,
    /// `ThresholdNotMet`, `InvalidRoster`, `Malformed`.
    pub fn verify_update(&self, trusted: &Roster) -> Result<Roster> {
        self.verify_against(Some(trusted))
    }

    fn verify_against(&self, trusted: Option<&Roster>) -> Result<Roster> {
        let body = self.body()?;
        body.validate()?;
        let hash = self.hash()?;
        if let Some(t) = trusted {
            if body.version < t.body.version {
                return Err(Error::RosterRollback {
                    have: t.body.version,
                    got: body.version,
                });
            }
            if body.version == t.body.version
                && Digest32::of(&[&self.body]) != Digest32::of(&[&t.signed.body])
            {
                return Err(Error::InvalidRoster(format!(
                    "version {} differs from the trusted roster of the same version",
                    body.version
                )));
            }
            if body.network != t.body.network {
                return Err(Error::InvalidRoster(format!(
                    "roster is for network {:?}, expected {:?}",
                    body.network, t.body.network
                )));
            }
        }
        let msg = signed_message(&self.body);
        let mut seen = BTreeSet::new();
        for s in &self.signatures {
            let known = body.council.iter().any(|m| m.key == s.key)
                || trusted.is_some_and(|t| t.body.council.iter().any(|m| m.key == s.key));
            if !known {
                return Err(Error::UnknownSigner {
                    key_id: s.key.key_id().to_string(),
                });
            }
            if !seen.insert(s.key) {
                return Err(Error::DuplicateSigner {
                    key_id: s.key.key_id().to_string(),
                });
            }
            s.key.verify("roster", &msg, &s.signature)?;
        }
        let count =
            |council: &[CouncilMember]| council.iter().filter(|m| seen.contains(&m.key)).count();
        let mut councils = vec![(&body.council, body.threshold)];
        if let Some(t) = trusted {
            councils.push((&t.body.council, t.body.threshold));
        }
        for (council, threshold) in councils {
            let have = count(council);
            if have < usize::from(threshold) {
                return Err(Error::ThresholdNotMet {
                    have,
                    need: threshold.into(),
                });
            }
        }
        Ok(Roster::index(body, self.clone(), hash))
    }
}
