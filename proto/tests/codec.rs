//! Every encoding round-trips (proptest), and every decoder turns arbitrary bytes into an
//! error — never a panic — with "need more bytes" kept apart from "invalid".
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use ewx_proto::audit::{Entry, Event};
use ewx_proto::checkpoint::{Checkpoint, SignedCheckpoint};
use ewx_proto::envelope::DEFAULT_MAX_ENVELOPE;
use ewx_proto::frame::{
    Decoded, ExerciseFilter, FrameStatus, Push, RejectReason, Request, Response, StartAt,
    decode_frame, delivery_frame_head, encode_frame, split_frame,
};
use ewx_proto::labels::Compartment;
use ewx_proto::payload::{Bulletin, ExerciseNotice, Payload, Precedence};
use ewx_proto::receipt::Receipt;
use ewx_proto::{
    Digest32, Draft, Envelope, EpochPolicy, Error, Labels, Level, MessageId, NodeId, NodeKeys,
    Sealer, SignedRoster, Topic, TopicPattern, open,
};
use proptest::prelude::*;
use rand::SeedableRng;

fn node_id() -> impl Strategy<Value = NodeId> {
    "[A-Z0-9-]{1,16}".prop_map(|s| NodeId::new(s).unwrap())
}

fn topic() -> impl Strategy<Value = Topic> {
    prop::collection::vec("[a-z0-9_-]{1,12}", 1..6).prop_map(|t| Topic::new(t.join(".")).unwrap())
}

fn pattern() -> impl Strategy<Value = TopicPattern> {
    (
        prop::collection::vec(prop_oneof!["[a-z]{1,6}", Just("*".to_string())], 0..4),
        any::<bool>(),
    )
        .prop_map(|(mut t, tail)| {
            if tail || t.is_empty() {
                t.push(">".into());
            }
            TopicPattern::new(t.join(".")).unwrap()
        })
}

fn labels_s() -> impl Strategy<Value = Labels> {
    (
        prop::sample::select(Level::ALL.to_vec()),
        prop::collection::btree_set("[A-Z][A-Z0-9_-]{0,8}", 0..4),
        prop::collection::btree_set(node_id(), 0..3),
        any::<bool>(),
    )
        .prop_map(|(level, comps, rel_to, exercise)| Labels {
            level,
            compartments: comps
                .into_iter()
                .map(|c| Compartment::new(c).unwrap())
                .collect(),
            rel_to,
            exercise,
        })
}

fn payload() -> impl Strategy<Value = Payload> {
    prop_oneof![
        (".{0,40}", ".{0,400}", prop::option::of(".{0,20}")).prop_map(|(h, b, a)| {
            Payload::Bulletin(Bulletin {
                headline: h,
                body: b,
                area: a,
                event_ms: None,
                confidence: None,
            })
        }),
        (".{0,20}", any::<u32>(), any::<u64>()).prop_map(|(n, troops, start)| {
            Payload::ExerciseNotice(ExerciseNotice {
                name: n,
                purpose: "training".into(),
                states: vec!["PL".into()],
                command_level: "corps".into(),
                start_ms: start,
                end_ms: start.saturating_add(1),
                area: "Orzysz".into(),
                troops,
                tanks: 1,
                armoured_vehicles: 2,
                artillery: 3,
                aircraft: 4,
                helicopters: 5,
                sorties: 6,
                ..Default::default()
            })
        }),
        ".{0,200}".prop_map(Payload::Stix),
    ]
}

fn roundtrip_frame<T>(msg: &T)
where
    T: serde::Serialize + serde::de::DeserializeOwned + PartialEq + std::fmt::Debug,
{
    let f = encode_frame(msg, 1 << 20).unwrap();
    assert_eq!(
        decode_frame::<T>(&f, 1 << 20).unwrap(),
        Decoded::Complete(decode_back(&f), f.len())
    );
    // every strict prefix is "incomplete", never "invalid"
    for cut in [0, 1, 3, 4, f.len() / 2, f.len() - 1] {
        assert!(
            matches!(
                decode_frame::<T>(&f[..cut], 1 << 20),
                Ok(Decoded::Incomplete(_))
            ),
            "cut {cut}"
        );
    }
}

