//! The connection under a [`crate::Client`]: connect (roster-pinned TLS, then the hello
//! that tells a node whether the broker accepts its key), one request per stream (but
//! publishes, which share the `pipe`), the
//! reader of the broker's pushes (deliveries to their subscription lanes, receipts,
//! rosters), and the supervisor that reconnects with backoff and resumes every open
//! subscription from the broker's durable cursor — or gives up for good when the broker
//! refused this node.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ewx_net::CloseCode;
use ewx_net::tls::{self, RosterCell, TransportLimits};
use ewx_net::wire::{Wait, read_msg, write_msg};
use ewx_proto::case::Reminder;
use ewx_proto::frame::{ExerciseFilter, Push, Request, Response, StartAt};
use ewx_proto::receipt::Receipt;
use ewx_proto::{Envelope, NodeKeys, Precedence, Sealer, TopicPattern};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::error::{Error, Result};
use crate::pipe::Pipe;
use crate::subscription::{Delivery, Lanes};

/// Largest frame this client sends or accepts.
pub(crate) const MAX_FRAME: usize = ewx_proto::frame::DEFAULT_MAX_FRAME + 1024;
/// Deliveries buffered per subscription lane. When full, the reader waits, QUIC flow
/// control pushes back, and the broker's lane for us slows down — nobody else does.
pub(crate) const LANE_BUFFER: usize = 1024;
/// How long a request waits for the broker's answer (a slow or lossy link, a busy
/// broker); the broker's own per-frame deadline against slow senders is much shorter.
pub(crate) const RESPONSE_WAIT: Duration = Duration::from_secs(120);
/// How long a request waits for a connection while the client reconnects.
pub(crate) const RECONNECT_WAIT: Duration = Duration::from_secs(15);

/// How long a client that knows several replicas waits for one to complete a handshake.
const REPLICA_HANDSHAKE_WAIT: Duration = Duration::from_secs(2);

/// A subscription as the client re-opens it after a reconnect.
#[derive(Debug, Clone)]
pub(crate) struct OpenSub {
    pub(crate) pattern: TopicPattern,
    pub(crate) filter: ExerciseFilter,
    pub(crate) sealed: bool,
    pub(crate) lanes: Lanes,
}

/// Shared state of a client and its background tasks.
#[derive(Debug)]
pub(crate) struct Inner {
    /// The broker's addresses: one, or every replica of a cluster (any of them serves).
    pub(crate) addrs: Vec<SocketAddr>,
    /// Which of `addrs` is tried (and, once connected, used).
    pub(crate) at: std::sync::atomic::AtomicUsize,
    pub(crate) endpoint: quinn::Endpoint,
    pub(crate) keys: Arc<NodeKeys>,
    pub(crate) roster: RosterCell,
    pub(crate) sealer: tokio::sync::Mutex<Sealer>,
    pub(crate) seq: AtomicU64,
    /// The connection in use; `None` while reconnecting.
    pub(crate) conn: watch::Sender<Option<quinn::Connection>>,
    pub(crate) subs: Mutex<HashMap<String, OpenSub>>,
    pub(crate) receipts_tx: mpsc::Sender<Receipt>,
    pub(crate) receipts_rx: Mutex<Option<mpsc::Receiver<Receipt>>>,
    pub(crate) reminders_tx: mpsc::Sender<Reminder>,
    pub(crate) reminders_rx: Mutex<Option<mpsc::Receiver<Reminder>>>,
    /// Where sealing times and sequence numbers come from (the broker's clock in a
    /// simulation).
    pub(crate) clock: ewx_net::Clock,
    /// X25519 results per sender key epoch, shared by all delivery streams.
    pub(crate) opener: ewx_proto::Opener,
    /// Cancelled when the client is closed or the broker refused it for good.
    pub(crate) dead: CancellationToken,
    pub(crate) dead_reason: Mutex<String>,
    /// The publish pipes on the current connection, one per precedence (so a FLASH
    /// warning never queues behind ROUTINE ones in a stream), opened on first use.
    pub(crate) pipes: tokio::sync::Mutex<[Option<Arc<Pipe>>; 4]>,
    /// How long a handshake may take (`None`: the defaults below).
    pub(crate) handshake: Option<Duration>,
}

