//! The QUIC side: the accept loop (with a connection cap), one task per connection and per
//! request stream, each in a span naming the peer node, and delivery lanes — one task and
//! one QUIC stream per (subscription, precedence), so FLASH never queues behind ROUTINE.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use ewx_proto::audit::Event;
use ewx_proto::frame::{
    Push, RejectReason, Request, Response, StartAt, decode_body, delivery_frame_head,
};
use ewx_proto::receipt::Receipt;
use ewx_proto::{Envelope, NodeId, Precedence, SignedRoster};
use tokio::sync::{Semaphore, broadcast, mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::config::Config;
use crate::router::{self, RejectLimiter, Rejection, SubscriptionSpec};
use crate::store::{Store, cursor_key};
use crate::writer::{Command, Head, Stored};
use ewx_net::tls::{self, RosterCell};
use ewx_net::wire::{Wait, read_frame, write_msg};
use ewx_net::{CloseCode, now_ms};

/// Messages read from the store per catch-up step of a lane…
const CATCH_UP_BATCH: usize = 256;
/// …and bytes, so a stalled lane pins little memory.
const CATCH_UP_BYTES: usize = 1 << 20;
/// How long a finished response may take to reach the client before the task gives up.
const RESPONSE_LINGER: Duration = Duration::from_secs(2);

/// State every task shares.
#[derive(Debug)]
pub struct Shared {
    /// The configuration.
    pub config: Config,
    /// Checks publish signatures, batched across connections.
    pub verifier: crate::verifier::Verifier,
    /// The roster in force.
    pub roster: RosterCell,
    /// Serialises roster updates (verify, persist, install) so none is rolled back.
    pub roster_update: tokio::sync::Mutex<()>,
    /// The store (for reads; writes go through the writer).
    pub store: Store,
    /// The writer's queue. Bounded: when full, request tasks wait (backpressure).
    pub writer: mpsc::Sender<Command>,
    /// What the writer has committed.
    pub head: Arc<Head>,
    /// Live fan-out of committed messages. Bounded: a lane that lags falls back to the store.
    pub live: broadcast::Sender<Arc<Stored>>,
    /// Request bytes held at once, in KiB permits (see `wire::read_frame`).
    pub request_budget: Arc<Semaphore>,
    /// Open connections by QUIC id.
    pub connections: Mutex<HashMap<usize, (NodeId, quinn::Connection)>>,
    /// Cancelled on shutdown.
    pub cancel: CancellationToken,
    /// Every spawned task, awaited on shutdown.
    pub tasks: TaskTracker,
}

impl Shared {
    fn max_frame(&self) -> usize {
        self.config.limits.max_frame_bytes + 1024
    }

    /// Queue an audit entry (waits if the writer is busy; dropped only at shutdown).
    pub async fn audit(&self, event: Event) {
        if self.writer.send(Command::Audit(event)).await.is_err() {
            tracing::warn!("writer gone; audit entry not written");
        }
    }

    /// Set durable cursors (and log `event`), returning once durable.
    async fn set_cursors(&self, cursors: Vec<(Vec<u8>, u64)>, event: Option<Event>) -> bool {
        let (reply, done) = oneshot::channel();
        self.writer
            .send(Command::Cursors {
                cursors,
                event,
                reply,
            })
            .await
            .is_ok()
            && done.await.unwrap_or(false)
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

    /// Verify and install a newer roster, log it, disconnect revoked nodes, tell everyone.
    /// Updates are serialised, so a slower, older update can never overwrite a newer one.
    ///
    /// # Errors
    /// A `BadRoster` rejection if it does not verify against the roster in force.
    pub async fn update_roster(self: &Arc<Self>, bytes: &[u8]) -> Result<u64, Rejection> {
        let _one_at_a_time = self.roster_update.lock().await;
        let bad = |e: ewx_proto::Error| Rejection::new(RejectReason::BadRoster, e.to_string());
        let signed = SignedRoster::decode(bytes).map_err(bad)?;
        let current = self.roster.get();
        let new = signed.verify_update(&current).map_err(bad)?;
        if new.hash() == current.hash() {
            return Ok(new.version());
        }
        let (version, hash) = (new.version(), new.hash());
        let (reply, done) = oneshot::channel();
        let cmd = Command::Roster {
            bytes: bytes.to_vec(),
            event: Event::RosterChanged { version, hash },
            reply,
        };
        let durable = self.writer.send(cmd).await.is_ok() && done.await.unwrap_or(false);
        if !durable {
            return Err(Rejection::new(
                RejectReason::StorageFull,
                "cannot store the roster".into(),
            ));
        }
        self.roster.set(new);
        tracing::info!(version, "roster updated");
        self.disconnect_inactive();
        self.push(
            None,
            Push::Roster {
                roster: bytes.to_vec(),
            },
        );
        Ok(version)
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
pub async fn accept_loop(endpoint: quinn::Endpoint, shared: Arc<Shared>) {
    let cap = Arc::new(Semaphore::new(shared.config.limits.max_connections));
    loop {
        let incoming = tokio::select! {
            _ = shared.cancel.cancelled() => break,
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
    let node = match tls::peer_node(&conn, &shared.roster.get()) {
        Ok(n) => n,
        Err(e) => {
            tracing::warn!(%remote, "connection refused: {e}");
            CloseCode::NotInRoster.close(&conn);
            return;
        }
    };
    if shared.connections_of(&node) >= shared.config.limits.max_connections_per_node {
        tracing::warn!(%remote, %node, "connection refused: {} connections of this node already", shared.config.limits.max_connections_per_node);
        CloseCode::TooManyConnections.close(&conn);
        return;
    }
    let span = tracing::info_span!("conn", node = %node, %remote);
    Session::run(shared, conn, node).instrument(span).await;
}

type Outcome = Result<Response, (Rejection, Option<ewx_proto::Digest32>)>;

/// One authenticated connection.
struct Session {
    shared: Arc<Shared>,
    conn: quinn::Connection,
    node: NodeId,
    subs: Mutex<HashMap<String, CancellationToken>>,
    /// Highest index acked per (subscription, lane): repeated acks write nothing.
    acked: Mutex<HashMap<(String, Precedence), u64>>,
    limiter: Mutex<RejectLimiter>,
    cancel: CancellationToken,
}

impl Session {
    async fn run(shared: Arc<Shared>, conn: quinn::Connection, node: NodeId) {
        tracing::info!("connected");
        let id = conn.stable_id();
        shared
            .connections
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id, (node.clone(), conn.clone()));
        let session = Arc::new(Session {
            cancel: shared.cancel.child_token(),
            limiter: Mutex::new(RejectLimiter::new(Some(node.clone()), 10, 1000)),
            subs: Mutex::new(HashMap::new()),
            acked: Mutex::new(HashMap::new()),
            shared: shared.clone(),
            conn: conn.clone(),
            node,
        });
        let reason = loop {
            let (send, recv) = tokio::select! {
                _ = session.cancel.cancelled() => break "shutdown".to_string(),
                s = conn.accept_bi() => match s {
                    Ok(s) => s,
                    Err(e) => break e.to_string(),
                },
            };
            let s = session.clone();
            shared.tasks.spawn(s.request(send, recv).in_current_span());
        };
        session.cancel.cancel();
        shared
            .connections
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&id);
        let folded = session
            .limiter
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .flush(now_ms());
        if let Some(e) = folded {
            shared.audit(e).await;
        }
        tracing::info!("disconnected: {reason}");
    }

    async fn reject(&self, r: &Rejection, envelope_hash: Option<ewx_proto::Digest32>) {
        tracing::warn!(reason = ?r.reason, "rejected: {}", r.detail);
        let events = self
            .limiter
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .record(now_ms(), r, envelope_hash);
        for e in events {
            self.shared.audit(e).await;
        }
    }

    async fn request(self: Arc<Self>, mut send: quinn::SendStream, mut recv: quinn::RecvStream) {
        let max = self.shared.max_frame();
        let budget = self.shared.request_budget.clone();
        let response = match read_frame(&mut recv, max, Wait::Deadline, Some(&budget)).await {
            // the permit is held until the request is answered
            Ok(Some((body, _permit))) => match decode_body::<Request>(&body, max) {
                Ok(req) => self.handle(req).await,
                Err(e) => self.refuse_frame(e).await,
            },
            Ok(None) => return,
            Err(ewx_net::Error::Proto(e)) => self.refuse_frame(e).await,
            Err(e) => {
                tracing::debug!("request stream failed: {e}");
                return;
            }
        };
        if let Err(e) = write_msg(&mut send, &response, max).await {
            tracing::debug!("cannot answer: {e}");
            return;
        }
        let _ = send.finish();
        // wait until the client has the answer, so a shutdown right after cannot drop it
        let _ = tokio::time::timeout(RESPONSE_LINGER, send.stopped()).await;
    }

    async fn refuse_frame(&self, e: ewx_proto::Error) -> Response {
        let r = Rejection::new(router::reason_for(&e), format!("bad request frame: {e}"));
        self.reject(&r, None).await;
        Response::Rejected {
            reason: r.reason,
            detail: r.detail,
        }
    }

    async fn handle(self: &Arc<Self>, req: Request) -> Response {
        let result = match req {
            Request::Hello { roster_version } => Ok(self.hello(roster_version)),
            Request::Publish { envelope } => self.publish(envelope).await,
            Request::Subscribe {
                name,
                pattern,
                from,
                filter,
            } => {
                let spec = SubscriptionSpec {
                    node: self.node.clone(),
                    name,
                    pattern,
                    filter,
                };
                self.subscribe(spec, from).await
            }
            Request::Ack {
                name,
                precedence,
                through,
            } => self.ack(name, precedence, through).await,
            Request::Unsubscribe { name } => {
                if let Some(t) = self
                    .subs
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(&name)
                {
                    t.cancel();
                }
                Ok(Response::Done)
            }
            Request::Receipt(r) => self.receipt(r).await,
            Request::AuditHead
            | Request::AuditEntries { .. }
            | Request::GetEnvelope { .. }
            | Request::GetRoster { .. }
            | Request::Checkpoints { .. }
            | Request::InclusionProof { .. }
            | Request::ConsistencyProof { .. }
            | Request::Cosign { .. } => self.audit_request(req).await.map_err(|r| (r, None)),
            Request::UpdateRoster { roster } => self
                .shared
                .update_roster(&roster)
                .await
                .map(|_| Response::Done)
                .map_err(|r| (r, None)),
        };
        match result {
            Ok(r) => r,
            Err((r, hash)) => {
                self.reject(&r, hash).await;
                Response::Rejected {
                    reason: r.reason,
                    detail: r.detail,
                }
            }
        }
    }

    fn hello(&self, client_version: u64) -> Response {
        let roster = self.shared.roster.get();
        let newer = (client_version < roster.version())
            .then(|| roster.signed().encode().ok())
            .flatten();
        Response::Welcome {
            node: self.node.clone(),
            roster_version: roster.version(),
            roster: newer,
        }
    }

    async fn publish(&self, bytes: Vec<u8>) -> Outcome {
        let shared = &self.shared;
        let roster = shared.roster.get();
        let limits = &shared.config.limits;
        let env = router::check_envelope(&self.node, &bytes, limits.max_frame_bytes)
            .map_err(|r| (r, None))?;
        let env = shared
            .verifier
            .verify(env, roster.clone())
            .await
            .map_err(|e| (router::reject(e), None))?;
        router::check_signed(&env, &roster, now_ms(), limits.max_clock_skew_ms)
            .map_err(|r| (r, None))?;
        let (id, hash) = (env.header().id, env.hash());
        let (reply, answer) = oneshot::channel();
        let cmd = Command::Publish {
            envelope: Box::new(env),
            bytes,
            reply,
        };
        let internal = || {
            (
                Rejection::new(RejectReason::Internal, "broker is shutting down".into()),
                Some(hash),
            )
        };
        shared.writer.send(cmd).await.map_err(|_| internal())?;
        match answer.await {
            Ok(Ok(log_index)) => Ok(Response::PublishAck { id, log_index }),
            Ok(Err(r)) => Err((r, Some(hash))),
            Err(_) => Err(internal()),
        }
    }

    /// Where each lane of a new subscription starts, and the cursors to write so that a
    /// later `Resume` of a lane never acked still starts here (not at the head of then).
    fn lane_starts(
        &self,
        spec: &SubscriptionSpec,
        from: StartAt,
        head: u64,
    ) -> crate::Result<Vec<(Precedence, u64, bool)>> {
        Precedence::ALL
            .into_iter()
            .map(|p| {
                let explicit = match from {
                    StartAt::Earliest => Some(0),
                    StartAt::Latest => Some(head),
                    StartAt::Index(i) => Some(i),
                    StartAt::Resume => None,
                };
                Ok(match explicit {
                    Some(start) => (p, start, true),
                    None => match self
                        .shared
                        .store
                        .cursor(&cursor_key(&spec.node, &spec.name, p))?
                    {
                        Some(c) => (p, c, false),
                        None => (p, head, true),
                    },
                })
            })
            .collect()
    }

    async fn subscribe(self: &Arc<Self>, spec: SubscriptionSpec, from: StartAt) -> Outcome {
        let shared = &self.shared;
        if let Err(r) = router::check_subscription(&spec, &shared.roster.get()) {
            let (own, folded) = self
                .limiter
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .admit(now_ms(), &r.detail);
            if let Some(e) = folded {
                shared.audit(e).await;
            }
            if own {
                let denied = Event::Denied {
                    node: spec.node.clone(),
                    pattern: spec.pattern.to_string(),
                    reason: r.detail.clone(),
                };
                shared.audit(denied).await;
            }
            tracing::warn!(pattern = %spec.pattern, "subscription denied: {}", r.detail);
            // logged as `Denied` above, not as `Rejected` too
            return Ok(Response::Rejected {
                reason: r.reason,
                detail: r.detail,
            });
        }
        let open = self.subs.lock().unwrap_or_else(|p| p.into_inner()).len();
        let cap = shared.config.limits.max_subscriptions_per_connection;
        if open >= cap
            && !self
                .subs
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .contains_key(&spec.name)
        {
            return Err((
                Rejection::new(
                    RejectReason::RateLimited,
                    format!("at most {cap} subscriptions per connection"),
                ),
                None,
            ));
        }
        let internal =
            |e: crate::Error| (Rejection::new(RejectReason::Internal, e.to_string()), None);
        let head = shared.head.next_index.load(Ordering::Acquire);
        let starts = self.lane_starts(&spec, from, head).map_err(internal)?;
        let cursors: Vec<_> = starts
            .iter()
            .filter(|s| s.2)
            .map(|(p, start, _)| (cursor_key(&spec.node, &spec.name, *p), *start))
            .collect();
        let event = Event::Subscribed {
            node: spec.node.clone(),
            subscription: spec.name.clone(),
            pattern: spec.pattern.clone(),
        };
        if !shared.set_cursors(cursors, Some(event)).await {
            return Err((
                Rejection::new(
                    RejectReason::StorageFull,
                    "cannot store the subscription".into(),
                ),
                None,
            ));
        }
        let token = self.cancel.child_token();
        if let Some(old) = self
            .subs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(spec.name.clone(), token.clone())
        {
            old.cancel();
        }
        let spec = Arc::new(spec);
        for (p, start, _) in starts {
            let lane = Lane {
                shared: shared.clone(),
                conn: self.conn.clone(),
                spec: spec.clone(),
                precedence: p,
                next: start,
            };
            let (name, t) = (spec.name.clone(), token.clone());
            shared.tasks.spawn(
                lane.run(t)
                    .instrument(tracing::info_span!("lane", sub = %name, precedence = %p)),
            );
        }
        tracing::info!(sub = %spec.name, pattern = %spec.pattern, "subscribed");
        Ok(Response::Subscribed {
            name: spec.name.clone(),
            next_index: head,
        })
    }

    async fn ack(&self, name: String, precedence: Precedence, through: u64) -> Outcome {
        let fail = |reason, detail: String| Err((Rejection::new(reason, detail), None));
        if !self
            .subs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains_key(&name)
        {
            return fail(
                RejectReason::Malformed,
                format!("no open subscription named {name:?}"),
            );
        }
        if through >= self.shared.head.next_index.load(Ordering::Acquire) {
            return fail(
                RejectReason::Malformed,
                format!("index {through} has not been delivered"),
            );
        }
        let lane = (name.clone(), precedence);
        let advanced = self
            .acked
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&lane)
            .is_none_or(|&a| through > a);
        if !advanced {
            return Ok(Response::Done); // nothing new: no cursor write, no audit entry
        }
        let key = cursor_key(&self.node, &name, precedence);
        let event = Event::Delivered {
            to: self.node.clone(),
            subscription: name,
            precedence,
            through_index: through,
        };
        if self
            .shared
            .set_cursors(vec![(key, through + 1)], Some(event))
            .await
        {
            self.acked
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(lane, through);
            Ok(Response::Done)
        } else {
            fail(RejectReason::StorageFull, "cannot store the cursor".into())
        }
    }

    async fn receipt(&self, r: Receipt) -> Outcome {
        let fail = |reason, detail: String| Err((Rejection::new(reason, detail), None));
        if r.by != self.node {
            return fail(
                RejectReason::WrongSender,
                format!(
                    "receipt signed as {} on a connection of {}",
                    r.by, self.node
                ),
            );
        }
        if let Err(e) = r.verify(&self.shared.roster.get()) {
            return fail(RejectReason::BadSignature, e.to_string());
        }
        let store = &self.shared.store;
        let stored = match store
            .index_of(&r.id)
            .and_then(|i| i.map(|i| store.message(i)).transpose())
        {
            Ok(Some(Some(bytes))) => bytes,
            Ok(_) => {
                return fail(
                    RejectReason::Malformed,
                    format!("no stored message {}", r.id),
                );
            }
            Err(e) => return fail(RejectReason::Internal, e.to_string()),
        };
        let env = match Envelope::decode(&stored, usize::MAX) {
            Ok(e) if e.hash() == r.envelope_hash && e.header().wrapped_for(&r.by).is_some() => e,
            Ok(_) => {
                return fail(
                    RejectReason::Malformed,
                    "receipt does not match the stored message or its recipients".into(),
                );
            }
            Err(e) => return fail(RejectReason::Internal, e.to_string()),
        };
        let (reply, answer) = oneshot::channel();
        if self
            .shared
            .writer
            .send(Command::Receipt {
                receipt: r.clone(),
                reply,
            })
            .await
            .is_err()
        {
            return fail(RejectReason::Internal, "broker is shutting down".into());
        }
        match answer.await {
            Ok(Ok(true)) => self
                .shared
                .push(Some(&env.header().sender), Push::Receipt(r)),
            Ok(Ok(false)) => {} // a duplicate: logged and forwarded once already
            Ok(Err(rej)) => return Err((rej, None)),
            Err(_) => return fail(RejectReason::Internal, "broker is shutting down".into()),
        }
        Ok(Response::Done)
    }
}

/// Most audit entries or checkpoints sent in one answer.
const AUDIT_PAGE: usize = 1024;

impl Session {
    fn is_auditor(&self) -> bool {
        self.shared
            .roster
            .get()
            .active(&self.node)
            .is_ok_and(|n| n.role == ewx_proto::Role::Auditor)
    }

    /// Audit data: auditors see everything; every node sees checkpoints, consistency
    /// proofs and rosters (what witnesses need), and the entries, envelopes and inclusion
    /// proofs of its own messages and receipts.
    async fn audit_request(&self, req: Request) -> Result<Response, Rejection> {
        let store = &self.shared.store;
        let internal = |e: crate::Error| Rejection::new(RejectReason::Internal, e.to_string());
        let denied = |what: &str| {
            Rejection::new(
                RejectReason::NotPermitted,
                format!("{what} is for auditors (or about your own messages)"),
            )
        };
        let audit_len = self.shared.head.audit_len.load(Ordering::Acquire);
        match req {
            Request::AuditHead => Ok(Response::AuditHead {
                entries: audit_len,
                next_log_index: self.shared.head.next_index.load(Ordering::Acquire),
            }),
            Request::AuditEntries { from, limit } => {
                // others may read single entries about their own messages and receipts
                let own = limit == 1 && self.entry_is_mine(from).map_err(internal)?;
                if !self.is_auditor() && !own {
                    return Err(denied("the audit log"));
                }
                let to = from
                    .saturating_add(u64::from(limit).min(AUDIT_PAGE as u64))
                    .min(audit_len);
                let entries = store.audit_range(from, to).map_err(internal)?;
                Ok(Response::AuditEntries {
                    from,
                    entries: entries
                        .iter()
                        .map(|e| serde_bytes::ByteBuf::from(e.to_vec()))
                        .collect(),
                })
            }
            Request::GetEnvelope { log_index } => {
                let bytes = store.message(log_index).map_err(internal)?;
                if !self.is_auditor() {
                    let mine = bytes
                        .as_ref()
                        .and_then(|b| Envelope::decode(b, usize::MAX).ok())
                        .is_some_and(|e| e.header().sender == self.node);
                    if !mine {
                        return Err(denied("that envelope"));
                    }
                }
                Ok(Response::Bytes {
                    bytes: bytes.map(|b| b.to_vec()),
                })
            }
            Request::GetRoster { version } => Ok(Response::Bytes {
                bytes: store.roster(version).map_err(internal)?.map(|b| b.to_vec()),
            }),
            Request::Checkpoints { from_size } => {
                let cps = store
                    .checkpoints_from(from_size, AUDIT_PAGE)
                    .map_err(internal)?;
                Ok(Response::Checkpoints {
                    checkpoints: cps
                        .iter()
                        .map(|c| serde_bytes::ByteBuf::from(c.to_vec()))
                        .collect(),
                })
            }
            Request::InclusionProof { index, size } => {
                if !self.is_auditor() && !self.entry_is_mine(index).map_err(internal)? {
                    return Err(denied("that inclusion proof"));
                }
                self.proof(|t| t.inclusion_proof(index, size))
            }
            Request::ConsistencyProof { old, new } => self.proof(|t| t.consistency_proof(old, new)),
            Request::Cosign { size, cosignature } => self.cosign(size, cosignature).await,
            _ => Err(Rejection::new(
                RejectReason::Malformed,
                "not an audit request".into(),
            )),
        }
    }

    fn proof(
        &self,
        f: impl FnOnce(&ewx_proto::merkle::MerkleTree) -> ewx_proto::Result<Vec<ewx_proto::Digest32>>,
    ) -> Result<Response, Rejection> {
        let tree = self
            .shared
            .head
            .tree
            .read()
            .unwrap_or_else(|p| p.into_inner());
        f(&tree)
            .map(|hashes| Response::Proof { hashes })
            .map_err(|e| Rejection::new(RejectReason::Malformed, e.to_string()))
    }

    fn entry_is_mine(&self, index: u64) -> crate::Result<bool> {
        let Some(bytes) = self
            .shared
            .store
            .audit_range(index, index.saturating_add(1))?
            .pop()
        else {
            return Ok(false);
        };
        Ok(
            match ewx_proto::audit::Entry::decode(&bytes).map(|e| e.event) {
                Ok(Event::Published { sender, .. }) => sender == self.node,
                Ok(Event::Receipt(r)) => r.by == self.node,
                _ => false,
            },
        )
    }

    async fn cosign(
        &self,
        size: u64,
        cosignature: ewx_proto::checkpoint::Cosignature,
    ) -> Result<Response, Rejection> {
        let bad = |reason, detail: String| Err(Rejection::new(reason, detail));
        if cosignature.witness != self.node {
            return bad(
                RejectReason::WrongSender,
                format!(
                    "co-signature of {} on a connection of {}",
                    cosignature.witness, self.node
                ),
            );
        }
        let stored = match self.shared.store.checkpoint(size) {
            Ok(Some(b)) => b,
            Ok(None) => {
                return bad(
                    RejectReason::Malformed,
                    format!("no checkpoint of size {size}"),
                );
            }
            Err(e) => return bad(RejectReason::Internal, e.to_string()),
        };
        let mut cp = ewx_proto::checkpoint::SignedCheckpoint::decode(&stored)
            .map_err(|e| Rejection::new(RejectReason::Internal, e.to_string()))?;
        cp.cosignatures = vec![cosignature.clone()];
        if let Err(e) = cp.verify_cosignatures(&self.shared.roster.get()) {
            return bad(RejectReason::BadSignature, e.to_string());
        }
        let (reply, answer) = oneshot::channel();
        if self
            .shared
            .writer
            .send(Command::Cosign {
                size,
                cosignature,
                reply,
            })
            .await
            .is_err()
        {
            return bad(RejectReason::Internal, "broker is shutting down".into());
        }
        match answer.await {
            Ok(Ok(())) => Ok(Response::Done),
            Ok(Err(r)) => Err(r),
            Err(_) => bad(RejectReason::Internal, "broker is shutting down".into()),
        }
    }
}

/// One ordered delivery lane: a subscription's messages of one precedence.
struct Lane {
    shared: Arc<Shared>,
    conn: quinn::Connection,
    spec: Arc<SubscriptionSpec>,
    precedence: Precedence,
    next: u64,
}

impl Lane {
    /// Deliver until cancelled. If delivery fails while the subscription is still wanted,
    /// the connection is closed: a silently dead lane would lose warnings, a closed
    /// connection is seen, and the subscriber resumes from its cursor.
    async fn run(mut self, cancel: CancellationToken) {
        let mut stream = None;
        let result = tokio::select! {
            _ = cancel.cancelled() => Ok(()),
            r = self.deliver(&mut stream) => r,
        };
        if let Err(e) = result {
            if !cancel.is_cancelled() {
                tracing::warn!("delivery lane failed, closing the connection: {e}");
                CloseCode::LaneFailed.close(&self.conn);
            }
        }
    }

    async fn deliver(&mut self, stream: &mut Option<quinn::SendStream>) -> crate::Result<()> {
        let mut live = self.shared.live.subscribe();
        loop {
            self.catch_up(stream).await?;
            loop {
                match live.recv().await {
                    Ok(m) if m.header.precedence == self.precedence && m.index >= self.next => {
                        self.next = m.index + 1;
                        if router::deliverable(&self.spec, &self.shared.roster.get(), &m.header) {
                            match &m.bytes {
                                Some(b) => self.send(stream, m.index, b.clone()).await?,
                                None => match self.shared.store.message(m.index)? {
                                    Some(b) => {
                                        self.send(stream, m.index, Bytes::from_owner(b)).await?
                                    }
                                    None => {
                                        tracing::debug!(index = m.index, "pruned before delivery")
                                    }
                                },
                            }
                        }
                    }
                    Ok(_) => {}
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        tracing::debug!("lagged {n} live messages; catching up from the store");
                        break;
                    }
                    Err(broadcast::error::RecvError::Closed) => return Ok(()),
                }
            }
        }
    }

    /// Deliver stored messages of this lane from `next` up to the durable head.
    async fn catch_up(&mut self, stream: &mut Option<quinn::SendStream>) -> crate::Result<()> {
        loop {
            let head = self.shared.head.next_index.load(Ordering::Acquire);
            let batch = self.shared.store.lane(
                self.precedence,
                self.next,
                head,
                CATCH_UP_BATCH,
                CATCH_UP_BYTES,
            )?;
            if batch.is_empty() {
                // nothing stored below the head is left for this lane
                self.next = self.next.max(head);
                return Ok(());
            }
            for (index, bytes) in batch {
                self.next = index + 1;
                match Envelope::decode(&bytes, usize::MAX) {
                    Ok(env)
                        if router::deliverable(
                            &self.spec,
                            &self.shared.roster.get(),
                            env.header(),
                        ) =>
                    {
                        self.send(stream, index, Bytes::from_owner(bytes)).await?;
                    }
                    Ok(_) => {}
                    Err(e) => tracing::error!(index, "stored envelope does not decode: {e}"),
                }
            }
        }
    }

    async fn send(
        &self,
        stream: &mut Option<quinn::SendStream>,
        index: u64,
        envelope: Bytes,
    ) -> crate::Result<()> {
        if stream.is_none() {
            let s = self
                .conn
                .open_uni()
                .await
                .map_err(|e| crate::Error::Transport(e.to_string()))?;
            // higher precedence streams are sent first by QUIC
            let _ = s.set_priority(self.precedence as i32);
            *stream = Some(s);
        }
        let Some(s) = stream.as_mut() else {
            return Ok(());
        };
        // the frame's head, then the stored bytes themselves: fan-out copies nothing
        let head = delivery_frame_head(&self.spec.name, index, envelope.len(), usize::MAX)?;
        s.write_all_chunks(&mut [Bytes::from(head), envelope])
            .await
            .map_err(|e| crate::Error::Transport(e.to_string()))
    }
}

/// Sends `Tick` to the writer so checkpoints are signed on time even when idle.
pub async fn ticker(shared: Arc<Shared>) {
    let mut every = tokio::time::interval(Duration::from_millis(
        shared.config.checkpoint.interval_ms.max(10),
    ));
    loop {
        tokio::select! {
            _ = shared.cancel.cancelled() => return,
            _ = every.tick() => {
                // full queue: the writer is busy and will checkpoint by count anyway
                let _ = shared.writer.try_send(Command::Tick);
            }
        }
    }
}
