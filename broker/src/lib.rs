//! # ewx-broker — the exchange's broker (not yet built)
//!
//! Will hold the QUIC server, sessions, routing and access checks, the sled store and the
//! audit writer (see `shared/DESIGN.md`). For now it only states what it will serve, so
//! the workspace, CLI and CI can be laid down first.

/// The protocol version this broker will speak (the ALPN is `ewx/1`).
pub const ALPN: &[u8] = b"ewx/1";
