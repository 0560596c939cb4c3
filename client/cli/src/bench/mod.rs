//! `ewx bench`: load a broker with P publishers and S subscribers over real QUIC and
//! measure throughput and latency (publish→ack, publish→deliver) with HDR histograms, and
//! the server process's CPU and peak memory. The load loop is written once, against the
//! [`Peer`] trait: ewx is one peer ([`ewx`]); the unshipped comparison tool in
//! `tests/compare` plugs NATS JetStream and Redis streams into the same loop, so every
//! system is measured by the same code.

pub mod ewx;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use tokio::sync::Mutex;

pub use ewx::{BenchConfig, PRESEAL_PER_S, run};

/// A boxed future, as the [`Peer`] methods return.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;
/// Whatever a peer's client library reports.
pub type PeerError = Box<dyn std::error::Error + Send + Sync>;

/// The workload every peer gets (also the command-line flags of `ewx bench` and of the
/// comparison tool, so both take the same workload the same way).
#[derive(Debug, Clone, clap::Args)]
pub struct Load {
    /// Seconds of publishing.
    #[arg(long, default_value_t = 10)]
    pub seconds: u64,
    /// Publisher connections.
    #[arg(long, default_value_t = 4)]
    pub publishers: usize,
    /// Subscriber connections (each receives every message).
    #[arg(long, default_value_t = 10)]
    pub subscribers: usize,
    /// Payload bytes per message.
    #[arg(long, default_value_t = 1024)]
    pub size: usize,
    /// Fixed total rate in messages/s (open loop); default: as fast as acks return.
    #[arg(long)]
    pub rate: Option<u64>,
    /// Publishes in flight per publisher when not rate-limited (closed loop).
    #[arg(long, default_value_t = 32)]
    pub in_flight: usize,
}

/// One publish the loop asks for.
#[derive(Debug, Clone, Copy)]
pub struct Publish {
    /// This publisher's message number, from 0.
    pub n: u64,
    /// Send time, µs since the run's epoch: carry it to the subscribers.
    pub sent_us: u64,
}

/// One delivery a subscriber saw.
#[derive(Debug, Clone, Copy)]
pub struct Delivered {
    /// The send time it carried (`None`: not measured).
    pub sent_us: Option<u64>,
    /// Whether it was FLASH.
    pub flash: bool,
}

/// Publish one message; resolves once the system has acknowledged it durably.
pub type PublishFn =
    Arc<dyn Fn(Publish) -> BoxFuture<'static, Result<(), PeerError>> + Send + Sync>;

/// A publisher connection.
pub struct Publisher {
    /// How it publishes.
    pub publish: PublishFn,
    /// How many messages it can send at most (`None`: unlimited).
    pub limit: Option<u64>,
}

impl std::fmt::Debug for Publisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Publisher")
            .field("limit", &self.limit)
            .finish_non_exhaustive()
    }
}

/// A subscriber connection's deliveries.
pub trait Deliveries: Send {
    /// The next delivery; `None` when the subscription has ended. Must be cancel safe.
    fn next(&mut self) -> BoxFuture<'_, Option<Result<Delivered, PeerError>>>;
}

/// A system under test: it makes publisher and subscriber connections.
pub trait Peer: Sync {
    /// Publisher connection `index`.
    fn publisher(&self, index: usize) -> BoxFuture<'_, Result<Publisher, PeerError>>;
    /// Subscriber connection `index`, subscribed to everything published after this
    /// resolves.
    fn subscriber(&self, index: usize) -> BoxFuture<'_, Result<Box<dyn Deliveries>, PeerError>>;
}

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
    /// Recipients per message (ewx only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recipients: Option<usize>,
    /// Whether clients sealed ahead and did not open deliveries (ewx only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub broker_only: Option<bool>,
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
    /// Server CPU over the run, percent of one core (`None` for an external server).
    pub broker_cpu_percent: Option<f64>,
    /// Server peak resident memory, MB.
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
    epoch.elapsed().as_micros().max(1) as u64
}

