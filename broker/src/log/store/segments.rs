//! Envelopes in append-only segment files, beside sled (for large commits: see
//! `placement`). A segment takes a commit's envelopes in one `write`, and sled keeps only
//! where each lies ([`Place`], 20 bytes).
//!
//! **Durability order:** a commit appends its envelopes and `fdatasync`s the segment
//! *before* the sled transaction that records their places, so a place sled has (even
//! written early by sled's own flusher) always points at durable bytes. A crash between
//! the two leaves bytes no place names: on start they are cut off ([`Segments::cut_tail`]).
//!
//! Files are `segments/<first index, 20 digits>.seg`; a new one starts past
//! [`SEGMENT_BYTES`]. Retention deletes whole files once no envelope in them is kept.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::error::{Error, Result};

/// A segment is closed and a new one started when it would grow past this.
const SEGMENT_BYTES: u64 = 64 << 20;

/// Where one envelope lies: the segment (named by its first index), the offset in it,
/// and the length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Place {
    pub segment: u64,
    pub offset: u64,
    pub len: u32,
}

impl Place {
    /// The 20 bytes sled stores.
    pub fn encode(&self) -> [u8; 20] {
        let mut b = [0; 20];
        b[..8].copy_from_slice(&self.segment.to_be_bytes());
        b[8..16].copy_from_slice(&self.offset.to_be_bytes());
        b[16..].copy_from_slice(&self.len.to_be_bytes());
        b
    }

    /// Read it back; `None` if `b` is not a place.
    pub fn decode(b: &[u8]) -> Option<Self> {
        let b: &[u8; 20] = b.try_into().ok()?;
        let (seg, rest) = b.split_at(8);
        let (off, len) = rest.split_at(8);
        Some(Self {
            segment: u64::from_be_bytes(seg.try_into().ok()?),
            offset: u64::from_be_bytes(off.try_into().ok()?),
            len: u32::from_be_bytes(len.try_into().ok()?),
        })
    }

    fn end(&self) -> u64 {
        self.offset + u64::from(self.len)
    }
}

/// The segment being appended to.
#[derive(Debug)]
struct Active {
    segment: u64,
    file: File,
    len: u64,
    /// Whether the directory gained this file's name since the last sync.
    new_name: bool,
}

/// The segment files of one store.
#[derive(Debug)]
pub struct Segments {
    dir: PathBuf,
    active: Mutex<Option<Active>>,
    /// Read handles by segment.
    readers: Mutex<BTreeMap<u64, Arc<File>>>,
}

