//! The single writer: every change to the log goes through one thread that takes whatever
//! is queued (group commit), runs the sequencer's step over it, commits the batch once,
//! and only then answers the requesters and fans new messages out. If a commit fails the
//! writer refuses every later write (fail-stop): after a failed flush or fsync nothing
//! about the disk can be trusted until a restart rechecks it.
//!
//! [`LogHandle`] (in `handle.rs`) is the typed way in.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use ewx_net::Clock;
use ewx_proto::{NodeKeys, Precedence};
use tokio::sync::mpsc;

#[path = "handle.rs"]
mod handle;
#[path = "replica.rs"]
mod replica;

pub(crate) use handle::Command;
pub use handle::LogHandle;

pub use replica::{Applying, Made, Part, ReplicaJob, spawn_replica};

use super::Recovered;
use super::sequencer::{Op, Outcome, Sequencer, Settings, Step};
use super::{Fanout, LogCommit, LogRead};

/// Most operations folded into one commit. Larger batches spread one fsync over more
/// messages, but a FLASH publish arriving during a commit waits for all of it (≈ 40 µs a
/// message): 64 keeps that wait near 3 ms at full load.
const MAX_BATCH: usize = 64;

/// Longest a ROUTINE commit waits for delivery lanes that owe too much (backpressure).
const HOLD_MAX: std::time::Duration = std::time::Duration::from_millis(100);

/// Most messages in one commit of several parts (a replica applying many Raft entries).
const MAX_GROUP: usize = 1024;

/// Parts sequenced into one commit: the step, and how many ops each part had.
#[derive(Debug, Default)]
struct Group {
    step: Step,
    ops: Vec<usize>,
}

/// Shared view of what the writer has committed.
#[derive(Debug, Default)]
pub struct Head {
    /// Next message-log index (everything below is durable).
    pub next_index: AtomicU64,
    /// Audit entries durable.
    pub audit_len: AtomicU64,
    /// The Merkle tree of the durable audit entries, for proofs.
    pub tree: std::sync::RwLock<ewx_proto::merkle::MerkleTree>,
    /// Set once a commit failed: the writer refuses every write until restarted.
    pub failed: std::sync::atomic::AtomicBool,
    /// Commit sizes and times, for the metrics.
    pub commits: crate::ops::metrics::Commits,
}

struct Writer {
    sequencer: Sequencer,
    commit: Box<dyn LogCommit>,
    read: Arc<dyn LogRead>,
    fanout: Arc<dyn Fanout>,
    head: Arc<Head>,
    /// Log times come from here.
    clock: Clock,
    /// Set after a failed commit: every later write is refused.
    failed: Option<String>,
    /// Where the writer's time goes, logged when it stops.
    profile: Profile,
}

/// The writer's time by stage (wall time on its own thread: all CPU but the sync's wait).
#[derive(Debug, Default)]
struct Profile {
    commits: u64,
    messages: u64,
    step: std::time::Duration,
    commit: std::time::Duration,
    after: std::time::Duration,
}

impl Profile {
    fn log(&self, commit: &dyn LogCommit) {
        let per = |d: std::time::Duration| d.as_secs_f64() * 1e6 / self.messages.max(1) as f64;
        let (transaction, sync) = commit.timings().unwrap_or_default();
        tracing::info!(
            commits = self.commits,
            messages = self.messages,
            "writer profile, µs per message: sequencing {:.1}, commit {:.1} (transaction              {:.1}, flush + fdatasync {:.1}), Merkle + fan-out {:.1}",
            per(self.step),
            per(self.commit),
            per(transaction),
            per(sync),
            per(self.after),
        );
    }
}

/// Start the writer thread over a log: `commit` writes, `read` answers the sequencer's
/// lookups, `fanout` gets every message (and case reminder) once durable, `clock` gives
/// the log times.
///
/// # Errors
/// If the thread cannot be spawned.
pub fn spawn(
    state: Recovered,
    (keys, clock): (Arc<NodeKeys>, Clock),
    settings: Settings,
    (commit, read): (Box<dyn LogCommit>, Arc<dyn LogRead>),
    fanout: Arc<dyn Fanout>,
) -> std::io::Result<(LogHandle, Arc<Head>, std::thread::JoinHandle<()>)> {
    let (tx, rx) = mpsc::channel(settings.queue);
    let (writer, head) = Writer::new(state, (keys, clock), settings, (commit, read), fanout);
    let thread = std::thread::Builder::new()
        .name("ewx-writer".into())
        .spawn(move || writer.run(rx))?;
    Ok((LogHandle::over(tx), head, thread))
}

