//! Roster threshold rules, checkpoints, receipts and the audit chain: each failure mode
//! gives its own error.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use ewx_proto::audit::{Chain, ChainFault, Entry, Event};
use ewx_proto::checkpoint::{Checkpoint, SignedCheckpoint};
use ewx_proto::receipt::Receipt;
use ewx_proto::roster::RosterBody;
use ewx_proto::{Digest32, Error, MessageId, SignedRoster, TopicPattern};

#[test]
fn threshold_two_of_three() {
    for pair in [[0, 1], [0, 2], [1, 2]] {
        assert_eq!(signed(&body(1), &pair).verify().unwrap().version(), 1);
    }
    signed(&body(1), &[0, 1, 2]).verify().unwrap();
    assert_eq!(
        signed(&body(1), &[2]).verify().err(),
        Some(Error::ThresholdNotMet { have: 1, need: 2 })
    );
    assert_eq!(
        signed(&body(1), &[]).verify().err(),
        Some(Error::ThresholdNotMet { have: 0, need: 2 })
    );
}

#[test]
fn duplicate_unknown_and_bad_signatures() {
    let mut dup = signed(&body(1), &[0]);
    dup.signatures.push(dup.signatures[0].clone());
    assert!(matches!(dup.verify(), Err(Error::DuplicateSigner { .. })));

    let mut unknown = signed(&body(1), &[0, 1]);
    unknown.sign(&council_key(9));
    assert!(matches!(unknown.verify(), Err(Error::UnknownSigner { .. })));

    let mut bad = signed(&body(1), &[0, 1]);
    bad.signatures[1].signature.0[0] ^= 1;
    assert_eq!(
        bad.verify().err(),
        Some(Error::BadSignature { what: "roster" })
    );

    // the body changed after signing (a node added by one operator)
    let mut edited = signed(&body(1), &[0, 1]);
    let mut b = body(1);
    b.nodes
        .push(node("EVIL", ewx_proto::Role::Partner, core_grants(), false));
    edited.body = SignedRoster::new(&b).unwrap().body;
    assert_eq!(
        edited.verify().err(),
        Some(Error::BadSignature { what: "roster" })
    );
}

#[test]
fn updates_need_the_trusted_council_and_never_go_back() {
    let v1 = roster();
    let v2 = signed(&body(2), &[0, 2]).verify_update(&v1).unwrap();
    assert_eq!(v2.version(), 2);
    assert_eq!(
        signed(&body(1), &[0, 1]).verify_update(&v2).err(),
        Some(Error::RosterRollback { have: 2, got: 1 })
    );
    // the same version with other content is refused; the identical roster is fine
    let mut other = body(2);
    other.issued_ms += 1;
    assert!(matches!(
        signed(&other, &[0, 1]).verify_update(&v2),
        Err(Error::InvalidRoster(_))
    ));
    signed(&body(2), &[1, 2]).verify_update(&v2).unwrap();

    // a new council: must be accepted by the old council's threshold too
    let mut rotated = body(3);
    rotated.council = (3..6)
        .map(|i| ewx_proto::roster::CouncilMember {
            name: format!("new-{i}"),
            key: ewx_proto::keys::SignPublic(council_key(i).verifying_key().to_bytes()),
        })
        .collect();
    let only_new = signed(&rotated, &[3, 4]);
    only_new.verify().unwrap(); // self-consistent
    assert_eq!(
        only_new.verify_update(&v2).err(),
        Some(Error::ThresholdNotMet { have: 0, need: 2 })
    );
    let only_old = signed(&rotated, &[0, 1]);
    assert_eq!(
        only_old.verify_update(&v2).err(),
        Some(Error::ThresholdNotMet { have: 0, need: 2 })
    );
    let both = signed(&rotated, &[3, 4, 0, 1]);
    assert_eq!(both.verify_update(&v2).unwrap().version(), 3);

    // another network's roster cannot replace ours
    let mut foreign = body(4);
    foreign.network = "elsewhere".into();
    assert!(matches!(
        signed(&foreign, &[0, 1]).verify_update(&v2),
        Err(Error::InvalidRoster(_))
    ));
}

#[test]
fn inconsistent_bodies_are_refused() {
    type Edit = fn(&mut RosterBody);
    let cases: [(&str, Edit); 6] = [
        ("threshold", |b| b.threshold = 0),
        ("threshold", |b| b.threshold = 4),
        ("twice", |b| b.nodes.push(b.nodes[0].clone())),
        ("appears twice", |b| b.council.push(b.council[0].clone())),
        ("shares a key", |b| b.nodes[1].sign = b.nodes[0].sign),
        ("empty", |b| b.council.clear()),
    ];
    for (want, edit) in cases {
        let mut b = body(1);
        edit(&mut b);
        let err = SignedRoster::new(&b).unwrap_err().to_string();
        assert!(err.contains(want), "{want}: {err}");
    }
}

