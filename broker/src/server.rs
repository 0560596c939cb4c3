//! The QUIC side: the accept loop (with a connection cap), one task per connection and per
//! request stream, each in a span naming the peer node, and delivery lanes — one task and
//! one QUIC stream per (subscription, precedence), so FLASH never queues behind ROUTINE.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ewx_proto::audit::Event;
use ewx_proto::frame::{Push, RejectReason, Request, Response, StartAt};
use ewx_proto::receipt::Receipt;
use ewx_proto::{Envelope, NodeId, Precedence, SignedRoster};
use tokio::sync::{Semaphore, broadcast, mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::config::Config;
use crate::router::{self, RejectLimiter, Rejection, SubscriptionSpec};
use crate::store::{Store, cursor_key};
use crate::tls::{self, RosterCell};
use crate::wire::{read_msg, write_msg};
use crate::writer::{Command, Head, Stored};

/// Messages read from the store per catch-up step of a lane.
const CATCH_UP_BATCH: usize = 256;

/// State every task shares.
#[derive(Debug)]
pub struct Shared {
    /// The configuration.
    pub config: Config,
    /// The roster in force.
    pub roster: RosterCell,
    /// The store (for reads; writes go through the writer).
    pub store: Store,
    /// The writer's queue. Bounded: when full, request tasks wait (backpressure).
    pub writer: mpsc::Sender<Command>,
    /// What the writer has committed.
    pub head: Arc<Head>,
    /// Live fan-out of committed messages. Bounded: a lane that lags falls back to the store.
    pub live: broadcast::Sender<Arc<Stored>>,
    /// Open connections by QUIC id.
    pub connections: Mutex<HashMap<usize, (NodeId, quinn::Connection)>>,
    /// Cancelled on shutdown.
    pub cancel: CancellationToken,
    /// Every spawned task, awaited on shutdown.
    pub tasks: TaskTracker,
}

pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
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

    /// Close every connection of a node that is no longer active in the roster.
    pub fn disconnect_inactive(&self) {
        let roster = self.roster.get();
        let conns = self.connections.lock().unwrap_or_else(|p| p.into_inner());
        for (node, conn) in conns.values() {
            if roster.active(node).is_err() {
                tracing::warn!(%node, "disconnecting: node revoked or removed from the roster");
                conn.close(quinn::VarInt::from_u32(2), b"revoked");
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
    ///
    /// # Errors
    /// A `BadRoster` rejection if it does not verify against the roster in force.
    pub async fn update_roster(self: &Arc<Self>, bytes: &[u8]) -> Result<u64, Rejection> {
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
            conn.close(quinn::VarInt::from_u32(1), b"not in roster");
            return;
        }
    };
    let span = tracing::info_span!("conn", node = %node, %remote);
    Session::run(shared, conn, node).instrument(span).await;
}

/// One authenticated connection.
struct Session {
    shared: Arc<Shared>,
    conn: quinn::Connection,
    node: NodeId,
    subs: Mutex<HashMap<String, CancellationToken>>,
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
        let response = match read_msg::<Request>(&mut recv, max).await {
            Ok(Some(req)) => self.handle(req).await,
            Ok(None) => return,
            Err(crate::Error::Proto(e)) => {
                let r = Rejection::new(router::reason_for(&e), format!("bad request frame: {e}"));
                self.reject(&r, None).await;
                Response::Rejected {
                    reason: r.reason,
                    detail: r.detail,
                }
            }
            Err(e) => {
                tracing::debug!("request stream failed: {e}");
                return;
            }
        };
        if let Err(e) = write_msg(&mut send, &response, max).await {
            tracing::debug!("cannot answer: {e}");
        }
        let _ = send.finish();
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
        let env = router::check_publish(
            &self.node,
            &bytes,
            &roster,
            now_ms(),
            limits.max_frame_bytes,
            limits.max_clock_skew_ms,
        )
        .map_err(|r| (r, None))?;
        let (id, hash) = (env.header().id, env.hash());
        let (reply, answer) = oneshot::channel();
        let cmd = Command::Publish {
            envelope: Box::new(env),
            bytes: bytes.into(),
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

    async fn subscribe(self: &Arc<Self>, spec: SubscriptionSpec, from: StartAt) -> Outcome {
        let shared = &self.shared;
        if let Err(r) = router::check_subscription(&spec, &shared.roster.get()) {
            shared
                .audit(Event::Denied {
                    node: spec.node.clone(),
                    pattern: spec.pattern.to_string(),
                    reason: r.detail.clone(),
                })
                .await;
            return Err((r, None));
        }
        let head = shared.head.next_index.load(Ordering::Acquire);
        let mut starts = Vec::with_capacity(4);
        for p in Precedence::ALL {
            let start = match from {
                StartAt::Earliest => 0,
                StartAt::Latest => head,
                StartAt::Index(i) => i,
                StartAt::Resume => {
                    let c = shared.store.cursor(&cursor_key(&spec.node, &spec.name, p));
                    c.map_err(|e| (Rejection::new(RejectReason::Internal, e.to_string()), None))?
                        .unwrap_or(head)
                }
            };
            starts.push((p, start));
        }
        shared
            .audit(Event::Subscribed {
                node: spec.node.clone(),
                subscription: spec.name.clone(),
                pattern: spec.pattern.clone(),
            })
            .await;
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
        for (p, start) in starts {
            let lane = Lane {
                shared: shared.clone(),
                conn: self.conn.clone(),
                spec: spec.clone(),
                precedence: p,
                next: start,
            };
            let (name, t) = (spec.name.clone(), token.clone());
            shared.tasks.spawn(
                async move {
                    if let Err(e) = lane.run(t).await {
                        tracing::debug!("lane ended: {e}");
                    }
                }
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
        if !self
            .subs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains_key(&name)
        {
            return Err((
                Rejection::new(
                    RejectReason::Malformed,
                    format!("no open subscription named {name:?}"),
                ),
                None,
            ));
        }
        let key = cursor_key(&self.node, &name, precedence);
        let event = Event::Delivered {
            to: self.node.clone(),
            subscription: name,
            precedence,
            through_index: through,
        };
        let (reply, done) = oneshot::channel();
        let cmd = Command::Ack {
            key,
            next: through.saturating_add(1),
            event,
            reply,
        };
        if self.shared.writer.send(cmd).await.is_ok() && done.await.unwrap_or(false) {
            Ok(Response::Done)
        } else {
            Err((
                Rejection::new(RejectReason::StorageFull, "cannot store the cursor".into()),
                None,
            ))
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
        self.shared.audit(Event::Receipt(r.clone())).await;
        self.shared
            .push(Some(&env.header().sender), Push::Receipt(r));
        Ok(Response::Done)
    }
}

type Outcome = Result<Response, (Rejection, Option<ewx_proto::Digest32>)>;

/// One ordered delivery lane: a subscription's messages of one precedence.
struct Lane {
    shared: Arc<Shared>,
    conn: quinn::Connection,
    spec: Arc<SubscriptionSpec>,
    precedence: Precedence,
    next: u64,
}

impl Lane {
    async fn run(mut self, cancel: CancellationToken) -> crate::Result<()> {
        let mut live = self.shared.live.subscribe();
        let mut stream = None;
        loop {
            self.catch_up(&mut stream, &cancel).await?;
            loop {
                let msg = tokio::select! {
                    _ = cancel.cancelled() => return Ok(()),
                    m = live.recv() => m,
                };
                match msg {
                    Ok(m) if m.header.precedence == self.precedence && m.index >= self.next => {
                        self.next = m.index + 1;
                        if router::deliverable(&self.spec, &self.shared.roster.get(), &m.header) {
                            self.send(&mut stream, m.index, &m.bytes).await?;
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

    async fn catch_up(
        &mut self,
        stream: &mut Option<quinn::SendStream>,
        cancel: &CancellationToken,
    ) -> crate::Result<()> {
        loop {
            let batch = self
                .shared
                .store
                .lane(self.precedence, self.next, CATCH_UP_BATCH)?;
            if batch.is_empty() {
                return Ok(());
            }
            for (index, bytes) in batch {
                if cancel.is_cancelled() {
                    return Ok(());
                }
                self.next = index + 1;
                match Envelope::decode(&bytes, usize::MAX) {
                    Ok(env)
                        if router::deliverable(
                            &self.spec,
                            &self.shared.roster.get(),
                            env.header(),
                        ) =>
                    {
                        self.send(stream, index, &bytes).await?;
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
        bytes: &[u8],
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
        let push = Push::Delivery {
            name: self.spec.name.clone(),
            log_index: index,
            envelope: bytes.to_vec(),
        };
        write_msg(s, &push, self.shared.max_frame()).await
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
