//! Auditing without trusting the broker: replay the hash chain, rebuild the Merkle tree,
//! check every checkpoint signature, link and root, check consistency between
//! checkpoints, verify every published envelope (signature and sender rights) against the
//! roster in force when it was published, check every receipt, and count witnesses. The
//! same [`Verifier`] runs over a copied store (offline) or over the broker's audit API.

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::sync::Arc;

use ewx_proto::audit::{Chain, Event};
use ewx_proto::checkpoint::SignedCheckpoint;
use ewx_proto::frame::{Request, Response};
use ewx_proto::keys::SignPublic;
use ewx_proto::merkle::verify_consistency;
use ewx_proto::{Digest32, Envelope, MessageId, NodeId, Role, Roster, SignedRoster};

use crate::Client;
use crate::error::{Error, Result};

/// Envelopes verified per signature batch.
const BATCH: usize = 4096;

/// Where the log stops being sound.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// The first bad audit index.
    pub index: u64,
    /// What is wrong there.
    pub reason: String,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "first bad index: {} ({})", self.index, self.reason)
    }
}

fn fail(index: u64, reason: impl Into<String>) -> Failure {
    Failure {
        index,
        reason: reason.into(),
    }
}

/// What a sound log contains.
#[derive(Debug, Clone, Default)]
pub struct Summary {
    /// Audit entries.
    pub entries: u64,
    /// Signed checkpoints checked.
    pub checkpoints: usize,
    /// Entries after the last checkpoint (not yet signed by the broker).
    pub unsigned_tail: u64,
    /// Witnesses on the last checkpoint.
    pub witnesses: Vec<NodeId>,
    /// Envelopes whose signature and rights were verified.
    pub envelopes: u64,
    /// Envelopes already dropped by retention (their audit entries remain).
    pub pruned: u64,
    /// Distinct publishers.
    pub publishers: BTreeSet<NodeId>,
    /// Receipts verified.
    pub receipts: u64,
    /// Rosters that were in force.
    pub rosters: Vec<u64>,
    /// Time of the first and last entry.
    pub first_ms: u64,
    /// See `first_ms`.
    pub last_ms: u64,
    /// Root of the whole log.
    pub root: Digest32,
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let publishers: Vec<&str> = self.publishers.iter().map(NodeId::as_str).collect();
        writeln!(f, "entries      {}", self.entries)?;
        writeln!(
            f,
            "checkpoints  {} (unsigned tail: {} entries)",
            self.checkpoints, self.unsigned_tail
        )?;
        let w: Vec<&str> = self.witnesses.iter().map(NodeId::as_str).collect();
        writeln!(
            f,
            "witnesses    {} on the last checkpoint {}",
            w.len(),
            w.join(" ")
        )?;
        writeln!(
            f,
            "envelopes    {} verified, {} pruned by retention",
            self.envelopes, self.pruned
        )?;
        writeln!(f, "publishers   {}", publishers.join(" "))?;
        writeln!(f, "receipts     {}", self.receipts)?;
        writeln!(f, "rosters      versions {:?}", self.rosters)?;
        writeln!(
            f,
            "time         {} .. {} (ms since 1970)",
            self.first_ms, self.last_ms
        )?;
        write!(
            f,
            "verified: {} entries, {} checkpoints, {} envelopes, {} receipts, root {}",
            self.entries, self.checkpoints, self.envelopes, self.receipts, self.root
        )
    }
}

/// Where the verifier gets the envelopes and rosters the entries name.
pub trait Lookup {
    /// The envelope at a message-log index (`None`: pruned or missing).
    ///
    /// # Errors
    /// If the source cannot be read.
    fn envelope(&mut self, log_index: u64) -> Result<Option<Vec<u8>>>;
    /// A roster version that was in force.
    ///
    /// # Errors
    /// If the source cannot be read.
    fn roster(&mut self, version: u64) -> Result<Option<Vec<u8>>>;
}

struct Pending {
    index: u64,
    envelope: Envelope,
    roster: Arc<Roster>,
}

/// Replays a log entry by entry.
pub struct Verifier {
    chain: Chain,
    anchor: Roster,
    roster: Arc<Roster>,
    anchor_seen: bool,
    broker: SignPublic,
    pending: Vec<Pending>,
    summary: Summary,
}

