//! Which log indexes each precedence lane holds, in memory: a lane's catch-up reads walk
//! it instead of a sled tree, so a publish writes one key fewer. It is derived data —
//! rebuilt on start from the audit log's `Published` entries (precedence and log index)
//! for the envelopes still stored — and costs 8 bytes a stored message.

use std::sync::{Arc, RwLock};

use ewx_proto::Precedence;

/// The lanes' indexes, oldest first, one list per precedence.
#[derive(Debug, Clone, Default)]
pub struct LaneIndex(Arc<RwLock<[Vec<u64>; 4]>>);

impl LaneIndex {
    /// Append newly committed messages (in log order).
    pub fn extend(&self, messages: impl IntoIterator<Item = (Precedence, u64)>) {
        let mut lanes = self.0.write().unwrap_or_else(|p| p.into_inner());
        for (p, index) in messages {
            lanes[p as usize].push(index);
        }
    }

    /// Hold these (in log order) and nothing else.
    pub fn replace(&self, messages: impl IntoIterator<Item = (Precedence, u64)>) {
        *self.0.write().unwrap_or_else(|p| p.into_inner()) = Default::default();
        self.extend(messages);
    }

    /// Indexes of lane `p` in `[from, until)`, at most `limit`.
    pub fn range(&self, p: Precedence, from: u64, until: u64, limit: usize) -> Vec<u64> {
        let lanes = self.0.read().unwrap_or_else(|p| p.into_inner());
        let lane = &lanes[p as usize];
        let start = lane.partition_point(|&i| i < from);
        lane[start..]
            .iter()
            .copied()
            .take_while(|&i| i < until)
            .take(limit)
            .collect()
    }

    /// Forget every index below `first_kept` (retention dropped them).
    pub fn drop_below(&self, first_kept: u64) {
        let mut lanes = self.0.write().unwrap_or_else(|p| p.into_inner());
        for lane in lanes.iter_mut() {
            let cut = lane.partition_point(|&i| i < first_kept);
            lane.drain(..cut);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_are_per_lane_bounded_and_pruned() {
        let lanes = LaneIndex::default();
        lanes.extend([
            (Precedence::Routine, 0),
            (Precedence::Flash, 1),
            (Precedence::Routine, 2),
            (Precedence::Routine, 5),
        ]);
        assert_eq!(lanes.range(Precedence::Routine, 0, 10, 10), [0, 2, 5]);
        assert_eq!(lanes.range(Precedence::Routine, 1, 5, 10), [2]);
        assert_eq!(lanes.range(Precedence::Routine, 0, 10, 2), [0, 2]);
        assert_eq!(lanes.range(Precedence::Flash, 0, 10, 10), [1]);
        assert!(lanes.range(Precedence::Priority, 0, 10, 10).is_empty());
        lanes.drop_below(3);
        assert_eq!(lanes.range(Precedence::Routine, 0, 10, 10), [5]);
        assert!(lanes.range(Precedence::Flash, 0, 10, 10).is_empty());
    }
}
