//! What a message says, as typed structures: one per `Kind`. The publisher encrypts the
//! CBOR of a [`Payload`]; the header's `kind` must agree with the variant found inside.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::cbor;
pub use crate::ceasefire::CeasefireReport;
use crate::error::{Error, Result, echo};

/// Deadline for guarantors to hold consultations after a request (24 h).
pub const CONSULT_WITHIN_MS: u64 = 24 * 3600 * 1000;
/// Deadline for guarantors to decide after a request (72 h).
pub const DECIDE_WITHIN_MS: u64 = 72 * 3600 * 1000;

/// What kind of message an envelope carries (in the clear, signed).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Kind {
    /// Threat assessment or early warning.
    Bulletin,
    /// Notification of a military exercise (Vienna Document fields).
    ExerciseNotice,
    /// Ukraine asks guarantors for consultations after an armed attack.
    ConsultationRequest,
    /// A guarantor's acknowledgement or decision.
    ConsultationResponse,
    /// A sanctions measure comes into force (e.g. a snapback).
    SanctionsTrigger,
    /// An observed ceasefire breach.
    CeasefireReport,
    /// A reply in a case (acknowledgement, decision, attestation, reimposition…).
    CaseReply,
    /// A Special Commission finding, signed by a member.
    Finding,
}

impl Kind {
    /// All kinds.
    pub const ALL: [Kind; 8] = [
        Kind::Bulletin,
        Kind::ExerciseNotice,
        Kind::ConsultationRequest,
        Kind::ConsultationResponse,
        Kind::SanctionsTrigger,
        Kind::CeasefireReport,
        Kind::CaseReply,
        Kind::Finding,
    ];

    /// Kebab-case name used on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Bulletin => "bulletin",
            Kind::ExerciseNotice => "exercise-notice",
            Kind::ConsultationRequest => "consultation-request",
            Kind::ConsultationResponse => "consultation-response",
            Kind::SanctionsTrigger => "sanctions-trigger",
            Kind::CeasefireReport => "ceasefire-report",
            Kind::CaseReply => "case-reply",
            Kind::Finding => "finding",
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Kind {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Kind::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| Error::InvalidLabel {
                value: echo(s),
                reason: "unknown kind (bulletin, exercise-notice, consultation-request, \
                         consultation-response, sanctions-trigger, ceasefire-report, case-reply, \
                         finding)",
            })
    }
}

/// Delivery precedence, highest first: FLASH never waits behind ROUTINE.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Precedence {
    /// Ordinary traffic.
    Routine,
    /// Needs attention today.
    Priority,
    /// Needs attention now.
    Immediate,
    /// Life-or-death warning: deliver before anything else.
    Flash,
}

impl Precedence {
    /// All, lowest first.
    pub const ALL: [Precedence; 4] = [
        Precedence::Routine,
        Precedence::Priority,
        Precedence::Immediate,
        Precedence::Flash,
    ];

    /// Upper-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Precedence::Routine => "ROUTINE",
            Precedence::Priority => "PRIORITY",
            Precedence::Immediate => "IMMEDIATE",
            Precedence::Flash => "FLASH",
        }
    }
}

impl fmt::Display for Precedence {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Precedence {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        let up = s.to_ascii_uppercase();
        Precedence::ALL
            .into_iter()
            .find(|p| p.as_str() == up)
            .ok_or_else(|| Error::InvalidLabel {
                value: echo(s),
                reason: "precedence must be FLASH, IMMEDIATE, PRIORITY or ROUTINE",
            })
    }
}

/// A threat assessment or early warning.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Bulletin {
    /// One line a duty officer reads first.
    pub headline: String,
    /// The assessment.
    pub body: String,
    /// Affected area (oblast, sea area, coordinates).
    #[serde(default)]
    pub area: Option<String>,
    /// Time of the observed or expected event (ms since the Unix epoch).
    #[serde(default)]
    pub event_ms: Option<u64>,
    /// Analyst confidence: low, moderate, high.
    #[serde(default)]
    pub confidence: Option<String>,
}

