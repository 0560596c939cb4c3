//! The load loop, written once for every system: connect the publishers and
//! subscribers a [`Peer`] offers, publish on a schedule (open or closed loop), time
//! every ack and delivery in HDR histograms, and read the server's CPU and peak memory.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use tokio::sync::Mutex;

use super::{BenchReport, Deliveries, Load, Peer, PeerError, Publish, Publisher};

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

/// Run `load` against `peer` and measure; `server_pids` let it read the server's CPU and
/// memory (summed over the processes: a cluster's replicas), and `progress` is called every second with (elapsed s, published, delivered).
///
/// # Errors
/// If a connection cannot be made.
pub async fn measure(
    load: &Load,
    peer: &dyn Peer,
    server_pids: &[u32],
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
    let tally = Tally::default();
    // subscribers stop only when told: `Deliveries::next` is never cancelled mid-run
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let mut subs = Vec::new();
    for i in 0..load.subscribers {
        let deliveries = peer.subscriber(i).await?;
        subs.push(tokio::spawn(tally.clone().subscriber(
            deliveries,
            epoch,
            stopped.clone(),
        )));
    }
    let cpu0 = total_cpu_ticks(server_pids);
    let threads0 = all_thread_ticks(server_pids);
    let started = Instant::now();
    let schedule = Schedule {
        epoch,
        deadline: started + Duration::from_secs(load.seconds),
        per_pub_rate: load
            .rate
            .map(|r| (r as f64 / load.publishers as f64).max(0.001)),
    };
    let lanes = if schedule.per_pub_rate.is_some() {
        1
    } else {
        load.in_flight.max(1)
    };
    let mut pubs = Vec::new();
    for publisher in publishers {
        let publisher = Arc::new(publisher);
        let next = Arc::new(AtomicU64::new(0));
        for _ in 0..lanes {
            let lane = tally
                .clone()
                .publish_lane(publisher.clone(), next.clone(), schedule);
            pubs.push(tokio::spawn(lane));
        }
    }
    let backlog = tally
        .wait_with_progress(pubs, started, load.subscribers as u64, progress)
        .await;
    let elapsed = started.elapsed().as_secs_f64();
    let cpu1 = total_cpu_ticks(server_pids);
    let threads1 = all_thread_ticks(server_pids);
    let (published_at_cpu1, delivered_at_cpu1) = (
        tally.published.load(Ordering::Relaxed),
        tally.delivered.load(Ordering::Relaxed),
    );
    // let the last deliveries arrive, then stop the subscribers
    let expected = tally.published.load(Ordering::Relaxed) * load.subscribers as u64;
    let drain = Instant::now();
    while tally.delivered.load(Ordering::Relaxed) < expected
        && drain.elapsed() < Duration::from_secs(10)
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = stop.send(true);
    for s in subs {
        let _ = s.await;
    }
    // USER_HZ on Linux: 100 ticks a second
    let cpu_s = cpu0.zip(cpu1).map(|(a, b)| (b - a) as f64 / 100.0);
    let per = |n: u64| cpu_s.filter(|_| n > 0).map(|s| s * 1e6 / n as f64);
    let mut report = tally.report(load, elapsed, expected).await;
    report.broker_cpu_percent = cpu_s.map(|s| s / elapsed * 100.0);
    report.broker_cpu_us_per_publish = per(published_at_cpu1);
    report.broker_cpu_us_per_delivery = per(delivered_at_cpu1);
    if published_at_cpu1 > 0 {
        report.broker_cpu_us_by_thread = threads1
            .into_iter()
            .map(|(name, t1)| {
                let t0 = threads0.get(&name).copied().unwrap_or(0);
                let us = t1.saturating_sub(t0) as f64 * 1e4 / published_at_cpu1 as f64;
                (name, (us * 10.0).round() / 10.0)
            })
            .filter(|(_, us)| *us > 0.0)
            .collect();
    }
    report.backlog_max = backlog.iter().copied().max().unwrap_or(0);
    report.backlog = backlog;
    report.broker_peak_rss_mb = server_pids
        .iter()
        .filter_map(|&p| peak_rss_kb(p))
        .max()
        .map(|kb| kb as f64 / 1024.0);
    Ok(report)
}

