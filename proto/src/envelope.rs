//! The envelope: what is published, stored, delivered and audited. The header is signed
//! as the exact bytes sent (never re-encoded, as COSE_Sign1 does), and the signature also
//! covers the ciphertext, so nobody — the broker included — can alter either unnoticed.

use serde::{Deserialize, Serialize};
use sha2::Digest as _;

use crate::access::check_publish;

use crate::case::CaseTag;
use crate::cbor;
use crate::error::{Error, Result};
use crate::ids::{Digest32, MessageId, NodeId};
use crate::keys::{KemPublic, NodeKeys, Signature};
use crate::labels::Labels;
use crate::payload::{Kind, Precedence};
use crate::roster::{NodeEntry, Roster};
use crate::topic::Topic;

/// Header format version.
pub const HEADER_VERSION: u8 = 1;
/// Most recipients one envelope may list (an envelope naming more is refused unread).
pub const MAX_RECIPIENTS: usize = 1024;
/// Largest header accepted.
pub const MAX_HEADER_BYTES: usize = 128 << 10;
/// Default largest envelope (same as the default frame limit).
pub const DEFAULT_MAX_ENVELOPE: usize = 1 << 20;
const DOMAIN: &[u8] = b"ewx/v1/envelope";
const HASH_DOMAIN: &[u8] = b"ewx/v1/envelope-hash";

/// The content key wrapped for one recipient.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WrappedKey {
    /// Who can unwrap it.
    pub node: NodeId,
    /// ChaCha20-Poly1305 of the 32-byte content key (32 + 16 tag bytes).
    #[serde(with = "serde_bytes")]
    pub key: [u8; 48],
}

/// Everything about a message except its content; signed, in the clear for the broker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Header {
    /// Format version, [`HEADER_VERSION`].
    pub v: u8,
    /// Random, unique per message.
    pub id: MessageId,
    /// Who signed it.
    pub sender: NodeId,
    /// Strictly increasing per sender: the broker refuses anything not above the last.
    pub seq: u64,
    /// Where it is published.
    pub topic: Topic,
    /// What the payload is.
    pub kind: Kind,
    /// How urgently it must be delivered.
    pub precedence: Precedence,
    /// Who may read it.
    pub labels: Labels,
    /// When it was sealed (ms since the Unix epoch, sender's clock).
    pub created_ms: u64,
    /// After this time it is stale and should not be shown as current.
    pub expires_ms: Option<u64>,
    /// The sender asks each recipient for a signed receipt.
    pub receipt: bool,
    /// Roster version the recipients were chosen under.
    pub roster_version: u64,
    /// Ephemeral x25519 key of the sender's key epoch.
    pub eph_pk: KemPublic,
    /// Payload AEAD nonce.
    #[serde(with = "serde_bytes")]
    pub nonce: [u8; 12],
    /// Commitment to the content key, `SHA-256("ewx/v1/key-commit" ‖ id ‖ key)`:
    /// ChaCha20-Poly1305 does not commit to its key, so without this a sender could wrap
    /// different keys for different recipients and show each a different plaintext.
    pub key_commit: Digest32,
    /// The content key for each recipient.
    pub recipients: Vec<WrappedKey>,
    /// The case this message opens or answers, if any: all the broker learns of it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub case: Option<CaseTag>,
}

impl Header {
    /// Check the creation time against `now_ms` within `max_skew_ms` either way.
    ///
    /// # Errors
    /// `Time` if it is too far off.
    pub fn check_skew(&self, now_ms: u64, max_skew_ms: u64) -> Result<()> {
        if self.created_ms.abs_diff(now_ms) > max_skew_ms {
            return Err(Error::Time(format!(
                "created {} ms from the broker's clock, allowed {max_skew_ms} ms",
                self.created_ms as i128 - now_ms as i128
            )));
        }
        Ok(())
    }

    /// Check the broker's rule that every listed recipient is an active node that may
    /// receive content and may read these labels.
    ///
    /// # Errors
    /// `NotPermitted` naming the first recipient that fails.
    pub fn check_recipients(&self, roster: &Roster) -> Result<()> {
        for w in &self.recipients {
            let ok = roster.active(&w.node).is_ok_and(|n| {
                n.role.receives_content() && crate::access::may_read(&n.id, &n.grants, &self.labels)
            });
            if !ok {
                return Err(Error::NotPermitted(format!(
                    "recipient {} may not receive a message labelled {}",
                    w.node, self.labels
                )));
            }
        }
        Ok(())
    }

