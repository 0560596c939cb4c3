//! A node's two keys — ed25519 for identity and signatures, x25519 for receiving content
//! keys — their public encodings, short key ids for display, and the versioned secret
//! key file format. Reading and writing the file (and its 0600 mode) is the caller's job.

use std::fmt;

use ed25519_dalek::{Signer, SigningKey, VerifyingKey};
use rand_core::CryptoRngCore;
use serde::{Deserialize, Serialize};
use x25519_dalek::StaticSecret;
use zeroize::Zeroizing;

use crate::error::{Error, Result};
use crate::ids::{Digest32, NodeId};

/// First line of a secret key file; the number is the format version.
pub const SECRET_FILE_MAGIC: &str = "ewx-secret-key v1";

/// An ed25519 public key, raw 32 bytes on the wire.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SignPublic(#[serde(with = "serde_bytes")] pub [u8; 32]);

/// An x25519 public key, raw 32 bytes on the wire.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct KemPublic(#[serde(with = "serde_bytes")] pub [u8; 32]);

/// A 64-byte ed25519 signature, raw on the wire.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Signature(#[serde(with = "serde_bytes")] pub [u8; 64]);

impl fmt::Debug for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Signature({}…)", hex::encode(&self.0[..8]))
    }
}

/// Short, stable identifier of a public key for people to compare on screen
/// (first 8 bytes of a domain-separated SHA-256, in hex).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct KeyId([u8; 8]);

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyId({self})")
    }
}

impl SignPublic {
    /// The key's short id.
    pub fn key_id(&self) -> KeyId {
        let d = Digest32::of(&[b"ewx/v1/key-id", &self.0]);
        let mut id = [0u8; 8];
        id.copy_from_slice(&d.0[..8]);
        KeyId(id)
    }

    /// Verify `signature` over `msg` (strict: rejects malleable and small-order forms).
    ///
    /// # Errors
    /// `BadSignature { what }` if the key is not a valid point or the signature fails.
    pub fn verify(&self, what: &'static str, msg: &[u8], signature: &Signature) -> Result<()> {
        let key = self.dalek().map_err(|_| Error::BadSignature { what })?;
        let sig = ed25519_dalek::Signature::from_bytes(&signature.0);
        key.verify_strict(msg, &sig)
            .map_err(|_| Error::BadSignature { what })
    }

    /// The dalek verifying key.
    ///
    /// # Errors
    /// `InvalidKey` if the bytes are not a curve point.
    pub fn dalek(&self) -> Result<VerifyingKey> {
        VerifyingKey::from_bytes(&self.0)
            .map_err(|_| Error::InvalidKey("ed25519 public key is not a valid point".into()))
    }

    /// `ed25519:<hex>` text form.
    pub fn to_text(&self) -> String {
        format!("ed25519:{}", hex::encode(self.0))
    }
}

impl fmt::Debug for SignPublic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SignPublic({})", self.key_id())
    }
}

impl KemPublic {
    /// `x25519:<hex>` text form.
    pub fn to_text(&self) -> String {
        format!("x25519:{}", hex::encode(self.0))
    }
}

impl fmt::Debug for KemPublic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KemPublic({}…)", hex::encode(&self.0[..8]))
    }
}

/// A node's secret keys. Secrets are zeroed on drop by the dalek types.
pub struct NodeKeys {
    /// Whose keys these are.
    pub node: NodeId,
    signing: SigningKey,
    kem: StaticSecret,
}

impl fmt::Debug for NodeKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "NodeKeys({}, {})",
            self.node,
            self.sign_public().key_id()
        )
    }
}

impl NodeKeys {
    /// Fresh keys from `rng`.
    pub fn generate(node: NodeId, rng: &mut impl CryptoRngCore) -> Self {
        let signing = SigningKey::generate(rng);
        let kem = StaticSecret::random_from_rng(rng);
        Self { node, signing, kem }
    }

    /// Keys from their 32-byte secrets (e.g. from a deterministic demo seed).
    pub fn from_secrets(node: NodeId, sign_seed: [u8; 32], kem_secret: [u8; 32]) -> Self {
        Self {
            node,
            signing: SigningKey::from_bytes(&sign_seed),
            kem: StaticSecret::from(kem_secret),
        }
    }

    /// The identity (signature) public key.
    pub fn sign_public(&self) -> SignPublic {
        SignPublic(self.signing.verifying_key().to_bytes())
    }

    /// The key-encapsulation public key.
    pub fn kem_public(&self) -> KemPublic {
        KemPublic(x25519_dalek::PublicKey::from(&self.kem).to_bytes())
    }

    /// Sign `msg` with the identity key.
    pub fn sign(&self, msg: &[u8]) -> Signature {
        Signature(self.signing.sign(msg).to_bytes())
    }

    /// The dalek signing key (for TLS certificates and batch APIs).
    pub fn signing_key(&self) -> &SigningKey {
        &self.signing
    }

    pub(crate) fn kem_secret(&self) -> &StaticSecret {
        &self.kem
    }

    /// Encode as the secret key file text (see the crate docs for the format).
    pub fn to_secret_file(&self) -> Zeroizing<String> {
        Zeroizing::new(format!(
            "# ewx secret key for node {node}: keep private, file mode 0600\n\
             {SECRET_FILE_MAGIC}\nnode {node}\ned25519 {}\nx25519 {}\n",
            hex::encode(self.signing.to_bytes()),
            hex::encode(self.kem.to_bytes()),
            node = self.node,
        ))
    }

