//! A subscription as the application sees it: deliveries verified and decrypted, highest
//! precedence first, each handed out once even across reconnects, with acks batched
//! (one `Ack` per lane every 64 deliveries or 200 ms, never one per message) and signed
//! receipts sent for messages that ask for one — kept and sent again until the broker has
//! them, since a receipt is the proof of reading an auditor relies on.

use std::collections::VecDeque;
use std::time::Duration;

use ewx_proto::frame::{ExerciseFilter, RejectReason, Request, StartAt};
use ewx_proto::receipt::Receipt;
use ewx_proto::{Envelope, Payload, Precedence};
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::client::Client;
use crate::error::{Error, Result};

/// Acks are sent after this many deliveries of a lane…
const ACK_EVERY: usize = 64;
/// …or this long after the first unacked one.
const ACK_AFTER: Duration = Duration::from_millis(200);

/// A delivered message: checked end to end (signature, sender's rights) and decrypted.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// Subscription it came on.
    pub subscription: String,
    /// Broker log index (what acks name).
    pub log_index: u64,
    /// The envelope as the sender signed it.
    pub envelope: Envelope,
    /// The decrypted content; `None` only on a subscription opened with
    /// [`SubscriptionOptions::sealed`] (then open `envelope` yourself, if at all).
    pub payload: Option<Payload>,
}

/// What a lane carries: a delivery, or why the message at an index could not be opened.
pub(crate) type Item = std::result::Result<Delivery, (u64, Error)>;
/// One sender per precedence (index = `Precedence as usize`), so a full ROUTINE buffer
/// never holds back a FLASH delivery.
pub(crate) type Lanes = [mpsc::Sender<Item>; 4];

/// How a subscription starts and behaves.
#[derive(Debug, Clone, Copy)]
pub struct SubscriptionOptions {
    /// Where to start (`Resume` continues after the last ack of this name).
    pub from: StartAt,
    /// Real, exercise or both.
    pub filter: ExerciseFilter,
    /// Acknowledge deliveries automatically once handed out (batched).
    pub auto_ack: bool,
    /// Send a signed receipt for every delivery whose sender asked for one.
    pub auto_receipt: bool,
    /// Hand deliveries out as they came, neither verified nor decrypted (`payload` is
    /// `None`): for relays and load tests that must not spend the receiver's CPU.
    pub sealed: bool,
}

impl Default for SubscriptionOptions {
    /// Resume, all traffic, automatic acks and receipts.
    fn default() -> Self {
        Self {
            from: StartAt::Resume,
            filter: ExerciseFilter::All,
            auto_ack: true,
            auto_receipt: true,
            sealed: false,
        }
    }
}

/// An open subscription.
#[derive(Debug)]
pub struct Subscription {
    client: Client,
    name: String,
    /// One receiver per precedence, lowest first.
    rx: [mpsc::Receiver<Item>; 4],
    opts: SubscriptionOptions,
    /// Highest index handed out per lane (drops redeliveries after a resume).
    handed: [Option<u64>; 4],
    /// Highest index handed out but not yet acked per lane, how many since the last ack
    /// attempt, and since when (the first one, or the last failed attempt).
    pending: [Option<(u64, usize, Instant)>; 4],
    /// Signed receipts the broker has not taken yet (it was unreachable, or a cluster
    /// between leaders), and when the last attempt failed.
    unsent: VecDeque<Receipt>,
    unsent_since: Option<Instant>,
}

impl Subscription {
    pub(crate) fn new(
        client: Client,
        name: String,
        rx: [mpsc::Receiver<Item>; 4],
        opts: SubscriptionOptions,
    ) -> Self {
        Self {
            client,
            name,
            rx,
            opts,
            handed: [None; 4],
            pending: [None; 4],
            unsent: VecDeque::new(),
            unsent_since: None,
        }
    }

