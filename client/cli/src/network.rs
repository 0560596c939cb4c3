//! The demo Compact network: Ukraine and core guarantors as liaison nodes with the
//! military compartments, Japan and Korea as partners for sanctions only, an auditor, the
//! broker, and a council of three keys of which two must sign the roster. Every key is
//! derived from a fixed seed, so the network is the same on every machine.
//! **Demo keys only**: anyone can recompute them.

use std::path::Path;

use ed25519_dalek::SigningKey;
use ewx_proto::access::Grants;
use ewx_proto::roster::{CouncilMember, NodeEntry, RosterBody};
use ewx_proto::{
    Digest32, Labels, Level, NodeId, NodeKeys, Role, Roster, SignedRoster, TopicPattern,
};

use crate::error::{Error, Result};

/// Core guarantors (liaison nodes with military compartments), Ukraine first.
pub const CORE: [&str; 8] = ["UA", "US", "GB", "PL", "DE", "FR", "TR", "LT"];
/// The broader group: sanctions and other non-military traffic only.
pub const BROADER: [&str; 2] = ["JP", "KR"];
/// The auditor.
pub const AUDITOR: &str = "AUDIT1";
/// The broker.
pub const BROKER: &str = "BROKER";
/// Council members; 2 of 3 must sign.
pub const COUNCIL: [&str; 3] = ["COUNCIL-1", "COUNCIL-2", "COUNCIL-3"];
/// Name of the demo exchange.
pub const NETWORK: &str = "kyiv-compact-demo";

fn seed(kind: &str, name: &str) -> [u8; 32] {
    Digest32::of(&[
        b"ewx demo network, not for real use",
        kind.as_bytes(),
        name.as_bytes(),
    ])
    .0
}

/// The demo keys of a node (or council member) by name.
///
/// # Errors
/// `Proto` if the name is not a valid node id.
pub fn demo_keys(name: &str) -> Result<NodeKeys> {
    Ok(NodeKeys::from_secrets(
        NodeId::new(name)?,
        seed("sign", name),
        seed("kem", name),
    ))
}

fn patterns(list: &[&str]) -> Result<Vec<TopicPattern>> {
    list.iter()
        .map(|p| TopicPattern::new(*p).map_err(Error::from))
        .collect()
}

/// Grants of the core guarantors: every military compartment up to RED.
///
/// # Errors
/// Only if the built-in patterns were invalid.
pub fn core_grants() -> Result<Grants> {
    Ok(Grants {
        clearance: Level::Red,
        compartments: Labels::parse_compartments("CORE,AIR,MARITIME,CYBER,SANCTIONS,CEASEFIRE")?,
        publish: patterns(&[
            "ew.>",
            "exercise.>",
            "consult.>",
            "sanctions.>",
            "ceasefire.>",
        ])?,
        subscribe: patterns(&[">"])?,
    })
}

/// Grants of the broader group: sanctions only, up to AMBER; exercise notices too.
///
/// # Errors
/// Only if the built-in patterns were invalid.
pub fn broader_grants() -> Result<Grants> {
    Ok(Grants {
        clearance: Level::Amber,
        compartments: Labels::parse_compartments("SANCTIONS")?,
        publish: patterns(&["sanctions.>"])?,
        subscribe: patterns(&["sanctions.>", "exercise.>"])?,
    })
}

/// The roster body of the demo network.
///
/// # Errors
/// Only if the built-in names were invalid.
pub fn roster_body() -> Result<RosterBody> {
    let node = |name: &str, role: Role, grants: Grants| -> Result<NodeEntry> {
        let k = demo_keys(name)?;
        Ok(NodeEntry {
            id: k.node.clone(),
            role,
            sign: k.sign_public(),
            kem: k.kem_public(),
            grants,
            revoked: false,
        })
    };
    let mut nodes = Vec::new();
    for n in CORE {
        nodes.push(node(n, Role::Liaison, core_grants()?)?);
    }
    for n in BROADER {
        nodes.push(node(n, Role::Partner, broader_grants()?)?);
    }
    nodes.push(node(AUDITOR, Role::Auditor, Grants::none())?);
    nodes.push(node(BROKER, Role::Broker, Grants::none())?);
    let council = COUNCIL
        .iter()
        .map(|c| {
            Ok(CouncilMember {
                name: c.to_string(),
                key: demo_keys(c)?.sign_public(),
            })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(RosterBody {
        v: 1,
        network: NETWORK.into(),
        version: 1,
        issued_ms: 1_764_000_000_000,
        valid_until_ms: None,
        threshold: 2,
        council,
        nodes,
    })
}

/// The signed demo roster (council members 1 and 2 sign).
///
/// # Errors
/// Only if the built-in network were inconsistent.
pub fn signed_roster() -> Result<SignedRoster> {
    let mut s = SignedRoster::new(&roster_body()?)?;
    for c in &COUNCIL[..2] {
        s.sign(&SigningKey::from_bytes(&seed("sign", c)));
    }
    Ok(s)
}

/// The verified demo roster.
///
/// # Errors
/// Only if the built-in network were inconsistent.
pub fn roster() -> Result<Roster> {
    Ok(signed_roster()?.verify()?)
}

/// The broker configuration written next to the keys.
pub const BROKER_TOML: &str = "\
# Demo broker for the keys-example network. DEMO KEYS ONLY.
listen = \"127.0.0.1:4870\"
data_dir = \"data\"
key = \"keys/BROKER.key\"
roster = \"roster.cbor\"

[checkpoint]
every_entries = 100
interval_ms = 2000
";

/// First line of every secret file of the demo network.
pub const DEMO_MARK: &str =
    "# DEMO KEY of the ewx example network: published, NOT secret; never use it for real traffic\n";

fn demo_secret(k: &NodeKeys) -> Vec<u8> {
    let mut text = DEMO_MARK.to_string();
    text.push_str(&k.to_secret_file());
    text.into_bytes()
}

/// Write the network into `dir`: `roster.cbor`, `keys/<NODE>.key` and `.pub`,
/// `council/<NAME>.key` (secret files mode 0600) and `broker.toml`.
///
/// # Errors
/// `Io` naming the file that could not be written.
pub fn write(dir: &Path) -> Result<()> {
    for sub in ["keys", "council"] {
        std::fs::create_dir_all(dir.join(sub)).map_err(|e| Error::io(&dir.join(sub), e))?;
    }
    crate::files::write_public(&dir.join("roster.cbor"), &signed_roster()?.encode()?)?;
    crate::files::write_public(&dir.join("broker.toml"), BROKER_TOML.as_bytes())?;
    for n in CORE.iter().chain(&BROADER).chain(&[AUDITOR, BROKER]) {
        let k = demo_keys(n)?;
        crate::files::write_secret(&dir.join("keys").join(format!("{n}.key")), &demo_secret(&k))?;
        crate::files::write_public(
            &dir.join("keys").join(format!("{n}.pub")),
            crate::files::public_text(&k).as_bytes(),
        )?;
    }
    for c in COUNCIL {
        let k = demo_keys(c)?;
        crate::files::write_secret(
            &dir.join("council").join(format!("{c}.key")),
            &demo_secret(&k),
        )?;
    }
    Ok(())
}
