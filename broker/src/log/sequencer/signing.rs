//! The sequencer's signatures and housekeeping: witness co-signatures and the replicas'
//! own signatures added to stored checkpoints, when a checkpoint is due and signing it,
//! and what retention drops.

use ewx_proto::checkpoint::{Checkpoint, Cosignature, SignedCheckpoint};

use super::super::LogRead;
use super::super::batch::{Batch, Prune};
use super::{Sequencer, internal};
use crate::core::Rejection;

impl Sequencer {
    pub(super) fn cosign(
        &mut self,
        batch: &mut Batch,
        size: u64,
        cosignature: Cosignature,
        log: &dyn LogRead,
    ) -> Result<(), Rejection> {
        super::super::batch::amend_checkpoint(batch, size, log, |cp| {
            if !cp
                .cosignatures
                .iter()
                .any(|c| c.witness == cosignature.witness)
            {
                cp.cosignatures.push(cosignature);
            }
            Ok(())
        })
    }

    pub(super) fn replica_sign(
        &mut self,
        batch: &mut Batch,
        size: u64,
        signature: Cosignature,
        log: &dyn LogRead,
    ) -> Result<(), Rejection> {
        let roster = self
            .roster
            .clone()
            .ok_or_else(|| internal("no roster in force"))?;
        super::super::batch::amend_checkpoint(batch, size, log, |cp| {
            cp.verify_replica(&signature, &roster)
                .map_err(crate::core::reject)?;
            if !cp.replicas.iter().any(|c| c.witness == signature.witness) {
                cp.replicas.push(signature);
            }
            Ok(())
        })
    }

    pub(super) fn checkpoint_due(&self, tick: bool, closing: bool, now_ms: u64) -> bool {
        let new = self.state.chain.len() - self.state.checkpoint_size;
        let policy = &self.settings.checkpoint;
        new > 0
            && (closing
                || new >= policy.every_entries
                || tick && now_ms.saturating_sub(self.last_checkpoint_ms) >= policy.interval_ms)
    }

    pub(super) fn checkpoint(&mut self, batch: &mut Batch, now_ms: u64) {
        let size = self.state.chain.len();
        let cp = Checkpoint {
            size,
            root: self.state.chain.tree().root(),
            prev: self.state.checkpoint_hash,
            time_ms: now_ms,
        };
        match SignedCheckpoint::sign(&cp, &self.keys).and_then(|s| Ok((s.encode()?, s.body_hash())))
        {
            Ok((bytes, hash)) => {
                batch.checkpoint = Some((size, bytes));
                self.state.checkpoint_size = size;
                self.state.checkpoint_hash = hash;
                self.last_checkpoint_ms = now_ms;
            }
            Err(e) => tracing::error!("cannot sign checkpoint: {e}"),
        }
    }

    pub(super) fn retention(&self, now_ms: u64) -> Option<Prune> {
        let r = &self.settings.retention;
        if r.max_messages.is_none() && r.max_age_ms.is_none() {
            return None;
        }
        Some(Prune {
            keep_from: r
                .max_messages
                .map_or(0, |m| self.state.next_index.saturating_sub(m)),
            min_created_ms: r.max_age_ms.map_or(0, |a| now_ms.saturating_sub(a)),
        })
    }
}
