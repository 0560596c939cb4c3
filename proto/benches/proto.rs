//! Micro-benchmarks of the protocol core: seal and open of a 1 KiB payload for 1, 10 and
//! 50 recipients, signature verification alone, and Merkle append and proofs.
//! Run with `cargo bench -p ewx-proto`.
#![allow(clippy::unwrap_used, missing_docs)]

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use ewx_proto::merkle::{MerkleTree, leaf_hash, verify_consistency, verify_inclusion};
use ewx_proto::payload::{Bulletin, Payload, Precedence};
use ewx_proto::{Draft, EpochPolicy, Labels, Level, Role, Roster, Sealer, Topic, open};
use ewx_testkit::grants::grants;
use ewx_testkit::{Network, keys};
use rand::SeedableRng;
use rand::rngs::StdRng;

const NOW: u64 = 1_700_000_000_000;

/// A roster with `n` partner nodes (N0 publishes) who may all read CORE/AMBER.
fn roster(n: usize) -> Roster {
    let grants = grants(Level::Red, "CORE", &[">"], &[">"]);
    (0..n)
        .fold(Network::new("bench").issued(NOW), |net, i| {
            net.node(&format!("N{i}"), Role::Partner, grants.clone())
        })
        .roster()
}

fn draft(seq: u64) -> Draft {
    Draft {
        topic: Topic::new("ew.air.missile").unwrap(),
        precedence: Precedence::Flash,
        labels: Labels::new(Level::Amber, Labels::parse_compartments("CORE").unwrap()),
        payload: Payload::Bulletin(Bulletin {
            headline: "Missile launch".into(),
            body: "x".repeat(1000),
            area: None,
            event_ms: None,
            confidence: None,
        }),
        seq,
        expires_ms: None,
        receipt: false,
        case: None,
    }
}

fn seal_open(c: &mut Criterion) {
    let mut g = c.benchmark_group("envelope");
    g.throughput(Throughput::Elements(1));
    for n in [1usize, 10, 50] {
        let r = roster(n);
        let mut rng = StdRng::seed_from_u64(1);
        // epoch reuse: the X25519 per recipient is cached, as a busy publisher would
        let mut sealer = Sealer::new(
            keys("N0"),
            EpochPolicy {
                max_messages: u32::MAX,
                max_age_ms: u64::MAX,
            },
        );
        let mut seq = 0;
        g.bench_with_input(BenchmarkId::new("seal_1KiB_epoch_cached", n), &n, |b, _| {
            b.iter(|| {
                seq += 1;
                black_box(sealer.seal(&r, draft(seq), NOW, &mut rng).unwrap())
            })
        });
        // a fresh ephemeral key for every message: one X25519 per recipient
        let mut fresh = Sealer::new(
            keys("N0"),
            EpochPolicy {
                max_messages: 1,
                max_age_ms: u64::MAX,
            },
        );
        g.bench_with_input(BenchmarkId::new("seal_1KiB_fresh_epoch", n), &n, |b, _| {
            b.iter(|| {
                seq += 1;
                black_box(fresh.seal(&r, draft(seq), NOW, &mut rng).unwrap())
            })
        });
        let env = sealer.seal(&r, draft(u64::MAX), NOW, &mut rng).unwrap();
        let reader = keys(&format!("N{}", n - 1));
        g.bench_with_input(BenchmarkId::new("open_1KiB", n), &n, |b, _| {
            b.iter(|| black_box(open(&env, &r, &reader).unwrap()))
        });
        let wire = env.encode().unwrap();
        g.bench_with_input(BenchmarkId::new("decode_verify_1KiB", n), &n, |b, _| {
            b.iter(|| {
                let e = ewx_proto::Envelope::decode(&wire, 1 << 20).unwrap();
                e.verify(&r).unwrap();
                black_box(e)
            })
        });
    }
    g.finish();
}

fn merkle(c: &mut Criterion) {
    let mut g = c.benchmark_group("merkle");
    let mut tree = MerkleTree::new();
    for i in 0u32..1 << 20 {
        tree.push(leaf_hash(&i.to_be_bytes()));
    }
    let mut i = 0u32;
    g.bench_function("append_leaf", |b| {
        b.iter(|| {
            i = i.wrapping_add(1);
            tree.push(leaf_hash(&i.to_be_bytes()))
        })
    });
    let size = 1 << 20;
    let root = tree.root_at(size).unwrap();
    g.bench_function("inclusion_proof_1M", |b| {
        b.iter(|| black_box(tree.inclusion_proof(123_457, size).unwrap()))
    });
    let proof = tree.inclusion_proof(123_457, size).unwrap();
    let leaf = leaf_hash(&123_457u32.to_be_bytes());
    g.bench_function("verify_inclusion_1M", |b| {
        b.iter(|| verify_inclusion(&leaf, 123_457, size, &proof, &root).unwrap())
    });
    let old = 700_001;
    let old_root = tree.root_at(old).unwrap();
    g.bench_function("consistency_proof_1M", |b| {
        b.iter(|| black_box(tree.consistency_proof(old, size).unwrap()))
    });
    let cproof = tree.consistency_proof(old, size).unwrap();
    g.bench_function("verify_consistency_1M", |b| {
        b.iter(|| verify_consistency(old, size, &old_root, &root, &cproof).unwrap())
    });
    g.finish();
}

criterion_group!(benches, seal_open, merkle);
criterion_main!(benches);
