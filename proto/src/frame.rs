//! Framing and the broker protocol's messages. A frame is a u32 big-endian length and
//! that many bytes of CBOR. The decoder tells "need more bytes" apart from "invalid", and
//! refuses an oversize length from the prefix alone, before buffering anything.

use serde::{Deserialize, Serialize, de::DeserializeOwned};

use crate::cbor;
use crate::error::{Error, Result};
use crate::ids::{MessageId, NodeId};
use crate::payload::Precedence;
use crate::receipt::Receipt;
use crate::topic::TopicPattern;

/// Default largest frame body: 1 MiB.
pub const DEFAULT_MAX_FRAME: usize = 1 << 20;
/// Bytes of the length prefix.
pub const PREFIX: usize = 4;

/// Result of looking for one frame at the start of a buffer.
#[derive(Debug, PartialEq, Eq)]
pub enum FrameStatus<'a> {
    /// A whole frame: its body, and how many bytes of the buffer it used.
    Complete {
        /// The CBOR body.
        body: &'a [u8],
        /// Prefix plus body length.
        consumed: usize,
    },
    /// Not enough bytes yet; at least `needed` more must arrive.
    Incomplete {
        /// Bytes still missing.
        needed: usize,
    },
}

/// Find the first frame in `buf` without decoding its body.
///
/// # Errors
/// `TooLarge` if the prefix announces more than `max` bytes.
pub fn split_frame(buf: &[u8], max: usize) -> Result<FrameStatus<'_>> {
    let Some(prefix) = buf.first_chunk::<PREFIX>() else {
        return Ok(FrameStatus::Incomplete {
            needed: PREFIX - buf.len(),
        });
    };
    let len = u32::from_be_bytes(*prefix) as usize;
    if len > max {
        return Err(Error::TooLarge {
            what: "frame",
            size: len as u64,
            max: max as u64,
        });
    }
    let total = PREFIX + len;
    if buf.len() < total {
        return Ok(FrameStatus::Incomplete {
            needed: total - buf.len(),
        });
    }
    Ok(FrameStatus::Complete {
        body: &buf[PREFIX..total],
        consumed: total,
    })
}

/// Encode one message as a frame.
///
/// # Errors
/// `TooLarge` if the body exceeds `max` (or `u32::MAX`).
pub fn encode_frame<T: Serialize>(msg: &T, max: usize) -> Result<Vec<u8>> {
    let mut out = vec![0u8; PREFIX];
    ciborium::into_writer(msg, &mut out).map_err(|e| Error::Malformed {
        what: "frame",
        reason: format!("cannot encode: {e}"),
    })?;
    let len = out.len() - PREFIX;
    if len > max.min(u32::MAX as usize) {
        return Err(Error::TooLarge {
            what: "frame",
            size: len as u64,
            max: max as u64,
        });
    }
    out[..PREFIX].copy_from_slice(&(len as u32).to_be_bytes());
    Ok(out)
}

/// The frame of a [`Push::Delivery`] without the envelope bytes that end it: the broker
/// writes this head and then the stored envelope as it is, so fanning one message out to
/// many subscribers copies nothing. `head ‖ envelope` is exactly what [`encode_frame`]
/// makes of the whole `Push::Delivery`.
///
/// # Errors
/// `TooLarge` if the whole frame would exceed `max`.
pub fn delivery_frame_head(
    name: &str,
    log_index: u64,
    envelope_len: usize,
    max: usize,
) -> Result<Vec<u8>> {
    let empty = Push::Delivery {
        name: name.to_owned(),
        log_index,
        envelope: Vec::new(),
    };
    let mut head = encode_frame(&empty, usize::MAX)?;
    // the envelope is the last field: its empty byte string is the last byte (0x40)
    if head.pop() != Some(0x40) {
        return Err(Error::Malformed {
            what: "frame",
            reason: "delivery head does not end in the envelope field".into(),
        });
    }
    let n = envelope_len as u64;
    match n {
        0..=23 => head.push(0x40 | n as u8),
        24..=0xff => head.extend_from_slice(&[0x58, n as u8]),
        0x100..=0xffff => {
            head.push(0x59);
            head.extend_from_slice(&(n as u16).to_be_bytes());
        }
        0x1_0000..=0xffff_ffff => {
            head.push(0x5a);
            head.extend_from_slice(&(n as u32).to_be_bytes());
        }
        _ => {
            head.push(0x5b);
            head.extend_from_slice(&n.to_be_bytes());
        }
    }
    let len = (head.len() - PREFIX) as u64 + n;
    if len > max.min(u32::MAX as usize) as u64 {
        return Err(Error::TooLarge {
            what: "frame",
            size: len,
            max: max as u64,
        });
    }
    head[..PREFIX].copy_from_slice(&(len as u32).to_be_bytes());
    Ok(head)
}

