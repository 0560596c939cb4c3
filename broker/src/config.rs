//! Broker configuration: a TOML file whose every field has a sensible default except the
//! key and roster, plus flag overrides. Loading also reads the key and roster files, so a
//! wrong path or a world-readable key is reported before anything listens.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::error::{Error, Result};

/// The TOML file, as written by an operator.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// UDP address to listen on (`127.0.0.1:4870`; port 0 picks one).
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// Directory of the sled store (created if missing).
    pub data_dir: PathBuf,
    /// The broker's secret key file (mode 0600).
    pub key: PathBuf,
    /// The signed roster file (CBOR, as written by `ewx roster sign`).
    pub roster: PathBuf,
    /// Resource limits.
    #[serde(default)]
    pub limits: Limits,
    /// Checkpoint cadence.
    #[serde(default)]
    pub checkpoint: CheckpointPolicy,
    /// How long messages are kept.
    #[serde(default)]
    pub retention: Retention,
    /// Case reminders.
    #[serde(default)]
    pub cases: CasePolicy,
    /// Replication across replicas (absent: one broker, the embedded default).
    #[serde(default)]
    pub cluster: Option<ClusterConfig>,
    /// The operations listener: metrics, health (absent: off).
    #[serde(default)]
    pub ops: Option<OpsConfig>,
    /// Where log times come from: the wall clock, or a simulated clock shared with an
    /// in-process test or demo (never from the file).
    #[serde(skip)]
    pub clock: ewx_net::Clock,
    /// The file it was read from (SIGHUP reads it again for `[cluster] replicas`).
    #[serde(skip)]
    pub source: Option<PathBuf>,
}

/// The operations listener (HTTP): `/metrics` for Prometheus, `/healthz`, `/readyz`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OpsConfig {
    /// TCP address (`127.0.0.1:9470`); any address other than loopback needs a token.
    pub listen: SocketAddr,
    /// A file (mode 0600) holding the bearer token every request must carry
    /// (`Authorization: Bearer <token>`); optional on loopback only.
    #[serde(default)]
    pub token_file: Option<PathBuf>,
    /// HTTPS: the certificate chain (PEM); with `tls_key`.
    #[serde(default)]
    pub tls_cert: Option<PathBuf>,
    /// HTTPS: the private key (PEM, mode 0600); with `tls_cert`.
    #[serde(default)]
    pub tls_key: Option<PathBuf>,
}

/// When the broker reminds the parties of a case that have not answered.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CasePolicy {
    /// Remind this many ms before each deadline (and again when it passes).
    pub reminders_ms: Vec<u64>,
}

impl Default for CasePolicy {
    /// T−6 h and T−1 h.
    fn default() -> Self {
        Self {
            reminders_ms: vec![6 * 3_600_000, 3_600_000],
        }
    }
}

/// A cluster: the replicas that share one log (Raft on openraft), each a broker-role node
/// of the roster with its own key. This broker is the replica named by its key file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    /// Every replica, this one included (3 is the intended size: one may fail).
    pub replicas: Vec<Replica>,
    /// A follower that hears no leader for a random time in this range (ms) starts an
    /// election: failover takes about this long.
    #[serde(default = "default_election_ms")]
    pub election_timeout_ms: [u64; 2],
    /// The leader's heartbeat interval (ms); well under the election timeout.
    #[serde(default = "default_heartbeat_ms")]
    pub heartbeat_ms: u64,
    /// Record a snapshot after this many applied Raft entries; the Raft log before it is
    /// then compacted but for the last `keep_entries` (the store is the snapshot: a
    /// replica further behind installs the leader's store, verified).
    #[serde(default = "default_snapshot_entries")]
    pub snapshot_entries: u64,
    /// Raft entries kept after a snapshot, for followers a little behind.
    #[serde(default = "default_keep_entries")]
    pub keep_entries: u64,
    /// This replica joins a running cluster: it never starts a new one, and waits until
    /// the leader adds it (`ewx-broker cluster add`). Set it on every replica added later,
    /// and on one whose data directory was lost.
    #[serde(default)]
    pub join: bool,
}

/// One replica of a cluster.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Replica {
    /// Its Raft id: stable for the replica's life, never reused.
    pub id: u64,
    /// Its roster node (role broker).
    pub node: ewx_proto::NodeId,
    /// Where it listens (clients and replicas alike).
    pub addr: SocketAddr,
}

/// A follower stands for election after the leader lease (openraft: the maximum) plus a
/// random timeout in the range: 0.8-1.0 s without a leader, well under the 1.5 s failover
/// target, and 6 heartbeats or more, so a busy leader is not deposed.
fn default_election_ms() -> [u64; 2] {
    [300, 500]
}

