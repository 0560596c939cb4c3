//! Replication between replicas over QUIC: the same endpoint and port as clients, the
//! same roster-pinned mutual TLS (each side pins the other replica's key from the
//! roster), its own ALPN (`ewx-raft/1`). One request per bidirectional stream: a CBOR
//! frame each way. Besides openraft's three RPCs, a follower forwards proposals to the
//! leader here, so a client may talk to any replica.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ewx_net::wire::{Wait, read_msg, write_msg};
use ewx_net::{RosterCell, SERVER_NAME, tls};
use ewx_proto::NodeKeys;
use openraft::BasicNode;
use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use serde::{Deserialize, Serialize};

use super::election::PreVote;
use super::entry::{Answers, Proposal};
use super::membership::{Change, Refused};
use super::{Node, Types};
use crate::config::Replica;

/// Largest replication frame (a batch of entries, each up to a group commit).
const MAX_RPC: usize = 256 << 20;

/// A request from one replica to another.
#[derive(Debug, Serialize, Deserialize)]
pub enum Rpc {
    /// Raft: replicate entries (or heartbeat).
    Append(AppendEntriesRequest<Types>),
    /// Raft: ask for a vote.
    Vote(VoteRequest<u64>),
    /// Raft: a snapshot chunk.
    Snapshot(InstallSnapshotRequest<Types>),
    /// A follower forwarding a proposal to the leader.
    Propose(Proposal),
    /// An operator's membership command (sent with a replica's key).
    Membership(Change),
    /// Would you vote for me? (asked before an election: [`super::election`])
    PreVote(PreVote),
}

/// The answer to an [`Rpc`].
#[derive(Debug, Serialize, Deserialize)]
pub enum Reply {
    /// To `Append`.
    Append(Result<AppendEntriesResponse<u64>, RaftError<u64>>),
    /// To `Vote`.
    Vote(Result<VoteResponse<u64>, RaftError<u64>>),
    /// To `Snapshot`.
    Snapshot(Result<InstallSnapshotResponse<u64>, RaftError<u64, InstallSnapshotError>>),
    /// To `Propose`: the answers once committed and applied, or why not (not the leader
    /// any more, …).
    Propose(Result<Answers, String>),
    /// To `Membership`: the report, or why not.
    Membership(Result<String, Refused>),
    /// To `PreVote`: granted or not.
    PreVote(bool),
}

/// The other replicas, and connections to them (opened on first use, reopened when
/// they fail).
#[derive(Debug)]
pub struct Peers {
    /// The broker's endpoint; `None` once closed (so the port is free on shutdown even if
    /// a replication task outlives the broker briefly).
    endpoint: Arc<Mutex<Option<quinn::Endpoint>>>,
    keys: Arc<NodeKeys>,
    roster: RosterCell,
    /// The replicas this one's configuration lists (reloaded on SIGHUP).
    replicas: Mutex<HashMap<u64, Replica>>,
    limits: tls::TransportLimits,
    conns: Arc<Mutex<HashMap<u64, quinn::Connection>>>,
    /// Handshakes in progress, by replica.
    pending: Arc<Mutex<HashMap<u64, Pending>>>,
    /// Replicas found unreachable (logged once when they go, once when they return).
    down: Mutex<std::collections::HashSet<u64>>,
}

/// A handshake in progress: the connection, or why there is none, once done.
type Pending = tokio::sync::watch::Receiver<Option<Result<quinn::Connection, String>>>;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn unreachable(msg: String) -> Unreachable {
    Unreachable::new(&std::io::Error::other(msg))
}

/// Why a call failed: the peer could not be reached at all, or the exchange broke.
#[derive(Debug)]
pub enum CallError {
    /// No connection.
    Unreachable(String),
    /// The connection was up but the request failed.
    Broken(String),
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CallError::Unreachable(m) => write!(f, "unreachable: {m}"),
            CallError::Broken(m) => write!(f, "{m}"),
        }
    }
}

