//! The Special Commission's finding: what its members sign (by hash) in an attribution
//! case. The finding itself travels encrypted; its hash, its characterisation and its
//! remedy's period are in each signer's header, so the broker and auditors can count
//! signatures of the same finding and track the remedy's deadline without reading it.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::CaseTag;
use crate::cbor;
use crate::error::{Error, echo};
use crate::ids::{Digest32, MessageId, NodeId};
use crate::keys::SignPublic;

use super::Stage;

/// The legal characterisation of what a finding attributes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Characterisation {
    /// A breach of the ceasefire.
    CeasefireBreach,
    /// An armed attack or act of aggression: an adopted finding of it may fire a
    /// snapback.
    ArmedAttack,
}

/// Whom a finding holds responsible.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Verdict {
    /// This party (a party to the conflict, in words: a state or a force).
    Responsible(String),
    /// The breach happened but cannot be attributed.
    NotAttributable,
    /// The reports do not establish what happened.
    InsufficientEvidence,
}

/// What the responsible party must do, and how long after adoption it has.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Remedy {
    /// What must be done.
    pub text: String,
    /// Due this long after the finding is adopted (ms).
    pub within_ms: u64,
}

/// A finding of the Special Commission: every member who adopts it signs the hash of
/// these exact fields.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Finding {
    /// The attribution case it decides (so a finding cannot be replayed into another).
    pub case: MessageId,
    /// Whom it holds responsible.
    pub verdict: Verdict,
    /// What it was.
    pub characterisation: Characterisation,
    /// What must be done, by when.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remedy: Option<Remedy>,
    /// The nodes that owe the remedy (none: the responsible party is not on the network;
    /// the members then report compliance).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub owed_by: Vec<NodeId>,
    /// The reasoning, citing the reports.
    pub reasoning: String,
}

/// The hash a member signs: SHA-256 over a domain tag and the finding's CBOR.
pub fn finding_hash(finding: &Finding) -> Digest32 {
    let bytes = cbor::encode("finding", finding).unwrap_or_default();
    Digest32::of(&[b"ewx/v1/finding", &bytes])
}

impl Finding {
    /// The header tag of a member's signature on this finding in its case.
    pub fn tag(&self) -> CaseTag {
        let mut tag = CaseTag::reply(self.case, super::CaseType::Attribution, Stage::Finding);
        tag.statement = Some(finding_hash(self));
        tag.characterisation = Some(self.characterisation);
        tag.within_ms = self.remedy.as_ref().map(|r| r.within_ms);
        tag.parties = self.owed_by.clone();
        tag
    }

    /// Does a signed header's tag say what this finding says? (A party checks each
    /// signature's contents against the header the broker counted.)
    pub fn matches(&self, tag: &CaseTag) -> bool {
        tag == &self.tag()
    }

    /// Check the fields make sense.
    ///
    /// # Errors
    /// `Malformed` naming the field.
    pub fn validate(&self) -> crate::Result<()> {
        let bad = |m: &str| {
            Err(Error::Malformed {
                what: "finding",
                reason: m.into(),
            })
        };
        if let Verdict::Responsible(who) = &self.verdict
            && who.trim().is_empty()
        {
            return bad("a finding of responsibility names the party responsible");
        }
        if self.reasoning.trim().is_empty() {
            return bad("a finding gives its reasoning");
        }
        if !self.owed_by.is_empty() && self.remedy.is_none() {
            return bad("nodes owe a remedy only when the finding sets one");
        }
        Ok(())
    }
}

/// A member's signed finding or dissent in an attribution case.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Vote {
    /// Who.
    pub node: NodeId,
    /// With which key (two members sharing a key count once).
    pub key: SignPublic,
    /// `Finding` or `Dissent`.
    pub stage: Stage,
    /// The finding signed, or dissented from.
    pub hash: Digest32,
    /// The terms in the signer's header (on a finding).
    pub characterisation: Option<Characterisation>,
    /// The remedy's period in the signer's header (on a finding).
    pub within_ms: Option<u64>,
    /// The nodes owing the remedy, in the signer's header (on a finding).
    pub owed_by: Vec<NodeId>,
    /// Where it is in the message log.
    pub log_index: u64,
    /// When it was logged.
    pub log_ms: u64,
}

impl Characterisation {
    /// Kebab-case name (command line, JSON).
    pub fn as_str(self) -> &'static str {
        match self {
            Characterisation::CeasefireBreach => "ceasefire-breach",
            Characterisation::ArmedAttack => "armed-attack",
        }
    }
}

impl fmt::Display for Characterisation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Characterisation {
    type Err = Error;
    fn from_str(s: &str) -> crate::Result<Self> {
        [
            Characterisation::CeasefireBreach,
            Characterisation::ArmedAttack,
        ]
        .into_iter()
        .find(|c| c.as_str() == s)
        .ok_or_else(|| Error::InvalidLabel {
            value: echo(s),
            reason: "characterisation is ceasefire-breach or armed-attack",
        })
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Verdict::Responsible(who) => write!(f, "{who} responsible"),
            Verdict::NotAttributable => f.write_str("not attributable"),
            Verdict::InsufficientEvidence => f.write_str("insufficient evidence"),
        }
    }
}
