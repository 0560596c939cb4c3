//! # ewx-testkit — one test network for every test, bench, fuzz target and the demo
//!
//! Every key here is derived from a public seed, so the same name always has the same
//! keys on every machine: the demo network in `keys-example/`, the end-to-end tests, the
//! protocol tests and benches and the fuzz fixture all draw from [`keys`] and
//! [`council_key`], grant their nodes from the presets in [`grants`], and build and sign
//! their rosters with [`Network`] (k of n council signatures).
//!
//! **Demo keys only**: anyone can recompute them. Nothing here does I/O; writing a network
//! to disk is the command line's job. Inputs are constants chosen by callers, so a bad
//! one is a bug and panics with its name.
#![forbid(unsafe_code)]

pub mod grants;

use ed25519_dalek::SigningKey;
use ewx_proto::access::Grants;
use ewx_proto::keys::SignPublic;
use ewx_proto::roster::{CouncilMember, NodeEntry, Panel, RosterBody};
use ewx_proto::{Digest32, NodeId, NodeKeys, Role, Roster, SignedRoster};

/// Core guarantors (liaison nodes with military compartments), Ukraine first.
pub const CORE: [&str; 8] = ["UA", "US", "GB", "PL", "DE", "FR", "TR", "LT"];
/// The broader group: sanctions and other non-military traffic only.
pub const BROADER: [&str; 2] = ["JP", "KR"];
/// The demo network's snapback attesters (2 of them must attest).
pub const ATTESTERS: [&str; 3] = ["UA", "PL", "GB"];
/// The demo network's Special Commission (2 of them adopt a finding).
pub const COMMISSION: [&str; 3] = ["US", "FR", "DE"];
/// The ceasefire monitor.
pub const MONITOR: &str = "MON1";
/// The auditor.
pub const AUDITOR: &str = "AUDIT1";
/// The broker (a single broker, or the first replica of a cluster).
pub const BROKER: &str = "BROKER";
/// A cluster's replicas, in Raft id order (1, 2, 3): broker nodes with their own keys.
pub const REPLICAS: [&str; 3] = [BROKER, "BROKER2", "BROKER3"];
/// Council members; [`Network::signed`] has the first two sign (2 of 3 are needed).
pub const COUNCIL: [&str; 3] = ["COUNCIL-1", "COUNCIL-2", "COUNCIL-3"];
/// Name of the demo exchange.
pub const NETWORK: &str = "kyiv-compact-demo";
/// When the demo roster was issued (ms since 1970).
pub const ISSUED_MS: u64 = 1_764_000_000_000;

/// The seed of a key: public, so only for tests and the demo.
pub fn seed(kind: &str, name: &str) -> [u8; 32] {
    Digest32::of(&[
        b"ewx demo network, not for real use",
        kind.as_bytes(),
        name.as_bytes(),
    ])
    .0
}

/// A node name as a [`NodeId`].
///
/// # Panics
/// If `name` is not a valid node id (callers pass constants).
pub fn id(name: &str) -> NodeId {
    NodeId::new(name).unwrap_or_else(|e| panic!("test node name {name:?}: {e}"))
}

/// The seeded keys of a node (or a council member) by name.
///
/// # Panics
/// As [`id`].
pub fn keys(name: &str) -> NodeKeys {
    NodeKeys::from_secrets(id(name), seed("sign", name), seed("kem", name))
}

/// The signing key of council member `i`, named `COUNCIL-{i+1}`: 0 to 2 are the
/// [`COUNCIL`] of every test network, higher ones are keys no roster names (another
/// council, an impostor).
pub fn council_key(i: usize) -> SigningKey {
    SigningKey::from_bytes(&seed("sign", &format!("COUNCIL-{}", i + 1)))
}

/// Sign a roster body with the council members listed (by index): the k of n a roster
/// needs, or fewer, or one twice, to test that they are refused.
///
/// # Panics
/// If the body does not encode (it always does).
pub fn sign_roster(body: &RosterBody, signers: &[usize]) -> SignedRoster {
    let mut s = SignedRoster::new(body).unwrap_or_else(|e| panic!("test roster: {e}"));
    for &i in signers {
        s.sign(&council_key(i));
    }
    s
}

/// One node of a test network.
#[derive(Debug, Clone)]
pub struct Member {
    /// Its name.
    pub name: String,
    /// Its role.
    pub role: Role,
    /// What it may read, publish and subscribe.
    pub grants: Grants,
    /// Revoked in the roster?
    pub revoked: bool,
}

/// A roster to build: a name, a version, a 2-of-3 council and members with seeded keys.
#[derive(Debug, Clone)]
pub struct Network {
    name: String,
    version: u64,
    issued_ms: u64,
    members: Vec<Member>,
    attesters: Option<Panel>,
    commission: Option<Panel>,
}

fn panel(members: &[&str], threshold: u8) -> Panel {
    Panel {
        members: members.iter().map(|m| id(m)).collect(),
        threshold,
    }
}

