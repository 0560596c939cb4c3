//! Sealing and opening: a random content key encrypts the payload (ChaCha20-Poly1305 with
//! the header bytes as associated data) and is wrapped for every roster node the read rule
//! allows, HPKE-base style: X25519 with an ephemeral key, HKDF-SHA256 bound to both public
//! keys and the message id, ChaCha20-Poly1305. The broker never sees the content key.
//!
//! For speed a [`Sealer`] keeps one ephemeral key for a bounded *epoch* and caches the
//! X25519 result per recipient; the message id in the HKDF info keeps every wrap key unique.

use std::collections::HashMap;

use chacha20poly1305::aead::{Aead, KeyInit, Payload as AeadPayload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use hkdf::Hkdf;
use rand_core::CryptoRngCore;
use sha2::Sha256;
use x25519_dalek::{PublicKey, StaticSecret};
use zeroize::Zeroizing;

use crate::access::check_publish;
use crate::cbor;
use crate::envelope::{Envelope, HEADER_VERSION, Header, MAX_RECIPIENTS, WrappedKey};
use crate::error::{Error, Result};
use crate::ids::{Digest32, MessageId, NodeId};
use crate::keys::{KemPublic, NodeKeys};
use crate::labels::Labels;
use crate::payload::{Payload, Precedence};
use crate::roster::Roster;
use crate::topic::Topic;

const WRAP_INFO: &[u8] = b"ewx/v1/wrap";
const WRAP_NONCE: [u8; 12] = [0; 12];

/// When a sender starts a new ephemeral key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EpochPolicy {
    /// Messages sealed under one ephemeral key.
    pub max_messages: u32,
    /// Age of an ephemeral key in ms.
    pub max_age_ms: u64,
}

impl Default for EpochPolicy {
    /// 1 000 messages or 10 minutes, whichever comes first.
    fn default() -> Self {
        Self {
            max_messages: 1000,
            max_age_ms: 10 * 60 * 1000,
        }
    }
}

/// What the publisher wants to send; the sealer adds keys, id, nonce and signature.
#[derive(Debug, Clone)]
pub struct Draft {
    /// Topic to publish on.
    pub topic: Topic,
    /// Precedence.
    pub precedence: Precedence,
    /// Labels.
    pub labels: Labels,
    /// Content.
    pub payload: Payload,
    /// Sender sequence number, strictly above the last one the broker accepted.
    pub seq: u64,
    /// Stale after this time, if set.
    pub expires_ms: Option<u64>,
    /// Ask recipients for signed receipts.
    pub receipt: bool,
    /// The case this message opens or answers (in the signed header, seen by the broker).
    pub case: Option<crate::case::CaseTag>,
}

struct Epoch {
    roster: Digest32,
    secret: StaticSecret,
    public: KemPublic,
    started_ms: u64,
    used: u32,
    shared: HashMap<NodeId, Zeroizing<[u8; 32]>>,
}

/// A publisher's sealing state: its keys and the current key epoch.
pub struct Sealer {
    keys: NodeKeys,
    policy: EpochPolicy,
    epoch: Option<Epoch>,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Sealer({:?}, {:?})", self.keys, self.policy)
    }
}

fn wrap_key(
    shared: &[u8; 32],
    eph: &KemPublic,
    recipient: &KemPublic,
    id: &MessageId,
) -> Zeroizing<[u8; 32]> {
    let mut salt = [0u8; 64];
    salt[..32].copy_from_slice(&eph.0);
    salt[32..].copy_from_slice(&recipient.0);
    let mut info = [0u8; WRAP_INFO.len() + 16];
    info[..WRAP_INFO.len()].copy_from_slice(WRAP_INFO);
    info[WRAP_INFO.len()..].copy_from_slice(&id.0);
    let mut okm = Zeroizing::new([0u8; 32]);
    // 32 bytes is far below HKDF-SHA256's 8160-byte limit: expand cannot fail.
    let _ = Hkdf::<Sha256>::new(Some(&salt), shared).expand(&info, &mut okm[..]);
    okm
}

fn key_commitment(id: &MessageId, key: &[u8]) -> Digest32 {
    Digest32::of(&[b"ewx/v1/key-commit", &id.0, key])
}