fn default_heartbeat_ms() -> u64 {
    80
}

/// An entry holds up to 64 requests: 20 000 entries are at least as many requests.
fn default_snapshot_entries() -> u64 {
    20_000
}

fn default_keep_entries() -> u64 {
    5_000
}

impl ClusterConfig {
    fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::Config(m));
        if self.replicas.is_empty() {
            return bad("cluster.replicas lists no replica".into());
        }
        for (i, r) in self.replicas.iter().enumerate() {
            if let Some(o) = self.replicas[..i]
                .iter()
                .find(|o| o.id == r.id || o.node == r.node || o.addr == r.addr)
            {
                return bad(format!(
                    "cluster.replicas: {} and {} share an id, node or address",
                    o.node, r.node
                ));
            }
        }
        let [lo, hi] = self.election_timeout_ms;
        if self.heartbeat_ms == 0 || lo <= self.heartbeat_ms * 2 || hi <= lo {
            return bad(format!(
                "cluster: need heartbeat_ms ≥ 1, election_timeout_ms [min, max] with min > 2 × heartbeat_ms ({}) and max > min (got [{lo}, {hi}])",
                self.heartbeat_ms
            ));
        }
        if self.snapshot_entries == 0 {
            return bad("cluster.snapshot_entries must be at least 1".into());
        }
        Ok(())
    }
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 4870))
}

/// Limits that keep one peer from exhausting the broker.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Concurrent connections; more are refused at once.
    pub max_connections: usize,
    /// Concurrent connections of one node.
    pub max_connections_per_node: usize,
    /// Open subscriptions per connection.
    pub max_subscriptions_per_connection: usize,
    /// Request bytes (frame bodies) the broker holds at once over all connections;
    /// further requests wait, and QUIC flow control holds their senders back.
    pub request_budget_bytes: usize,
    /// Largest frame (and envelope) in bytes.
    pub max_frame_bytes: usize,
    /// A connection silent this long is closed.
    pub idle_timeout_ms: u64,
    /// Concurrent request streams per connection.
    pub max_streams_per_connection: u32,
    /// Bytes a peer may have in flight on one stream (QUIC stream flow control).
    pub stream_window_bytes: u32,
    /// Bytes a peer may have in flight on one connection, all streams together.
    pub connection_window_bytes: u32,
    /// Allowed difference between a publisher's clock and the broker's.
    pub max_clock_skew_ms: u64,
    /// Committed messages queued per delivery lane; a lane whose queue is full catches
    /// up from the store instead (so a slow subscriber pins at most this many).
    pub live_buffer: usize,
    /// Requests queued for the writer; beyond this, request tasks wait (backpressure).
    pub write_queue: usize,
    /// How far (in seq units) the anti-replay floor trails a sender's highest accepted
    /// seq. `ewx` clients use microseconds, so the default is 60 seconds.
    pub replay_window: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_connections: 1024,
            max_connections_per_node: 16,
            max_subscriptions_per_connection: 16,
            request_budget_bytes: 256 << 20,
            max_frame_bytes: ewx_proto::frame::DEFAULT_MAX_FRAME,
            idle_timeout_ms: 30_000,
            max_streams_per_connection: 64,
            stream_window_bytes: 2 << 20,
            connection_window_bytes: 16 << 20,
            max_clock_skew_ms: 5 * 60_000,
            live_buffer: 1024,
            write_queue: 4096,
            replay_window: 60_000_000,
        }
    }
}

/// When the broker signs a checkpoint of the audit log.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CheckpointPolicy {
    /// After this many new audit entries…
    pub every_entries: u64,
    /// …or this many ms, whichever comes first (if anything is new).
    pub interval_ms: u64,
}

impl Default for CheckpointPolicy {
    fn default() -> Self {
        Self {
            every_entries: 1000,
            interval_ms: 10_000,
        }
    }
}

/// Message retention. The audit log is never pruned; only envelope bodies are.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Retention {
    /// Drop envelopes older than this many ms (unset: keep forever).
    pub max_age_ms: Option<u64>,
    /// Keep at most this many envelopes (unset: no limit).
    pub max_messages: Option<u64>,
}

impl Config {
    /// Parse TOML text; relative paths are taken relative to `base` (the file's folder).
    ///
    /// # Errors
    /// `Config` naming the field or syntax error.
    pub fn from_toml(text: &str, base: &Path) -> Result<Self> {
        let mut c: Config = toml::from_str(text).map_err(|e| Error::Config(e.to_string()))?;
        let ops_files = c.ops.as_mut().into_iter().flat_map(|o| {
            [&mut o.token_file, &mut o.tls_cert, &mut o.tls_key]
                .into_iter()
                .flatten()
        });
        for p in [&mut c.data_dir, &mut c.key, &mut c.roster]
            .into_iter()
            .chain(ops_files)
        {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        }
        c.validate()?;
        Ok(c)
    }

