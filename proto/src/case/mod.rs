//! Cases: the Compact's mechanism as threads of signed envelopes. An opening message and
//! the replies that name it make a case; its state is one pure fold ([`Case`], many of
//! them in a [`CaseBook`]) over the case's messages in log order, with the broker's log
//! times. The broker runs the fold from headers only (the [`CaseTag`] in the signed
//! header, never the encrypted contents), every party runs it over what it received, and
//! auditors run it over the audit log, so none of them can disagree about who was asked,
//! who answered, who is late, and which deadlines passed.
//!
//! Four case types: a **consultation** (Ukraine asks the guarantors; each acknowledges,
//! consults within 24 h and decides within 72 h of the request); a **snapback** (an event
//! attested by k of n distinct authorised attesters, or an adopted commission finding of
//! armed attack, fires the case; every sanctions partner must then answer "reimposed"
//! within the case's deadline); an **exercise** (a Vienna Document notice, its amendments
//! and corrections, and the observation invitation the invited partners answer by a
//! deadline); an **attribution** (a Special Commission member cites ceasefire reports;
//! members sign a finding's hash, k of them adopt it, dissents are kept, and the remedy's
//! deadline is tracked).

mod book;
mod commission;
mod fold;
mod panel;
mod state;
mod wire;

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::{Error, echo};
use crate::ids::{Digest32, MessageId, NodeId};

pub use book::{CaseBook, Due, Report};
pub use commission::{Characterisation, Finding, Remedy, Verdict, Vote, finding_hash};
pub use state::{Answer, Attestation, Case, CaseMessage, Party, Status};
pub use wire::{CaseEntry, CaseThread, Reminder, THREAD_PAGE, ThreadMessage};

/// Consultations must be held within 24 h of the request.
pub const CONSULT_WITHIN_MS: u64 = 24 * 3600 * 1000;
/// Guarantors must decide within 72 h of the request.
pub const DECIDE_WITHIN_MS: u64 = 72 * 3600 * 1000;
/// Default time sanctions partners have to reimpose once a snapback fires.
pub const SNAPBACK_WITHIN_MS: u64 = 24 * 3600 * 1000;
/// Shortest answer period a snapback may set (a deadline must lie after the commit that
/// starts it, so that auditors can place it exactly).
pub const MIN_WITHIN_MS: u64 = 1000;
/// Longest answer period a snapback may set (a year).
pub const MAX_WITHIN_MS: u64 = 366 * 24 * 3600 * 1000;
/// Most parties one case may name.
pub const MAX_PARTIES: usize = 256;
/// Most messages one case message may cite.
pub const MAX_CITES: usize = 64;

/// What mechanism a case follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CaseType {
    /// Request → consult within 24 h → decide within 72 h.
    Consultation,
    /// k-of-n attested event (or an adopted finding of armed attack) → every sanctions
    /// partner reimposes within the deadline.
    Snapback,
    /// A notified exercise: amendments and corrections by the notifying state, and the
    /// invited observers' answers by a deadline.
    Exercise,
    /// A Special Commission attribution: cited reports → a finding adopted by k members
    /// → the remedy by its deadline.
    Attribution,
}

impl CaseType {
    /// All case types.
    pub const ALL: [CaseType; 4] = [
        CaseType::Consultation,
        CaseType::Snapback,
        CaseType::Exercise,
        CaseType::Attribution,
    ];

    /// Lower-case name (command line, JSON).
    pub fn as_str(self) -> &'static str {
        match self {
            CaseType::Consultation => "consultation",
            CaseType::Snapback => "snapback",
            CaseType::Exercise => "exercise",
            CaseType::Attribution => "attribution",
        }
    }
}

impl fmt::Display for CaseType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for CaseType {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        CaseType::ALL
            .into_iter()
            .find(|t| t.as_str() == s)
            .ok_or_else(|| Error::InvalidLabel {
                value: echo(s),
                reason: "unknown case type (consultation, snapback, exercise, attribution)",
            })
    }
}

