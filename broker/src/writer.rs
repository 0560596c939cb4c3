//! The single writer: every change to the store goes through one thread that batches
//! whatever is queued (group commit), assigns log indexes, enforces the anti-replay
//! window and unique message ids, appends hash-chained audit entries, signs checkpoints,
//! commits once, and only then answers the requesters and fans new messages out to live
//! subscribers. If a commit fails the writer stops accepting writes (fail-stop): after a
//! failed flush or fsync nothing about the disk can be trusted until a restart rechecks it.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use ewx_proto::audit::Event;
use ewx_proto::checkpoint::{Checkpoint, Cosignature, SignedCheckpoint};
use ewx_proto::frame::RejectReason;
use ewx_proto::receipt::Receipt;
use ewx_proto::{Envelope, Header, MessageId, NodeKeys};
use tokio::sync::{broadcast, mpsc, oneshot};

use crate::config::{CheckpointPolicy, Retention};
use crate::router::Rejection;
use crate::store::{Batch, NewMessage, Recovered, Store};
use ewx_net::now_ms;

/// Most commands folded into one commit. Larger batches spread one fsync over more
/// messages, but a FLASH publish arriving during a commit waits for all of it (≈ 50 µs a
/// message): 256 keeps that wait near 10 ms at full load.
const MAX_BATCH: usize = 256;
/// Envelopes up to this size ride along in the live fan-out; larger ones are read from
/// the store by each lane, so the fan-out ring never pins much memory.
pub const INLINE_BYTES: usize = 16 << 10;

/// A committed message as the live fan-out carries it.
#[derive(Debug)]
pub struct Stored {
    /// Log index.
    pub index: u64,
    /// Decoded header (for routing).
    pub header: Header,
    /// Envelope bytes as received, if small (else read them from the store).
    pub bytes: Option<Bytes>,
}

/// A request to the writer.
#[derive(Debug)]
pub enum Command {
    /// Store an accepted envelope; answers with its log index.
    Publish {
        /// Decoded and checked envelope.
        envelope: Box<Envelope>,
        /// Its bytes as received.
        bytes: Vec<u8>,
        /// Where the answer goes.
        reply: oneshot::Sender<Result<u64, Rejection>>,
    },
    /// Append an audit entry (no answer).
    Audit(Event),
    /// Set durable cursors (subscription start, acks), with an audit entry if given.
    Cursors {
        /// (cursor key, next index to deliver).
        cursors: Vec<(Vec<u8>, u64)>,
        /// E.g. `Delivered`.
        event: Option<Event>,
        /// `true` once durable.
        reply: oneshot::Sender<bool>,
    },
    /// Log a receipt unless this recipient's receipt for this message is logged already.
    Receipt {
        /// The verified receipt.
        receipt: Receipt,
        /// `Ok(true)` if newly logged, `Ok(false)` if a duplicate.
        reply: oneshot::Sender<Result<bool, Rejection>>,
    },
    /// Persist a newly accepted roster and log it.
    Roster {
        /// Signed roster bytes.
        bytes: Vec<u8>,
        /// The `RosterChanged` entry.
        event: Event,
        /// `true` once durable.
        reply: oneshot::Sender<bool>,
    },
    /// Add a witness's (already verified) co-signature to a stored checkpoint.
    Cosign {
        /// The checkpoint's size.
        size: u64,
        /// The co-signature.
        cosignature: Cosignature,
        /// `Ok` once durable (also if this witness had co-signed already).
        reply: oneshot::Sender<Result<(), Rejection>>,
    },
    /// Time passed: sign a checkpoint and apply retention if due.
    Tick,
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
    /// Commands the writer holds waiting (as many as its channel).
    pub queue: usize,
}

