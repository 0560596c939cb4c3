//! # ewx-client — client library and `ewx` CLI (not yet built)
//!
//! Will hold the connection, publish/subscribe with resume, receipts, the auditor's
//! verifier, the CLI, `demo` and `bench`. Until the client issue lands it only names the
//! commands the CLI will offer, so `ewx --help` can say what is coming.

/// Commands the `ewx` CLI will offer, with one line each.
pub const COMMANDS: &[(&str, &str)] = &[
    ("demo", "run the Compact demo network on loopback"),
    ("keygen", "generate a node's ed25519 + x25519 keys"),
    ("roster", "create, sign, verify and show rosters"),
    ("publish", "seal, sign and publish a message"),
    ("subscribe", "receive, verify and decrypt messages"),
    ("audit", "verify the audit log, receipts and bundles"),
    ("bench", "measure throughput and latency"),
];
