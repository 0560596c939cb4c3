//! Verifying a whole audit log without trusting the broker: replay the hash chain,
//! rebuild the Merkle tree, check every checkpoint's signature, link and root and the
//! consistency between checkpoints, verify every published envelope (signature and the
//! sender's rights) under the roster in force when it was published, check every receipt,
//! and count the witnesses of the last checkpoint. Reports the first bad index.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use crate::case::CaseBook;
use crate::checkpoint::SignedCheckpoint;
use crate::envelope::{Envelope, verify_batch};
use crate::error::{Error, Result};
use crate::ids::Digest32;
use crate::keys::SignPublic;
use crate::merkle::verify_consistency;
use crate::roster::{Roster, SignedRoster};

use super::chain::{Chain, ChainFault};
use super::entry::{Entry, Event};
pub use super::summary::Summary;

/// Envelopes verified per signature batch.
const BATCH: usize = 4096;

/// Where the log stops being sound.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// The first bad audit index.
    pub index: u64,
    /// What is wrong there.
    pub reason: String,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "first bad index: {} ({})", self.index, self.reason)
    }
}

impl std::error::Error for Failure {}

fn fail(index: u64, reason: impl Into<String>) -> Failure {
    Failure {
        index,
        reason: reason.into(),
    }
}

/// The failure a chain fault at `index` means for an auditor: a broken link at `i` says
/// entry `i - 1` was altered.
fn chain_failure(index: u64, fault: ChainFault) -> Failure {
    match fault {
        ChainFault::BrokenLink if index > 0 => fail(
            index - 1,
            format!("entry was altered: entry {index} names another hash for it"),
        ),
        ChainFault::WrongIndex { says } => fail(
            index,
            format!("entry missing or out of order: entry says index {says}, expected {index}"),
        ),
        other => fail(index, other.to_string()),
    }
}

/// Where the verifier gets the envelopes and rosters the entries name (fetched ahead by
/// the caller: see [`Verifier::needs`]).
pub trait Lookup {
    /// The envelope at a message-log index (`None`: pruned by retention, or missing).
    fn envelope(&mut self, log_index: u64) -> Option<Vec<u8>>;
    /// A roster version that was in force (`None`: not available).
    fn roster(&mut self, version: u64) -> Option<Vec<u8>>;
}

/// A lookup over what was fetched for a page of entries.
impl Lookup for (HashMap<u64, Vec<u8>>, HashMap<u64, Vec<u8>>) {
    fn envelope(&mut self, log_index: u64) -> Option<Vec<u8>> {
        self.0.remove(&log_index)
    }
    fn roster(&mut self, version: u64) -> Option<Vec<u8>> {
        self.1.get(&version).cloned()
    }
}

/// What an entry needs from the [`Lookup`] to be verified.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// Nothing.
    Nothing,
    /// The envelope at this message-log index.
    Envelope(u64),
    /// This roster version.
    Roster(u64),
}

struct Pending {
    index: u64,
    envelope: Envelope,
    roster: Arc<Roster>,
}

/// Replays a log entry by entry.
pub struct Verifier {
    chain: Chain,
    anchor: Roster,
    roster: Arc<Roster>,
    anchor_seen: bool,
    /// The broker keys whose checkpoint signatures count (every replica of a cluster).
    brokers: Vec<SignPublic>,
    pending: Vec<Pending>,
    cases: CaseBook,
    summary: Summary,
}

impl fmt::Debug for Verifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Verifier({} entries)", self.chain.len())
    }
}

impl Verifier {
    /// Start with the roster the auditor trusts (its own file). Its broker key signs the
    /// checkpoints; it must appear among the rosters the log says were in force.
    ///
    /// # Errors
    /// `InvalidRoster` if the roster names no broker.
    pub fn new(anchor: Roster) -> Result<Self> {
        Ok(Self {
            brokers: {
                anchor.broker_key()?;
                anchor.broker_keys()
            },
            chain: Chain::new(),
            roster: Arc::new(anchor.clone()),
            anchor,
            anchor_seen: false,
            pending: Vec::new(),
            cases: CaseBook::new(),
            summary: Summary::default(),
        })
    }

    /// What the entry in `bytes` needs from the lookup (`Nothing` if it does not decode:
    /// [`Verifier::push`] reports that).
    pub fn needs(bytes: &[u8]) -> Need {
        match Entry::decode(bytes).map(|e| e.event) {
            Ok(Event::Published { log_index, .. }) => Need::Envelope(log_index),
            Ok(Event::RosterChanged { version, .. }) => Need::Roster(version),
            _ => Need::Nothing,
        }
    }

    /// The cases folded so far from the log.
    pub fn cases(&self) -> &CaseBook {
        &self.cases
    }

