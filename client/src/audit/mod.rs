//! Auditing without trusting the broker. The checks are `ewx_proto::audit`'s; this module
//! feeds them from an [`AuditSource`] — the broker's audit API or a store copy — so
//! [`verify`], [`receipts`] and [`bundle`] are each written once for both, and
//! [`witness_once`] runs one witness round against the broker.

mod source;

use std::collections::HashMap;

use ewx_proto::audit::{Chain, Entry, Event, Judgement, Need, ReceiptScan, Verifier, Witness};
use ewx_proto::frame::{Request, Response};
use ewx_proto::receipt::Receipt;
use ewx_proto::{MessageId, Roster};

pub use ewx_proto::audit::{Bundle, BundleReport, Failure, Summary, Witnessed, pick_checkpoint};
pub use source::AuditSource;

use crate::Client;
use crate::error::{Error, Result};

/// Verify a whole log: replay and check every entry, fetching the envelopes and rosters
/// each page names, then every checkpoint (with the source's consistency proofs where it
/// gives them). `progress(done, total)` is called after each page.
///
/// # Errors
/// `Unsound` with the first bad index for a log that does not verify; any other error
/// if the source could not be read.
pub async fn verify<S: AuditSource>(
    source: &S,
    anchor: Roster,
    min_witnesses: usize,
    progress: &mut (dyn FnMut(u64, u64) + Send),
) -> Result<Summary> {
    let total = source.head().await?;
    let mut v = Verifier::new(anchor)?;
    while v.len() < total {
        let page = source.entries(v.len()).await?;
        if page.is_empty() {
            break;
        }
        let mut fetched = (HashMap::new(), HashMap::new());
        for bytes in &page {
            match Verifier::needs(bytes) {
                Need::Envelope(i) => {
                    if let Some(b) = source.envelope(i).await? {
                        fetched.0.insert(i, b);
                    }
                }
                Need::Roster(version) if !fetched.1.contains_key(&version) => {
                    if let Some(b) = source.roster(version).await? {
                        fetched.1.insert(version, b);
                    }
                }
                Need::Roster(_) | Need::Nothing => {}
            }
        }
        for bytes in &page {
            v.push(bytes, &mut fetched).map_err(Error::Unsound)?;
        }
        progress(v.len(), total);
    }
    let checkpoints = all_checkpoints(source, 0).await?;
    let sizes: Vec<u64> = checkpoints.iter().filter_map(|c| size_of(c)).collect();
    let mut proofs = HashMap::new();
    for pair in sizes.windows(2) {
        if let Some(p) = source.consistency_proof(pair[0], pair[1]).await? {
            proofs.insert((pair[0], pair[1]), p);
        }
    }
    v.finish(&checkpoints, &proofs, min_witnesses)
        .map_err(Error::Unsound)
}

fn size_of(checkpoint: &[u8]) -> Option<u64> {
    let signed = ewx_proto::checkpoint::SignedCheckpoint::decode(checkpoint).ok()?;
    Some(signed.checkpoint().ok()?.size)
}

/// Every checkpoint of `from_size` entries and more, page by page. Stops at a
/// checkpoint that does not decode or does not move forward (a damaged store or a lying
/// broker): the verifier then reports it, instead of this asking for the same page again.
async fn all_checkpoints<S: AuditSource>(source: &S, from_size: u64) -> Result<Vec<Vec<u8>>> {
    let mut out: Vec<Vec<u8>> = Vec::new();
    let mut from = from_size;
    loop {
        let page = source.checkpoints(from).await?;
        let next = page.last().and_then(|c| size_of(c)).map(|s| s + 1);
        let last_page = page.is_empty();
        out.extend(page);
        match next {
            Some(n) if !last_page && n > from => from = n,
            _ => return Ok(out),
        }
    }
}

/// Who received and acknowledged a message: its log index and every `Receipt` entry
/// for it (check each against the roster).
///
/// # Errors
/// `Audit` if the message is not in the log; any error reading the source.
pub async fn receipts<S: AuditSource>(source: &S, id: &MessageId) -> Result<(u64, Vec<Receipt>)> {
    let (mut from, mut scan) = (0u64, ReceiptScan::new(*id));
    loop {
        let page = source.entries(from).await?;
        let Some(last) = page.last() else { break };
        // continue after the last entry seen (by its own index: a damaged store may have
        // gaps, and counting entries would read some twice)
        let next = Entry::decode(last).map_or(from + page.len() as u64, |e| e.index + 1);
        for bytes in &page {
            scan.observe(bytes)?;
        }
        if next <= from {
            break;
        }
        from = next;
    }
    scan.finish()
        .ok_or_else(|| Error::Audit(format!("message {id} is not in {}", source.place())))
}

