//! Where each envelope is kept. A commit of a few messages — a quiet exchange, a FLASH
//! commit of its own — keeps them in sled with everything else: one `fdatasync`, the
//! shortest ack. A commit of [`SEGMENT_BATCH`] or more (the broker under load) appends
//! them to a segment file, `fdatasync`s it, and sled keeps only their place: copying
//! 1 KiB values into sled (again at every node split and rewrite) was the largest cost of
//! a busy commit, and the second sync is shared by many messages.
//!
//! A `places` value is tagged: [`INLINE`] ‖ envelope, or [`IN_SEGMENT`] ‖ [`Place`].
//! `meta[SEGMENT_END]`, written in the same transaction, is the newest place in a
//! segment: on start the segments are cut there (bytes of a commit that never finished).

use bytes::Bytes;

use super::segments::Place;
use super::{SCHEMA, Store, be, read_u64};
use crate::error::{Error, Result};
use crate::log::{Batch, Prune};

/// `meta` key of the newest place in a segment.
pub(super) const SEGMENT_END: &str = "segment_end";
/// Commits of at least this many messages put their envelopes in a segment.
const SEGMENT_BATCH: usize = 8;
const INLINE: u8 = 0;
const IN_SEGMENT: u8 = 1;

fn in_segment(place: Place) -> Vec<u8> {
    let mut v = Vec::with_capacity(21);
    v.push(IN_SEGMENT);
    v.extend_from_slice(&place.encode());
    v
}

fn inline(envelope: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(1 + envelope.len());
    v.push(INLINE);
    v.extend_from_slice(envelope);
    v
}

fn damaged(what: String) -> Error {
    Error::Store(format!("the store is damaged: {what}"))
}

/// What a commit writes for its envelopes.
pub(super) struct Placed {
    /// The `places` value of each message, in order.
    pub values: Vec<Vec<u8>>,
    /// The new `meta[SEGMENT_END]`, if they went to a segment.
    pub segment_end: Option<[u8; 20]>,
}

impl Store {
    /// Where a batch's envelopes go; if to a segment, they are durable there on return.
    ///
    /// # Errors
    /// `File` if the segment cannot be written or synced.
    pub(super) fn place_envelopes(&self, batch: &Batch) -> Result<Placed> {
        if batch.messages.len() < SEGMENT_BATCH {
            let values = batch.messages.iter().map(|m| inline(&m.bytes)).collect();
            return Ok(Placed {
                values,
                segment_end: None,
            });
        }
        let places = self
            .segments
            .append(batch.messages.iter().map(|m| (m.index, m.bytes.as_ref())))?;
        self.segments.sync()?;
        Ok(Placed {
            segment_end: places.last().map(Place::encode),
            values: places.into_iter().map(in_segment).collect(),
        })
    }

    /// The envelope at a log index.
    ///
    /// # Errors
    /// `Store` on I/O failure or if the store is damaged.
    pub fn message(&self, index: u64) -> Result<Option<Bytes>> {
        let Some(v) = self.places.get(be(index))? else {
            return Ok(None);
        };
        match v.first() {
            Some(&INLINE) => Ok(Some(Bytes::from_owner(v).slice(1..))),
            Some(&IN_SEGMENT) => {
                let place = Place::decode(&v[1..])
                    .ok_or_else(|| damaged(format!("the place of {index} does not decode")))?;
                Ok(self.segments.read(place)?.map(Bytes::from))
            }
            _ => Err(damaged(format!("the envelope of {index} has no known tag"))),
        }
    }

