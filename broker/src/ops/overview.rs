//! What the ops dashboard shows, as one JSON document (`/api/overview`): the roster's
//! partners with their connections and delivery lag, rejections by reason over the last
//! half hour, the newest checkpoint and who co-signed it, the running cases with their
//! next deadline, and storage use. Metadata only: the broker cannot read contents, and
//! nothing here is taken from a payload.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

use serde::Serialize;

use super::metrics::Totals;
use crate::log::sequencer::{BoardCase, CaseAnswer, CaseQuery};
use crate::net::Shared;

/// How often the history takes a sample…
pub(super) const SAMPLE_EVERY: Duration = Duration::from_secs(10);
/// …and how many it keeps (half an hour).
const SAMPLES: usize = 180;
/// Most cases the dashboard lists.
const BOARD_CASES: usize = 50;

/// The dashboard's document.
#[derive(Debug, Serialize)]
pub struct Overview {
    /// The broker's clock (log time), for the countdowns.
    pub now_ms: u64,
    /// The broker itself.
    pub broker: BrokerView,
    /// Every roster node but brokers.
    pub partners: Vec<PartnerView>,
    /// Totals and their history.
    pub traffic: Traffic,
    /// The newest checkpoint.
    pub checkpoint: Option<CheckpointView>,
    /// Running cases, upcoming deadlines first (`None`: the writer was busy).
    pub cases: Option<Vec<CaseView>>,
    /// Running cases in all (the list shows at most 50).
    pub cases_total: Option<u64>,
    /// Disk use (`None` until first measured).
    pub storage: Option<Storage>,
}

/// The broker.
#[derive(Debug, Serialize)]
pub struct BrokerView {
    /// ewx's version.
    pub version: &'static str,
    /// Why it cannot serve, if it cannot.
    pub not_ready: Option<String>,
    /// The roster version in force.
    pub roster_version: u64,
    /// Messages ever logged.
    pub log_entries: u64,
    /// Audit entries.
    pub audit_entries: u64,
    /// A replica: (this replica's id, the leader's id, term).
    pub replica: Option<ReplicaView>,
    /// Whether a token guards the listener (the page offers to log out).
    pub locked: bool,
}

/// A replica's place in its cluster.
#[derive(Debug, Serialize)]
pub struct ReplicaView {
    /// This replica.
    pub id: u64,
    /// The leader it knows of.
    pub leader: Option<u64>,
    /// Its term.
    pub term: u64,
}

/// A roster node.
#[derive(Debug, Serialize)]
pub struct PartnerView {
    /// Its roster name.
    pub node: String,
    /// Its role.
    pub role: String,
    /// Revoked in the roster.
    pub revoked: bool,
    /// Open connections.
    pub connections: u64,
    /// Open delivery lanes.
    pub lanes: u64,
    /// Messages its lanes still owe it.
    pub owed: u64,
}

/// Publishes, deliveries and rejections: totals now and the samples before.
#[derive(Debug, Serialize)]
pub struct Traffic {
    /// Seconds between samples.
    pub sample_seconds: u64,
    /// Totals now.
    pub now: Sample,
    /// Earlier totals, oldest first.
    pub history: Vec<Sample>,
}

/// Totals at one time.
#[derive(Debug, Clone, Serialize)]
pub struct Sample {
    /// When (broker clock).
    pub at_ms: u64,
    /// Publishes accepted.
    pub accepted: u64,
    /// Deliveries written.
    pub delivered: u64,
    /// Rejections by reason.
    pub rejected: BTreeMap<String, u64>,
}

impl Sample {
    fn of(at_ms: u64, totals: Totals) -> Self {
        Self {
            at_ms,
            accepted: totals.accepted,
            delivered: totals.delivered,
            rejected: totals.rejected.into_iter().collect(),
        }
    }
}

/// The newest checkpoint.
#[derive(Debug, Serialize)]
pub struct CheckpointView {
    /// Audit entries it covers.
    pub entries: u64,
    /// When it was made (log time).
    pub time_ms: u64,
    /// Witnesses that co-signed it.
    pub witnesses: Vec<String>,
    /// Replica signatures (a cluster).
    pub replicas: u64,
}

/// A running case.
#[derive(Debug, Clone, Serialize)]
pub struct CaseView {
    /// The case id (hex).
    pub id: String,
    /// consultation, snapback, exercise, attribution.
    pub case_type: String,
    /// Who opened it.
    pub opener: String,
    /// When.
    pub opened_ms: u64,
    /// open, fired, adopted.
    pub status: &'static str,
    /// Messages in its thread.
    pub messages: u64,
    /// Parties expected to answer.
    pub parties: u64,
    /// The stage next due.
    pub next_stage: Option<String>,
    /// When it is due.
    pub due_ms: Option<u64>,
    /// Who has not answered it.
    pub waiting_on: Vec<String>,
}

impl From<BoardCase> for CaseView {
    fn from(c: BoardCase) -> Self {
        let (next_stage, due_ms, waiting_on) = match c.next {
            Some((stage, due, who)) => (
                Some(format!("{stage:?}").to_lowercase()),
                Some(due),
                who.iter().map(ToString::to_string).collect(),
            ),
            None => (None, None, Vec::new()),
        };
        Self {
            id: c.case.to_string(),
            case_type: format!("{:?}", c.case_type).to_lowercase(),
            opener: c.opener.to_string(),
            opened_ms: c.opened_ms,
            status: c.status,
            messages: c.messages,
            parties: c.parties,
            next_stage,
            due_ms,
            waiting_on,
        }
    }
}

