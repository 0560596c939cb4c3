//! `ewx bench`: load a broker with P publishers and S subscribers over real QUIC and
//! measure throughput and latency (publish→ack, publish→deliver) with HDR histograms,
//! and the broker process's CPU and peak memory. The broker runs as a child process so
//! its costs are measured apart from the load generator's.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use ewx_proto::frame::StartAt;
use ewx_proto::payload::{Bulletin, Payload};
use ewx_proto::{Draft, Labels, Level, MessageId, NodeId, Precedence, Topic, TopicPattern};
use hdrhistogram::Histogram;
use tokio::sync::Mutex;

use crate::error::Result;
use crate::network::{self, CORE};
use crate::{Client, SubscriptionOptions};

/// What to run.
#[derive(Debug, Clone)]
pub struct BenchConfig {
    /// Where the broker is.
    pub broker: SocketAddr,
    /// How long to publish.
    pub seconds: u64,
    /// Publisher connections.
    pub publishers: usize,
    /// Subscriber connections.
    pub subscribers: usize,
    /// Payload bytes per message.
    pub size: usize,
    /// Total messages per second (open loop); `None`: as fast as acks come back.
    pub rate: Option<u64>,
    /// Publishes in flight per publisher (closed loop).
    pub in_flight: usize,
    /// Share of FLASH messages in percent (the rest ROUTINE).
    pub flash_percent: u8,
    /// Recipients per message (1..=8 of the core nodes; publishers and subscribers are
    /// chosen among them).
    pub recipients: usize,
    /// Measure the broker, not the clients: publishers seal every bulletin before the
    /// clock starts, and subscribers time deliveries without verifying or decrypting.
    pub broker_only: bool,
}

/// Bulletins sealed ahead per second of a `broker_only` run without `rate`.
pub const PRESEAL_PER_S: u64 = 40_000;

/// Results, ready to print.
#[derive(Debug, Clone, serde::Serialize)]
pub struct BenchReport {
    /// Seconds of publishing.
    pub seconds: f64,
    /// Publishers.
    pub publishers: usize,
    /// Subscribers.
    pub subscribers: usize,
    /// Payload bytes.
    pub size: usize,
    /// Recipients per message.
    pub recipients: usize,
    /// Whether clients sealed ahead and did not open deliveries.
    pub broker_only: bool,
    /// Messages acknowledged per second.
    pub published_per_s: f64,
    /// Deliveries received per second, over all subscribers.
    pub delivered_per_s: f64,
    /// Payload MB/s published.
    pub published_mb_per_s: f64,
    /// Payload MB/s delivered.
    pub delivered_mb_per_s: f64,
    /// Publish→ack latency percentiles, ms.
    pub ack_p50_ms: f64,
    /// See `ack_p50_ms`.
    pub ack_p99_ms: f64,
    /// See `ack_p50_ms`.
    pub ack_p999_ms: f64,
    /// See `ack_p50_ms`.
    pub ack_max_ms: f64,
    /// Publish→deliver latency percentiles, ms.
    pub deliver_p50_ms: f64,
    /// See `deliver_p50_ms`.
    pub deliver_p99_ms: f64,
    /// See `deliver_p50_ms`.
    pub deliver_p999_ms: f64,
    /// See `deliver_p50_ms`.
    pub deliver_max_ms: f64,
    /// FLASH publish→deliver p99, ms (if any FLASH was sent).
    pub flash_deliver_p99_ms: Option<f64>,
    /// Broker CPU over the run, percent of one core (`None` for an external broker).
    pub broker_cpu_percent: Option<f64>,
    /// Broker peak resident memory, MB.
    pub broker_peak_rss_mb: Option<f64>,
    /// Publishes that failed.
    pub errors: u64,
    /// Deliveries expected but not received when the run ended.
    pub missing: u64,
}

fn hist() -> Histogram<u64> {
    // 1 µs .. 60 s, 3 significant digits
    Histogram::new_with_bounds(1, 60_000_000, 3)
        .unwrap_or_else(|_| Histogram::new(3).unwrap_or_else(|_| unreachable!()))
}

fn ms(h: &Histogram<u64>, q: f64) -> f64 {
    h.value_at_quantile(q) as f64 / 1000.0
}

fn micros(epoch: Instant) -> u64 {
    epoch.elapsed().as_micros() as u64
}

/// Elapsed µs since the bench epoch travels in the bulletin's `event_ms` field as µs.
fn draft(cfg: &BenchConfig, epoch: Instant, flash: bool) -> Result<Draft> {
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
            body: "x".repeat(cfg.size),
            area: None,
            event_ms: Some(micros(epoch)),
            confidence: None,
        }),
        seq: 0,
        expires_ms: None,
        receipt: false,
    })
}