    /// The wrapped key for `node`, if any.
    pub fn wrapped_for(&self, node: &NodeId) -> Option<&WrappedKey> {
        self.recipients.iter().find(|w| &w.node == node)
    }

    fn validate(&self) -> Result<()> {
        if self.v != HEADER_VERSION {
            return Err(Error::UnsupportedVersion {
                what: "envelope header",
                version: self.v.into(),
            });
        }
        if self.recipients.len() > MAX_RECIPIENTS {
            return Err(Error::TooLarge {
                what: "recipient list",
                size: self.recipients.len() as u64,
                max: MAX_RECIPIENTS as u64,
            });
        }
        let mut seen = std::collections::BTreeSet::new();
        if let Some(dup) = self.recipients.iter().find(|w| !seen.insert(&w.node)) {
            return Err(Error::Malformed {
                what: "envelope header",
                reason: format!("recipient {} listed twice", dup.node),
            });
        }
        Ok(())
    }
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Wire {
    #[serde(with = "serde_bytes")]
    header: Vec<u8>,
    #[serde(with = "serde_bytes")]
    ciphertext: Vec<u8>,
    signature: Signature,
}

/// A signed, sealed message, decoded. Keeps the header bytes exactly as signed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    header_bytes: Vec<u8>,
    header: Header,
    ciphertext: Vec<u8>,
    signature: Signature,
    hash: Digest32,
}

/// The bytes an envelope signature covers.
fn signed_message(header: &[u8], ciphertext: &[u8]) -> Vec<u8> {
    cbor::signed_bytes(DOMAIN, header, ciphertext)
}

impl Envelope {
    /// Sign already-encoded header bytes and ciphertext. `seal` uses this; tests use it to
    /// build envelopes a real sender would sign but with chosen defects.
    ///
    /// # Errors
    /// `Malformed` if `header_bytes` is not a valid header.
    pub fn sign(header_bytes: Vec<u8>, ciphertext: Vec<u8>, keys: &NodeKeys) -> Result<Self> {
        // not canonical-checked: tests sign malformed headers a real sender could send
        let header: Header = cbor::decode("envelope header", &header_bytes, MAX_HEADER_BYTES)?;
        header.validate()?;
        let signature = keys.sign(&signed_message(&header_bytes, &ciphertext));
        Ok(Self {
            header_bytes,
            header,
            ciphertext,
            signature,
            hash: Digest32::default(),
        }
        .with_hash())
    }

    /// Decode wire bytes of at most `max` bytes. Signatures are not checked here.
    ///
    /// # Errors
    /// `TooLarge`, `Malformed`, `TrailingBytes`, `UnsupportedVersion`.
    pub fn decode(bytes: &[u8], max: usize) -> Result<Self> {
        let wire: Wire = cbor::decode("envelope", bytes, max)?;
        let header: Header =
            cbor::decode_canonical("envelope header", &wire.header, MAX_HEADER_BYTES)?;
        header.validate()?;
        Ok(Self {
            header_bytes: wire.header,
            header,
            ciphertext: wire.ciphertext,
            signature: wire.signature,
            hash: Digest32::default(),
        }
        .with_hash())
    }

    /// Only the header of an envelope this process stored itself after [`Envelope::decode`]
    /// checked it (a delivery lane reading its log to route): no canonical-form check,
    /// no validation, no hash — about a third of a full decode. Never for bytes from the
    /// network.
    ///
    /// # Errors
    /// `Malformed` if the bytes do not decode.
    pub fn stored_header(bytes: &[u8], max: usize) -> Result<Header> {
        let wire: Wire = cbor::decode("envelope", bytes, max)?;
        cbor::decode("envelope header", &wire.header, MAX_HEADER_BYTES)
    }

    /// Wire bytes.
    ///
    /// # Errors
    /// Only on an encoder bug.
    pub fn encode(&self) -> Result<Vec<u8>> {
        cbor::encode(
            "envelope",
            &Wire {
                header: self.header_bytes.clone(),
                ciphertext: self.ciphertext.clone(),
                signature: self.signature,
            },
        )
    }

    /// The decoded header.
    pub fn header(&self) -> &Header {
        &self.header
    }

