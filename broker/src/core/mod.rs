//! The broker's decisions, as plain synchronous code tested without sockets: event in,
//! decision out. The QUIC side ([`crate::net`]) and the log ([`crate::log`]) call these;
//! nothing here does I/O or reads a clock (time is passed in as `now_ms`).
//!
//! - [`admission`]: whether to accept a publish, a receipt, a co-signature or a roster
//!   update — every check of DESIGN.md, each with its own reason;
//! - [`replay`]: the per-sender anti-replay window;
//! - [`limiter`]: how a flood of rejections is folded so it cannot grow the audit log
//!   faster than the broker writes it;
//! - [`subscription`]: who may subscribe to what, where each lane starts, which acks
//!   advance a cursor;
//! - [`audit_access`]: who may read which audit entry, envelope and proof;
//! - [`routing`]: which delivery lanes want a committed message, decided once per
//!   message;
//! - [`cases`]: the case index (the proto case fold from headers), its deadlines and
//!   reminders.

pub mod admission;
pub mod audit_access;
pub mod cases;
#[cfg(test)]
pub(crate) mod fixture;
pub mod limiter;
pub mod replay;
pub mod routing;
pub mod subscription;

use ewx_proto::Error as ProtoError;
use ewx_proto::frame::{RejectReason, Response};

/// A refusal: the reason code the client gets and a sentence for people.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// Which check failed.
    pub reason: RejectReason,
    /// What exactly.
    pub detail: String,
}

impl Rejection {
    /// A rejection.
    pub fn new(reason: RejectReason, detail: String) -> Self {
        Self { reason, detail }
    }

    /// The answer that tells the client.
    pub fn into_response(self) -> Response {
        Response::Rejected {
            reason: self.reason,
            detail: self.detail,
        }
    }
}

impl std::fmt::Display for Rejection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}: {}", self.reason, self.detail)
    }
}

/// The reason code for a protocol error met while checking a request.
pub fn reason_for(e: &ProtoError) -> RejectReason {
    match e {
        ProtoError::TooLarge { .. } => RejectReason::TooLarge,
        ProtoError::UnknownNode(_) | ProtoError::Revoked(_) => RejectReason::UnknownSender,
        ProtoError::BadSignature { .. } => RejectReason::BadSignature,
        ProtoError::NotPermitted(_) => RejectReason::NotPermitted,
        ProtoError::Time(_) => RejectReason::ClockSkew,
        _ => RejectReason::Malformed,
    }
}

/// A protocol error met while checking a request, as a rejection.
pub fn reject(e: ProtoError) -> Rejection {
    Rejection::new(reason_for(&e), e.to_string())
}
