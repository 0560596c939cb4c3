//! Changing who the replicas are: an operator's command (`ewx-broker cluster add|remove|
//! status`), sent like any replica request over `ewx-raft/1` with a replica's own key, and
//! carried out by the leader as Raft membership changes (a new replica first catches up as
//! a learner, then becomes a voter; one change at a time, joint consensus underneath).
//! The roster and every replica's configuration change first: a replica is a broker node
//! of the roster, and addresses come from each replica's configuration.

use std::collections::{BTreeSet, VecDeque};
use std::time::Duration;

use ewx_proto::Role;
use openraft::BasicNode;
use serde::{Deserialize, Serialize};

use super::Node;
use super::transport::{Reply, Rpc};
use crate::config::ClusterConfig;
use crate::error::{Error, Result};

/// An operator's request about the membership.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub enum Change {
    /// Report the voters, learners, leader and each replica's progress.
    Status,
    /// Make the replica with this Raft id a voter (after it caught up as a learner).
    Add(u64),
    /// Take the replica with this Raft id out of the membership.
    Remove(u64),
}

/// Why a replica did not carry out a [`Change`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Refused {
    /// The leader it knows of, if it is not the leader itself.
    pub leader: Option<u64>,
    /// What went wrong.
    pub reason: String,
}

/// How long a new replica may take to catch up (a snapshot of the whole store, then the
/// log) before `add` gives up.
const CATCH_UP: Duration = Duration::from_secs(600);

/// How long the operator's command waits for an answer.
const CHANGE_TTL: Duration = Duration::from_secs(630);

/// Carry out `change` on this replica (the leader, unless it is `Status`).
///
/// # Errors
/// [`Refused`], with the leader to ask instead when this replica is not it.
pub async fn handle(node: &Node, change: Change) -> std::result::Result<String, Refused> {
    let refused = |reason: String| Refused {
        leader: None,
        reason,
    };
    if !matches!(change, Change::Status) && !node.is_leader() {
        return Err(Refused {
            leader: node.leader(),
            reason: format!("replica {} is not the leader", node.me),
        });
    }
    let mut voters = voters(node);
    match change {
        Change::Status => {}
        Change::Add(id) => {
            let replica = node.peers.replica(id).ok_or_else(|| {
                refused(format!(
                    "replica {id} is not in the leader's [cluster] replicas: add it to every replica's configuration and send them SIGHUP first"
                ))
            })?;
            match node.peers.roster().active(&replica.node) {
                Ok(n) if n.role == Role::Broker => {}
                _ => {
                    return Err(refused(format!(
                        "{} is not an active broker node of the roster in force: update the roster first",
                        replica.node
                    )));
                }
            }
            tracing::info!(replica = id, node = %replica.node, "cluster: adding a replica (catching up as a learner)");
            let learner = BasicNode::new(replica.node.as_str());
            node.raft
                .add_learner(id, learner, false)
                .await
                .map_err(|e| refused(format!("replica {id} not added as a learner: {e}")))?;
            // a voter only once it holds the log as it was when asked: until then it
            // would count towards the majority without holding the entries
            let target = node.raft.metrics().borrow().last_log_index;
            node.raft
                .wait(Some(CATCH_UP))
                .metrics(
                    |m| {
                        let matched = m
                            .replication
                            .as_ref()
                            .and_then(|r| r.get(&id).copied().flatten());
                        matched.map(|l| l.index) >= target
                    },
                    "the learner caught up",
                )
                .await
                .map_err(|e| refused(format!("replica {id} did not catch up: {e}")))?;
            tracing::info!(replica = id, "cluster: the learner caught up");
            voters.insert(id);
            node.raft
                .change_membership(voters, false)
                .await
                .map_err(|e| refused(format!("membership not changed: {e}")))?;
            tracing::info!(replica = id, "cluster: replica added as a voter");
        }
        Change::Remove(id) => {
            if !voters.remove(&id) {
                return Err(refused(format!("replica {id} is not a voter")));
            }
            if voters.is_empty() {
                return Err(refused("the last voter cannot be removed".into()));
            }
            node.raft
                .change_membership(voters, false)
                .await
                .map_err(|e| refused(format!("membership not changed: {e}")))?;
            tracing::info!(replica = id, "cluster: replica removed");
        }
    }
    Ok(status(node))
}

