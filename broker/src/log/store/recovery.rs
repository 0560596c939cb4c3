//! Recovery on start: replay the audit chain, rebuild the writer's state (next index,
//! anti-replay windows, the case fold, the last checkpoint) and the lanes' index, and
//! check that the log matches its last signed checkpoint; a store that does not is
//! refused.

use std::collections::HashMap;
use std::sync::Arc;

use ewx_proto::audit::{Chain, ChainFault, Event};
use ewx_proto::case::CaseBook;
use ewx_proto::checkpoint::SignedCheckpoint;
use ewx_proto::{NodeId, Roster, SignedRoster};

use super::{Store, read_u64};
use crate::core::replay::ReplayWindow;
use crate::error::Result;
use crate::log::Recovered;

impl Store {
    /// A roster the log recorded, verified as from a trusted source (this store).
    fn roster_in_force(&self, version: u64) -> Option<Roster> {
        let bytes = self.roster(version).ok().flatten()?;
        match SignedRoster::decode(&bytes).and_then(|s| s.verify()) {
            Ok(r) => Some(r),
            Err(e) => {
                tracing::warn!("stored roster version {version} does not verify: {e}");
                None
            }
        }
    }

    /// Rebuild the writer's state from disk (on start, and after installing a snapshot).
    ///
    /// # Errors
    /// `Proto(AuditChain)` for a broken chain, `Store` on I/O failure.
    pub fn recover(&self, replay_width: u64) -> Result<Recovered> {
        let mut chain = Chain::new();
        let mut next_index = 0;
        let mut replay: HashMap<NodeId, ReplayWindow> = HashMap::new();
        let first_stored = self.places.first()?.and_then(|(k, _)| read_u64(&k));
        self.cut_segments()?;
        let mut lanes = Vec::new();
        let mut logged_roster = None;
        let mut in_force: Option<Arc<Roster>> = None;
        let mut cases = CaseBook::new();
        let mut case_faults = 0u64;
        let mut seen = crate::log::seen::SeenIds::default();
        for kv in self.audit.iter() {
            let (k, v) = kv?;
            if read_u64(&k) != Some(chain.len()) {
                return Err(ewx_proto::Error::AuditChain {
                    index: chain.len(),
                    fault: ChainFault::Missing,
                }
                .into());
            }
            let entry = chain.push(&v)?;
            if let Err(e) = cases.replay(&entry, in_force.as_deref()) {
                case_faults += 1;
                if case_faults == 1 {
                    tracing::warn!("case index: audit entry {}: {e}", entry.index);
                }
            }
            let event = entry.event;
            if let Event::RosterChanged { hash, version } = event {
                logged_roster = Some(hash);
                in_force = self.roster_in_force(version).map(Arc::new).or(in_force);
            } else if let Event::Published {
                id,
                log_index,
                sender,
                seq,
                precedence,
                ..
            } = event
            {
                seen.insert(&id);
                if first_stored.is_some_and(|f| log_index >= f) {
                    lanes.push((precedence, log_index));
                }
                next_index = next_index.max(log_index + 1);
                // accepted before, so accepted again; this only rebuilds the window
                let _ =
                    replay
                        .entry(sender.clone())
                        .or_default()
                        .accept(&sender, seq, replay_width);
            }
        }
        if let Some((k, _)) = self.places.last()? {
            next_index = next_index.max(read_u64(&k).map_or(0, |i| i + 1));
        }
        let (mut checkpoint_size, mut checkpoint_hash) = (0, ewx_proto::Digest32::default());
        let mut checkpoint_ms = 0;
        if let Some((_, v)) = self.checkpoints.last()? {
            let signed = SignedCheckpoint::decode(&v)?;
            let cp = signed.checkpoint()?;
            let root = chain
                .tree()
                .root_at(cp.size)
                .map_err(|_| ewx_proto::Error::AuditChain {
                    index: chain.len(),
                    fault: ChainFault::CheckpointBeyondLog {
                        covers: cp.size,
                        len: chain.len(),
                    },
                })?;
            if root != cp.root {
                return Err(ewx_proto::Error::AuditChain {
                    index: cp.size,
                    fault: ChainFault::CheckpointMismatch,
                }
                .into());
            }
            checkpoint_size = cp.size;
            checkpoint_hash = signed.body_hash();
            checkpoint_ms = cp.time_ms;
        }
        if case_faults > 1 {
            tracing::warn!("case index: {case_faults} audit entries disagree with the case fold");
        }
        self.lanes.replace(lanes);
        let roster = self.meta.get("roster")?.map(|v| v.to_vec());
        Ok(Recovered {
            in_force,
            cases,
            seen,
            chain,
            logged_roster,
            next_index,
            replay,
            checkpoint_size,
            checkpoint_hash,
            checkpoint_ms,
            roster,
        })
    }
}
