//! Recovery on start: replay the audit chain, rebuild the writer's state (next index,
//! anti-replay windows, topic sequences, the last checkpoint) and check that the log
//! matches its last signed checkpoint; a store that does not is refused.

use std::collections::HashMap;

use ewx_proto::audit::{Chain, ChainFault, Event};
use ewx_proto::checkpoint::SignedCheckpoint;
use ewx_proto::{NodeId, Topic};

use super::{Store, read_u64};
use crate::core::replay::ReplayWindow;
use crate::error::Result;
use crate::log::Recovered;

impl Store {
    /// Rebuild the writer's state from disk (on start).
    ///
    /// # Errors
    /// `Proto(AuditChain)` for a broken chain, `Store` on I/O failure.
    pub fn recover(&self, replay_width: u64) -> Result<Recovered> {
        let mut chain = Chain::new();
        let mut next_index = 0;
        let mut replay: HashMap<NodeId, ReplayWindow> = HashMap::new();
        let mut topic_seq: HashMap<Topic, u64> = HashMap::new();
        let mut logged_roster = None;
        for kv in self.audit.iter() {
            let (k, v) = kv?;
            if read_u64(&k) != Some(chain.len()) {
                return Err(ewx_proto::Error::AuditChain {
                    index: chain.len(),
                    fault: ChainFault::Missing,
                }
                .into());
            }
            let event = chain.push(&v)?.event;
            if let Event::RosterChanged { hash, .. } = event {
                logged_roster = Some(hash);
            } else if let Event::Published {
                log_index,
                sender,
                seq,
                topic,
                ..
            } = event
            {
                next_index = next_index.max(log_index + 1);
                // accepted before, so accepted again; this only rebuilds the window
                let _ =
                    replay
                        .entry(sender.clone())
                        .or_default()
                        .accept(&sender, seq, replay_width);
                *topic_seq.entry(topic).or_default() += 1;
            }
        }
        if let Some((k, _)) = self.log.last()? {
            next_index = next_index.max(read_u64(&k).map_or(0, |i| i + 1));
        }
        let (mut checkpoint_size, mut checkpoint_hash) = (0, ewx_proto::Digest32::default());
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
        }
        let roster = self.meta.get("roster")?.map(|v| v.to_vec());
        Ok(Recovered {
            chain,
            logged_roster,
            next_index,
            replay,
            topic_seq,
            checkpoint_size,
            checkpoint_hash,
            roster,
        })
    }
}
