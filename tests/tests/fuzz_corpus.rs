//! The fuzz corpus as a regression test. Every seed under `tests/fuzz/seeds/<target>/` and
//! every crash reproducer under `tests/fuzz/regressions/<target>/` goes through the
//! matching entry point of `tests/fuzz/src/lib.rs` — included here as a module, so this
//! is the very code the `cargo fuzz` targets run — and a decoder that starts panicking on
//! one of them fails CI without a fuzzer.
//!
//! `write_seeds` (ignored) regenerates the seeds from the fixed fuzz network:
//! `cargo test -p ewx-tests --test fuzz_corpus -- --ignored write_seeds`.
#![allow(clippy::unwrap_used)]

#[allow(dead_code)]
#[path = "../fuzz/src/lib.rs"]
mod fuzz;

use std::fs;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};

use ewx_proto::audit::{Chain, Event};
use ewx_proto::checkpoint::{Checkpoint, SignedCheckpoint};
use ewx_proto::frame::{
    DEFAULT_MAX_FRAME, ExerciseFilter, Push, RejectReason, Request, Response, StartAt, encode_frame,
};
use ewx_proto::payload::{Bulletin, ConsultationRequest, SanctionsTrigger};
use ewx_proto::receipt::Receipt;
use ewx_proto::{
    Digest32, Draft, Envelope, EpochPolicy, Labels, Level, NodeId, Payload, Precedence, Sealer,
    Topic, TopicPattern,
};
use fuzz::{NOW_MS, TREE_LEAVES, fixture, proof_input};
use rand::SeedableRng;
use rand::rngs::StdRng;

/// A fuzz entry point.
type Target = fn(&[u8]);

/// Each fuzz target and its entry point.
const TARGETS: [(&str, Target); 4] = [
    ("frame", fuzz::frame),
    ("envelope", fuzz::envelope),
    ("roster", fuzz::roster),
    ("checkpoint", fuzz::checkpoint),
];

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz")
}

/// The files in `dir`, sorted; none if it does not exist.
fn files(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out: Vec<PathBuf> = entries
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .collect();
    out.sort();
    out
}

#[test]
fn every_seed_and_regression_runs_clean() {
    let mut failed = Vec::new();
    for (target, run) in TARGETS {
        let seeds = files(&fuzz_dir().join("seeds").join(target));
        assert!(!seeds.is_empty(), "no seeds for fuzz target {target}");
        let regressions = files(&fuzz_dir().join("regressions").join(target));
        for path in seeds.iter().chain(&regressions) {
            let data = fs::read(path).unwrap();
            if catch_unwind(AssertUnwindSafe(|| run(&data))).is_err() {
                failed.push(path.display().to_string());
            }
        }
    }
    assert!(failed.is_empty(), "fuzz inputs that panic: {failed:?}");
}

fn id(s: &str) -> NodeId {
    NodeId::new(s).unwrap()
}

fn labels(level: Level, compartments: &str) -> Labels {
    Labels::new(level, Labels::parse_compartments(compartments).unwrap())
}

fn draft(topic: &str, labels: Labels, payload: Payload, seq: u64) -> Draft {
    Draft {
        topic: Topic::new(topic).unwrap(),
        precedence: Precedence::Flash,
        labels,
        payload,
        seq,
        expires_ms: Some(NOW_MS + 3_600_000),
        receipt: true,
        case: None,
    }
}

