//! A connection to the broker as one roster node: publish sealed envelopes, open
//! subscriptions whose deliveries arrive verified and decrypted, send receipts. If the
//! connection drops, the client reconnects with backoff and resumes every subscription
//! from its durable cursor; a node the broker revoked or does not know is not retried.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ewx_net::CloseCode;
use ewx_net::tls::{self, RosterCell};
use ewx_net::wire::{Wait, read_msg};
use ewx_proto::case::Reminder;
use ewx_proto::frame::{ExerciseFilter, RejectReason, Request, Response, StartAt};
use ewx_proto::receipt::Receipt;
use ewx_proto::{
    Draft, Envelope, EpochPolicy, MessageId, NodeKeys, Precedence, Roster, Sealer, TopicPattern,
};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::connection::{Inner, LANE_BUFFER, MAX_FRAME, OpenSub, RESPONSE_WAIT, request_on};
use crate::error::{Error, Result};
use crate::subscription::{Lanes, Subscription, SubscriptionOptions};

/// The broker's answer to a publish.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PublishAck {
    /// Message id.
    pub id: MessageId,
    /// Position in the broker's log.
    pub log_index: u64,
}

/// A client of the broker, as one roster node. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Client {
    pub(crate) inner: Arc<Inner>,
}

/// How long a publish is sent again while a cluster answers `Unavailable`.
const UNAVAILABLE_RETRY: std::time::Duration = std::time::Duration::from_secs(30);

impl Client {
    /// Connect to the broker at `addr` as the node of `keys`, pinning the broker key the
    /// roster names, and exchange roster versions (a newer roster from the broker is
    /// accepted only if it verifies as an update of ours).
    ///
    /// # Errors
    /// `NoBroker`, `Connect`, `Transport`, `Proto`.
    pub async fn connect(addr: SocketAddr, keys: NodeKeys, roster: Roster) -> Result<Self> {
        Self::connect_with_clock(addr, keys, roster, ewx_net::Clock::system()).await
    }

    /// [`Client::connect`] with the clock its seals are timed by: a simulated clock shared
    /// with an in-process broker, in tests and the demo.
    ///
    /// # Errors
    /// As [`Client::connect`].
    pub async fn connect_with_clock(
        addr: SocketAddr,
        keys: NodeKeys,
        roster: Roster,
        clock: ewx_net::Clock,
    ) -> Result<Self> {
        Self::connect_any(&[addr], keys, roster, clock).await
    }

    /// Connect to any of a cluster's replicas (`addrs`, tried in turn until one answers);
    /// after a lost connection the client reconnects to whichever replica answers and
    /// resumes its subscriptions from the cluster's durable cursors.
    ///
    /// # Errors
    /// As [`Client::connect`], for the last address tried; `Connect` if `addrs` is empty.
    pub async fn connect_any(
        addrs: &[SocketAddr],
        keys: NodeKeys,
        roster: Roster,
        clock: ewx_net::Clock,
    ) -> Result<Self> {
        Self::connect_any_within(addrs, keys, roster, clock, None).await
    }

    /// [`Client::connect_any`], waiting at most `handshake` for each address to answer
    /// (default: 2 s with several replicas, the idle timeout with one broker) — a tool a
    /// person waits for gives up on a broker that is down after a few seconds.
    ///
    /// # Errors
    /// As [`Client::connect_any`].
    pub async fn connect_any_within(
        addrs: &[SocketAddr],
        keys: NodeKeys,
        roster: Roster,
        clock: ewx_net::Clock,
        handshake: Option<std::time::Duration>,
    ) -> Result<Self> {
        let Some(&addr) = addrs.first() else {
            return Err(Error::Connect {
                addr: SocketAddr::from(([0, 0, 0, 0], 0)),
                reason: "no broker address given".into(),
            });
        };
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
        let (reminders_tx, reminders_rx) = mpsc::channel(256);
        let inner = Arc::new(Inner {
            addrs: addrs.to_vec(),
            at: std::sync::atomic::AtomicUsize::new(0),
            endpoint,
            keys: Arc::new(NodeKeys::from_secret_file(&keys.to_secret_file())?),
            roster: RosterCell::new(roster),
            sealer: tokio::sync::Mutex::new(Sealer::new(keys, EpochPolicy::default())),
            seq: AtomicU64::new(0),
            conn: watch::channel(None).0,
            subs: Mutex::new(HashMap::new()),
            receipts_tx,
            receipts_rx: Mutex::new(Some(receipts_rx)),
            reminders_tx,
            reminders_rx: Mutex::new(Some(reminders_rx)),
            clock,
            opener: ewx_proto::Opener::default(),
            dead: CancellationToken::new(),
            dead_reason: Mutex::new(String::new()),
            pipes: tokio::sync::Mutex::default(),
            handshake,
        });
        let mut last = None;
        for _ in addrs {
            match inner.connect_once().await {
                Ok(conn) => {
                    tokio::spawn(inner.clone().supervise(conn));
                    return Ok(Self { inner });
                }
                // another replica may answer; any other failure is final
                Err(e @ Error::Connect { .. }) => last = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or_else(|| connect_err("no broker answered".into())))
    }

    /// The broker's address.
    pub fn broker_addr(&self) -> SocketAddr {
        self.inner.addr()
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
        request_on(&conn, self.inner.addr(), req).await
    }

    /// Send raw bytes on a new request stream and read one answer (for tests of hostile
    /// input; normal code uses [`Client::request`]).
    ///
    /// # Errors
    /// `Connect` or `Transport` if the stream breaks.
    pub async fn raw_request(&self, bytes: &[u8]) -> Result<Option<Response>> {
        let conn = self.inner.current().await?;
        let err = |e: &dyn std::fmt::Display| Error::Connect {
            addr: self.inner.addr(),
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
        let floor = self.inner.clock.now_us();
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
        Ok(self.inner.sealer.lock().await.seal(
            &roster,
            draft,
            self.inner.clock.now_ms(),
            &mut rng,
        )?)
    }

    /// Seal and publish; returns once the broker has stored it durably.
    ///
    /// # Errors
    /// `Proto` if it cannot be sealed, `Rejected` if the broker refuses it, `Unconfirmed`
    /// if the connection broke and no answer came within 30 s of sending again (then it
    /// may or may not be stored: the same envelope again with
    /// [`Client::publish_envelope`] gets its original index if it is).
    pub async fn publish(&self, draft: Draft) -> Result<PublishAck> {
        self.publish_sealed(draft).await.map(|(_, ack)| ack)
    }

    /// [`Client::publish`], also returning the envelope as it was stored.
    ///
    /// # Errors
    /// As [`Client::publish`].
    pub async fn publish_sealed(&self, draft: Draft) -> Result<(Envelope, PublishAck)> {
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
                other => return other.map(|ack| (env, ack)),
            }
        }
    }

