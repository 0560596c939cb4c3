//! Subscriptions: who may open one for which pattern, which messages go to it, where
//! each of its precedence lanes starts, and which acks move its durable cursor.

use std::collections::HashMap;

use ewx_proto::access::{check_subscribe, may_deliver};
use ewx_proto::frame::{ExerciseFilter, RejectReason, StartAt};
use ewx_proto::{Header, NodeId, Precedence, Roster, TopicPattern};

use super::{Rejection, reject};

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

/// Where one lane of a new subscription starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LaneStart {
    /// The lane.
    pub precedence: Precedence,
    /// The first log index it delivers.
    pub start: u64,
    /// Write `start` as the lane's durable cursor now, so that a later `Resume` of a lane
    /// never acked starts here (not at the head of then).
    pub write_cursor: bool,
}

/// Where each lane starts for `from`, given the durable log head and the lane's stored
/// cursor (`cursor(p)`, read only for `Resume`).
///
/// # Errors
/// Whatever reading a cursor fails with.
pub fn lane_starts<E>(
    from: StartAt,
    head: u64,
    mut cursor: impl FnMut(Precedence) -> Result<Option<u64>, E>,
) -> Result<Vec<LaneStart>, E> {
    Precedence::ALL
        .into_iter()
        .map(|precedence| {
            let explicit = match from {
                StartAt::Earliest => Some(0),
                StartAt::Latest => Some(head),
                StartAt::Index(i) => Some(i),
                StartAt::Resume => None,
            };
            let (start, write_cursor) = match explicit {
                Some(start) => (start, true),
                None => match cursor(precedence)? {
                    Some(c) => (c, false),
                    None => (head, true),
                },
            };
            Ok(LaneStart {
                precedence,
                start,
                write_cursor,
            })
        })
        .collect()
}

/// The acks of one connection: the highest index acked per (subscription, lane), so a
/// repeated or older ack writes no cursor and no audit entry.
#[derive(Debug, Default)]
pub struct AckBook {
    acked: HashMap<(String, Precedence), u64>,
}

impl AckBook {
    /// Whether an ack of `through` on lane `precedence` of subscription `name` moves the
    /// cursor (`Ok(false)`: nothing new). `open`: the subscription is open on this
    /// connection; `head`: the durable log head.
    ///
    /// # Errors
    /// `Malformed` for a subscription not open here, or an index not yet delivered.
    pub fn advances(
        &self,
        open: bool,
        name: &str,
        precedence: Precedence,
        through: u64,
        head: u64,
    ) -> Result<bool, Rejection> {
        if !open {
            return Err(Rejection::new(
                RejectReason::Malformed,
                format!("no open subscription named {name:?}"),
            ));
        }
        if through >= head {
            return Err(Rejection::new(
                RejectReason::Malformed,
                format!("index {through} has not been delivered"),
            ));
        }
        Ok(self
            .acked
            .get(&(name.to_owned(), precedence))
            .is_none_or(|&a| through > a))
    }

    /// Remember a durable ack: the cursor it wrote is the lane's now (the last written
    /// wins, so a lower ack that committed last is rewritten by the next higher one).
    pub fn record(&mut self, name: &str, precedence: Precedence, through: u64) {
        self.acked.insert((name.to_owned(), precedence), through);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lanes_start_where_asked_and_resume_from_their_cursors() {
        let never = |_| Ok::<_, ()>(None);
        let starts = lane_starts(StartAt::Latest, 10, never).unwrap();
        assert!(starts.iter().all(|s| s.start == 10 && s.write_cursor));
        let starts = lane_starts(StartAt::Index(3), 10, never).unwrap();
        assert!(starts.iter().all(|s| s.start == 3 && s.write_cursor));
        // resume: a lane with a cursor continues there and writes nothing; one never
        // acked starts at the head and writes it, so the next resume starts there too
        let cursors = |p| Ok::<_, ()>((p == Precedence::Flash).then_some(7));
        let starts = lane_starts(StartAt::Resume, 10, cursors).unwrap();
        for s in starts {
            if s.precedence == Precedence::Flash {
                assert_eq!((s.start, s.write_cursor), (7, false));
            } else {
                assert_eq!((s.start, s.write_cursor), (10, true));
            }
        }
        assert_eq!(
            lane_starts(StartAt::Resume, 10, |_| Err("disk")),
            Err("disk")
        );
    }

    #[test]
    fn only_new_acks_of_open_subscriptions_advance() {
        let mut book = AckBook::default();
        let p = Precedence::Routine;
        assert_eq!(
            book.advances(false, "desk", p, 1, 10).unwrap_err().reason,
            RejectReason::Malformed
        );
        assert!(
            book.advances(true, "desk", p, 10, 10).is_err(),
            "not delivered yet"
        );
        assert!(book.advances(true, "desk", p, 4, 10).unwrap());
        book.record("desk", p, 4);
        assert!(!book.advances(true, "desk", p, 4, 10).unwrap(), "repeated");
        assert!(!book.advances(true, "desk", p, 2, 10).unwrap(), "older");
        assert!(
            book.advances(true, "desk", Precedence::Flash, 2, 10)
                .unwrap()
        );
        assert!(book.advances(true, "desk", p, 5, 10).unwrap());
    }
}
