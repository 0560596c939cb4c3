//! The wall clock, read in one place. `ewx-proto` takes time as an argument; this is
//! where the broker, the client and the command line get it from.
//!
//! A [`Clock`] is the wall clock, or a simulated one that runs with it but can be moved
//! forward: the broker's log times (and so case deadlines) come from it, and tests and
//! the demo pass 24 h and 72 h in milliseconds by sharing one simulated clock between an
//! in-process broker and its clients.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// Wall-clock time in ms since the Unix epoch (0 if the clock is before 1970).
pub fn now_ms() -> u64 {
    now_us() / 1000
}

/// Wall-clock time in µs since the Unix epoch (0 if the clock is before 1970): the floor
/// of a client's sequence numbers, so they keep increasing across restarts.
pub fn now_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

/// Where a component reads the time: the wall clock (the default), or the wall clock
/// plus an offset that only grows (simulated). Cheap to clone; clones share the offset.
#[derive(Debug, Clone, Default)]
pub struct Clock {
    /// `None`: the wall clock. Else ms added to it.
    offset: Option<Arc<AtomicU64>>,
}

impl Clock {
    /// The wall clock.
    pub fn system() -> Self {
        Self::default()
    }

    /// A simulated clock, starting at the wall clock's time.
    pub fn simulated() -> Self {
        Self {
            offset: Some(Arc::new(AtomicU64::new(0))),
        }
    }

    /// Is this a simulated clock?
    pub fn is_simulated(&self) -> bool {
        self.offset.is_some()
    }

    /// Move a simulated clock forward by `ms` (the wall clock cannot be moved: `false`).
    pub fn advance(&self, ms: u64) -> bool {
        match &self.offset {
            Some(o) => {
                o.fetch_add(ms, Ordering::AcqRel);
                true
            }
            None => false,
        }
    }

    /// ms since the Unix epoch.
    pub fn now_ms(&self) -> u64 {
        self.now_us() / 1000
    }

    /// µs since the Unix epoch.
    pub fn now_us(&self) -> u64 {
        let offset = self
            .offset
            .as_ref()
            .map_or(0, |o| o.load(Ordering::Acquire));
        now_us().saturating_add(offset.saturating_mul(1000))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_simulated_clock_moves_forward_for_every_clone() {
        let c = Clock::simulated();
        let other = c.clone();
        let before = other.now_ms();
        assert!(c.advance(72 * 3600 * 1000));
        assert!(other.now_ms() >= before + 72 * 3600 * 1000);
        assert!(!Clock::system().advance(1));
        assert!(Clock::system().now_ms().abs_diff(now_ms()) < 1000);
    }
}
