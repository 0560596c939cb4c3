//! The broker's metrics, in Prometheus/OpenMetrics text through `prometheus-client`.
//! Counters are bumped where things happen (an atomic add); levels — log and audit size,
//! connections, the roster, a replica's place — are read when Prometheus scrapes, so the
//! hot path pays for nothing it does not already do. No label carries a topic or anything
//! from a payload: results, reject reasons and roster node names only.

use std::sync::atomic::AtomicU64;

use ewx_proto::frame::RejectReason;
use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// A reject reason as a label value (its name; `none` for an accepted publish).
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq)]
pub struct Why(pub Option<RejectReason>);

impl EncodeLabelValue for Why {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> Result<(), std::fmt::Error> {
        use std::fmt::Write;
        match self.0 {
            Some(r) => write!(encoder, "{r:?}"),
            None => encoder.write_str("none"),
        }
    }
}

/// A publish's outcome.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Outcome {
    /// `accepted` or `rejected`.
    pub result: &'static str,
    /// The reject reason (`none` when accepted).
    pub reason: Why,
}

/// A rejection of any request.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Reason {
    /// The reject reason.
    pub reason: Why,
}

/// Where a case stands.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CaseStatus {
    /// `open`, `fired`, `adopted` or `withdrawn`.
    pub status: &'static str,
}

/// A roster node.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Node {
    /// Its roster name.
    pub node: String,
}

type Level = Gauge<u64, AtomicU64>;

/// The writer's commits: messages per commit, time per commit and per fsync.
#[derive(Debug, Clone)]
pub struct Commits {
    size: Histogram,
    seconds: Histogram,
    fsync_seconds: Histogram,
}

impl Default for Commits {
    fn default() -> Self {
        Self {
            // 1 … 4096 messages
            size: Histogram::new(exponential_buckets(1.0, 2.0, 13)),
            // 50 µs … ≈ 3.3 s
            seconds: Histogram::new(exponential_buckets(0.000_05, 2.0, 17)),
            fsync_seconds: Histogram::new(exponential_buckets(0.000_05, 2.0, 17)),
        }
    }
}

impl Commits {
    /// One store commit of `messages`, taking `took`, of which `fsync` syncing (a
    /// replica's commits are not synced on their own: its Raft log is).
    pub fn observe(
        &self,
        messages: usize,
        took: std::time::Duration,
        fsync: Option<std::time::Duration>,
    ) {
        self.size.observe(messages as f64);
        self.seconds.observe(took.as_secs_f64());
        if let Some(f) = fsync.filter(|f| !f.is_zero()) {
            self.fsync_seconds.observe(f.as_secs_f64());
        }
    }

    fn register(&self, registry: &mut Registry) {
        registry.register(
            "commit_messages",
            "Messages per store commit (group commit size)",
            self.size.clone(),
        );
        registry.register(
            "commit_seconds",
            "Time per store commit, fsync included",
            self.seconds.clone(),
        );
        registry.register(
            "fsync_seconds",
            "Time per store flush and fdatasync",
            self.fsync_seconds.clone(),
        );
    }
}

/// Every metric the broker exports.
#[derive(Debug, Default)]
pub struct Metrics {
    publishes: Family<Outcome, Counter>,
    rejections: Family<Reason, Counter>,
    deliveries: Counter,
    connections: Family<Node, Level>,
    lanes: Family<Node, Level>,
    lanes_owed: Family<Node, Level>,
    cases: Family<CaseStatus, Level>,
    overdue: Level,
    checkpoint_size: Level,
    checkpoint_time: Level,
    checkpoint_witnesses: Level,
    checkpoint_replicas: Level,
    log_next_index: Level,
    audit_entries: Level,
    roster_version: Level,
    replica_leader: Level,
    replica_term: Level,
    /// The reasons rejections have had so far (for the dashboard, which cannot list a
    /// `Family`'s labels).
    reasons: std::sync::Mutex<Vec<RejectReason>>,
}

/// Totals so far, for the dashboard's history.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Totals {
    /// Publishes accepted.
    pub accepted: u64,
    /// Deliveries written.
    pub delivered: u64,
    /// Rejections of any request, by reason (its name).
    pub rejected: Vec<(String, u64)>,
}