/// What one case message does. Party stages of a consultation follow each other in
/// order (acknowledged, consulted, decided); the others belong to the opener or to the
/// attesters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Stage {
    /// The opening message: a consultation request, or a snapback trigger (which is also
    /// its sender's attestation).
    Open,
    /// A guarantor received the request.
    Acknowledged,
    /// A guarantor held consultations (due 24 h after the request).
    Consulted,
    /// A guarantor decided: join, decline or a measure, in the encrypted contents (due
    /// 72 h after the request).
    Decided,
    /// The opener names more parties (in the tag's `parties`).
    AddParties,
    /// The opener withdraws the case; nothing further is accepted.
    Withdrawn,
    /// An attester signs the snapback's statement hash.
    Attest,
    /// A sanctions partner has reimposed (the date in force is in the contents).
    Reimposed,
    /// The notifying state amends its exercise notice (a new notice in the contents).
    Amended,
    /// The notifying state corrects an error in its notice (a new notice in the contents).
    Corrected,
    /// An invited observer answers the invitation (accept or decline in the contents).
    Answered,
    /// A commission member signs a finding's hash (the finding in the contents).
    Finding,
    /// A commission member signs a dissent from a finding (whose hash the tag names).
    Dissent,
    /// A party owing the remedy of an adopted finding reports it (or, with none named,
    /// a commission member reports the compliance assessment).
    Remedied,
}

impl Stage {
    /// Every stage.
    pub const ALL: [Stage; 14] = [
        Stage::Open,
        Stage::Acknowledged,
        Stage::Consulted,
        Stage::Decided,
        Stage::AddParties,
        Stage::Withdrawn,
        Stage::Attest,
        Stage::Reimposed,
        Stage::Amended,
        Stage::Corrected,
        Stage::Answered,
        Stage::Finding,
        Stage::Dissent,
        Stage::Remedied,
    ];

    /// Lower-case name (command line, JSON).
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Open => "open",
            Stage::Acknowledged => "acknowledged",
            Stage::Consulted => "consulted",
            Stage::Decided => "decided",
            Stage::AddParties => "add-parties",
            Stage::Withdrawn => "withdrawn",
            Stage::Attest => "attest",
            Stage::Reimposed => "reimposed",
            Stage::Amended => "amended",
            Stage::Corrected => "corrected",
            Stage::Answered => "answered",
            Stage::Finding => "finding",
            Stage::Dissent => "dissent",
            Stage::Remedied => "remedied",
        }
    }

    /// The stages each party answers in a case of `case_type`, in order.
    pub fn party_stages(case_type: CaseType) -> &'static [Stage] {
        match case_type {
            CaseType::Consultation => &[Stage::Acknowledged, Stage::Consulted, Stage::Decided],
            CaseType::Snapback => &[Stage::Reimposed],
            CaseType::Exercise => &[Stage::Answered],
            CaseType::Attribution => &[Stage::Remedied],
        }
    }
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Stage {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        Stage::ALL
            .into_iter()
            .find(|t| t.as_str() == s)
            .ok_or_else(|| Error::InvalidLabel {
                value: echo(s),
                reason: "unknown case stage (open, acknowledged, consulted, decided, \
                         add-parties, withdrawn, attest, reimposed, amended, corrected, \
                         answered, finding, dissent, remedied)",
            })
    }
}

/// What the signed header says about a message's case: all the broker learns of it.
/// Positions, decisions, measures and dates stay in the encrypted contents.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CaseTag {
    /// The case replied to: the opening message's id. Absent on the opening message,
    /// whose own id names the case.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub case: Option<MessageId>,
    /// The mechanism.
    pub case_type: CaseType,
    /// What this message does in it.
    pub stage: Stage,
    /// On `Open` and `AddParties`: who is expected to answer (each must be able to read
    /// the case). On `Finding`: the nodes that owe the remedy (may be none).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub parties: Vec<NodeId>,
    /// Snapback `Open` and `Attest`: the hash of the attested statement (the event).
    /// `Finding`: the finding's hash; `Dissent`: the hash of the finding dissented from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub statement: Option<Digest32>,
    /// Snapback `Open`: how long the parties have to reimpose once the case fires (ms).
    /// Exercise `Open` with invited observers: how long they have to answer.
    /// `Finding` with a remedy: how long after adoption the remedy is due.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub within_ms: Option<u64>,
    /// Attribution `Open`: the ceasefire reports it rests on. Snapback `Open`: the
    /// attribution case whose adopted finding (by its hash) fires it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cites: Vec<Citation>,
    /// `Finding`: its legal characterisation (the fold needs it to know whether the
    /// finding may fire a snapback; everything else of the finding stays encrypted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub characterisation: Option<Characterisation>,
}