pub(crate) async fn request_on(
    conn: &quinn::Connection,
    addr: SocketAddr,
    req: &Request,
) -> Result<Response> {
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
    /// The broker address in use (or being tried).
    pub(crate) fn addr(&self) -> SocketAddr {
        let at = self.at.load(std::sync::atomic::Ordering::Relaxed);
        self.addrs[at % self.addrs.len()]
    }

    /// Try the next replica on the next attempt.
    fn next_addr(&self) {
        if self.addrs.len() > 1 {
            self.at.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    }

    /// The publish pipe for `precedence` on the current connection (a new one after a
    /// reconnect or when the last one broke).
    pub(crate) async fn pipe(&self, precedence: Precedence) -> Result<Arc<Pipe>> {
        let conn = self.current().await?;
        let mut pipes = self.pipes.lock().await;
        let pipe = &mut pipes[precedence as usize];
        match pipe {
            Some(p) if p.serves(conn.stable_id()) => Ok(p.clone()),
            _ => {
                let p = Pipe::open(&conn, self.addr(), precedence).await?;
                *pipe = Some(p.clone());
                Ok(p)
            }
        }
    }

    pub(crate) fn forget(&self, name: &str) {
        self.subs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(name);
    }

    pub(crate) fn give_up(&self, reason: String) {
        if !self.dead.is_cancelled() {
            *self.dead_reason.lock().unwrap_or_else(|p| p.into_inner()) = reason;
        }
        self.dead.cancel();
        self.conn.send_replace(None);
    }

    /// The connection, waiting for a reconnect in progress.
    pub(crate) async fn current(&self) -> Result<quinn::Connection> {
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
            addr: self.addr(),
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
                addr: self.addr(),
                reason: "not connected (reconnecting)".into(),
            }),
        }
    }

    /// Connect, start the push reader, say hello. TLS 1.3 reports a refused client
    /// certificate only after the handshake, so the hello is where a node learns the
    /// broker does not accept its key.
    pub(crate) async fn connect_once(self: &Arc<Self>) -> Result<quinn::Connection> {
        let r = self.connect_to().await;
        if matches!(r, Err(Error::Connect { .. })) {
            self.next_addr();
        }
        r
    }

    async fn connect_to(self: &Arc<Self>) -> Result<quinn::Connection> {
        let connect_err = |reason: String| Error::Connect {
            addr: self.addr(),
            reason,
        };
        let brokers = self.roster.get().broker_keys();
        if brokers.is_empty() {
            return Err(Error::NoBroker);
        }
        let config = tls::client_config(&self.keys, brokers, TransportLimits::client())?;
        let connecting = self
            .endpoint
            .connect_with(config, self.addr(), tls::SERVER_NAME)
            .map_err(|e| connect_err(e.to_string()))?;
        // a replica that is down answers nothing: try the next one soon, not after the
        // idle timeout
        let wait = self.handshake.unwrap_or(if self.addrs.len() > 1 {
            REPLICA_HANDSHAKE_WAIT
        } else {
            TransportLimits::client().idle_timeout
        });
        let conn = tokio::time::timeout(wait, connecting)
            .await
            .map_err(|_| connect_err(format!("no answer within {wait:?}")))?
            .map_err(|e| connect_err(e.to_string()))?;
        self.spawn_push_reader(conn.clone());
        let version = self.roster.get().version();
        let hello = request_on(
            &conn,
            self.addr(),
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
    pub(crate) async fn supervise(self: Arc<Self>, mut conn: quinn::Connection) {
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
                if let Err(e) = request_on(&conn, self.addr(), &req).await {
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
            Push::Reminder(r) => {
                // nobody listening, or a backlog of 256: the case thread shows it anyway
                let _ = self.reminders_tx.try_send(r);
            }
            Push::Roster { roster } => {
                if let Err(e) = self.accept_roster(&roster) {
                    tracing::warn!("broker pushed a roster that does not verify: {e}");
                }
            }
        }
    }
}