impl Peers {
    /// Replicas reached from a client endpoint of their own (so the listening socket is
    /// held by the listener alone), authenticated as `keys`.
    ///
    /// # Errors
    /// If no local UDP socket can be bound.
    pub fn new(
        keys: Arc<NodeKeys>,
        roster: RosterCell,
        replicas: &[Replica],
    ) -> std::io::Result<Self> {
        let local: std::net::SocketAddr = match replicas.first().map(|r| r.addr) {
            Some(std::net::SocketAddr::V6(_)) => (std::net::Ipv6Addr::UNSPECIFIED, 0).into(),
            _ => (std::net::Ipv4Addr::UNSPECIFIED, 0).into(),
        };
        let endpoint = quinn::Endpoint::client(local)?;
        let limits = tls::TransportLimits {
            // a replica killed outright is noticed within this (keep-alives at a third)
            idle_timeout: Duration::from_secs(3),
            max_bidi_streams: 0,
            max_uni_streams: 0,
            stream_window: 16 << 20,
            connection_window: 64 << 20,
        };
        Ok(Self {
            endpoint: Arc::new(Mutex::new(Some(endpoint))),
            keys,
            roster,
            replicas: Mutex::new(replicas.iter().map(|r| (r.id, r.clone())).collect()),
            limits,
            conns: Arc::default(),
            pending: Arc::default(),
            down: Mutex::default(),
        })
    }

    /// The replica that is this roster node.
    pub fn replica_named(&self, node: &ewx_proto::NodeId) -> Option<Replica> {
        lock(&self.replicas)
            .values()
            .find(|r| &r.node == node)
            .cloned()
    }

    /// The roster in force.
    pub fn roster(&self) -> Arc<ewx_proto::Roster> {
        self.roster.get()
    }

    /// The replica with this Raft id.
    pub fn replica(&self, id: u64) -> Option<Replica> {
        lock(&self.replicas).get(&id).cloned()
    }

    /// Take a new list of replicas (the configuration was reloaded): connections to
    /// replicas that moved or left are dropped.
    pub fn set_replicas(&self, replicas: &[Replica]) {
        let new: HashMap<u64, Replica> = replicas.iter().map(|r| (r.id, r.clone())).collect();
        let old = std::mem::replace(&mut *lock(&self.replicas), new.clone());
        let mut conns = lock(&self.conns);
        for (id, r) in old {
            if new.get(&id) != Some(&r)
                && let Some(c) = conns.remove(&id)
            {
                c.close(ewx_net::CloseCode::Normal.varint(), b"replica changed");
            }
        }
    }

    /// The connection to `target`: the open one, or one being set up. A handshake runs
    /// on its own task, so a caller that stops waiting (its RPC timed out) does not abort
    /// it: on a busy machine a handshake may take longer than a heartbeat.
    async fn connection(&self, target: u64) -> Result<quinn::Connection, CallError> {
        let cached = lock(&self.conns).get(&target).cloned();
        if let Some(c) = cached.filter(|c| c.close_reason().is_none()) {
            return Ok(c);
        }
        let mut rx = {
            let mut pending = lock(&self.pending);
            match pending.get(&target) {
                Some(rx) => rx.clone(),
                None => {
                    let rx = self.connect(target)?;
                    pending.insert(target, rx.clone());
                    rx
                }
            }
        };
        loop {
            if let Some(r) = rx.borrow_and_update().clone() {
                return r.map_err(CallError::Unreachable);
            }
            if rx.changed().await.is_err() {
                return Err(CallError::Unreachable(
                    "the connection attempt was dropped".into(),
                ));
            }
        }
    }