fn dh(secret: &StaticSecret, public: &KemPublic) -> Result<Zeroizing<[u8; 32]>> {
    let shared = secret.diffie_hellman(&PublicKey::from(public.0));
    if !shared.was_contributory() {
        return Err(Error::InvalidKey("x25519 key is of low order".into()));
    }
    Ok(Zeroizing::new(shared.to_bytes()))
}

impl Sealer {
    /// A sealer for `keys` with the given epoch policy.
    pub fn new(keys: NodeKeys, policy: EpochPolicy) -> Self {
        Self {
            keys,
            policy,
            epoch: None,
        }
    }

    /// The sender's keys.
    pub fn keys(&self) -> &NodeKeys {
        &self.keys
    }

    fn epoch(&mut self, roster: &Roster, now_ms: u64, rng: &mut impl CryptoRngCore) -> &mut Epoch {
        let policy = self.policy;
        let fresh = |e: &Epoch| {
            e.roster == roster.hash()
                && e.used < policy.max_messages
                && now_ms >= e.started_ms
                && now_ms - e.started_ms < policy.max_age_ms
        };
        if !self.epoch.as_ref().is_some_and(fresh) {
            self.epoch = None;
        }
        let epoch = self.epoch.get_or_insert_with(|| {
            let secret = StaticSecret::random_from_rng(rng);
            let public = KemPublic(PublicKey::from(&secret).to_bytes());
            Epoch {
                roster: roster.hash(),
                secret,
                public,
                started_ms: now_ms,
                used: 0,
                shared: HashMap::new(),
            }
        });
        epoch.used += 1;
        epoch
    }

    /// Seal and sign `draft` for every node the roster's read rule allows, at `now_ms`.
    ///
    /// # Errors
    /// `UnknownNode`/`Revoked` if the sender is not active, `NotPermitted` if the sender
    /// may not publish it, `TooLarge` past [`MAX_RECIPIENTS`], `InvalidKey` for a
    /// low-order recipient key.
    pub fn seal(
        &mut self,
        roster: &Roster,
        draft: Draft,
        now_ms: u64,
        rng: &mut impl CryptoRngCore,
    ) -> Result<Envelope> {
        let me = roster.active(&self.keys.node)?;
        check_publish(&me.id, &me.grants, &draft.topic, &draft.labels)?;
        draft.payload.validate()?;
        let recipients: Vec<_> = roster.recipients(&draft.labels).collect();
        if recipients.len() > MAX_RECIPIENTS {
            return Err(Error::TooLarge {
                what: "recipient list",
                size: recipients.len() as u64,
                max: MAX_RECIPIENTS as u64,
            });
        }
        let mut id = MessageId([0; 16]);
        rng.fill_bytes(&mut id.0);
        let mut nonce = [0u8; 12];
        rng.fill_bytes(&mut nonce);
        let mut content_key = Zeroizing::new([0u8; 32]);
        rng.fill_bytes(&mut content_key[..]);

        let kind = draft.payload.kind();
        let sender = self.keys.node.clone();
        let epoch = self.epoch(roster, now_ms, rng);
        let mut wrapped = Vec::with_capacity(recipients.len());
        for r in recipients {
            let shared = match epoch.shared.get(&r.id) {
                Some(s) => s.clone(),
                None => {
                    let s = dh(&epoch.secret, &r.kem)?;
                    epoch.shared.insert(r.id.clone(), s.clone());
                    s
                }
            };
            let k = wrap_key(&shared, &epoch.public, &r.kem, &id);
            let ct = ChaCha20Poly1305::new(Key::from_slice(&k[..]))
                .encrypt(Nonce::from_slice(&WRAP_NONCE), &content_key[..])
                .map_err(|_| Error::InvalidKey("content key wrap failed".into()))?;
            let mut key = [0u8; 48];
            key.copy_from_slice(&ct);
            wrapped.push(WrappedKey {
                node: r.id.clone(),
                key,
            });
        }
        let header = Header {
            v: HEADER_VERSION,
            id,
            sender,
            seq: draft.seq,
            topic: draft.topic,
            kind,
            precedence: draft.precedence,
            labels: draft.labels,
            created_ms: now_ms,
            expires_ms: draft.expires_ms,
            receipt: draft.receipt,
            roster_version: roster.version(),
            eph_pk: epoch.public,
            nonce,
            key_commit: key_commitment(&id, &content_key[..]),
            recipients: wrapped,
            case: draft.case,
        };
        let header_bytes = cbor::encode("envelope header", &header)?;
        let plaintext = Zeroizing::new(draft.payload.encode()?);
        let ciphertext = ChaCha20Poly1305::new(Key::from_slice(&content_key[..]))
            .encrypt(
                Nonce::from_slice(&nonce),
                AeadPayload {
                    msg: &plaintext,
                    aad: &header_bytes,
                },
            )
            .map_err(|_| Error::InvalidKey("payload encryption failed".into()))?;
        Envelope::sign(header_bytes, ciphertext, &self.keys)
    }
}

