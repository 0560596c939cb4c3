//! A connection to the broker as one roster node: publish sealed envelopes, open
//! subscriptions whose deliveries arrive verified and decrypted, acknowledge, send receipts.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ewx_broker::tls::{self, RosterCell, TransportLimits};
use ewx_broker::wire::{Wait, read_msg, write_msg};
use ewx_proto::frame::{ExerciseFilter, Push, Request, Response, StartAt};
use ewx_proto::receipt::Receipt;
use ewx_proto::{
    Draft, Envelope, EpochPolicy, MessageId, NodeKeys, Payload, Precedence, Roster, Sealer,
    TopicPattern,
};
use tokio::sync::mpsc;

use crate::error::{Error, Result};

/// Largest frame this client sends or accepts.
const MAX_FRAME: usize = ewx_proto::frame::DEFAULT_MAX_FRAME + 1024;
/// Deliveries buffered per subscription. When full, the reader waits, QUIC flow control
/// pushes back, and the broker's lane for us slows down — nobody else does.
const SUBSCRIPTION_BUFFER: usize = 1024;

/// The broker's answer to a publish.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PublishAck {
    /// Message id.
    pub id: MessageId,
    /// Position in the broker's log.
    pub log_index: u64,
}

/// A delivered message: checked end to end (signature, sender's rights) and decrypted.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// Subscription it came on.
    pub subscription: String,
    /// Broker log index (what acks name).
    pub log_index: u64,
    /// The envelope as the sender signed it.
    pub envelope: Envelope,
    /// The decrypted content.
    pub payload: Payload,
}

/// Per subscription, one channel per precedence (index = `Precedence as usize`), so a full
/// ROUTINE buffer never holds back a FLASH delivery.
type Lanes = [mpsc::Sender<Result<Delivery>>; 4];
type Routes = Arc<Mutex<HashMap<String, Lanes>>>;

