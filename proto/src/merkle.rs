//! RFC 6962 / RFC 9162 Merkle tree over audit entries: roots of any prefix, inclusion and
//! consistency proofs, and their verification. Leaves are `SHA-256(0x00 || entry)`, inner
//! nodes `SHA-256(0x01 || left || right)`, so a leaf can never pass for an inner node.

use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::ids::Digest32;

/// Hash of a leaf's data.
pub fn leaf_hash(data: &[u8]) -> Digest32 {
    let mut h = Sha256::new();
    h.update([0u8]);
    h.update(data);
    Digest32(h.finalize().into())
}

/// Hash of an inner node.
pub fn node_hash(left: &Digest32, right: &Digest32) -> Digest32 {
    let mut h = Sha256::new();
    h.update([1u8]);
    h.update(left.0);
    h.update(right.0);
    Digest32(h.finalize().into())
}

/// Root of the empty tree: SHA-256 of nothing.
pub fn empty_root() -> Digest32 {
    Digest32(Sha256::digest([]).into())
}

/// Largest power of two strictly below `n` (n ≥ 2).
fn split(n: u64) -> u64 {
    1 << (63 - (n - 1).leading_zeros())
}

/// An append-only tree that keeps every complete subtree, so any prefix root and any
/// proof costs O(log n) hashes.
#[derive(Debug, Clone, Default)]
pub struct MerkleTree {
    /// `levels[k][i]` is the root of leaves `[i·2^k, (i+1)·2^k)`.
    levels: Vec<Vec<Digest32>>,
}

impl MerkleTree {
    /// An empty tree.
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of leaves.
    pub fn len(&self) -> u64 {
        self.levels.first().map_or(0, |l| l.len() as u64)
    }

    /// No leaves yet?
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Append a leaf hash (see [`leaf_hash`]).
    pub fn push(&mut self, leaf: Digest32) {
        if self.levels.is_empty() {
            self.levels.push(Vec::new());
        }
        self.levels[0].push(leaf);
        let mut k = 0;
        while self.levels[k].len() % 2 == 0 {
            let n = self.levels[k].len();
            let parent = node_hash(&self.levels[k][n - 2], &self.levels[k][n - 1]);
            if self.levels.len() == k + 1 {
                self.levels.push(Vec::new());
            }
            self.levels[k + 1].push(parent);
            k += 1;
        }
    }

    /// Root of the whole tree.
    pub fn root(&self) -> Digest32 {
        self.subtree(0, self.len())
    }

    /// Root of the first `size` leaves.
    ///
    /// # Errors
    /// `Merkle` if `size` exceeds the tree.
    pub fn root_at(&self, size: u64) -> Result<Digest32> {
        self.check_size(size)?;
        Ok(self.subtree(0, size))
    }

    fn check_size(&self, size: u64) -> Result<()> {
        if size > self.len() {
            return Err(Error::Merkle(format!(
                "tree has {} leaves, asked for size {size}",
                self.len()
            )));
        }
        Ok(())
    }

    /// MTH(D[start:end]) where `start` is a multiple of the largest power of two ≤ the
    /// range, as every range in RFC 6962 proofs is.
    fn subtree(&self, start: u64, end: u64) -> Digest32 {
        let n = end - start;
        if n == 0 {
            return empty_root();
        }
        if n.is_power_of_two() && start % n == 0 {
            let k = n.trailing_zeros() as usize;
            return self.levels[k][(start >> k) as usize];
        }
        let k = split(n);
        node_hash(
            &self.subtree(start, start + k),
            &self.subtree(start + k, end),
        )
    }

    /// Audit path for leaf `index` in the tree of the first `size` leaves (RFC 9162 2.1.3.1).
    ///
    /// # Errors
    /// `Merkle` if `index >= size` or `size` exceeds the tree.
    pub fn inclusion_proof(&self, index: u64, size: u64) -> Result<Vec<Digest32>> {
        self.check_size(size)?;
        if index >= size {
            return Err(Error::Merkle(format!(
                "leaf {index} is not in a tree of size {size}"
            )));
        }
        let mut proof = Vec::new();
        self.path(index, 0, size, &mut proof);
        Ok(proof)
    }

    fn path(&self, m: u64, start: u64, end: u64, out: &mut Vec<Digest32>) {
        let n = end - start;
        if n <= 1 {
            return;
        }
        let k = split(n);
        if m < k {
            self.path(m, start, start + k, out);
            out.push(self.subtree(start + k, end));
        } else {
            self.path(m - k, start + k, end, out);
            out.push(self.subtree(start, start + k));
        }
    }

