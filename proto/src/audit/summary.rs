//! What a sound audit log contains, as `ewx audit verify` reports it.

use std::collections::BTreeSet;
use std::fmt;

use crate::ids::{Digest32, NodeId};

/// What a sound log contains.
#[derive(Debug, Clone, Default)]
pub struct Summary {
    /// Audit entries.
    pub entries: u64,
    /// Signed checkpoints checked.
    pub checkpoints: usize,
    /// Entries after the last checkpoint (not yet signed by the broker).
    pub unsigned_tail: u64,
    /// Witnesses on the last checkpoint.
    pub witnesses: Vec<NodeId>,
    /// Checkpoints signed by two replicas or more (a cluster's; 0 for a single broker).
    pub replica_signed: usize,
    /// Replicas that signed the last checkpoint.
    pub replicas: Vec<NodeId>,
    /// Envelopes whose signature and rights were verified.
    pub envelopes: u64,
    /// Envelopes already dropped by retention (their audit entries remain).
    pub pruned: u64,
    /// Distinct publishers.
    pub publishers: BTreeSet<NodeId>,
    /// Receipts verified.
    pub receipts: u64,
    /// Cases folded from the log.
    pub cases: usize,
    /// `CaseDeadline` entries checked against the fold.
    pub case_deadlines: u64,
    /// Rosters that were in force.
    pub rosters: Vec<u64>,
    /// Time of the first and last entry.
    pub first_ms: u64,
    /// See `first_ms`.
    pub last_ms: u64,
    /// Root of the whole log.
    pub root: Digest32,
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names = |set: &mut dyn Iterator<Item = &NodeId>| {
            set.map(NodeId::as_str).collect::<Vec<_>>().join(" ")
        };
        writeln!(f, "entries      {}", self.entries)?;
        writeln!(
            f,
            "checkpoints  {} (unsigned tail: {} entries)",
            self.checkpoints, self.unsigned_tail
        )?;
        writeln!(
            f,
            "witnesses    {} on the last checkpoint {}",
            self.witnesses.len(),
            names(&mut self.witnesses.iter())
        )?;
        if self.replica_signed > 0 || !self.replicas.is_empty() {
            writeln!(
                f,
                "replicas     {} checkpoints signed by 2 replicas or more; {} on the last {}",
                self.replica_signed,
                self.replicas.len(),
                names(&mut self.replicas.iter())
            )?;
        }
        writeln!(
            f,
            "envelopes    {} verified, {} pruned by retention",
            self.envelopes, self.pruned
        )?;
        writeln!(f, "publishers   {}", names(&mut self.publishers.iter()))?;
        writeln!(f, "receipts     {}", self.receipts)?;
        writeln!(
            f,
            "cases        {} ({} deadline entries agree with the fold)",
            self.cases, self.case_deadlines
        )?;
        writeln!(f, "rosters      versions {:?}", self.rosters)?;
        writeln!(
            f,
            "time         {} .. {} (ms since 1970)",
            self.first_ms, self.last_ms
        )?;
        write!(
            f,
            "verified: {} entries, {} checkpoints, {} envelopes, {} receipts, root {}",
            self.entries, self.checkpoints, self.envelopes, self.receipts, self.root
        )
    }
}
