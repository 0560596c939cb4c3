//! A cluster of three replicas on loopback: the test network plus two more broker nodes,
//! each replica in its own directory (key, roster, `data/`) listening on a fixed
//! loopback port picked at creation, so a replica restarts where the others expect it.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use ewx_broker::{Broker, Config};
use ewx_client::Client;
use ewx_proto::access::Grants;
use ewx_proto::{Role, Roster};

use crate::{BrokerProcess, keys, set_mode, sign_roster};

/// The replicas' roster nodes, in Raft id order (1, 2, 3).
pub const REPLICAS: [&str; 3] = ["BROKER", "BROKER2", "BROKER3"];

/// Three replicas' directories and addresses.
#[derive(Debug)]
pub struct ClusterNet {
    /// Holds every replica's directory (deleted on drop).
    pub dir: tempfile::TempDir,
    /// The roster (with the three brokers).
    pub roster: Roster,
    /// Where each replica listens.
    pub addrs: Vec<SocketAddr>,
}

/// A free loopback UDP port (free when asked; the replica binds it soon after).
fn free_port() -> SocketAddr {
    let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    s.local_addr().unwrap()
}

impl Default for ClusterNet {
    fn default() -> Self {
        Self::new()
    }
}

impl ClusterNet {
    /// Write the three replicas' directories.
    pub fn new() -> Self {
        let _ = crate::TestNet::new(); // installs the test log subscriber
        let dir = tempfile::tempdir().unwrap();
        let body = crate::network(1, &[])
            .node("BROKER2", Role::Broker, Grants::none())
            .node("BROKER3", Role::Broker, Grants::none())
            .body();
        let signed = sign_roster(&body);
        let addrs: Vec<SocketAddr> = REPLICAS.iter().map(|_| free_port()).collect();
        for (i, name) in REPLICAS.iter().enumerate() {
            let d = dir.path().join(format!("r{}", i + 1));
            std::fs::create_dir_all(&d).unwrap();
            std::fs::write(d.join("roster.cbor"), signed.encode().unwrap()).unwrap();
            let key = d.join("broker.key");
            std::fs::write(&key, keys(name).to_secret_file().as_bytes()).unwrap();
            set_mode(&key, 0o600);
        }
        Self {
            dir,
            roster: signed.verify().unwrap(),
            addrs,
        }
    }

    /// Replica `i`'s directory (0-based).
    pub fn replica_dir(&self, i: usize) -> PathBuf {
        self.dir.path().join(format!("r{}", i + 1))
    }

    /// Replica `i`'s data directory.
    pub fn data_dir(&self, i: usize) -> PathBuf {
        self.replica_dir(i).join("data")
    }

    /// The `[cluster]` and `[checkpoint]` sections every replica shares.
    pub fn cluster_toml(&self) -> String {
        let replicas: Vec<String> = REPLICAS
            .iter()
            .zip(&self.addrs)
            .enumerate()
            .map(|(i, (n, a))| format!("{{ id = {}, node = '{n}', addr = '{a}' }}", i + 1))
            .collect();
        format!(
            "[checkpoint]\nevery_entries = 50\ninterval_ms = 200\n[cluster]\nreplicas = [{}]\n",
            replicas.join(", ")
        )
    }

    /// Replica `i`'s configuration.
    pub fn config(&self, i: usize) -> Config {
        let text = format!(
            "listen = '{}'\ndata_dir = 'data'\nkey = 'broker.key'\nroster = 'roster.cbor'\n{}",
            self.addrs[i],
            self.cluster_toml()
        );
        Config::from_toml(&text, &self.replica_dir(i)).unwrap()
    }

    /// Start replica `i` in this process. After an in-process restart the stopped
    /// replica's listening socket stays bound for up to the idle timeout (≈ 26 s here;
    /// a process that exits frees it at once): wait for it.
    pub async fn start(&self, i: usize) -> Broker {
        let started = Instant::now();
        loop {
            match Broker::start(self.config(i)).await {
                Ok(b) => return b,
                Err(e)
                    if e.to_string().contains("in use")
                        && started.elapsed() < Duration::from_secs(60) =>
                {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => panic!("replica {i}: {e}"),
            }
        }
    }

    /// Start replica `i` as an `ewx-broker` process.
    pub fn start_process(&self, i: usize) -> BrokerProcess {
        BrokerProcess::start(&self.replica_dir(i), self.addrs[i], &self.cluster_toml())
    }

    /// Connect a client as `name` to replica `i`.
    pub async fn client(&self, i: usize, name: &str) -> Client {
        Client::connect(self.addrs[i], keys(name), self.roster.clone())
            .await
            .unwrap()
    }
}

/// Wait until the running replicas agree on a leader among them; its position.
pub async fn leader(brokers: &[Option<Broker>]) -> usize {
    let started = Instant::now();
    loop {
        let views: Vec<(usize, u64, Option<u64>)> = brokers
            .iter()
            .enumerate()
            .filter_map(|(i, b)| {
                b.as_ref()
                    .and_then(|b| b.cluster_view())
                    .map(|(me, l)| (i, me, l))
            })
            .collect();
        if let Some(&(i, me, _)) = views.iter().find(|(_, me, l)| Some(*me) == *l)
            && views.iter().all(|(_, _, l)| *l == Some(me))
        {
            return i;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "no leader: {views:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Wait until the running replicas hold the same log: equal audit entries, byte for
/// byte, and as many messages; the audit length.
pub async fn converged(brokers: &[Option<Broker>]) -> u64 {
    let started = Instant::now();
    loop {
        let stores: Vec<_> = brokers.iter().flatten().map(Broker::store).collect();
        let lens: Vec<u64> = stores.iter().map(|s| s.audit_len().unwrap()).collect();
        let counts: Vec<usize> = stores.iter().map(|s| s.message_count()).collect();
        if lens.windows(2).all(|w| w[0] == w[1]) && counts.windows(2).all(|w| w[0] == w[1]) {
            let n = lens[0];
            let entries: Vec<_> = stores
                .iter()
                .map(|s| s.audit_range(0, n).unwrap())
                .collect();
            if entries.windows(2).all(|w| w[0] == w[1]) {
                return n;
            }
            panic!("replicas hold different audit entries at equal length {n}");
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "replicas did not converge: audit lengths {lens:?}, messages {counts:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
