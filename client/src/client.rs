//! A connection to the broker as one roster node: publish sealed envelopes, open
//! subscriptions whose deliveries arrive verified and decrypted, send receipts. If the
//! connection drops, the client reconnects with backoff and resumes every subscription
//! from its durable cursor; a node the broker revoked or does not know is not retried.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ewx_net::tls::{self, RosterCell, TransportLimits};
use ewx_net::wire::{Wait, read_msg, write_msg};
use ewx_net::{CloseCode, now_ms};
use ewx_proto::frame::{ExerciseFilter, Push, RejectReason, Request, Response, StartAt};
use ewx_proto::receipt::Receipt;
use ewx_proto::{
    Draft, Envelope, EpochPolicy, MessageId, NodeKeys, Precedence, Roster, Sealer, TopicPattern,
};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::error::{Error, Result};
use crate::subscription::{Delivery, Lanes, Subscription, SubscriptionOptions};

/// Largest frame this client sends or accepts.
pub(crate) const MAX_FRAME: usize = ewx_proto::frame::DEFAULT_MAX_FRAME + 1024;
/// Deliveries buffered per subscription lane. When full, the reader waits, QUIC flow
/// control pushes back, and the broker's lane for us slows down — nobody else does.
pub(crate) const LANE_BUFFER: usize = 1024;
/// How long a request waits for the broker's answer (a slow or lossy link, a busy
/// broker); the broker's own per-frame deadline against slow senders is much shorter.
const RESPONSE_WAIT: Duration = Duration::from_secs(120);
/// How long a request waits for a connection while the client reconnects.
const RECONNECT_WAIT: Duration = Duration::from_secs(15);

/// The broker's answer to a publish.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PublishAck {
    /// Message id.
    pub id: MessageId,
    /// Position in the broker's log.
    pub log_index: u64,
}

/// A subscription as the client re-opens it after a reconnect.
#[derive(Debug, Clone)]
struct OpenSub {
    pattern: TopicPattern,
    filter: ExerciseFilter,
    sealed: bool,
    lanes: Lanes,
}

/// Shared state of a client and its background tasks.
#[derive(Debug)]
pub(crate) struct Inner {
    addr: SocketAddr,
    endpoint: quinn::Endpoint,
    pub(crate) keys: Arc<NodeKeys>,
    roster: RosterCell,
    sealer: tokio::sync::Mutex<Sealer>,
    seq: AtomicU64,
    /// The connection in use; `None` while reconnecting.
    conn: watch::Sender<Option<quinn::Connection>>,
    subs: Mutex<HashMap<String, OpenSub>>,
    receipts_tx: mpsc::Sender<Receipt>,
    receipts_rx: Mutex<Option<mpsc::Receiver<Receipt>>>,
    /// X25519 results per sender key epoch, shared by all delivery streams.
    opener: ewx_proto::Opener,
    /// Cancelled when the client is closed or the broker refused it for good.
    pub(crate) dead: CancellationToken,
    dead_reason: Mutex<String>,
}

/// A client of the broker, as one roster node. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Client {
    pub(crate) inner: Arc<Inner>,
}

impl Client {
    /// Connect to the broker at `addr` as the node of `keys`, pinning the broker key the
    /// roster names, and exchange roster versions (a newer roster from the broker is
    /// accepted only if it verifies as an update of ours).
    ///
    /// # Errors
    /// `NoBroker`, `Connect`, `Transport`, `Proto`.
    pub async fn connect(addr: SocketAddr, keys: NodeKeys, roster: Roster) -> Result<Self> {
        let connect_err = |reason: String| Error::Connect { addr, reason };
        let bind: SocketAddr = if addr.is_ipv6() {
            "[::]:0"
        } else {
            "0.0.0.0:0"
        }
        .parse()
        .map_err(|_| connect_err("bad bind address".into()))?;
        let socket = tls::udp_socket(bind).map_err(|e| connect_err(e.to_string()))?;
        let runtime =
            quinn::default_runtime().ok_or_else(|| connect_err("no async runtime".into()))?;
        let endpoint =
            quinn::Endpoint::new(quinn::EndpointConfig::default(), None, socket, runtime)
                .map_err(|e| connect_err(e.to_string()))?;
        let (receipts_tx, receipts_rx) = mpsc::channel(256);
        let inner = Arc::new(Inner {
            addr,
            endpoint,
            keys: Arc::new(NodeKeys::from_secret_file(&keys.to_secret_file())?),
            roster: RosterCell::new(roster),
            sealer: tokio::sync::Mutex::new(Sealer::new(keys, EpochPolicy::default())),
            seq: AtomicU64::new(0),
            conn: watch::channel(None).0,
            subs: Mutex::new(HashMap::new()),
            receipts_tx,
            receipts_rx: Mutex::new(Some(receipts_rx)),
            opener: ewx_proto::Opener::default(),
            dead: CancellationToken::new(),
            dead_reason: Mutex::new(String::new()),
        });
        let conn = inner.connect_once().await?;
        tokio::spawn(inner.clone().supervise(conn));
        Ok(Self { inner })
    }