/// Run `load` against `peer` and measure; `server_pid` lets it read the server's CPU and
/// memory, and `progress` is called every second with (elapsed s, published, delivered).
///
/// # Errors
/// If a connection cannot be made.
pub async fn measure(
    load: &Load,
    peer: &dyn Peer,
    server_pid: Option<u32>,
    progress: &(dyn Fn(u64, u64, u64) + Sync),
) -> Result<BenchReport, PeerError> {
    if load.publishers == 0 || load.seconds == 0 {
        return Err("publishers and seconds must be at least 1".into());
    }
    let epoch = Instant::now();
    // publishers connect first (an ewx publisher may seal its load ahead), then subscribers
    let mut publishers = Vec::new();
    for p in 0..load.publishers {
        publishers.push(peer.publisher(p).await?);
    }
    let published = Arc::new(AtomicU64::new(0));
    let delivered = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let ack_h = Arc::new(Mutex::new(hist()));
    let deliver_h = Arc::new(Mutex::new(hist()));
    let flash_h = Arc::new(Mutex::new(hist()));
    // subscribers stop only when told: `Deliveries::next` is never cancelled mid-run
    let (stop, stopped) = tokio::sync::watch::channel(false);

    let mut subs = Vec::new();
    for i in 0..load.subscribers {
        let mut deliveries = peer.subscriber(i).await?;
        let (delivered, deliver_h, flash_h, mut stopped) = (
            delivered.clone(),
            deliver_h.clone(),
            flash_h.clone(),
            stopped.clone(),
        );
        subs.push(tokio::spawn(async move {
            let mut local = hist();
            let mut local_flash = hist();
            loop {
                let d = tokio::select! {
                    d = deliveries.next() => d,
                    _ = stopped.wait_for(|s| *s) => break,
                };
                let Some(Ok(d)) = d else { break };
                if let Some(sent) = d.sent_us {
                    let lat = micros(epoch).saturating_sub(sent).max(1);
                    let _ = local.record(lat);
                    if d.flash {
                        let _ = local_flash.record(lat);
                    }
                }
                delivered.fetch_add(1, Ordering::Relaxed);
            }
            let _ = deliver_h.lock().await.add(&local);
            let _ = flash_h.lock().await.add(&local_flash);
        }));
    }

    let cpu0 = server_pid.and_then(cpu_ticks);
    let started = Instant::now();
    let deadline = started + Duration::from_secs(load.seconds);
    let per_pub_rate = load
        .rate
        .map(|r| (r as f64 / load.publishers as f64).max(0.001));
    let lanes = if per_pub_rate.is_some() {
        1
    } else {
        load.in_flight.max(1)
    };
    let mut pubs = Vec::new();
    for publisher in publishers {
        let publisher = Arc::new(publisher);
        let next = Arc::new(AtomicU64::new(0));
        for _ in 0..lanes {
            let (publisher, next, published, errors, ack_h) = (
                publisher.clone(),
                next.clone(),
                published.clone(),
                errors.clone(),
                ack_h.clone(),
            );
            pubs.push(tokio::spawn(async move {
                let mut local = hist();
                let start = Instant::now();
                while Instant::now() < deadline {
                    // one counter per publisher: its lanes share the schedule and the limit
                    let n = next.fetch_add(1, Ordering::Relaxed);
                    if publisher.limit.is_some_and(|l| n >= l) {
                        break;
                    }
                    if let Some(rate) = per_pub_rate {
                        // open loop: send on schedule whatever the latency
                        let due = start + Duration::from_secs_f64(n as f64 / rate);
                        tokio::time::sleep_until(due.into()).await;
                        if Instant::now() >= deadline {
                            break;
                        }
                    }
                    let t = Instant::now();
                    let task = (publisher.publish)(Publish {
                        n,
                        sent_us: micros(epoch),
                    });
                    let record = |ok: bool, h: &mut Histogram<u64>| {
                        if ok {
                            published.fetch_add(1, Ordering::Relaxed);
                            let _ = h.record(t.elapsed().as_micros().max(1) as u64);
                        } else {
                            errors.fetch_add(1, Ordering::Relaxed);
                        }
                    };
                    if per_pub_rate.is_some() {
                        let (published, errors, ack_h) =
                            (published.clone(), errors.clone(), ack_h.clone());
                        tokio::spawn(async move {
                            let ok = task.await.is_ok();
                            if ok {
                                published.fetch_add(1, Ordering::Relaxed);
                                let _ = ack_h
                                    .lock()
                                    .await
                                    .record(t.elapsed().as_micros().max(1) as u64);
                            } else {
                                errors.fetch_add(1, Ordering::Relaxed);
                            }
                        });
                    } else {
                        record(task.await.is_ok(), &mut local);
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
    let cpu1 = server_pid.and_then(cpu_ticks);
    // let the last deliveries arrive, then stop the subscribers
    let expected = published.load(Ordering::Relaxed) * load.subscribers as u64;
    let drain = Instant::now();
    while delivered.load(Ordering::Relaxed) < expected && drain.elapsed() < Duration::from_secs(10)
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = stop.send(true);
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
    let mb = load.size as f64 / 1e6;
    let ticks_per_s = 100.0; // USER_HZ on Linux
    Ok(BenchReport {
        seconds: elapsed,
        publishers: load.publishers,
        subscribers: load.subscribers,
        size: load.size,
        recipients: None,
        broker_only: None,
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
        broker_peak_rss_mb: server_pid
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
    /// A table for people, headed by the system's name.
    pub fn table(&self, system: &str) -> String {
        let opt =
            |v: Option<f64>, unit: &str| v.map_or("-".to_string(), |v| format!("{v:.1} {unit}"));
        let recipients = self
            .recipients
            .map_or(String::new(), |r| format!(", {r} recipients"));
        let broker_only = if self.broker_only == Some(true) {
            " (broker only: sealed ahead, deliveries not opened)"
        } else {
            ""
        };
        format!(
            "{system}: {} publishers, {} subscribers, {} B payloads{recipients}, {:.1} s{broker_only}\n\
             {:<28} {:>12.0} msg/s {:>8.2} MB/s\n\
             {:<28} {:>12.0} msg/s {:>8.2} MB/s\n\
             {:<28} p50 {:.2}  p99 {:.2}  p99.9 {:.2}  max {:.2} ms\n\
             {:<28} p50 {:.2}  p99 {:.2}  p99.9 {:.2}  max {:.2} ms\n\
             {:<28} {}\n{:<28} {}\n{:<28} {}\n{:<28} {}\n{:<28} {}\n",
            self.publishers,
            self.subscribers,
            self.size,
            self.seconds,
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
            "server CPU",
            opt(self.broker_cpu_percent, "% of a core"),
            "server peak RSS",
            opt(self.broker_peak_rss_mb, "MB"),
            "errors",
            self.errors,
            "deliveries missing",
            self.missing,
        )
    }
}