impl Writer {
    fn new(
        state: Recovered,
        (keys, clock): (Arc<NodeKeys>, Clock),
        settings: Settings,
        (commit, read): (Box<dyn LogCommit>, Arc<dyn LogRead>),
        fanout: Arc<dyn Fanout>,
    ) -> (Self, Arc<Head>) {
        let head = Arc::new(Head {
            tree: std::sync::RwLock::new(state.chain.tree().clone()),
            ..Head::default()
        });
        head.next_index.store(state.next_index, Ordering::Release);
        head.audit_len.store(state.chain.len(), Ordering::Release);
        let writer = Writer {
            sequencer: Sequencer::new(state, settings, keys, clock.now_ms()),
            commit,
            read,
            fanout,
            head: head.clone(),
            clock,
            failed: None,
            profile: Profile::default(),
        };
        (writer, head)
    }
}

/// Whether a command is a FLASH or IMMEDIATE publish.
fn urgent(c: &Command) -> bool {
    matches!(&c.op, Op::Publish(envelope, _)
        if envelope.header().precedence >= Precedence::Immediate)
}

/// The next commit: with `urgent_first`, the urgent publishes waiting, alone (a small
/// commit: one sync, no ROUTINE inserts to wait for); else up to [`MAX_BATCH`] commands
/// in arrival order.
fn next_batch(waiting: &mut VecDeque<Command>, urgent_first: bool) -> Vec<Command> {
    let mut batch = Vec::with_capacity(MAX_BATCH.min(waiting.len()));
    if urgent_first && waiting.iter().any(urgent) {
        let mut rest = VecDeque::with_capacity(waiting.len());
        for c in waiting.drain(..) {
            if batch.len() < MAX_BATCH && urgent(&c) {
                batch.push(c);
            } else {
                rest.push_back(c);
            }
        }
        *waiting = rest;
        return batch;
    }
    let n = MAX_BATCH.min(waiting.len());
    batch.extend(waiting.drain(..n));
    batch
}

impl Writer {
    fn run(mut self, mut rx: mpsc::Receiver<Command>) {
        // waiting commands, taken from the channel so FLASH and IMMEDIATE publishes can be
        // committed ahead of a ROUTINE backlog (bounded: at most one queue's worth)
        let mut waiting = VecDeque::new();
        let mut urgent_last = false;
        let room = self.sequencer.settings().queue.max(MAX_BATCH);
        loop {
            if waiting.is_empty() {
                match rx.blocking_recv() {
                    Some(c) => waiting.push_back(c),
                    None => break,
                }
            }
            while waiting.len() < room {
                match rx.try_recv() {
                    Ok(c) => waiting.push_back(c),
                    Err(_) => break,
                }
            }
            // an urgent-only batch is followed by one in arrival order, so a stream of
            // FLASH can delay ROUTINE, acks and checkpoints by one commit, never starve them
            if urgent_last || !waiting.iter().any(urgent) {
                self.hold(&mut rx, &mut waiting, room);
            }
            let cmds = next_batch(&mut waiting, !urgent_last);
            urgent_last = cmds.iter().all(urgent) && !waiting.is_empty();
            self.process(cmds, false);
        }
        self.process(Vec::new(), true);
        self.profile.log(self.commit.as_ref());
        tracing::info!(
            audit_entries = self.sequencer.chain().len(),
            "writer stopped"
        );
    }

    /// Backpressure: before a commit with ROUTINE work, wait (at most [`HOLD_MAX`]) while
    /// live delivery lanes owe too much, taking in what arrives meanwhile; an urgent
    /// publish ends the wait at once (it is committed first).
    fn hold(&self, rx: &mut mpsc::Receiver<Command>, waiting: &mut VecDeque<Command>, room: usize) {
        let started = std::time::Instant::now();
        while self.fanout.behind() && started.elapsed() < HOLD_MAX {
            std::thread::sleep(std::time::Duration::from_micros(250));
            while waiting.len() < room {
                match rx.try_recv() {
                    Ok(c) => waiting.push_back(c),
                    Err(_) => break,
                }
            }
            if waiting.iter().any(urgent) {
                return;
            }
        }
    }

    fn process(&mut self, cmds: Vec<Command>, closing: bool) {
        let (ops, replies): (Vec<Op>, Vec<_>) = cmds.into_iter().map(|c| (c.op, c.reply)).unzip();
        let part = Part {
            now_ms: self.clock.now_ms(),
            ops,
            meta: Vec::new(),
        };
        let (mut outcomes, _) = self.apply(vec![part], closing);
        for (outcome, reply) in outcomes.pop().unwrap_or_default().into_iter().zip(replies) {
            if let Some(r) = reply {
                let _ = r.send(outcome); // the requester may have gone: nothing to tell
            }
        }
    }

