//! The single writer: every change to the store goes through one thread that batches
//! whatever is queued (group commit), assigns log indexes, enforces per-sender sequence
//! numbers, appends hash-chained audit entries, signs checkpoints, commits once, and only
//! then answers the publishers and fans the new messages out to live subscribers.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use ewx_proto::audit::Event;
use ewx_proto::checkpoint::{Checkpoint, SignedCheckpoint};
use ewx_proto::frame::RejectReason;
use ewx_proto::{Envelope, Header, NodeKeys};
use tokio::sync::{broadcast, mpsc, oneshot};

use crate::config::{CheckpointPolicy, Retention};
use crate::router::Rejection;
use crate::store::{Batch, NewMessage, Recovered, Store};

/// Most commands folded into one commit.
const MAX_BATCH: usize = 2048;

/// A committed message, shared by every live subscriber without copying.
#[derive(Debug)]
pub struct Stored {
    /// Log index.
    pub index: u64,
    /// Decoded header (for routing).
    pub header: Header,
    /// Envelope bytes as received.
    pub bytes: Arc<[u8]>,
}

/// A request to the writer.
#[derive(Debug)]
pub enum Command {
    /// Store an accepted envelope; answers with its log index.
    Publish {
        /// Decoded and checked envelope.
        envelope: Box<Envelope>,
        /// Its bytes as received.
        bytes: Arc<[u8]>,
        /// Where the answer goes.
        reply: oneshot::Sender<Result<u64, Rejection>>,
    },
    /// Append an audit entry (no answer).
    Audit(Event),
    /// Move a durable cursor and log the delivery.
    Ack {
        /// Cursor key.
        key: Vec<u8>,
        /// Next index to deliver.
        next: u64,
        /// The `Delivered` entry.
        event: Event,
        /// Answered once durable.
        reply: oneshot::Sender<bool>,
    },
    /// Persist a newly accepted roster and log it.
    Roster {
        /// Signed roster bytes.
        bytes: Vec<u8>,
        /// The `RosterChanged` entry.
        event: Event,
        /// Answered once durable.
        reply: oneshot::Sender<bool>,
    },
    /// Time passed: sign a checkpoint if one is due.
    Tick,
}

/// Shared view of what the writer has committed.
#[derive(Debug, Default)]
pub struct Head {
    /// Next message-log index (everything below is durable).
    pub next_index: AtomicU64,
    /// Audit entries durable.
    pub audit_len: AtomicU64,
}

enum Reply {
    Publish(
        oneshot::Sender<Result<u64, Rejection>>,
        Result<u64, Rejection>,
    ),
    Done(oneshot::Sender<bool>),
}

struct Writer {
    store: Store,
    keys: Arc<NodeKeys>,
    state: Recovered,
    policy: CheckpointPolicy,
    live: broadcast::Sender<Arc<Stored>>,
    head: Arc<Head>,
    last_checkpoint: Instant,
    replay_width: u64,
    retention: Retention,
}

/// The writer's policies, from the configuration.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Checkpoint cadence.
    pub checkpoint: CheckpointPolicy,
    /// Anti-replay window width.
    pub replay_width: u64,
    /// Envelope retention.
    pub retention: Retention,
}