fn decode_back<T: serde::de::DeserializeOwned>(f: &[u8]) -> T {
    ciborium::from_reader(&f[4..]).unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn sealed_envelopes_round_trip_and_open(seq in 1u64.., p in payload(), exercise: bool, prec in prop::sample::select(Precedence::ALL.to_vec())) {
        let mut l = labels(Level::Amber, "CORE");
        l.exercise = exercise;
        let draft = Draft { topic: Topic::new("ew.air").unwrap(), precedence: prec, labels: l, payload: p.clone(), seq, expires_ms: Some(NOW + 1), receipt: exercise, case: None };
        let mut s = Sealer::new(keys("UA"), EpochPolicy::default());
        let env = s.seal(&roster(), draft, NOW, &mut rand::rngs::StdRng::seed_from_u64(seq)).unwrap();
        let wire = env.encode().unwrap();
        let back = Envelope::decode(&wire, DEFAULT_MAX_ENVELOPE).unwrap();
        prop_assert_eq!(&back, &env);
        prop_assert_eq!(back.hash(), env.hash());
        prop_assert_eq!(open(&back, &roster(), &keys("PL")).unwrap(), p);
    }

    #[test]
    fn labels_topics_and_patterns_round_trip(l in labels_s(), t in topic(), pat in pattern()) {
        let r = Request::Subscribe { name: "s".into(), pattern: pat.clone(), from: StartAt::Index(3), filter: ExerciseFilter::RealOnly };
        roundtrip_frame(&r);
        let e = Event::Published { id: MessageId([1; 16]), sender: NodeId::new("UA").unwrap(), seq: 1, topic: t.clone(), kind: ewx_proto::Kind::Bulletin, precedence: Precedence::Flash, labels: l.clone(), log_index: 9, envelope_hash: Digest32([4; 32]), case: None };
        let entry = Entry { index: 5, prev: Digest32([7; 32]), time_ms: NOW, event: e };
        prop_assert_eq!(Entry::decode(&entry.encode().unwrap()).unwrap(), entry);
        prop_assert_eq!(pat.as_str().parse::<TopicPattern>().unwrap(), pat);
        prop_assert_eq!(t.as_str().parse::<Topic>().unwrap(), t);
    }

    #[test]
    fn protocol_messages_round_trip(bytes in prop::collection::vec(any::<u8>(), 0..300), n in any::<u64>(), name in ".{0,20}", reason in ".{0,40}") {
        roundtrip_frame(&Request::Publish { envelope: bytes.clone() });
        roundtrip_frame(&Request::Ack { name: name.clone(), precedence: Precedence::Routine, through: n });
        roundtrip_frame(&Request::Unsubscribe { name: name.clone() });
        roundtrip_frame(&Request::Hello { roster_version: n });
        roundtrip_frame(&Request::UpdateRoster { roster: bytes.clone() });
        roundtrip_frame(&Request::Receipt(Receipt::sign(&keys("PL"), MessageId([2; 16]), Digest32([n as u8; 32]), n)));
        roundtrip_frame(&Response::PublishAck { id: MessageId([3; 16]), log_index: n });
        roundtrip_frame(&Response::Rejected { reason: RejectReason::Replay, detail: reason.clone() });
        roundtrip_frame(&Response::Welcome { node: NodeId::new("PL").unwrap(), roster_version: n, roster: Some(bytes.clone()) });
        roundtrip_frame(&Response::Subscribed { name: name.clone(), next_index: n });
        roundtrip_frame(&Push::Delivery { name, log_index: n, envelope: bytes.clone() });
        roundtrip_frame(&Push::Roster { roster: bytes });
        let e = Entry { index: n, prev: Digest32::default(), time_ms: n, event: Event::Rejected { from: None, reason, envelope_hash: None, count: 3, window_ms: 1000 } };
        prop_assert_eq!(Entry::decode(&e.encode().unwrap()).unwrap(), e);
    }

    #[test]
    fn checkpoints_and_rosters_round_trip(size in any::<u64>(), t in any::<u64>(), version in 1u64..1000) {
        let cp = Checkpoint { size, root: Digest32([5; 32]), prev: Digest32([6; 32]), time_ms: t };
        let s = SignedCheckpoint::sign(&cp, &keys("BROKER")).unwrap();
        prop_assert_eq!(SignedCheckpoint::decode(&s.encode().unwrap()).unwrap(), s);
        let r = signed(&body(version), &[0, 1]);
        let back = SignedRoster::decode(&r.encode().unwrap()).unwrap();
        prop_assert_eq!(back.verify().unwrap().version(), version);
    }

    #[test]
    fn delivery_head_and_envelope_are_the_whole_frame(name in ".{0,40}", log_index: u64, len in prop::sample::select(vec![0usize, 1, 23, 24, 255, 256, 1024, 65_535, 65_536, 70_000])) {
        let envelope: Vec<u8> = (0..len).map(|i| i as u8).collect();
        let whole = encode_frame(&Push::Delivery { name: name.clone(), log_index, envelope: envelope.clone() }, usize::MAX).unwrap();
        let mut joined = delivery_frame_head(&name, log_index, len, usize::MAX).unwrap();
        joined.extend_from_slice(&envelope);
        prop_assert_eq!(&joined, &whole);
        prop_assert!(delivery_frame_head(&name, log_index, len, whole.len() - 5).is_err());
    }

    #[test]
    fn key_files_round_trip(name in "[A-Z0-9-]{1,16}", a: [u8; 32], b: [u8; 32]) {
        let k = NodeKeys::from_secrets(NodeId::new(name).unwrap(), a, b);
        let back = NodeKeys::from_secret_file(&k.to_secret_file()).unwrap();
        prop_assert_eq!(back.sign_public(), k.sign_public());
        prop_assert_eq!(back.kem_public(), k.kem_public());
    }

    #[test]
    fn random_bytes_never_panic_any_decoder(bytes in prop::collection::vec(any::<u8>(), 0..2048)) {
        let _ = Envelope::decode(&bytes, DEFAULT_MAX_ENVELOPE);
        let _ = SignedRoster::decode(&bytes);
        let _ = SignedCheckpoint::decode(&bytes);
        let _ = Entry::decode(&bytes);
        let _ = Payload::decode(&bytes, ewx_proto::Kind::Bulletin);
        let _ = decode_frame::<Request>(&bytes, 1 << 20);
        let _ = decode_frame::<Response>(&bytes, 1 << 20);
        let _ = decode_frame::<Push>(&bytes, 1 << 20);
        let _ = NodeKeys::from_secret_file(&String::from_utf8_lossy(&bytes));
        let _ = ewx_proto::audit::Chain::new().push(&bytes);
    }

    #[test]
    fn random_bytes_inside_a_valid_frame_are_invalid_not_incomplete(bytes in prop::collection::vec(any::<u8>(), 1..512)) {
        let mut f = (bytes.len() as u32).to_be_bytes().to_vec();
        f.extend(&bytes);
        match decode_frame::<Request>(&f, 1 << 20) {
            Ok(Decoded::Complete(_, used)) => prop_assert_eq!(used, f.len()),
            Ok(Decoded::Incomplete(_)) => prop_assert!(false, "a whole frame is never incomplete"),
            Err(_) => {}
        }
    }
}

