//! The load loop of `ewx bench` (client/src/bench.rs), with the ewx client swapped for a
//! peer's: the same closed loop (`in_flight` lanes per publisher connection, each awaiting
//! its durable ack before the next publish) or open loop (`--rate`), the same histograms
//! (1 µs .. 60 s, 3 significant digits), the same drain rule (up to 10 s after publishing
//! stops), the same server CPU and peak-RSS readings, and the JSON field names of
//! `ewx bench --json` (less `recipients` and `broker_only`, which only ewx has).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use bytes::Bytes;
use futures::StreamExt;
use futures::future::BoxFuture;
use futures::stream::BoxStream;
use hdrhistogram::Histogram;
use tokio::sync::Mutex;

/// What to run: the flags of `ewx bench` that the peers share.
#[derive(Debug, Clone)]
pub struct Config {
    /// How long to publish.
    pub seconds: u64,
    /// Publisher connections.
    pub publishers: usize,
    /// Subscriber connections.
    pub subscribers: usize,
    /// Payload bytes per message (at least 8: the send timestamp).
    pub size: usize,
    /// Total messages per second (open loop); `None`: as fast as acks come back.
    pub rate: Option<u64>,
    /// Publishes in flight per publisher (closed loop).
    pub in_flight: usize,
}

/// Publish one payload and resolve once the peer has acknowledged it durably.
pub type PublishFn = Arc<dyn Fn(Bytes) -> BoxFuture<'static, Result<()>> + Send + Sync>;

/// Every message a subscriber receives, as the send timestamp (µs since the epoch) it
/// carries. Must be cancel safe under `next()`: the state lives in the stream.
pub type Deliveries = BoxStream<'static, Result<u64>>;

/// A peer under test: it makes publisher and subscriber connections.
pub trait Peer {
    /// A new publisher connection.
    fn publisher(&self) -> BoxFuture<'_, Result<PublishFn>>;
    /// A new subscriber connection, already subscribed so it sees everything published
    /// after this resolves.
    fn subscriber(&self, index: usize) -> BoxFuture<'_, Result<Deliveries>>;
}

/// Results, with the field names of `ewx bench --json` (see the module comment).
#[derive(Debug, Clone, serde::Serialize)]
pub struct Report {
    pub seconds: f64,
    pub publishers: usize,
    pub subscribers: usize,
    pub size: usize,
    pub published_per_s: f64,
    pub delivered_per_s: f64,
    pub published_mb_per_s: f64,
    pub delivered_mb_per_s: f64,
    pub ack_p50_ms: f64,
    pub ack_p99_ms: f64,
    pub ack_p999_ms: f64,
    pub ack_max_ms: f64,
    pub deliver_p50_ms: f64,
    pub deliver_p99_ms: f64,
    pub deliver_p999_ms: f64,
    pub deliver_max_ms: f64,
    /// The peers have no precedence: always `null`.
    pub flash_deliver_p99_ms: Option<f64>,
    pub broker_cpu_percent: Option<f64>,
    pub broker_peak_rss_mb: Option<f64>,
    pub errors: u64,
    /// Deliveries expected (published × subscribers) but not received when the run ended.
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

/// The payload: the send time in µs since `epoch` (little endian), then padding.
pub fn payload(size: usize, epoch: Instant) -> Bytes {
    let mut v = vec![b'x'; size.max(8)];
    v[..8].copy_from_slice(&micros(epoch).to_le_bytes());
    Bytes::from(v)
}

/// The send timestamp of a payload made by [`payload`].
pub fn stamp(payload: &[u8]) -> Result<u64> {
    match payload.get(..8) {
        Some(b) => Ok(u64::from_le_bytes(b.try_into()?)),
        None => bail!("a {}-byte payload has no timestamp", payload.len()),
    }
}

/// Run the load and measure; `server_pid` lets it read the server's CPU and memory, and
/// `progress` is called every second with (elapsed s, published, delivered).
///
/// # Errors
/// If the connections cannot be made.
pub async fn run(
    cfg: Config,
    peer: &dyn Peer,
    epoch: Instant,
    server_pid: Option<u32>,
    progress: &(dyn Fn(u64, u64, u64) + Sync),
) -> Result<Report> {
    if cfg.publishers == 0 || cfg.seconds == 0 {
        bail!("--publishers and --seconds must be at least 1");
    }
    // publishers connect first, then subscribers, as in ewx bench
    let mut publishers = Vec::new();
    for _ in 0..cfg.publishers {
        publishers.push(peer.publisher().await?);
    }
    let published = Arc::new(AtomicU64::new(0));
    let delivered = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let ack_h = Arc::new(Mutex::new(hist()));
    let deliver_h = Arc::new(Mutex::new(hist()));
    let stop = Arc::new(AtomicBool::new(false));

    let mut subs = Vec::new();
    for i in 0..cfg.subscribers {
        let mut sub = peer.subscriber(i).await?;
        let (delivered, deliver_h, stop) = (delivered.clone(), deliver_h.clone(), stop.clone());
        subs.push(tokio::spawn(async move {
            let mut local = hist();
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
                let Some(Ok(sent)) = d else { break };
                let lat = micros(epoch).saturating_sub(sent).max(1);
                let _ = local.record(lat);
                delivered.fetch_add(1, Ordering::Relaxed);
            }
            let _ = deliver_h.lock().await.add(&local);
        }));
    }