/// When publishers send: until `deadline`, at `per_pub_rate` each (open loop) or as fast
/// as acks return (closed loop); send times are µs since `epoch`.
#[derive(Debug, Clone, Copy)]
struct Schedule {
    epoch: Instant,
    deadline: Instant,
    per_pub_rate: Option<f64>,
}

/// The run's counters and latency histograms, shared by every task.
#[derive(Debug, Clone)]
struct Tally {
    published: Arc<AtomicU64>,
    delivered: Arc<AtomicU64>,
    errors: Arc<AtomicU64>,
    ack: Arc<Mutex<Histogram<u64>>>,
    deliver: Arc<Mutex<Histogram<u64>>>,
    flash: Arc<Mutex<Histogram<u64>>>,
    routine: Arc<Mutex<Histogram<u64>>>,
    flash_ack: Arc<Mutex<Histogram<u64>>>,
}

impl Default for Tally {
    fn default() -> Self {
        Self {
            published: Arc::default(),
            delivered: Arc::default(),
            errors: Arc::default(),
            ack: Arc::new(Mutex::new(hist())),
            deliver: Arc::new(Mutex::new(hist())),
            flash: Arc::new(Mutex::new(hist())),
            routine: Arc::new(Mutex::new(hist())),
            flash_ack: Arc::new(Mutex::new(hist())),
        }
    }
}

impl Tally {
    /// Count a publish's outcome; the ack latency in µs to record if it succeeded.
    fn acked(&self, ok: bool, sent: Instant) -> Option<u64> {
        if ok {
            self.published.fetch_add(1, Ordering::Relaxed);
            Some(sent.elapsed().as_micros().max(1) as u64)
        } else {
            self.errors.fetch_add(1, Ordering::Relaxed);
            None
        }
    }