impl fmt::Debug for Verifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Verifier({} entries)", self.chain.len())
    }
}

impl Verifier {
    /// Start with the roster the auditor trusts (its own file). Its broker key signs the
    /// checkpoints; it must appear among the rosters the log says were in force.
    ///
    /// # Errors
    /// `NoBroker` if the roster names no broker.
    pub fn new(anchor: Roster) -> Result<Self> {
        let broker = anchor
            .body()
            .nodes
            .iter()
            .find(|n| n.role == Role::Broker)
            .map(|n| n.sign)
            .ok_or(Error::NoBroker)?;
        Ok(Self {
            chain: Chain::new(),
            roster: Arc::new(anchor.clone()),
            anchor,
            anchor_seen: false,
            broker,
            pending: Vec::new(),
            summary: Summary::default(),
        })
    }

    /// Entries replayed so far.
    pub fn len(&self) -> u64 {
        self.chain.len()
    }

    /// No entries yet?
    pub fn is_empty(&self) -> bool {
        self.chain.is_empty()
    }

    /// Check the next entry.
    ///
    /// # Errors
    /// The first bad index and why.
    pub fn push(
        &mut self,
        bytes: &[u8],
        lookup: &mut dyn Lookup,
    ) -> std::result::Result<(), Failure> {
        let entry = self.chain.push(bytes).map_err(|e| match e {
            ewx_proto::Error::AuditChain { index, reason }
                if index > 0 && reason.contains("previous-hash") =>
            {
                fail(
                    index - 1,
                    format!("entry was altered: entry {index} names another hash for it"),
                )
            }
            ewx_proto::Error::AuditChain { index, reason } if reason.contains("expected") => {
                fail(index, format!("entry missing or out of order: {reason}"))
            }
            ewx_proto::Error::AuditChain { index, reason } => fail(index, reason),
            other => fail(self.chain.len(), other.to_string()),
        })?;
        let index = entry.index;
        if self.summary.entries == 0 {
            self.summary.first_ms = entry.time_ms;
        }
        self.summary.entries += 1;
        self.summary.last_ms = entry.time_ms;
        let looked = |e: Error| fail(index, format!("cannot read: {e}"));
        match entry.event {
            Event::RosterChanged { version, hash } => {
                let bytes = lookup.roster(version).map_err(looked)?.ok_or_else(|| {
                    fail(index, format!("roster version {version} is not available"))
                })?;
                let signed =
                    SignedRoster::decode(&bytes).map_err(|e| fail(index, e.to_string()))?;
                if signed.hash().map_err(|e| fail(index, e.to_string()))? != hash {
                    return Err(fail(
                        index,
                        format!("roster version {version} does not match the hash logged"),
                    ));
                }
                let first = self.summary.rosters.is_empty();
                let roster = if first {
                    signed.verify()
                } else {
                    signed.verify_update(&self.roster)
                };
                let roster =
                    roster.map_err(|e| fail(index, format!("roster version {version}: {e}")))?;
                self.anchor_seen |= roster.hash() == self.anchor.hash();
                self.summary.rosters.push(version);
                self.flush()?; // envelopes before the change use the old roster
                self.roster = Arc::new(roster);
            }
            Event::Published {
                id,
                sender,
                seq,
                log_index,
                envelope_hash,
                ..
            } => {
                self.summary.publishers.insert(sender.clone());
                let Some(bytes) = lookup.envelope(log_index).map_err(looked)? else {
                    self.summary.pruned += 1;
                    return Ok(());
                };
                let env = Envelope::decode(&bytes, usize::MAX)
                    .map_err(|e| fail(index, format!("envelope {log_index}: {e}")))?;
                let h = env.header();
                if env.hash() != envelope_hash || h.id != id || h.sender != sender || h.seq != seq {
                    return Err(fail(
                        index,
                        format!("envelope {log_index} does not match its audit entry"),
                    ));
                }
                self.pending.push(Pending {
                    index,
                    envelope: env,
                    roster: self.roster.clone(),
                });
                if self.pending.len() >= BATCH {
                    self.flush()?;
                }
            }
            Event::Receipt(r) => {
                r.verify(&self.roster)
                    .map_err(|e| fail(index, format!("receipt by {}: {e}", r.by)))?;
                self.summary.receipts += 1;
            }
            _ => {}
        }
        Ok(())
    }