    /// The envelopes at `indexes` (ascending; pruned ones skipped), until about
    /// `max_bytes` are read. Envelopes lying next to each other in a segment are read in
    /// one call: a lane catching up reads a page of the log with a few reads, not one each.
    ///
    /// # Errors
    /// `Store` on I/O failure or if the store is damaged.
    pub(super) fn messages(&self, indexes: &[u64], max_bytes: usize) -> Result<Vec<(u64, Bytes)>> {
        let mut out = Vec::with_capacity(indexes.len());
        // a run of places adjacent in one segment, not read yet
        let mut run: Vec<(u64, Place)> = Vec::new();
        let mut bytes = 0;
        for &index in indexes {
            if bytes >= max_bytes {
                break;
            }
            let Some(v) = self.places.get(be(index))? else {
                continue; // pruned by retention
            };
            match v.first() {
                Some(&IN_SEGMENT) => {
                    let place = Place::decode(&v[1..])
                        .ok_or_else(|| damaged(format!("the place of {index} does not decode")))?;
                    bytes += place.len as usize;
                    let adjacent = run.last().is_none_or(|(_, p)| {
                        p.segment == place.segment && p.offset + u64::from(p.len) == place.offset
                    });
                    if !adjacent {
                        self.read_run(&mut run, &mut out)?;
                    }
                    run.push((index, place));
                }
                Some(&INLINE) => {
                    self.read_run(&mut run, &mut out)?;
                    bytes += v.len() - 1;
                    out.push((index, Bytes::from_owner(v).slice(1..)));
                }
                _ => return Err(damaged(format!("the envelope of {index} has no known tag"))),
            }
        }
        self.read_run(&mut run, &mut out)?;
        Ok(out)
    }

    /// Read a run of adjacent places with one call and hand out each envelope.
    fn read_run(&self, run: &mut Vec<(u64, Place)>, out: &mut Vec<(u64, Bytes)>) -> Result<()> {
        let (Some(&(_, first)), Some(&(_, last))) = (run.first(), run.last()) else {
            return Ok(());
        };
        let len = last.offset + u64::from(last.len) - first.offset;
        let whole = Place {
            len: u32::try_from(len).map_err(|_| damaged("a run of places too long".into()))?,
            ..first
        };
        if let Some(all) = self.segments.read(whole)?.map(Bytes::from) {
            for (index, p) in run.iter() {
                let at = (p.offset - first.offset) as usize;
                out.push((*index, all.slice(at..at + p.len as usize)));
            }
        }
        run.clear();
        Ok(())
    }

    /// On start: cut the segments where the newest recorded place ends.
    pub(super) fn cut_segments(&self) -> Result<()> {
        let end = match self.meta.get(SEGMENT_END)? {
            None => None,
            Some(v) => Some(
                Place::decode(&v)
                    .ok_or_else(|| damaged("the segments' end does not decode".into()))?,
            ),
        };
        self.segments.cut_tail(end)
    }

    /// Retention ([`Prune`]): drop the oldest envelopes while their index is below
    /// `keep_from` or they were created before `min_created_ms`; logs what it did.
    pub(in crate::log) fn retain(&self, p: Prune) {
        match self.prune(p) {
            Ok(0) => {}
            Ok(n) => tracing::info!(
                pruned = n,
                "retention: dropped old envelopes (audit entries kept)"
            ),
            Err(e) => tracing::warn!("retention failed: {e}"),
        }
    }

    fn prune(
        &self,
        Prune {
            keep_from,
            min_created_ms,
        }: Prune,
    ) -> Result<usize> {
        let mut n = 0;
        let mut first_kept = None;
        for kv in self.places.iter() {
            let (k, _) = kv?;
            let Some(index) = read_u64(&k) else { break };
            let env = self
                .message(index)?
                .and_then(|b| ewx_proto::Envelope::stored_header(&b, usize::MAX).ok());
            let created = env.as_ref().map_or(0, |h| h.created_ms);
            if index >= keep_from && created >= min_created_ms {
                first_kept = Some(index);
                break;
            }
            self.places.remove(&k)?;
            if let Some(h) = env {
                self.ids.remove(h.id.0)?;
            }
            self.lanes.drop_below(index + 1);
            n += 1;
        }
        if n > 0 {
            // the places are gone for good before their bytes are
            self.sync()?;
            self.segments.drop_before(first_kept.unwrap_or(u64::MAX));
        }
        Ok(n)
    }

    /// Schema 2 to 3: the envelopes of the `log` tree become `places` values (inline).
    /// Interrupted, it starts over: schema 2 stays until the end.
    pub(super) fn upgrade_from_2(&self) -> Result<()> {
        let log = self.db.open_tree("log")?;
        self.places.clear()?;
        let mut moved = 0u64;
        for kv in log.iter() {
            let (k, v) = kv?;
            self.places.insert(k, inline(&v))?;
            moved += 1;
        }
        self.meta.insert("schema", &SCHEMA.to_be_bytes())?;
        self.sync()?;
        self.db.drop_tree("log")?;
        tracing::info!(moved, "store upgraded from schema 2 to {SCHEMA}");
        self.sync()
    }
}
