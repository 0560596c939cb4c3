//! The per-sender anti-replay window the log applies to every publish, in commit order.

use ewx_proto::NodeId;
use ewx_proto::frame::RejectReason;

use super::Rejection;

/// Per-sender anti-replay window (as IPsec and DTLS do): a `seq` is accepted once, and
/// only above a floor that trails the highest accepted seq. Sequence numbers must be
/// unique, not consecutive, so one sender may publish on many streams at once while a
/// replayed envelope is still always refused. Memory per sender is bounded by `MAX_SEEN`.
#[derive(Debug, Clone, Default)]
pub struct ReplayWindow {
    floor: u64,
    seen: std::collections::BTreeSet<u64>,
}

impl ReplayWindow {
    /// Seqs remembered above the floor per sender, at most.
    pub const MAX_SEEN: usize = 65_536;

    /// Accept `seq` if it is new and above the floor; `width` is how far below the highest
    /// accepted seq the floor trails.
    ///
    /// # Errors
    /// A `Replay` rejection naming the sender.
    pub fn accept(&mut self, sender: &NodeId, seq: u64, width: u64) -> Result<(), Rejection> {
        if seq <= self.floor || self.seen.contains(&seq) {
            return Err(Rejection::new(
                RejectReason::Replay,
                format!(
                    "seq {seq} from {sender} was already accepted or is below the replay window (floor {})",
                    self.floor
                ),
            ));
        }
        self.seen.insert(seq);
        let top = self.seen.last().copied().unwrap_or(seq);
        self.raise_floor(top.saturating_sub(width));
        while self.seen.len() > Self::MAX_SEEN {
            if let Some(lowest) = self.seen.pop_first() {
                self.floor = lowest;
            }
        }
        Ok(())
    }

    fn raise_floor(&mut self, floor: u64) {
        if floor > self.floor {
            self.floor = floor;
            self.seen = self.seen.split_off(&(floor + 1));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replay_window_accepts_each_seq_once_in_any_order() {
        let n = NodeId::new("UA").unwrap();
        let mut w = ReplayWindow::default();
        for seq in [5, 3, 9, 4, 100] {
            w.accept(&n, seq, 1000).unwrap();
        }
        for seq in [5, 3, 9, 100, 0] {
            assert_eq!(
                w.accept(&n, seq, 1000).unwrap_err().reason,
                RejectReason::Replay,
                "{seq}"
            );
        }
        w.accept(&n, 2000, 1000).unwrap(); // floor rises to 1000
        assert!(w.accept(&n, 999, 1000).is_err());
        w.accept(&n, 1500, 1000).unwrap();
        let mut w = ReplayWindow::default();
        for seq in 1..=(ReplayWindow::MAX_SEEN as u64 + 10) {
            w.accept(&n, seq, u64::MAX).unwrap();
        }
        assert!(w.seen.len() <= ReplayWindow::MAX_SEEN);
        assert!(
            w.accept(&n, 5, u64::MAX).is_err(),
            "forgotten seqs stay refused: the floor rose"
        );
    }
}