    /// Parse secret key file text. Lines starting with `#` and blank lines are ignored;
    /// the first other line must be the version line; `node`, `ed25519` and `x25519`
    /// must each appear once.
    ///
    /// # Errors
    /// `UnsupportedVersion` for another version line, `InvalidKey` for anything else,
    /// naming the line.
    pub fn from_secret_file(text: &str) -> Result<Self> {
        let mut lines = text
            .lines()
            .map(str::trim)
            .enumerate()
            .filter(|(_, l)| !l.is_empty() && !l.starts_with('#'));
        match lines.next() {
            Some((_, SECRET_FILE_MAGIC)) => {}
            Some((_, l)) if l.starts_with("ewx-secret-key v") => {
                let version = l["ewx-secret-key v".len()..].parse().unwrap_or(0);
                return Err(Error::UnsupportedVersion {
                    what: "secret key file",
                    version,
                });
            }
            _ => {
                return Err(Error::InvalidKey(format!(
                    "not an ewx secret key file (first line must be {SECRET_FILE_MAGIC:?})"
                )));
            }
        }
        let (mut node, mut sign, mut kem) = (None, None, None);
        for (n, line) in lines {
            let bad = |why: &str| Error::InvalidKey(format!("line {}: {why}", n + 1));
            let (field, value) = line
                .split_once(' ')
                .ok_or_else(|| bad("expected 'FIELD VALUE'"))?;
            let slot = match field {
                "node" => &mut node,
                "ed25519" => &mut sign,
                "x25519" => &mut kem,
                _ => return Err(bad("unknown field")),
            };
            if slot.replace(value.trim()).is_some() {
                return Err(bad("field given twice"));
            }
        }
        let missing = |f: &str| Error::InvalidKey(format!("missing field {f:?}"));
        let node = NodeId::new(node.ok_or_else(|| missing("node"))?)?;
        let sign = secret32("ed25519", sign.ok_or_else(|| missing("ed25519"))?)?;
        let kem = secret32("x25519", kem.ok_or_else(|| missing("x25519"))?)?;
        Ok(Self::from_secrets(node, *sign, *kem))
    }
}

fn secret32(field: &str, hex_text: &str) -> Result<Zeroizing<[u8; 32]>> {
    let mut out = Zeroizing::new([0u8; 32]);
    hex::decode_to_slice(hex_text, &mut out[..])
        .map_err(|e| Error::InvalidKey(format!("{field}: expected 64 hex digits ({e})")))?;
    Ok(out)
}

/// Parse `ed25519:<hex>` / `x25519:<hex>` text (the prefix is required).
///
/// # Errors
/// `InvalidKey` on a wrong prefix or bad hex.
pub fn parse_public(prefix: &str, text: &str) -> Result<[u8; 32]> {
    let hex_text = text
        .strip_prefix(prefix)
        .and_then(|r| r.strip_prefix(':'))
        .ok_or_else(|| Error::InvalidKey(format!("expected '{prefix}:<64 hex digits>'")))?;
    let mut out = [0u8; 32];
    hex::decode_to_slice(hex_text, &mut out)
        .map_err(|e| Error::InvalidKey(format!("{prefix}: expected 64 hex digits ({e})")))?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> NodeKeys {
        NodeKeys::from_secrets(NodeId::new("PL").unwrap(), [7; 32], [9; 32])
    }

    #[test]
    fn secret_file_round_trip() {
        let k = keys();
        let back = NodeKeys::from_secret_file(&k.to_secret_file()).unwrap();
        assert_eq!(back.node, k.node);
        assert_eq!(back.sign_public(), k.sign_public());
        assert_eq!(back.kem_public(), k.kem_public());
    }

    #[test]
    fn secret_file_errors_are_precise() {
        let good = keys().to_secret_file().to_string();
        let v2 = good.replace("v1", "v2");
        assert!(matches!(
            NodeKeys::from_secret_file(&v2),
            Err(Error::UnsupportedVersion { version: 2, .. })
        ));
        assert!(NodeKeys::from_secret_file("hello").is_err());
        let dup = format!("{good}node PL\n");
        let e = NodeKeys::from_secret_file(&dup).unwrap_err().to_string();
        assert!(e.contains("twice"), "{e}");
        let short = good.replace("x25519 ", "x25519 00");
        assert!(NodeKeys::from_secret_file(&short).is_err());
        let missing: String = good
            .lines()
            .filter(|l| !l.starts_with("x25519"))
            .collect::<Vec<_>>()
            .join("\n");
        let e = NodeKeys::from_secret_file(&missing)
            .unwrap_err()
            .to_string();
        assert!(e.contains("x25519"), "{e}");
    }

    #[test]
    fn public_text_round_trip() {
        let k = keys();
        let s = k.sign_public();
        assert_eq!(parse_public("ed25519", &s.to_text()).unwrap(), s.0);
        assert!(parse_public("x25519", &s.to_text()).is_err());
        assert_eq!(s.key_id().to_string().len(), 16);
    }

    #[test]
    fn signatures_verify_and_fail() {
        let k = keys();
        let sig = k.sign(b"msg");
        k.sign_public().verify("test", b"msg", &sig).unwrap();
        assert_eq!(
            k.sign_public().verify("test", b"msh", &sig),
            Err(Error::BadSignature { what: "test" })
        );
    }
}