    let cpu0 = server_pid.and_then(cpu_ticks);
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
    for publish in publishers {
        let next = Arc::new(AtomicU64::new(0));
        for _lane in 0..lanes {
            let (publish, next, published, errors, ack_h) = (
                publish.clone(),
                next.clone(),
                published.clone(),
                errors.clone(),
                ack_h.clone(),
            );
            let size = cfg.size;
            pubs.push(tokio::spawn(async move {
                let mut local = hist();
                let start = Instant::now();
                while Instant::now() < deadline {
                    // one counter per publisher: its lanes share the schedule
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
                    let task = publish(payload(size, epoch));
                    if per_pub_rate.is_some() {
                        let (published, errors, ack_h) =
                            (published.clone(), errors.clone(), ack_h.clone());
                        tokio::spawn(async move {
                            match task.await {
                                Ok(()) => {
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
                            Ok(()) => {
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
    let cpu1 = server_pid.and_then(cpu_ticks);
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
    let (ack, del) = (ack_h.lock().await.clone(), deliver_h.lock().await.clone());
    let (pubd, deld) = (
        published.load(Ordering::Relaxed) as f64,
        delivered.load(Ordering::Relaxed) as f64,
    );
    let mb = cfg.size as f64 / 1e6;
    let ticks_per_s = 100.0; // USER_HZ on Linux
    Ok(Report {
        seconds: elapsed,
        publishers: cfg.publishers,
        subscribers: cfg.subscribers,
        size: cfg.size,
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
        flash_deliver_p99_ms: None,
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

impl Report {
    /// A table for people.
    pub fn table(&self, peer: &str) -> String {
        let opt =
            |v: Option<f64>, unit: &str| v.map_or("-".to_string(), |v| format!("{v:.1} {unit}"));
        format!(
            "{peer}: {} publishers, {} subscribers, {} B payloads, {:.1} s\n\
             {:<28} {:>12.0} msg/s {:>8.2} MB/s\n\
             {:<28} {:>12.0} msg/s {:>8.2} MB/s\n\
             {:<28} p50 {:.2}  p99 {:.2}  p99.9 {:.2}  max {:.2} ms\n\
             {:<28} p50 {:.2}  p99 {:.2}  p99.9 {:.2}  max {:.2} ms\n\
             {:<28} {}\n{:<28} {}\n{:<28} {}\n{:<28} {}\n",
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_carries_its_timestamp() -> Result<()> {
        let epoch = Instant::now() - Duration::from_millis(5);
        let p = payload(1024, epoch);
        assert_eq!(p.len(), 1024);
        assert!(stamp(&p)? >= 5_000);
        assert_eq!(payload(3, epoch).len(), 8);
        assert!(stamp(b"short").is_err());
        Ok(())
    }
}
