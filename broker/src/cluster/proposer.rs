//! The way in for requests on a replica: the same [`crate::log::LogHandle`] as a single
//! broker, but its commands become proposals. Whatever is queued is proposed as one
//! entry (group commit), in arrival order, stamped with this replica's clock, one entry
//! in flight at a time; the leader hands it to openraft, a follower forwards it to the
//! leader. An outcome is answered
//! only once the entry is committed on a majority and applied. A proposal whose fate is
//! unknown (the leader changed under it) is proposed again through the new leader —
//! publishes are idempotent (a repeated envelope gets its original index), so nothing
//! acknowledged is lost and nothing is stored twice.

use std::sync::Arc;
use std::time::{Duration, Instant};

use ewx_net::Clock;
use openraft::error::ClientWriteError;
use tokio::sync::{Semaphore, mpsc, oneshot};

use super::Node;
use super::entry::{Answer, Answers, Change, Proposal};
use super::transport::{Reply, Rpc};
use crate::log::sequencer::{Op, Outcome};
use crate::log::{Command, ReplicaJob};

/// How long one forwarded proposal may take before it is sent again.
const ATTEMPT: Duration = Duration::from_secs(3);

/// Most commands in one entry.
const MAX_BATCH: usize = 256;

/// How long a proposal may wait for a leader (an election, a partition healing) before
/// its requests are refused.
const LEADER_WAIT: Duration = Duration::from_secs(10);

type Replies = Vec<Option<oneshot::Sender<Outcome>>>;

/// Propose what arrives on `rx` until every handle is gone. One proposal is in flight
/// at a time: what arrives meanwhile waits and goes into the next entry together. Idle,
/// a request is proposed at once; under load, entries grow instead of multiplying (an
/// entry costs a log append, a replication round and an apply on every replica, whether
/// it carries one request or a hundred).
pub async fn run(
    node: Arc<Node>,
    mut rx: mpsc::Receiver<Command>,
    writer: mpsc::Sender<ReplicaJob>,
    clock: Clock,
) {
    let in_flight = Arc::new(Semaphore::new(1));
    while let Some(first) = rx.recv().await {
        let mut waiting = Waiting::default();
        waiting.take(first, node.is_leader(), &writer).await;
        drain(&mut rx, &mut waiting, node.is_leader(), &writer).await;
        if waiting.changes.is_empty() {
            continue;
        }
        // while the previous proposal is being committed, what arrives joins this one
        // (and a case query is answered at once, not after it)
        let mut open = true;
        let permit = loop {
            tokio::select! {
                biased;
                p = in_flight.clone().acquire_owned() => break p,
                cmd = rx.recv(), if open && waiting.changes.len() < MAX_BATCH => match cmd {
                    Some(c) => waiting.take(c, node.is_leader(), &writer).await,
                    None => open = false,
                },
            }
        };
        let Ok(permit) = permit else {
            break;
        };
        let leading = node.is_leader();
        drain(&mut rx, &mut waiting, leading, &writer).await;
        let Waiting { changes, replies } = waiting;
        let proposal = Proposal {
            now_ms: clock.now_ms(),
            changes,
        };
        // enqueued in order while leading; answered (or forwarded) concurrently
        let local = if leading {
            node.raft.client_write_ff(proposal.clone()).await.ok()
        } else {
            None
        };
        let node = node.clone();
        tokio::spawn(async move {
            let answers = match local {
                Some(rx) => match rx.await {
                    Ok(Ok(written)) => Ok(written.data),
                    Ok(Err(ClientWriteError::ForwardToLeader(_))) | Err(_) => {
                        forward(&node, &proposal).await
                    }
                    Ok(Err(e)) => Err(e.to_string()),
                },
                None => forward(&node, &proposal).await,
            };
            drop(permit);
            answer(replies, answers);
        });
    }
}

/// The changes of the next proposal and whom to answer for each.
#[derive(Default)]
struct Waiting {
    changes: Vec<Change>,
    replies: Replies,
}