    /// One subscriber: time every delivery until told to stop.
    async fn subscriber(
        self,
        mut deliveries: Box<dyn Deliveries>,
        epoch: Instant,
        mut stopped: tokio::sync::watch::Receiver<bool>,
    ) {
        let (mut local, mut local_flash, mut local_routine) = (hist(), hist(), hist());
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
                } else {
                    let _ = local_routine.record(lat);
                }
            }
            self.delivered.fetch_add(1, Ordering::Relaxed);
        }
        let _ = self.deliver.lock().await.add(&local);
        let _ = self.flash.lock().await.add(&local_flash);
        let _ = self.routine.lock().await.add(&local_routine);
    }

    /// One publishing lane of a publisher (its lanes share `next`: one schedule, one
    /// limit).
    async fn publish_lane(self, publisher: Arc<Publisher>, next: Arc<AtomicU64>, s: Schedule) {
        let (mut local, mut local_flash) = (hist(), hist());
        let start = Instant::now();
        while Instant::now() < s.deadline {
            let n = next.fetch_add(1, Ordering::Relaxed);
            if publisher.limit.is_some_and(|l| n >= l) {
                break;
            }
            if let Some(rate) = s.per_pub_rate {
                // open loop: send on schedule whatever the latency
                let due = start + Duration::from_secs_f64(n as f64 / rate);
                tokio::time::sleep_until(due.into()).await;
                if Instant::now() >= s.deadline {
                    break;
                }
            }
            let t = Instant::now();
            let flash = super::is_flash(n, publisher.flash_percent);
            let task = (publisher.publish)(Publish {
                n,
                sent_us: micros(s.epoch),
            });
            if s.per_pub_rate.is_some() {
                let tally = self.clone();
                tokio::spawn(async move {
                    if let Some(lat) = tally.acked(task.await.is_ok(), t) {
                        let _ = tally.ack.lock().await.record(lat);
                        if flash {
                            let _ = tally.flash_ack.lock().await.record(lat);
                        }
                    }
                });
            } else if let Some(lat) = self.acked(task.await.is_ok(), t) {
                let _ = local.record(lat);
                if flash {
                    let _ = local_flash.record(lat);
                }
            }
        }
        let _ = self.ack.lock().await.add(&local);
        let _ = self.flash_ack.lock().await.add(&local_flash);
    }

    /// Wait for every publishing lane, reporting progress every second; returns the
    /// backlog (deliveries owed to `subscribers` but not yet received) at each second.
    async fn wait_with_progress(
        &self,
        pubs: Vec<tokio::task::JoinHandle<()>>,
        started: Instant,
        subscribers: u64,
        progress: &(dyn Fn(u64, u64, u64) + Sync),
    ) -> Vec<u64> {
        let mut backlog = Vec::new();
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
                _ = ticks.tick() => {
                    let published = self.published.load(Ordering::Relaxed);
                    let delivered = self.delivered.load(Ordering::Relaxed);
                    backlog.push((published * subscribers).saturating_sub(delivered));
                    progress(started.elapsed().as_secs(), published, delivered);
                }
            }
        }
        backlog
    }

    /// The figures of a run of `elapsed` seconds (server CPU and memory left to fill).
    async fn report(&self, load: &Load, elapsed: f64, expected: u64) -> BenchReport {
        let flash_ack = self.flash_ack.lock().await.clone();
        let (ack, del, flash, routine) = (
            self.ack.lock().await.clone(),
            self.deliver.lock().await.clone(),
            self.flash.lock().await.clone(),
            self.routine.lock().await.clone(),
        );
        let delivered = self.delivered.load(Ordering::Relaxed);
        let (pubd, deld) = (
            self.published.load(Ordering::Relaxed) as f64,
            delivered as f64,
        );
        let mb = load.size as f64 / 1e6;
        BenchReport {
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
            flash_ack_p99_ms: (!flash_ack.is_empty()).then(|| ms(&flash_ack, 0.99)),
            flash_deliver_p99_ms: (!flash.is_empty()).then(|| ms(&flash, 0.99)),
            routine_deliver_p99_ms: (!flash.is_empty() && !routine.is_empty())
                .then(|| ms(&routine, 0.99)),
            broker_cpu_percent: None,
            broker_cpu_us_per_publish: None,
            broker_cpu_us_per_delivery: None,
            backlog: Vec::new(),
            backlog_max: 0,
            broker_cpu_us_by_thread: std::collections::BTreeMap::new(),
            broker_peak_rss_mb: None,
            errors: self.errors.load(Ordering::Relaxed),
            missing: expected.saturating_sub(delivered),
        }
    }
}

/// utime + stime of a process, in clock ticks (Linux `/proc/PID/stat`).
/// CPU ticks of every process (`None` if there are none, or one cannot be read).
fn total_cpu_ticks(pids: &[u32]) -> Option<u64> {
    if pids.is_empty() {
        return None;
    }
    pids.iter().map(|&p| cpu_ticks(p)).sum()
}

/// CPU ticks by thread name, summed over the processes.
fn all_thread_ticks(pids: &[u32]) -> std::collections::BTreeMap<String, u64> {
    let mut all = std::collections::BTreeMap::new();
    for &p in pids {
        for (name, t) in thread_ticks(p) {
            *all.entry(name).or_default() += t;
        }
    }
    all
}

fn cpu_ticks(pid: u32) -> Option<u64> {
    stat_ticks(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// utime + stime of each thread of a process, in clock ticks, summed by thread name with
/// any trailing number dropped (`sled-io-3` counts as `sled-io`): the CPU by stage.
fn thread_ticks(pid: u32) -> std::collections::BTreeMap<String, u64> {
    let mut out = std::collections::BTreeMap::new();
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return out;
    };
    for t in tasks.flatten() {
        let comm = std::fs::read_to_string(t.path().join("comm")).unwrap_or_default();
        let name = comm
            .trim()
            .trim_end_matches(|c: char| c.is_ascii_digit() || c == '-');
        let stat = std::fs::read_to_string(t.path().join("stat")).unwrap_or_default();
        if let Some(ticks) = stat_ticks(&stat) {
            *out.entry(name.to_string()).or_insert(0) += ticks;
        }
    }
    out
}

fn stat_ticks(stat: &str) -> Option<u64> {
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
