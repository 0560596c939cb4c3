//! Names of things: nodes, messages and content hashes. Validated on construction so
//! that every `NodeId` in the program is known to be well formed.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{Error, Result, echo};

/// A participant's short upper-case name (`UA`, `PL`, `AUDIT1`, `BROKER`):
/// 1–16 characters of `[A-Z0-9-]`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct NodeId(String);

impl NodeId {
    /// Longest accepted name.
    pub const MAX_LEN: usize = 16;

    /// Validate and wrap a node name.
    ///
    /// # Errors
    /// `InvalidNodeId` if empty, too long, or containing anything but `A-Z 0-9 -`.
    pub fn new(value: impl Into<String>) -> Result<Self> {
        let value = value.into();
        let reason = if value.is_empty() {
            Some("empty")
        } else if value.len() > Self::MAX_LEN {
            Some("longer than 16 characters")
        } else if !value
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'-')
        {
            Some("only A-Z, 0-9 and '-' are allowed")
        } else {
            None
        };
        match reason {
            Some(reason) => Err(Error::InvalidNodeId {
                value: echo(&value),
                reason,
            }),
            None => Ok(Self(value)),
        }
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for NodeId {
    type Error = Error;
    fn try_from(value: String) -> Result<Self> {
        Self::new(value)
    }
}

impl From<NodeId> for String {
    fn from(id: NodeId) -> Self {
        id.0
    }
}

impl FromStr for NodeId {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Self::new(s)
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// 16 random bytes chosen by the publisher; unique per message and bound into every
/// wrapped-key derivation.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct MessageId(#[serde(with = "serde_bytes")] pub [u8; 16]);

impl fmt::Display for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MessageId({self})")
    }
}

impl FromStr for MessageId {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        let mut id = [0u8; 16];
        hex::decode_to_slice(s, &mut id).map_err(|e| Error::Malformed {
            what: "message id",
            reason: format!("expected 32 hex digits: {e}"),
        })?;
        Ok(Self(id))
    }
}

/// A SHA-256 digest: envelope hashes, audit chain links, Merkle nodes, roster hashes.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Digest32(#[serde(with = "serde_bytes")] pub [u8; 32]);

impl Digest32 {
    /// SHA-256 of `parts` concatenated.
    pub fn of(parts: &[&[u8]]) -> Self {
        let mut h = Sha256::new();
        for p in parts {
            h.update(p);
        }
        Self(h.finalize().into())
    }

    /// The first 8 bytes in hex: enough to tell digests apart on screen.
    pub fn short(&self) -> String {
        hex::encode(&self.0[..8])
    }
}

impl fmt::Display for Digest32 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for Digest32 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Digest32({})", self.short())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_ids_follow_the_rules() {
        for ok in ["UA", "PL", "AUDIT1", "BROKER", "A-1", "ABCDEFGHIJKLMNOP"] {
            assert!(NodeId::new(ok).is_ok(), "{ok}");
        }
        for bad in ["", "ua", "U A", "ABCDEFGHIJKLMNOPQ", "UA.", "É"] {
            assert!(
                matches!(NodeId::new(bad), Err(Error::InvalidNodeId { .. })),
                "{bad}"
            );
        }
    }

    #[test]
    fn node_id_rejected_when_decoded_from_cbor() {
        let bytes = crate::cbor::encode("t", &"lower").unwrap();
        let err = crate::cbor::decode::<NodeId>("node id", &bytes, 100).unwrap_err();
        assert!(matches!(err, Error::Malformed { .. }), "{err}");
    }

    #[test]
    fn long_values_are_truncated_in_errors() {
        let long = "X".repeat(1 << 20);
        let msg = NodeId::new(long).unwrap_err().to_string();
        assert!(msg.len() < 120, "{msg}");
    }
}