/// Start the writer thread. It ends when every sender of its queue is dropped, after a
/// last checkpoint of whatever is new.
///
/// # Errors
/// If the thread cannot be spawned.
pub fn spawn(
    store: Store,
    state: Recovered,
    keys: Arc<NodeKeys>,
    settings: Settings,
    live: broadcast::Sender<Arc<Stored>>,
    rx: mpsc::Receiver<Command>,
) -> std::io::Result<(Arc<Head>, std::thread::JoinHandle<()>)> {
    let head = Arc::new(Head::default());
    head.next_index.store(state.next_index, Ordering::Release);
    head.audit_len.store(state.chain.len(), Ordering::Release);
    let writer = Writer {
        store,
        keys,
        state,
        live,
        head: head.clone(),
        last_checkpoint: Instant::now(),
        replay_width: settings.replay_width,
        retention: settings.retention,
        policy: settings.checkpoint,
    };
    let thread = std::thread::Builder::new()
        .name("ewx-writer".into())
        .spawn(move || writer.run(rx))?;
    Ok((head, thread))
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Writer {
    fn run(mut self, mut rx: mpsc::Receiver<Command>) {
        while let Some(first) = rx.blocking_recv() {
            let mut cmds = vec![first];
            while cmds.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(c) => cmds.push(c),
                    Err(_) => break,
                }
            }
            self.process(cmds, false);
        }
        self.process(Vec::new(), true);
        tracing::info!(audit_entries = self.state.chain.len(), "writer stopped");
    }

    fn append(&mut self, batch: &mut Batch, now: u64, event: Event) -> bool {
        match self.state.chain.append(now, event) {
            Ok((entry, bytes)) => {
                batch.audit.push((entry.index, bytes));
                true
            }
            Err(e) => {
                tracing::error!("cannot encode audit entry: {e}");
                false
            }
        }
    }

    fn publish(
        &mut self,
        batch: &mut Batch,
        now: u64,
        envelope: &Envelope,
        bytes: Arc<[u8]>,
    ) -> Result<Arc<Stored>, Rejection> {
        let h = envelope.header();
        self.state
            .replay
            .entry(h.sender.clone())
            .or_default()
            .accept(&h.sender, h.seq, self.replay_width)?;
        let index = self.state.next_index;
        let event = Event::Published {
            id: h.id,
            sender: h.sender.clone(),
            seq: h.seq,
            topic: h.topic.clone(),
            kind: h.kind,
            precedence: h.precedence,
            labels: h.labels.clone(),
            log_index: index,
            envelope_hash: envelope.hash(),
        };
        if !self.append(batch, now, event) {
            return Err(Rejection::new(
                RejectReason::Internal,
                "cannot write the audit entry".into(),
            ));
        }
        self.state.next_index += 1;
        let topic_seq = self.state.topic_seq.entry(h.topic.clone()).or_default();
        batch.topics.push((h.topic.clone(), *topic_seq, index));
        *topic_seq += 1;
        batch.messages.push(NewMessage {
            index,
            precedence: h.precedence,
            id: h.id,
            bytes: bytes.to_vec(),
        });
        Ok(Arc::new(Stored {
            index,
            header: h.clone(),
            bytes,
        }))
    }

    fn checkpoint_due(&self, tick: bool) -> bool {
        let new = self.state.chain.len() - self.state.checkpoint_size;
        new > 0
            && (new >= self.policy.every_entries
                || tick
                    && self.last_checkpoint.elapsed()
                        >= Duration::from_millis(self.policy.interval_ms))
    }

    fn checkpoint(&mut self, batch: &mut Batch, now: u64) {
        let size = self.state.chain.len();
        let cp = Checkpoint {
            size,
            root: self.state.chain.tree().root(),
            prev: self.state.checkpoint_hash,
            time_ms: now,
        };
        match SignedCheckpoint::sign(&cp, &self.keys).and_then(|s| Ok((s.encode()?, s.body_hash())))
        {
            Ok((bytes, hash)) => {
                batch.checkpoint = Some((size, bytes));
                self.state.checkpoint_size = size;
                self.state.checkpoint_hash = hash;
                self.last_checkpoint = Instant::now();
            }
            Err(e) => tracing::error!("cannot sign checkpoint: {e}"),
        }
    }

    fn process(&mut self, cmds: Vec<Command>, closing: bool) {
        let now = now_ms();
        let mut batch = Batch::default();
        let mut replies = Vec::with_capacity(cmds.len());
        let mut live = Vec::new();
        let mut tick = closing;
        for c in cmds {
            match c {
                Command::Publish {
                    envelope,
                    bytes,
                    reply,
                } => match self.publish(&mut batch, now, &envelope, bytes) {
                    Ok(stored) => {
                        replies.push(Reply::Publish(reply, Ok(stored.index)));
                        live.push(stored);
                    }
                    Err(r) => replies.push(Reply::Publish(reply, Err(r))),
                },
                Command::Audit(event) => {
                    self.append(&mut batch, now, event);
                }
                Command::Ack {
                    key,
                    next,
                    event,
                    reply,
                } => {
                    batch.cursors.push((key, next));
                    self.append(&mut batch, now, event);
                    replies.push(Reply::Done(reply));
                }
                Command::Roster {
                    bytes,
                    event,
                    reply,
                } => {
                    batch.roster = Some(bytes);
                    self.append(&mut batch, now, event);
                    replies.push(Reply::Done(reply));
                }
                Command::Tick => tick = true,
            }
        }
        if self.checkpoint_due(tick) {
            self.checkpoint(&mut batch, now);
        }
        let committed = batch.is_empty() || self.commit(&batch);
        for r in replies {
            match r {
                Reply::Publish(tx, Ok(i)) if committed => drop(tx.send(Ok(i))),
                Reply::Publish(tx, Ok(_)) => drop(tx.send(Err(Rejection::new(
                    RejectReason::StorageFull,
                    "the broker could not store the message; retry later".into(),
                )))),
                Reply::Publish(tx, Err(e)) => drop(tx.send(Err(e))),
                Reply::Done(tx) => drop(tx.send(committed)),
            }
        }
        if committed && tick {
            self.apply_retention(now);
        }
        if committed {
            self.head
                .next_index
                .store(self.state.next_index, Ordering::Release);
            self.head
                .audit_len
                .store(self.state.chain.len(), Ordering::Release);
            for s in live {
                // no live subscriber is fine; a lagging one catches up from the store
                let _ = self.live.send(s);
            }
        }
    }

    fn apply_retention(&self, now: u64) {
        let r = &self.retention;
        if r.max_messages.is_none() && r.max_age_ms.is_none() {
            return;
        }
        let keep_from = r
            .max_messages
            .map_or(0, |m| self.state.next_index.saturating_sub(m));
        let min_created = r.max_age_ms.map_or(0, |a| now.saturating_sub(a));
        match self.store.prune(keep_from, min_created) {
            Ok(0) => {}
            Ok(n) => tracing::info!(
                pruned = n,
                "retention: dropped old envelopes (audit entries kept)"
            ),
            Err(e) => tracing::warn!("retention failed: {e}"),
        }
    }

    /// Commit; on failure reload the in-memory state from disk so nothing unacknowledged
    /// is remembered as written.
    fn commit(&mut self, batch: &Batch) -> bool {
        match self.store.commit(batch) {
            Ok(()) => true,
            Err(e) => {
                tracing::error!("store commit failed, nothing in this batch is acknowledged: {e}");
                match self.store.recover(self.replay_width) {
                    Ok(state) => self.state = state,
                    Err(e) => tracing::error!("cannot reload state after a failed commit: {e}"),
                }
                false
            }
        }
    }
}
