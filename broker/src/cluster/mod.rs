//! Replication: the log on several replicas (three: one may fail) with openraft, a
//! maintained consensus engine. Each replica keeps its own Raft log ([`log_store`],
//! fsynced before it acknowledges) and applies committed entries to its own store through
//! its writer ([`machine`]), so every replica holds the same log, audit chain and roots.
//! Requests reach any replica; the [`proposer`] turns them into entries and the leader
//! commits them; replicas talk over QUIC with their own ALPN ([`transport`]).
//!
//! openraft 0.9.25 with `storage-v2`: releases before it could advance the commit index
//! without a real quorum (openraft issue #1802). Its storage traits fix the error type
//! (`StorageError`, large): helpers that feed them return it too.
#![allow(clippy::result_large_err)]

mod election;
mod entry;
mod log_store;
mod machine;
mod membership;
mod proposer;
mod snapshot;
mod transport;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use ewx_net::{Clock, RosterCell};
use ewx_proto::{NodeKeys, Role};
use openraft::BasicNode;
use tokio::sync::mpsc;

pub use entry::{Answers, Proposal};
pub use membership::{Change as MembershipChange, send as change_membership};
pub use snapshot::check as check_snapshot;
pub use transport::serve;

use crate::config::ClusterConfig;
use crate::error::{Error, Result};
use crate::log::{LogHandle, ReplicaJob, Store};

openraft::declare_raft_types!(
    /// ewx's Raft types: entries carry [`Proposal`]s; applying one answers [`Answers`].
    pub Types:
        D = Proposal,
        R = Answers,
        NodeId = u64,
        Node = BasicNode,
        SnapshotData = std::io::Cursor<Vec<u8>>,
);

/// A replica's Raft handle.
pub type Raft = openraft::Raft<Types>;

/// This replica's place in the cluster.
pub struct Node {
    /// The Raft engine.
    pub raft: Raft,
    /// This replica's Raft id.
    pub me: u64,
    /// The other replicas.
    pub peers: Arc<transport::Peers>,
    /// Snapshots this replica installed since it started.
    pub installed: Arc<std::sync::atomic::AtomicU64>,
    /// This replica's proposal queue (the leader merges forwarded requests into it);
    /// weak, so the proposer (which holds this node) still stops when the broker does.
    pub queue: mpsc::WeakSender<crate::log::Command>,
    /// When it last heard from a leader (for Pre-Vote, [`election`]).
    contact: election::Contact,
    /// How far its Raft log goes (for Pre-Vote).
    log: log_store::Tail,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("me", &self.me)
            .field("leader", &self.leader())
            .finish_non_exhaustive()
    }
}

impl Node {
    /// The leader this replica knows of.
    pub fn leader(&self) -> Option<u64> {
        self.raft.metrics().borrow().current_leader
    }

    /// Resolves once this replica knows of a leader other than `leader` (or none), or of
    /// a new term: a leader killed and restarted may be elected again under the same id,
    /// and a request sent to its old incarnation would wait for nothing.
    pub async fn leader_changes_from(&self, leader: u64) {
        let mut m = self.raft.metrics();
        let term = m.borrow().current_term;
        loop {
            let same = {
                let now = m.borrow_and_update();
                now.current_leader == Some(leader) && now.current_term == term
            };
            if !same {
                return;
            }
            if m.changed().await.is_err() {
                return;
            }
        }
    }

    /// Does this replica lead?
    pub fn is_leader(&self) -> bool {
        self.leader() == Some(self.me)
    }

    /// Is `node` (a roster name) one of the replicas?
    pub fn is_replica(&self, node: &ewx_proto::NodeId) -> bool {
        self.peers.replica_named(node).is_some()
    }
}

/// Log every change of term or leader, as this replica sees it (operators and the
/// cluster tests follow failovers by these lines).
async fn log_leadership(
    mut metrics: tokio::sync::watch::Receiver<openraft::RaftMetrics<u64, BasicNode>>,
    me: u64,
) {
    let mut last = (0, None);
    loop {
        let now = {
            let m = metrics.borrow_and_update();
            (m.current_term, m.current_leader)
        };
        if now != last && now.1.is_some() {
            match now.1 {
                Some(l) if l == me => {
                    tracing::info!("cluster: term {}, leader {l} (this replica)", now.0)
                }
                Some(l) => tracing::info!("cluster: term {}, leader {l}", now.0),
                None => {}
            }
            last = now;
        }
        if metrics.changed().await.is_err() {
            return;
        }
    }
}

/// What a replica starts with.
#[derive(Debug)]
pub struct Setup<'a> {
    /// The cluster section of the configuration.
    pub config: &'a ClusterConfig,
    /// The broker's data directory (the Raft log goes in `raft/` under it).
    pub data_dir: &'a Path,
    /// This replica's keys.
    pub keys: Arc<NodeKeys>,
    /// The roster in force.
    pub roster: RosterCell,
    /// The store the state machine applies to.
    pub store: &'a Store,
    /// Where proposals get their time.
    pub clock: Clock,
}

