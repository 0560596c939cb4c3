//! `ewx bench`: load a broker with P publishers and S subscribers over real QUIC and
//! measure throughput and latency (publish→ack, publish→deliver) with HDR histograms, and
//! the server process's CPU and peak memory. The load loop is written once, against the
//! [`Peer`] trait: ewx is one peer ([`ewx`]); the unshipped comparison tool in
//! `tests/compare` plugs NATS JetStream and Redis streams into the same loop, so every
//! system is measured by the same code.

pub mod ewx;
mod measure;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

pub use ewx::{BenchConfig, PRESEAL_PER_S, run};
pub use measure::measure;

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

/// Whether message number `n` of a publisher is FLASH at `percent` FLASH: the same
/// messages in every run.
pub fn is_flash(n: u64, percent: u8) -> bool {
    n % 100 < u64::from(percent)
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
    /// Share of its messages sent as FLASH, in percent ([`is_flash`] says which).
    pub flash_percent: u8,
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
    /// FLASH publish→ack p99, ms (if any FLASH was sent): the broker's part of the
    /// FLASH path, without the subscribers' side.
    pub flash_ack_p99_ms: Option<f64>,
    /// FLASH publish→deliver p99, ms (if any FLASH was sent).
    pub flash_deliver_p99_ms: Option<f64>,
    /// The other deliveries' p99, ms (when FLASH was sent too).
    pub routine_deliver_p99_ms: Option<f64>,
    /// Server CPU over the run, percent of one core (`None` for an external server).
    pub broker_cpu_percent: Option<f64>,
    /// Server CPU while publishing, µs per acknowledged publish (all its work: with
    /// subscribers it includes their deliveries).
    pub broker_cpu_us_per_publish: Option<f64>,
    /// Server CPU while publishing, µs per delivery (all its work, over the deliveries
    /// made in that time).
    pub broker_cpu_us_per_delivery: Option<f64>,
    /// Deliveries owed but not yet received (published × subscribers − delivered), at
    /// each second of the run.
    pub backlog: Vec<u64>,
    /// The largest of `backlog`.
    pub backlog_max: u64,
    /// Server CPU while publishing by thread (name without its number), µs per
    /// acknowledged publish: the profile by stage (`tokio-rt-worker`: network, decoding
    /// and checks; `ewx-verify`: signatures; `ewx-writer`: sequencing, the sled
    /// transaction and sync; `sled-io`: sled's background writes; `ewx-fanout`: routing).
    pub broker_cpu_us_by_thread: std::collections::BTreeMap<String, f64>,
    /// Server peak resident memory, MB.
    pub broker_peak_rss_mb: Option<f64>,
    /// Publishes that failed.
    pub errors: u64,
    /// Deliveries expected but not received when the run ended.
    pub missing: u64,
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
             {:<28} {} (other deliveries p99 {}; FLASH publish -> ack p99 {})\n\
             {:<28} {} ({} / publish, {} / delivery)\n\
             {:<28} {}\n{:<28} {}\n{:<28} {}\n{:<28} max {} ({})\n",
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
            opt(self.routine_deliver_p99_ms, "ms"),
            opt(self.flash_ack_p99_ms, "ms"),
            "server CPU",
            opt(self.broker_cpu_percent, "% of a core"),
            opt(self.broker_cpu_us_per_publish, "µs"),
            opt(self.broker_cpu_us_per_delivery, "µs"),
            "server peak RSS",
            opt(self.broker_peak_rss_mb, "MB"),
            "errors",
            self.errors,
            "deliveries missing",
            self.missing,
            "backlog (owed deliveries)",
            self.backlog_max,
            self.backlog
                .iter()
                .map(u64::to_string)
                .collect::<Vec<_>>()
                .join(" "),
        ) + &self.by_thread()
    }

    /// The CPU-by-thread line, if measured.
    fn by_thread(&self) -> String {
        if self.broker_cpu_us_by_thread.is_empty() {
            return String::new();
        }
        let parts: Vec<String> = self
            .broker_cpu_us_by_thread
            .iter()
            .map(|(t, us)| format!("{t} {us:.1}"))
            .collect();
        format!(
            "{:<28} {} (µs / publish)\n",
            "server CPU by thread",
            parts.join(", ")
        )
    }
}
