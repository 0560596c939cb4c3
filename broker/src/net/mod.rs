//! The QUIC side: the accept loop (with a connection cap), one task per connection and
//! per request stream, each in a span naming the peer node; a [`session`] per connection
//! that reads one request per stream and hands it to the file for its kind
//! ([`publish`], [`subscribe`], [`receipt`], [`audit`], [`roster`]); the [`fanout`]
//! thread that queues each committed message for the lanes the routing index names; and
//! the delivery [`lane`]s, one task and one QUIC stream per (subscription, precedence),
//! so FLASH never queues behind ROUTINE; case [`reminder`]s pushed to their parties; and
//! the [`cases`] requests.
//!
//! The decisions are [`crate::core`]'s; every change goes through the log's writer.

mod audit;
mod cases;
mod fanout;
mod lane;
mod publish;
mod receipt;
mod reminder;
mod roster;
mod session;
mod subscribe;
pub(crate) mod verifier;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ewx_net::wire::write_msg;
use ewx_net::{CloseCode, RosterCell};
use ewx_proto::frame::Push;
use ewx_proto::{NodeId, Precedence};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::config::Config;
use crate::log::{Head, LogHandle, LogRead};

pub(crate) use fanout::{Routes, spawn as spawn_fanout};
pub(crate) use reminder::{Outlet, push_reminders};

/// State every task shares.
#[derive(Debug)]
pub(crate) struct Shared {
    /// The configuration.
    pub config: Config,
    /// Checks publish signatures, batched across connections.
    pub verifier: verifier::Verifier,
    /// The roster in force.
    pub roster: RosterCell,
    /// Serialises roster updates (verify, persist, install) so none is rolled back.
    pub roster_update: tokio::sync::Mutex<()>,
    /// Reads of what is durable (writes go through `writer`).
    pub log: Arc<dyn LogRead>,
    /// The writer.
    pub writer: LogHandle,
    /// What the writer has committed.
    pub head: Arc<Head>,
    /// This replica's place in a cluster (`None`: a single broker).
    pub cluster: Option<Arc<crate::cluster::Node>>,
    /// The open delivery lanes, which the writer feeds.
    pub routes: Arc<Routes>,
    /// Request bytes held at once, in KiB permits (see `ewx_net::wire::read_frame`).
    pub request_budget: Arc<Semaphore>,
    /// Open connections by QUIC id.
    pub connections: Mutex<HashMap<usize, (NodeId, quinn::Connection)>>,
    /// Cancelled on shutdown.
    pub cancel: CancellationToken,
    /// Every spawned task, awaited on shutdown.
    pub tasks: TaskTracker,
    /// Counters for the operations listener.
    pub metrics: crate::ops::Metrics,
}

impl Shared {
    /// Largest frame read or written (an envelope of the configured maximum, framed).
    fn max_frame(&self) -> usize {
        self.config.limits.max_frame_bytes + 1024
    }

    /// Close every connection of a node that is no longer active in the roster.
    pub fn disconnect_inactive(&self) {
        let roster = self.roster.get();
        let conns = self.connections.lock().unwrap_or_else(|p| p.into_inner());
        for (node, conn) in conns.values() {
            if roster.active(node).is_err() {
                tracing::warn!(%node, "disconnecting: node revoked or removed from the roster");
                CloseCode::Revoked.close(conn);
            }
        }
    }

    /// Push a message to every connection of `node` (or of everyone if `None`).
    fn push(self: &Arc<Self>, to: Option<&NodeId>, msg: Push) {
        self.push_with(to, msg, Precedence::Routine);
    }

    /// Push on a stream with the priority of a precedence lane.
    fn push_with(self: &Arc<Self>, to: Option<&NodeId>, msg: Push, precedence: Precedence) {
        let conns: Vec<quinn::Connection> = {
            let c = self.connections.lock().unwrap_or_else(|p| p.into_inner());
            c.values()
                .filter(|(n, _)| to.is_none_or(|t| t == n))
                .map(|(_, c)| c.clone())
                .collect()
        };
        for conn in conns {
            let (shared, msg) = (self.clone(), msg.clone());
            self.tasks.spawn(async move {
                let r = async {
                    let mut s = conn.open_uni().await.map_err(|e| e.to_string())?;
                    let _ = s.set_priority(precedence as i32);
                    write_msg(&mut s, &msg, shared.max_frame())
                        .await
                        .map_err(|e| e.to_string())?;
                    s.finish().map_err(|e| e.to_string())
                };
                if let Err(e) = r.await {
                    tracing::debug!("push not delivered: {e}");
                }
            });
        }
    }

    /// What a metrics scrape reads now.
    pub fn levels(&self) -> crate::ops::metrics::Levels {
        let mut per_node: HashMap<String, u64> = HashMap::new();
        for (node, _) in self
            .connections
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
        {
            *per_node.entry(node.to_string()).or_default() += 1;
        }
        let mut connections: Vec<(String, u64)> = per_node.into_iter().collect();
        connections.sort();
        crate::ops::metrics::Levels {
            next_index: self
                .head
                .next_index
                .load(std::sync::atomic::Ordering::Acquire),
            audit_entries: self
                .head
                .audit_len
                .load(std::sync::atomic::Ordering::Acquire),
            roster_version: self.roster.get().version(),
            connections,
            lanes: self.routes.lanes_by_node(),
            replica: self.cluster.as_ref().map(|c| {
                let m = c.raft.metrics();
                let m = m.borrow();
                (m.current_leader == Some(c.me), m.current_term)
            }),
            commits: self.head.commits.clone(),
            checkpoint: self.newest_checkpoint().map(|(body, signed)| {
                (
                    body.size,
                    body.time_ms,
                    signed.cosignatures.len() as u64,
                    signed.replicas.len() as u64,
                )
            }),
            cases: None,
        }
    }

