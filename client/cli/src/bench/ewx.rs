//! ewx as a [`Peer`] of the bench loop: publishers seal bulletins (or, for a broker-only
//! run, seal all of them before the clock starts) and subscribers open them (or, broker
//! only, time them by message id without opening).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use ewx_proto::case::{CaseTag, CaseType};
use ewx_proto::frame::StartAt;
use ewx_proto::payload::{Bulletin, Payload};
use ewx_proto::{Draft, Labels, Level, MessageId, NodeId, Precedence, Topic, TopicPattern};

use super::{
    BenchReport, BoxFuture, Delivered, Deliveries, Load, Peer, PeerError, Publish, Publisher,
    is_flash, measure,
};
use crate::error::{Error, Result};
use ewx_client::{Client, Subscription, SubscriptionOptions};
use ewx_testkit::CORE;

/// What to run against ewx.
#[derive(Debug, Clone)]
pub struct BenchConfig {
    /// Where the broker is (one address), or a cluster's replicas (clients spread over
    /// them, each reconnecting to any).
    pub brokers: Vec<SocketAddr>,
    /// The workload.
    pub load: Load,
    /// Share of FLASH messages in percent (the rest ROUTINE).
    pub flash_percent: u8,
    /// Recipients per message (1..=8 of the core nodes; publishers and subscribers are
    /// chosen among them).
    pub recipients: usize,
    /// Measure the broker, not the clients: publishers seal every bulletin before the
    /// clock starts, and subscribers time deliveries without verifying or decrypting.
    pub broker_only: bool,
    /// Every publish opens a consultation naming the other recipients (case traffic).
    pub cases: bool,
}

/// Bulletins sealed ahead per second of a `broker_only` run without `rate`.
pub const PRESEAL_PER_S: u64 = 40_000;

/// Run the load against an ewx broker; see [`measure`].
///
/// # Errors
/// If the clients cannot connect or the configuration is impossible.
pub async fn run(
    cfg: BenchConfig,
    broker_pids: &[u32],
    progress: &(dyn Fn(u64, u64, u64) + Sync),
) -> Result<BenchReport> {
    if !(1..=CORE.len()).contains(&cfg.recipients) {
        return Err(Error::Unexpected(format!(
            "recipients must be 1..={}",
            CORE.len()
        )));
    }
    let peer = Ewx::connect(&cfg).await?;
    let mut report = measure(&cfg.load, &peer, broker_pids, progress)
        .await
        .map_err(|e| Error::Unexpected(e.to_string()))?;
    report.recipients = Some(cfg.recipients);
    report.broker_only = Some(cfg.broker_only);
    for c in peer.clients {
        c.close().await;
    }
    Ok(report)
}

/// Send time of each pre-sealed bulletin (µs since the run's epoch; 0 = not yet), found
/// by message id: how a subscriber that does not decrypt times its deliveries.
#[derive(Default)]
struct SendTimes {
    slot: HashMap<MessageId, usize>,
    sent_us: Vec<AtomicU64>,
}

impl SendTimes {
    fn sent(&self, id: &MessageId) -> Option<u64> {
        let t = self
            .sent_us
            .get(*self.slot.get(id)?)?
            .load(Ordering::Relaxed);
        (t > 0).then_some(t)
    }
}

/// Client `n` connects to replica `n` mod the replicas first (one broker: to it).
async fn connect(
    cfg: &BenchConfig,
    n: usize,
    keys: ewx_proto::NodeKeys,
    roster: ewx_proto::Roster,
) -> Result<Client> {
    let mut addrs = cfg.brokers.clone();
    let len = addrs.len();
    if len > 0 {
        addrs.rotate_left(n % len);
    }
    Ok(Client::connect_any(&addrs, keys, roster, ewx_net::Clock::system()).await?)
}

/// The sender of publisher `p`.
fn sender(cfg: &BenchConfig, p: usize) -> &'static str {
    CORE[p % cfg.recipients]
}

/// The send time travels in the bulletin's `event_ms` field, as µs since the epoch. With
/// `cfg.cases` it opens a consultation of `sender` naming the other recipients.
fn draft(cfg: &BenchConfig, sender: &str, sent_us: u64, flash: bool) -> Result<Draft> {
    let mut labels = Labels::new(Level::Amber, Labels::parse_compartments("CORE")?);
    if cfg.recipients < CORE.len() {
        for node in &CORE[..cfg.recipients] {
            labels.rel_to.insert(NodeId::new(*node)?);
        }
    }
    Ok(Draft {
        topic: Topic::new("ew.bench")?,
        precedence: if flash {
            Precedence::Flash
        } else {
            Precedence::Routine
        },
        labels,
        payload: Payload::Bulletin(Bulletin {
            headline: "bench".into(),
            body: "x".repeat(cfg.load.size),
            area: None,
            event_ms: Some(sent_us),
            confidence: None,
        }),
        seq: 0,
        expires_ms: None,
        receipt: false,
        case: cfg.cases.then(|| {
            let parties = CORE[..cfg.recipients]
                .iter()
                .filter(|n| **n != sender)
                .map(|n| ewx_testkit::id(n))
                .collect();
            CaseTag::open(CaseType::Consultation, parties)
        }),
    })
}

/// A publisher's bulletins sealed ahead, and where their send times go.
struct Sealed {
    first_slot: usize,
    pool: Vec<Vec<u8>>,
}

struct Ewx {
    cfg: BenchConfig,
    publishers: Vec<(Client, Option<Arc<Sealed>>)>,
    times: Arc<SendTimes>,
    clients: Vec<Client>,
}