    /// Sequence the parts in order, each at its own time, into as few commits as they
    /// allow (a batch holds one checkpoint, one roster, one retention decision, and at
    /// most [`MAX_GROUP`] messages), each with the parts' `meta` in the same atomic write;
    /// then publish each to the head and the fan-out. The outcomes are final: one list
    /// per part, one per op, refusals if a commit failed. Checkpoints signed and
    /// committed come back too.
    fn apply(&mut self, parts: Vec<Part>, closing: bool) -> (Vec<Vec<Outcome>>, Vec<Made>) {
        let mut done = Vec::with_capacity(parts.len());
        let mut made = Vec::new();
        let mut group = Group::default();
        for part in parts {
            if let Some(why) = self.failed.clone() {
                done.push(part.ops.iter().map(|op| op.refused(&why)).collect());
                continue;
            }
            let t0 = std::time::Instant::now();
            group.ops.push(part.ops.len());
            group.step.batch.meta.extend(part.meta);
            // a replicated entry with nothing to sequence (a new leader's blank entry, a
            // membership change) only records where the replica stands
            if !part.ops.is_empty() || group.step.batch.meta.is_empty() {
                self.sequencer.step_into(
                    &mut group.step,
                    part.ops,
                    part.now_ms,
                    closing,
                    self.read.as_ref(),
                );
            }
            self.profile.step += t0.elapsed();
            if group.step.full() || group.step.batch.messages.len() >= MAX_GROUP {
                self.finish(std::mem::take(&mut group), &mut done, &mut made);
            }
        }
        if !group.ops.is_empty() {
            self.finish(group, &mut done, &mut made);
        }
        (done, made)
    }

    /// Commit a group, then publish it; its outcomes go to `done`, one list per part.
    fn finish(&mut self, group: Group, done: &mut Vec<Vec<Outcome>>, made: &mut Vec<Made>) {
        let Group { mut step, ops } = group;
        step.batch.replicated = !step.batch.meta.is_empty();
        let t1 = std::time::Instant::now();
        let synced_before = self.commit.timings().map(|(_, sync)| sync);
        let committed = step.batch.is_empty() || self.commit(&step.batch);
        let t2 = std::time::Instant::now();
        if !step.batch.is_empty() {
            let synced = self
                .commit
                .timings()
                .zip(synced_before)
                .map(|((_, after), before)| after.saturating_sub(before));
            self.head
                .commits
                .observe(step.batch.messages.len(), t2 - t1, synced);
        }
        self.profile.commits += 1;
        self.profile.messages += step.batch.messages.len() as u64;
        self.profile.commit += t2 - t1;
        let mut outcomes = step.outcomes.into_iter();
        if !committed {
            let why = self.failed.clone().unwrap_or_default();
            for n in ops {
                done.push(
                    outcomes
                        .by_ref()
                        .take(n)
                        .map(|o| o.uncommitted(&why))
                        .collect(),
                );
            }
            return;
        }
        self.head
            .next_index
            .store(self.sequencer.next_index(), Ordering::Release);
        {
            let mut tree = self.head.tree.write().unwrap_or_else(|p| p.into_inner());
            for (_, bytes) in &step.batch.audit {
                tree.push(ewx_proto::merkle::leaf_hash(bytes));
            }
        }
        self.head
            .audit_len
            .store(self.sequencer.chain().len(), Ordering::Release);
        if !step.live.is_empty() {
            self.fanout.committed(step.live);
        }
        if !step.reminders.is_empty() {
            self.fanout.remind(step.reminders);
        }
        if !step.receipts.is_empty() {
            self.fanout.receipted(step.receipts);
        }
        self.profile.after += t2.elapsed();
        if let Some(p) = step.batch.prune {
            self.commit.retain(p);
        }
        made.extend(step.batch.checkpoint.take());
        for n in ops {
            done.push(outcomes.by_ref().take(n).collect());
        }
    }

    /// Commit. On failure, stop: the batch may be half on disk and half in sled's memory,
    /// and a failed fsync may have dropped dirty pages, so no later write is trusted.
    /// Nothing in the batch is acknowledged; a restart replays and checks the log.
    fn commit(&mut self, batch: &super::Batch) -> bool {
        match self.commit.commit(batch) {
            Ok(()) => true,
            Err(e) => {
                tracing::error!("log commit failed; refusing all writes until restarted: {e}");
                self.failed = Some(e.to_string());
                self.head.failed.store(true, Ordering::Release);
                false
            }
        }
    }
}

#[cfg(test)]
#[path = "writer_tests.rs"]
mod tests;