    /// Read a TOML file.
    ///
    /// # Errors
    /// `Config` if missing, unreadable or invalid.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => Error::Config(format!(
                "{}: no such file; pass the broker's TOML configuration with --config FILE \
                 (keys-example/broker.toml is a working example)",
                path.display()
            )),
            _ => Error::Config(format!("{}: cannot read it: {e}", path.display())),
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        let mut c = Self::from_toml(&text, base)
            .map_err(|e| Error::Config(format!("{}: {e}", path.display())))?;
        c.source = Some(path.into());
        Ok(c)
    }

    /// Check limits are usable.
    ///
    /// # Errors
    /// `Config` naming the bad value.
    pub fn validate(&self) -> Result<()> {
        let l = &self.limits;
        let bad = |m: &str| Err(Error::Config(m.into()));
        if l.max_connections == 0
            || l.max_connections_per_node == 0
            || l.max_subscriptions_per_connection == 0
        {
            return bad(
                "limits.max_connections, max_connections_per_node and max_subscriptions_per_connection must be at least 1",
            );
        }
        if l.request_budget_bytes < l.max_frame_bytes {
            return bad("limits.request_budget_bytes must hold at least one frame");
        }
        if !(1024..=64 << 20).contains(&l.max_frame_bytes) {
            return bad("limits.max_frame_bytes must be between 1024 and 67108864");
        }
        if (l.stream_window_bytes as usize) < l.max_frame_bytes + 1024
            || l.connection_window_bytes < l.stream_window_bytes
        {
            return bad(
                "limits.stream_window_bytes must hold one whole frame, and connection_window_bytes one stream window",
            );
        }
        if l.max_streams_per_connection == 0 || l.live_buffer == 0 || l.write_queue == 0 {
            return bad(
                "limits.max_streams_per_connection, live_buffer and write_queue must be at least 1",
            );
        }
        if let Some(ops) = &self.ops
            && !ops.listen.ip().is_loopback()
            && ops.token_file.is_none()
        {
            return Err(Error::Config(format!(
                "ops.listen {} is not a loopback address: set ops.token_file (a 0600 file holding a bearer token), or listen on 127.0.0.1",
                ops.listen
            )));
        }
        if let Some(ops) = &self.ops
            && ops.tls_cert.is_some() != ops.tls_key.is_some()
        {
            return bad("ops.tls_cert and ops.tls_key go together: set both for HTTPS, or neither");
        }
        if self.checkpoint.every_entries == 0 || self.checkpoint.interval_ms == 0 {
            return bad("checkpoint.every_entries and checkpoint.interval_ms must be at least 1");
        }
        if self.cases.reminders_ms.len() > 16
            || self
                .cases
                .reminders_ms
                .iter()
                .any(|&r| r == 0 || r > 30 * 86_400_000)
        {
            return bad(
                "cases.reminders_ms takes at most 16 offsets, each from 1 ms to 30 days before a deadline",
            );
        }
        if let Some(c) = &self.cluster {
            c.validate()?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_relative_paths() {
        let c = Config::from_toml(
            "data_dir = 'd'\nkey = 'k'\nroster = 'r'\n",
            Path::new("/etc/ewx"),
        )
        .unwrap();
        assert_eq!(c.data_dir, Path::new("/etc/ewx/d"));
        assert_eq!(c.listen.port(), 4870);
        assert_eq!(c.limits.max_frame_bytes, 1 << 20);
    }

    #[test]
    fn errors_name_the_problem() {
        let e = Config::from_toml("data_dir = 'd'\nkey = 'k'\n", Path::new(".")).unwrap_err();
        assert!(e.to_string().contains("roster"), "{e}");
        let e = Config::from_toml(
            "data_dir='d'\nkey='k'\nroster='r'\nlisten='nope'",
            Path::new("."),
        )
        .unwrap_err();
        assert!(
            e.to_string().contains("listen") || e.to_string().contains("address"),
            "{e}"
        );
        let e = Config::from_toml(
            "data_dir='d'\nkey='k'\nroster='r'\n[limits]\nmax_connections=0",
            Path::new("."),
        )
        .unwrap_err();
        assert!(e.to_string().contains("max_connections"), "{e}");
        let e = Config::from_toml("data_dir='d'\nkey='k'\nroster='r'\ntypo=1", Path::new("."))
            .unwrap_err();
        assert!(e.to_string().contains("typo"), "{e}");
    }
}