    /// Entries replayed so far.
    pub fn len(&self) -> u64 {
        self.chain.len()
    }

    /// No entries yet?
    pub fn is_empty(&self) -> bool {
        self.chain.is_empty()
    }

    /// Check the next entry.
    ///
    /// # Errors
    /// The first bad index and why.
    pub fn push(&mut self, bytes: &[u8], lookup: &mut dyn Lookup) -> Result<(), Failure> {
        let entry = self.chain.push(bytes).map_err(|e| match e {
            Error::AuditChain { index, fault } => chain_failure(index, fault),
            other => fail(self.chain.len(), other.to_string()),
        })?;
        let index = entry.index;
        self.cases
            .replay(&entry, Some(&self.roster))
            .map_err(|reason| fail(index, reason))?;
        if let Event::CaseDeadline { .. } = entry.event {
            self.summary.case_deadlines += 1;
        }
        if self.summary.entries == 0 {
            self.summary.first_ms = entry.time_ms;
        }
        self.summary.entries += 1;
        self.summary.last_ms = entry.time_ms;
        match entry.event {
            Event::RosterChanged { version, hash } => {
                let bytes = lookup.roster(version).ok_or_else(|| {
                    fail(index, format!("roster version {version} is not available"))
                })?;
                self.roster_changed(index, version, hash, &bytes)?;
            }
            Event::Published {
                id,
                sender,
                seq,
                log_index,
                envelope_hash,
                case,
                ..
            } => {
                self.summary.publishers.insert(sender.clone());
                let Some(bytes) = lookup.envelope(log_index) else {
                    self.summary.pruned += 1;
                    return Ok(());
                };
                let env = Envelope::decode(&bytes, usize::MAX)
                    .map_err(|e| fail(index, format!("envelope {log_index}: {e}")))?;
                let h = env.header();
                if env.hash() != envelope_hash
                    || h.id != id
                    || h.sender != sender
                    || h.seq != seq
                    || h.case != case
                {
                    return Err(fail(
                        index,
                        format!("envelope {log_index} does not match its audit entry"),
                    ));
                }
                self.pending.push(Pending {
                    index,
                    envelope: env,
                    roster: self.roster.clone(),
                });
                if self.pending.len() >= BATCH {
                    self.flush()?;
                }
            }
            Event::Receipt(r) => {
                r.verify(&self.roster)
                    .map_err(|e| fail(index, format!("receipt by {}: {e}", r.by)))?;
                self.summary.receipts += 1;
            }
            _ => {}
        }
        Ok(())
    }

    fn roster_changed(
        &mut self,
        index: u64,
        version: u64,
        hash: Digest32,
        bytes: &[u8],
    ) -> Result<(), Failure> {
        let signed = SignedRoster::decode(bytes).map_err(|e| fail(index, e.to_string()))?;
        if signed.hash().map_err(|e| fail(index, e.to_string()))? != hash {
            return Err(fail(
                index,
                format!("roster version {version} does not match the hash logged"),
            ));
        }
        let roster = if self.summary.rosters.is_empty() {
            signed.verify()
        } else {
            signed.verify_update(&self.roster)
        };
        let roster = roster.map_err(|e| fail(index, format!("roster version {version}: {e}")))?;
        self.anchor_seen |= roster.hash() == self.anchor.hash();
        self.summary.rosters.push(version);
        self.flush()?; // envelopes before the change use the old roster
        self.roster = Arc::new(roster);
        Ok(())
    }

