//! The writer's batching order: urgent publishes first, then arrival order.

use super::*;
use crate::core::fixture::{roster, sealed};
use ewx_proto::Level;

fn publish(precedence: Precedence, seq: u64) -> Command {
    let env = sealed(
        &roster(),
        "UA",
        "ew.air",
        (Level::Amber, "CORE"),
        precedence,
        seq,
    );
    let bytes = env.encode().unwrap();
    Command {
        op: Op::Publish(Box::new(env), bytes),
        reply: None,
    }
}

fn seqs(batch: &[Command]) -> Vec<u64> {
    batch
        .iter()
        .map(|c| match &c.op {
            Op::Publish(e, _) => e.header().seq,
            _ => 0,
        })
        .collect()
}

#[test]
fn urgent_publishes_go_first_in_a_commit_of_their_own_then_arrival_order() {
    let mut waiting: VecDeque<Command> = [
        publish(Precedence::Routine, 1),
        publish(Precedence::Flash, 2),
        Command {
            op: Op::Tick,
            reply: None,
        },
        publish(Precedence::Immediate, 3),
        publish(Precedence::Priority, 4),
    ]
    .into();
    let first = next_batch(&mut waiting, true);
    assert_eq!(seqs(&first), [2, 3], "FLASH and IMMEDIATE alone");
    assert!(first.iter().all(urgent));
    let second = next_batch(&mut waiting, false);
    assert_eq!(seqs(&second), [1, 0, 4], "the rest in arrival order");
    assert!(waiting.is_empty());
    // with nothing urgent waiting, arrival order, at most MAX_BATCH a commit
    let mut many: VecDeque<Command> = (0..MAX_BATCH as u64 + 5)
        .map(|i| publish(Precedence::Routine, i + 1))
        .collect();
    assert_eq!(next_batch(&mut many, true).len(), MAX_BATCH);
    assert_eq!(many.len(), 5);
}