    /// Start a handshake with `target` on a task of its own.
    fn connect(&self, target: u64) -> Result<Pending, CallError> {
        let replica = self
            .replica(target)
            .ok_or_else(|| CallError::Unreachable(format!("no replica {target} configured")))?;
        let roster = self.roster.get();
        let key = roster
            .active(&replica.node)
            .map_err(|e| CallError::Unreachable(e.to_string()))?
            .sign;
        let config = tls::replica_config(&self.keys, key, self.limits)
            .map_err(|e| CallError::Unreachable(e.to_string()))?;
        let connecting = lock(&self.endpoint)
            .as_ref()
            .ok_or_else(|| CallError::Unreachable("shutting down".into()))?
            .connect_with(config, replica.addr, SERVER_NAME)
            .map_err(|e| CallError::Unreachable(e.to_string()))?;
        let (tx, rx) = tokio::sync::watch::channel(None);
        let (conns, pending, endpoint) = (
            self.conns.clone(),
            self.pending.clone(),
            self.endpoint.clone(),
        );
        let addr = replica.addr;
        tokio::spawn(async move {
            let r = connecting.await.map_err(|e| format!("{addr}: {e}"));
            if let Ok(c) = &r {
                // closed meanwhile: let go at once, the port must be free
                if lock(&endpoint).is_none() {
                    c.close(ewx_net::CloseCode::Normal.varint(), b"shutdown");
                } else {
                    lock(&conns).insert(target, c.clone());
                }
            }
            lock(&pending).remove(&target);
            let _ = tx.send(Some(r));
        });
        Ok(rx)
    }

    /// Stop: close the connections to the other replicas and let go of the endpoint.
    pub fn close(&self) {
        if let Some(e) = lock(&self.endpoint).take() {
            e.close(ewx_net::CloseCode::Normal.varint(), b"shutdown");
        }
        for (_, c) in lock(&self.conns).drain() {
            c.close(ewx_net::CloseCode::Normal.varint(), b"shutdown");
        }
    }

    /// Send one request and wait (at most `ttl`) for its answer.
    ///
    /// # Errors
    /// [`CallError`] when the peer is down or the exchange fails.
    pub async fn call(&self, target: u64, rpc: &Rpc, ttl: Duration) -> Result<Reply, CallError> {
        let connecting = tokio::time::timeout(ttl, self.connection(target)).await;
        let conn = match connecting {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => return Err(self.went_down(target, e)),
            Err(_) => {
                let e = CallError::Unreachable(format!("no connection within {ttl:?}"));
                return Err(self.went_down(target, e));
            }
        };
        let exchange = async {
            let broken = |e: &dyn std::fmt::Display| CallError::Broken(e.to_string());
            let (mut send, mut recv) = conn.open_bi().await.map_err(|e| broken(&e))?;
            write_msg(&mut send, rpc, MAX_RPC)
                .await
                .map_err(|e| broken(&e))?;
            send.finish().map_err(|e| broken(&e))?;
            read_msg::<Reply>(&mut recv, MAX_RPC, Wait::Within(ttl))
                .await
                .map_err(|e| broken(&e))?
                .ok_or_else(|| CallError::Broken("the replica closed the stream".into()))
        };
        let reply = tokio::time::timeout(ttl, exchange)
            .await
            .map_err(|_| CallError::Broken(format!("no answer within {ttl:?}")))??;
        if self
            .down
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&target)
        {
            tracing::info!(replica = target, "replica reachable again");
        }
        Ok(reply)
    }

    /// Note (and log, once) that `target` cannot be reached.
    fn went_down(&self, target: u64, e: CallError) -> CallError {
        if self
            .down
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(target)
        {
            tracing::warn!(replica = target, "replica unreachable: {e}");
        }
        e
    }
}

/// openraft's way to the other replicas.
#[derive(Debug, Clone)]
pub struct Network {
    /// The replicas.
    pub peers: Arc<Peers>,
    /// How soon to try an unreachable replica again: a heartbeat, so one that comes back
    /// hears from the leader before its election timeout ends (openraft waits 500 ms by
    /// default, longer than that timeout: the returning replica would stand for
    /// election, and its higher term would depose a working leader).
    pub retry: Duration,
}

/// openraft's way to one replica.
#[derive(Debug)]
pub struct Link {
    peers: Arc<Peers>,
    target: u64,
    retry: Duration,
}

impl RaftNetworkFactory<Types> for Network {
    type Network = Link;

    async fn new_client(&mut self, target: u64, _node: &BasicNode) -> Link {
        Link {
            peers: self.peers.clone(),
            target,
            retry: self.retry,
        }
    }
}