    /// The broker's address.
    pub fn broker_addr(&self) -> SocketAddr {
        self.inner.addr
    }

    /// The roster this client trusts now.
    pub fn roster(&self) -> Arc<Roster> {
        self.inner.roster.get()
    }

    /// This node's keys.
    pub fn keys(&self) -> &NodeKeys {
        &self.inner.keys
    }

    /// One request on its own stream, one answer (waits for a reconnect if needed).
    ///
    /// # Errors
    /// `Connect` if there is no connection or the stream breaks, `Rejected` if the
    /// broker refuses.
    pub async fn request(&self, req: &Request) -> Result<Response> {
        let conn = self.inner.current().await?;
        request_on(&conn, self.inner.addr, req).await
    }

    /// Send raw bytes on a new request stream and read one answer (for tests of hostile
    /// input; normal code uses [`Client::request`]).
    ///
    /// # Errors
    /// `Connect` or `Transport` if the stream breaks.
    pub async fn raw_request(&self, bytes: &[u8]) -> Result<Option<Response>> {
        let conn = self.inner.current().await?;
        let err = |e: &dyn std::fmt::Display| Error::Connect {
            addr: self.inner.addr,
            reason: e.to_string(),
        };
        let (mut send, mut recv) = conn.open_bi().await.map_err(|e| err(&e))?;
        // the broker may answer and stop reading before all bytes are sent (an oversize
        // prefix): the answer still counts
        if send.write_all(bytes).await.is_ok() {
            let _ = send.finish();
        }
        Ok(read_msg::<Response>(&mut recv, MAX_FRAME, Wait::Within(RESPONSE_WAIT)).await?)
    }

    /// The next sequence number: unique and increasing, also across restarts (it starts
    /// from the clock in microseconds). Two connections of one node draw from the same
    /// clock, so they collide only when sealing in the same microsecond; [`Client::publish`]
    /// then seals again.
    fn next_seq(&self) -> u64 {
        let floor = ewx_net::clock::now_us();
        let mut cur = self.inner.seq.load(Ordering::Relaxed);
        loop {
            let next = cur.saturating_add(1).max(floor);
            match self
                .inner
                .seq
                .compare_exchange(cur, next, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => return next,
                Err(actual) => cur = actual,
            }
        }
    }

    /// Seal a draft for the recipients the roster allows (its `seq` is replaced by the
    /// client's own counter) without sending it.
    ///
    /// # Errors
    /// `Proto` if this node may not publish it.
    pub async fn seal(&self, mut draft: Draft) -> Result<Envelope> {
        draft.seq = self.next_seq();
        let roster = self.inner.roster.get();
        let mut rng = rand::rngs::OsRng;
        Ok(self
            .inner
            .sealer
            .lock()
            .await
            .seal(&roster, draft, now_ms(), &mut rng)?)
    }

    /// Seal and publish; returns once the broker has stored it durably.
    ///
    /// # Errors
    /// `Proto` if it cannot be sealed, `Rejected` if the broker refuses it, `Connect` if
    /// the connection broke before the answer (then it may or may not be stored: publish
    /// the same envelope again with [`Client::publish_envelope`], a duplicate is refused).
    pub async fn publish(&self, draft: Draft) -> Result<PublishAck> {
        let mut attempts = 0;
        loop {
            let env = self.seal(draft.clone()).await?;
            match self.publish_envelope(&env.encode()?).await {
                // a fresh seal refused as a replay: another connection of this node used
                // the same seq (same microsecond); a new seal gets a new one
                Err(Error::Rejected {
                    reason: RejectReason::Replay,
                    ..
                }) if attempts < 3 => attempts += 1,
                other => return other,
            }
        }
    }

