//! # ewx-cli — the `ewx` command line, as a library it is built from
//!
//! The binary (`src/main.rs`, `src/commands/`) parses flags into validated requests and
//! calls into this crate and `ewx-client`. Here live the parts that need more than a
//! client: [`demo`] (the Compact scenario against an embedded broker), [`bench`] (the
//! load loop every system is measured with, and ewx as one peer), [`network`] (writing
//! the demo network to disk), [`files`] (key and roster files the commands write),
//! [`offline`] (auditing a copy of a broker's store), [`cases`] (the case matrix and its
//! JSON) and [`text`] (dates and countdowns).
//!
//! This is the only crate that links `ewx-broker`; the client library never does.
#![forbid(unsafe_code)]

pub mod bench;
pub mod cases;
pub mod demo;
mod error;
pub mod files;
pub mod network;
pub mod offline;
pub mod text;

pub use error::{Error, Result};