    /// Verify the queued envelopes: one signature batch per core.
    fn flush(&mut self) -> std::result::Result<(), Failure> {
        let pending = std::mem::take(&mut self.pending);
        if pending.is_empty() {
            return Ok(());
        }
        let half = pending.len().div_ceil(2);
        let results: Vec<std::result::Result<(), (usize, ewx_proto::Error)>> =
            std::thread::scope(|s| {
                let handles: Vec<_> = pending
                    .chunks(half)
                    .enumerate()
                    .map(|(c, chunk)| {
                        s.spawn(move || {
                            let items: Vec<(&Envelope, &Roster)> =
                                chunk.iter().map(|p| (&p.envelope, &*p.roster)).collect();
                            ewx_proto::verify_batch(&items).map_err(|(i, e)| (c * half + i, e))
                        })
                    })
                    .collect();
                handles
                    .into_iter()
                    .map(|h| {
                        h.join().unwrap_or(Err((
                            0,
                            ewx_proto::Error::BadSignature { what: "envelope" },
                        )))
                    })
                    .collect()
            });
        let first_bad = results
            .into_iter()
            .filter_map(std::result::Result::err)
            .min_by_key(|(i, _)| *i);
        if let Some((i, e)) = first_bad {
            return Err(fail(pending[i].index, format!("envelope: {e}")));
        }
        self.summary.envelopes += pending.len() as u64;
        Ok(())
    }

    /// Check the checkpoints (oldest first) against the replayed log and count witnesses
    /// on the last one; `proofs` may supply the broker's consistency proof for each
    /// consecutive pair, which is then verified too.
    ///
    /// # Errors
    /// The first bad index and why.
    pub fn finish(
        mut self,
        checkpoints: &[Vec<u8>],
        broker_proofs: &HashMap<(u64, u64), Vec<Digest32>>,
        min_witnesses: usize,
    ) -> std::result::Result<Summary, Failure> {
        self.flush()?;
        let len = self.chain.len();
        if !self.summary.rosters.is_empty() && !self.anchor_seen {
            return Err(fail(
                0,
                "the roster you trust was never in force in this log",
            ));
        }
        let tree = self.chain.tree();
        let mut prev: Option<(u64, Digest32, Digest32)> = None; // size, root, body hash
        let mut last = None;
        for bytes in checkpoints {
            let signed = SignedCheckpoint::decode(bytes)
                .map_err(|e| fail(len, format!("unreadable checkpoint: {e}")))?;
            let size_hint = signed.checkpoint().map(|c| c.size).unwrap_or(len);
            let cp = signed
                .verify(&self.broker)
                .map_err(|e| fail(size_hint, format!("checkpoint of size {size_hint}: {e}")))?;
            let expected_prev = prev.map_or(Digest32::default(), |p| p.2);
            if cp.prev != expected_prev {
                return Err(fail(
                    cp.size,
                    "checkpoint does not link to the one before it",
                ));
            }
            if cp.size > len {
                return Err(fail(
                    len,
                    format!(
                        "the log ends at {len} entries but a checkpoint covers {}: entries are missing",
                        cp.size
                    ),
                ));
            }
            let from = prev.map_or(0, |p| p.0);
            let root = tree
                .root_at(cp.size)
                .map_err(|e| fail(cp.size, e.to_string()))?;
            if root != cp.root {
                return Err(fail(
                    from,
                    format!(
                        "entries {from}..{} differ from what the checkpoint of size {} signed",
                        cp.size, cp.size
                    ),
                ));
            }
            if let Some((old, old_root, _)) = prev {
                let proof = match broker_proofs.get(&(old, cp.size)) {
                    Some(p) => p.clone(),
                    None => tree
                        .consistency_proof(old, cp.size)
                        .map_err(|e| fail(cp.size, e.to_string()))?,
                };
                verify_consistency(old, cp.size, &old_root, &cp.root, &proof)
                    .map_err(|e| fail(cp.size, e.to_string()))?;
            }
            prev = Some((cp.size, cp.root, signed.body_hash()));
            last = Some((signed, cp.size));
            self.summary.checkpoints += 1;
        }
        if let Some((signed, size)) = last {
            self.summary.witnesses = signed
                .verify_cosignatures(&self.roster)
                .map_err(|e| fail(size, format!("witness: {e}")))?;
            self.summary.unsigned_tail = len - size;
        } else {
            self.summary.unsigned_tail = len;
        }
        if self.summary.witnesses.len() < min_witnesses {
            let size = prev.map_or(0, |p| p.0);
            return Err(fail(
                size,
                format!(
                    "the last checkpoint has {} witness co-signatures, {min_witnesses} required",
                    self.summary.witnesses.len()
                ),
            ));
        }
        self.summary.root = tree.root();
        Ok(self.summary)
    }
}

