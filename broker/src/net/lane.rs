//! Delivery lanes: one task and one QUIC stream per (subscription, precedence). A lane
//! first catches up from the log to the durable head, then takes what the fan-out sends
//! it as messages are committed. Its live queue is bounded (and so is what all queues
//! hold together): when it is full the lane is marked lagged and catches up from the log
//! again, so a slow subscriber never holds back the writer or anyone else, and loses
//! nothing.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use ewx_net::CloseCode;
use ewx_proto::frame::delivery_frame_head;
use ewx_proto::{Envelope, Precedence};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::Shared;
use super::fanout::{Lag, Progress, Queued, Registered};
use crate::core::subscription::{LaneStart, SubscriptionSpec, deliverable};

/// Messages read from the log per catch-up step of a lane…
const CATCH_UP_BATCH: usize = 256;
/// Live messages written to the stream in one call, at most.
const LIVE_BATCH: usize = 64;
/// …and bytes, so a stalled lane pins little memory.
const CATCH_UP_BYTES: usize = 1 << 20;

/// One ordered delivery lane: a subscription's messages of one precedence.
pub(super) struct Lane {
    shared: Arc<Shared>,
    conn: quinn::Connection,
    spec: Arc<SubscriptionSpec>,
    precedence: Precedence,
    next: u64,
    progress: Arc<Progress>,
}

impl Lane {
    pub(super) fn new(
        shared: Arc<Shared>,
        conn: quinn::Connection,
        spec: Arc<SubscriptionSpec>,
        start: LaneStart,
    ) -> Self {
        Self {
            shared,
            conn,
            spec,
            precedence: start.precedence,
            next: start.start,
            progress: Arc::default(),
        }
    }

    /// Deliver until cancelled. If delivery fails while the subscription is still wanted,
    /// the connection is closed: a silently dead lane would lose warnings, a closed
    /// connection is seen, and the subscriber resumes from its cursor.
    pub(super) async fn run(mut self, cancel: CancellationToken) {
        let (tx, mut rx) = mpsc::channel(self.shared.config.limits.live_buffer);
        let lag = Arc::new(Lag::default());
        let routes = self.shared.routes.clone();
        // registered before the first catch-up reads the head: nothing committed in
        // between is missed (and what comes twice is skipped by index)
        let registered = Registered::new(
            &routes,
            self.spec.clone(),
            self.precedence,
            tx,
            &lag,
            &self.progress,
        );
        let mut stream = None;
        let result = tokio::select! {
            _ = cancel.cancelled() => Ok(()),
            r = self.deliver(&mut stream, &mut rx, &lag) => r,
        };
        drop(registered);
        rx.close(); // what is left is released as the queue drops
        if let Err(e) = result {
            if !cancel.is_cancelled() {
                tracing::warn!("delivery lane failed, closing the connection: {e}");
                CloseCode::LaneFailed.close(&self.conn);
            }
        }
    }

    async fn deliver(
        &mut self,
        stream: &mut Option<quinn::SendStream>,
        live: &mut mpsc::Receiver<Arc<Queued>>,
        lag: &Lag,
    ) -> crate::Result<()> {
        self.catch_up(stream).await?;
        let mut frames = Vec::with_capacity(2 * LIVE_BATCH);
        loop {
            let m = tokio::select! {
                m = live.recv() => match m {
                    Some(m) => Some(m),
                    None => return Ok(()),
                },
                () = lag.wake.notified() => None,
            };
            // a message dropped from a full queue was committed before `m` was queued, so
            // its mark is seen here: catch up (through `m` too) before going on
            if lag.take() {
                tracing::debug!("live queue overflowed; catching up from the log");
                self.catch_up(stream).await?;
            }
            let Some(first) = m else { continue };
            // whatever else is queued goes out in the same write (one call into QUIC)
            let mut batch = vec![first];
            while batch.len() < LIVE_BATCH {
                match live.try_recv() {
                    Ok(q) => batch.push(q),
                    Err(_) => break,
                }
            }
            for q in &batch {
                self.frame(&q.stored, &mut frames)?;
            }
            if !frames.is_empty() {
                self.write(stream, &mut frames).await?;
            }
            self.progress.report(live.len() as u64, true);
        }
    }

    /// The delivery frame of a live message, if this lane still owes it.
    fn frame(&mut self, m: &crate::log::Stored, frames: &mut Vec<Bytes>) -> crate::Result<()> {
        if m.index < self.next {
            return Ok(()); // delivered by a catch-up already
        }
        self.next = m.index + 1;
        // routed under the roster at commit time; a roster update since may have narrowed
        // this node's grants
        if !deliverable(&self.spec, &self.shared.roster.get(), &m.header) {
            return Ok(());
        }
        let bytes = match &m.bytes {
            Some(b) => Some(b.clone()),
            None => self.shared.log.message(m.index)?,
        };
        match bytes {
            Some(b) => {
                let head = delivery_frame_head(&self.spec.name, m.index, b.len(), usize::MAX)?;
                frames.push(Bytes::from(head));
                frames.push(b);
            }
            None => tracing::debug!(index = m.index, "pruned before delivery"),
        }
        Ok(())
    }

    async fn catch_up(&mut self, stream: &mut Option<quinn::SendStream>) -> crate::Result<()> {
        loop {
            let head = self.shared.head.next_index.load(Ordering::Acquire);
            let batch = self.shared.log.lane(
                self.precedence,
                self.next,
                head,
                CATCH_UP_BATCH,
                CATCH_UP_BYTES,
            )?;
            if batch.is_empty() {
                // nothing stored below the head is left for this lane
                self.next = self.next.max(head);
                self.progress.report(0, false);
                return Ok(());
            }
            let behind = head.saturating_sub(self.next);
            self.progress.report(behind, true);
            // one page of the log (≤ CATCH_UP_BATCH messages, ≈ CATCH_UP_BYTES) in one write
            let roster = self.shared.roster.get();
            let mut frames = Vec::with_capacity(2 * batch.len());
            for (index, bytes) in batch {
                self.next = index + 1;
                // stored after a full check at publish: the routing fields are enough here
                match Envelope::stored_header(&bytes, usize::MAX) {
                    Ok(h) if deliverable(&self.spec, &roster, &h) => {
                        let head =
                            delivery_frame_head(&self.spec.name, index, bytes.len(), usize::MAX)?;
                        frames.push(Bytes::from(head));
                        frames.push(bytes);
                    }
                    Ok(_) => {}
                    Err(e) => tracing::error!(index, "stored envelope does not decode: {e}"),
                }
            }
            if !frames.is_empty() {
                self.write(stream, &mut frames).await?;
            }
        }
    }

    /// Write frames on the lane's stream (opened on first use), and empty `frames`.
    async fn write(
        &self,
        stream: &mut Option<quinn::SendStream>,
        frames: &mut Vec<Bytes>,
    ) -> crate::Result<()> {
        // each delivery is two frames: its head and the stored envelope
        self.shared.metrics.delivered(frames.len() as u64 / 2);
        let s = match stream {
            Some(s) => s,
            None => {
                let s = self
                    .conn
                    .open_uni()
                    .await
                    .map_err(|e| crate::Error::Transport(e.to_string()))?;
                // higher precedence streams are sent first by QUIC
                let _ = s.set_priority(self.precedence as i32);
                stream.insert(s)
            }
        };
        let r = s.write_all_chunks(frames).await;
        frames.clear();
        r.map_err(|e| crate::Error::Transport(e.to_string()))
    }
}
