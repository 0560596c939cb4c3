//! Elections with Pre-Vote (Raft thesis §9.6). openraft 0.9 starts an election whenever
//! a follower's timer runs out, and every election raises the term — also one a replica
//! cannot win because its log is behind (restarted a moment before the leader died). Its
//! higher term then makes the up-to-date replica's attempt in the same term fail, round
//! after round. So openraft's own timer is off (`enable_elect = false`) and this task
//! decides: when this replica has heard from no leader for the lease plus a random
//! timeout, it first asks the others whether they would vote for it — without raising
//! any term — and triggers openraft's election only when a majority would. A replica
//! grants a pre-vote when it has not heard from a leader within the lease itself and the
//! candidate's log is at least as up to date as its own.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use openraft::LogId;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use super::Node;
use super::transport::{Reply, Rpc};

/// How often the task looks at the time since it last heard from a leader.
const TICK: Duration = Duration::from_millis(20);

/// A pre-vote request: who asks, and how far its log goes.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PreVote {
    /// The replica that would stand.
    pub candidate: u64,
    /// The id of its last log entry.
    pub last_log_id: Option<LogId<u64>>,
}

/// When this replica last heard from a leader (an accepted append, a snapshot chunk, or
/// a vote it granted: a candidate about to lead).
#[derive(Debug)]
pub struct Contact {
    heard: Mutex<Instant>,
    /// Heard from no leader within this, a replica may stand (openraft's leader lease:
    /// the maximum election timeout).
    lease: Duration,
    /// The random part of the wait, in ms.
    timeout_ms: [u64; 2],
}

impl Contact {
    /// A replica starting now: it waits a lease before it grants or asks anything.
    pub fn new(timeout_ms: [u64; 2]) -> Self {
        Self {
            heard: Mutex::new(Instant::now()),
            lease: Duration::from_millis(timeout_ms[1]),
            timeout_ms,
        }
    }

    /// A leader (or a candidate this replica voted for) was heard just now.
    pub fn heard(&self) {
        *self.heard.lock().unwrap_or_else(|p| p.into_inner()) = Instant::now();
    }

    fn last(&self) -> Instant {
        *self.heard.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn random_timeout(&self) -> Duration {
        let [lo, hi] = self.timeout_ms;
        Duration::from_millis(rand::Rng::gen_range(&mut rand::thread_rng(), lo..=hi))
    }
}

/// Whether this replica would vote for `req`'s candidate now.
pub fn grant(node: &Node, req: &PreVote) -> bool {
    if node.is_leader() || node.contact.last().elapsed() < node.contact.lease {
        return false;
    }
    req.last_log_id >= node.log.last_log_id()
}

/// Stand for election when the leader is gone and a majority would vote for this
/// replica; runs until the Raft engine stops.
pub async fn run(node: Arc<Node>) {
    let contact = &node.contact;
    let mut wait = contact.random_timeout();
    let mut asked: Option<Instant> = None;
    loop {
        tokio::time::sleep(TICK).await;
        let (voters, leading) = {
            let m = node.raft.metrics();
            let m = m.borrow();
            if m.running_state.is_err() {
                return;
            }
            let voters: Vec<u64> = m.membership_config.membership().voter_ids().collect();
            (voters, m.current_leader == Some(node.me))
        };
        if leading || !voters.contains(&node.me) {
            asked = None;
            continue;
        }
        let quiet_from = contact.last() + contact.lease;
        let from = asked.map_or(quiet_from, |a| a.max(quiet_from));
        if Instant::now() < from + wait {
            continue;
        }
        asked = Some(Instant::now());
        wait = contact.random_timeout();
        let others: Vec<u64> = voters.into_iter().filter(|v| *v != node.me).collect();
        // a majority of the voters, this replica one of them
        let voters = others.len() + 1;
        let needed = voters / 2 + 1;
        let granted = 1 + canvass(&node, &others, needed - 1).await;
        if granted >= needed {
            tracing::info!(
                replica = node.me,
                granted,
                "pre-vote won: standing for election"
            );
            if let Err(e) = node.raft.trigger().elect().await {
                tracing::warn!("cannot start an election: {e}");
                return;
            }
        } else {
            tracing::debug!(replica = node.me, granted, "pre-vote lost: not standing");
        }
    }
}

/// Ask `others` for a pre-vote at once; the number that grant it, counted until
/// `enough` have (a dead leader's answer is not waited for then; each answer is waited
/// for at most the shortest election timeout).
async fn canvass(node: &Arc<Node>, others: &[u64], enough: usize) -> usize {
    let last_log_id = node.log.last_log_id();
    let req = PreVote {
        candidate: node.me,
        last_log_id,
    };
    let limit = Duration::from_millis(node.contact.timeout_ms[0]);
    let (tx, mut rx) = mpsc::channel(others.len().max(1));
    for &peer in others {
        let (node, tx, rpc) = (node.clone(), tx.clone(), Rpc::PreVote(req.clone()));
        tokio::spawn(async move {
            let yes = matches!(
                node.peers.call(peer, &rpc, limit).await,
                Ok(Reply::PreVote(true))
            );
            let _ = tx.send(yes).await;
        });
    }
    drop(tx);
    let mut granted = 0;
    while granted < enough {
        match rx.recv().await {
            Some(yes) => granted += usize::from(yes),
            None => break,
        }
    }
    granted
}
