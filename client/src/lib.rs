//! # ewx-client — client library and `ewx` CLI
//!
//! [`Client`] connects to a broker as one roster node (mutual TLS pinned to the roster),
//! publishes sealed envelopes, and opens subscriptions whose deliveries arrive verified
//! end to end and decrypted — the client does not trust the broker for either.
//!
//! Still to come (the client issue): reconnection with backoff and automatic resume,
//! the full CLI, the demo network and `ewx demo`.

pub mod audit;
pub mod bench;
mod client;
pub mod demo;
mod error;
pub mod files;
pub mod network;
mod subscription;

pub use client::{Client, PublishAck};
pub use error::{Error, Result};
pub use subscription::{Delivery, Subscription, SubscriptionOptions};

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