impl Ewx {
    /// Connect the publishers and, for a broker-only run, seal their bulletins (all
    /// publishers at once).
    async fn connect(cfg: &BenchConfig) -> Result<Self> {
        let roster = ewx_testkit::Network::compact().roster();
        let mut clients = Vec::new();
        for p in 0..cfg.load.publishers {
            let keys = ewx_testkit::keys(sender(cfg, p));
            clients.push(connect(cfg, p, keys, roster.clone()).await?);
        }
        if cfg.brokers.len() > 1 {
            // a cluster measures from its first commit on, not from its first election
            let warm_up = draft(cfg, sender(cfg, 0), 0, false)?;
            clients[0].publish(warm_up).await?;
        }
        let mut times = SendTimes::default();
        let mut sealed = Vec::new();
        if cfg.broker_only {
            let total = cfg.load.rate.unwrap_or(PRESEAL_PER_S) * cfg.load.seconds;
            let each = (total / cfg.load.publishers as u64).max(1);
            let mut sealing = Vec::new();
            for (p, c) in clients.iter().enumerate() {
                let (c, cfg) = (c.clone(), cfg.clone());
                sealing.push(tokio::spawn(async move {
                    let mut pool = Vec::new();
                    for n in 0..each {
                        let d = draft(&cfg, sender(&cfg, p), 0, is_flash(n, cfg.flash_percent))?;
                        let env = c.seal(d).await?;
                        pool.push((env.header().id, env.encode()?));
                    }
                    Ok::<_, Error>(pool)
                }));
            }
            for s in sealing {
                let pool = s.await.map_err(|e| Error::Unexpected(e.to_string()))??;
                let first_slot = times.sent_us.len();
                let mut bytes = Vec::with_capacity(pool.len());
                for (id, b) in pool {
                    times.slot.insert(id, times.sent_us.len());
                    times.sent_us.push(AtomicU64::new(0));
                    bytes.push(b);
                }
                sealed.push(Some(Arc::new(Sealed {
                    first_slot,
                    pool: bytes,
                })));
            }
        } else {
            sealed.resize_with(clients.len(), || None);
        }
        Ok(Self {
            cfg: cfg.clone(),
            publishers: clients.iter().cloned().zip(sealed).collect(),
            times: Arc::new(times),
            clients,
        })
    }
}

impl Peer for Ewx {
    fn publisher(&self, index: usize) -> BoxFuture<'_, Result<Publisher, PeerError>> {
        Box::pin(async move {
            let (c, sealed) = self
                .publishers
                .get(index)
                .cloned()
                .ok_or("no such publisher")?;
            let limit = sealed.as_ref().map(|s| s.pool.len() as u64);
            let (cfg, times) = (self.cfg.clone(), self.times.clone());
            let publish: super::PublishFn = Arc::new(move |p: Publish| {
                let c = c.clone();
                match &sealed {
                    None => {
                        let d = draft(
                            &cfg,
                            sender(&cfg, index),
                            p.sent_us,
                            is_flash(p.n, cfg.flash_percent),
                        );
                        Box::pin(async move {
                            c.publish(d?).await?;
                            Ok(())
                        })
                    }
                    Some(s) => {
                        let s = s.clone();
                        if let Some(t) = times.sent_us.get(s.first_slot + p.n as usize) {
                            t.store(p.sent_us, Ordering::Relaxed);
                        }
                        Box::pin(async move {
                            let bytes = s.pool.get(p.n as usize).ok_or("pool used up")?;
                            c.publish_envelope(bytes).await?;
                            Ok(())
                        })
                    }
                }
            });
            Ok(Publisher {
                publish,
                limit,
                flash_percent: self.cfg.flash_percent,
            })
        })
    }

    fn subscriber(&self, index: usize) -> BoxFuture<'_, Result<Box<dyn Deliveries>, PeerError>> {
        Box::pin(async move {
            let keys = ewx_testkit::keys(CORE[index % self.cfg.recipients]);
            let roster = ewx_testkit::Network::compact().roster();
            // subscribers start on the replicas after the publishers' first
            let client = connect(&self.cfg, index + 1, keys, roster).await?;
            let opts = SubscriptionOptions {
                from: StartAt::Latest,
                auto_receipt: false,
                sealed: self.cfg.broker_only,
                ..Default::default()
            };
            let sub = client
                .subscribe_with(
                    &format!("bench-{index}"),
                    TopicPattern::new("ew.bench")?,
                    opts,
                )
                .await?;
            let d: Box<dyn Deliveries> = Box::new(EwxDeliveries {
                sub,
                times: self.times.clone(),
                _client: client,
            });
            Ok(d)
        })
    }
}

struct EwxDeliveries {
    sub: Subscription,
    times: Arc<SendTimes>,
    _client: Client,
}

impl Deliveries for EwxDeliveries {
    fn next(&mut self) -> BoxFuture<'_, Option<std::result::Result<Delivered, PeerError>>> {
        Box::pin(async move {
            let d = match self.sub.next().await? {
                Ok(d) => d,
                Err(e) => return Some(Err(e.into())),
            };
            let h = d.envelope.header();
            let sent_us = match &d.payload {
                Some(Payload::Bulletin(b)) => b.event_ms,
                _ => self.times.sent(&h.id),
            };
            Some(Ok(Delivered {
                sent_us,
                flash: h.precedence == Precedence::Flash,
            }))
        })
    }
}
