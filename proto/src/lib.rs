//! # ewx-proto — the sans-IO core of the Compact early-warning exchange
//!
//! Everything that can be decided without I/O: who is who ([`ids`], [`keys`], [`roster`]),
//! who may read and publish what ([`labels`], [`access`], [`topic`]), how a message is
//! sealed, signed and opened ([`envelope`], [`seal`], [`payload`]), how it travels
//! ([`frame`]), what an exercise notice must declare ([`exercise`]) and a breach report says
//! ([`ceasefire`]), and how the record of
//! it is kept verifiable ([`audit`], [`merkle`],
//! [`checkpoint`], [`receipt`]), and the Compact's mechanism as one fold over a log
//! ([`case`]).
//!
//! This crate does **no** I/O: no sockets, no files, no clock, no global RNG. Callers pass
//! `now_ms`, an `impl CryptoRngCore` and keys; they read and write files themselves. That
//! keeps every rule here unit- and property-testable and lets the broker, the client and
//! the auditor share one implementation of each rule.
//!
//! ## Secret key file format (`ewx-secret-key v1`)
//! UTF-8 text; blank lines and lines starting with `#` are ignored. The first other line
//! is `ewx-secret-key v1`; then exactly one each of `node <NodeId>`, `ed25519 <64 hex: the
//! RFC 8032 secret seed>`, `x25519 <64 hex: the RFC 7748 scalar>`. See [`keys::NodeKeys`].
//!
//! ## Signed byte strings
//! Every signature covers a domain tag, then length-prefixed (u64 big-endian) bytes:
//! envelopes `"ewx/v1/envelope" ‖ len(header) ‖ header ‖ ciphertext`, rosters
//! `"ewx/v1/roster" ‖ len ‖ body`, checkpoints `"ewx/v1/checkpoint" ‖ len ‖ body`,
//! witness co-signatures `"ewx/v1/cosign" ‖ len ‖ body`, receipts
//! `"ewx/v1/receipt" ‖ id ‖ hash ‖ len(by) ‖ by ‖ time`.
#![forbid(unsafe_code)]

pub mod access;
pub mod audit;
pub mod case;
mod cbor;
pub mod ceasefire;
pub mod checkpoint;
pub mod envelope;
mod error;
pub mod exercise;
pub mod frame;
pub mod ids;
pub mod keys;
pub mod labels;
pub mod merkle;
pub mod payload;
pub mod receipt;
pub mod roster;
pub mod seal;
pub mod topic;

pub use access::{Grants, may_read};
pub use envelope::{Envelope, Header, verify_batch};
pub use error::{Error, Result};
pub use ids::{Digest32, MessageId, NodeId};
pub use keys::NodeKeys;
pub use labels::{Compartment, Labels, Level};
pub use payload::{Kind, Payload, Precedence};
pub use roster::{Role, Roster, SignedRoster};
pub use seal::{Draft, EpochPolicy, Opener, Sealer, open};
pub use topic::{Topic, TopicPattern};
