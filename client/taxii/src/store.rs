//! The gateway's local store (sled): per collection, the object versions keyed by the
//! time they were added — in microseconds, strictly increasing, so two objects never
//! share a `date_added` and a page boundary can never split or repeat a batch that
//! arrived together — and an index by (object id, version). Also the messages already
//! taken (so a redelivery adds nothing) and the status of each POST.

use std::borrow::Cow;
use std::collections::HashMap;
use std::path::Path;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use sled::Transactional;

use crate::error::{Error, Result};
use crate::stix::{StixObject, micros};

/// One stored object version (strings borrowed from the stored bytes where JSON allows;
/// one with an escape is copied).
#[derive(Debug, Serialize, Deserialize)]
pub struct Record<'a> {
    /// Its id.
    #[serde(borrow)]
    pub id: Cow<'a, str>,
    /// Its type.
    #[serde(rename = "type", borrow)]
    pub kind: Cow<'a, str>,
    /// Its spec version.
    #[serde(borrow)]
    pub spec_version: Cow<'a, str>,
    /// Its version (`None`: the object has none; its date added stands for it).
    #[serde(borrow)]
    pub version: Option<Cow<'a, str>>,
    /// The object.
    #[serde(borrow)]
    pub object: &'a RawValue,
}

/// Which versions of an object a request wants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Versions {
    /// The newest of each object (TAXII's default).
    Last,
    /// The oldest of each.
    First,
    /// Every version.
    All,
    /// These versions (microseconds).
    At(Vec<u64>),
    /// Any of these (`match[version]=first,last`).
    Any(Vec<Versions>),
}

/// What a request selects.
#[derive(Debug, Clone)]
pub struct Filter {
    /// Only objects added after this (µs, exclusive).
    pub added_after: Option<u64>,
    /// Continue after this record (a `next` this store gave out).
    pub next: Option<u64>,
    /// At most this many.
    pub limit: usize,
    /// `match[id]`.
    pub ids: Option<Vec<String>>,
    /// `match[type]`.
    pub types: Option<Vec<String>>,
    /// `match[version]`.
    pub versions: Versions,
    /// `match[spec_version]`.
    pub spec_versions: Option<Vec<String>>,
}

/// A page of records: (date added µs, record bytes), and whether more match.
#[derive(Debug)]
pub struct Page {
    /// The records, oldest first.
    pub records: Vec<(u64, sled::IVec)>,
    /// More match after the last one.
    pub more: bool,
}

struct Trees {
    /// date added (µs, BE) → record JSON.
    objects: sled::Tree,
    /// id ‖ 0 ‖ version µs (BE) → date added (µs, BE).
    ids: sled::Tree,
    /// The newest date added handed out (the next is above it).
    last_added: Mutex<u64>,
}

/// The store.
pub struct Store {
    db: sled::Db,
    collections: HashMap<String, Trees>,
    /// collection id ‖ message id → () for every message taken.
    seen: sled::Tree,
    /// status id → status JSON.
    status: sled::Tree,
    /// `started/<collection>` once its subscription was first opened.
    meta: sled::Tree,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("collections", &self.collections.len())
            .finish_non_exhaustive()
    }
}

fn be(n: u64) -> [u8; 8] {
    n.to_be_bytes()
}

fn from_be(b: &[u8]) -> u64 {
    // (keys and values are written 8 bytes long; anything else reads as 0)
    b.try_into().map_or(0, u64::from_be_bytes)
}

fn id_key(id: &str, version: u64) -> Vec<u8> {
    let mut k = Vec::with_capacity(id.len() + 9);
    k.extend_from_slice(id.as_bytes());
    k.push(0);
    k.extend_from_slice(&be(version));
    k
}

fn id_prefix(id: &str) -> Vec<u8> {
    let mut k = id.as_bytes().to_vec();
    k.push(0);
    k
}