/// Verify, check the labels, unwrap this node's content key and decrypt.
///
/// # Errors
/// `UnknownNode`/`Revoked` sender, `BadSignature`, `NotPermitted` if `me` may not read
/// the labels, `NotARecipient`, `BadWrappedKey`, `DecryptFailed`, `Malformed`,
/// `KindMismatch`.
pub fn open(envelope: &Envelope, roster: &Roster, me: &NodeKeys) -> Result<Payload> {
    Opener::default().open(envelope, roster, me)
}

/// A receiver's opening state: the X25519 result per sender key epoch, so the messages
/// of one epoch cost one Diffie-Hellman between them, not one each (the message id in the
/// HKDF info still gives every message its own wrap key).
#[derive(Default)]
pub struct Opener {
    /// (sender's ephemeral key, our key) → X25519 result; locked only for the lookup, so
    /// one opener serves many threads.
    shared: std::sync::Mutex<EpochSecrets>,
}

/// (sender's ephemeral key, our key) → X25519 result.
type EpochSecrets = HashMap<(KemPublic, KemPublic), Zeroizing<[u8; 32]>>;

impl std::fmt::Debug for Opener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Opener")
    }
}

impl Opener {
    /// Ephemeral keys remembered at most (senders × live epochs).
    pub const MAX_EPOCHS: usize = 256;

    fn shared(&self, me: &NodeKeys, eph: &KemPublic) -> Result<Zeroizing<[u8; 32]>> {
        let key = (*eph, me.kem_public());
        let lock = || self.shared.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(s) = lock().get(&key) {
            return Ok(s.clone());
        }
        let s = dh(me.kem_secret(), eph)?;
        let mut cache = lock();
        if cache.len() >= Self::MAX_EPOCHS {
            cache.clear();
        }
        cache.insert(key, s.clone());
        Ok(s)
    }

    /// As [`open`], reusing the X25519 result of a key epoch already seen.
    ///
    /// # Errors
    /// As [`open`].
    pub fn open(&self, envelope: &Envelope, roster: &Roster, me: &NodeKeys) -> Result<Payload> {
        open_with(envelope, roster, me, |eph| self.shared(me, eph))
    }
}

fn open_with(
    envelope: &Envelope,
    roster: &Roster,
    me: &NodeKeys,
    shared_for: impl FnOnce(&KemPublic) -> Result<Zeroizing<[u8; 32]>>,
) -> Result<Payload> {
    envelope.verify(roster)?;
    let header = envelope.header();
    let mine = roster.active(&me.node)?;
    crate::access::check_read(&mine.id, &mine.grants, &header.labels)?;
    let wrapped = header
        .wrapped_for(&me.node)
        .ok_or_else(|| Error::NotARecipient(me.node.clone()))?;
    let shared = shared_for(&header.eph_pk)?;
    let k = wrap_key(&shared, &header.eph_pk, &me.kem_public(), &header.id);
    let content_key = Zeroizing::new(
        ChaCha20Poly1305::new(Key::from_slice(&k[..]))
            .decrypt(Nonce::from_slice(&WRAP_NONCE), &wrapped.key[..])
            .map_err(|_| Error::BadWrappedKey(me.node.clone()))?,
    );
    if content_key.len() != 32 || key_commitment(&header.id, &content_key) != header.key_commit {
        return Err(Error::BadWrappedKey(me.node.clone()));
    }
    let plaintext = Zeroizing::new(
        ChaCha20Poly1305::new(Key::from_slice(&content_key))
            .decrypt(
                Nonce::from_slice(&header.nonce),
                AeadPayload {
                    msg: envelope.ciphertext(),
                    aad: envelope.header_bytes(),
                },
            )
            .map_err(|_| Error::DecryptFailed)?,
    );
    Payload::decode(&plaintext, header.kind)
}