/// What a scrape reads from the broker.
#[derive(Debug)]
pub struct Levels {
    /// Next log index (the log's size).
    pub next_index: u64,
    /// Audit entries.
    pub audit_entries: u64,
    /// Roster version in force.
    pub roster_version: u64,
    /// Open connections per node.
    pub connections: Vec<(String, u64)>,
    /// Per subscribing node: open delivery lanes, messages they owe.
    pub lanes: Vec<(String, u64, u64)>,
    /// On a replica: (leads, term).
    pub replica: Option<(bool, u64)>,
    /// The writer's commit histograms.
    pub commits: Commits,
    /// The newest checkpoint: (size, log time ms, witness co-signatures, replica
    /// signatures).
    pub checkpoint: Option<(u64, u64, u64, u64)>,
    /// Cases by status and deadlines passed with parties missing (`None`: the writer
    /// did not answer in time).
    pub cases: Option<(Vec<(&'static str, u64)>, u64)>,
}

impl Metrics {
    /// A publish answered: accepted, or rejected for `reason`.
    pub fn published(&self, rejected: Option<RejectReason>) {
        let result = if rejected.is_some() {
            "rejected"
        } else {
            "accepted"
        };
        let outcome = Outcome {
            result,
            reason: Why(rejected),
        };
        self.publishes.get_or_create(&outcome).inc();
    }

    /// `n` messages written to subscribers' delivery streams.
    pub fn delivered(&self, n: u64) {
        self.deliveries.inc_by(n);
    }

    /// A request rejected (any kind), for `reason`.
    pub fn rejected(&self, reason: RejectReason) {
        let mut reasons = self.reasons.lock().unwrap_or_else(|p| p.into_inner());
        if !reasons.contains(&reason) {
            reasons.push(reason);
        }
        drop(reasons);
        self.rejections
            .get_or_create(&Reason {
                reason: Why(Some(reason)),
            })
            .inc();
    }

    /// Publishes accepted, deliveries and rejections by reason, so far.
    pub fn totals(&self) -> Totals {
        let accepted = Outcome {
            result: "accepted",
            reason: Why(None),
        };
        let reasons = self
            .reasons
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        Totals {
            accepted: self.publishes.get(&accepted).map_or(0, |c| c.get()),
            delivered: self.deliveries.get(),
            rejected: reasons
                .into_iter()
                .map(|r| {
                    let n = self
                        .rejections
                        .get(&Reason {
                            reason: Why(Some(r)),
                        })
                        .map_or(0, |c| c.get());
                    (format!("{r:?}"), n)
                })
                .collect(),
        }
    }

    /// The OpenMetrics text of every metric, with the levels as read now.
    ///
    /// # Errors
    /// If encoding fails (it writes to a string: it does not).
    pub fn encode(&self, levels: &Levels) -> Result<String, std::fmt::Error> {
        self.log_next_index.set(levels.next_index);
        self.audit_entries.set(levels.audit_entries);
        self.roster_version.set(levels.roster_version);
        self.connections.clear();
        for (node, n) in &levels.connections {
            self.connections
                .get_or_create(&Node { node: node.clone() })
                .set(*n);
        }
        self.lanes.clear();
        self.lanes_owed.clear();
        for (node, lanes, owed) in &levels.lanes {
            let n = Node { node: node.clone() };
            self.lanes.get_or_create(&n).set(*lanes);
            self.lanes_owed.get_or_create(&n).set(*owed);
        }
        let mut registry = Registry::with_prefix("ewx");
        registry.register(
            "publishes",
            "Publish requests answered, by result and reject reason",
            self.publishes.clone(),
        );
        registry.register(
            "rejections",
            "Requests of any kind rejected, by reason (each also logged)",
            self.rejections.clone(),
        );
        registry.register(
            "deliveries",
            "Messages written to subscribers' delivery streams",
            self.deliveries.clone(),
        );
        registry.register(
            "connections",
            "Open client connections, by roster node",
            self.connections.clone(),
        );
        registry.register(
            "lanes",
            "Open delivery lanes (a subscription has one per precedence), by node",
            self.lanes.clone(),
        );
        registry.register(
            "lanes_owed_messages",
            "Messages the open lanes of a node still owe it (its delivery lag)",
            self.lanes_owed.clone(),
        );
        registry.register(
            "log_next_index",
            "Log index the next accepted message gets (messages ever logged)",
            self.log_next_index.clone(),
        );
        registry.register(
            "audit_entries",
            "Entries in the hash-chained audit log",
            self.audit_entries.clone(),
        );
        registry.register(
            "roster_version",
            "Version of the roster in force",
            self.roster_version.clone(),
        );
        levels.commits.register(&mut registry);
        if let Some((size, time_ms, witnesses, replicas)) = levels.checkpoint {
            self.checkpoint_size.set(size);
            self.checkpoint_time.set(time_ms / 1000);
            self.checkpoint_witnesses.set(witnesses);
            self.checkpoint_replicas.set(replicas);
            registry.register(
                "checkpoint_entries",
                "Audit entries the newest signed checkpoint covers",
                self.checkpoint_size.clone(),
            );
            registry.register(
                "checkpoint_timestamp_seconds",
                "Log time of the newest signed checkpoint (Unix seconds)",
                self.checkpoint_time.clone(),
            );
            registry.register(
                "checkpoint_witness_cosignatures",
                "Witness co-signatures on the newest checkpoint",
                self.checkpoint_witnesses.clone(),
            );
            registry.register(
                "checkpoint_replica_signatures",
                "Replica signatures on the newest checkpoint (a cluster)",
                self.checkpoint_replicas.clone(),
            );
        }
        if let Some((by_status, overdue)) = &levels.cases {
            for (status, n) in by_status {
                self.cases.get_or_create(&CaseStatus { status }).set(*n);
            }
            self.overdue.set(*overdue);
            registry.register(
                "cases",
                "Cases (consultations, snapbacks, exercises, attributions) by status",
                self.cases.clone(),
            );
            registry.register(
                "case_deadlines_overdue",
                "Case deadlines passed with a party that has not answered",
                self.overdue.clone(),
            );
        }
        if let Some((leads, term)) = levels.replica {
            self.replica_leader.set(u64::from(leads));
            self.replica_term.set(term);
            registry.register(
                "replica_leader",
                "1 while this replica leads the cluster",
                self.replica_leader.clone(),
            );
            registry.register(
                "replica_term",
                "Raft term this replica is in",
                self.replica_term.clone(),
            );
        }
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &registry)?;
        Ok(out)
    }
}
