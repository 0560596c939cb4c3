//! Folding rejection floods: a connection's first few rejections in a window get audit
//! entries of their own, the rest one `Rejected{count, window}` entry, so an attacker
//! cannot grow the audit log faster than the broker can write it.

use ewx_proto::NodeId;
use ewx_proto::audit::Event;

use super::Rejection;

/// Folds rejections on one connection: the first few in a window get their own audit
/// entry, the rest one `Rejected{count, window}` entry when the window closes.
#[derive(Debug)]
pub struct RejectLimiter {
    node: Option<NodeId>,
    window_ms: u64,
    per_window: u32,
    window_start: u64,
    in_window: u32,
    folded: u32,
    last_reason: String,
}

impl RejectLimiter {
    /// `per_window` entries per `window_ms`, for the connection of `node`.
    pub fn new(node: Option<NodeId>, per_window: u32, window_ms: u64) -> Self {
        Self {
            node,
            window_ms,
            per_window,
            window_start: 0,
            in_window: 0,
            folded: 0,
            last_reason: String::new(),
        }
    }

    /// Count one refusal at `now_ms`: `true` if it gets an audit entry of its own, and the
    /// folded entry of the previous window if that window just closed.
    pub fn admit(&mut self, now_ms: u64, reason: &str) -> (bool, Option<Event>) {
        let mut flushed = None;
        if now_ms.saturating_sub(self.window_start) >= self.window_ms {
            flushed = self.flush(now_ms);
            self.window_start = now_ms;
            self.in_window = 0;
        }
        if self.in_window < self.per_window {
            self.in_window += 1;
            (true, flushed)
        } else {
            self.folded += 1;
            self.last_reason = reason.to_owned();
            (false, flushed)
        }
    }

    /// Record one rejection at `now_ms`; returns the audit entries to write now.
    pub fn record(
        &mut self,
        now_ms: u64,
        rejection: &Rejection,
        envelope_hash: Option<ewx_proto::Digest32>,
    ) -> Vec<Event> {
        let reason = rejection.to_string();
        let (own, flushed) = self.admit(now_ms, &reason);
        let mut out: Vec<Event> = flushed.into_iter().collect();
        if own {
            out.push(Event::Rejected {
                from: self.node.clone(),
                reason,
                envelope_hash,
                count: 1,
                window_ms: 0,
            });
        }
        out
    }

    /// The folded entry for rejections not yet logged (at window end or connection close).
    pub fn flush(&mut self, now_ms: u64) -> Option<Event> {
        if self.folded == 0 {
            return None;
        }
        let e = Event::Rejected {
            from: self.node.clone(),
            reason: format!(
                "{} rejections folded, last: {}",
                self.folded, self.last_reason
            ),
            envelope_hash: None,
            count: self.folded,
            window_ms: now_ms.saturating_sub(self.window_start).max(1),
        };
        self.folded = 0;
        Some(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ewx_proto::frame::RejectReason;

    #[test]
    fn a_flood_becomes_a_few_entries() {
        let mut l = RejectLimiter::new(None, 3, 1000);
        let r = Rejection::new(RejectReason::Malformed, "junk".into());
        let mut entries = 0;
        for t in 0..10_000u64 {
            entries += l.record(t / 100, &r, None).len();
        }
        entries += usize::from(l.flush(200).is_some());
        // 100 ms of time per 1000 records: 10 windows of 3 + 1 folded each, roughly
        assert!(entries <= 2 * 4, "{entries}");
        let mut total = 0;
        let mut l = RejectLimiter::new(None, 3, 1000);
        for t in 0..50u64 {
            for e in l.record(t, &r, None) {
                if let Event::Rejected { count, .. } = e {
                    total += count;
                }
            }
        }
        if let Some(Event::Rejected { count, .. }) = l.flush(60) {
            total += count;
        }
        assert_eq!(total, 50, "every rejection is counted exactly once");
    }
}