impl Lookup for ewx_broker::store::Store {
    fn envelope(&mut self, log_index: u64) -> Result<Option<Vec<u8>>> {
        Ok(self.message(log_index)?.map(|b| b.to_vec()))
    }
    fn roster(&mut self, version: u64) -> Result<Option<Vec<u8>>> {
        Ok(ewx_broker::store::Store::roster(self, version)?.map(|b| b.to_vec()))
    }
}

/// Verify a copy of a broker's data directory, offline. `progress(done, total)` is called
/// every 4096 entries.
///
/// # Errors
/// `Err(Ok(failure))` for an unsound log; `Err(Err(e))` if it could not be read at all.
pub fn verify_store(
    dir: &std::path::Path,
    anchor: Roster,
    min_witnesses: usize,
    progress: &mut dyn FnMut(u64, u64),
) -> std::result::Result<Summary, std::result::Result<Failure, Error>> {
    let mut store = ewx_broker::store::Store::open_for_audit(dir).map_err(|e| Err(e.into()))?;
    let total = store.audit_len().map_err(|e| Err(e.into()))?;
    let mut v = Verifier::new(anchor).map_err(Err)?;
    let mut from = 0;
    loop {
        let page = store
            .audit_range(from, from + 4096)
            .map_err(|e| Err(e.into()))?;
        if page.is_empty() {
            break;
        }
        from += page.len() as u64;
        for bytes in page {
            v.push(&bytes, &mut store).map_err(Ok)?;
        }
        progress(v.len(), total);
    }
    let checkpoints: Vec<Vec<u8>> = store
        .checkpoints()
        .map_err(|e| Err(e.into()))?
        .iter()
        .map(|c| c.to_vec())
        .collect();
    v.finish(&checkpoints, &HashMap::new(), min_witnesses)
        .map_err(Ok)
}

/// Envelopes and rosters fetched from the broker for one page of entries.
#[derive(Default)]
struct Fetched {
    envelopes: HashMap<u64, Option<Vec<u8>>>,
    rosters: HashMap<u64, Option<Vec<u8>>>,
}

impl Lookup for Fetched {
    fn envelope(&mut self, log_index: u64) -> Result<Option<Vec<u8>>> {
        Ok(self.envelopes.remove(&log_index).flatten())
    }
    fn roster(&mut self, version: u64) -> Result<Option<Vec<u8>>> {
        Ok(self.rosters.get(&version).cloned().flatten())
    }
}

/// One page of audit entries from `from` on (empty at the end of the log).
async fn audit_page(client: &Client, from: u64) -> Result<Vec<serde_bytes::ByteBuf>> {
    match client
        .request(&Request::AuditEntries { from, limit: 1024 })
        .await?
    {
        Response::AuditEntries { entries, .. } => Ok(entries),
        other => Err(Error::Unexpected(format!("{other:?}"))),
    }
}

async fn fetch_bytes(client: &Client, req: Request) -> Result<Option<Vec<u8>>> {
    match client.request(&req).await? {
        Response::Bytes { bytes } => Ok(bytes),
        other => Err(Error::Unexpected(format!("{other:?}"))),
    }
}