fn name(segment: u64) -> String {
    format!("{segment:020}.seg")
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |reason| Error::File {
        path: path.into(),
        reason,
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Segments {
    /// The segments under `store_dir` (the directory is made when the first is written,
    /// so an auditor's read-only open changes nothing).
    pub fn open(store_dir: &Path) -> Self {
        let dir = store_dir.join("segments");
        Self {
            dir,
            active: Mutex::new(None),
            readers: Mutex::default(),
        }
    }

    /// The segments there are, by first index.
    ///
    /// # Errors
    /// `File` if the directory cannot be read.
    pub fn list(&self) -> Result<Vec<u64>> {
        let mut out = Vec::new();
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
            Err(e) => return Err(io(&self.dir)(e)),
        };
        for e in entries {
            let e = e.map_err(io(&self.dir))?;
            let n = e.file_name();
            let Some(start) = n
                .to_str()
                .and_then(|n| n.strip_suffix(".seg"))
                .and_then(|n| n.parse().ok())
            else {
                continue;
            };
            out.push(start);
        }
        out.sort_unstable();
        Ok(out)
    }

    fn path(&self, segment: u64) -> PathBuf {
        self.dir.join(name(segment))
    }

    /// On start: keep what `last` (the newest place sled holds) reaches and nothing after
    /// it (bytes of a commit that never finished), and continue appending there.
    ///
    /// # Errors
    /// `CorruptStore` if a segment is shorter than the places in it; `File` on I/O
    /// failure.
    pub fn cut_tail(&self, last: Option<Place>) -> Result<()> {
        for segment in self.list()? {
            let keep = last.is_some_and(|l| segment <= l.segment);
            if !keep {
                let path = self.path(segment);
                // a later segment of the same name must not be read through this handle
                lock(&self.readers).remove(&segment);
                std::fs::remove_file(&path).map_err(io(&path))?;
                tracing::info!(segment, "removed envelopes of a commit that did not finish");
            }
        }
        let Some(last) = last else { return Ok(()) };
        let path = self.path(last.segment);
        let damaged = |reason: String| Error::CorruptStore {
            path: self.dir.clone(),
            reason: format!("the store is damaged: {reason}"),
        };
        let file = match OpenOptions::new().read(true).append(true).open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(damaged(format!(
                    "segment {} is missing",
                    name(last.segment)
                )));
            }
            Err(e) => return Err(io(&path)(e)),
        };
        let len = file.metadata().map_err(io(&path))?.len();
        if len < last.end() {
            return Err(damaged(format!(
                "segment {} holds {len} bytes, the log needs {}",
                name(last.segment),
                last.end()
            )));
        }
        if len > last.end() {
            file.set_len(last.end()).map_err(io(&path))?;
            file.sync_all().map_err(io(&path))?;
        }
        let mut active = lock(&self.active);
        // a segment started since the last sync keeps owing the directory its sync
        let new_name = active
            .as_ref()
            .is_some_and(|a| a.segment == last.segment && a.new_name);
        *active = Some(Active {
            segment: last.segment,
            file,
            len: last.end(),
            new_name,
        });
        Ok(())
    }

    /// Append envelopes (`index`, bytes) in order, not yet durable: [`Segments::sync`]
    /// before recording their places.
    ///
    /// # Errors
    /// `File` on I/O failure.
    pub fn append<'a>(
        &self,
        messages: impl IntoIterator<Item = (u64, &'a [u8])>,
    ) -> Result<Vec<Place>> {
        let mut active = lock(&self.active);
        let mut places = Vec::new();
        let mut buf = Vec::new();
        for (index, bytes) in messages {
            let size = bytes.len() as u64;
            let full = active.as_ref().is_none_or(|a| {
                let len = a.len + buf.len() as u64;
                len > 0 && len + size > SEGMENT_BYTES
            });
            if full {
                self.write(&mut active, &mut buf)?;
                self.start(&mut active, index)?;
            }
            let Some(a) = active.as_ref() else {
                return Err(Error::Store("no active segment".into()));
            };
            places.push(Place {
                segment: a.segment,
                offset: a.len + buf.len() as u64,
                len: u32::try_from(size).map_err(|_| Error::Store("envelope too large".into()))?,
            });
            buf.extend_from_slice(bytes);
        }
        self.write(&mut active, &mut buf)?;
        Ok(places)
    }

    fn write(&self, active: &mut Option<Active>, buf: &mut Vec<u8>) -> Result<()> {
        if let Some(a) = active.as_mut().filter(|_| !buf.is_empty()) {
            let path = self.path(a.segment);
            if let Err(e) = a.file.write_all(buf) {
                // a partial write would shift every later place: cut it off again
                let _ = a.file.set_len(a.len);
                return Err(io(&path)(e));
            }
            a.len += buf.len() as u64;
            buf.clear();
        }
        Ok(())
    }

    fn start(&self, active: &mut Option<Active>, segment: u64) -> Result<()> {
        if !self.dir.exists() {
            std::fs::create_dir_all(&self.dir).map_err(io(&self.dir))?;
            // the store directory gained the name `segments`
            if let Some(parent) = self.dir.parent() {
                File::open(parent)
                    .and_then(|d| d.sync_all())
                    .map_err(io(parent))?;
            }
        }
        let path = self.path(segment);
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(io(&path))?;
        // a stale file of that name would shift every place
        file.set_len(0).map_err(io(&path))?;
        // the closed segment's last bytes become durable now (rare: once per segment)
        if let Some(closed) = active.take() {
            closed
                .file
                .sync_data()
                .map_err(io(&self.path(closed.segment)))?;
        }
        *active = Some(Active {
            segment,
            file,
            len: 0,
            new_name: true,
        });
        Ok(())
    }

    /// Make what was appended durable (`fdatasync`; the directory too when a segment was
    /// started).
    ///
    /// # Errors
    /// `File` on I/O failure.
    pub fn sync(&self) -> Result<()> {
        let mut active = lock(&self.active);
        let Some(a) = active.as_mut() else {
            return Ok(());
        };
        a.file.sync_data().map_err(io(&self.path(a.segment)))?;
        if std::mem::take(&mut a.new_name) {
            File::open(&self.dir)
                .and_then(|d| d.sync_all())
                .map_err(io(&self.dir))?;
        }
        Ok(())
    }

    /// A whole segment as it is on disk (to find its records again on start).
    ///
    /// # Errors
    /// `File` on I/O failure.
    pub fn read_segment(&self, segment: u64) -> Result<Vec<u8>> {
        let path = self.path(segment);
        std::fs::read(&path).map_err(io(&path))
    }

    /// The envelope at `place`; `None` if its segment was deleted by retention.
    ///
    /// # Errors
    /// `Store` if the segment is shorter than the place says (a damaged store).
    pub fn read(&self, place: Place) -> Result<Option<Vec<u8>>> {
        let file = {
            let mut readers = lock(&self.readers);
            match readers.get(&place.segment) {
                Some(f) => f.clone(),
                None => match File::open(self.path(place.segment)) {
                    Ok(f) => readers.entry(place.segment).or_insert(Arc::new(f)).clone(),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
                    Err(e) => return Err(io(&self.path(place.segment))(e)),
                },
            }
        };
        let mut bytes = vec![0; place.len as usize];
        file.read_exact_at(&mut bytes, place.offset).map_err(|e| {
            Error::Store(format!(
                "the store is damaged: segment {} at {}: {e}",
                name(place.segment),
                place.offset
            ))
        })?;
        Ok(Some(bytes))
    }

    /// Retention: delete the segments whose every envelope lies below `first_kept` (the
    /// oldest index kept). The newest segment stays: appends go on there.
    pub fn drop_before(&self, first_kept: u64) {
        let Ok(all) = self.list() else { return };
        for pair in all.windows(2) {
            let (segment, next) = (pair[0], pair[1]);
            if next > first_kept {
                break;
            }
            lock(&self.readers).remove(&segment);
            let path = self.path(segment);
            match std::fs::remove_file(&path) {
                Ok(()) => tracing::info!(segment, "retention: removed a segment file"),
                Err(e) => tracing::warn!("retention: cannot remove {}: {e}", path.display()),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn appended_envelopes_read_back_and_an_unfinished_tail_is_cut() {
        let dir = tempfile::tempdir().unwrap();
        let s = Segments::open(dir.path());
        let a = s.append([(0, &b"zero"[..]), (1, &b"one"[..])]).unwrap();
        s.sync().unwrap();
        assert_eq!(
            a[1],
            Place {
                segment: 0,
                offset: 4,
                len: 3
            }
        );
        assert_eq!(Place::decode(&a[1].encode()), Some(a[1]));
        assert_eq!(s.read(a[0]).unwrap().unwrap(), b"zero");
        // a commit that wrote bytes and never recorded their places
        s.append([(2, &b"lost"[..])]).unwrap();
        drop(s);
        let s = Segments::open(dir.path());
        s.cut_tail(Some(a[1])).unwrap();
        let b = s.append([(2, &b"two"[..])]).unwrap();
        assert_eq!(b[0].offset, 7, "appends continue where the kept places end");
        assert_eq!(s.read(b[0]).unwrap().unwrap(), b"two");
        // a segment shorter than its places is a damaged store
        drop(s);
        let f = OpenOptions::new()
            .write(true)
            .open(dir.path().join("segments").join(name(0)));
        f.unwrap().set_len(5).unwrap();
        let s = Segments::open(dir.path());
        let e = s.cut_tail(Some(b[0])).unwrap_err();
        assert!(e.to_string().contains("damaged"), "{e}");
        assert!(s.read(b[0]).unwrap_err().to_string().contains("damaged"));
    }

    #[test]
    fn retention_deletes_whole_segments_no_longer_needed() {
        let dir = tempfile::tempdir().unwrap();
        let s = Segments::open(dir.path());
        let big = vec![7u8; (SEGMENT_BYTES / 2 + 1) as usize];
        let places = s.append((0..3).map(|i| (i, big.as_slice()))).unwrap();
        s.sync().unwrap();
        let segs: Vec<u64> = places.iter().map(|p| p.segment).collect();
        assert_eq!(
            segs,
            [0, 1, 2],
            "each one past half a segment starts a new one"
        );
        s.drop_before(1);
        assert_eq!(s.list().unwrap(), [1, 2], "segment 0 ends below index 1");
        s.drop_before(5);
        assert_eq!(s.list().unwrap(), [2], "the newest segment stays");
        assert_eq!(s.read(places[0]).unwrap(), None, "pruned");
        assert_eq!(s.read(places[2]).unwrap().unwrap().len(), big.len());
    }
}