    /// Publish envelope bytes as they are (already sealed and signed).
    ///
    /// # Errors
    /// `Rejected` if the broker refuses them.
    pub async fn publish_envelope(&self, bytes: &[u8]) -> Result<PublishAck> {
        match self
            .request(&Request::Publish {
                envelope: bytes.to_vec(),
            })
            .await?
        {
            Response::PublishAck { id, log_index } => Ok(PublishAck { id, log_index }),
            other => Err(Error::Unexpected(format!("{other:?}"))),
        }
    }

    /// Open (or resume) a named subscription with manual acks (see
    /// [`Client::subscribe_with`] for automatic acks and receipts).
    ///
    /// # Errors
    /// `Rejected` if the grants do not allow the pattern.
    pub async fn subscribe(
        &self,
        name: &str,
        pattern: TopicPattern,
        from: StartAt,
        filter: ExerciseFilter,
    ) -> Result<Subscription> {
        let opts = SubscriptionOptions {
            from,
            filter,
            auto_ack: false,
            auto_receipt: false,
            sealed: false,
        };
        self.subscribe_with(name, pattern, opts).await
    }

    /// Open (or resume) a named subscription. After a reconnect it is resumed from the
    /// broker's durable cursor; deliveries already handed out are not handed out again.
    ///
    /// # Errors
    /// `Rejected` if the grants do not allow the pattern.
    pub async fn subscribe_with(
        &self,
        name: &str,
        pattern: TopicPattern,
        opts: SubscriptionOptions,
    ) -> Result<Subscription> {
        let (tx, rx): (Vec<_>, Vec<_>) = (0..4).map(|_| mpsc::channel(LANE_BUFFER)).unzip();
        let (Ok(lanes), Ok(receivers)) = (Lanes::try_from(tx), <[_; 4]>::try_from(rx)) else {
            return Err(Error::Unexpected("lane setup".into()));
        };
        let sub = OpenSub {
            pattern: pattern.clone(),
            filter: opts.filter,
            sealed: opts.sealed,
            lanes,
        };
        self.inner
            .subs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(name.to_owned(), sub);
        let req = Request::Subscribe {
            name: name.to_owned(),
            pattern,
            from: opts.from,
            filter: opts.filter,
        };
        match self.request(&req).await {
            Ok(Response::Subscribed { .. }) => Ok(Subscription::new(
                self.clone(),
                name.to_owned(),
                receivers,
                opts,
            )),
            Ok(other) => {
                self.inner.forget(name);
                Err(Error::Unexpected(format!("{other:?}")))
            }
            Err(e) => {
                self.inner.forget(name);
                Err(e)
            }
        }
    }

    /// Stop a subscription (the broker keeps its cursor).
    ///
    /// # Errors
    /// `Connect` if the broker cannot be reached.
    pub async fn unsubscribe(&self, name: &str) -> Result<()> {
        self.inner.forget(name);
        self.request(&Request::Unsubscribe {
            name: name.to_owned(),
        })
        .await
        .map(|_| ())
    }

    /// Sign and send a receipt for a delivered message.
    ///
    /// # Errors
    /// `Rejected` if the broker refuses it.
    pub async fn send_receipt(&self, envelope: &Envelope) -> Result<()> {
        let r = Receipt::sign(
            &self.inner.keys,
            envelope.header().id,
            envelope.hash(),
            now_ms(),
        );
        self.request(&Request::Receipt(r)).await.map(|_| ())
    }

    /// Receipts forwarded by the broker for this node's messages (take it once).
    pub fn receipts(&self) -> Option<mpsc::Receiver<Receipt>> {
        self.inner
            .receipts_rx
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
    }