/// Notification of a military exercise, with the fields of Vienna Document 2011 ch. V
/// (its thresholds and flags are in [`crate::exercise`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExerciseNotice {
    /// Designation of the activity.
    pub name: String,
    /// General purpose.
    pub purpose: String,
    /// Participating states.
    pub states: Vec<String>,
    /// Level of command organising it.
    pub command_level: String,
    /// Start (ms since the Unix epoch).
    pub start_ms: u64,
    /// End (ms since the Unix epoch).
    pub end_ms: u64,
    /// Geographic area, with coordinates.
    pub area: String,
    /// Total personnel.
    pub troops: u32,
    /// Battle tanks.
    #[serde(default)]
    pub tanks: u32,
    /// Armoured combat vehicles.
    #[serde(default)]
    pub armoured_vehicles: u32,
    /// Artillery pieces of 100 mm calibre and above.
    #[serde(default)]
    pub artillery: u32,
    /// Combat aircraft.
    #[serde(default)]
    pub aircraft: u32,
    /// Helicopters.
    #[serde(default)]
    pub helicopters: u32,
    /// Planned air sorties.
    #[serde(default)]
    pub sorties: u32,
    /// Airborne (parachute) troops.
    #[serde(default)]
    pub airborne_troops: u32,
    /// Amphibious troops.
    #[serde(default)]
    pub amphibious_troops: u32,
    /// Troops per participating state.
    #[serde(default)]
    pub troops_by_state: std::collections::BTreeMap<String, u32>,
    /// Corners of the area, in micro-degrees (latitude, longitude).
    #[serde(default)]
    pub coordinates: Vec<(i32, i32)>,
    /// The planned phases, in order.
    #[serde(default)]
    pub phases: Vec<String>,
    /// Relation to other activities, if any.
    #[serde(default)]
    pub related_activities: Option<String>,
    /// The entry of the annual calendar this activity was announced under.
    #[serde(default)]
    pub calendar_ref: Option<String>,
    /// Observers from the participating states are invited.
    #[serde(default)]
    pub observation_invited: bool,
}

/// Ukraine's request for consultations after an armed attack.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsultationRequest {
    /// Case reference shared by the request and all responses.
    pub case_id: String,
    /// What happened.
    pub summary: String,
    /// When the attack took place.
    pub attack_ms: u64,
    /// When the request was made.
    pub requested_ms: u64,
    /// Consultations must be held by this time (request + 24 h).
    pub consult_by_ms: u64,
    /// A decision is due by this time (request + 72 h).
    pub decide_by_ms: u64,
}

impl ConsultationRequest {
    /// A request made at `requested_ms`, with the Compact's 24 h / 72 h deadlines.
    pub fn new(case_id: String, summary: String, attack_ms: u64, requested_ms: u64) -> Self {
        Self {
            case_id,
            summary,
            attack_ms,
            requested_ms,
            consult_by_ms: requested_ms.saturating_add(CONSULT_WITHIN_MS),
            decide_by_ms: requested_ms.saturating_add(DECIDE_WITHIN_MS),
        }
    }

    /// Are the deadlines the Compact's?
    ///
    /// # Errors
    /// `Time` naming the wrong deadline.
    pub fn check_deadlines(&self) -> Result<()> {
        let want = Self::new(String::new(), String::new(), 0, self.requested_ms);
        if self.consult_by_ms != want.consult_by_ms || self.decide_by_ms != want.decide_by_ms {
            return Err(Error::Time(
                "consultation deadlines must be 24 h and 72 h after the request".into(),
            ));
        }
        Ok(())
    }
}

/// A guarantor's answer to a consultation request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsultationResponse {
    /// The request's case reference.
    pub case_id: String,
    /// Where the guarantor stands.
    pub stance: Stance,
    /// Free text.
    pub statement: String,
}

/// Steps of a guarantor's response.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Stance {
    /// Received; consultations will be held.
    Acknowledged,
    /// Consultations held.
    Consulted,
    /// Decision taken (see statement).
    Decided,
}