    /// Its name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The next delivery — the highest precedence waiting first — or `None` when the
    /// client has given up. A message that fails verification or decryption comes as
    /// `Err(Error::Undeliverable)` (and is acked like any other: it will not get better).
    pub async fn next(&mut self) -> Option<Result<Delivery>> {
        loop {
            let deadline = self
                .pending
                .iter()
                .flatten()
                .map(|p| p.2)
                .chain(self.unsent_since)
                .min()
                .map(|since| since + ACK_AFTER);
            let item = {
                let [routine, priority, immediate, flash] = &mut self.rx;
                tokio::select! {
                    biased;
                    Some(d) = flash.recv() => Some(d),
                    Some(d) = immediate.recv() => Some(d),
                    Some(d) = priority.recv() => Some(d),
                    Some(d) = routine.recv() => Some(d),
                    _ = sleep_until(deadline), if deadline.is_some() => None,
                    _ = self.client.inner.dead.cancelled() => return None,
                }
            };
            let Some(item) = item else {
                self.flush_receipts().await;
                self.flush_acks(false).await;
                continue;
            };
            let (lane, index) = match &item {
                Ok(d) => (d.envelope.header().precedence as usize, d.log_index),
                Err((i, _)) => (Precedence::Routine as usize, *i),
            };
            if self.handed[lane].is_some_and(|h| index <= h) {
                continue; // redelivered after a resume: already handed out
            }
            self.handed[lane] = Some(index);
            if self.opts.auto_ack {
                let p = self.pending[lane].get_or_insert((index, 0, Instant::now()));
                p.0 = index;
                p.1 += 1;
                if p.1 >= ACK_EVERY {
                    self.flush_acks(true).await;
                }
            }
            return Some(match item {
                Ok(d) => {
                    // a receipt says "read": never for a delivery left sealed
                    if self.opts.auto_receipt && d.payload.is_some() && d.envelope.header().receipt
                    {
                        self.unsent.push_back(self.client.sign_receipt(&d.envelope));
                        // after a failure, only the timer tries again (never once per
                        // delivery while the broker is away)
                        if self.unsent_since.is_none() {
                            self.flush_receipts().await;
                        }
                    }
                    Ok(d)
                }
                Err((log_index, e)) => Err(Error::Undeliverable {
                    log_index,
                    reason: e.to_string(),
                }),
            });
        }
    }

    /// Send the pending acks (`only_full`: just the lanes that reached [`ACK_EVERY`] or
    /// their deadline).
    async fn flush_acks(&mut self, only_full: bool) {
        for (lane, p) in Precedence::ALL.into_iter().zip(0..4) {
            let Some((through, count, since)) = self.pending[p] else {
                continue;
            };
            if only_full && count < ACK_EVERY && since.elapsed() < ACK_AFTER {
                continue;
            }
            match self.ack(lane, through).await {
                Ok(()) => self.pending[p] = None,
                Err(e) => {
                    // not now (reconnecting, the subscription not reopened yet, a
                    // replica behind): again after ACK_AFTER or ACK_EVERY more
                    // deliveries, never in a loop
                    tracing::debug!("ack not sent yet: {e}");
                    self.pending[p] = Some((through, 0, Instant::now()));
                }
            }
        }
    }

    /// Send the receipts not yet taken, oldest first; keep those that may go through
    /// later, drop (with a warning) those the broker refuses for good.
    async fn flush_receipts(&mut self) {
        while let Some(r) = self.unsent.front() {
            let id = r.id;
            match self.client.request(&Request::Receipt(r.clone())).await {
                Ok(_) => {}
                Err(Error::Rejected { reason, detail })
                    if !matches!(
                        reason,
                        RejectReason::Unavailable | RejectReason::RateLimited
                    ) =>
                {
                    tracing::warn!(%id, "receipt refused by the broker: {reason:?}: {detail}");
                }
                Err(e) => {
                    tracing::debug!(%id, "receipt not sent yet: {e}");
                    self.unsent_since = Some(Instant::now());
                    return;
                }
            }
            self.unsent.pop_front();
        }
        self.unsent_since = None;
    }

    /// Acknowledge every delivery of `precedence` up to `through`: on resume the broker
    /// starts after it.
    ///
    /// # Errors
    /// `Rejected` or `Connect`.
    pub async fn ack(&self, precedence: Precedence, through: u64) -> Result<()> {
        let req = Request::Ack {
            name: self.name.clone(),
            precedence,
            through,
        };
        self.client.request(&req).await.map(|_| ())
    }

    /// Acknowledge one delivery (its lane, its index).
    ///
    /// # Errors
    /// As [`Subscription::ack`].
    pub async fn ack_delivery(&self, d: &Delivery) -> Result<()> {
        self.ack(d.envelope.header().precedence, d.log_index).await
    }

    /// Send every pending receipt and automatic ack now (e.g. before closing).
    ///
    /// # Errors
    /// `AckPending` if a receipt or an ack could not be sent.
    pub async fn flush(&mut self) -> Result<()> {
        self.flush_receipts().await;
        self.flush_acks(false).await;
        if !self.unsent.is_empty() {
            return Err(Error::AckPending(format!(
                "{} receipts not sent: the broker is not reachable",
                self.unsent.len()
            )));
        }
        if self.pending.iter().any(Option::is_some) {
            return Err(Error::AckPending("the broker is not reachable".into()));
        }
        Ok(())
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}
