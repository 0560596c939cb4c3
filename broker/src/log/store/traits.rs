//! The store as the log's [`LogRead`] and [`LogCommit`]: the seam a replicated log
//! would sit behind. Values come out as [`Bytes`] that own sled's buffers (no copy).

use bytes::Bytes;
use ewx_proto::{MessageId, NodeId, Precedence};

use super::Store;
use crate::error::Result;
use crate::log::{Batch, LogCommit, LogRead, Prune};

fn owned(v: sled::IVec) -> Bytes {
    Bytes::from_owner(v)
}

impl LogRead for Store {
    fn message(&self, index: u64) -> Result<Option<Bytes>> {
        Store::message(self, index)
    }

    fn lane(
        &self,
        precedence: Precedence,
        from: u64,
        until: u64,
        limit: usize,
        max_bytes: usize,
    ) -> Result<Vec<(u64, Bytes)>> {
        Store::lane(self, precedence, from, until, limit, max_bytes)
    }

    fn cursor(&self, key: &[u8]) -> Result<Option<u64>> {
        Store::cursor(self, key)
    }

    fn index_of(&self, id: &MessageId) -> Result<Option<u64>> {
        Store::index_of(self, id)
    }

    fn has_receipt(&self, id: &MessageId, by: &NodeId) -> Result<bool> {
        Store::has_receipt(self, id, by)
    }

    fn audit_range(&self, from: u64, to: u64) -> Result<Vec<Bytes>> {
        Ok(Store::audit_range(self, from, to)?
            .into_iter()
            .map(owned)
            .collect())
    }

    fn checkpoint(&self, size: u64) -> Result<Option<Bytes>> {
        Ok(Store::checkpoint(self, size)?.map(owned))
    }

    fn checkpoints_from(&self, from_size: u64, limit: usize) -> Result<Vec<Bytes>> {
        Ok(Store::checkpoints_from(self, from_size, limit)?
            .into_iter()
            .map(owned)
            .collect())
    }

    fn roster(&self, version: u64) -> Result<Option<Bytes>> {
        Ok(Store::roster(self, version)?.map(owned))
    }

    fn newest_checkpoint(&self) -> Result<Option<Bytes>> {
        Ok(self.checkpoints.last()?.map(|(_, v)| owned(v)))
    }
}

impl LogCommit for Store {
    fn commit(&mut self, batch: &Batch) -> Result<()> {
        Store::commit(self, batch)
    }

    fn retain(&mut self, prune: Prune) {
        Store::retain(self, prune);
    }

    fn timings(&self) -> Option<(std::time::Duration, std::time::Duration)> {
        Some(self.timings.get())
    }
}
