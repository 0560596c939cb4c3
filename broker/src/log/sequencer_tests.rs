//! The sequencer's decisions, step by step against an empty durable log.

use super::*;
use crate::core::fixture::{NOW, roster, warning};
use crate::log::Prune;
use ewx_proto::Precedence;
use ewx_proto::{Digest32, NodeId};
use std::collections::HashMap;

/// An empty durable log: every lookup finds nothing.
#[derive(Debug)]
struct Empty;

impl LogRead for Empty {
    fn message(&self, _: u64) -> crate::Result<Option<Bytes>> {
        Ok(None)
    }
    fn lane(
        &self,
        _: Precedence,
        _: u64,
        _: u64,
        _: usize,
        _: usize,
    ) -> crate::Result<Vec<(u64, Bytes)>> {
        Ok(Vec::new())
    }
    fn cursor(&self, _: &[u8]) -> crate::Result<Option<u64>> {
        Ok(None)
    }
    fn index_of(&self, _: &MessageId) -> crate::Result<Option<u64>> {
        Ok(None)
    }
    fn has_receipt(&self, _: &MessageId, _: &NodeId) -> crate::Result<bool> {
        Ok(false)
    }
    fn audit_range(&self, _: u64, _: u64) -> crate::Result<Vec<Bytes>> {
        Ok(Vec::new())
    }
    fn checkpoint(&self, _: u64) -> crate::Result<Option<Bytes>> {
        Ok(None)
    }
    fn checkpoints_from(&self, _: u64, _: usize) -> crate::Result<Vec<Bytes>> {
        Ok(Vec::new())
    }
    fn roster(&self, _: u64) -> crate::Result<Option<Bytes>> {
        Ok(None)
    }
}

fn sequencer(every_entries: u64, retention: Retention) -> Sequencer {
    let state = Recovered {
        chain: Chain::new(),
        next_index: 0,
        replay: HashMap::new(),
        checkpoint_size: 0,
        checkpoint_hash: Digest32::default(),
        checkpoint_ms: 0,
        roster: None,
        logged_roster: None,
        in_force: Some(Arc::new(roster())),
        cases: Default::default(),
        seen: Default::default(),
    };
    let settings = Settings {
        checkpoint: CheckpointPolicy {
            every_entries,
            interval_ms: 1000,
        },
        replay_width: 1_000_000,
        retention,
        queue: 16,
        reminders_ms: vec![3_600_000],
    };
    Sequencer::new(state, settings, Arc::new(ewx_testkit::keys("BROKER")), NOW)
}

fn publish(seq: u64) -> Op {
    let env = warning(&roster(), seq);
    let bytes = env.encode().unwrap();
    Op::Publish(Box::new(env), bytes)
}

#[test]
fn publishes_get_consecutive_indexes_repeats_their_first_and_replays_are_refused() {
    let mut s = sequencer(1000, Retention::default());
    let dup = publish(2);
    let Op::Publish(env, bytes) = &dup else {
        unreachable!()
    };
    let again = Op::Publish(env.clone(), bytes.clone());
    // the same envelope again (a retry after a lost ack) gets its first index; another
    // envelope with a seq already used is a replay
    let step = s.step(vec![publish(1), dup, again, publish(1)], NOW, false, &Empty);
    let indexes: Vec<_> = step
        .outcomes
        .iter()
        .map(|o| match o {
            Outcome::Published(r) => r.as_ref().map(|i| *i).map_err(|e| e.reason),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(indexes, [Ok(0), Ok(1), Ok(1), Err(RejectReason::Replay)]);
    assert_eq!(step.batch.messages.len(), 2);
    assert_eq!(
        step.batch.audit.len(),
        2,
        "one Published entry per stored message"
    );
    assert_eq!(
        step.live.iter().map(|m| m.index).collect::<Vec<_>>(),
        [0, 1]
    );
    assert_eq!(s.next_index(), 2);
    assert!(step.batch.checkpoint.is_none(), "not due yet");
}

#[test]
fn checkpoints_come_by_count_by_time_and_at_close() {
    let mut s = sequencer(3, Retention::default());
    let step = s.step(vec![publish(1), publish(2)], NOW, false, &Empty);
    assert!(step.batch.checkpoint.is_none());
    let step = s.step(vec![publish(3)], NOW, false, &Empty);
    assert_eq!(step.batch.checkpoint.as_ref().map(|c| c.0), Some(3));
    let step = s.step(vec![publish(4), Op::Tick], NOW + 10, false, &Empty);
    assert!(step.batch.checkpoint.is_none(), "interval not over");
    let step = s.step(vec![Op::Tick], NOW + 1000, false, &Empty);
    assert_eq!(step.batch.checkpoint.as_ref().map(|c| c.0), Some(4));
    let step = s.step(vec![publish(5)], NOW + 1001, true, &Empty);
    assert_eq!(
        step.batch.checkpoint.as_ref().map(|c| c.0),
        Some(5),
        "closing"
    );
    let step = s.step(Vec::new(), NOW + 5000, true, &Empty);
    assert!(step.batch.is_empty(), "nothing new: nothing to write");
}

#[test]
fn receipts_are_logged_once_and_retention_rides_on_ticks() {
    let retention = Retention {
        max_age_ms: None,
        max_messages: Some(1),
    };
    let mut s = sequencer(1000, retention);
    let env = warning(&roster(), 1);
    let r = Receipt::sign(&ewx_testkit::keys("PL"), env.header().id, env.hash(), NOW);
    let ops = vec![
        publish(1),
        publish(2),
        Op::Receipt(r.clone()),
        Op::Receipt(r),
    ];
    let step = s.step(ops, NOW, false, &Empty);
    assert_eq!(step.outcomes[2], Outcome::Receipt(Ok(true)));
    assert_eq!(step.outcomes[3], Outcome::Receipt(Ok(false)));
    assert!(step.batch.prune.is_none(), "retention runs on ticks");
    let step = s.step(vec![Op::Tick], NOW, false, &Empty);
    assert_eq!(
        step.batch.prune,
        Some(Prune {
            keep_from: 1,
            min_created_ms: 0
        })
    );
}

#[test]
fn nothing_is_acknowledged_from_a_batch_that_was_not_kept() {
    let ok = Outcome::Published(Ok(3)).uncommitted("disk full");
    let Outcome::Published(Err(e)) = ok else {
        panic!("{ok:?}")
    };
    assert_eq!(e.reason, RejectReason::StorageFull);
    assert!(e.detail.contains("disk full"), "{}", e.detail);
    assert_eq!(Outcome::Done(true).uncommitted("x"), Outcome::Done(false));
    assert_eq!(Op::Tick.refused("x"), Outcome::Nothing);
    assert!(matches!(
        publish(1).refused("x"),
        Outcome::Published(Err(_))
    ));
}
