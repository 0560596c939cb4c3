//! Known-answer tests for the primitives ewx builds on, with vectors from the standards
//! (see the header of each file under `testdata/` for exact sources):
//! RFC 8032 §7.1 (Ed25519), RFC 7748 §5.2 and §6.1 (X25519), RFC 8439 §2.8.2
//! (ChaCha20-Poly1305 AEAD), and the RFC 6962 Merkle tree vectors used by
//! transparency-dev/merkle (roots of sizes 0..=8, inclusion and consistency proofs).
#![allow(clippy::unwrap_used)]

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use ewx_proto::keys::{SignPublic, Signature};
use ewx_proto::merkle::{MerkleTree, leaf_hash, verify_consistency, verify_inclusion};
use ewx_proto::{Digest32, NodeId, NodeKeys};

fn records(file: &str) -> Vec<Vec<String>> {
    let path = format!("{}/testdata/{file}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{path}: {e}"))
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .map(|l| l.split_whitespace().map(str::to_owned).collect())
        .collect()
}

fn bytes(hex_text: &str) -> Vec<u8> {
    if hex_text == "-" {
        Vec::new()
    } else {
        hex::decode(hex_text).unwrap()
    }
}

fn b32(hex_text: &str) -> [u8; 32] {
    bytes(hex_text).try_into().unwrap()
}

fn digest(hex_text: &str) -> Digest32 {
    Digest32(b32(hex_text))
}

#[test]
fn rfc8032_ed25519_through_node_keys() {
    let recs = records("rfc8032-ed25519.txt");
    assert!(recs.len() >= 3);
    for r in recs {
        let keys = NodeKeys::from_secrets(NodeId::new("T").unwrap(), b32(&r[1]), [1; 32]);
        assert_eq!(keys.sign_public().0, b32(&r[2]), "{} public key", r[0]);
        let msg = bytes(&r[3]);
        let sig = keys.sign(&msg);
        assert_eq!(hex::encode(sig.0), r[4], "{} signature", r[0]);
        SignPublic(b32(&r[2]))
            .verify("kat", &msg, &Signature(sig.0))
            .unwrap();
    }
}

#[test]
fn rfc7748_x25519() {
    let recs = records("rfc7748-x25519.txt");
    let mut seen = 0;
    for r in recs {
        match r[0].as_str() {
            "x25519-1" | "x25519-2" => {
                assert_eq!(
                    x25519_dalek::x25519(b32(&r[1]), b32(&r[2])),
                    b32(&r[3]),
                    "{}",
                    r[0]
                );
                seen += 1;
            }
            "dh" => {
                let a = x25519_dalek::StaticSecret::from(b32(&r[1]));
                let b = x25519_dalek::StaticSecret::from(b32(&r[3]));
                let a_pub = x25519_dalek::PublicKey::from(&a);
                let b_pub = x25519_dalek::PublicKey::from(&b);
                assert_eq!(a_pub.to_bytes(), b32(&r[2]));
                assert_eq!(b_pub.to_bytes(), b32(&r[4]));
                assert_eq!(a.diffie_hellman(&b_pub).to_bytes(), b32(&r[5]));
                assert_eq!(b.diffie_hellman(&a_pub).to_bytes(), b32(&r[5]));
                seen += 1;
            }
            other => panic!("unknown record {other}"),
        }
    }
    assert_eq!(seen, 3);
}

#[test]
fn rfc8439_aead() {
    let recs = records("rfc8439-aead.txt");
    assert_eq!(recs.len(), 1);
    let r = &recs[0];
    let cipher = ChaCha20Poly1305::new(Key::from_slice(&bytes(&r[0])));
    let nonce = bytes(&r[1]);
    let (aad, plain) = (bytes(&r[2]), bytes(&r[3]));
    let mut expected = bytes(&r[4]);
    expected.extend(bytes(&r[5]));
    let sealed = cipher
        .encrypt(
            Nonce::from_slice(&nonce),
            Payload {
                msg: &plain,
                aad: &aad,
            },
        )
        .unwrap();
    assert_eq!(sealed, expected);
    let opened = cipher
        .decrypt(
            Nonce::from_slice(&nonce),
            Payload {
                msg: &sealed,
                aad: &aad,
            },
        )
        .unwrap();
    assert_eq!(opened, plain);
}

#[test]
fn rfc6962_merkle_vectors() {
    let recs = records("rfc6962-merkle.txt");
    let mut tree = MerkleTree::new();
    let mut counts = [0; 4];
    for r in &recs {
        match r[0].as_str() {
            "leaf" => {
                assert_eq!(r[1].parse::<u64>().unwrap(), tree.len());
                tree.push(leaf_hash(&bytes(&r[2])));
                counts[0] += 1;
            }
            "root" => {
                let size: u64 = r[1].parse().unwrap();
                assert_eq!(tree.root_at(size).unwrap(), digest(&r[2]), "root {size}");
                counts[1] += 1;
            }
            "inclusion" => {
                let (index, size): (u64, u64) = (r[1].parse().unwrap(), r[2].parse().unwrap());
                let want: Vec<Digest32> = if r[3] == "-" {
                    vec![]
                } else {
                    r[3].split(',').map(digest).collect()
                };
                assert_eq!(
                    tree.inclusion_proof(index, size).unwrap(),
                    want,
                    "inclusion {index} {size}"
                );
                let leaf = recs
                    .iter()
                    .find(|l| l[0] == "leaf" && l[1] == r[1])
                    .unwrap();
                verify_inclusion(
                    &leaf_hash(&bytes(&leaf[2])),
                    index,
                    size,
                    &want,
                    &tree.root_at(size).unwrap(),
                )
                .unwrap();
                counts[2] += 1;
            }
            "consistency" => {
                let (old, new): (u64, u64) = (r[1].parse().unwrap(), r[2].parse().unwrap());
                let want: Vec<Digest32> = if r[3] == "-" {
                    vec![]
                } else {
                    r[3].split(',').map(digest).collect()
                };
                assert_eq!(
                    tree.consistency_proof(old, new).unwrap(),
                    want,
                    "consistency {old} {new}"
                );
                verify_consistency(
                    old,
                    new,
                    &tree.root_at(old).unwrap(),
                    &tree.root_at(new).unwrap(),
                    &want,
                )
                .unwrap();
                counts[3] += 1;
            }
            other => panic!("unknown record {other}"),
        }
    }
    assert_eq!(counts[0], 8);
    assert_eq!(counts[1], 9);
    assert!(counts[2] >= 5 && counts[3] >= 4, "{counts:?}");
}
