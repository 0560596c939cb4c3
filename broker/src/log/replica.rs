//! A replica's writer: the same writer as a single broker's, but what it applies comes
//! from a replicated log (committed Raft entries, each with the time it carries) instead
//! of from request tasks; it answers case queries from what it has applied.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use ewx_net::Clock;
use ewx_proto::NodeKeys;
use tokio::sync::{mpsc, oneshot};

use super::super::sequencer::{CaseQuery, Op, Outcome, Settings};
use super::super::{Fanout, LogCommit, LogRead, Recovered};
use super::{Head, Writer};

/// A checkpoint an apply made: its size and signed bytes.
pub type Made = (u64, Vec<u8>);

/// Operations a replicated log committed in one entry, with the time the entry carries
/// and the bookkeeping to write with them.
#[derive(Debug)]
pub struct Part {
    /// The log time of the entry.
    pub now_ms: u64,
    /// What to apply.
    pub ops: Vec<Op>,
    /// Written in the same atomic commit ([`crate::log::Batch::meta`]).
    pub meta: Vec<(&'static str, Vec<u8>)>,
}

/// Work for a replica's writer: committed entries, applied in order in as few commits as
/// they allow; the outcomes go back.
#[derive(Debug)]
pub struct Applying {
    /// The entries, in log order.
    pub parts: Vec<Part>,
    /// One list of outcomes per part (one per op), and the checkpoints made.
    pub reply: oneshot::Sender<(Vec<Vec<Outcome>>, Vec<Made>)>,
}

/// What a replica's writer does: apply, answer from what it has applied, or stand still
/// while its store is read or replaced.
pub enum ReplicaJob {
    /// Apply committed operations.
    Apply(Applying),
    /// Ask the case index as applied so far (a read: nothing is logged).
    Cases(CaseQuery, oneshot::Sender<Outcome>),
    /// Run this while nothing is applied (to read one consistent state of the store).
    Hold(Box<dyn FnOnce() + Send>),
    /// Change the store underneath (install a snapshot), then continue from the state
    /// it returns; the result goes back.
    Reload(Reloading),
}

/// A change of the store underneath the writer, giving the state to continue from (its
/// argument: the anti-replay window width, to recover with).
pub type Reloading = (
    Box<dyn FnOnce(u64) -> crate::error::Result<Recovered> + Send>,
    oneshot::Sender<crate::error::Result<()>>,
);

impl std::fmt::Debug for ReplicaJob {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Apply(a) => f.debug_tuple("Apply").field(&a.parts.len()).finish(),
            Self::Cases(q, _) => f.debug_tuple("Cases").field(q).finish(),
            Self::Hold(_) => f.write_str("Hold"),
            Self::Reload(_) => f.write_str("Reload"),
        }
    }
}

/// Start a replica's writer thread: as [`super::spawn`], but it applies [`Applying`] jobs from
/// a replicated log instead of taking requests itself.
///
/// # Errors
/// If the thread cannot be spawned.
pub fn spawn_replica(
    state: Recovered,
    (keys, clock): (Arc<NodeKeys>, Clock),
    settings: Settings,
    (commit, read): (Box<dyn LogCommit>, Arc<dyn LogRead>),
    fanout: Arc<dyn Fanout>,
) -> std::io::Result<(
    mpsc::Sender<ReplicaJob>,
    Arc<Head>,
    std::thread::JoinHandle<()>,
)> {
    let (tx, rx) = mpsc::channel(64);
    let (writer, head) = Writer::new(state, (keys, clock), settings, (commit, read), fanout);
    let thread = std::thread::Builder::new()
        .name("ewx-replica".into())
        .spawn(move || writer.run_replica(rx))?;
    Ok((tx, head, thread))
}

impl Writer {
    /// Continue from `state` (the store changed underneath: a snapshot was installed).
    fn reload(&mut self, state: Recovered) {
        *self.head.tree.write().unwrap_or_else(|p| p.into_inner()) = state.chain.tree().clone();
        self.head
            .next_index
            .store(state.next_index, Ordering::Release);
        self.head
            .audit_len
            .store(state.chain.len(), Ordering::Release);
        let now_ms = self.clock.now_ms();
        self.sequencer.restart(state, now_ms);
        self.fanout.grown();
        tracing::info!(
            audit_entries = self.sequencer.chain().len(),
            next_index = self.sequencer.next_index(),
            "replica continues from an installed snapshot"
        );
    }

    /// A replica's writer: applies what the replicated log committed, in log order, at
    /// the times the entries carry (never its own clock), and stops when the state
    /// machine lets go of it.
    fn run_replica(mut self, mut rx: mpsc::Receiver<ReplicaJob>) {
        while let Some(job) = rx.blocking_recv() {
            match job {
                ReplicaJob::Apply(job) => {
                    let _ = job.reply.send(self.apply(job.parts, false));
                }
                ReplicaJob::Cases(query, reply) => {
                    let _ = reply.send(self.sequencer.query(query));
                }
                ReplicaJob::Hold(run) => run(),
                ReplicaJob::Reload((change, reply)) => {
                    let width = self.sequencer.settings().replay_width;
                    let _ = reply.send(change(width).map(|state| self.reload(state)));
                }
            }
        }
        self.profile.log(self.commit.as_ref());
        tracing::info!(
            audit_entries = self.sequencer.chain().len(),
            "replica writer stopped"
        );
    }
}