#[test]
fn roster_expiry_and_round_trip() {
    let mut b = body(1);
    b.valid_until_ms = Some(NOW);
    let r = signed(&b, &[0, 1]);
    let wire = r.encode().unwrap();
    let back = SignedRoster::decode(&wire).unwrap();
    assert_eq!(back, r);
    let v = back.verify().unwrap();
    v.check_valid_at(NOW).unwrap();
    assert!(matches!(v.check_valid_at(NOW + 1), Err(Error::Time(_))));
    assert_eq!(
        v.node_by_key(&keys("PL").sign_public()).unwrap().id,
        id("PL")
    );
    assert!(matches!(v.active(&id("XX")), Err(Error::Revoked(_))));
    assert!(matches!(v.active(&id("NOPE")), Err(Error::UnknownNode(_))));
}

#[test]
fn checkpoints_sign_verify_and_cosign() {
    let broker = keys("BROKER");
    let cp = Checkpoint {
        size: 10,
        root: Digest32([3; 32]),
        prev: Digest32::default(),
        time_ms: NOW,
    };
    let mut s = SignedCheckpoint::sign(&cp, &broker).unwrap();
    assert_eq!(s.verify(&broker.sign_public()).unwrap(), cp);
    assert_eq!(
        s.verify(&keys("PL").sign_public()).err(),
        Some(Error::BadSignature { what: "checkpoint" })
    );
    s.cosignatures.push(s.cosign(&keys("PL")));
    s.cosignatures.push(s.cosign(&keys("JP")));
    let r = roster();
    assert_eq!(s.verify_cosignatures(&r).unwrap(), vec![id("PL"), id("JP")]);
    let back = SignedCheckpoint::decode(&s.encode().unwrap()).unwrap();
    assert_eq!(back, s);

    let mut forged = s.clone();
    forged.cosignatures[1].witness = id("UA");
    assert!(matches!(
        forged.verify_cosignatures(&r),
        Err(Error::BadSignature { .. })
    ));
    for (who, want) in [("BROKER", "broker"), ("XX", "revoked")] {
        let mut t = s.clone();
        t.cosignatures.push(t.cosign(&keys(who)));
        let err = t.verify_cosignatures(&r).unwrap_err().to_string();
        assert!(err.contains(want), "{who}: {err}");
    }
    let mut twice = s.clone();
    twice.cosignatures.push(twice.cosignatures[0].clone());
    assert!(matches!(
        twice.verify_cosignatures(&r),
        Err(Error::Malformed { .. })
    ));
    let mut edited = s.clone();
    let mut cp2 = cp.clone();
    cp2.size = 11;
    edited.body = SignedCheckpoint::sign(&cp2, &keys("PL")).unwrap().body;
    assert!(edited.verify(&broker.sign_public()).is_err());
}

#[test]
fn receipts_are_bound_to_signer_message_and_time() {
    let r = roster();
    let rc = Receipt::sign(&keys("PL"), MessageId([1; 16]), Digest32([2; 32]), NOW);
    rc.verify(&r).unwrap();
    for edit in [
        (|x: &mut Receipt| x.time_ms += 1) as fn(&mut Receipt),
        |x| x.id.0[0] ^= 1,
        |x| x.envelope_hash.0[31] ^= 1,
        |x| x.by = id("UA"),
    ] {
        let mut t = rc.clone();
        edit(&mut t);
        assert_eq!(t.verify(&r), Err(Error::BadSignature { what: "receipt" }));
    }
}

fn sample_log(n: u64) -> (Chain, Vec<Vec<u8>>) {
    let mut chain = Chain::new();
    let mut stored = Vec::new();
    for i in 0..n {
        let event = if i % 2 == 0 {
            Event::Subscribed {
                node: id("PL"),
                subscription: format!("s{i}"),
                pattern: TopicPattern::new("ew.>").unwrap(),
            }
        } else {
            Event::Delivered {
                to: id("PL"),
                subscription: "s0".into(),
                precedence: ewx_proto::Precedence::Flash,
                through_index: i,
            }
        };
        let (entry, bytes) = chain.append(NOW + i, event).unwrap();
        assert_eq!(entry.index, i);
        stored.push(bytes);
    }
    (chain, stored)
}