    /// Wait until the client gives up for good (closed, or refused by the broker, e.g.
    /// after this node was revoked); returns why.
    pub async fn closed(&self) -> String {
        self.inner.dead.cancelled().await;
        self.inner
            .dead_reason
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Is a connection up right now?
    pub fn is_connected(&self) -> bool {
        self.inner.conn.borrow().is_some()
    }

    /// Close the connection and stop reconnecting.
    pub async fn close(self) {
        let conn = self.inner.conn.borrow().clone();
        self.inner.give_up("closed by the client".into());
        if let Some(c) = conn {
            CloseCode::Normal.close(&c);
        }
        let _ = tokio::time::timeout(Duration::from_secs(2), self.inner.endpoint.wait_idle()).await;
    }
}

async fn request_on(conn: &quinn::Connection, addr: SocketAddr, req: &Request) -> Result<Response> {
    let err = |e: &dyn std::fmt::Display| Error::Connect {
        addr,
        reason: e.to_string(),
    };
    let (mut send, mut recv) = conn.open_bi().await.map_err(|e| err(&e))?;
    write_msg(&mut send, req, MAX_FRAME).await?;
    send.finish().map_err(|e| err(&e))?;
    match read_msg::<Response>(&mut recv, MAX_FRAME, Wait::Within(RESPONSE_WAIT)).await? {
        Some(Response::Rejected { reason, detail }) => Err(Error::Rejected { reason, detail }),
        Some(r) => Ok(r),
        None => Err(err(&"the broker closed the stream without answering")),
    }
}

impl Inner {
    fn forget(&self, name: &str) {
        self.subs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(name);
    }

    fn give_up(&self, reason: String) {
        if !self.dead.is_cancelled() {
            *self.dead_reason.lock().unwrap_or_else(|p| p.into_inner()) = reason;
        }
        self.dead.cancel();
        self.conn.send_replace(None);
    }

    /// The connection, waiting for a reconnect in progress.
    async fn current(&self) -> Result<quinn::Connection> {
        let mut rx = self.conn.subscribe();
        let wait = async {
            loop {
                if let Some(c) = rx.borrow_and_update().clone() {
                    return Ok(c);
                }
                tokio::select! {
                    _ = self.dead.cancelled() => return Err(()),
                    r = rx.changed() => if r.is_err() { return Err(()) },
                }
            }
        };
        let dead = || Error::Connect {
            addr: self.addr,
            reason: self
                .dead_reason
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
        };
        match tokio::time::timeout(RECONNECT_WAIT, wait).await {
            Ok(Ok(c)) => Ok(c),
            Ok(Err(())) => Err(dead()),
            Err(_) => Err(Error::Connect {
                addr: self.addr,
                reason: "not connected (reconnecting)".into(),
            }),
        }
    }

    /// Connect, start the push reader, say hello. TLS 1.3 reports a refused client
    /// certificate only after the handshake, so the hello is where a node learns the
    /// broker does not accept its key.
    async fn connect_once(self: &Arc<Self>) -> Result<quinn::Connection> {
        let connect_err = |reason: String| Error::Connect {
            addr: self.addr,
            reason,
        };
        let broker_key = self
            .roster
            .get()
            .broker_key()
            .map_err(|_| Error::NoBroker)?;
        let config = tls::client_config(&self.keys, broker_key, TransportLimits::client())?;
        let conn = self
            .endpoint
            .connect_with(config, self.addr, tls::SERVER_NAME)
            .map_err(|e| connect_err(e.to_string()))?
            .await
            .map_err(|e| connect_err(e.to_string()))?;
        self.spawn_push_reader(conn.clone());
        let version = self.roster.get().version();
        let hello = request_on(
            &conn,
            self.addr,
            &Request::Hello {
                roster_version: version,
            },
        )
        .await
        .map_err(|e| match conn.close_reason() {
            Some(reason) => connect_err(format!("the broker closed the connection: {reason}")),
            None => e,
        })?;
        match hello {
            Response::Welcome {
                roster: Some(bytes),
                ..
            } => self.accept_roster(&bytes)?,
            Response::Welcome { .. } => {}
            other => return Err(Error::Unexpected(format!("{other:?}"))),
        }
        self.conn.send_replace(Some(conn.clone()));
        Ok(conn)
    }

    fn accept_roster(&self, bytes: &[u8]) -> Result<()> {
        let signed = ewx_proto::SignedRoster::decode(bytes)?;
        let new = signed.verify_update(&self.roster.get())?;
        self.roster.set(new);
        Ok(())
    }

