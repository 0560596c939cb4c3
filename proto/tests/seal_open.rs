//! Sealing and opening across the access rule: who gets a content key, who can decrypt,
//! and the exact error for every kind of tampering or forgery.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeSet;

use common::*;
use ewx_proto::envelope::{DEFAULT_MAX_ENVELOPE, Header};
use ewx_proto::keys::KemPublic;
use ewx_proto::payload::{Kind, Payload};
use ewx_proto::{Envelope, EpochPolicy, Error, Level, Role, Sealer, open};
use rand::SeedableRng;
use rand::rngs::StdRng;

fn rng() -> StdRng {
    StdRng::seed_from_u64(7)
}

fn seal_core(seq: u64) -> Envelope {
    let mut s = Sealer::new(keys("UA"), EpochPolicy::default());
    s.seal(
        &roster(),
        bulletin("ew.air.missile", labels(Level::Amber, "CORE"), seq),
        NOW,
        &mut rng(),
    )
    .unwrap()
}

fn recipients(env: &Envelope) -> BTreeSet<String> {
    env.header()
        .recipients
        .iter()
        .map(|w| w.node.to_string())
        .collect()
}

/// Re-encode a modified header and sign it as the real sender would.
fn resign(env: &Envelope, edit: impl FnOnce(&mut Header), ciphertext: Option<Vec<u8>>) -> Envelope {
    let mut h = env.header().clone();
    edit(&mut h);
    let mut header_bytes = Vec::new();
    ciborium::into_writer(&h, &mut header_bytes).unwrap();
    let ct = ciphertext.unwrap_or_else(|| env.ciphertext().to_vec());
    Envelope::sign(header_bytes, ct, &keys(&h.sender.to_string())).unwrap()
}

#[test]
fn core_guarantor_reads_sanctions_only_partner_does_not() {
    let env = seal_core(1);
    assert_eq!(recipients(&env), ["PL", "UA"].map(String::from).into());
    let payload = open(&env, &roster(), &keys("PL")).unwrap();
    assert_eq!(
        payload,
        bulletin("ew.air.missile", labels(Level::Amber, "CORE"), 1).payload
    );
    // the sender can read its own message back
    open(&env, &roster(), &keys("UA")).unwrap();
    // JP: refused by policy, and holds no key either
    assert!(env.header().wrapped_for(&id("JP")).is_none());
    assert!(
        matches!(open(&env, &roster(), &keys("JP")), Err(Error::NotPermitted(m)) if m.contains("CORE"))
    );
}

#[test]
fn excluded_node_cannot_decrypt_even_if_policy_later_allows() {
    let env = seal_core(1);
    // a later roster grants JP the CORE compartment: policy passes, cryptography still refuses
    let mut body = body(2);
    body.nodes
        .iter_mut()
        .find(|n| n.id == id("JP"))
        .unwrap()
        .grants = core_grants();
    let v2 = signed(&body, &[0, 2]).verify_update(&roster()).unwrap();
    assert_eq!(
        open(&env, &v2, &keys("JP")),
        Err(Error::NotARecipient(id("JP")))
    );
}

#[test]
fn revoked_broker_and_auditor_nodes_are_never_recipients() {
    let env = seal_core(1);
    for n in ["XX", "BROKER", "AUDIT1"] {
        assert!(env.header().wrapped_for(&id(n)).is_none(), "{n}");
    }
    let r = roster();
    assert!(
        r.recipients(&labels(Level::Clear, ""))
            .all(|n| !n.revoked && n.role != Role::Broker)
    );
    // and a revoked node cannot seal
    let mut s = Sealer::new(keys("XX"), EpochPolicy::default());
    let err = s
        .seal(
            &r,
            bulletin("ew.air", labels(Level::Clear, ""), 1),
            NOW,
            &mut rng(),
        )
        .unwrap_err();
    assert_eq!(err, Error::Revoked(id("XX")));
}

#[test]
fn sanctions_traffic_reaches_the_broader_group() {
    let mut s = Sealer::new(keys("UA"), EpochPolicy::default());
    let mut d = bulletin("sanctions.snapback", labels(Level::Green, "SANCTIONS"), 1);
    d.payload = Payload::SanctionsTrigger(ewx_proto::payload::SanctionsTrigger {
        regime: "UNSCR 2231".into(),
        measure: "snapback".into(),
        effective_ms: NOW,
        statement: None,
    });
    let env = s.seal(&roster(), d, NOW, &mut rng()).unwrap();
    assert_eq!(env.header().kind, Kind::SanctionsTrigger);
    assert_eq!(
        recipients(&env),
        ["JP", "PL", "UA"].map(String::from).into()
    );
    assert!(matches!(
        open(&env, &roster(), &keys("JP")).unwrap(),
        Payload::SanctionsTrigger(_)
    ));
}