type RpcResult<T, E = RaftError<u64>> = Result<T, RPCError<u64, BasicNode, E>>;

impl Link {
    async fn call<E: std::error::Error>(
        &self,
        rpc: Rpc,
        option: &RPCOption,
    ) -> RpcResult<Reply, E> {
        self.peers
            .call(self.target, &rpc, option.hard_ttl())
            .await
            .map_err(|e| match e {
                CallError::Unreachable(m) => RPCError::Unreachable(unreachable(m)),
                CallError::Broken(m) => {
                    RPCError::Network(NetworkError::new(&std::io::Error::other(m)))
                }
            })
    }

    fn unexpected<T, E: std::error::Error>(&self) -> RpcResult<T, E> {
        Err(RPCError::Network(NetworkError::new(
            &std::io::Error::other("the replica answered another request"),
        )))
    }
}

impl RaftNetwork<Types> for Link {
    fn backoff(&self) -> openraft::network::Backoff {
        openraft::network::Backoff::new(std::iter::repeat(self.retry))
    }

    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<Types>,
        option: RPCOption,
    ) -> RpcResult<AppendEntriesResponse<u64>> {
        match self.call(Rpc::Append(rpc), &option).await? {
            Reply::Append(r) => {
                r.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
            }
            _ => self.unexpected(),
        }
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<Types>,
        option: RPCOption,
    ) -> RpcResult<InstallSnapshotResponse<u64>, RaftError<u64, InstallSnapshotError>> {
        match self.call(Rpc::Snapshot(rpc), &option).await? {
            Reply::Snapshot(r) => {
                r.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
            }
            _ => self.unexpected(),
        }
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<u64>,
        option: RPCOption,
    ) -> RpcResult<VoteResponse<u64>> {
        match self.call(Rpc::Vote(rpc), &option).await? {
            Reply::Vote(r) => {
                r.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
            }
            _ => self.unexpected(),
        }
    }
}

/// Serve another replica's connection until it closes.
pub async fn serve(conn: quinn::Connection, node: Arc<Node>) {
    loop {
        let (mut send, mut recv) = match conn.accept_bi().await {
            Ok(s) => s,
            Err(e) => {
                tracing::debug!("replica connection closed: {e}");
                return;
            }
        };
        let node = node.clone();
        tokio::spawn(async move {
            let raft = &node.raft;
            let rpc = match read_msg::<Rpc>(&mut recv, MAX_RPC, Wait::Deadline).await {
                Ok(Some(rpc)) => rpc,
                Ok(None) => return,
                Err(e) => {
                    tracing::warn!("bad replication request: {e}");
                    return;
                }
            };
            let reply = match rpc {
                Rpc::Append(r) => {
                    let answer = raft.append_entries(r).await;
                    if matches!(&answer, Ok(a) if !matches!(a, AppendEntriesResponse::HigherVote(_)))
                    {
                        node.contact.heard();
                    }
                    Reply::Append(answer)
                }
                Rpc::Vote(r) => {
                    let answer = raft.vote(r).await;
                    if matches!(&answer, Ok(a) if a.vote_granted) {
                        node.contact.heard();
                    }
                    Reply::Vote(answer)
                }
                Rpc::Snapshot(r) => {
                    let vote = r.vote;
                    let answer = raft.install_snapshot(r).await;
                    if matches!(&answer, Ok(a) if a.vote <= vote) {
                        node.contact.heard();
                    }
                    Reply::Snapshot(answer)
                }
                Rpc::PreVote(r) => Reply::PreVote(super::election::grant(&node, &r)),
                Rpc::Propose(p) => Reply::Propose(super::proposer::merge(&node, p).await),
                Rpc::Membership(c) => Reply::Membership(super::membership::handle(&node, c).await),
            };
            if let Err(e) = write_msg(&mut send, &reply, MAX_RPC).await {
                tracing::debug!("replication answer not sent: {e}");
            }
            let _ = send.finish();
        });
    }
}
