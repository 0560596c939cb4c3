//! # ewx-client — the client library of the Compact early-warning exchange
//!
//! [`Client`] connects to a broker as one roster node (mutual TLS pinned to the roster),
//! publishes sealed envelopes, and opens subscriptions whose deliveries arrive verified
//! end to end and decrypted — the client does not trust the broker for either. It
//! reconnects with backoff and resumes every subscription from its durable cursor.
//!
//! Modules: `client` (publish, subscribe, receipts), [`cases`] (case threads folded
//! here, replies, default parties), `connection` (connect, pushes,
//! reconnect and resume), `subscription` (precedence-first
//! delivery, batched acks), [`audit`] (verification, receipts, witness rounds and bundles
//! over the broker's audit API).
//!
//! It stands on `ewx-proto` and `ewx-net` only: it never links the broker or its store,
//! so a partner can embed it without sled. The `ewx` command line is `ewx-cli`.
#![forbid(unsafe_code)]

pub mod audit;
pub mod cases;
mod client;
mod connection;
mod error;
mod pipe;
mod subscription;

pub use client::{Client, PublishAck};
pub use error::{Error, Result};
pub use subscription::{Delivery, Subscription, SubscriptionOptions};
