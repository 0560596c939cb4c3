//! Signature verification for publishes, batched across connections. Verifying an
//! ed25519 signature is the largest cost of accepting a bulletin (≈ 30 µs); verifying n
//! at once costs about half that each. One thread takes whatever publishes are waiting,
//! verifies them as one batch, and falls back to one-by-one only when the batch fails,
//! so each publish still gets its own verdict. A publish that finds no other being
//! verified is checked at once on its own task: no batch is waited for and no thread hop
//! paid, so latency at quiet and moderate rates does not change. Under heavy load —
//! publishes arriving on average less than [`HEAVY_GAP`] apart — every publish goes to
//! the batch (checking the first of each burst alone cost a third of all verification
//! time at saturation).
//!
//! Batch verification (ed25519-dalek `verify_batch`) and the strict single check accept
//! the same honestly made signatures. A signer who deliberately adds a small-order
//! component to its own `R` can get one accepted by a batch about 1 time in 8 that the
//! strict check refuses; only the key holder can do that, to its own messages, and every
//! receiver and auditor verifies strictly and names it (DESIGN.md, "Design changes").

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use ewx_proto::{Envelope, Error as ProtoError, Roster};
use tokio::sync::{mpsc, oneshot};

use super::fanout::now_us;

/// Most signatures verified in one batch.
const MAX_BATCH: usize = 64;

/// Publishes waiting for the verifier, at most; callers wait for room beyond this.
const QUEUE: usize = 4 * MAX_BATCH;
/// Publishes arriving closer than this on average (more than 5 000/s) are heavy load.
const HEAVY_GAP: Duration = Duration::from_micros(200);

struct Job {
    envelope: Envelope,
    roster: Arc<Roster>,
    reply: oneshot::Sender<Result<Envelope, ProtoError>>,
}

/// Handle to the verifying thread; it stops when every handle is dropped.
#[derive(Clone)]
pub(crate) struct Verifier {
    jobs: mpsc::Sender<Job>,
    /// Publishes being verified now, inline or queued.
    busy: Arc<AtomicUsize>,
    /// When the last publish arrived ([`now_us`]), and the average gap between arrivals
    /// (µs, moving: each new gap counts 1/8).
    arrived_us: Arc<AtomicU64>,
    gap_us: Arc<AtomicU64>,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier").finish_non_exhaustive()
    }
}

impl Verifier {
    /// Start the verifying thread.
    ///
    /// # Errors
    /// If the thread cannot be spawned.
    pub fn start() -> std::io::Result<Self> {
        let (jobs, rx) = mpsc::channel(QUEUE);
        std::thread::Builder::new()
            .name("ewx-verify".into())
            .spawn(move || run(rx))?;
        Ok(Self {
            jobs,
            busy: Arc::default(),
            arrived_us: Arc::default(),
            gap_us: Arc::new(AtomicU64::new(u64::MAX / 8)),
        })
    }

    /// Verify the envelope's signature and its sender's right to publish it under
    /// `roster` (what [`Envelope::verify`] checks), and give it back.
    ///
    /// # Errors
    /// Why it does not verify (or that the verifier has stopped).
    pub async fn verify(
        &self,
        envelope: Envelope,
        roster: Arc<Roster>,
    ) -> Result<Envelope, ProtoError> {
        // FLASH and IMMEDIATE never queue behind a batch
        let urgent = envelope.header().precedence >= ewx_proto::Precedence::Immediate;
        let alone = self.busy.fetch_add(1, Ordering::AcqRel) == 0 && !self.heavy();
        let _busy = Busy(&self.busy);
        if alone || urgent {
            return envelope.verify(&roster).map(|_| ()).map(|()| envelope);
        }
        let (reply, answer) = oneshot::channel();
        let job = Job {
            envelope,
            roster,
            reply,
        };
        if self.jobs.send(job).await.is_err() {
            return Err(stopped());
        }
        answer.await.unwrap_or_else(|_| Err(stopped()))
    }
}

