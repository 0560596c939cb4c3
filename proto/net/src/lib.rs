//! # ewx-net — the IO half of the ewx protocol
//!
//! What both ends of a connection need and `ewx-proto` may not do: TLS 1.3 for QUIC with
//! identities pinned to the roster ([`tls`]), length-prefixed frames over QUIC streams
//! with size limits and deadlines ([`wire`]), the key and roster files ([`files`], with
//! the 0600 check), the wall clock ([`clock`]) and the application close codes
//! ([`CloseCode`]); with the `https` feature, TLS for the local HTTP listeners (`https`). The broker and the client both stand on it; it knows neither.
//!
//! It does **not** decide anything about messages (that is `ewx-proto`), route or store
//! them (the broker), or seal and open them (the client).
#![forbid(unsafe_code)]

pub mod clock;
mod close;
mod error;
pub mod files;
#[cfg(feature = "https")]
pub mod https;
pub mod tls;
pub mod wire;

pub use clock::{Clock, now_ms};
pub use close::CloseCode;
pub use error::{Error, Result};
pub use tls::{ALPN, RosterCell, SERVER_NAME, TransportLimits};
