//! Where an auditor reads a log from. [`AuditSource`] is the one interface both sources
//! implement: the broker's audit API ([`Client`], as an auditor node, here) and a copy of
//! a broker's store (in `ewx-cli`, the crate that links the store). Everything an auditor
//! does — verify, find receipts, build bundles — is written once over it.

use std::future::Future;

use ewx_proto::Digest32;
use ewx_proto::frame::{Request, Response};

use crate::Client;
use crate::error::{Error, Result};

/// Audit entries asked for per request (the broker's page size).
const PAGE: u32 = 1024;

/// A readable audit log and the envelopes, rosters, checkpoints and proofs it names.
pub trait AuditSource {
    /// Where the entries come from, for messages ("the broker's log", "this store copy").
    fn place(&self) -> &'static str;

    /// Audit entries now in the log.
    fn head(&self) -> impl Future<Output = Result<u64>> + Send;

    /// A page of entries from index `from` on (empty past the end).
    fn entries(&self, from: u64) -> impl Future<Output = Result<Vec<Vec<u8>>>> + Send;

    /// The envelope at a message-log index (`None`: pruned by retention).
    fn envelope(&self, log_index: u64) -> impl Future<Output = Result<Option<Vec<u8>>>> + Send;

    /// A roster version that was in force.
    fn roster(&self, version: u64) -> impl Future<Output = Result<Option<Vec<u8>>>> + Send;

    /// A page of signed checkpoints of `from_size` entries and more, oldest first.
    fn checkpoints(&self, from_size: u64) -> impl Future<Output = Result<Vec<Vec<u8>>>> + Send;

    /// The source's own consistency proof between two checkpoint sizes, to be verified
    /// (`None`: the auditor computes it from the entries it replayed).
    fn consistency_proof(
        &self,
        old: u64,
        new: u64,
    ) -> impl Future<Output = Result<Option<Vec<Digest32>>>> + Send;

    /// The source's inclusion proof of entry `index` in the tree of `size` entries
    /// (`None`: computed from the entries replayed).
    fn inclusion_proof(
        &self,
        index: u64,
        size: u64,
    ) -> impl Future<Output = Result<Option<Vec<Digest32>>>> + Send;
}

fn unexpected(r: &Response) -> Error {
    Error::Unexpected(format!("{r:?}"))
}

impl Client {
    async fn audit_bytes(&self, req: Request) -> Result<Option<Vec<u8>>> {
        match self.request(&req).await? {
            Response::Bytes { bytes } => Ok(bytes),
            other => Err(unexpected(&other)),
        }
    }

    async fn audit_proof(&self, req: Request) -> Result<Option<Vec<Digest32>>> {
        match self.request(&req).await? {
            Response::Proof { hashes } => Ok(Some(hashes)),
            other => Err(unexpected(&other)),
        }
    }
}

/// The broker's audit API: auditors may read everything; other nodes the checkpoints,
/// rosters and proofs, and the entries of their own messages and receipts.
impl AuditSource for Client {
    fn place(&self) -> &'static str {
        "the broker's log"
    }

    async fn head(&self) -> Result<u64> {
        match self.request(&Request::AuditHead).await? {
            Response::AuditHead { entries, .. } => Ok(entries),
            other => Err(unexpected(&other)),
        }
    }

    async fn entries(&self, from: u64) -> Result<Vec<Vec<u8>>> {
        let req = Request::AuditEntries { from, limit: PAGE };
        match self.request(&req).await? {
            Response::AuditEntries { entries, .. } => {
                Ok(entries.into_iter().map(|b| b.into_vec()).collect())
            }
            other => Err(unexpected(&other)),
        }
    }

    async fn envelope(&self, log_index: u64) -> Result<Option<Vec<u8>>> {
        self.audit_bytes(Request::GetEnvelope { log_index }).await
    }

    async fn roster(&self, version: u64) -> Result<Option<Vec<u8>>> {
        self.audit_bytes(Request::GetRoster { version }).await
    }

    async fn checkpoints(&self, from_size: u64) -> Result<Vec<Vec<u8>>> {
        match self.request(&Request::Checkpoints { from_size }).await? {
            Response::Checkpoints { checkpoints } => {
                Ok(checkpoints.into_iter().map(|b| b.into_vec()).collect())
            }
            other => Err(unexpected(&other)),
        }
    }

    async fn consistency_proof(&self, old: u64, new: u64) -> Result<Option<Vec<Digest32>>> {
        self.audit_proof(Request::ConsistencyProof { old, new })
            .await
    }

    async fn inclusion_proof(&self, index: u64, size: u64) -> Result<Option<Vec<Digest32>>> {
        self.audit_proof(Request::InclusionProof { index, size })
            .await
    }
}
