//! The one error type of `ewx-proto`: every decode, verify and policy failure is a
//! variant here, so the broker can map it to a typed rejection and an audit reason.

use crate::ids::NodeId;

/// Everything that can go wrong in the protocol core.
///
/// Messages are lower-case and carry their cause, so that `{:#}` at the top of a binary
/// prints something an operator can act on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A node name is not 1–16 characters of `[A-Z0-9-]`.
    #[error("invalid node id {value:?}: {reason}")]
    InvalidNodeId {
        /// The rejected text (truncated to 40 characters).
        value: String,
        /// What rule it broke.
        reason: &'static str,
    },
    /// A topic or topic pattern breaks the syntax rules.
    #[error("invalid topic {value:?}: {reason}")]
    InvalidTopic {
        /// The rejected text (truncated to 40 characters).
        value: String,
        /// What rule it broke.
        reason: &'static str,
    },
    /// A label value (level or compartment) is not one we know or is malformed.
    #[error("invalid label {value:?}: {reason}")]
    InvalidLabel {
        /// The rejected text (truncated to 40 characters).
        value: String,
        /// What rule it broke.
        reason: &'static str,
    },
    /// Bytes that should hold a CBOR structure could not be decoded.
    #[error("malformed {what}: {reason}")]
    Malformed {
        /// Which structure was being decoded.
        what: &'static str,
        /// The decoder's explanation.
        reason: String,
    },
    /// A structure decoded but bytes were left after it.
    #[error("malformed {what}: {extra} trailing bytes")]
    TrailingBytes {
        /// Which structure was being decoded.
        what: &'static str,
        /// How many bytes were left over.
        extra: usize,
    },
    /// Input is larger than the configured limit; rejected before allocating.
    #[error("{what} too large: {size} bytes, limit {max}")]
    TooLarge {
        /// Which structure was too large.
        what: &'static str,
        /// Its size in bytes.
        size: u64,
        /// The limit in bytes.
        max: u64,
    },
    /// A format version we do not implement.
    #[error("unsupported {what} version {version}")]
    UnsupportedVersion {
        /// Which structure carried the version.
        what: &'static str,
        /// The version found.
        version: u64,
    },
    /// A key is malformed, weak (low-order), or a key file is unreadable.
    #[error("invalid key: {0}")]
    InvalidKey(String),
    /// An ed25519 signature did not verify.
    #[error("bad signature on {what}")]
    BadSignature {
        /// What was signed (envelope, roster, checkpoint, receipt…).
        what: &'static str,
    },
    /// A roster signature names a key that is not on the council.
    #[error("roster signed by a key that is not on the council ({key_id})")]
    UnknownSigner {
        /// Short id of the unknown key.
        key_id: String,
    },
    /// The same council key signed a roster twice.
    #[error("roster signed twice by the same council key ({key_id})")]
    DuplicateSigner {
        /// Short id of the repeated key.
        key_id: String,
    },
    /// Fewer valid council signatures than the threshold.
    #[error("roster has {have} valid council signatures, needs {need}")]
    ThresholdNotMet {
        /// Valid distinct signatures found.
        have: usize,
        /// The threshold.
        need: usize,
    },
    /// A roster older than one already seen.
    #[error("roster version {got} is older than version {have} already seen")]
    RosterRollback {
        /// Highest version already accepted.
        have: u64,
        /// Version offered.
        got: u64,
    },
    /// A roster is internally inconsistent (duplicate nodes, bad threshold, expired…).
    #[error("invalid roster: {0}")]
    InvalidRoster(String),
    /// A node that is not in the roster.
    #[error("node {0} is not in the roster")]
    UnknownNode(NodeId),
    /// A node whose keys were revoked in the roster.
    #[error("node {0} is revoked")]
    Revoked(NodeId),
    /// The access-label or topic rules forbid the operation.
    #[error("not permitted: {0}")]
    NotPermitted(String),
    /// This node is allowed to read, but the envelope carries no content key for it.
    #[error("envelope has no content key for {0}")]
    NotARecipient(NodeId),
    /// A wrapped content key did not authenticate (tampered or wrong key).
    #[error("wrapped content key for {0} does not authenticate")]
    BadWrappedKey(NodeId),
    /// The payload ciphertext did not authenticate under the content key.
    #[error("payload does not decrypt: ciphertext or header was altered")]
    DecryptFailed,
    /// The header's `kind` does not match the payload variant.
    #[error("payload is a {payload} but the header says {header}")]
    KindMismatch {
        /// Kind in the signed header.
        header: String,
        /// Variant found in the decrypted payload.
        payload: String,
    },
    /// A Merkle proof or tree request is inconsistent.
    #[error("merkle: {0}")]
    Merkle(String),
    /// An audit entry does not continue the hash chain or is out of order.
    #[error("audit entry {index}: {fault}")]
    AuditChain {
        /// Index of the first bad entry.
        index: u64,
        /// What is wrong there.
        fault: crate::audit::ChainFault,
    },
    /// An audit bundle does not prove what it claims.
    #[error("bundle: {0}")]
    Bundle(String),
    /// A timestamp rule failed (expired, not yet valid, clock skew).
    #[error("time: {0}")]
    Time(String),
}

/// Shorthand used throughout the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Truncate user-supplied text before echoing it in an error (a 1 MiB topic name must
/// not become a 1 MiB log line).
pub(crate) fn echo(value: &str) -> String {
    const MAX: usize = 40;
    if value.len() <= MAX {
        return value.to_owned();
    }
    let mut end = MAX;
    while !value.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &value[..end])
}