#[test]
fn oversize_frames_are_refused_from_the_prefix() {
    let prefix = u32::MAX.to_be_bytes();
    assert_eq!(
        split_frame(&prefix, 1 << 20).unwrap_err(),
        Error::TooLarge {
            what: "frame",
            size: u32::MAX as u64,
            max: 1 << 20
        }
    );
    assert_eq!(
        split_frame(&[0, 0], 10).unwrap(),
        FrameStatus::Incomplete { needed: 2 }
    );
    assert_eq!(
        split_frame(&[0, 0, 0, 3, 1], 10).unwrap(),
        FrameStatus::Incomplete { needed: 2 }
    );
    let big = Request::Publish {
        envelope: vec![0; 2000],
    };
    assert!(matches!(
        encode_frame(&big, 1000),
        Err(Error::TooLarge { .. })
    ));
}

#[test]
fn trailing_bytes_inside_a_frame_are_refused() {
    let mut body = Vec::new();
    ciborium::into_writer(&Request::Hello { roster_version: 1 }, &mut body).unwrap();
    body.push(0);
    let mut f = (body.len() as u32).to_be_bytes().to_vec();
    f.extend(body);
    assert_eq!(
        decode_frame::<Request>(&f, 1 << 20).unwrap_err(),
        Error::TrailingBytes {
            what: "frame",
            extra: 1
        }
    );
}