    /// Watch the connection; when it drops, reconnect with backoff and resume every open
    /// subscription from the broker's cursor.
    async fn supervise(self: Arc<Self>, mut conn: quinn::Connection) {
        loop {
            let reason = tokio::select! {
                _ = self.dead.cancelled() => return,
                r = conn.closed() => r,
            };
            self.conn.send_replace(None);
            if self.dead.is_cancelled() || matches!(reason, quinn::ConnectionError::LocallyClosed) {
                return self.give_up(reason.to_string());
            }
            if let quinn::ConnectionError::ApplicationClosed(ref c) = reason {
                if CloseCode::from_varint(c.error_code).is_some_and(CloseCode::is_final) {
                    tracing::warn!("the broker refused this node: {reason}");
                    return self.give_up(reason.to_string());
                }
            }
            tracing::warn!("connection lost ({reason}); reconnecting");
            let mut delay = Duration::from_millis(100);
            conn = loop {
                tokio::select! {
                    _ = self.dead.cancelled() => return,
                    _ = tokio::time::sleep(delay) => {}
                }
                match self.connect_once().await {
                    Ok(c) => break c,
                    Err(e) => {
                        tracing::debug!("reconnect failed: {e}");
                        delay = (delay * 2).min(Duration::from_secs(5));
                    }
                }
            };
            let subs: Vec<(String, OpenSub)> = self
                .subs
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .iter()
                .map(|(n, s)| (n.clone(), s.clone()))
                .collect();
            for (name, s) in subs {
                let req = Request::Subscribe {
                    name: name.clone(),
                    pattern: s.pattern,
                    from: StartAt::Resume,
                    filter: s.filter,
                };
                if let Err(e) = request_on(&conn, self.addr, &req).await {
                    tracing::warn!(sub = %name, "could not resume the subscription: {e}");
                }
            }
            tracing::info!("reconnected");
        }
    }

    fn spawn_push_reader(self: &Arc<Self>, conn: quinn::Connection) {
        let inner = self.clone();
        tokio::spawn(async move {
            while let Ok(mut recv) = conn.accept_uni().await {
                let (inner, conn) = (inner.clone(), conn.clone());
                tokio::spawn(async move {
                    loop {
                        match read_msg::<Push>(&mut recv, MAX_FRAME, Wait::Idle).await {
                            Ok(Some(push)) => inner.route(push).await,
                            Ok(None) => break,
                            // the connection is gone: the supervisor reconnects or gives up
                            Err(_) if conn.close_reason().is_some() => break,
                            Err(e) => {
                                // a broken delivery lane would silently stop a subscription:
                                // end the connection instead, so it is resumed
                                tracing::warn!(
                                    "delivery stream broken, closing the connection: {e}"
                                );
                                CloseCode::LaneFailed.close(&conn);
                                break;
                            }
                        }
                    }
                });
            }
        });
    }

    async fn route(&self, push: Push) {
        match push {
            Push::Delivery {
                name,
                log_index,
                envelope,
            } => {
                let sub = self
                    .subs
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .get(&name)
                    .map(|s| (s.lanes.clone(), s.sealed));
                let Some((lanes, sealed)) = sub else { return };
                let (lane, item) = match Envelope::decode(&envelope, MAX_FRAME) {
                    Ok(env) => {
                        let lane = env.header().precedence as usize;
                        let opened = if sealed {
                            Ok(None)
                        } else {
                            let roster = self.roster.get();
                            self.opener.open(&env, &roster, &self.keys).map(Some)
                        };
                        let item = opened
                            .map(|payload| Delivery {
                                subscription: name,
                                log_index,
                                envelope: env,
                                payload,
                            })
                            .map_err(|e| (log_index, Error::from(e)));
                        (lane, item)
                    }
                    Err(e) => (Precedence::Routine as usize, Err((log_index, e.into()))),
                };
                // the subscription was dropped: nothing to do
                let _ = lanes[lane].send(item).await;
            }
            Push::Receipt(r) => {
                if r.verify(&self.roster.get()).is_ok() {
                    let _ = self.receipts_tx.send(r).await;
                }
            }
            Push::Roster { roster } => {
                if let Err(e) = self.accept_roster(&roster) {
                    tracing::warn!("broker pushed a roster that does not verify: {e}");
                }
            }
        }
    }
}
