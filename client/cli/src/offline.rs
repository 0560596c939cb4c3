//! Auditing a copy of a broker's data directory, offline: a [`StoreCopy`] is one more
//! [`AuditSource`], so `ewx audit verify|receipts|bundle --store DIR` run the very same
//! code as against a live broker. It lives here because this is the one crate that links
//! the broker's store.

use std::path::Path;

use ewx_broker::log::Store;
use ewx_client::audit::AuditSource;
use ewx_proto::Digest32;

/// Entries read per page.
const PAGE: u64 = 4096;

/// A broker's store opened read-only, as it is (no recovery, no checks: that is the
/// auditor's job).
#[derive(Debug)]
pub struct StoreCopy(Store);

impl StoreCopy {
    /// Open the copy in `dir`.
    ///
    /// # Errors
    /// If there is no broker store in `dir` or sled cannot open it.
    pub fn open(dir: &Path) -> crate::Result<Self> {
        Ok(Self(Store::open_for_audit(dir)?))
    }
}

fn unreadable(e: ewx_broker::Error) -> ewx_client::Error {
    ewx_client::Error::Audit(format!("the store copy cannot be read: {e}"))
}

impl StoreCopy {
    /// One read of the copy, under the guard that turns sled's panics on a damaged file
    /// into an error.
    fn read<T>(&self, f: impl FnOnce(&Store) -> ewx_broker::Result<T>) -> ewx_client::Result<T> {
        ewx_broker::log::guarded(self.0.dir(), || f(&self.0)).map_err(unreadable)
    }
}

impl AuditSource for StoreCopy {
    fn place(&self) -> &'static str {
        "this store copy"
    }

    async fn head(&self) -> ewx_client::Result<u64> {
        self.read(|s| s.audit_len())
    }

    async fn entries(&self, from: u64) -> ewx_client::Result<Vec<Vec<u8>>> {
        let page = self.read(|s| s.audit_range(from, from.saturating_add(PAGE)))?;
        Ok(page.iter().map(|b| b.to_vec()).collect())
    }

    async fn envelope(&self, log_index: u64) -> ewx_client::Result<Option<Vec<u8>>> {
        let bytes = self.read(|s| s.message(log_index))?;
        Ok(bytes.map(|b| b.to_vec()))
    }

    async fn roster(&self, version: u64) -> ewx_client::Result<Option<Vec<u8>>> {
        let bytes = self.read(|s| s.roster(version))?;
        Ok(bytes.map(|b| b.to_vec()))
    }

    async fn checkpoints(&self, from_size: u64) -> ewx_client::Result<Vec<Vec<u8>>> {
        let page = self.read(|s| s.checkpoints_from(from_size, PAGE as usize))?;
        Ok(page.iter().map(|b| b.to_vec()).collect())
    }

    /// A store copy holds no proofs: the auditor computes them from the entries.
    async fn consistency_proof(&self, _: u64, _: u64) -> ewx_client::Result<Option<Vec<Digest32>>> {
        Ok(None)
    }

    async fn inclusion_proof(&self, _: u64, _: u64) -> ewx_client::Result<Option<Vec<Digest32>>> {
        Ok(None)
    }
}

/// Either source, chosen at run time (`--store DIR` or the broker): what the `ewx audit`
/// commands hand to the one implementation of each audit.
#[derive(Debug)]
pub enum Source {
    /// A store copy, offline.
    Store(StoreCopy),
    /// The broker's audit API, as this node.
    Broker(ewx_client::Client),
}

impl Source {
    /// Close the connection, if there is one.
    pub async fn close(self) {
        if let Source::Broker(c) = self {
            c.close().await;
        }
    }
}

/// Calls the same method on whichever source this is.
macro_rules! either {
    ($self:ident, $s:ident => $call:expr) => {
        match $self {
            Source::Store($s) => $call.await,
            Source::Broker($s) => $call.await,
        }
    };
}

impl AuditSource for Source {
    fn place(&self) -> &'static str {
        match self {
            Source::Store(s) => s.place(),
            Source::Broker(c) => c.place(),
        }
    }

    async fn head(&self) -> ewx_client::Result<u64> {
        either!(self, s => s.head())
    }

    async fn entries(&self, from: u64) -> ewx_client::Result<Vec<Vec<u8>>> {
        either!(self, s => s.entries(from))
    }

    async fn envelope(&self, log_index: u64) -> ewx_client::Result<Option<Vec<u8>>> {
        either!(self, s => s.envelope(log_index))
    }

    async fn roster(&self, version: u64) -> ewx_client::Result<Option<Vec<u8>>> {
        either!(self, s => AuditSource::roster(s, version))
    }

    async fn checkpoints(&self, from_size: u64) -> ewx_client::Result<Vec<Vec<u8>>> {
        either!(self, s => s.checkpoints(from_size))
    }

    async fn consistency_proof(
        &self,
        old: u64,
        new: u64,
    ) -> ewx_client::Result<Option<Vec<Digest32>>> {
        either!(self, s => s.consistency_proof(old, new))
    }

    async fn inclusion_proof(
        &self,
        index: u64,
        size: u64,
    ) -> ewx_client::Result<Option<Vec<Digest32>>> {
        either!(self, s => s.inclusion_proof(index, size))
    }
}