/// Envelopes that open: different senders, kinds, labels and recipient lists.
fn envelopes() -> Vec<(&'static str, Envelope)> {
    let fx = fixture();
    let mut rng = StdRng::seed_from_u64(2026);
    let mut seal = |sender: &str, d: Draft| {
        let mut s = Sealer::new(fuzz::node_keys(sender), EpochPolicy::default());
        s.seal(&fx.roster, d, NOW_MS, &mut rng).unwrap()
    };
    let bulletin = Payload::Bulletin(Bulletin {
        headline: "Missile launch detected".into(),
        body: "Two cruise missiles heading west.".into(),
        area: Some("Kyiv oblast".into()),
        event_ms: Some(NOW_MS - 60_000),
        confidence: Some("high".into()),
    });
    let sanctions = Payload::SanctionsTrigger(SanctionsTrigger {
        regime: "UNSCR 2231".into(),
        measure: "snapback".into(),
        effective_ms: NOW_MS,
        statement: None,
    });
    let consult = Payload::ConsultationRequest(ConsultationRequest::new(
        "CASE-1".into(),
        "armed attack".into(),
        NOW_MS - 3_600_000,
        NOW_MS,
    ));
    let mut released = labels(Level::Red, "CORE");
    released.rel_to = [id("UA"), id("PL")].into();
    let mut exercise = labels(Level::Green, "");
    exercise.exercise = true;
    vec![
        (
            "bulletin-ua",
            seal(
                "UA",
                draft("ew.air.missile", labels(Level::Amber, "CORE"), bulletin, 1),
            ),
        ),
        (
            "sanctions-jp",
            seal(
                "JP",
                draft(
                    "sanctions.snapback",
                    labels(Level::Amber, "SANCTIONS"),
                    sanctions,
                    7,
                ),
            ),
        ),
        (
            "consult-pl-rel-to",
            seal("PL", draft("consult.case-1", released, consult, 2)),
        ),
        (
            "stix-ua-exercise",
            seal(
                "UA",
                draft(
                    "exercise.cyber",
                    exercise,
                    Payload::Stix(r#"{"type":"bundle","objects":[]}"#.into()),
                    3,
                ),
            ),
        ),
    ]
}

/// Rosters: the fixed one, and updates the council signed (one revokes a node, one
/// expires, one is unsigned).
fn rosters() -> Vec<(&'static str, Vec<u8>)> {
    let fx = fixture();
    let sign = |body: &ewx_proto::roster::RosterBody, signers: &[usize]| {
        let mut s = ewx_proto::SignedRoster::new(body).unwrap();
        for i in signers {
            s.sign(&fx.council[*i]);
        }
        s.encode().unwrap()
    };
    let mut v2 = fuzz::roster_body(2);
    v2.nodes[2].revoked = true;
    let mut v3 = fuzz::roster_body(3);
    v3.valid_until_ms = Some(NOW_MS + 86_400_000);
    v3.threshold = 3;
    vec![
        ("v1", fx.signed.encode().unwrap()),
        ("v2-revokes-jp", sign(&v2, &[0, 2])),
        ("v3-expires-3-of-3", sign(&v3, &[0, 1, 2])),
        ("v2-unsigned", sign(&v2, &[])),
    ]
}

/// Signed checkpoints: the fixed one, and one co-signed by two witnesses.
fn checkpoints() -> Vec<(&'static str, SignedCheckpoint)> {
    let fx = fixture();
    let mut cosigned = SignedCheckpoint::sign(
        &Checkpoint {
            size: 64,
            root: fx.tree.root_at(64).unwrap(),
            prev: fx.checkpoint.body_hash(),
            time_ms: NOW_MS + 1000,
        },
        fx.broker(),
    )
    .unwrap();
    for w in [0, 2] {
        let c = cosigned.cosign(&fx.nodes[w]);
        cosigned.cosignatures.push(c);
    }
    vec![
        ("checkpoint-100", fx.checkpoint.clone()),
        ("checkpoint-64-cosigned", cosigned),
    ]
}

/// A short audit log: a publish, a receipt for it, a roster change, an ack, a rejection.
fn audit_log(env: &Envelope) -> Vec<Vec<u8>> {
    let fx = fixture();
    let h = env.header();
    let receipt = Receipt::sign(&fx.nodes[1], h.id, env.hash(), NOW_MS + 5);
    let events = vec![
        Event::published(env, 0),
        Event::Receipt(receipt),
        Event::RosterChanged {
            version: 1,
            hash: fx.roster.hash(),
        },
        Event::Delivered {
            to: id("PL"),
            subscription: "alerts".into(),
            precedence: Precedence::Flash,
            through_index: 0,
        },
        Event::Rejected {
            from: Some(id("JP")),
            reason: "replay".into(),
            envelope_hash: Some(env.hash()),
            count: 3,
            window_ms: 1000,
        },
    ];
    let mut chain = Chain::new();
    events
        .into_iter()
        .enumerate()
        .map(|(i, e)| chain.append(NOW_MS + i as u64, e).unwrap().1)
        .collect()
}

/// Proof inputs for the checkpoint target: honest ones, and raw sizes past the tree.
fn proofs() -> Vec<(&'static str, Vec<u8>)> {
    let tree = &fixture().tree;
    let incl = |i, n| proof_input(0, i, n, &tree.inclusion_proof(i, n).unwrap());
    let cons = |o, n| proof_input(1, o, n, &tree.consistency_proof(o, n).unwrap());
    let junk: Vec<Digest32> = (0..3u8).map(|i| Digest32([i; 32])).collect();
    vec![
        ("inclusion-3-of-100", incl(3, TREE_LEAVES)),
        ("inclusion-99-of-100", incl(99, TREE_LEAVES)),
        ("inclusion-37-of-64", incl(37, 64)),
        ("inclusion-0-of-1", incl(0, 1)),
        ("consistency-37-100", cons(37, TREE_LEAVES)),
        ("consistency-64-100", cons(64, TREE_LEAVES)),
        ("consistency-1-2", cons(1, 2)),
        ("consistency-0-5", cons(0, 5)),
        (
            "inclusion-raw-huge",
            proof_input(2, u64::MAX - 1, u64::MAX, &junk),
        ),
        (
            "consistency-raw-huge",
            proof_input(3, 1 << 40, u64::MAX, &junk),
        ),
    ]
}

fn frame(msg: &impl serde::Serialize) -> Vec<u8> {
    encode_frame(msg, DEFAULT_MAX_FRAME).unwrap()
}

/// One frame of every message that carries signed bytes, and a few plain ones.
fn frames(env: &Envelope, entries: &[Vec<u8>]) -> Vec<(&'static str, Vec<u8>)> {
    let fx = fixture();
    let envelope = env.encode().unwrap();
    let roster = rosters().swap_remove(1).1;
    let cps = checkpoints();
    let receipt = Receipt::sign(&fx.nodes[0], env.header().id, env.hash(), NOW_MS + 10);
    let blobs = |items: Vec<Vec<u8>>| items.into_iter().map(serde_bytes::ByteBuf::from).collect();
    let hello = frame(&Request::Hello { roster_version: 1 });
    let ack = frame(&Request::Ack {
        name: "alerts".into(),
        precedence: Precedence::Flash,
        through: 41,
    });
    vec![
        ("req-hello", hello.clone()),
        (
            "req-publish",
            frame(&Request::Publish {
                envelope: envelope.clone(),
            }),
        ),
        (
            "req-subscribe",
            frame(&Request::Subscribe {
                name: "alerts".into(),
                pattern: TopicPattern::new("ew.*.>").unwrap(),
                from: StartAt::Index(7),
                filter: ExerciseFilter::RealOnly,
            }),
        ),
        ("req-ack", ack.clone()),
        ("req-receipt", frame(&Request::Receipt(receipt.clone()))),
        (
            "req-update-roster",
            frame(&Request::UpdateRoster {
                roster: roster.clone(),
            }),
        ),
        (
            "req-cosign",
            frame(&Request::Cosign {
                size: TREE_LEAVES,
                cosignature: fx.checkpoint.cosign(&fx.nodes[1]),
            }),
        ),
        (
            "req-consistency-proof",
            frame(&Request::ConsistencyProof { old: 37, new: 100 }),
        ),
        (
            "resp-welcome",
            frame(&Response::Welcome {
                node: id("UA"),
                roster_version: 2,
                roster: Some(roster.clone()),
            }),
        ),
        (
            "resp-audit-entries",
            frame(&Response::AuditEntries {
                from: 0,
                entries: blobs(entries.to_vec()),
            }),
        ),
        (
            "resp-checkpoints",
            frame(&Response::Checkpoints {
                checkpoints: blobs(cps.iter().map(|c| c.1.encode().unwrap()).collect()),
            }),
        ),
        (
            "resp-proof",
            frame(&Response::Proof {
                hashes: fx.tree.inclusion_proof(3, TREE_LEAVES).unwrap(),
            }),
        ),
        (
            "resp-bytes",
            frame(&Response::Bytes {
                bytes: Some(envelope.clone()),
            }),
        ),
        (
            "resp-rejected",
            frame(&Response::Rejected {
                reason: RejectReason::Replay,
                detail: "seq 3 is not above 7".into(),
            }),
        ),
        (
            "push-delivery",
            frame(&Push::Delivery {
                name: "alerts".into(),
                log_index: 0,
                envelope,
            }),
        ),
        ("push-receipt", frame(&Push::Receipt(receipt))),
        ("push-roster", frame(&Push::Roster { roster })),
        ("two-frames", [hello, ack].concat()),
    ]
}

fn write(target: &str, items: Vec<(&str, Vec<u8>)>) {
    let dir = fuzz_dir().join("seeds").join(target);
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    for (name, bytes) in items {
        fs::write(dir.join(name), bytes).unwrap();
    }
}

/// Regenerate `tests/fuzz/seeds/`: valid inputs the fuzzer mutates from.
#[test]
#[ignore = "writes tests/fuzz/seeds; run by hand after a wire-format change"]
fn write_seeds() {
    let fx = fixture();
    let envelopes = envelopes();
    for (_, env) in &envelopes {
        ewx_proto::open(env, &fx.roster, &fx.nodes[0]).unwrap();
    }
    let entries = audit_log(&envelopes[0].1);
    write("frame", frames(&envelopes[0].1, &entries));
    write(
        "envelope",
        envelopes
            .iter()
            .map(|(n, e)| (*n, e.encode().unwrap()))
            .collect(),
    );
    write("roster", rosters());
    let mut audit: Vec<(&str, Vec<u8>)> = checkpoints()
        .into_iter()
        .map(|(n, c)| (n, c.encode().unwrap()))
        .collect();
    let names = ["entry-published", "entry-receipt", "entry-roster-changed"];
    audit.extend(names.into_iter().zip(entries));
    audit.extend(proofs());
    write("checkpoint", audit);
}
