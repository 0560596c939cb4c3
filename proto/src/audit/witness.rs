//! The witness's judgement. A partner remembers the last broker checkpoint it accepted;
//! shown a newer one, it co-signs only if the newer one extends the old (a verified
//! consistency proof between them). So a broker that showed two partners different
//! histories is caught by whichever of them it shows the other history next. Fetching
//! the checkpoints and the proof is the caller's I/O; every decision is here.

use crate::checkpoint::{Checkpoint, SignedCheckpoint};
use crate::error::Result;
use crate::ids::Digest32;
use crate::keys::SignPublic;
use crate::merkle::verify_consistency;

/// What a witness concluded about the broker's newest checkpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Witnessed {
    /// Consistent with everything seen before: co-signed (and sent to the broker).
    Cosigned {
        /// Size of the checkpoint co-signed.
        size: u64,
    },
    /// Nothing new since the last checkpoint seen.
    UpToDate {
        /// Its size.
        size: u64,
    },
    /// The broker has no checkpoint yet.
    NoCheckpoint,
    /// The broker showed a history that is not an extension of the one seen before.
    Fork {
        /// What does not fit.
        reason: String,
    },
}

/// The next step after looking at the broker's newest checkpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Judgement {
    /// Decided without a proof (nothing new, no checkpoint, a fork).
    Decided(Witnessed),
    /// The newest one is the first this witness sees: co-sign it.
    Cosign,
    /// Ask the broker for the consistency proof from `old` to `new` entries, then
    /// [`Witness::judge_proof`].
    NeedProof {
        /// Size of the checkpoint seen before.
        old: u64,
        /// Size of the newest one.
        new: u64,
    },
}

/// A witness's memory: the broker key and the last checkpoint it accepted.
#[derive(Debug, Clone)]
pub struct Witness {
    broker: SignPublic,
    seen: Option<(Checkpoint, Vec<u8>)>,
}

impl Witness {
    /// A witness of `broker` that last accepted `seen` (stored checkpoint bytes).
    ///
    /// # Errors
    /// If `seen` does not decode or is not signed by `broker`.
    pub fn new(broker: SignPublic, seen: Option<&[u8]>) -> Result<Self> {
        let seen = match seen {
            Some(b) => Some((SignedCheckpoint::decode(b)?.verify(&broker)?, b.to_vec())),
            None => None,
        };
        Ok(Self { broker, seen })
    }

    /// The size of the last checkpoint accepted (0: none): ask for checkpoints from here.
    pub fn from_size(&self) -> u64 {
        self.seen.as_ref().map_or(0, |(c, _)| c.size)
    }

    /// The checkpoint bytes to remember after a judgement that did not co-sign.
    pub fn seen(&self) -> Option<Vec<u8>> {
        self.seen.as_ref().map(|(_, b)| b.clone())
    }

    /// Look at the newest checkpoint the broker lists (`None`: it lists none).
    ///
    /// # Errors
    /// If the newest one does not decode or is not signed by the broker.
    pub fn judge(&self, newest: Option<&[u8]>) -> Result<Judgement> {
        let Some(newest) = newest else {
            return Ok(Judgement::Decided(match &self.seen {
                Some((c, _)) => Witnessed::Fork {
                    reason: format!(
                        "the broker no longer has the checkpoint of size {} seen before",
                        c.size
                    ),
                },
                None => Witnessed::NoCheckpoint,
            }));
        };
        let new = SignedCheckpoint::decode(newest)?.verify(&self.broker)?;
        let Some((old, _)) = &self.seen else {
            return Ok(Judgement::Cosign);
        };
        Ok(if new.size < old.size {
            Judgement::Decided(Witnessed::Fork {
                reason: format!(
                    "the broker's newest checkpoint covers {} entries, fewer than the {} seen before",
                    new.size, old.size
                ),
            })
        } else if new.size == old.size && new.root != old.root {
            Judgement::Decided(Witnessed::Fork {
                reason: format!("two different roots for size {}", new.size),
            })
        } else if new.size == old.size {
            Judgement::Decided(Witnessed::UpToDate { size: new.size })
        } else {
            Judgement::NeedProof {
                old: old.size,
                new: new.size,
            }
        })
    }

    /// After [`Judgement::NeedProof`]: co-sign if `proof` shows `newest` extends what was
    /// seen, else a fork.
    ///
    /// # Errors
    /// If `newest` does not decode or is not signed by the broker.
    pub fn judge_proof(&self, newest: &[u8], proof: &[Digest32]) -> Result<Judgement> {
        let new = SignedCheckpoint::decode(newest)?.verify(&self.broker)?;
        let Some((old, _)) = &self.seen else {
            return Ok(Judgement::Cosign);
        };
        Ok(
            match verify_consistency(old.size, new.size, &old.root, &new.root, proof) {
                Ok(()) => Judgement::Cosign,
                Err(e) => Judgement::Decided(Witnessed::Fork {
                    reason: e.to_string(),
                }),
            },
        )
    }
}