    /// The decoded header, taken (the rest is dropped).
    pub fn into_header(self) -> Header {
        self.header
    }

    /// The header exactly as signed.
    pub fn header_bytes(&self) -> &[u8] {
        &self.header_bytes
    }

    /// The encrypted payload.
    pub fn ciphertext(&self) -> &[u8] {
        &self.ciphertext
    }

    /// The sender's signature.
    pub fn signature(&self) -> &Signature {
        &self.signature
    }

    /// The envelope hash: SHA-256 over its three parts, length-prefixed and
    /// domain-separated, so that it does not depend on how the outer CBOR was written
    /// (CBOR allows several encodings; a relay must not be able to change the hash).
    /// Audit entries and receipts name this.
    pub fn hash(&self) -> Digest32 {
        self.hash
    }

    /// The message the signature covers (for batch verification).
    pub fn signed_message(&self) -> Vec<u8> {
        signed_message(&self.header_bytes, &self.ciphertext)
    }

    /// Check that the sender is an active roster node that signed this envelope and was
    /// allowed to publish it (role, topic grant, labels it may read). Receivers check this
    /// too, so a broker cannot inject messages even with a valid roster key of its own.
    ///
    /// # Errors
    /// `UnknownNode`, `Revoked`, `BadSignature`, `NotPermitted`.
    pub fn verify<'r>(&self, roster: &'r Roster) -> Result<&'r NodeEntry> {
        let sender = roster.active(&self.header.sender)?;
        roster.verify_signature(
            &sender.id,
            "envelope",
            &self.signed_message(),
            &self.signature,
        )?;
        if !sender.role.publishes() {
            return Err(Error::NotPermitted(format!(
                "{} is a {} and may not publish",
                sender.id, sender.role
            )));
        }
        check_publish(
            &sender.id,
            &sender.grants,
            &self.header.topic,
            &self.header.labels,
        )?;
        Ok(sender)
    }

    /// Replace the signature (tests build forgeries with this).
    pub fn with_signature(mut self, signature: Signature) -> Self {
        self.signature = signature;
        self.with_hash()
    }

    fn with_hash(mut self) -> Self {
        let mut h = sha2::Sha256::new();
        h.update(HASH_DOMAIN);
        for part in [
            &self.header_bytes[..],
            &self.ciphertext[..],
            &self.signature.0[..],
        ] {
            h.update(cbor::len_prefix(part.len()));
            h.update(part);
        }
        self.hash = Digest32(h.finalize().into());
        self
    }
}

/// Verify many envelopes at once, each against the roster given with it: the publish
/// rules one by one, the signatures as one ed25519 batch (about twice as fast), falling
/// back to one by one only to name the first bad envelope.
///
/// # Errors
/// The position in `items` of the first envelope that fails, and why.
pub fn verify_batch(items: &[(&Envelope, &Roster)]) -> std::result::Result<(), (usize, Error)> {
    let mut messages = Vec::with_capacity(items.len());
    let mut signatures = Vec::with_capacity(items.len());
    let mut keys = Vec::with_capacity(items.len());
    for (i, (env, roster)) in items.iter().enumerate() {
        let fail = |e: Error| (i, e);
        let h = env.header();
        let sender = roster.active(&h.sender).map_err(fail)?;
        if !sender.role.publishes() {
            return Err(fail(Error::NotPermitted(format!(
                "{} is a {} and may not publish",
                sender.id, sender.role
            ))));
        }
        check_publish(&sender.id, &sender.grants, &h.topic, &h.labels).map_err(fail)?;
        keys.push(*roster.verifying_key(&sender.id, "envelope").map_err(fail)?);
        messages.push(env.signed_message());
        signatures.push(ed25519_dalek::Signature::from_bytes(&env.signature().0));
    }
    let refs: Vec<&[u8]> = messages.iter().map(Vec::as_slice).collect();
    if ed25519_dalek::verify_batch(&refs, &signatures, &keys).is_ok() {
        return Ok(());
    }
    for (i, (env, roster)) in items.iter().enumerate() {
        env.verify(roster).map_err(|e| (i, e))?;
    }
    // the batch failed but each one verifies: only possible with non-canonical inputs
    Err((
        0,
        Error::BadSignature {
            what: "envelope batch",
        },
    ))
}