    /// Publish envelope bytes as they are (already sealed and signed). While a cluster
    /// has no leader, or the connection is lost, the same bytes are sent again (for up to
    /// 30 s; a stored envelope gets its original index, never a second copy).
    ///
    /// # Errors
    /// `Rejected` if the broker refuses them, `Unconfirmed` if no answer came.
    pub async fn publish_envelope(&self, bytes: &[u8]) -> Result<PublishAck> {
        // one that does not decode goes as ROUTINE, and the broker says what is wrong
        let precedence =
            Envelope::stored_header(bytes, MAX_FRAME).map_or(Precedence::Routine, |h| h.precedence);
        let req = Request::Publish {
            envelope: bytes.to_vec(),
        };
        // a cluster between leaders answers Unavailable: the same envelope again is safe
        // (a stored one gets its original index)
        let started = std::time::Instant::now();
        loop {
            let answer = match self.inner.pipe(precedence).await {
                Ok(pipe) => pipe.request(&req).await,
                Err(e) => Err(e),
            };
            match answer {
                Ok(Response::PublishAck { id, log_index }) => {
                    return Ok(PublishAck { id, log_index });
                }
                Ok(other) => return Err(Error::Unexpected(format!("{other:?}"))),
                Err(Error::Rejected {
                    reason: RejectReason::Unavailable,
                    ..
                }) if started.elapsed() < UNAVAILABLE_RETRY => {
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
                // the connection went away (a broker restarted, a replica died): the same
                // envelope again through whatever the client reconnects to
                Err(Error::Connect { .. } | Error::Net(ewx_net::Error::Transport(_)))
                    if !self.inner.dead.is_cancelled() && started.elapsed() < UNAVAILABLE_RETRY =>
                {
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
                // (an encoding error would fail again: it is returned as it is)
                Err(e @ (Error::Connect { .. } | Error::Net(ewx_net::Error::Transport(_)))) => {
                    return Err(Error::Unconfirmed {
                        reason: e.to_string(),
                    });
                }
                Err(e) => return Err(e),
            }
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
        let r = self.sign_receipt(envelope);
        self.request(&Request::Receipt(r)).await.map(|_| ())
    }

    /// This node's signed receipt for a delivered message, stamped now (sending the same
    /// receipt twice is harmless: the broker logs it once).
    pub fn sign_receipt(&self, envelope: &Envelope) -> Receipt {
        Receipt::sign(
            &self.inner.keys,
            envelope.header().id,
            envelope.hash(),
            self.inner.clock.now_ms(),
        )
    }

    /// Receipts forwarded by the broker for this node's messages (take it once).
    pub fn receipts(&self) -> Option<mpsc::Receiver<Receipt>> {
        self.inner
            .receipts_rx
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
    }

    /// Case reminders the broker pushed to this node (take it once).
    pub fn reminders(&self) -> Option<mpsc::Receiver<Reminder>> {
        self.inner
            .reminders_rx
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
    }

    /// The clock this client seals by.
    pub fn clock(&self) -> &ewx_net::Clock {
        &self.inner.clock
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