/// Verify the log of a running broker through its audit API (as an auditor node),
/// checking the broker's own consistency proofs between checkpoints too.
///
/// # Errors
/// `Err(Ok(failure))` for an unsound log; `Err(Err(e))` if the broker could not be read.
pub async fn verify_online(
    client: &Client,
    anchor: Roster,
    min_witnesses: usize,
    progress: &mut (dyn FnMut(u64, u64) + Send),
) -> std::result::Result<Summary, std::result::Result<Failure, Error>> {
    let total = match client.request(&Request::AuditHead).await.map_err(Err)? {
        Response::AuditHead { entries, .. } => entries,
        other => return Err(Err(Error::Unexpected(format!("{other:?}")))),
    };
    let mut v = Verifier::new(anchor).map_err(Err)?;
    let mut fetched = Fetched::default();
    while v.len() < total {
        let req = Request::AuditEntries {
            from: v.len(),
            limit: 1024,
        };
        let entries = match client.request(&req).await.map_err(Err)? {
            Response::AuditEntries { entries, .. } if !entries.is_empty() => entries,
            Response::AuditEntries { .. } => break,
            other => return Err(Err(Error::Unexpected(format!("{other:?}")))),
        };
        for bytes in &entries {
            match ewx_proto::audit::Entry::decode(bytes).map(|e| e.event) {
                Ok(Event::Published { log_index, .. }) => {
                    let b = fetch_bytes(client, Request::GetEnvelope { log_index })
                        .await
                        .map_err(Err)?;
                    fetched.envelopes.insert(log_index, b);
                }
                Ok(Event::RosterChanged { version, .. })
                    if !fetched.rosters.contains_key(&version) =>
                {
                    let b = fetch_bytes(client, Request::GetRoster { version })
                        .await
                        .map_err(Err)?;
                    fetched.rosters.insert(version, b);
                }
                _ => {}
            }
        }
        for bytes in &entries {
            v.push(bytes, &mut fetched).map_err(Ok)?;
        }
        progress(v.len(), total);
    }
    let mut checkpoints: Vec<Vec<u8>> = Vec::new();
    loop {
        let from_size = checkpoints
            .last()
            .and_then(|c| SignedCheckpoint::decode(c).ok()?.checkpoint().ok())
            .map_or(0, |c| c.size + 1);
        match client
            .request(&Request::Checkpoints { from_size })
            .await
            .map_err(Err)?
        {
            Response::Checkpoints { checkpoints: page } if !page.is_empty() => {
                checkpoints.extend(page.into_iter().map(|b| b.into_vec()))
            }
            Response::Checkpoints { .. } => break,
            other => return Err(Err(Error::Unexpected(format!("{other:?}")))),
        }
    }
    let sizes: Vec<u64> = checkpoints
        .iter()
        .filter_map(|c| SignedCheckpoint::decode(c).ok()?.checkpoint().ok())
        .map(|c| c.size)
        .collect();
    let mut proofs = HashMap::new();
    for pair in sizes.windows(2) {
        if let Response::Proof { hashes } = client
            .request(&Request::ConsistencyProof {
                old: pair[0],
                new: pair[1],
            })
            .await
            .map_err(Err)?
        {
            proofs.insert((pair[0], pair[1]), hashes);
        }
    }
    v.finish(&checkpoints, &proofs, min_witnesses).map_err(Ok)
}

/// The same from a running broker, as an auditor node.
///
/// # Errors
/// If the broker refuses or the message is not in its log.
pub async fn receipts_online(
    client: &Client,
    id: &MessageId,
) -> Result<(u64, Vec<ewx_proto::receipt::Receipt>)> {
    let (mut from, mut scan) = (0u64, ReceiptScan::new(id));
    loop {
        let entries = audit_page(client, from).await?;
        if entries.is_empty() {
            break;
        }
        from += entries.len() as u64;
        for bytes in &entries {
            scan.observe(bytes)?;
        }
    }
    scan.finish("the broker's log")
}

/// Collects a message's log index and its receipts while entries go by.
struct ReceiptScan<'a> {
    id: &'a MessageId,
    published: Option<u64>,
    receipts: Vec<ewx_proto::receipt::Receipt>,
}

impl<'a> ReceiptScan<'a> {
    fn new(id: &'a MessageId) -> Self {
        Self {
            id,
            published: None,
            receipts: Vec::new(),
        }
    }

    fn observe(&mut self, bytes: &[u8]) -> Result<()> {
        match ewx_proto::audit::Entry::decode(bytes)?.event {
            Event::Published { id, log_index, .. } if &id == self.id => {
                self.published = Some(log_index)
            }
            Event::Receipt(r) if &r.id == self.id => self.receipts.push(r),
            _ => {}
        }
        Ok(())
    }

