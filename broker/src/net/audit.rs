//! Audit data over the protocol, as [`crate::core::audit_access`] allows it: the head,
//! entries, envelopes, rosters, checkpoints, inclusion and consistency proofs; and a
//! witness's co-signature of a checkpoint.

use std::sync::atomic::Ordering;

use ewx_proto::checkpoint::Cosignature;
use ewx_proto::frame::{RejectReason, Request, Response};
use ewx_proto::merkle::MerkleTree;
use serde_bytes::ByteBuf;

use super::session::Session;
use crate::core::Rejection;
use crate::core::admission::check_cosign;
use crate::core::audit_access::{
    AUDIT_PAGE, denied, entry_is_about, envelope_is_from, is_auditor, page_end,
};

fn internal(e: crate::Error) -> Rejection {
    Rejection::new(RejectReason::Internal, e.to_string())
}

fn pages(items: Vec<bytes::Bytes>) -> Vec<ByteBuf> {
    items.iter().map(|b| ByteBuf::from(b.to_vec())).collect()
}

impl Session {
    fn is_auditor(&self) -> bool {
        is_auditor(&self.node, &self.shared.roster.get())
    }

    /// Is audit entry `index` about this node's own message or receipt?
    fn entry_is_mine(&self, index: u64) -> Result<bool, Rejection> {
        let entry = self
            .shared
            .log
            .audit_range(index, index.saturating_add(1))
            .map_err(internal)?;
        Ok(entry.first().is_some_and(|e| entry_is_about(&self.node, e)))
    }

    pub(super) async fn audit_request(&self, req: Request) -> Result<Response, Rejection> {
        let log = &self.shared.log;
        let audit_len = self.shared.head.audit_len.load(Ordering::Acquire);
        match req {
            Request::AuditHead => Ok(Response::AuditHead {
                entries: audit_len,
                next_log_index: self.shared.head.next_index.load(Ordering::Acquire),
            }),
            Request::AuditEntries { from, limit } => {
                // others may read single entries about their own messages and receipts
                let own = limit == 1 && self.entry_is_mine(from)?;
                if !self.is_auditor() && !own {
                    return Err(denied("the audit log"));
                }
                let to = page_end(from, limit, audit_len);
                let entries = log.audit_range(from, to).map_err(internal)?;
                Ok(Response::AuditEntries {
                    from,
                    entries: pages(entries),
                })
            }
            Request::GetEnvelope { log_index } => {
                let bytes = log.message(log_index).map_err(internal)?;
                let mine = bytes
                    .as_ref()
                    .is_some_and(|b| envelope_is_from(&self.node, b));
                if !self.is_auditor() && !mine {
                    return Err(denied("that envelope"));
                }
                Ok(Response::Bytes {
                    bytes: bytes.map(|b| b.to_vec()),
                })
            }
            Request::GetRoster { version } => Ok(Response::Bytes {
                bytes: log.roster(version).map_err(internal)?.map(|b| b.to_vec()),
            }),
            Request::Checkpoints { from_size } => {
                let cps = log
                    .checkpoints_from(from_size, AUDIT_PAGE as usize)
                    .map_err(internal)?;
                Ok(Response::Checkpoints {
                    checkpoints: pages(cps),
                })
            }
            Request::InclusionProof { index, size } => {
                if !self.is_auditor() && !self.entry_is_mine(index)? {
                    return Err(denied("that inclusion proof"));
                }
                self.proof(|t| t.inclusion_proof(index, size))
            }
            Request::ConsistencyProof { old, new } => self.proof(|t| t.consistency_proof(old, new)),
            Request::Cosign { size, cosignature } => self.cosign(size, cosignature).await,
            _ => Err(Rejection::new(
                RejectReason::Malformed,
                "not an audit request".into(),
            )),
        }
    }

    fn proof(
        &self,
        f: impl FnOnce(&MerkleTree) -> ewx_proto::Result<Vec<ewx_proto::Digest32>>,
    ) -> Result<Response, Rejection> {
        let tree = self
            .shared
            .head
            .tree
            .read()
            .unwrap_or_else(|p| p.into_inner());
        f(&tree)
            .map(|hashes| Response::Proof { hashes })
            .map_err(|e| Rejection::new(RejectReason::Malformed, e.to_string()))
    }

    async fn cosign(&self, size: u64, cosignature: Cosignature) -> Result<Response, Rejection> {
        let stored = self.shared.log.checkpoint(size).map_err(internal)?;
        check_cosign(
            &cosignature,
            &self.node,
            size,
            stored.as_deref(),
            &self.shared.roster.get(),
        )?;
        self.shared.writer.cosign(size, cosignature).await?;
        Ok(Response::Done)
    }
}