impl Verifier {
    /// Note an arrival; are publishes arriving at a heavy rate? (Racing updates may lose
    /// a gap now and then: this is a hint, not a count.)
    fn heavy(&self) -> bool {
        let now = now_us();
        let gap = now.saturating_sub(self.arrived_us.swap(now, Ordering::Relaxed));
        let avg = self.gap_us.load(Ordering::Relaxed);
        let avg = avg - avg / 8 + gap.min(u64::MAX / 16) / 8;
        self.gap_us.store(avg, Ordering::Relaxed);
        avg < HEAVY_GAP.as_micros() as u64
    }
}

/// Decrements the busy count however a verification ends.
struct Busy<'a>(&'a AtomicUsize);

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

fn stopped() -> ProtoError {
    ProtoError::Malformed {
        what: "publish",
        reason: "the signature verifier has stopped".into(),
    }
}

/// Each envelope's verdict, as [`Envelope::verify`] would give it: one batch when all are
/// good, else each one alone (a failed batch says nothing about which signatures are good:
/// `verify_batch` stops at the first envelope that breaks a rule before it checks any).
pub(crate) fn verify_all(items: &[(&Envelope, &Roster)]) -> Vec<Result<(), ProtoError>> {
    if items.len() > 1 && ewx_proto::verify_batch(items).is_ok() {
        return items.iter().map(|_| Ok(())).collect();
    }
    items
        .iter()
        .map(|(env, roster)| env.verify(roster).map(|_| ()))
        .collect()
}

fn run(mut rx: mpsc::Receiver<Job>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while let Some(first) = rx.blocking_recv() {
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let items: Vec<(&Envelope, &Roster)> = batch
            .iter()
            .map(|j| (&j.envelope, j.roster.as_ref()))
            .collect();
        let verdicts = verify_all(&items);
        for (job, verdict) in batch.drain(..).zip(verdicts) {
            // the publisher may have gone away: nothing to tell
            let _ = job.reply.send(verdict.map(|()| job.envelope));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::fixture::{roster, sealed};
    use ewx_proto::{Level, Precedence};

    /// What a misbehaving but enrolled node could send: another node's envelope with
    /// the sender changed, re-signed by `signer`.
    fn resigned(env: &Envelope, signer: &str) -> Envelope {
        let mut h = env.header().clone();
        h.sender = ewx_testkit::id(signer);
        let mut header = Vec::new();
        ciborium::into_writer(&h, &mut header).unwrap();
        Envelope::sign(
            header,
            env.ciphertext().to_vec(),
            &ewx_testkit::keys(signer),
        )
        .unwrap()
    }

    /// A batch with a forged signature ahead of an envelope that breaks a publish rule:
    /// every envelope gets its own verdict, and the forgery is caught (a failed batch
    /// must not vouch for the envelopes before the one it names).
    #[test]
    fn a_failed_batch_gives_each_envelope_its_own_verdict() {
        let roster = roster();
        let seal = |seq| {
            sealed(
                &roster,
                "UA",
                "ew.air",
                (Level::Amber, "CORE"),
                Precedence::Routine,
                seq,
            )
        };
        let (good, victim, later) = (seal(1), seal(2), seal(3));
        let forged = victim.with_signature(ewx_proto::keys::Signature([7; 64]));
        // JP signs an early warning it has no grant for: a rule failure, not a bad signature
        let ruled = resigned(&later, "JP");
        let items = [
            (&good, &roster),
            (&forged, &roster),
            (&ruled, &roster),
            (&later, &roster),
        ];
        let verdicts = verify_all(&items);
        assert!(verdicts[0].is_ok(), "{:?}", verdicts[0]);
        assert!(
            matches!(verdicts[1], Err(ProtoError::BadSignature { .. })),
            "the forgery passed: {:?}",
            verdicts[1]
        );
        assert!(
            matches!(verdicts[2], Err(ProtoError::NotPermitted(_))),
            "{:?}",
            verdicts[2]
        );
        assert!(verdicts[3].is_ok(), "{:?}", verdicts[3]);
        // and a batch of good ones passes as one
        assert!(
            verify_all(&[(&good, &roster), (&later, &roster)])
                .iter()
                .all(Result::is_ok)
        );
    }
}