/// A sanctions measure coming into force.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SanctionsTrigger {
    /// Sanctions regime (e.g. a UN Security Council resolution).
    pub regime: String,
    /// The measure.
    pub measure: String,
    /// When it takes effect.
    pub effective_ms: u64,
    /// For a snapback: the statement of the event attested (its hash is in the header).
    #[serde(default)]
    pub statement: Option<String>,
}

/// What a guarantor decided in a consultation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Decision {
    /// Joins the collective response.
    Join,
    /// Declines to take part.
    Decline,
    /// Takes a measure of its own (described in the text).
    Measure,
    /// Accepts (an observation invitation).
    Accept,
}

impl FromStr for Decision {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "join" => Ok(Decision::Join),
            "decline" => Ok(Decision::Decline),
            "measure" => Ok(Decision::Measure),
            "accept" => Ok(Decision::Accept),
            _ => Err(Error::InvalidLabel {
                value: echo(s),
                reason: "decision must be join, decline or measure",
            }),
        }
    }
}

/// A reply in a case; its stage is in the signed header (the broker sees that much),
/// what it says is here.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CaseReply {
    /// What the party says.
    pub text: String,
    /// A consultation decision: join, decline or a measure.
    #[serde(default)]
    pub decision: Option<Decision>,
    /// A snapback reimposition: the date the sanctions are in force (ms since the epoch).
    #[serde(default)]
    pub in_force_ms: Option<u64>,
    /// A snapback trigger or attestation: the statement attested (its hash is in the
    /// header).
    #[serde(default)]
    pub statement: Option<String>,
}

/// The decrypted content of an envelope.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Payload {
    /// See [`Bulletin`].
    Bulletin(Bulletin),
    /// See [`ExerciseNotice`].
    ExerciseNotice(ExerciseNotice),
    /// See [`ConsultationRequest`].
    ConsultationRequest(ConsultationRequest),
    /// See [`ConsultationResponse`].
    ConsultationResponse(ConsultationResponse),
    /// See [`SanctionsTrigger`].
    SanctionsTrigger(SanctionsTrigger),
    /// See [`CeasefireReport`].
    CeasefireReport(CeasefireReport),
    /// A STIX 2.1 bundle, as JSON text, for kind `Bulletin`.
    Stix(String),
    /// See [`CaseReply`].
    CaseReply(CaseReply),
    /// See [`crate::case::Finding`].
    Finding(crate::case::Finding),
}

impl Payload {
    /// The header kind this payload belongs under.
    pub fn kind(&self) -> Kind {
        match self {
            Payload::Bulletin(_) | Payload::Stix(_) => Kind::Bulletin,
            Payload::ExerciseNotice(_) => Kind::ExerciseNotice,
            Payload::ConsultationRequest(_) => Kind::ConsultationRequest,
            Payload::ConsultationResponse(_) => Kind::ConsultationResponse,
            Payload::SanctionsTrigger(_) => Kind::SanctionsTrigger,
            Payload::CeasefireReport(_) => Kind::CeasefireReport,
            Payload::CaseReply(_) => Kind::CaseReply,
            Payload::Finding(_) => Kind::Finding,
        }
    }

    /// Check what a payload type requires beyond decoding (a ceasefire report's
    /// coherence). Sealing and opening both check it.
    ///
    /// # Errors
    /// `Malformed` naming the problem.
    pub fn validate(&self) -> Result<()> {
        match self {
            Payload::CeasefireReport(r) => r.validate(),
            Payload::Finding(f) => f.validate(),
            _ => Ok(()),
        }
    }

    /// CBOR bytes to be sealed.
    ///
    /// # Errors
    /// Only on an encoder bug.
    pub fn encode(&self) -> Result<Vec<u8>> {
        cbor::encode("payload", self)
    }

    /// Decode decrypted bytes and check they match the header's kind.
    ///
    /// # Errors
    /// `Malformed`/`TrailingBytes`, or `KindMismatch`.
    pub fn decode(bytes: &[u8], kind: Kind) -> Result<Self> {
        let p: Payload = cbor::decode("payload", bytes, bytes.len())?;
        p.validate()?;
        if p.kind() != kind {
            return Err(Error::KindMismatch {
                header: kind.to_string(),
                payload: p.kind().to_string(),
            });
        }
        Ok(p)
    }
}