    /// Verify the queued envelopes: one signature batch per core (pure computation on
    /// scoped threads; no I/O).
    fn flush(&mut self) -> Result<(), Failure> {
        let pending = std::mem::take(&mut self.pending);
        if pending.is_empty() {
            return Ok(());
        }
        let half = pending.len().div_ceil(2);
        let verdicts: Vec<Result<(), (usize, Error)>> = std::thread::scope(|s| {
            let handles: Vec<_> = pending
                .chunks(half)
                .enumerate()
                .map(|(c, chunk)| {
                    s.spawn(move || {
                        let items: Vec<(&Envelope, &Roster)> =
                            chunk.iter().map(|p| (&p.envelope, &*p.roster)).collect();
                        verify_batch(&items).map_err(|(i, e)| (c * half + i, e))
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join()
                        .unwrap_or(Err((0, Error::BadSignature { what: "envelope" })))
                })
                .collect()
        });
        let first_bad = verdicts
            .into_iter()
            .filter_map(Result::err)
            .min_by_key(|(i, _)| *i);
        if let Some((i, e)) = first_bad {
            return Err(fail(pending[i].index, format!("envelope: {e}")));
        }
        self.summary.envelopes += pending.len() as u64;
        Ok(())
    }

    /// Check the checkpoints (oldest first) against the replayed log and count witnesses
    /// on the last one; `broker_proofs` may hold the broker's consistency proof for
    /// consecutive pairs (old size, new size), which are then verified instead of
    /// recomputed ones.
    ///
    /// # Errors
    /// The first bad index and why.
    pub fn finish(
        mut self,
        checkpoints: &[Vec<u8>],
        broker_proofs: &HashMap<(u64, u64), Vec<Digest32>>,
        min_witnesses: usize,
    ) -> Result<Summary, Failure> {
        self.flush()?;
        if !self.summary.rosters.is_empty() && !self.anchor_seen {
            return Err(fail(
                0,
                "the roster you trust was never in force in this log",
            ));
        }
        let mut prev: Option<(u64, Digest32, Digest32)> = None; // size, root, body hash
        let mut last = None;
        for bytes in checkpoints {
            let signed = self.checkpoint(bytes, prev, broker_proofs)?;
            let cp = signed
                .checkpoint()
                .map_err(|e| fail(self.len(), e.to_string()))?;
            prev = Some((cp.size, cp.root, signed.body_hash()));
            // each replica's own signature over the same body: all must verify
            let replicas = signed
                .verify_replicas(&self.roster)
                .map_err(|e| fail(cp.size, format!("replica signature: {e}")))?;
            if replicas.len() >= 2 {
                self.summary.replica_signed += 1;
            }
            self.summary.replicas = replicas;
            last = Some((signed, cp.size));
            self.summary.checkpoints += 1;
        }
        let len = self.len();
        if let Some((signed, size)) = last {
            self.summary.witnesses = signed
                .verify_cosignatures(&self.roster)
                .map_err(|e| fail(size, format!("witness: {e}")))?;
            self.summary.unsigned_tail = len - size;
        } else {
            self.summary.unsigned_tail = len;
        }
        if self.summary.witnesses.len() < min_witnesses {
            return Err(fail(
                prev.map_or(0, |p| p.0),
                format!(
                    "the last checkpoint has {} witness co-signatures, {min_witnesses} required",
                    self.summary.witnesses.len()
                ),
            ));
        }
        self.summary.root = self.chain.tree().root();
        self.summary.cases = self.cases.len();
        Ok(self.summary)
    }

    /// Check one checkpoint: the broker's signature, the link to `prev`, its root over
    /// the replayed entries, and consistency with `prev`.
    fn checkpoint(
        &self,
        bytes: &[u8],
        prev: Option<(u64, Digest32, Digest32)>,
        broker_proofs: &HashMap<(u64, u64), Vec<Digest32>>,
    ) -> Result<SignedCheckpoint, Failure> {
        let len = self.len();
        let tree = self.chain.tree();
        let signed = SignedCheckpoint::decode(bytes)
            .map_err(|e| fail(len, format!("unreadable checkpoint: {e}")))?;
        let size_hint = signed.checkpoint().map(|c| c.size).unwrap_or(len);
        // signed by any broker of the roster (each replica of a cluster signs its own)
        let verdicts: Vec<_> = self.brokers.iter().map(|b| signed.verify(b)).collect();
        let cp = verdicts
            .iter()
            .find(|v| v.is_ok())
            .or(verdicts.first())
            .cloned()
            .unwrap_or_else(|| Err(crate::Error::InvalidRoster("no broker key".into())))
            .map_err(|e| fail(size_hint, format!("checkpoint of size {size_hint}: {e}")))?;
        if cp.prev != prev.map_or(Digest32::default(), |p| p.2) {
            return Err(fail(
                cp.size,
                "checkpoint does not link to the one before it",
            ));
        }
        if cp.size > len {
            return Err(fail(
                len,
                format!(
                    "the log ends at {len} entries but a checkpoint covers {}: entries are missing",
                    cp.size
                ),
            ));
        }
        let from = prev.map_or(0, |p| p.0);
        let root = tree
            .root_at(cp.size)
            .map_err(|e| fail(cp.size, e.to_string()))?;
        if root != cp.root {
            return Err(fail(
                from,
                format!(
                    "entries {from}..{} differ from what the checkpoint of size {} signed",
                    cp.size, cp.size
                ),
            ));
        }
        if let Some((old, old_root, _)) = prev {
            let proof = match broker_proofs.get(&(old, cp.size)) {
                Some(p) => p.clone(),
                None => tree
                    .consistency_proof(old, cp.size)
                    .map_err(|e| fail(cp.size, e.to_string()))?,
            };
            verify_consistency(old, cp.size, &old_root, &cp.root, &proof)
                .map_err(|e| fail(cp.size, e.to_string()))?;
        }
        Ok(signed)
    }
}
