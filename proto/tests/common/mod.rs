//! A small Compact network built from fixed seeds, shared by the proto tests.
#![allow(dead_code, clippy::unwrap_used)]

use ed25519_dalek::SigningKey;
use ewx_proto::access::Grants;
use ewx_proto::payload::{Bulletin, Payload, Precedence};
use ewx_proto::roster::{CouncilMember, NodeEntry, RosterBody};
use ewx_proto::{
    Digest32, Draft, Labels, Level, NodeId, NodeKeys, Role, Roster, SignedRoster, Topic,
    TopicPattern,
};

pub fn id(s: &str) -> NodeId {
    NodeId::new(s).unwrap()
}

pub fn keys(name: &str) -> NodeKeys {
    NodeKeys::from_secrets(
        id(name),
        Digest32::of(&[b"sign", name.as_bytes()]).0,
        Digest32::of(&[b"kem", name.as_bytes()]).0,
    )
}

pub fn council_key(i: u8) -> SigningKey {
    SigningKey::from_bytes(&Digest32::of(&[b"council", &[i]]).0)
}

fn patterns(list: &[&str]) -> Vec<TopicPattern> {
    list.iter()
        .map(|p| TopicPattern::new(*p).unwrap())
        .collect()
}

pub fn grants(level: Level, comps: &str, publish: &[&str], subscribe: &[&str]) -> Grants {
    Grants {
        clearance: level,
        compartments: Labels::parse_compartments(comps).unwrap(),
        publish: patterns(publish),
        subscribe: patterns(subscribe),
    }
}

pub fn core_grants() -> Grants {
    grants(
        Level::Red,
        "CORE,AIR,MARITIME,CYBER,SANCTIONS,CEASEFIRE",
        &[">"],
        &[">"],
    )
}

pub fn node(name: &str, role: Role, grants: Grants, revoked: bool) -> NodeEntry {
    let k = keys(name);
    NodeEntry {
        id: id(name),
        role,
        sign: k.sign_public(),
        kem: k.kem_public(),
        grants,
        revoked,
    }
}

/// UA, PL (core), JP (sanctions only, AMBER), XX (revoked core), BROKER, AUDIT1.
pub fn body(version: u64) -> RosterBody {
    let sanctions = grants(
        Level::Amber,
        "SANCTIONS",
        &["sanctions.>"],
        &["sanctions.>", "exercise.>"],
    );
    RosterBody {
        v: 1,
        network: "test-compact".into(),
        version,
        issued_ms: 1_700_000_000_000,
        valid_until_ms: None,
        threshold: 2,
        council: (0..3)
            .map(|i| CouncilMember {
                name: format!("council-{i}"),
                key: ewx_proto::keys::SignPublic(council_key(i).verifying_key().to_bytes()),
            })
            .collect(),
        nodes: vec![
            node("UA", Role::Liaison, core_grants(), false),
            node("PL", Role::Liaison, core_grants(), false),
            node("JP", Role::Partner, sanctions, false),
            node("XX", Role::Partner, core_grants(), true),
            node("BROKER", Role::Broker, Grants::none(), false),
            node("AUDIT1", Role::Auditor, Grants::none(), false),
        ],
    }
}

pub fn signed(body: &RosterBody, signers: &[u8]) -> SignedRoster {
    let mut s = SignedRoster::new(body).unwrap();
    for i in signers {
        s.sign(&council_key(*i));
    }
    s
}

pub fn roster() -> Roster {
    signed(&body(1), &[0, 1]).verify().unwrap()
}

pub fn labels(level: Level, comps: &str) -> Labels {
    Labels::new(level, Labels::parse_compartments(comps).unwrap())
}

pub fn bulletin(topic: &str, labels: Labels, seq: u64) -> Draft {
    Draft {
        topic: Topic::new(topic).unwrap(),
        precedence: Precedence::Flash,
        labels,
        payload: Payload::Bulletin(Bulletin {
            headline: "Missile launch detected".into(),
            body: "x".repeat(1000),
            area: Some("Kyiv oblast".into()),
            event_ms: Some(1_700_000_000_000),
            confidence: Some("high".into()),
        }),
        seq,
        expires_ms: None,
        receipt: true,
    }
}

pub const NOW: u64 = 1_700_000_100_000;
