//! The Merkle tree against a naive, literal transcription of RFC 6962 §2.1 (MTH, PATH,
//! PROOF/SUBPROOF) for every tree size 1..=300: roots, every inclusion proof, every
//! consistency proof — generated equal, verified, and rejected when altered.
#![allow(clippy::unwrap_used)]

use ewx_proto::Digest32;
use ewx_proto::merkle::{MerkleTree, leaf_hash, node_hash, verify_consistency, verify_inclusion};

const MAX: usize = 300;

fn k_of(n: usize) -> usize {
    let mut k = 1;
    while k * 2 < n {
        k *= 2;
    }
    k
}

fn mth(d: &[Digest32]) -> Digest32 {
    match d.len() {
        0 => ewx_proto::merkle::empty_root(),
        1 => d[0],
        n => {
            let k = k_of(n);
            node_hash(&mth(&d[..k]), &mth(&d[k..]))
        }
    }
}

fn path(m: usize, d: &[Digest32]) -> Vec<Digest32> {
    let n = d.len();
    if n == 1 {
        return vec![];
    }
    let k = k_of(n);
    if m < k {
        let mut p = path(m, &d[..k]);
        p.push(mth(&d[k..]));
        p
    } else {
        let mut p = path(m - k, &d[k..]);
        p.push(mth(&d[..k]));
        p
    }
}

fn subproof(m: usize, d: &[Digest32], b: bool) -> Vec<Digest32> {
    let n = d.len();
    if m == n {
        return if b { vec![] } else { vec![mth(d)] };
    }
    let k = k_of(n);
    if m <= k {
        let mut p = subproof(m, &d[..k], b);
        p.push(mth(&d[k..]));
        p
    } else {
        let mut p = subproof(m - k, &d[k..], false);
        p.push(mth(&d[..k]));
        p
    }
}

fn leaves() -> Vec<Digest32> {
    (0..MAX as u32)
        .map(|i| leaf_hash(&i.to_be_bytes()))
        .collect()
}

fn flip(p: &[Digest32], i: usize) -> Vec<Digest32> {
    let mut p = p.to_vec();
    p[i].0[i % 32] ^= 1;
    p
}

#[test]
fn roots_and_inclusion_proofs_match_the_reference() {
    let d = leaves();
    let mut tree = MerkleTree::new();
    for n in 1..=MAX {
        tree.push(d[n - 1]);
        let root = mth(&d[..n]);
        assert_eq!(tree.root(), root, "root of {n}");
        for m in 0..n {
            let proof = tree.inclusion_proof(m as u64, n as u64).unwrap();
            assert_eq!(proof, path(m, &d[..n]), "path {m} in {n}");
            verify_inclusion(&d[m], m as u64, n as u64, &proof, &root).unwrap();
            // the wrong leaf, a wrong index, or an altered proof must fail
            assert!(
                verify_inclusion(&d[(m + 1) % n], m as u64, n as u64, &proof, &root).is_err()
                    || n == 1
            );
            if n > 1 {
                assert!(
                    verify_inclusion(&d[m], ((m + 1) % n) as u64, n as u64, &proof, &root).is_err()
                );
                assert!(
                    verify_inclusion(
                        &d[m],
                        m as u64,
                        n as u64,
                        &flip(&proof, m % proof.len()),
                        &root
                    )
                    .is_err()
                );
                assert!(verify_inclusion(&d[m], m as u64, n as u64, &proof[1..], &root).is_err());
                let mut longer = proof.clone();
                longer.push(d[0]);
                assert!(verify_inclusion(&d[m], m as u64, n as u64, &longer, &root).is_err());
            }
        }
    }
    // prefix roots from the full tree agree too
    for n in 0..=MAX {
        assert_eq!(tree.root_at(n as u64).unwrap(), mth(&d[..n]));
    }
    assert!(tree.root_at(MAX as u64 + 1).is_err());
    assert!(tree.inclusion_proof(5, 5).is_err());
}

#[test]
fn consistency_proofs_match_the_reference() {
    let d = leaves();
    let mut tree = MerkleTree::new();
    d.iter().for_each(|l| tree.push(*l));
    let roots: Vec<Digest32> = (0..=MAX).map(|n| tree.root_at(n as u64).unwrap()).collect();
    for n in 1..=MAX {
        for m in 1..=n {
            let proof = tree.consistency_proof(m as u64, n as u64).unwrap();
            assert_eq!(proof, subproof(m, &d[..n], true), "proof {m} -> {n}");
            verify_consistency(m as u64, n as u64, &roots[m], &roots[n], &proof).unwrap();
            if m < n {
                // a forked history (other old root), or an altered proof, must fail
                assert!(
                    verify_consistency(m as u64, n as u64, &roots[m - 1], &roots[n], &proof)
                        .is_err()
                );
                assert!(
                    verify_consistency(
                        m as u64,
                        n as u64,
                        &roots[m],
                        &roots[n],
                        &flip(&proof, m % proof.len())
                    )
                    .is_err()
                );
                assert!(
                    verify_consistency(m as u64, n as u64, &roots[m], &roots[n], &proof[1..])
                        .is_err()
                );
            }
        }
    }
    assert!(tree.consistency_proof(3, 2).is_err());
    assert!(verify_consistency(0, 5, &roots[0], &roots[5], &[]).is_ok());
    assert!(verify_consistency(0, 5, &roots[3], &roots[5], &[]).is_err());
    assert!(verify_consistency(4, 4, &roots[4], &roots[5], &[]).is_err());
}
