//! The proto tests' network, built with `ewx-testkit` (seeded keys, grant presets,
//! 2-of-3 council signing), and a few drafts.
#![allow(dead_code, clippy::unwrap_used)]

use ed25519_dalek::SigningKey;
use ewx_proto::access::Grants;
use ewx_proto::payload::{Bulletin, Payload, Precedence};
use ewx_proto::roster::{NodeEntry, RosterBody};
use ewx_proto::{Draft, Labels, Level, Role, Roster, SignedRoster, Topic};
use ewx_testkit::Network;

pub use ewx_testkit::grants::unrestricted as core_grants;
pub use ewx_testkit::{id, keys};

pub fn council_key(i: u8) -> SigningKey {
    ewx_testkit::council_key(usize::from(i))
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
pub fn network(version: u64) -> Network {
    Network::new("test-compact")
        .issued(1_700_000_000_000)
        .version(version)
        .node("UA", Role::Liaison, core_grants())
        .node("PL", Role::Liaison, core_grants())
        .node("JP", Role::Partner, ewx_testkit::grants::broader())
        .node("XX", Role::Partner, core_grants())
        .node("BROKER", Role::Broker, Grants::none())
        .node("AUDIT1", Role::Auditor, Grants::none())
        .revoke(&["XX"])
}

pub fn body(version: u64) -> RosterBody {
    network(version).body()
}

pub fn signed(body: &RosterBody, signers: &[u8]) -> SignedRoster {
    let signers: Vec<usize> = signers.iter().map(|&i| usize::from(i)).collect();
    ewx_testkit::sign_roster(body, &signers)
}

pub fn roster() -> Roster {
    network(1).roster()
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
        case: None,
    }
}

pub const NOW: u64 = 1_700_000_100_000;