/// When each pre-sealed bulletin was sent (µs since the epoch; 0 = not yet), found by
/// message id: how a subscriber that does not decrypt times its deliveries.
#[derive(Default)]
struct SendTimes {
    slot: HashMap<MessageId, usize>,
    sent_us: Vec<AtomicU64>,
}

impl SendTimes {
    fn latency(&self, id: &MessageId, epoch: Instant) -> Option<u64> {
        let t = self
            .sent_us
            .get(*self.slot.get(id)?)?
            .load(Ordering::Relaxed);
        (t > 0).then(|| micros(epoch).saturating_sub(t).max(1))
    }
}

/// What a publisher sends: bulletins it seals as it goes, or ones sealed ahead.
enum Load {
    Live,
    Sealed {
        first_slot: usize,
        pool: Vec<Vec<u8>>,
    },
}

fn is_flash(n: u64, lane: usize, percent: u8) -> bool {
    (n + lane as u64) % 100 < u64::from(percent)
}

/// Run the load and measure; `broker_pid` lets it read the broker's CPU and memory, and
/// `progress` is called every second with (elapsed s, published, delivered).
///
/// # Errors
/// If the clients cannot connect or the configuration is impossible.
pub async fn run(
    cfg: BenchConfig,
    broker_pid: Option<u32>,
    progress: &(dyn Fn(u64, u64, u64) + Sync),
) -> Result<BenchReport> {
    if !(1..=CORE.len()).contains(&cfg.recipients) {
        return Err(crate::Error::Unexpected(format!(
            "recipients must be 1..={}",
            CORE.len()
        )));
    }
    let roster = network::roster()?;
    let epoch = Instant::now();
    let node = |i: usize| network::demo_keys(CORE[i % cfg.recipients]);

    // publishers connect and, for a broker-only run, seal everything first
    let mut publishers = Vec::new();
    for p in 0..cfg.publishers {
        publishers.push(Client::connect(cfg.broker, node(p)?, roster.clone()).await?);
    }
    let mut times = SendTimes::default();
    let mut loads: Vec<Load> = Vec::new();
    if cfg.broker_only {
        let total = cfg.rate.unwrap_or(PRESEAL_PER_S) * cfg.seconds;
        let each = (total / cfg.publishers as u64).max(1) as usize;
        let mut sealing = Vec::new();
        for c in &publishers {
            let (c, cfg) = (c.clone(), cfg.clone());
            sealing.push(tokio::spawn(async move {
                let mut pool = Vec::with_capacity(each);
                for n in 0..each {
                    let d = draft(&cfg, epoch, is_flash(n as u64, 0, cfg.flash_percent))?;
                    let env = c.seal(d).await?;
                    pool.push((env.header().id, env.encode()?));
                }
                Ok::<_, crate::Error>(pool)
            }));
        }
        for s in sealing {
            let pool = s
                .await
                .map_err(|e| crate::Error::Unexpected(e.to_string()))??;
            let first_slot = times.sent_us.len();
            let mut bytes = Vec::with_capacity(pool.len());
            for (id, b) in pool {
                times.slot.insert(id, times.sent_us.len());
                times.sent_us.push(AtomicU64::new(0));
                bytes.push(b);
            }
            loads.push(Load::Sealed {
                first_slot,
                pool: bytes,
            });
        }
    } else {
        loads.extend((0..cfg.publishers).map(|_| Load::Live));
    }
    let times = Arc::new(times);

    let published = Arc::new(AtomicU64::new(0));
    let delivered = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let ack_h = Arc::new(Mutex::new(hist()));
    let deliver_h = Arc::new(Mutex::new(hist()));
    let flash_h = Arc::new(Mutex::new(hist()));
    let stop = Arc::new(AtomicBool::new(false));

    let mut subs = Vec::new();
    for i in 0..cfg.subscribers {
        let c = Client::connect(cfg.broker, node(i)?, roster.clone()).await?;
        let opts = SubscriptionOptions {
            from: StartAt::Latest,
            auto_receipt: false,
            sealed: cfg.broker_only,
            ..Default::default()
        };
        let mut sub = c
            .subscribe_with(&format!("bench-{i}"), TopicPattern::new("ew.bench")?, opts)
            .await?;
        let (delivered, deliver_h, flash_h, stop, times) = (
            delivered.clone(),
            deliver_h.clone(),
            flash_h.clone(),
            stop.clone(),
            times.clone(),
        );
        subs.push(tokio::spawn(async move {
            let mut local = hist();
            let mut local_flash = hist();
            loop {
                let d = tokio::select! {
                    d = sub.next() => d,
                    _ = tokio::time::sleep(Duration::from_millis(200)) => {
                        if stop.load(Ordering::Relaxed) {
                            break;
                        }
                        continue;
                    }
                };
                let Some(Ok(d)) = d else { break };
                let lat = match &d.payload {
                    Some(Payload::Bulletin(b)) => {
                        Some(micros(epoch).saturating_sub(b.event_ms.unwrap_or(0)).max(1))
                    }
                    _ => times.latency(&d.envelope.header().id, epoch),
                };
                if let Some(lat) = lat {
                    let _ = local.record(lat);
                    if d.envelope.header().precedence == Precedence::Flash {
                        let _ = local_flash.record(lat);
                    }
                }
                delivered.fetch_add(1, Ordering::Relaxed);
            }
            let _ = deliver_h.lock().await.add(&local);
            let _ = flash_h.lock().await.add(&local_flash);
            c.close().await;
        }));
    }

    let cpu0 = broker_pid.and_then(cpu_ticks);
    let started = Instant::now();
    let deadline = started + Duration::from_secs(cfg.seconds);
    let per_pub_rate = cfg
        .rate
        .map(|r| (r as f64 / cfg.publishers as f64).max(0.001));
    let lanes = if per_pub_rate.is_some() {
        1
    } else {
        cfg.in_flight.max(1)
    };
    let mut pubs = Vec::new();
    for (c, load) in publishers.into_iter().zip(loads) {
        let load = Arc::new(load);
        let next = Arc::new(AtomicU64::new(0));
        for lane in 0..lanes {
            let (c, load, next, published, errors, ack_h, times, cfg) = (
                c.clone(),
                load.clone(),
                next.clone(),
                published.clone(),
                errors.clone(),
                ack_h.clone(),
                times.clone(),
                cfg.clone(),
            );
            pubs.push(tokio::spawn(async move {
                let mut local = hist();
                let start = Instant::now();
                while Instant::now() < deadline {
                    // one counter per publisher: its lanes share the schedule and the pool
                    let n = next.fetch_add(1, Ordering::Relaxed);
                    if let Some(rate) = per_pub_rate {
                        // open loop: send on schedule whatever the latency
                        let due = start + Duration::from_secs_f64(n as f64 / rate);
                        tokio::time::sleep_until(due.into()).await;
                        if Instant::now() >= deadline {
                            break;
                        }
                    }
                    let t = Instant::now();
                    let task = {
                        let (c, load, times) = (c.clone(), load.clone(), times.clone());
                        let flash = is_flash(n, lane, cfg.flash_percent);
                        let d = matches!(*load, Load::Live).then(|| draft(&cfg, epoch, flash));
                        async move {
                            match &*load {
                                Load::Live => match d {
                                    Some(d) => c.publish(d?).await,
                                    None => Err(crate::Error::Unexpected("no draft".into())),
                                },
                                Load::Sealed { first_slot, pool } => {
                                    let Some(bytes) = pool.get(n as usize) else {
                                        return Err(crate::Error::Unexpected("pool".into()));
                                    };
                                    if let Some(slot) = times.sent_us.get(first_slot + n as usize) {
                                        slot.store(micros(epoch).max(1), Ordering::Relaxed);
                                    }
                                    c.publish_envelope(bytes).await
                                }
                            }
                        }
                    };
                    if let Load::Sealed { pool, .. } = &*load {
                        if n as usize >= pool.len() {
                            break; // all sealed bulletins sent
                        }
                    }
                    if per_pub_rate.is_some() {
                        let (published, errors, ack_h) =
                            (published.clone(), errors.clone(), ack_h.clone());
                        tokio::spawn(async move {
                            match task.await {
                                Ok(_) => {
                                    published.fetch_add(1, Ordering::Relaxed);
                                    let _ = ack_h
                                        .lock()
                                        .await
                                        .record(t.elapsed().as_micros().max(1) as u64);
                                }
                                Err(_) => drop(errors.fetch_add(1, Ordering::Relaxed)),
                            }
                        });
                    } else {
                        match task.await {
                            Ok(_) => {
                                published.fetch_add(1, Ordering::Relaxed);
                                let _ = local.record(t.elapsed().as_micros().max(1) as u64);
                            }
                            Err(_) => drop(errors.fetch_add(1, Ordering::Relaxed)),
                        }
                    }
                }
                let _ = ack_h.lock().await.add(&local);
            }));
        }
    }
    let all_sent = async {
        for p in pubs {
            let _ = p.await;
        }
    };
    tokio::pin!(all_sent);
    let mut ticks = tokio::time::interval_at(
        (started + Duration::from_secs(1)).into(),
        Duration::from_secs(1),
    );
    loop {
        tokio::select! {
            () = &mut all_sent => break,
            _ = ticks.tick() => progress(
                started.elapsed().as_secs(),
                published.load(Ordering::Relaxed),
                delivered.load(Ordering::Relaxed),
            ),
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    let cpu1 = broker_pid.and_then(cpu_ticks);
    // let the last deliveries arrive, then stop the subscribers
    let expected = published.load(Ordering::Relaxed) * cfg.subscribers as u64;
    let drain = Instant::now();
    while delivered.load(Ordering::Relaxed) < expected && drain.elapsed() < Duration::from_secs(10)
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.store(true, Ordering::Relaxed);
    for s in subs {
        let _ = s.await;
    }
    let (ack, del, flash) = (
        ack_h.lock().await.clone(),
        deliver_h.lock().await.clone(),
        flash_h.lock().await.clone(),
    );
    let (pubd, deld) = (
        published.load(Ordering::Relaxed) as f64,
        delivered.load(Ordering::Relaxed) as f64,
    );
    let mb = cfg.size as f64 / 1e6;
    let ticks_per_s = 100.0; // USER_HZ on Linux
    Ok(BenchReport {
        seconds: elapsed,
        publishers: cfg.publishers,
        subscribers: cfg.subscribers,
        size: cfg.size,
        recipients: cfg.recipients,
        broker_only: cfg.broker_only,
        published_per_s: pubd / elapsed,
        delivered_per_s: deld / elapsed,
        published_mb_per_s: pubd * mb / elapsed,
        delivered_mb_per_s: deld * mb / elapsed,
        ack_p50_ms: ms(&ack, 0.5),
        ack_p99_ms: ms(&ack, 0.99),
        ack_p999_ms: ms(&ack, 0.999),
        ack_max_ms: ack.max() as f64 / 1000.0,
        deliver_p50_ms: ms(&del, 0.5),
        deliver_p99_ms: ms(&del, 0.99),
        deliver_p999_ms: ms(&del, 0.999),
        deliver_max_ms: del.max() as f64 / 1000.0,
        flash_deliver_p99_ms: (!flash.is_empty()).then(|| ms(&flash, 0.99)),
        broker_cpu_percent: cpu0
            .zip(cpu1)
            .map(|(a, b)| (b - a) as f64 / ticks_per_s / elapsed * 100.0),
        broker_peak_rss_mb: broker_pid
            .and_then(peak_rss_kb)
            .map(|kb| kb as f64 / 1024.0),
        errors: errors.load(Ordering::Relaxed),
        missing: expected.saturating_sub(delivered.load(Ordering::Relaxed)),
    })
}

/// utime + stime of a process, in clock ticks (Linux `/proc/PID/stat`).
fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = stat.rsplit_once(')')?.1;
    let f: Vec<&str> = after.split_whitespace().collect();
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

/// Peak resident set (VmHWM) of a process, in KiB.
fn peak_rss_kb(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

impl BenchReport {
    /// A table for people.
    pub fn table(&self) -> String {
        let opt =
            |v: Option<f64>, unit: &str| v.map_or("-".to_string(), |v| format!("{v:.1} {unit}"));
        format!(
            "ewx bench: {} publishers, {} subscribers, {} B payloads, {} recipients, {:.1} s{}\n\
             {:<28} {:>12.0} msg/s {:>8.2} MB/s\n\
             {:<28} {:>12.0} msg/s {:>8.2} MB/s\n\
             {:<28} p50 {:.2}  p99 {:.2}  p99.9 {:.2}  max {:.2} ms\n\
             {:<28} p50 {:.2}  p99 {:.2}  p99.9 {:.2}  max {:.2} ms\n\
             {:<28} {}\n{:<28} {}\n{:<28} {}\n{:<28} {}\n{:<28} {}\n",
            self.publishers,
            self.subscribers,
            self.size,
            self.recipients,
            self.seconds,
            if self.broker_only {
                " (broker only: sealed ahead, deliveries not opened)"
            } else {
                ""
            },
            "published (durable acks)",
            self.published_per_s,
            self.published_mb_per_s,
            "delivered",
            self.delivered_per_s,
            self.delivered_mb_per_s,
            "publish -> ack",
            self.ack_p50_ms,
            self.ack_p99_ms,
            self.ack_p999_ms,
            self.ack_max_ms,
            "publish -> deliver",
            self.deliver_p50_ms,
            self.deliver_p99_ms,
            self.deliver_p999_ms,
            self.deliver_max_ms,
            "FLASH publish -> deliver p99",
            opt(self.flash_deliver_p99_ms, "ms"),
            "broker CPU",
            opt(self.broker_cpu_percent, "% of a core"),
            "broker peak RSS",
            opt(self.broker_peak_rss_mb, "MB"),
            "errors",
            self.errors,
            "deliveries missing",
            self.missing,
        )
    }
}