impl Store {
    /// Open (or create) the store in `dir` for these collection ids.
    ///
    /// # Errors
    /// `Config` if another gateway holds it; `Store` if sled fails.
    pub fn open(dir: &Path, collections: &[String]) -> Result<Self> {
        // a bounded page cache: paging through a large collection keeps memory flat
        let db = sled::Config::new()
            .path(dir)
            .cache_capacity(32 << 20)
            .open()
            .map_err(|e| match e {
                sled::Error::Io(io) if io.to_string().contains("lock") => Error::Config(format!(
                    "the store {} is in use by another gateway (one gateway per store)",
                    dir.display()
                )),
                e => Error::Store(e),
            })?;
        let mut trees = HashMap::new();
        for c in collections {
            let objects = db.open_tree(format!("objects/{c}"))?;
            let last = objects.last()?.map_or(0, |(k, _)| from_be(&k));
            trees.insert(
                c.clone(),
                Trees {
                    ids: db.open_tree(format!("ids/{c}"))?,
                    objects,
                    last_added: Mutex::new(last),
                },
            );
        }
        Ok(Self {
            seen: db.open_tree("seen")?,
            status: db.open_tree("status")?,
            meta: db.open_tree("meta")?,
            collections: trees,
            db,
        })
    }

    fn trees(&self, collection: &str) -> Result<&Trees> {
        self.collections
            .get(collection)
            .ok_or_else(|| Error::Config(format!("no collection {collection}")))
    }

    /// Add `objects` to a collection (one atomic write), unless `message` was taken
    /// already; versions it holds already are skipped. Returns the versions added.
    ///
    /// # Errors
    /// `Store` if sled fails.
    pub fn add(
        &self,
        collection: &str,
        message: Option<&[u8]>,
        objects: &[StixObject],
        now_us: u64,
    ) -> Result<usize> {
        let t = self.trees(collection)?;
        let seen_key = message.map(|m| [collection.as_bytes(), m].concat());
        // the clock is held through the write: records are added in date order
        let mut last = t.last_added.lock().unwrap_or_else(|p| p.into_inner());
        let mut next = (*last).max(now_us.saturating_sub(1));
        let added = (&t.objects, &t.ids, &self.seen)
            .transaction(|(objs, ids, seen)| {
                if let Some(k) = &seen_key {
                    if seen.get(k)?.is_some() {
                        return Ok((0, next));
                    }
                    seen.insert(k.as_slice(), &[])?;
                }
                let mut at = next;
                let mut added = 0;
                for o in objects {
                    let version = o.version.as_deref().and_then(micros).unwrap_or(0);
                    let key = id_key(&o.id, version);
                    if ids.get(&key)?.is_some() {
                        continue;
                    }
                    at += 1;
                    let record = Record {
                        id: Cow::Borrowed(&o.id),
                        kind: Cow::Borrowed(&o.kind),
                        spec_version: Cow::Borrowed(&o.spec_version),
                        version: o.version.as_deref().map(Cow::Borrowed),
                        object: &o.json,
                    };
                    let bytes = serde_json::to_vec(&record).unwrap_or_default();
                    objs.insert(&be(at), bytes)?;
                    ids.insert(key, &be(at))?;
                    added += 1;
                }
                Ok((added, at))
            })
            .map_err(|e: sled::transaction::TransactionError<()>| match e {
                sled::transaction::TransactionError::Storage(e) => Error::Store(e),
                sled::transaction::TransactionError::Abort(()) => {
                    Error::Config("store transaction aborted".into())
                }
            })?;
        next = added.1;
        *last = next;
        Ok(added.0)
    }

    /// Make what was added durable.
    ///
    /// # Errors
    /// `Store` if the flush fails.
    pub async fn flush(&self) -> Result<()> {
        self.db.flush_async().await?;
        Ok(())
    }