/// A decoded frame or a request for more bytes.
#[derive(Debug, PartialEq, Eq)]
pub enum Decoded<T> {
    /// One message and the bytes it used.
    Complete(T, usize),
    /// At least this many more bytes are needed.
    Incomplete(usize),
}

/// Decode the first frame of `buf` as a `T`.
///
/// # Errors
/// `TooLarge`, `Malformed`, `TrailingBytes` (inside the frame body).
pub fn decode_frame<T: DeserializeOwned>(buf: &[u8], max: usize) -> Result<Decoded<T>> {
    match split_frame(buf, max)? {
        FrameStatus::Incomplete { needed } => Ok(Decoded::Incomplete(needed)),
        FrameStatus::Complete { body, consumed } => {
            Ok(Decoded::Complete(decode_body(body, max)?, consumed))
        }
    }
}

/// Decode a frame body already split off its length prefix (by a stream reader).
///
/// # Errors
/// `TooLarge`, `Malformed`, `TrailingBytes`.
pub fn decode_body<T: DeserializeOwned>(body: &[u8], max: usize) -> Result<T> {
    cbor::decode("frame", body, max)
}

/// Where a new subscription starts in the message log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum StartAt {
    /// From the first retained message.
    Earliest,
    /// Only messages published from now on.
    Latest,
    /// From this message-log index on.
    Index(u64),
    /// Resume after the durable cursor of this subscription name (or `Latest` if none).
    Resume,
}

/// Which traffic a subscription wants.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum ExerciseFilter {
    /// Real and exercise traffic.
    #[default]
    All,
    /// Real warnings only.
    RealOnly,
    /// Exercise traffic only.
    ExerciseOnly,
}

impl ExerciseFilter {
    /// Does a message with this exercise flag pass?
    pub fn admits(self, exercise: bool) -> bool {
        match self {
            ExerciseFilter::All => true,
            ExerciseFilter::RealOnly => !exercise,
            ExerciseFilter::ExerciseOnly => exercise,
        }
    }
}

/// Client → broker, one per request stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    /// First message: the client tells which roster version it holds.
    Hello {
        /// Highest roster version the client has verified.
        roster_version: u64,
    },
    /// Publish a signed envelope (its wire bytes, stored as received).
    Publish {
        /// Envelope wire bytes.
        #[serde(with = "serde_bytes")]
        envelope: Vec<u8>,
    },
    /// Open or resume a named subscription.
    Subscribe {
        /// Name, unique per node: the durable cursor is kept under it.
        name: String,
        /// Topic pattern.
        pattern: TopicPattern,
        /// Where to start.
        from: StartAt,
        /// Real, exercise or both.
        filter: ExerciseFilter,
    },
    /// Every delivery of this precedence class up to `through` (message-log index) was
    /// processed. Each class is its own ordered lane, so FLASH never waits for ROUTINE.
    Ack {
        /// Subscription name.
        name: String,
        /// The lane acknowledged.
        precedence: Precedence,
        /// Highest index processed in that lane.
        through: u64,
    },
    /// Close a subscription (its cursor is kept).
    Unsubscribe {
        /// Subscription name.
        name: String,
    },
    /// A signed receipt for a delivered message.
    Receipt(Receipt),
    /// A newer roster signed by the council threshold.
    UpdateRoster {
        /// Signed roster wire bytes.
        #[serde(with = "serde_bytes")]
        roster: Vec<u8>,
    },
    /// Audit data: how long the log is, how many checkpoints there are.
    AuditHead,
    /// Audit entries `[from, from + limit)` (auditors only).
    AuditEntries {
        /// First index.
        from: u64,
        /// At most this many (the broker may send fewer).
        limit: u32,
    },
    /// The stored envelope at a message-log index (auditors, or its sender).
    GetEnvelope {
        /// Message-log index.
        log_index: u64,
    },
    /// A roster version the broker has had in force.
    GetRoster {
        /// Its version.
        version: u64,
    },
    /// Signed checkpoints of size `from_size` and above.
    Checkpoints {
        /// Smallest size wanted.
        from_size: u64,
    },
    /// Proof that audit entry `index` is in the tree of `size` entries (auditors, or
    /// for an entry about one's own message).
    InclusionProof {
        /// Audit entry index.
        index: u64,
        /// Tree size.
        size: u64,
    },
    /// Proof that the tree of `old` entries is a prefix of the tree of `new` entries.
    ConsistencyProof {
        /// Older size.
        old: u64,
        /// Newer size.
        new: u64,
    },
    /// A witness's co-signature over the checkpoint of `size` entries.
    Cosign {
        /// The checkpoint's size.
        size: u64,
        /// The co-signature.
        cosignature: crate::checkpoint::Cosignature,
    },
    /// The cases this node may read (newest first, at most `limit`).
    Cases {
        /// At most this many.
        limit: u32,
    },
    /// A case's thread, from after `after` (a message-log index) on.
    CaseThread {
        /// The case (its opening message's id).
        case: crate::ids::MessageId,
        /// Start after this log index (`None`: from the opening).
        after: Option<u64>,
    },
}

