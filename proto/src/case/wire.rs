//! What the broker sends about cases: a reminder to a party that has not answered, and a
//! case's thread (its envelopes with their log times) for a party to fold itself.

use serde::{Deserialize, Serialize};

use super::{CaseType, Stage};
use crate::ids::{MessageId, NodeId};

/// Most thread messages one `CaseThread` answer carries (the client pages on).
pub const THREAD_PAGE: usize = 256;

/// A deadline is near (or has passed) and this party has not answered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Reminder {
    /// The case.
    pub case: MessageId,
    /// Its type.
    pub case_type: CaseType,
    /// The stage due.
    pub stage: Stage,
    /// When it is (was) due, broker log time.
    pub due_ms: u64,
    /// When the broker sent this reminder.
    pub sent_ms: u64,
}

/// One message of a case thread.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ThreadMessage {
    /// Message-log index.
    pub log_index: u64,
    /// The broker's log time (also in its audit entry).
    pub log_ms: u64,
    /// The envelope as published (absent: pruned by retention).
    #[serde(with = "serde_bytes")]
    pub envelope: Option<Vec<u8>>,
}

/// A case's thread, or a page of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CaseThread {
    /// The case.
    pub case: MessageId,
    /// Messages in log order, from the page's start.
    pub messages: Vec<ThreadMessage>,
    /// More messages follow: ask again after the last index here.
    pub more: bool,
    /// Deadlines the broker recorded as passed, with who was missing.
    pub recorded: Vec<(Stage, Vec<NodeId>)>,
}

/// A case the asking node may read, for listing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CaseEntry {
    /// The case.
    pub case: MessageId,
    /// Its type.
    pub case_type: CaseType,
    /// When it was opened (log time).
    pub opened_ms: u64,
    /// Messages in its thread.
    pub messages: u64,
}