impl Network {
    /// An empty network called `name`: version 1, issued at [`ISSUED_MS`].
    pub fn new(name: &str) -> Self {
        Self {
            name: name.into(),
            version: 1,
            issued_ms: ISSUED_MS,
            members: Vec::new(),
            attesters: None,
            commission: None,
        }
    }

    /// The demo Compact network: the [`CORE`] liaisons with [`grants::core`], the
    /// [`BROADER`] partners with [`grants::broader`], the [`MONITOR`] with
    /// [`grants::monitor`], the auditor and the brokers (the [`REPLICAS`]: one runs alone,
    /// or all three as a cluster); the [`ATTESTERS`] and the [`COMMISSION`], 2 of 3 each.
    pub fn compact() -> Self {
        let mut n = Self::new(NETWORK);
        for c in CORE {
            n = n.node(c, Role::Liaison, grants::core());
        }
        for b in BROADER {
            n = n.node(b, Role::Partner, grants::broader());
        }
        n = n.node(MONITOR, Role::Monitor, grants::monitor()).node(
            AUDITOR,
            Role::Auditor,
            Grants::none(),
        );
        for r in REPLICAS {
            n = n.node(r, Role::Broker, Grants::none());
        }
        n.attesters(&ATTESTERS, 2).commission(&COMMISSION, 2)
    }

    /// Name the snapback attesters and how many must attest.
    pub fn attesters(mut self, members: &[&str], threshold: u8) -> Self {
        self.attesters = Some(panel(members, threshold));
        self
    }

    /// Name the Special Commission and how many members adopt a finding.
    pub fn commission(mut self, members: &[&str], threshold: u8) -> Self {
        self.commission = Some(panel(members, threshold));
        self
    }

    /// Add a node (its keys are [`keys`]`(name)`).
    pub fn node(mut self, name: &str, role: Role, grants: Grants) -> Self {
        self.members.push(Member {
            name: name.into(),
            role,
            grants,
            revoked: false,
        });
        self
    }

    /// Mark these nodes revoked.
    pub fn revoke(mut self, names: &[&str]) -> Self {
        for m in &mut self.members {
            m.revoked |= names.contains(&m.name.as_str());
        }
        self
    }

    /// Set the roster version.
    pub fn version(mut self, version: u64) -> Self {
        self.version = version;
        self
    }

    /// Set the issue time.
    pub fn issued(mut self, ms: u64) -> Self {
        self.issued_ms = ms;
        self
    }

    /// The members, in order.
    pub fn members(&self) -> &[Member] {
        &self.members
    }

    /// The roster body: threshold 2 of the 3 [`COUNCIL`] keys.
    pub fn body(&self) -> RosterBody {
        RosterBody {
            v: 1,
            network: self.name.clone(),
            version: self.version,
            issued_ms: self.issued_ms,
            valid_until_ms: None,
            threshold: 2,
            council: (0..COUNCIL.len())
                .map(|i| CouncilMember {
                    name: COUNCIL[i].into(),
                    key: SignPublic(council_key(i).verifying_key().to_bytes()),
                })
                .collect(),
            nodes: self
                .members
                .iter()
                .map(|m| {
                    let k = keys(&m.name);
                    NodeEntry {
                        id: k.node.clone(),
                        role: m.role,
                        sign: k.sign_public(),
                        kem: k.kem_public(),
                        grants: m.grants.clone(),
                        revoked: m.revoked,
                    }
                })
                .collect(),
            attesters: self.attesters.clone(),
            commission: self.commission.clone(),
        }
    }

    /// Signed by the council members listed.
    pub fn signed_by(&self, signers: &[usize]) -> SignedRoster {
        sign_roster(&self.body(), signers)
    }

    /// Signed by council members 1 and 2 (2 of 3).
    pub fn signed(&self) -> SignedRoster {
        self.signed_by(&[0, 1])
    }

    /// The verified roster.
    ///
    /// # Panics
    /// If the members make an invalid roster (a duplicate name, say): a bug in the test.
    pub fn roster(&self) -> Roster {
        self.signed()
            .verify()
            .unwrap_or_else(|e| panic!("test network {}: {e}", self.name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_demo_network_verifies_two_of_three_and_keys_are_stable() {
        let net = Network::compact();
        let roster = net.roster();
        // and the monitor, the auditor and the three broker replicas
        assert_eq!(
            roster.body().nodes.len(),
            CORE.len() + BROADER.len() + 2 + REPLICAS.len()
        );
        assert_eq!(keys("UA").sign_public(), keys("UA").sign_public());
        assert_ne!(keys("UA").sign_public(), keys("PL").sign_public());
        assert!(
            net.signed_by(&[0]).verify().is_err(),
            "one of three is too few"
        );
        assert!(
            net.signed_by(&[2, 2]).verify().is_err(),
            "one key twice counts once"
        );
        assert!(net.signed_by(&[1, 2]).verify().is_ok());
        let revoked = net.clone().revoke(&["JP"]).roster();
        assert!(revoked.active(&id("JP")).is_err());
    }
}