#[test]
fn audit_chain_replays_and_finds_the_first_bad_index() {
    let (chain, stored) = sample_log(20);
    let mut replay = Chain::new();
    for b in &stored {
        replay.push(b).unwrap();
    }
    assert_eq!(replay.tree().root(), chain.tree().root());
    assert_eq!(replay.head(), chain.head());

    let first_bad = |log: &[Vec<u8>]| {
        let mut c = Chain::new();
        log.iter().find_map(|b| c.push(b).err())
    };
    // an edited entry (re-encoded so it still decodes)
    let mut edited = stored.clone();
    let mut e = Entry::decode(&edited[7]).unwrap();
    e.time_ms += 1;
    edited[7] = e.encode().unwrap();
    assert!(matches!(
        first_bad(&edited),
        Some(Error::AuditChain {
            index: 8,
            fault: ChainFault::BrokenLink
        })
    ));
    // a deleted entry
    let mut deleted = stored.clone();
    deleted.remove(5);
    assert!(matches!(
        first_bad(&deleted),
        Some(Error::AuditChain {
            index: 5,
            fault: ChainFault::WrongIndex { says: 6 }
        })
    ));
    // two swapped
    let mut swapped = stored.clone();
    swapped.swap(3, 4);
    assert!(matches!(
        first_bad(&swapped),
        Some(Error::AuditChain {
            index: 3,
            fault: ChainFault::WrongIndex { says: 4 }
        })
    ));
    // an entry dated before its predecessor
    let mut c = Chain::new();
    let (_, a) = c
        .append(
            NOW,
            Event::RosterChanged {
                version: 1,
                hash: Digest32::default(),
            },
        )
        .unwrap();
    let (mut e, _) = c
        .append(
            NOW,
            Event::RosterChanged {
                version: 2,
                hash: Digest32::default(),
            },
        )
        .unwrap();
    e.time_ms = NOW - 1;
    let mut replay = Chain::new();
    replay.push(&a).unwrap();
    assert!(matches!(
        replay.push(&e.encode().unwrap()),
        Err(Error::AuditChain {
            index: 1,
            fault: ChainFault::TimeBackwards { .. }
        })
    ));
    // garbage bytes
    let mut garbage = stored.clone();
    garbage[2] = vec![0xff, 0x00];
    assert!(matches!(
        first_bad(&garbage),
        Some(Error::AuditChain {
            index: 2,
            fault: ChainFault::Undecodable(_)
        })
    ));
}

#[test]
fn a_witness_cosigns_only_extensions_of_what_it_saw() {
    use ewx_proto::audit::{Judgement, Witness, Witnessed};
    use ewx_proto::merkle::{MerkleTree, leaf_hash};
    let broker = keys("BROKER");
    let mut tree = MerkleTree::new();
    let sign = |tree: &MerkleTree, size: u64| {
        let cp = Checkpoint {
            size,
            root: tree.root_at(size).unwrap(),
            prev: Digest32::default(),
            time_ms: NOW,
        };
        SignedCheckpoint::sign(&cp, &broker)
            .unwrap()
            .encode()
            .unwrap()
    };
    for i in 0..20u64 {
        tree.push(leaf_hash(&i.to_be_bytes()));
    }
    let (ten, twenty) = (sign(&tree, 10), sign(&tree, 20));
    let key = broker.sign_public();

    let fresh = Witness::new(key, None).unwrap();
    assert_eq!(fresh.judge(Some(&ten)).unwrap(), Judgement::Cosign);
    assert_eq!(
        fresh.judge(None).unwrap(),
        Judgement::Decided(Witnessed::NoCheckpoint)
    );

    let seen = Witness::new(key, Some(&ten)).unwrap();
    assert_eq!(seen.from_size(), 10);
    assert_eq!(
        seen.judge(Some(&ten)).unwrap(),
        Judgement::Decided(Witnessed::UpToDate { size: 10 })
    );
    assert_eq!(
        seen.judge(Some(&twenty)).unwrap(),
        Judgement::NeedProof { old: 10, new: 20 }
    );
    let proof = tree.consistency_proof(10, 20).unwrap();
    assert_eq!(
        seen.judge_proof(&twenty, &proof).unwrap(),
        Judgement::Cosign
    );
    // another history of the same size, a proof that does not fit, a shrunken log, a
    // vanished checkpoint: each a fork, never co-signed
    let mut other = MerkleTree::new();
    for i in 100..120u64 {
        other.push(leaf_hash(&i.to_be_bytes()));
    }
    let forks = [
        seen.judge(Some(&sign(&other, 10))).unwrap(),
        seen.judge_proof(&sign(&other, 20), &proof).unwrap(),
        Witness::new(key, Some(&twenty))
            .unwrap()
            .judge(Some(&ten))
            .unwrap(),
        seen.judge(None).unwrap(),
    ];
    for f in forks {
        assert!(
            matches!(f, Judgement::Decided(Witnessed::Fork { .. })),
            "{f:?}"
        );
    }
    // a checkpoint not signed by the broker is an error, not a judgement
    let forged = {
        let cp = Checkpoint {
            size: 20,
            root: tree.root(),
            prev: Digest32::default(),
            time_ms: NOW,
        };
        SignedCheckpoint::sign(&cp, &keys("UA"))
            .unwrap()
            .encode()
            .unwrap()
    };
    assert!(seen.judge(Some(&forged)).is_err());
    assert_eq!(seen.seen(), Some(ten));
}
