//! The broker's decisions, as plain synchronous functions tested without sockets: whether
//! to accept a publish (every check of DESIGN.md, each with its own reason), whether a
//! message goes to a subscription, and how a flood of rejections is folded so it cannot
//! grow the audit log faster than the broker writes it.

use ewx_proto::access::{check_subscribe, may_deliver};
use ewx_proto::audit::Event;
use ewx_proto::frame::{ExerciseFilter, RejectReason};
use ewx_proto::{Envelope, Error as ProtoError, Header, NodeId, Roster, TopicPattern};

/// A refusal: the reason code the client gets and a sentence for people.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// Which check failed.
    pub reason: RejectReason,
    /// What exactly.
    pub detail: String,
}

impl Rejection {
    /// A rejection.
    pub fn new(reason: RejectReason, detail: String) -> Self {
        Self { reason, detail }
    }
}

impl std::fmt::Display for Rejection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}: {}", self.reason, self.detail)
    }
}

/// The reason code for a protocol error met while checking a publish.
pub fn reason_for(e: &ProtoError) -> RejectReason {
    match e {
        ProtoError::TooLarge { .. } => RejectReason::TooLarge,
        ProtoError::UnknownNode(_) | ProtoError::Revoked(_) => RejectReason::UnknownSender,
        ProtoError::BadSignature { .. } => RejectReason::BadSignature,
        ProtoError::NotPermitted(_) => RejectReason::NotPermitted,
        ProtoError::Time(_) => RejectReason::ClockSkew,
        _ => RejectReason::Malformed,
    }
}

/// A protocol error met while checking a publish, as a rejection.
pub fn reject(e: ProtoError) -> Rejection {
    Rejection::new(reason_for(&e), e.to_string())
}

/// The acceptance checks before the signature: size and decoding, and that the sender
/// is the authenticated node. Then [`check_signed`] (the [`crate::verifier`] checks the
/// signature and publish rights in between, batched across connections).
///
/// # Errors
/// The first check that fails, as a [`Rejection`].
pub fn check_envelope(
    node: &NodeId,
    bytes: &[u8],
    max_bytes: usize,
) -> Result<Envelope, Rejection> {
    let env = Envelope::decode(bytes, max_bytes).map_err(reject)?;
    let h = env.header();
    if &h.sender != node {
        return Err(Rejection::new(
            RejectReason::WrongSender,
            format!(
                "envelope is signed as {} but the connection is {node}",
                h.sender
            ),
        ));
    }
    Ok(env)
}

/// The acceptance checks after the signature (all but the sequence number, which the
/// writer checks in commit order): clock skew, and that every listed recipient may read
/// the labels.
///
/// # Errors
/// The first check that fails, as a [`Rejection`].
pub fn check_signed(
    env: &Envelope,
    roster: &Roster,
    now_ms: u64,
    max_skew_ms: u64,
) -> Result<(), Rejection> {
    let h = env.header();
    h.check_skew(now_ms, max_skew_ms).map_err(reject)?;
    h.check_recipients(roster)
        .map_err(|e| Rejection::new(RejectReason::RecipientNotPermitted, e.to_string()))
}

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

/// What a subscriber asked for.
#[derive(Debug, Clone)]
pub struct SubscriptionSpec {
    /// The subscriber.
    pub node: NodeId,
    /// Its name for the subscription.
    pub name: String,
    /// The pattern.
    pub pattern: TopicPattern,
    /// Real, exercise or both.
    pub filter: ExerciseFilter,
}

/// May this subscription be opened?
///
/// # Errors
/// A `NotPermitted` rejection if no subscribe grant overlaps the pattern, or the node is
/// no longer active.
pub fn check_subscription(spec: &SubscriptionSpec, roster: &Roster) -> Result<(), Rejection> {
    let n = roster.active(&spec.node).map_err(reject)?;
    check_subscribe(&n.id, &n.grants, &spec.pattern).map_err(reject)?;
    if spec.name.is_empty() || spec.name.len() > 64 {
        return Err(Rejection::new(
            RejectReason::Malformed,
            "subscription name must be 1-64 bytes".into(),
        ));
    }
    Ok(())
}

/// Does this message go to this subscription under the roster in force now?
pub fn deliverable(spec: &SubscriptionSpec, roster: &Roster, header: &Header) -> bool {
    roster.active(&spec.node).is_ok_and(|n| {
        spec.filter.admits(header.labels.exercise)
            && may_deliver(
                &n.id,
                &n.grants,
                &spec.pattern,
                &header.topic,
                &header.labels,
            )
    })
}

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
