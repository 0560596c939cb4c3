//! Which message ids the log may hold, without a read: a scalable Bloom filter over every
//! logged id (about 1.25 bytes each, 1 % false positives), rebuilt from the audit log on
//! start. A publish whose id the filter has never seen is new for sure and skips the
//! `ids` lookup in sled; a "maybe" is settled by that lookup, as before. Ids are random
//! 128-bit values chosen by their senders, so their own bits serve as the hashes (a
//! sender choosing colliding ids only sends itself down the slow path).

use ewx_proto::MessageId;

/// Probes per id.
const K: u64 = 7;
/// Bits per id of capacity (with [`K`]: ≈ 1 % false positives when full).
const BITS_PER_ID: usize = 10;
/// Capacity of the first filter; each next one doubles.
const FIRST: usize = 1 << 16;

#[derive(Debug, Clone)]
struct Bloom {
    bits: Vec<u64>,
    mask: u64,
    count: usize,
    capacity: usize,
}

impl Bloom {
    fn new(capacity: usize) -> Self {
        let bits = (capacity * BITS_PER_ID).next_power_of_two().max(64);
        Self {
            bits: vec![0; bits / 64],
            mask: bits as u64 - 1,
            count: 0,
            capacity,
        }
    }

    /// The bit positions of an id: double hashing over its two random halves.
    fn probes(mask: u64, id: &MessageId) -> impl Iterator<Item = u64> {
        let (a, b) = id.0.split_at(8);
        let h1 = u64::from_le_bytes(a.try_into().unwrap_or_default());
        let h2 = u64::from_le_bytes(b.try_into().unwrap_or_default()) | 1;
        (0..K).map(move |i| h1.wrapping_add(i.wrapping_mul(h2)) & mask)
    }

    fn maybe(&self, id: &MessageId) -> bool {
        Self::probes(self.mask, id).all(|p| self.bits[(p / 64) as usize] & (1 << (p % 64)) != 0)
    }

    fn insert(&mut self, id: &MessageId) {
        for p in Self::probes(self.mask, id) {
            self.bits[(p / 64) as usize] |= 1 << (p % 64);
        }
        self.count += 1;
    }
}

/// Every id logged, approximately (never a false "no").
#[derive(Debug, Clone, Default)]
pub struct SeenIds(Vec<Bloom>);

impl SeenIds {
    /// Might the log hold `id`? `false` is certain.
    pub fn maybe(&self, id: &MessageId) -> bool {
        self.0.iter().any(|b| b.maybe(id))
    }

    /// Remember a logged id.
    pub fn insert(&mut self, id: &MessageId) {
        let full = self.0.last().is_none_or(|b| b.count >= b.capacity);
        if full {
            let capacity = self.0.last().map_or(FIRST, |b| b.capacity * 2);
            self.0.push(Bloom::new(capacity));
        }
        if let Some(b) = self.0.last_mut() {
            b.insert(id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u64) -> MessageId {
        // spread like random ids
        let d = ewx_proto::Digest32::of(&[&n.to_le_bytes()]);
        let mut raw = [0u8; 16];
        raw.copy_from_slice(&d.0[..16]);
        MessageId(raw)
    }

    #[test]
    fn no_false_negatives_few_false_positives_and_it_grows() {
        let mut seen = SeenIds::default();
        for n in 0..200_000 {
            seen.insert(&id(n));
        }
        assert!((0..200_000).all(|n| seen.maybe(&id(n))), "never a false no");
        let false_pos = (1_000_000..1_100_000)
            .filter(|n| seen.maybe(&id(*n)))
            .count();
        assert!(false_pos < 5_000, "{false_pos} false positives in 100 000");
        assert!(seen.0.len() >= 2, "it grew past the first filter");
    }
}