#[test]
fn rel_to_limits_recipients_and_publisher_must_be_listed() {
    let mut s = Sealer::new(keys("UA"), EpochPolicy::default());
    let mut l = labels(Level::Red, "CORE");
    l.rel_to = [id("UA")].into();
    let env = s
        .seal(&roster(), bulletin("ew.air", l.clone(), 1), NOW, &mut rng())
        .unwrap();
    assert_eq!(recipients(&env), ["UA"].map(String::from).into());
    assert!(matches!(
        open(&env, &roster(), &keys("PL")),
        Err(Error::NotPermitted(_))
    ));
    l.rel_to = [id("PL")].into();
    let err = s
        .seal(&roster(), bulletin("ew.air", l, 2), NOW, &mut rng())
        .unwrap_err();
    assert!(matches!(err, Error::NotPermitted(m) if m.contains("own message")));
}

#[test]
fn publish_grants_are_enforced_when_sealing() {
    let mut s = Sealer::new(keys("JP"), EpochPolicy::default());
    let err = s.seal(
        &roster(),
        bulletin("ew.air", labels(Level::Clear, ""), 1),
        NOW,
        &mut rng(),
    );
    assert!(matches!(err, Err(Error::NotPermitted(m)) if m.contains("no grant to publish")));
}

#[test]
fn every_flipped_byte_is_caught() {
    let env = seal_core(1);
    let wire = env.encode().unwrap();
    let r = roster();
    for i in 0..wire.len() {
        let mut w = wire.clone();
        w[i] ^= 0x01;
        match Envelope::decode(&w, DEFAULT_MAX_ENVELOPE) {
            Err(
                Error::Malformed { .. }
                | Error::TrailingBytes { .. }
                | Error::UnsupportedVersion { .. },
            ) => {}
            Err(e) => panic!("byte {i}: unexpected decode error {e}"),
            Ok(t) => match open(&t, &r, &keys("PL")) {
                Err(Error::BadSignature { what: "envelope" } | Error::UnknownNode(_)) => {}
                other => panic!("byte {i}: expected a bad signature, got {other:?}"),
            },
        }
    }
}

#[test]
fn tampering_by_the_signer_itself_gives_the_precise_error() {
    let env = seal_core(1);
    let r = roster();
    // ciphertext changed (and re-signed): the AEAD refuses
    let mut ct = env.ciphertext().to_vec();
    ct[3] ^= 0x80;
    assert_eq!(
        open(&resign(&env, |_| {}, Some(ct)), &r, &keys("PL")),
        Err(Error::DecryptFailed)
    );
    // PL's wrapped key changed: only PL's unwrap fails, UA still reads
    let t = resign(
        &env,
        |h| {
            h.recipients
                .iter_mut()
                .find(|w| w.node == id("PL"))
                .unwrap()
                .key[5] ^= 1
        },
        None,
    );
    assert_eq!(
        open(&t, &r, &keys("PL")),
        Err(Error::BadWrappedKey(id("PL")))
    );
    // any header change re-signed breaks the AEAD binding (header is the associated data)
    let t = resign(&env, |h| h.labels.exercise = true, None);
    assert_eq!(open(&t, &r, &keys("PL")), Err(Error::DecryptFailed));
    // a different ephemeral key: unwrap fails
    let t = resign(&env, |h| h.eph_pk = keys("JP").kem_public(), None);
    assert_eq!(
        open(&t, &r, &keys("PL")),
        Err(Error::BadWrappedKey(id("PL")))
    );
    // a low-order ephemeral key is refused outright
    let t = resign(&env, |h| h.eph_pk = KemPublic([0; 32]), None);
    assert!(matches!(
        open(&t, &r, &keys("PL")),
        Err(Error::InvalidKey(_))
    ));
}