    fn finish(self, place: &str) -> Result<(u64, Vec<ewx_proto::receipt::Receipt>)> {
        let log_index = self
            .published
            .ok_or_else(|| Error::File(format!("message {} is not in {place}", self.id)))?;
        Ok((log_index, self.receipts))
    }
}

/// Who received and acknowledged a message: its `Published` entry and every verified
/// `Receipt` for it, from a store copy.
///
/// # Errors
/// If the store cannot be read or the message is not in it.
pub fn receipts_in_store(
    dir: &std::path::Path,
    id: &MessageId,
) -> Result<(u64, Vec<ewx_proto::receipt::Receipt>)> {
    let store = ewx_broker::store::Store::open_for_audit(dir)?;
    let mut scan = ReceiptScan::new(id);
    for bytes in store.audit_range(0, u64::MAX)? {
        scan.observe(&bytes)?;
    }
    scan.finish("this log")
}

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

/// One round of witnessing: fetch the broker's newest checkpoint, check its signature and
/// that it extends `seen` (the last checkpoint this witness accepted, as stored bytes) by a
/// consistency proof, co-sign it and send the co-signature. Returns the outcome and the
/// checkpoint to remember.
///
/// # Errors
/// If the broker cannot be reached or sends something unreadable.
pub async fn witness_once(
    client: &Client,
    seen: Option<&[u8]>,
) -> Result<(Witnessed, Option<Vec<u8>>)> {
    let roster = client.roster();
    let broker = roster
        .body()
        .nodes
        .iter()
        .find(|n| n.role == Role::Broker)
        .map(|n| n.sign)
        .ok_or(Error::NoBroker)?;
    let old = match seen {
        Some(b) => {
            let s = SignedCheckpoint::decode(b)?;
            Some((s.verify(&broker)?, b.to_vec()))
        }
        None => None,
    };
    let from_size = old.as_ref().map_or(0, |(c, _)| c.size);
    let Response::Checkpoints { checkpoints } =
        client.request(&Request::Checkpoints { from_size }).await?
    else {
        return Err(Error::Unexpected("no checkpoint list".into()));
    };
    let Some(newest) = checkpoints.last().map(|b| b.to_vec()) else {
        return match old {
            Some((c, _)) => Ok((
                Witnessed::Fork {
                    reason: format!(
                        "the broker no longer has the checkpoint of size {} seen before",
                        c.size
                    ),
                },
                seen.map(<[u8]>::to_vec),
            )),
            None => Ok((Witnessed::NoCheckpoint, None)),
        };
    };
    let signed = SignedCheckpoint::decode(&newest)?;
    let new = signed.verify(&broker)?;
    if let Some((old, old_bytes)) = &old {
        if new.size == old.size {
            if new.root != old.root {
                return Ok((
                    Witnessed::Fork {
                        reason: format!("two different roots for size {}", new.size),
                    },
                    Some(old_bytes.clone()),
                ));
            }
            return Ok((
                Witnessed::UpToDate { size: new.size },
                Some(old_bytes.clone()),
            ));
        }
        let Response::Proof { hashes } = client
            .request(&Request::ConsistencyProof {
                old: old.size,
                new: new.size,
            })
            .await?
        else {
            return Err(Error::Unexpected("no proof".into()));
        };
        if let Err(e) = verify_consistency(old.size, new.size, &old.root, &new.root, &hashes) {
            return Ok((
                Witnessed::Fork {
                    reason: e.to_string(),
                },
                Some(old_bytes.clone()),
            ));
        }
    }
    let cosignature = signed.cosign(client.keys());
    client
        .request(&Request::Cosign {
            size: new.size,
            cosignature,
        })
        .await?;
    Ok((Witnessed::Cosigned { size: new.size }, Some(newest)))
}

/// Everything needed to prove, offline and without the broker, that a message was
/// published by its sender and is in the broker's signed (and witnessed) log.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Bundle {
    /// Format version, 1.
    pub v: u8,
    /// Audit index of the `Published` entry.
    pub index: u64,
    /// The `Published` entry as stored.
    #[serde(with = "serde_bytes")]
    pub entry: Vec<u8>,
    /// The envelope as published.
    #[serde(with = "serde_bytes")]
    pub envelope: Vec<u8>,
    /// A signed (preferably witnessed) checkpoint covering the entry.
    #[serde(with = "serde_bytes")]
    pub checkpoint: Vec<u8>,
    /// Inclusion proof of the entry in that checkpoint's tree.
    pub proof: Vec<Digest32>,
    /// The roster in force when it was published.
    #[serde(with = "serde_bytes")]
    pub roster: Vec<u8>,
}

