//! Writing the demo Compact network to disk (`ewx demo --write-network DIR`, and what
//! `keys-example/` holds): the roster, every node's key files and a broker config. The
//! network itself — names, seeded keys, grants, the 2-of-3 council — is
//! [`ewx_testkit::Network::compact`]. **Demo keys only**: anyone can recompute them.

use std::path::Path;

use ewx_proto::NodeKeys;
use ewx_testkit::{COUNCIL, Network, keys};

use crate::error::{Error, Result};

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

/// The configuration of cluster replica `id` (1-3) of the demo network: replica `id`
/// listens on port 4870 + `id`, keeps its store in `data-<id>`, and names all three.
pub fn replica_toml(id: usize) -> String {
    let node = ewx_testkit::REPLICAS[id - 1];
    let mut text = format!(
        "# Demo cluster replica {id} of 3 for the keys-example network. DEMO KEYS ONLY.\n\
         # Start all three: ewx-broker --config cluster/replica-1.toml (and -2, -3).\n\
         listen = \"127.0.0.1:{}\"\n\
         data_dir = \"../data-{id}\"\n\
         key = \"../keys/{node}.key\"\n\
         roster = \"../roster.cbor\"\n\n\
         [checkpoint]\nevery_entries = 100\ninterval_ms = 2000\n\n\
         [cluster]\nreplicas = [\n",
        4870 + id
    );
    for (i, r) in ewx_testkit::REPLICAS.iter().enumerate() {
        text.push_str(&format!(
            "    {{ id = {}, node = \"{r}\", addr = \"127.0.0.1:{}\" }},\n",
            i + 1,
            4871 + i
        ));
    }
    text.push_str("]\n");
    text
}

/// Where `n` brokers on loopback listen: `127.0.0.1:0` (any port) for one broker; for a
/// cluster, ports free now (its replicas must know each other's addresses).
///
/// # Errors
/// `Unexpected` if no loopback UDP port can be bound.
pub fn loopback_listens(n: usize) -> Result<Vec<String>> {
    if n <= 1 {
        return Ok(vec!["127.0.0.1:0".into()]);
    }
    (0..n)
        .map(|_| {
            std::net::UdpSocket::bind("127.0.0.1:0")
                .and_then(|s| s.local_addr())
                .map(|a| a.to_string())
                .map_err(|e| Error::Unexpected(format!("no loopback port: {e}")))
        })
        .collect()
}

/// The `[cluster]` section naming the demo's replicas (broker nodes [`REPLICAS`]) at
/// `addrs`, in Raft id order; empty for one broker.
///
/// [`REPLICAS`]: ewx_testkit::REPLICAS
pub fn cluster_section(addrs: &[String]) -> String {
    if addrs.len() <= 1 {
        return String::new();
    }
    let list: Vec<String> = addrs
        .iter()
        .zip(ewx_testkit::REPLICAS)
        .enumerate()
        .map(|(i, (a, node))| format!("{{ id = {}, node = '{node}', addr = '{a}' }}", i + 1))
        .collect();
    format!("[cluster]\nreplicas = [{}]\n", list.join(", "))
}

/// First line of every secret file of the demo network.
pub const DEMO_MARK: &str =
    "# DEMO KEY of the ewx example network: published, NOT secret; never use it for real traffic\n";

fn demo_secret(k: &NodeKeys) -> Vec<u8> {
    let mut text = DEMO_MARK.to_string();
    text.push_str(&k.to_secret_file());
    text.into_bytes()
}

/// Write the network into `dir`: `roster.cbor`, `keys/<NODE>.key` and `.pub`,
/// `council/<NAME>.key` (secret files mode 0600), `broker.toml` and the three cluster
/// replicas' `cluster/replica-<N>.toml`.
///
/// # Errors
/// `Io` naming the file that could not be written.
pub fn write(dir: &Path) -> Result<()> {
    for sub in ["keys", "council", "cluster"] {
        std::fs::create_dir_all(dir.join(sub)).map_err(|e| Error::io(&dir.join(sub), e))?;
    }
    let net = Network::compact();
    crate::files::write_public(&dir.join("roster.cbor"), &net.signed().encode()?)?;
    crate::files::write_public(&dir.join("broker.toml"), BROKER_TOML.as_bytes())?;
    for id in 1..=3 {
        crate::files::write_public(
            &dir.join("cluster").join(format!("replica-{id}.toml")),
            replica_toml(id).as_bytes(),
        )?;
    }
    for m in net.members() {
        let (n, k) = (&m.name, keys(&m.name));
        crate::files::write_secret(&dir.join("keys").join(format!("{n}.key")), &demo_secret(&k))?;
        crate::files::write_public(
            &dir.join("keys").join(format!("{n}.pub")),
            crate::files::public_text(&k).as_bytes(),
        )?;
    }
    for c in COUNCIL {
        let k = keys(c);
        crate::files::write_secret(
            &dir.join("council").join(format!("{c}.key")),
            &demo_secret(&k),
        )?;
    }
    Ok(())
}