#[test]
fn deep_nesting_is_refused_without_overflowing_the_stack() {
    // 100 000 nested arrays, maps and tags: each decoder refuses, none recurses unbounded
    for head in [0x81u8, 0xa1, 0xc6] {
        let mut deep = vec![head; 100_000];
        deep.push(0x00);
        assert!(matches!(
            SignedRoster::decode(&deep),
            Err(Error::Malformed { .. })
        ));
        assert!(matches!(
            Envelope::decode(&deep, 1 << 20),
            Err(Error::Malformed { .. })
        ));
        assert!(matches!(
            Entry::decode(&deep),
            Err(Error::Malformed { .. }) | Err(Error::TooLarge { .. })
        ));
        let mut f = (deep.len() as u32).to_be_bytes().to_vec();
        f.extend(&deep);
        assert!(matches!(
            decode_frame::<Request>(&f, 1 << 20),
            Err(Error::Malformed { .. })
        ));
    }
}

#[test]
fn oversize_envelopes_and_recipient_lists_are_refused() {
    let env = Sealer::new(keys("UA"), EpochPolicy::default())
        .seal(
            &roster(),
            bulletin("ew.air", labels(Level::Amber, "CORE"), 1),
            NOW,
            &mut rand::rngs::StdRng::seed_from_u64(1),
        )
        .unwrap();
    let wire = env.encode().unwrap();
    assert!(matches!(
        Envelope::decode(&wire, 100),
        Err(Error::TooLarge { .. })
    ));
    let mut h = env.header().clone();
    let w = h.recipients[0].clone();
    h.recipients = (0..1025)
        .map(|i| ewx_proto::envelope::WrappedKey {
            node: NodeId::new(format!("N{i}")).unwrap(),
            key: w.key,
        })
        .collect();
    let mut hb = Vec::new();
    ciborium::into_writer(&h, &mut hb).unwrap();
    assert!(matches!(
        Envelope::sign(hb, vec![], &keys("UA")),
        Err(Error::TooLarge {
            what: "recipient list",
            ..
        })
    ));
    let mut h = env.header().clone();
    h.recipients.push(w);
    let mut hb = Vec::new();
    ciborium::into_writer(&h, &mut hb).unwrap();
    assert!(matches!(
        Envelope::sign(hb, vec![], &keys("UA")),
        Err(Error::Malformed { .. })
    ));
}

#[test]
fn receipts_round_trip_in_audit_entries() {
    let rc = Receipt::sign(&keys("PL"), MessageId([1; 16]), Digest32([2; 32]), NOW);
    let e = Entry {
        index: 0,
        prev: Digest32::default(),
        time_ms: NOW,
        event: Event::Receipt(rc.clone()),
    };
    let back = Entry::decode(&e.encode().unwrap()).unwrap();
    let Event::Receipt(r) = back.event else {
        panic!("not a receipt")
    };
    r.verify(&roster()).unwrap();
}

#[test]
fn envelope_hash_does_not_depend_on_the_outer_encoding() {
    let env = Sealer::new(keys("UA"), EpochPolicy::default())
        .seal(
            &roster(),
            bulletin("ew.air", labels(Level::Amber, "CORE"), 1),
            NOW,
            &mut rand::rngs::StdRng::seed_from_u64(2),
        )
        .unwrap();
    let wire = env.encode().unwrap();
    // the same envelope behind a CBOR tag, as a relay could rewrite it
    let mut tagged = vec![0xc6];
    tagged.extend(&wire);
    let back = Envelope::decode(&tagged, DEFAULT_MAX_ENVELOPE).unwrap();
    assert_eq!(back.hash(), env.hash());
    // but any change to a signed part changes it
    let other = env
        .clone()
        .with_signature(ewx_proto::keys::Signature([1; 64]));
    assert_ne!(other.hash(), env.hash());
}