/// Disk use of the data directory and its file system.
#[derive(Debug, Clone, Serialize)]
pub struct Storage {
    /// Bytes of files under the data directory.
    pub data_bytes: u64,
    /// Bytes free on its file system (for an unprivileged process).
    pub free_bytes: u64,
    /// Size of its file system.
    pub total_bytes: u64,
}

/// The board of cases as last read, and when.
type Board = Option<(std::time::Instant, Option<(Vec<CaseView>, u64)>)>;

/// What the sampler keeps between requests.
#[derive(Debug, Default)]
pub(super) struct History {
    samples: Mutex<VecDeque<Sample>>,
    storage: Mutex<Option<Storage>>,
    /// Read from the writer at most every [`BOARD_EVERY`], however many pages poll.
    board: tokio::sync::Mutex<Board>,
}

/// How long a read of the case board serves.
const BOARD_EVERY: Duration = Duration::from_secs(2);

impl History {
    /// Take a sample of the totals and measure the disk (every [`SAMPLE_EVERY`]).
    pub(super) async fn sample(&self, shared: &Shared) {
        let sample = Sample::of(shared.config.clock.now_ms(), shared.metrics.totals());
        {
            let mut samples = self.samples.lock().unwrap_or_else(|p| p.into_inner());
            if samples.len() == SAMPLES {
                samples.pop_front();
            }
            samples.push_back(sample);
        }
        let dir = shared.config.data_dir.clone();
        if let Ok(storage) = tokio::task::spawn_blocking(move || storage(&dir)).await {
            *self.storage.lock().unwrap_or_else(|p| p.into_inner()) = storage;
        }
    }

    /// The dashboard's document, read now.
    pub(super) async fn overview(&self, shared: &Shared) -> Overview {
        let (cases, cases_total) = match self.board(shared).await {
            Some((cases, total)) => (Some(cases), Some(total)),
            None => (None, None),
        };
        let now_ms = shared.config.clock.now_ms();
        let levels = shared.levels();
        let roster = shared.roster.get();
        let connections: HashMap<_, _> = levels.connections.into_iter().collect();
        let lanes: HashMap<_, _> = levels
            .lanes
            .into_iter()
            .map(|(n, l, o)| (n, (l, o)))
            .collect();
        let partners = roster
            .body()
            .nodes
            .iter()
            .filter(|n| n.role != ewx_proto::roster::Role::Broker)
            .map(|n| {
                let name = n.id.to_string();
                let (lanes, owed) = lanes.get(&name).copied().unwrap_or_default();
                PartnerView {
                    connections: connections.get(&name).copied().unwrap_or_default(),
                    role: format!("{:?}", n.role).to_lowercase(),
                    revoked: n.revoked,
                    lanes,
                    owed,
                    node: name,
                }
            })
            .collect();
        let replica = shared.cluster.as_ref().map(|c| {
            let m = c.raft.metrics();
            let m = m.borrow();
            ReplicaView {
                id: c.me,
                leader: m.current_leader,
                term: m.current_term,
            }
        });
        let checkpoint = shared
            .newest_checkpoint()
            .map(|(body, signed)| CheckpointView {
                entries: body.size,
                time_ms: body.time_ms,
                witnesses: signed
                    .cosignatures
                    .iter()
                    .map(|c| c.witness.to_string())
                    .collect(),
                replicas: signed.replicas.len() as u64,
            });
        Overview {
            now_ms,
            broker: BrokerView {
                version: env!("CARGO_PKG_VERSION"),
                not_ready: shared.not_ready(),
                roster_version: levels.roster_version,
                log_entries: levels.next_index,
                audit_entries: levels.audit_entries,
                replica,
                locked: false,
            },
            partners,
            traffic: Traffic {
                sample_seconds: SAMPLE_EVERY.as_secs(),
                now: Sample::of(now_ms, shared.metrics.totals()),
                history: self
                    .samples
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .iter()
                    .cloned()
                    .collect(),
            },
            checkpoint,
            cases,
            cases_total,
            storage: self
                .storage
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
        }
    }
}

impl History {
    /// The running cases and their number, read again from the writer's index if the
    /// last read is older than [`BOARD_EVERY`] (waited for at most a second).
    async fn board(&self, shared: &Shared) -> Option<(Vec<CaseView>, u64)> {
        let mut board = self.board.lock().await;
        if let Some((at, cases)) = board.as_ref()
            && at.elapsed() < BOARD_EVERY
        {
            return cases.clone();
        }
        let query = CaseQuery::Board {
            now_ms: shared.config.clock.now_ms(),
            limit: BOARD_CASES,
        };
        let wait = tokio::time::timeout(Duration::from_secs(1), shared.writer.cases(query));
        let read = match wait.await {
            Ok(Ok(CaseAnswer::Board { cases, total })) => {
                Some((cases.into_iter().map(CaseView::from).collect(), total))
            }
            _ => None,
        };
        *board = Some((std::time::Instant::now(), read.clone()));
        read
    }
}

/// Bytes under `dir`, and its file system's free and total bytes.
fn storage(dir: &Path) -> Option<Storage> {
    let fs = rustix::fs::statvfs(dir).ok()?;
    Some(Storage {
        data_bytes: bytes_under(dir),
        free_bytes: fs.f_bavail.saturating_mul(fs.f_frsize),
        total_bytes: fs.f_blocks.saturating_mul(fs.f_frsize),
    })
}

fn bytes_under(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .filter_map(std::result::Result::ok)
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => bytes_under(&e.path()),
            Ok(_) => e.metadata().map_or(0, |m| m.len()),
            Err(_) => 0,
        })
        .sum()
}