/// Wire bytes of several stored items (audit entries or signed checkpoints).
pub type Blobs = Vec<serde_bytes::ByteBuf>;

/// Why the broker refused something; mirrors the acceptance checks in DESIGN.md.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum RejectReason {
    /// Did not decode.
    Malformed,
    /// Over a size limit.
    TooLarge,
    /// Envelope sender is not the authenticated node.
    WrongSender,
    /// Sender unknown or revoked.
    UnknownSender,
    /// Signature does not verify.
    BadSignature,
    /// `seq` not above the last accepted from this sender.
    Replay,
    /// `created_ms` too far from the broker clock.
    ClockSkew,
    /// Topic or labels not allowed for this node.
    NotPermitted,
    /// A listed recipient may not read the labels.
    RecipientNotPermitted,
    /// Roster older than the broker's, or not properly signed.
    BadRoster,
    /// The store cannot take more data.
    StorageFull,
    /// Too many requests.
    RateLimited,
    /// A fault in the broker.
    Internal,
    /// A cluster could not commit it just now (an election, a partition): it may or may
    /// not be stored — send the same envelope again (a repeat gets its original index).
    Unavailable,
    /// The case fold refused a case message (unknown case, not a party, out of order…).
    Case(crate::case::RefusalKind),
}

/// Broker → client, the answer on a request stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response {
    /// Answer to `Hello`.
    Welcome {
        /// The authenticated node.
        node: NodeId,
        /// The broker's roster version.
        roster_version: u64,
        /// The broker's signed roster, if newer than the client's.
        #[serde(with = "serde_bytes")]
        roster: Option<Vec<u8>>,
    },
    /// The envelope and its audit entry are durable.
    PublishAck {
        /// Message id.
        id: MessageId,
        /// Its message-log index.
        log_index: u64,
    },
    /// The subscription is open; deliveries follow on push streams.
    Subscribed {
        /// Subscription name.
        name: String,
        /// Index of the first message it can deliver.
        next_index: u64,
    },
    /// Done (ack, unsubscribe, receipt, roster update, cosignature).
    Done,
    /// Answer to `AuditHead`.
    AuditHead {
        /// Audit entries durable.
        entries: u64,
        /// Next message-log index.
        next_log_index: u64,
    },
    /// Answer to `AuditEntries`: entries from `from` on, in order.
    AuditEntries {
        /// Index of the first.
        from: u64,
        /// Entry bytes as stored.
        entries: Blobs,
    },
    /// Answer to `GetEnvelope` / `GetRoster`: the bytes, if the broker still has them.
    Bytes {
        /// The stored bytes (absent: pruned by retention, or never existed).
        #[serde(with = "serde_bytes")]
        bytes: Option<Vec<u8>>,
    },
    /// Answer to `Checkpoints`: signed checkpoints, oldest first.
    Checkpoints {
        /// Signed checkpoint bytes.
        checkpoints: Blobs,
    },
    /// Answer to `Cases`.
    Cases(Vec<crate::case::CaseEntry>),
    /// Answer to `CaseThread`.
    CaseThread(crate::case::CaseThread),
    /// Answer to a proof request.
    Proof {
        /// The proof's hashes.
        hashes: Vec<crate::ids::Digest32>,
    },
    /// Refused.
    Rejected {
        /// The check that failed.
        reason: RejectReason,
        /// Human-readable detail.
        detail: String,
    },
}

/// Broker → client, unsolicited, on delivery streams.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Push {
    /// A message for a subscription.
    Delivery {
        /// Subscription name.
        name: String,
        /// Message-log index (what `Ack` names).
        log_index: u64,
        /// Envelope wire bytes exactly as published.
        #[serde(with = "serde_bytes")]
        envelope: Vec<u8>,
    },
    /// A receipt for one of this node's messages.
    Receipt(Receipt),
    /// A case deadline is near or passed and this node has not answered.
    Reminder(crate::case::Reminder),
    /// A newer roster came into force.
    Roster {
        /// Signed roster wire bytes.
        #[serde(with = "serde_bytes")]
        roster: Vec<u8>,
    },
}
