//! The audit log and its verification, without I/O. [`Entry`] and [`Event`] are what the
//! broker records; [`Chain`] replays entries and names the first that does not fit;
//! [`Verifier`] checks a whole log (chain, Merkle roots, checkpoints, consistency,
//! envelope signatures under the roster in force, receipts, witnesses) over a
//! [`Lookup`] for the envelopes and rosters the entries name; [`Bundle`] proves one
//! message offline; [`Witness`] judges a broker's newest checkpoint against the last one
//! seen; [`ReceiptScan`] finds who received a message.
//!
//! Where the entries come from (a store copy, the broker's API) is the caller's business:
//! the same checks run on both.

mod bundle;
mod chain;
mod entry;
mod receipts;
mod summary;
mod verify;
mod witness;

pub use bundle::{Bundle, BundleReport, pick_checkpoint};
pub use chain::{Chain, ChainFault, chain_hash};
pub use entry::{Entry, Event, MAX_ENTRY_BYTES};
pub use receipts::ReceiptScan;
pub use verify::{Failure, Lookup, Need, Summary, Verifier};
pub use witness::{Judgement, Witness, Witnessed};