#[test]
fn forged_and_unknown_senders_are_refused() {
    let env = seal_core(1);
    let r = roster();
    // PL signs a header claiming to be UA
    let forged = Envelope::sign(
        env.header_bytes().to_vec(),
        env.ciphertext().to_vec(),
        &keys("PL"),
    )
    .unwrap();
    assert_eq!(
        forged.verify(&r).err(),
        Some(Error::BadSignature { what: "envelope" })
    );
    // a signature from nowhere
    let bad = env
        .clone()
        .with_signature(ewx_proto::keys::Signature([9; 64]));
    assert_eq!(
        open(&bad, &r, &keys("PL")),
        Err(Error::BadSignature { what: "envelope" })
    );
    // a sender the roster does not know
    let mut h = env.header().clone();
    h.sender = id("ZZ");
    let mut hb = Vec::new();
    ciborium::into_writer(&h, &mut hb).unwrap();
    let unknown = Envelope::sign(hb, env.ciphertext().to_vec(), &keys("ZZ")).unwrap();
    assert_eq!(unknown.verify(&r).err(), Some(Error::UnknownNode(id("ZZ"))));
}

#[test]
fn key_epochs_reuse_then_rotate() {
    let r = roster();
    let policy = EpochPolicy {
        max_messages: 3,
        max_age_ms: 60_000,
    };
    let mut s = Sealer::new(keys("UA"), policy);
    let mut g = rng();
    let mut seal = |seq, now, r: &ewx_proto::Roster| {
        s.seal(
            r,
            bulletin("ew.air", labels(Level::Amber, "CORE"), seq),
            now,
            &mut g,
        )
        .unwrap()
    };
    let e: Vec<_> = (1..=4).map(|i| seal(i, NOW, &r)).collect();
    assert_eq!(e[0].header().eph_pk, e[2].header().eph_pk);
    assert_ne!(
        e[2].header().eph_pk,
        e[3].header().eph_pk,
        "rotates after max_messages"
    );
    let later = seal(5, NOW + 60_000, &r);
    assert_ne!(
        later.header().eph_pk,
        e[3].header().eph_pk,
        "rotates after max_age"
    );
    let v2 = signed(&body(2), &[1, 2]).verify_update(&r).unwrap();
    let after = seal(6, NOW + 60_001, &v2);
    assert_ne!(
        after.header().eph_pk,
        later.header().eph_pk,
        "rotates on roster change"
    );
    assert_eq!(after.header().roster_version, 2);
    // every message under a shared epoch still opens, and ids differ
    for env in e.iter().chain([&later, &after]) {
        open(env, &v2, &keys("PL")).unwrap();
    }
    let ids: BTreeSet<_> = e.iter().map(|x| x.header().id).collect();
    assert_eq!(ids.len(), 4);
}

#[test]
fn a_low_order_recipient_key_never_enters_a_roster() {
    // one bad key would make every seal for that node's labels fail: refused up front
    let mut b = body(1);
    b.nodes.iter_mut().find(|n| n.id == id("PL")).unwrap().kem = KemPublic([0; 32]);
    let err = ewx_proto::SignedRoster::new(&b).unwrap_err();
    assert!(matches!(err, Error::InvalidRoster(m) if m.contains("low-order")));
}