/// A message cited by another: its id and the hash of its envelope (or, citing an
/// attribution case, the hash of its adopted finding).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Citation {
    /// The cited message (or case).
    pub id: MessageId,
    /// Its envelope hash (or the adopted finding's hash).
    pub hash: Digest32,
}

impl CaseTag {
    /// The tag of an opening message.
    pub fn open(case_type: CaseType, parties: Vec<NodeId>) -> Self {
        Self {
            case: None,
            case_type,
            stage: Stage::Open,
            parties,
            statement: None,
            within_ms: None,
            cites: Vec::new(),
            characterisation: None,
        }
    }

    /// The tag of a reply to `case`.
    pub fn reply(case: MessageId, case_type: CaseType, stage: Stage) -> Self {
        Self {
            case: Some(case),
            case_type,
            stage,
            parties: Vec::new(),
            statement: None,
            within_ms: None,
            cites: Vec::new(),
            characterisation: None,
        }
    }
}

/// Why the fold refuses a case message: the same at the broker (which then refuses the
/// publish with this reason and an audit entry) and at every end (which flags it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum RefusalKind {
    /// The tag does not fit its stage or type (missing or extra fields, empty parties…).
    BadTag,
    /// A reply names a case the log does not hold.
    UnknownCase,
    /// A reply by a node that is not a party of the case (or not its opener).
    NotAParty,
    /// A party's stage does not follow its previous one (or repeats it).
    StageOutOfOrder,
    /// An attestation (or snapback trigger) by a node the roster does not name as an
    /// attester.
    NotAnAttester,
    /// A second attestation by the same node or the same key.
    DuplicateAttestation,
    /// A reply readable by nodes that may not read the case.
    LabelsWider,
    /// A reply to a withdrawn case.
    Closed,
    /// A party that may not read the case, or a node not allowed to open one.
    NotPermitted,
    /// A finding, dissent or attribution by a node the roster does not name as a
    /// commission member.
    NotAMember,
    /// A citation the log does not bear out: an unknown message, a wrong hash, or a
    /// finding not adopted (or not of armed attack) cited to fire a snapback.
    BadCitation,
}

impl RefusalKind {
    /// Lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            RefusalKind::BadTag => "bad case tag",
            RefusalKind::UnknownCase => "unknown case",
            RefusalKind::NotAParty => "not a party",
            RefusalKind::StageOutOfOrder => "stage out of order",
            RefusalKind::NotAnAttester => "not an attester",
            RefusalKind::DuplicateAttestation => "duplicate attestation",
            RefusalKind::LabelsWider => "labels wider than the case's",
            RefusalKind::Closed => "case withdrawn",
            RefusalKind::NotPermitted => "not permitted in a case",
            RefusalKind::NotAMember => "not a commission member",
            RefusalKind::BadCitation => "bad citation",
        }
    }
}

/// A refused case message: the kind and a sentence naming what was wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// Which rule.
    pub kind: RefusalKind,
    /// What exactly.
    pub detail: String,
}

impl Refusal {
    pub(crate) fn new(kind: RefusalKind, detail: impl Into<String>) -> Self {
        Self {
            kind,
            detail: detail.into(),
        }
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.kind.as_str(), self.detail)
    }
}

impl std::error::Error for Refusal {}

/// Every party a case message names must get the content key: be among the header's
/// recipients (the read rule already decides who may be one).
///
/// # Errors
/// `NotPermitted` naming the first party without a wrapped key.
pub fn check_recipients(header: &crate::Header) -> Result<(), Refusal> {
    let Some(tag) = &header.case else {
        return Ok(());
    };
    match tag.parties.iter().find(|p| header.wrapped_for(p).is_none()) {
        Some(p) => Err(Refusal::new(
            RefusalKind::NotPermitted,
            format!("party {p} is named but gets no content key"),
        )),
        None => Ok(()),
    }
}

/// The hash an attester signs (in its header): SHA-256 over a domain tag and the
/// statement's text, so the same words give the same hash at every attester.
pub fn statement_hash(statement: &str) -> Digest32 {
    Digest32::of(&[b"ewx/v1/statement", statement.as_bytes()])
}

/// A deadline of a case: a party stage due at a time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Deadline {
    /// The stage due.
    pub stage: Stage,
    /// When (broker log time, ms since the Unix epoch).
    pub due_ms: u64,
}