/// What a verified bundle proves.
#[derive(Debug, Clone)]
pub struct BundleReport {
    /// Message id.
    pub id: MessageId,
    /// Who signed it.
    pub sender: NodeId,
    /// Where.
    pub topic: String,
    /// Audit index.
    pub index: u64,
    /// Size of the checkpoint proving inclusion.
    pub checkpoint_size: u64,
    /// Witnesses who co-signed that checkpoint.
    pub witnesses: Vec<NodeId>,
}

fn pick_checkpoint(checkpoints: &[Vec<u8>], index: u64) -> Option<(Vec<u8>, u64)> {
    checkpoints
        .iter()
        .filter_map(|b| {
            let s = SignedCheckpoint::decode(b).ok()?;
            let size = s.checkpoint().ok()?.size;
            (size > index).then(|| {
                (
                    s.cosignatures.len(),
                    std::cmp::Reverse(size),
                    b.clone(),
                    size,
                )
            })
        })
        .max_by_key(|(w, size, ..)| (*w, *size))
        .map(|(_, _, b, size)| (b, size))
}

/// Build a bundle from a copy of a broker's store.
///
/// # Errors
/// If the store cannot be read, the message is not in it, or no checkpoint covers it.
pub fn bundle_from_store(dir: &std::path::Path, id: &MessageId) -> Result<Bundle> {
    let store = ewx_broker::store::Store::open_for_audit(dir)?;
    let mut chain = Chain::new();
    let (mut roster_version, mut found) = (None, None);
    for bytes in store.audit_range(0, u64::MAX)? {
        let entry = chain.push(&bytes)?;
        match entry.event {
            Event::RosterChanged { version, .. } if found.is_none() => {
                roster_version = Some(version)
            }
            Event::Published {
                id: i, log_index, ..
            } if &i == id => found = Some((entry.index, bytes.to_vec(), log_index)),
            _ => {}
        }
    }
    let (index, entry, log_index) =
        found.ok_or_else(|| Error::File(format!("message {id} is not in this log")))?;
    let checkpoints: Vec<Vec<u8>> = store.checkpoints()?.iter().map(|c| c.to_vec()).collect();
    let (checkpoint, size) = pick_checkpoint(&checkpoints, index)
        .ok_or_else(|| Error::File("no checkpoint covers the message yet".into()))?;
    let envelope = store
        .message(log_index)?
        .ok_or_else(|| Error::File(format!("envelope {log_index} was pruned by retention")))?
        .to_vec();
    let version = roster_version.ok_or_else(|| Error::File("the log names no roster".into()))?;
    let roster = store
        .roster(version)?
        .ok_or_else(|| Error::File(format!("roster version {version} is missing")))?
        .to_vec();
    let proof = chain.tree().inclusion_proof(index, size)?;
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

/// Build a bundle from a running broker, as an auditor node (the inclusion proof comes
/// from the broker and is checked when the bundle is verified).
///
/// # Errors
/// If the broker refuses or the message is not in its log.
pub async fn bundle_online(client: &Client, id: &MessageId) -> Result<Bundle> {
    let (mut from, mut roster_version, mut found) = (0u64, None, None);
    while found.is_none() {
        let entries = audit_page(client, from).await?;
        if entries.is_empty() {
            break;
        }
        for (i, bytes) in entries.iter().enumerate() {
            match ewx_proto::audit::Entry::decode(bytes)?.event {
                Event::RosterChanged { version, .. } => roster_version = Some(version),
                Event::Published {
                    id: m, log_index, ..
                } if &m == id => {
                    found = Some((from + i as u64, bytes.to_vec(), log_index));
                    break;
                }
                _ => {}
            }
        }
        from += entries.len() as u64;
    }
    let (index, entry, log_index) =
        found.ok_or_else(|| Error::File(format!("message {id} is not in the broker's log")))?;
    let Response::Checkpoints { checkpoints } = client
        .request(&Request::Checkpoints {
            from_size: index + 1,
        })
        .await?
    else {
        return Err(Error::Unexpected("no checkpoints".into()));
    };
    let checkpoints: Vec<Vec<u8>> = checkpoints.into_iter().map(|b| b.into_vec()).collect();
    let (checkpoint, size) = pick_checkpoint(&checkpoints, index)
        .ok_or_else(|| Error::File("no checkpoint covers the message yet".into()))?;
    let Response::Proof { hashes: proof } = client
        .request(&Request::InclusionProof { index, size })
        .await?
    else {
        return Err(Error::Unexpected("no proof".into()));
    };
    let envelope = fetch_bytes(client, Request::GetEnvelope { log_index })
        .await?
        .ok_or_else(|| Error::File("envelope pruned".into()))?;
    let version = roster_version.ok_or_else(|| Error::File("the log names no roster".into()))?;
    let roster = fetch_bytes(client, Request::GetRoster { version })
        .await?
        .ok_or_else(|| Error::File("roster missing".into()))?;
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

impl Bundle {
    /// Encode for a file.
    ///
    /// # Errors
    /// Only on an encoder bug.
    pub fn encode(&self) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        ciborium::into_writer(self, &mut out)
            .map_err(|e| Error::File(format!("cannot encode the bundle: {e}")))?;
        Ok(out)
    }

    /// Decode a bundle file.
    ///
    /// # Errors
    /// `File` if it is not a bundle.
    pub fn decode(bytes: &[u8]) -> Result<Self> {
        let b: Bundle = ciborium::from_reader(bytes)
            .map_err(|e| Error::File(format!("not an audit bundle: {e}")))?;
        if b.v != 1 {
            return Err(Error::File(format!("unsupported bundle version {}", b.v)));
        }
        Ok(b)
    }

    /// Verify offline: the roster is the trusted council's, the checkpoint is the broker's,
    /// the entry is in it, the envelope is the one the entry names and its sender signed
    /// it with the right to publish it.
    ///
    /// # Errors
    /// `File` saying which check failed.
    pub fn verify(&self, anchor: &Roster) -> Result<BundleReport> {
        let bad = |what: &str, e: &dyn fmt::Display| Error::File(format!("bundle: {what}: {e}"));
        let roster = SignedRoster::decode(&self.roster)
            .and_then(|s| s.verify())
            .map_err(|e| bad("roster", &e))?;
        if roster.council_id() != anchor.council_id() {
            return Err(Error::File(
                "bundle: its roster is not signed by the council you trust".into(),
            ));
        }
        let broker = roster
            .body()
            .nodes
            .iter()
            .find(|n| n.role == Role::Broker)
            .map(|n| n.sign)
            .ok_or(Error::NoBroker)?;
        let signed =
            SignedCheckpoint::decode(&self.checkpoint).map_err(|e| bad("checkpoint", &e))?;
        let cp = signed.verify(&broker).map_err(|e| bad("checkpoint", &e))?;
        let leaf = ewx_proto::merkle::leaf_hash(&self.entry);
        ewx_proto::merkle::verify_inclusion(&leaf, self.index, cp.size, &self.proof, &cp.root)
            .map_err(|e| bad("inclusion", &e))?;
        let entry = ewx_proto::audit::Entry::decode(&self.entry).map_err(|e| bad("entry", &e))?;
        let Event::Published {
            id,
            sender,
            topic,
            envelope_hash,
            ..
        } = entry.event
        else {
            return Err(Error::File("bundle: the entry is not a publication".into()));
        };
        if entry.index != self.index {
            return Err(Error::File(
                "bundle: the entry's index does not match".into(),
            ));
        }
        let env = Envelope::decode(&self.envelope, usize::MAX).map_err(|e| bad("envelope", &e))?;
        if env.hash() != envelope_hash || env.header().id != id {
            return Err(Error::File(
                "bundle: the envelope is not the one the entry names".into(),
            ));
        }
        env.verify(&roster).map_err(|e| bad("envelope", &e))?;
        let witnesses = signed
            .verify_cosignatures(&roster)
            .map_err(|e| bad("witness", &e))?;
        Ok(BundleReport {
            id,
            sender,
            topic: topic.to_string(),
            index: self.index,
            checkpoint_size: cp.size,
            witnesses,
        })
    }
}