fn voters(node: &Node) -> BTreeSet<u64> {
    let m = node.raft.metrics();
    let m = m.borrow();
    m.membership_config.membership().voter_ids().collect()
}

/// The membership and progress as this replica sees it, one line per replica.
fn status(node: &Node) -> String {
    let m = node.raft.metrics().borrow().clone();
    let membership = m.membership_config.membership();
    let voters: BTreeSet<u64> = membership.voter_ids().collect();
    let mut out = format!(
        "term {}, leader {}, this replica {}, applied {}, snapshot {}, log compacted to {}\n",
        m.current_term,
        m.current_leader.map_or("none".into(), |l| l.to_string()),
        m.id,
        index(m.last_applied.map(|l| l.index)),
        index(m.snapshot.map(|l| l.index)),
        index(m.purged.map(|l| l.index)),
    );
    for (id, n) in membership.nodes() {
        let role = if voters.contains(id) {
            "voter"
        } else {
            "learner"
        };
        let matched = m
            .replication
            .as_ref()
            .and_then(|r| r.get(id).copied().flatten())
            .map(|l| l.index);
        let matched = if m.replication.is_some() {
            format!(", replicated to {}", index(matched))
        } else {
            String::new()
        };
        out.push_str(&format!("replica {id} ({}): {role}{matched}\n", n.addr));
    }
    out
}

fn index(i: Option<u64>) -> String {
    i.map_or("-".into(), |i| i.to_string())
}

/// Send `change` to the cluster as an operator on one replica's host: with that replica's
/// key and roster, to each configured replica in turn until one (the leader, for a
/// change) carries it out. The report comes back.
///
/// # Errors
/// `Config` for a configuration without `[cluster]`, `Transport` when no replica answers
/// or the change was refused (with the reason).
pub async fn send(config: &crate::Config, change: Change) -> Result<String> {
    let cluster: &ClusterConfig = config.cluster.as_ref().ok_or_else(|| {
        Error::Config(format!(
            "{}: no [cluster] section: this broker is not a replica",
            config.key.display()
        ))
    })?;
    let keys = std::sync::Arc::new(ewx_net::files::read_keys(&config.key)?);
    let roster = ewx_net::RosterCell::new(ewx_net::files::read_roster(&config.roster)?);
    let peers = super::transport::Peers::new(keys, roster, &cluster.replicas)
        .map_err(|e| Error::Transport(format!("cannot bind a local socket: {e}")))?;
    let mut order: VecDeque<u64> = cluster.replicas.iter().map(|r| r.id).collect();
    let mut tried = BTreeSet::new();
    let mut why = Vec::new();
    while let Some(target) = order.pop_front() {
        if !tried.insert(target) {
            continue;
        }
        let reply = peers
            .call(target, &Rpc::Membership(change), CHANGE_TTL)
            .await;
        match reply {
            Ok(Reply::Membership(Ok(report))) => {
                peers.close();
                return Ok(report);
            }
            Ok(Reply::Membership(Err(r))) => {
                if let Some(leader) = r.leader.filter(|l| !tried.contains(l)) {
                    order.push_front(leader);
                } else if r.leader.is_none() && !matches!(change, Change::Status) {
                    // the leader itself refused: asking others changes nothing
                    peers.close();
                    return Err(Error::Transport(r.reason));
                }
                why.push(format!("replica {target}: {}", r.reason));
            }
            Ok(_) => why.push(format!("replica {target}: unexpected answer")),
            Err(e) => why.push(format!("replica {target}: {e}")),
        }
    }
    peers.close();
    Err(Error::Transport(format!(
        "no replica carried it out ({})",
        why.join("; ")
    )))
}