enum Reply {
    Publish(
        oneshot::Sender<Result<u64, Rejection>>,
        Result<u64, Rejection>,
    ),
    Receipt(oneshot::Sender<Result<bool, Rejection>>, bool),
    Done(oneshot::Sender<bool>),
    Cosign(
        oneshot::Sender<Result<(), Rejection>>,
        Result<(), Rejection>,
    ),
}

struct Writer {
    store: Store,
    keys: Arc<NodeKeys>,
    state: Recovered,
    settings: Settings,
    live: broadcast::Sender<Arc<Stored>>,
    head: Arc<Head>,
    last_checkpoint: Instant,
    /// Set after a failed commit: every later write is refused.
    failed: Option<String>,
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
    let head = Arc::new(Head {
        tree: std::sync::RwLock::new(state.chain.tree().clone()),
        ..Head::default()
    });
    head.next_index.store(state.next_index, Ordering::Release);
    head.audit_len.store(state.chain.len(), Ordering::Release);
    let writer = Writer {
        store,
        keys,
        state,
        settings,
        live,
        head: head.clone(),
        last_checkpoint: Instant::now(),
        failed: None,
    };
    let thread = std::thread::Builder::new()
        .name("ewx-writer".into())
        .spawn(move || writer.run(rx))?;
    Ok((head, thread))
}

/// The refusal of every write once a commit has failed (nothing of it was kept).
fn storage_failed(why: &str) -> Rejection {
    Rejection::new(
        RejectReason::StorageFull,
        format!("the broker's storage failed ({why}); nothing was kept, and it must be restarted"),
    )
}

/// Whether a command is a FLASH or IMMEDIATE publish.
fn urgent(c: &Command) -> bool {
    matches!(c, Command::Publish { envelope, .. }
        if envelope.header().precedence >= ewx_proto::Precedence::Immediate)
}