    /// Proof that the tree of size `old` is a prefix of the tree of size `new`
    /// (RFC 9162 2.1.4.1). Empty when `old` is 0 or equals `new`.
    ///
    /// # Errors
    /// `Merkle` if `old > new` or `new` exceeds the tree.
    pub fn consistency_proof(&self, old: u64, new: u64) -> Result<Vec<Digest32>> {
        self.check_size(new)?;
        if old > new {
            return Err(Error::Merkle(format!(
                "old size {old} is larger than new size {new}"
            )));
        }
        let mut proof = Vec::new();
        if old > 0 {
            self.subproof(old, 0, new, true, &mut proof);
        }
        Ok(proof)
    }

    fn subproof(&self, m: u64, start: u64, end: u64, whole: bool, out: &mut Vec<Digest32>) {
        let n = end - start;
        if m == n {
            if !whole {
                out.push(self.subtree(start, end));
            }
            return;
        }
        let k = split(n);
        if m <= k {
            self.subproof(m, start, start + k, whole, out);
            out.push(self.subtree(start + k, end));
        } else {
            self.subproof(m - k, start + k, end, false, out);
            out.push(self.subtree(start, start + k));
        }
    }
}

/// Shift both counters right until `fn_`'s low bit is set or it reaches zero.
fn align(fn_: &mut u64, sn: &mut u64) {
    while *fn_ & 1 == 0 && *fn_ != 0 {
        *fn_ >>= 1;
        *sn >>= 1;
    }
}

/// Verify an inclusion proof (RFC 9162 2.1.3.2).
///
/// # Errors
/// `Merkle` saying why the proof fails.
pub fn verify_inclusion(
    leaf: &Digest32,
    index: u64,
    size: u64,
    proof: &[Digest32],
    root: &Digest32,
) -> Result<()> {
    if index >= size {
        return Err(Error::Merkle(format!(
            "leaf {index} is not in a tree of size {size}"
        )));
    }
    let (mut fn_, mut sn) = (index, size - 1);
    let mut r = *leaf;
    for p in proof {
        if sn == 0 {
            return Err(Error::Merkle("inclusion proof is too long".into()));
        }
        if fn_ & 1 == 1 || fn_ == sn {
            r = node_hash(p, &r);
            align(&mut fn_, &mut sn);
        } else {
            r = node_hash(&r, p);
        }
        fn_ >>= 1;
        sn >>= 1;
    }
    if sn != 0 {
        return Err(Error::Merkle("inclusion proof is too short".into()));
    }
    if &r != root {
        return Err(Error::Merkle(format!(
            "inclusion proof for leaf {index} does not lead to the root"
        )));
    }
    Ok(())
}

/// Verify a consistency proof between `(old, old_root)` and `(new, new_root)`
/// (RFC 9162 2.1.4.2).
///
/// # Errors
/// `Merkle` saying why: the two trees are not one append-only history.
pub fn verify_consistency(
    old: u64,
    new: u64,
    old_root: &Digest32,
    new_root: &Digest32,
    proof: &[Digest32],
) -> Result<()> {
    let fail = |why: &str| Err(Error::Merkle(format!("consistency {old} -> {new}: {why}")));
    if old > new {
        return fail("old size is larger than new size");
    }
    if old == new {
        if !proof.is_empty() {
            return fail("proof must be empty for equal sizes");
        }
        return if old_root == new_root {
            Ok(())
        } else {
            fail("same size, different roots")
        };
    }
    if old == 0 {
        if old_root != &empty_root() {
            return fail("the empty tree has another root");
        }
        return if proof.is_empty() {
            Ok(())
        } else {
            fail("proof must be empty from the empty tree")
        };
    }
    if proof.is_empty() {
        return fail("empty proof");
    }
    let mut path = proof.iter();
    let first = if old.is_power_of_two() {
        *old_root
    } else {
        *path.next().unwrap_or(old_root)
    };
    let (mut fn_, mut sn) = (old - 1, new - 1);
    while fn_ & 1 == 1 {
        fn_ >>= 1;
        sn >>= 1;
    }
    let (mut fr, mut sr) = (first, first);
    for c in path {
        if sn == 0 {
            return fail("proof is too long");
        }
        if fn_ & 1 == 1 || fn_ == sn {
            fr = node_hash(c, &fr);
            sr = node_hash(c, &sr);
            align(&mut fn_, &mut sn);
        } else {
            sr = node_hash(&sr, c);
        }
        fn_ >>= 1;
        sn >>= 1;
    }
    if sn != 0 {
        return fail("proof is too short");
    }
    if &fr != old_root {
        return fail("proof does not lead to the old root");
    }
    if &sr != new_root {
        return fail("proof does not lead to the new root");
    }
    Ok(())
}