#[test]
fn payload_kind_must_match_header() {
    let p = bulletin("ew.air", labels(Level::Clear, ""), 1)
        .payload
        .encode()
        .unwrap();
    assert!(matches!(
        Payload::decode(&p, Kind::ExerciseNotice),
        Err(Error::KindMismatch { .. })
    ));
    Payload::decode(&p, Kind::Bulletin).unwrap();
    let stix = Payload::Stix(r#"{"type":"bundle"}"#.into())
        .encode()
        .unwrap();
    Payload::decode(&stix, Kind::Bulletin).unwrap();
}

#[test]
fn consultation_deadlines_are_24_and_72_hours() {
    let req = ewx_proto::payload::ConsultationRequest::new(
        "C-1".into(),
        "attack".into(),
        NOW - 1000,
        NOW,
    );
    assert_eq!(req.consult_by_ms - NOW, 24 * 3_600_000);
    assert_eq!(req.decide_by_ms - NOW, 72 * 3_600_000);
    req.check_deadlines().unwrap();
    let mut late = req.clone();
    late.decide_by_ms += 1;
    assert!(matches!(late.check_deadlines(), Err(Error::Time(_))));
}

#[test]
fn clock_skew_rule() {
    let env = seal_core(1);
    env.header().check_skew(NOW + 30_000, 30_000).unwrap();
    assert!(matches!(
        env.header().check_skew(NOW + 30_001, 30_000),
        Err(Error::Time(_))
    ));
    assert!(matches!(
        env.header().check_skew(NOW - 30_001, 30_000),
        Err(Error::Time(_))
    ));
}

#[test]
fn a_wrapped_key_is_bound_to_its_message() {
    // two messages in one epoch: PL's wrap from the first does not open the second
    let r = roster();
    let mut s = Sealer::new(keys("UA"), EpochPolicy::default());
    let mut g = rng();
    let a = s
        .seal(
            &r,
            bulletin("ew.air", labels(Level::Amber, "CORE"), 1),
            NOW,
            &mut g,
        )
        .unwrap();
    let b = s
        .seal(
            &r,
            bulletin("ew.air", labels(Level::Amber, "CORE"), 2),
            NOW,
            &mut g,
        )
        .unwrap();
    assert_eq!(a.header().eph_pk, b.header().eph_pk);
    let moved = a.header().wrapped_for(&id("PL")).unwrap().key;
    let t = resign(
        &b,
        |h| {
            h.recipients
                .iter_mut()
                .find(|w| w.node == id("PL"))
                .unwrap()
                .key = moved
        },
        None,
    );
    assert_eq!(
        open(&t, &r, &keys("PL")),
        Err(Error::BadWrappedKey(id("PL")))
    );
}

#[test]
fn the_key_commitment_is_checked() {
    let env = seal_core(1);
    let t = resign(&env, |h| h.key_commit.0[0] ^= 1, None);
    assert_eq!(
        open(&t, &roster(), &keys("PL")),
        Err(Error::BadWrappedKey(id("PL")))
    );
}

#[test]
fn receivers_refuse_what_the_sender_could_not_publish() {
    let env = seal_core(1);
    // the broker signs a warning of its own
    let mut h = env.header().clone();
    h.sender = id("BROKER");
    let mut hb = Vec::new();
    ciborium::into_writer(&h, &mut hb).unwrap();
    let injected = Envelope::sign(hb, env.ciphertext().to_vec(), &keys("BROKER")).unwrap();
    assert!(
        matches!(open(&injected, &roster(), &keys("PL")), Err(Error::NotPermitted(m)) if m.contains("broker"))
    );
    // JP signs an early warning outside its publish grants
    let t = resign(&env, |h| h.sender = id("JP"), None);
    assert!(
        matches!(open(&t, &roster(), &keys("PL")), Err(Error::NotPermitted(m)) if m.contains("no grant"))
    );
}

#[test]
fn the_broker_rule_on_listed_recipients() {
    let env = seal_core(1);
    env.header().check_recipients(&roster()).unwrap();
    for n in ["JP", "XX", "BROKER", "AUDIT1", "ZZ"] {
        let mut h = env.header().clone();
        h.recipients.push(ewx_proto::envelope::WrappedKey {
            node: id(n),
            key: [0; 48],
        });
        assert!(
            matches!(h.check_recipients(&roster()), Err(Error::NotPermitted(_))),
            "{n}"
        );
    }
}

#[test]
fn an_opener_reuses_the_epoch_key_and_still_refuses_tampering() {
    let r = roster();
    let mut s = Sealer::new(keys("UA"), EpochPolicy::default());
    let mut g = rng();
    let a = s
        .seal(
            &r,
            bulletin("ew.air", labels(Level::Amber, "CORE"), 1),
            NOW,
            &mut g,
        )
        .unwrap();
    let b = s
        .seal(
            &r,
            bulletin("ew.air", labels(Level::Amber, "CORE"), 2),
            NOW,
            &mut g,
        )
        .unwrap();
    let o = ewx_proto::Opener::default();
    assert_eq!(
        o.open(&a, &r, &keys("PL")).unwrap(),
        open(&a, &r, &keys("PL")).unwrap()
    );
    assert_eq!(
        o.open(&b, &r, &keys("PL")).unwrap(),
        open(&b, &r, &keys("PL")).unwrap()
    );
    // a wrap moved between messages of the cached epoch still fails
    let moved = a.header().wrapped_for(&id("PL")).unwrap().key;
    let t = resign(
        &b,
        |h| {
            h.recipients
                .iter_mut()
                .find(|w| w.node == id("PL"))
                .unwrap()
                .key = moved
        },
        None,
    );
    assert_eq!(
        o.open(&t, &r, &keys("PL")),
        Err(Error::BadWrappedKey(id("PL")))
    );
}