    /// Objects in a collection: a page by date added.
    ///
    /// # Errors
    /// `Store` if sled fails.
    pub fn page(&self, collection: &str, f: &Filter) -> Result<Page> {
        let t = self.trees(collection)?;
        let after = f.added_after.max(f.next).unwrap_or(0);
        let mut records = Vec::new();
        let mut more = false;
        let keys: Box<dyn Iterator<Item = sled::Result<(sled::IVec, sled::IVec)>>> = match &f.ids {
            // a few ids: their versions from the index, in date order
            Some(ids) if ids.len() <= 64 => {
                let mut dates = Vec::new();
                for id in ids {
                    for kv in t.ids.scan_prefix(id_prefix(id)) {
                        let (_, v) = kv?;
                        dates.push(from_be(&v));
                    }
                }
                dates.sort_unstable();
                dates.dedup();
                dates.retain(|d| *d > after);
                let objects = t.objects.clone();
                Box::new(dates.into_iter().filter_map(move |d| {
                    objects
                        .get(be(d))
                        .transpose()
                        .map(|r| r.map(|v| (sled::IVec::from(&be(d)), v)))
                }))
            }
            _ => Box::new(t.objects.range(be(after.saturating_add(1)).to_vec()..)),
        };
        for kv in keys {
            let (k, v) = kv?;
            let date = from_be(&k);
            let Ok(r) = serde_json::from_slice::<Record<'_>>(&v) else {
                continue;
            };
            if !self.selects(t, f, date, &r)? {
                continue;
            }
            if records.len() == f.limit {
                more = true;
                break;
            }
            records.push((date, v));
        }
        Ok(Page { records, more })
    }

    fn selects(&self, t: &Trees, f: &Filter, date: u64, r: &Record<'_>) -> Result<bool> {
        let listed = |list: &Option<Vec<String>>, v: &str| {
            list.as_ref().is_none_or(|l| l.iter().any(|x| x == v))
        };
        if !listed(&f.ids, &r.id)
            || !listed(&f.types, &r.kind)
            || !listed(&f.spec_versions, &r.spec_version)
        {
            return Ok(false);
        }
        self.version_selected(t, &f.versions, date, r)
    }

    fn version_selected(
        &self,
        t: &Trees,
        versions: &Versions,
        date: u64,
        r: &Record<'_>,
    ) -> Result<bool> {
        Ok(match versions {
            Versions::All => true,
            Versions::Any(any) => {
                for v in any {
                    if self.version_selected(t, v, date, r)? {
                        return Ok(true);
                    }
                }
                false
            }
            Versions::At(list) => {
                list.contains(&r.version.as_deref().and_then(micros).unwrap_or(date))
            }
            Versions::Last => t
                .ids
                .scan_prefix(id_prefix(&r.id))
                .next_back()
                .transpose()?
                .is_some_and(|(_, d)| from_be(&d) == date),
            Versions::First => t
                .ids
                .scan_prefix(id_prefix(&r.id))
                .next()
                .transpose()?
                .is_some_and(|(_, d)| from_be(&d) == date),
        })
    }

    /// Does the collection hold any version of `id`?
    ///
    /// # Errors
    /// `Store` if sled fails.
    pub fn has(&self, collection: &str, id: &str) -> Result<bool> {
        Ok(self
            .trees(collection)?
            .ids
            .scan_prefix(id_prefix(id))
            .next()
            .transpose()?
            .is_some())
    }

    /// Has this collection's subscription been opened before (then it resumes)?
    ///
    /// # Errors
    /// `Store` if sled fails.
    pub fn started(&self, collection: &str) -> Result<bool> {
        Ok(self
            .meta
            .contains_key(format!("started/{collection}").as_bytes())?)
    }

    /// Note that the collection's subscription is open (and durable from now on).
    ///
    /// # Errors
    /// `Store` if sled fails.
    pub fn mark_started(&self, collection: &str) -> Result<()> {
        self.meta
            .insert(format!("started/{collection}").as_bytes(), &[])?;
        Ok(())
    }

    /// Remember a POST's status.
    ///
    /// # Errors
    /// `Store` if sled fails.
    pub fn put_status(&self, id: &str, status: &serde_json::Value) -> Result<()> {
        self.status.insert(
            id.as_bytes(),
            serde_json::to_vec(status).unwrap_or_default(),
        )?;
        Ok(())
    }

    /// A POST's status.
    ///
    /// # Errors
    /// `Store` if sled fails.
    pub fn status(&self, id: &str) -> Result<Option<serde_json::Value>> {
        Ok(self
            .status
            .get(id.as_bytes())?
            .and_then(|v| serde_json::from_slice(&v).ok()))
    }
}

#[cfg(test)]
#[path = "store_tests.rs"]
mod tests;