/// The replica's Raft id, after checking every replica is a broker of the roster.
///
/// # Errors
/// `Config` when this broker is not listed or a replica is not an active broker.
pub fn identify(
    config: &ClusterConfig,
    keys: &NodeKeys,
    roster: &ewx_proto::Roster,
) -> Result<u64> {
    for r in &config.replicas {
        match roster.active(&r.node) {
            Ok(n) if n.role == Role::Broker => {}
            _ => {
                return Err(Error::Config(format!(
                    "cluster replica {} is not an active broker node of the roster",
                    r.node
                )));
            }
        }
    }
    config
        .replicas
        .iter()
        .find(|r| r.node == keys.node)
        .map(|r| r.id)
        .ok_or_else(|| {
            Error::Config(format!(
                "this broker ({}) is not one of cluster.replicas",
                keys.node
            ))
        })
}

/// Start Raft on this replica: its log, its state machine over `writer`, the network,
/// and (on a pristine cluster) the initial membership; then the proposer behind the
/// returned handle.
///
/// # Errors
/// `Store` if the Raft log cannot be opened, `Config` for bad Raft settings.
pub async fn start(
    setup: Setup<'_>,
    writer: mpsc::Sender<ReplicaJob>,
) -> Result<(Arc<Node>, LogHandle)> {
    let Setup {
        config,
        data_dir,
        keys,
        roster,
        store,
        clock,
    } = setup;
    let me = identify(config, &keys, &roster.get())?;
    let log = log_store::LogStore::open(&data_dir.join("raft"))?;
    let tail = log
        .tail()
        .map_err(|e| Error::Store(format!("cannot read the Raft log: {e}")))?;
    let (tx, rx) = mpsc::channel(256);
    let handle = LogHandle::over(tx.clone());
    let signer = machine::Signer {
        keys: keys.clone(),
        log: handle.clone(),
    };
    let installed = Arc::default();
    let machine = machine::Machine::new(
        (store, roster.clone()),
        writer.clone(),
        (signer, Arc::clone(&installed)),
    )?;
    let peers = Arc::new(
        transport::Peers::new(keys, roster, &config.replicas)
            .map_err(|e| Error::Transport(format!("cluster: cannot bind a local socket: {e}")))?,
    );
    let raft_config = openraft::Config {
        cluster_name: "ewx".into(),
        election_timeout_min: config.election_timeout_ms[0],
        election_timeout_max: config.election_timeout_ms[1],
        heartbeat_interval: config.heartbeat_ms,
        max_payload_entries: 256,
        snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(config.snapshot_entries),
        max_in_snapshot_log_to_keep: config.keep_entries,
        // openraft purges in batches of 256 entries; fewer when snapshots are frequent
        purge_batch_size: (config.snapshot_entries / 4).clamp(1, 256),
        // a snapshot is the whole store: chunks of 1 MiB, each with time to install
        snapshot_max_chunk_size: 1 << 20,
        install_snapshot_timeout: 10_000,
        // elections start after a Pre-Vote (`election`), never on openraft's own timer
        enable_elect: false,
        ..Default::default()
    }
    .validate()
    .map_err(|e| Error::Config(format!("cluster: {e}")))?;
    let raft = Raft::new(
        me,
        Arc::new(raft_config),
        transport::Network {
            peers: peers.clone(),
            retry: std::time::Duration::from_millis(config.heartbeat_ms),
        },
        log.clone(),
        machine,
    )
    .await
    .map_err(|e| Error::Store(format!("cannot start Raft: {e}")))?;
    let initialized = raft
        .is_initialized()
        .await
        .map_err(|e| Error::Store(format!("Raft: {e}")))?;
    // a new cluster is started by its first replica (lowest id) alone: the others wait
    // to hear from it. Were each to start it, one starting later would stand for
    // election at once, and its vote (same term, higher id) would depose a working leader.
    let first = config.replicas.iter().map(|r| r.id).min() == Some(me);
    if initialized {
    } else if config.join || !first {
        tracing::info!(
            replica = me,
            "cluster: waiting to hear from the leader (a new cluster is started by its first replica; join = {})",
            config.join
        );
    } else {
        let members: BTreeMap<u64, BasicNode> = config
            .replicas
            .iter()
            // addresses come from each replica's configuration (they may differ between
            // replicas: a relay, a NAT); the membership names the roster nodes
            .map(|r| (r.id, BasicNode::new(r.node.as_str())))
            .collect();
        if let Err(e) = raft.initialize(members).await {
            tracing::debug!("cluster already initialised: {e}");
        }
    }
    let node = Arc::new(Node {
        raft,
        me,
        peers,
        installed,
        queue: tx.downgrade(),
        contact: election::Contact::new(config.election_timeout_ms),
        log: tail,
    });
    tokio::spawn(proposer::run(node.clone(), rx, writer, clock));
    tokio::spawn(election::run(node.clone()));
    tokio::spawn(log_leadership(node.raft.metrics(), me));
    tracing::info!(replica = me, "cluster replica started");
    Ok((node, handle))
}