impl Waiting {
    /// Add a command: a change to propose, or a case query answered from what this
    /// replica applied (nothing to replicate).
    async fn take(&mut self, cmd: Command, leading: bool, writer: &mpsc::Sender<ReplicaJob>) {
        let Command { op, reply } = cmd;
        match Change::of(op) {
            // only the leader's clock drives checkpoints and retention
            Ok(Change::Tick) if !leading => {}
            Ok(change) => {
                self.changes.push(change);
                self.replies.push(reply);
            }
            Err(op) if matches!(*op, Op::Cases(_)) => {
                if let (Op::Cases(query), Some(reply)) = (*op, reply) {
                    let _ = writer.send(ReplicaJob::Cases(query, reply)).await;
                }
            }
            Err(op) => {
                if let Some(reply) = reply {
                    let _ = reply.send(op.refused("it cannot be encoded for replication"));
                }
            }
        }
    }
}

/// Take what is queued, up to [`MAX_BATCH`] changes.
async fn drain(
    rx: &mut mpsc::Receiver<Command>,
    waiting: &mut Waiting,
    leading: bool,
    writer: &mpsc::Sender<ReplicaJob>,
) {
    while waiting.changes.len() < MAX_BATCH {
        match rx.try_recv() {
            Ok(cmd) => waiting.take(cmd, leading, writer).await,
            Err(_) => break,
        }
    }
}

/// Have the leader commit `proposal`: this replica if it leads, else the leader it knows;
/// wait for one while there is none.
async fn forward(node: &Node, proposal: &Proposal) -> Result<Answers, String> {
    let started = Instant::now();
    let mut last = String::from("no leader elected");
    while started.elapsed() < LEADER_WAIT {
        match node.leader() {
            Some(leader) if leader == node.me => {
                match node.raft.client_write(proposal.clone()).await {
                    Ok(w) => return Ok(w.data),
                    Err(e) => last = e.to_string(),
                }
            }
            Some(leader) => {
                let rpc = Rpc::Propose(proposal.clone());
                // a leader killed mid-call looks alive until its connection times out:
                // give up on it after a while and ask again whoever leads then
                let call = node.peers.call(leader, &rpc, ATTEMPT);
                let answer = tokio::select! {
                    r = call => r,
                    () = node.leader_changes_from(leader) => {
                        last = format!("leader {leader} was replaced");
                        continue;
                    }
                };
                match answer {
                    Ok(Reply::Propose(Ok(answers))) => return Ok(answers),
                    Ok(Reply::Propose(Err(e))) => last = e,
                    Ok(_) => last = "the leader answered another request".into(),
                    Err(e) => last = e.to_string(),
                }
            }
            None => {}
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tracing::warn!("proposal not committed within {LEADER_WAIT:?}: {last}");
    Err(last)
}

/// A follower's forwarded proposal, on the leader: its changes join this replica's own
/// queue, so they are committed in the leader's next entry with whatever else waits
/// (one entry, one log append and one apply for requests from every replica).
///
/// # Errors
/// When this replica is not the leader (the follower asks again) or is shutting down.
pub async fn merge(node: &Node, proposal: Proposal) -> Result<Answers, String> {
    if !node.is_leader() {
        return Err(format!("replica {} is not the leader", node.me));
    }
    let queue = node
        .queue
        .upgrade()
        .ok_or_else(|| "the leader is shutting down".to_string())?;
    let mut waiting = Vec::with_capacity(proposal.changes.len());
    for change in proposal.changes {
        let (reply, rx) = oneshot::channel();
        let cmd = Command {
            op: change.into_op(),
            reply: Some(reply),
        };
        queue
            .send(cmd)
            .await
            .map_err(|_| "the leader is shutting down".to_string())?;
        waiting.push(rx);
    }
    drop(queue);
    let mut answers = Vec::with_capacity(waiting.len());
    for rx in waiting {
        let outcome = rx
            .await
            .map_err(|_| "the leader is shutting down".to_string())?;
        answers.push(Answer::of(outcome));
    }
    Ok(Answers(answers))
}

fn answer(replies: Replies, answers: Result<Answers, String>) {
    match answers {
        Ok(Answers(answers)) => {
            for (reply, a) in replies.into_iter().zip(answers) {
                if let Some(r) = reply {
                    let _ = r.send(a.into_outcome());
                }
            }
        }
        Err(why) => {
            let why = format!(
                "no leader committed it within {LEADER_WAIT:?} ({why}); it may or may not be stored: send the same envelope again"
            );
            for r in replies.into_iter().flatten() {
                // every op of a proposal refuses alike; Published is what waits longest
                let _ = r.send(Outcome::Published(Err(crate::core::Rejection::new(
                    ewx_proto::frame::RejectReason::Unavailable,
                    why.clone(),
                ))));
            }
        }
    }
}