/// The next commit: with `urgent_first`, the urgent publishes waiting, alone (a small
/// commit: one sync, no ROUTINE inserts to wait for); else up to [`MAX_BATCH`] commands
/// in arrival order.
fn next_batch(
    waiting: &mut std::collections::VecDeque<Command>,
    urgent_first: bool,
) -> Vec<Command> {
    let mut batch = Vec::with_capacity(MAX_BATCH.min(waiting.len()));
    if urgent_first && waiting.iter().any(urgent) {
        let mut rest = std::collections::VecDeque::with_capacity(waiting.len());
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
    while batch.len() < MAX_BATCH {
        match waiting.pop_front() {
            Some(c) => batch.push(c),
            None => break,
        }
    }
    batch
}

impl Writer {
    fn run(mut self, mut rx: mpsc::Receiver<Command>) {
        // waiting commands, taken from the channel so FLASH and IMMEDIATE publishes can be
        // committed ahead of a ROUTINE backlog (bounded: at most one queue's worth)
        let mut waiting = std::collections::VecDeque::new();
        let mut urgent_last = false;
        loop {
            if waiting.is_empty() {
                match rx.blocking_recv() {
                    Some(c) => waiting.push_back(c),
                    None => break,
                }
            }
            while waiting.len() < self.settings.queue.max(MAX_BATCH) {
                match rx.try_recv() {
                    Ok(c) => waiting.push_back(c),
                    Err(_) => break,
                }
            }
            // an urgent-only batch is followed by one in arrival order, so a stream of
            // FLASH can delay ROUTINE, acks and checkpoints by one commit, never starve them
            let cmds = next_batch(&mut waiting, !urgent_last);
            urgent_last = cmds.iter().all(urgent) && !waiting.is_empty();
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

    fn id_taken(&self, id: &MessageId, batch_ids: &HashSet<MessageId>) -> Result<bool, Rejection> {
        if batch_ids.contains(id) {
            return Ok(true);
        }
        self.store
            .index_of(id)
            .map(|i| i.is_some())
            .map_err(|e| Rejection::new(RejectReason::Internal, e.to_string()))
    }

    fn publish(
        &mut self,
        batch: &mut Batch,
        batch_ids: &mut HashSet<MessageId>,
        now: u64,
        envelope: &Envelope,
        bytes: Vec<u8>,
    ) -> Result<Arc<Stored>, Rejection> {
        let h = envelope.header();
        if self.id_taken(&h.id, batch_ids)? {
            return Err(Rejection::new(
                RejectReason::Replay,
                format!("message id {} is already in the log", h.id),
            ));
        }
        let window = self.state.replay.entry(h.sender.clone()).or_default();
        window.accept(&h.sender, h.seq, self.settings.replay_width)?;
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
        batch_ids.insert(h.id);
        let topic_seq = self.state.topic_seq.entry(h.topic.clone()).or_default();
        batch.topics.push((h.topic.clone(), *topic_seq, index));
        *topic_seq += 1;
        let bytes = Bytes::from(bytes);
        let inline = (bytes.len() <= INLINE_BYTES).then(|| bytes.clone());
        batch.messages.push(NewMessage {
            index,
            precedence: h.precedence,
            id: h.id,
            bytes,
        });
        Ok(Arc::new(Stored {
            index,
            header: h.clone(),
            bytes: inline,
        }))
    }

    fn checkpoint_due(&self, tick: bool, closing: bool) -> bool {
        let new = self.state.chain.len() - self.state.checkpoint_size;
        let interval = Duration::from_millis(self.settings.checkpoint.interval_ms);
        new > 0
            && (closing
                || new >= self.settings.checkpoint.every_entries
                || tick && self.last_checkpoint.elapsed() >= interval)
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

    fn refuse_all(&self, cmds: Vec<Command>, why: &str) {
        let r = || storage_failed(why);
        for c in cmds {
            match c {
                Command::Publish { reply, .. } => drop(reply.send(Err(r()))),
                Command::Receipt { reply, .. } => drop(reply.send(Err(r()))),
                Command::Cosign { reply, .. } => drop(reply.send(Err(r()))),
                Command::Cursors { reply, .. } | Command::Roster { reply, .. } => {
                    let _ = reply.send(false);
                }
                Command::Audit(_) | Command::Tick => {}
            }
        }
    }

    fn process(&mut self, cmds: Vec<Command>, closing: bool) {
        if let Some(why) = self.failed.clone() {
            return self.refuse_all(cmds, &why);
        }
        let now = now_ms();
        let mut batch = Batch::default();
        let mut batch_ids = HashSet::new();
        let mut replies = Vec::with_capacity(cmds.len());
        let mut live = Vec::new();
        let mut tick = closing;
        for c in cmds {
            match c {
                Command::Publish {
                    envelope,
                    bytes,
                    reply,
                } => match self.publish(&mut batch, &mut batch_ids, now, &envelope, bytes) {
                    Ok(stored) => {
                        replies.push(Reply::Publish(reply, Ok(stored.index)));
                        live.push(stored);
                    }
                    Err(r) => replies.push(Reply::Publish(reply, Err(r))),
                },
                Command::Audit(event) => {
                    self.append(&mut batch, now, event);
                }
                Command::Cursors {
                    cursors,
                    event,
                    reply,
                } => {
                    batch.cursors.extend(cursors);
                    if let Some(e) = event {
                        self.append(&mut batch, now, e);
                    }
                    replies.push(Reply::Done(reply));
                }
                Command::Receipt { receipt, reply } => {
                    let key = (receipt.id, receipt.by.clone());
                    let dup = batch.receipts.contains(&key)
                        || self.store.has_receipt(&key.0, &key.1).unwrap_or(false);
                    if !dup {
                        batch.receipts.push(key);
                        self.append(&mut batch, now, Event::Receipt(receipt));
                    }
                    replies.push(Reply::Receipt(reply, !dup));
                }
                Command::Cosign {
                    size,
                    cosignature,
                    reply,
                } => {
                    let r = self.cosign(&mut batch, size, cosignature);
                    replies.push(Reply::Cosign(reply, r));
                }
                Command::Roster {
                    bytes,
                    event,
                    reply,
                } => {
                    let version = match &event {
                        Event::RosterChanged { version, .. } => *version,
                        _ => 0,
                    };
                    batch.roster = Some((version, bytes));
                    self.append(&mut batch, now, event);
                    replies.push(Reply::Done(reply));
                }
                Command::Tick => tick = true,
            }
        }
        if self.checkpoint_due(tick, closing) {
            self.checkpoint(&mut batch, now);
        }
        let committed = batch.is_empty() || self.commit(&batch);
        let why = self.failed.clone().unwrap_or_default();
        let failed = || storage_failed(&why);
        for r in replies {
            match r {
                Reply::Publish(tx, Ok(i)) if committed => drop(tx.send(Ok(i))),
                Reply::Publish(tx, Ok(_)) => drop(tx.send(Err(failed()))),
                Reply::Publish(tx, Err(e)) => drop(tx.send(Err(e))),
                Reply::Receipt(tx, new) => {
                    drop(tx.send(if committed { Ok(new) } else { Err(failed()) }))
                }
                Reply::Done(tx) => drop(tx.send(committed)),
                Reply::Cosign(tx, r) => drop(tx.send(if committed { r } else { Err(failed()) })),
            }
        }
        if !committed {
            return;
        }
        self.head
            .next_index
            .store(self.state.next_index, Ordering::Release);
        {
            let mut tree = self.head.tree.write().unwrap_or_else(|p| p.into_inner());
            for (_, bytes) in &batch.audit {
                tree.push(ewx_proto::merkle::leaf_hash(bytes));
            }
        }
        self.head
            .audit_len
            .store(self.state.chain.len(), Ordering::Release);
        for s in live {
            // no live subscriber is fine; a lagging one catches up from the store
            let _ = self.live.send(s);
        }
        if tick {
            self.apply_retention(now);
        }
    }

    fn cosign(
        &mut self,
        batch: &mut Batch,
        size: u64,
        cosignature: Cosignature,
    ) -> Result<(), Rejection> {
        let bad = |reason, detail: String| Err(Rejection::new(reason, detail));
        // a checkpoint co-signed earlier in this batch, or the stored one
        let stored = match batch.cosigned.iter().rposition(|(s, _)| *s == size) {
            Some(i) => batch.cosigned.remove(i).1,
            None => match self.store.checkpoint(size) {
                Ok(Some(b)) => b.to_vec(),
                Ok(None) => {
                    return bad(
                        RejectReason::Malformed,
                        format!("no checkpoint of size {size}"),
                    );
                }
                Err(e) => return bad(RejectReason::Internal, e.to_string()),
            },
        };
        let mut cp = match SignedCheckpoint::decode(&stored) {
            Ok(cp) => cp,
            Err(e) => return bad(RejectReason::Internal, e.to_string()),
        };
        if !cp
            .cosignatures
            .iter()
            .any(|c| c.witness == cosignature.witness)
        {
            cp.cosignatures.push(cosignature);
        }
        match cp.encode() {
            Ok(bytes) => batch.cosigned.push((size, bytes)),
            Err(e) => return bad(RejectReason::Internal, e.to_string()),
        }
        Ok(())
    }

    fn apply_retention(&self, now: u64) {
        let r = &self.settings.retention;
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

    /// Commit. On failure, stop: the batch may be half on disk and half in sled's memory,
    /// and a failed fsync may have dropped dirty pages, so no later write is trusted.
    /// Nothing in the batch is acknowledged; a restart replays and checks the store.
    fn commit(&mut self, batch: &Batch) -> bool {
        match self.store.commit(batch) {
            Ok(()) => true,
            Err(e) => {
                tracing::error!("store commit failed; refusing all writes until restarted: {e}");
                self.failed = Some(e.to_string());
                false
            }
        }
    }
}