/// Build the offline proof of one message: its entry (found by replaying the chain), a
/// checkpoint covering it (the most witnessed), the inclusion proof (the source's, or
/// computed from the replayed entries), the envelope and the roster then in force.
///
/// # Errors
/// `Audit` if the message is not in the log, no checkpoint covers it yet, or its envelope
/// or roster is gone; any error reading the source.
pub async fn bundle<S: AuditSource>(source: &S, id: &MessageId) -> Result<Bundle> {
    let mut chain = Chain::new();
    let (mut roster_version, mut found) = (None, None);
    while found.is_none() {
        let page = source.entries(chain.len()).await?;
        if page.is_empty() {
            break;
        }
        for bytes in page {
            let entry = chain.push(&bytes)?;
            match entry.event {
                _ if found.is_some() => {}
                Event::RosterChanged { version, .. } => roster_version = Some(version),
                Event::Published {
                    id: m, log_index, ..
                } if &m == id => found = Some((entry.index, bytes, log_index)),
                _ => {}
            }
        }
    }
    let missing = |what: String| Error::Audit(what);
    let (index, entry, log_index) =
        found.ok_or_else(|| missing(format!("message {id} is not in {}", source.place())))?;
    let checkpoints = all_checkpoints(source, index + 1).await?;
    let (checkpoint, size) = pick_checkpoint(&checkpoints, index)
        .ok_or_else(|| missing("no checkpoint covers the message yet".into()))?;
    let proof = match source.inclusion_proof(index, size).await? {
        Some(p) => p,
        None => {
            while chain.len() < size {
                let page = source.entries(chain.len()).await?;
                if page.is_empty() {
                    break;
                }
                for bytes in page {
                    chain.push(&bytes)?;
                }
            }
            chain.tree().inclusion_proof(index, size)?
        }
    };
    let envelope = source
        .envelope(log_index)
        .await?
        .ok_or_else(|| missing(format!("envelope {log_index} was pruned by retention")))?;
    let version = roster_version.ok_or_else(|| missing("the log names no roster".into()))?;
    let roster = source
        .roster(version)
        .await?
        .ok_or_else(|| missing(format!("roster version {version} is missing")))?;
    Ok(Bundle {
        v: 1,
        index,
        entry,
        envelope,
        checkpoint,
        proof,
        roster,
    })
}

/// One round of witnessing: fetch the broker's newest checkpoint, judge it against
/// `seen` (the last checkpoint this witness accepted, as stored bytes), and co-sign it
/// if it extends what was seen. Returns the outcome and the checkpoint to remember.
///
/// # Errors
/// If the broker cannot be reached or sends something unreadable.
pub async fn witness_once(
    client: &Client,
    seen: Option<&[u8]>,
) -> Result<(Witnessed, Option<Vec<u8>>)> {
    let witness = Witness::new(client.roster().broker_key()?, seen)?;
    let listed = client.checkpoints(witness.from_size()).await?;
    let newest = listed.last().cloned();
    let mut judgement = witness.judge(newest.as_deref())?;
    if let (Judgement::NeedProof { old, new }, Some(n)) = (&judgement, &newest) {
        let req = Request::ConsistencyProof {
            old: *old,
            new: *new,
        };
        let Response::Proof { hashes } = client.request(&req).await? else {
            return Err(Error::Unexpected("no consistency proof".into()));
        };
        judgement = witness.judge_proof(n, &hashes)?;
    }
    match (judgement, newest) {
        (Judgement::Cosign, Some(newest)) => {
            let signed = ewx_proto::checkpoint::SignedCheckpoint::decode(&newest)?;
            let size = signed.checkpoint()?.size;
            let cosignature = signed.cosign(client.keys());
            client
                .request(&Request::Cosign { size, cosignature })
                .await?;
            Ok((Witnessed::Cosigned { size }, Some(newest)))
        }
        (Judgement::Decided(outcome), _) => Ok((outcome, witness.seen())),
        (other, _) => Err(Error::Unexpected(format!("witness judgement {other:?}"))),
    }
}
