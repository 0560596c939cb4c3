//! Making a sled database durable: sled 0.34's `flush` survives a process crash but not
//! a power cut (it uses `sync_file_range`), and it never syncs the files it writes large
//! values to. The store and a replica's Raft log both sync through here.

use std::collections::HashSet;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use crate::error::{Error, Result};

/// Flushes one sled database and fsyncs its files.
#[derive(Debug, Clone)]
pub struct SledSync {
    db: sled::Db,
    dir: PathBuf,
    /// Blob files synced already (each is written once).
    synced_blobs: Arc<Mutex<HashSet<std::ffi::OsString>>>,
}

impl SledSync {
    /// For the database `db` opened in `dir`.
    pub fn new(db: sled::Db, dir: &Path) -> Self {
        Self {
            db,
            dir: dir.into(),
            synced_blobs: Arc::default(),
        }
    }

    /// Flush sled (survives a process crash) and `fdatasync` its data file and any new
    /// blob file (survives a power cut).
    ///
    /// # Errors
    /// `Store` if the flush or a sync fails: then nothing written since the last success
    /// may be relied on.
    pub fn sync(&self) -> Result<()> {
        self.db.flush()?;
        let data = self.dir.join("db");
        File::open(&data)
            .and_then(|f| f.sync_data())
            .map_err(|e| Error::Store(format!("fdatasync {}: {e}", data.display())))?;
        self.sync_blobs()
    }

    /// sled writes values too large for a log segment to files under `blobs/` without
    /// syncing them: sync each new one, and the directory that names it.
    fn sync_blobs(&self) -> Result<()> {
        let dir = self.dir.join("blobs");
        let Ok(entries) = std::fs::read_dir(&dir) else {
            return Ok(());
        };
        let mut synced = self.synced_blobs.lock().unwrap_or_else(|p| p.into_inner());
        let mut new = false;
        for e in entries.flatten() {
            if synced.insert(e.file_name()) {
                let path = e.path();
                // a blob sled already removed again needs no sync
                if let Ok(f) = File::open(&path) {
                    f.sync_data()
                        .map_err(|e| Error::Store(format!("fsync {}: {e}", path.display())))?;
                }
                new = true;
            }
        }
        if new {
            File::open(&dir)
                .and_then(|d| d.sync_all())
                .map_err(|e| Error::Store(format!("fsync {}: {e}", dir.display())))?;
        }
        Ok(())
    }
}