/// A live connection to the broker.
#[derive(Debug)]
pub struct Client {
    addr: SocketAddr,
    endpoint: quinn::Endpoint,
    conn: quinn::Connection,
    keys: Arc<NodeKeys>,
    roster: RosterCell,
    sealer: tokio::sync::Mutex<Sealer>,
    seq: AtomicU64,
    routes: Routes,
    receipts: Mutex<Option<mpsc::Receiver<Receipt>>>,
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Client {
    /// Connect to the broker at `addr` as the node of `keys`, pinning the broker key the
    /// roster names, and exchange roster versions (a newer roster from the broker is
    /// accepted only if it verifies as an update of ours).
    ///
    /// # Errors
    /// `NoBroker`, `Connect`, `Transport`, `Proto`.
    pub async fn connect(addr: SocketAddr, keys: NodeKeys, roster: Roster) -> Result<Self> {
        let broker_key = roster
            .body()
            .nodes
            .iter()
            .find(|n| n.role == ewx_proto::Role::Broker && !n.revoked)
            .map(|n| n.sign)
            .ok_or(Error::NoBroker)?;
        let limits = TransportLimits::client();
        let config = tls::client_config(&keys, broker_key, limits)?;
        let bind: SocketAddr = if addr.is_ipv6() {
            "[::]:0"
        } else {
            "0.0.0.0:0"
        }
        .parse()
        .map_err(|_| Error::NoBroker)?;
        let connect_err = |reason: String| Error::Connect { addr, reason };
        let mut endpoint = quinn::Endpoint::client(bind).map_err(|e| connect_err(e.to_string()))?;
        endpoint.set_default_client_config(config);
        let conn = endpoint
            .connect(addr, tls::SERVER_NAME)
            .map_err(|e| connect_err(e.to_string()))?
            .await
            .map_err(|e| connect_err(e.to_string()))?;
        let (tx, rx) = mpsc::channel(256);
        let client = Self {
            addr,
            endpoint,
            conn,
            keys: Arc::new(NodeKeys::from_secret_file(&keys.to_secret_file())?),
            roster: RosterCell::new(roster),
            sealer: tokio::sync::Mutex::new(Sealer::new(keys, EpochPolicy::default())),
            seq: AtomicU64::new(0),
            routes: Arc::new(Mutex::new(HashMap::new())),
            receipts: Mutex::new(Some(rx)),
        };
        client.spawn_push_reader(tx);
        let version = client.roster.get().version();
        // TLS 1.3 reports a refused client certificate only after the handshake: the
        // first request is where a node learns the broker does not accept its key
        let hello = client
            .request(&Request::Hello {
                roster_version: version,
            })
            .await
            .map_err(|e| match client.conn.close_reason() {
                Some(reason) => connect_err(format!("the broker closed the connection: {reason}")),
                None => e,
            })?;
        match hello {
            Response::Welcome {
                roster: Some(bytes),
                ..
            } => client.accept_roster(&bytes)?,
            Response::Welcome { .. } => {}
            other => return Err(Error::Unexpected(format!("{other:?}"))),
        }
        Ok(client)
    }

    fn accept_roster(&self, bytes: &[u8]) -> Result<()> {
        let signed = ewx_proto::SignedRoster::decode(bytes)?;
        let new = signed.verify_update(&self.roster.get())?;
        self.roster.set(new);
        Ok(())
    }

    /// The roster this client trusts now.
    pub fn roster(&self) -> Arc<Roster> {
        self.roster.get()
    }

    /// This node's keys.
    pub fn keys(&self) -> &NodeKeys {
        &self.keys
    }

    /// One request on its own stream, one answer.
    ///
    /// # Errors
    /// `Connect` if the stream breaks, `Rejected` if the broker refuses.
    pub async fn request(&self, req: &Request) -> Result<Response> {
        let err = |e: &dyn std::fmt::Display| Error::Connect {
            addr: self.addr,
            reason: e.to_string(),
        };
        let (mut send, mut recv) = self.conn.open_bi().await.map_err(|e| err(&e))?;
        write_msg(&mut send, req, MAX_FRAME).await?;
        send.finish().map_err(|e| err(&e))?;
        match read_msg::<Response>(&mut recv, MAX_FRAME, Wait::Deadline).await? {
            Some(Response::Rejected { reason, detail }) => Err(Error::Rejected { reason, detail }),
            Some(r) => Ok(r),
            None => Err(err(&"the broker closed the stream without answering")),
        }
    }

    /// The next sequence number: above every earlier one, also across restarts (it starts
    /// from the clock in microseconds).
    fn next_seq(&self) -> u64 {
        let floor = now_ms().saturating_mul(1000);
        let mut cur = self.seq.load(Ordering::Relaxed);
        loop {
            let next = cur.saturating_add(1).max(floor);
            match self
                .seq
                .compare_exchange(cur, next, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => return next,
                Err(actual) => cur = actual,
            }
        }
    }

    /// Send raw bytes on a new request stream and read one answer (for tests of hostile
    /// input; normal code uses [`Client::request`]).
    ///
    /// # Errors
    /// `Connect` or `Transport` if the stream breaks.
    pub async fn raw_request(&self, bytes: &[u8]) -> Result<Option<Response>> {
        let err = |e: &dyn std::fmt::Display| Error::Connect {
            addr: self.addr,
            reason: e.to_string(),
        };
        let (mut send, mut recv) = self.conn.open_bi().await.map_err(|e| err(&e))?;
        // the broker may answer and stop reading before all bytes are sent (an oversize
        // prefix): the answer still counts
        if send.write_all(bytes).await.is_ok() {
            let _ = send.finish();
        }
        Ok(read_msg::<Response>(&mut recv, MAX_FRAME, Wait::Deadline).await?)
    }

    /// Seal a draft for the recipients the roster allows (its `seq` is replaced by the
    /// client's own counter) without sending it.
    ///
    /// # Errors
    /// `Proto` if this node may not publish it.
    pub async fn seal(&self, mut draft: Draft) -> Result<Envelope> {
        draft.seq = self.next_seq();
        let roster = self.roster.get();
        let mut rng = rand::rngs::OsRng;
        Ok(self
            .sealer
            .lock()
            .await
            .seal(&roster, draft, now_ms(), &mut rng)?)
    }

    /// Seal and publish; returns once the broker has stored it durably.
    ///
    /// # Errors
    /// `Proto` if it cannot be sealed, `Rejected` if the broker refuses it.
    pub async fn publish(&self, draft: Draft) -> Result<PublishAck> {
        let env = self.seal(draft).await?;
        self.publish_envelope(&env.encode()?).await
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

    /// Open (or resume) a named subscription.
    ///
    /// # Errors
    /// `Rejected` if the grants do not allow the pattern.
    pub async fn subscribe(
        &self,
        name: &str,
        pattern: TopicPattern,
        from: StartAt,
        filter: ExerciseFilter,
    ) -> Result<Subscription<'_>> {
        let (txs, rxs): (Vec<_>, Vec<_>) =
            (0..4).map(|_| mpsc::channel(SUBSCRIPTION_BUFFER)).unzip();
        let (Ok(tx), Ok(rx)) = (<Lanes>::try_from(txs), <[_; 4]>::try_from(rxs)) else {
            return Err(Error::Unexpected("lane setup".into()));
        };
        self.routes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(name.to_owned(), tx);
        let req = Request::Subscribe {
            name: name.to_owned(),
            pattern,
            from,
            filter,
        };
        match self.request(&req).await {
            Ok(Response::Subscribed { .. }) => Ok(Subscription {
                client: self,
                name: name.to_owned(),
                rx,
            }),
            Ok(other) => Err(Error::Unexpected(format!("{other:?}"))),
            Err(e) => {
                self.routes
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(name);
                Err(e)
            }
        }
    }

    /// Sign and send a receipt for a delivered message.
    ///
    /// # Errors
    /// `Rejected` if the broker refuses it.
    pub async fn send_receipt(&self, envelope: &Envelope) -> Result<()> {
        let r = Receipt::sign(&self.keys, envelope.header().id, envelope.hash(), now_ms());
        self.request(&Request::Receipt(r)).await.map(|_| ())
    }

    /// Receipts forwarded by the broker for this node's messages (take it once).
    pub fn receipts(&self) -> Option<mpsc::Receiver<Receipt>> {
        self.receipts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
    }

    /// Wait until the broker closes the connection (e.g. after revoking this node).
    pub async fn closed(&self) -> String {
        self.conn.closed().await.to_string()
    }

    /// Close the connection.
    pub async fn close(self) {
        self.conn.close(quinn::VarInt::from_u32(0), b"bye");
        let _ = tokio::time::timeout(Duration::from_secs(2), self.endpoint.wait_idle()).await;
    }

    fn spawn_push_reader(&self, receipts: mpsc::Sender<Receipt>) {
        let (conn, routes, roster, keys) = (
            self.conn.clone(),
            self.routes.clone(),
            self.roster.clone(),
            self.keys.clone(),
        );
        tokio::spawn(async move {
            while let Ok(mut recv) = conn.accept_uni().await {
                let (routes, roster, keys, receipts, conn) = (
                    routes.clone(),
                    roster.clone(),
                    keys.clone(),
                    receipts.clone(),
                    conn.clone(),
                );
                tokio::spawn(async move {
                    loop {
                        match read_msg::<Push>(&mut recv, MAX_FRAME, Wait::Idle).await {
                            Ok(Some(push)) => route(push, &routes, &roster, &keys, &receipts).await,
                            Ok(None) => break,
                            Err(e) => {
                                // a broken delivery lane would silently stop a subscription:
                                // end the connection instead, so it is seen and resumed
                                tracing::warn!(
                                    "delivery stream broken, closing the connection: {e}"
                                );
                                conn.close(quinn::VarInt::from_u32(3), b"broken delivery stream");
                                break;
                            }
                        }
                    }
                });
            }
        });
    }
}

async fn route(
    push: Push,
    routes: &Routes,
    roster: &RosterCell,
    keys: &NodeKeys,
    receipts: &mpsc::Sender<Receipt>,
) {
    match push {
        Push::Delivery {
            name,
            log_index,
            envelope,
        } => {
            let lanes = routes
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get(&name)
                .cloned();
            let Some(lanes) = lanes else { return };
            let (lane, item) = match Envelope::decode(&envelope, MAX_FRAME) {
                Ok(env) => {
                    let lane = env.header().precedence as usize;
                    let item = ewx_proto::open(&env, &roster.get(), keys)
                        .map(|payload| Delivery {
                            subscription: name,
                            log_index,
                            envelope: env,
                            payload,
                        })
                        .map_err(Error::from);
                    (lane, item)
                }
                Err(e) => (Precedence::Routine as usize, Err(e.into())),
            };
            // the subscription was dropped: nothing to do
            let _ = lanes[lane].send(item).await;
        }
        Push::Receipt(r) => {
            if r.verify(&roster.get()).is_ok() {
                let _ = receipts.send(r).await;
            }
        }
        Push::Roster { roster: bytes } => {
            let verified = ewx_proto::SignedRoster::decode(&bytes)
                .and_then(|s| s.verify_update(&roster.get()));
            match verified {
                Ok(new) => roster.set(new),
                Err(e) => tracing::warn!("broker pushed a roster that does not verify: {e}"),
            }
        }
    }
}

/// An open subscription: deliveries in arrival order (each precedence lane in log order;
/// FLASH may overtake ROUTINE).
#[derive(Debug)]
pub struct Subscription<'c> {
    client: &'c Client,
    name: String,
    /// One receiver per precedence, lowest first.
    rx: [mpsc::Receiver<Result<Delivery>>; 4],
}

impl Subscription<'_> {
    /// The next delivery — the highest precedence waiting first — or `None` when the
    /// connection is gone.
    pub async fn next(&mut self) -> Option<Result<Delivery>> {
        let [routine, priority, immediate, flash] = &mut self.rx;
        tokio::select! {
            biased;
            Some(d) = flash.recv() => Some(d),
            Some(d) = immediate.recv() => Some(d),
            Some(d) = priority.recv() => Some(d),
            Some(d) = routine.recv() => Some(d),
            else => None,
        }
    }

    /// Acknowledge every delivery of `precedence` up to `through`: on resume the broker
    /// starts after it.
    ///
    /// # Errors
    /// `Rejected` or `Connect`.
    pub async fn ack(&self, precedence: Precedence, through: u64) -> Result<()> {
        let req = Request::Ack {
            name: self.name.clone(),
            precedence,
            through,
        };
        self.client.request(&req).await.map(|_| ())
    }

    /// Acknowledge one delivery (its lane, its index).
    ///
    /// # Errors
    /// As [`Subscription::ack`].
    pub async fn ack_delivery(&self, d: &Delivery) -> Result<()> {
        self.ack(d.envelope.header().precedence, d.log_index).await
    }
}