    /// The newest checkpoint, decoded: its body and its signatures.
    pub fn newest_checkpoint(
        &self,
    ) -> Option<(
        ewx_proto::checkpoint::Checkpoint,
        ewx_proto::checkpoint::SignedCheckpoint,
    )> {
        let bytes = self.log.newest_checkpoint().ok()??;
        let signed = ewx_proto::checkpoint::SignedCheckpoint::decode(&bytes).ok()?;
        let body = signed.checkpoint().ok()?;
        Some((body, signed))
    }

    /// Cases by status and overdue deadlines, from the writer's case index (waited for
    /// at most a second: a busy writer leaves them out of this scrape).
    pub async fn case_tally(&self) -> Option<(Vec<(&'static str, u64)>, u64)> {
        let query = crate::log::sequencer::CaseQuery::Tally {
            now_ms: self.config.clock.now_ms(),
        };
        let answer = tokio::time::timeout(Duration::from_secs(1), self.writer.cases(query)).await;
        match answer {
            Ok(Ok(crate::log::sequencer::CaseAnswer::Tally { by_status, overdue })) => {
                Some((by_status, overdue))
            }
            _ => None,
        }
    }

    /// Why this broker cannot serve now, if it cannot: its writer stopped or failed, or
    /// (a replica) it knows of no leader.
    pub fn not_ready(&self) -> Option<String> {
        if self.cancel.is_cancelled() {
            return Some("shutting down".into());
        }
        if self.writer.is_closed() {
            return Some("the writer has stopped".into());
        }
        if self.head.failed.load(std::sync::atomic::Ordering::Acquire) {
            return Some("a store commit failed; the writer refuses writes until restarted".into());
        }
        if let Some(c) = &self.cluster
            && c.leader().is_none()
        {
            return Some("no cluster leader known".into());
        }
        None
    }

    fn connections_of(&self, node: &NodeId) -> usize {
        self.connections
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .filter(|(n, _)| n == node)
            .count()
    }
}

/// Accept connections until cancelled, refusing those past the cap.
pub(crate) async fn accept_loop(endpoint: quinn::Endpoint, shared: Arc<Shared>) {
    let cap = Arc::new(Semaphore::new(shared.config.limits.max_connections));
    loop {
        let incoming = tokio::select! {
            _ = shared.cancel.cancelled() => {
                // shutting down: refuse what still arrives until the endpoint closes (an
                // attempt left queued would hold the socket until its handshake timed out)
                tokio::spawn(async move {
                    while let Some(i) = endpoint.accept().await {
                        i.refuse();
                    }
                });
                break;
            }
            i = endpoint.accept() => match i { Some(i) => i, None => break },
        };
        match cap.clone().try_acquire_owned() {
            Ok(permit) => {
                let s = shared.clone();
                shared.tasks.spawn(async move {
                    connection(incoming, s).await;
                    drop(permit);
                });
            }
            Err(_) => {
                tracing::warn!(remote = %incoming.remote_address(), "connection refused: cap of {} reached", shared.config.limits.max_connections);
                incoming.refuse();
            }
        }
    }
}

async fn connection(incoming: quinn::Incoming, shared: Arc<Shared>) {
    let remote = incoming.remote_address();
    let conn = match incoming.await {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(%remote, "handshake refused: {e}");
            return;
        }
    };
    let node = match ewx_net::tls::peer_node(&conn, &shared.roster.get()) {
        Ok(n) => n,
        Err(e) => {
            tracing::warn!(%remote, "connection refused: {e}");
            CloseCode::NotInRoster.close(&conn);
            return;
        }
    };
    if is_replication(&conn) {
        let span = tracing::info_span!("replica", node = %node, %remote);
        match &shared.cluster {
            Some(c) if c.is_replica(&node) => {
                tokio::select! {
                    () = crate::cluster::serve(conn.clone(), c.clone()).instrument(span) => {}
                    () = shared.cancel.cancelled() => CloseCode::Normal.close(&conn),
                }
            }
            _ => {
                tracing::warn!(%remote, %node, "replication refused: not a replica of this cluster");
                CloseCode::NotInRoster.close(&conn);
            }
        }
        return;
    }
    let cap = shared.config.limits.max_connections_per_node;
    if shared.connections_of(&node) >= cap {
        tracing::warn!(%remote, %node, "connection refused: {cap} connections of this node already");
        CloseCode::TooManyConnections.close(&conn);
        return;
    }
    let span = tracing::info_span!("conn", node = %node, conn = conn.stable_id(), %remote);
    session::Session::run(shared, conn, node)
        .instrument(span)
        .await;
}

/// Did the peer ask for the replication protocol (ALPN `ewx-raft/1`)?
fn is_replication(conn: &quinn::Connection) -> bool {
    conn.handshake_data()
        .and_then(|h| h.downcast::<quinn::crypto::rustls::HandshakeData>().ok())
        .and_then(|h| h.protocol)
        .is_some_and(|p| p == ewx_net::tls::ALPN_RAFT)
}

/// Ticks the writer so checkpoints are signed on time even when idle.
pub(crate) async fn ticker(shared: Arc<Shared>) {
    let mut every = tokio::time::interval(Duration::from_millis(
        shared.config.checkpoint.interval_ms.max(10),
    ));
    loop {
        tokio::select! {
            _ = shared.cancel.cancelled() => return,
            _ = every.tick() => shared.writer.tick(),
        }
    }
}
