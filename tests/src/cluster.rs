//! A cluster of three replicas on loopback: the test network plus two more broker nodes,
//! each replica in its own directory (key, roster, `data/`) listening on a fixed
//! loopback port picked at creation, so a replica restarts where the others expect it.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tokio::net::UdpSocket;

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
    /// With [`ClusterNet::with_relays`]: `relays[i][j]` is where replica `i` reaches
    /// replica `j`, through a userspace UDP relay.
    relays: Option<Vec<Vec<SocketAddr>>>,
    /// Replicas cut off from the others (their relays drop every packet).
    pub cut: Arc<[AtomicBool; 3]>,
    /// More lines for every replica's `[cluster]` section.
    pub cluster_extra: String,
    /// Which replicas the configurations list (each lists itself in any case).
    pub listed: [bool; 3],
    /// Which replicas join a running cluster (`join = true`).
    pub join: [bool; 3],
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
            relays: None,
            cut: Arc::default(),
            cluster_extra: String::new(),
            listed: [true; 3],
            join: [false; 3],
        }
    }

    /// As [`ClusterNet::new`], but replicas reach each other only through userspace UDP
    /// relays (one per direction), so a test can cut a replica off ([`ClusterNet::cut`])
    /// while its clients still reach it. Needs a tokio runtime.
    pub async fn with_relays() -> Self {
        let mut net = Self::new();
        let mut relays = vec![vec![SocketAddr::from(([0, 0, 0, 0], 0)); 3]; 3];
        for (i, row) in relays.iter_mut().enumerate() {
            for (j, r) in row.iter_mut().enumerate() {
                *r = if i == j {
                    net.addrs[i]
                } else {
                    relay(net.addrs[j], net.cut.clone(), [i, j]).await
                };
            }
        }
        net.relays = Some(relays);
        net
    }

    /// Cut replica `i` off from the others, or reconnect it.
    pub fn set_cut(&self, i: usize, cut: bool) {
        self.cut[i].store(cut, Ordering::SeqCst);
    }

    /// Replica `i`'s directory (0-based).
    pub fn replica_dir(&self, i: usize) -> PathBuf {
        self.dir.path().join(format!("r{}", i + 1))
    }

    /// Replica `i`'s data directory.
    pub fn data_dir(&self, i: usize) -> PathBuf {
        self.replica_dir(i).join("data")
    }

    /// The `[cluster]` and `[checkpoint]` sections of replica `me`'s configuration.
    pub fn cluster_toml(&self, me: usize) -> String {
        let replicas: Vec<String> = REPLICAS
            .iter()
            .enumerate()
            .filter(|&(i, _)| self.listed[i] || i == me)
            .map(|(i, n)| {
                let a = self.relays.as_ref().map_or(self.addrs[i], |r| r[me][i]);
                format!("{{ id = {}, node = '{n}', addr = '{a}' }}", i + 1)
            })
            .collect();
        format!(
            "[checkpoint]\nevery_entries = 50\ninterval_ms = 200\n[cluster]\nreplicas = [{}]\njoin = {}\n{}",
            replicas.join(", "),
            self.join[me],
            self.cluster_extra
        )
    }

    /// Replica `i`'s configuration.
    pub fn config(&self, i: usize) -> Config {
        let text = format!(
            "listen = '{}'\ndata_dir = 'data'\nkey = 'broker.key'\nroster = 'roster.cbor'\n{}",
            self.addrs[i],
            self.cluster_toml(i)
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
        BrokerProcess::start(&self.replica_dir(i), self.addrs[i], &self.cluster_toml(i))
    }

    /// Write replica `i`'s process configuration again (as it is now); its path.
    pub fn write_process_config(&self, i: usize) -> PathBuf {
        BrokerProcess::write_config(&self.replica_dir(i), self.addrs[i], &self.cluster_toml(i))
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

/// A UDP relay to `target` for traffic from replica `pair[0]` to replica `pair[1]`: one
/// upstream socket per source, every packet dropped while either replica is cut off.
async fn relay(target: SocketAddr, cut: Arc<[AtomicBool; 3]>, pair: [usize; 2]) -> SocketAddr {
    let front = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
    let addr = front.local_addr().unwrap();
    let blocked = move || pair.iter().any(|&r| cut[r].load(Ordering::SeqCst));
    tokio::spawn(async move {
        let mut upstream: std::collections::HashMap<SocketAddr, Arc<UdpSocket>> =
            std::collections::HashMap::new();
        let mut buf = vec![0u8; 65_536];
        loop {
            let Ok((n, from)) = front.recv_from(&mut buf).await else {
                return;
            };
            if blocked() {
                continue;
            }
            let up = match upstream.get(&from) {
                Some(u) => u.clone(),
                None => {
                    let u = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
                    u.connect(target).await.unwrap();
                    upstream.insert(from, u.clone());
                    let (u2, front2, blocked2) = (u.clone(), front.clone(), blocked.clone());
                    tokio::spawn(async move {
                        let mut buf = vec![0u8; 65_536];
                        loop {
                            // an ICMP "port unreachable" (the replica not started yet, or
                            // restarting) fails one recv on a connected socket: go on
                            let Ok(n) = u2.recv(&mut buf).await else {
                                continue;
                            };
                            if !blocked2() {
                                let _ = front2.send_to(&buf[..n], from).await;
                            }
                        }
                    });
                    u
                }
            };
            let _ = up.send(&buf[..n]).await;
        }
    });
    addr
}

/// A publish a cluster acknowledged.
#[derive(Debug, Clone)]
pub struct Acked {
    /// Which publisher.
    pub publisher: usize,
    /// The index it was given.
    pub log_index: u64,
    /// Its message id.
    pub id: ewx_proto::MessageId,
    /// When it was first sent.
    pub sent: Instant,
    /// When the ack arrived.
    pub at: Instant,
}

/// The leader the newest term names, if that replica is running.
pub fn process_leader(procs: &[Option<BrokerProcess>]) -> Option<usize> {
    let newest = procs
        .iter()
        .flatten()
        .filter_map(|p| *p.leadership.lock().unwrap())
        .max()?;
    let l = usize::try_from(newest.1).ok()?.checked_sub(1)?;
    procs.get(l)?.as_ref().map(|_| l)
}

/// The newest (term, leader id) any running replica logged.
///
/// # Panics
/// When none has logged a leader yet.
pub fn newest_leadership(procs: &[Option<BrokerProcess>]) -> (u64, u64) {
    procs
        .iter()
        .flatten()
        .filter_map(|p| *p.leadership.lock().unwrap())
        .max()
        .expect("no replica has logged a leader")
}

/// Wait (at most 30 s) for a running leader; its position.
pub async fn wait_leader(procs: &[Option<BrokerProcess>]) -> usize {
    let started = Instant::now();
    loop {
        if let Some(l) = process_leader(procs) {
            return l;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "no leader elected"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Connect as `name` to any replica, trying replica `first` first.
pub async fn client(net: &ClusterNet, name: &str, first: usize) -> Client {
    let mut addrs: Vec<SocketAddr> = net.addrs.clone();
    addrs.rotate_left(first);
    Client::connect_any(
        &addrs,
        keys(name),
        net.roster.clone(),
        ewx_net::Clock::system(),
    )
    .await
    .unwrap()
}

/// The first publish sent after `t0` and acknowledged: how long after `t0` its ack came.
pub async fn next_ack_after(acked: &std::sync::Mutex<Vec<Acked>>, t0: Instant) -> Duration {
    loop {
        if let Some(a) = acked.lock().unwrap().iter().find(|a| a.sent > t0) {
            return a.at - t0;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "no publish acknowledged for 60 s"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Publish bulletins one after another as publisher `p` until `stop`, each envelope sent
/// again as is until answered; record every ack in `acked`. A refusal fails the test.
pub async fn publish_until_stopped(
    c: Client,
    p: usize,
    stop: Arc<AtomicBool>,
    acked: Arc<std::sync::Mutex<Vec<Acked>>>,
) {
    for i in 0u64.. {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let d = crate::bulletin(
            "ew.air",
            ewx_proto::Level::Amber,
            "CORE",
            ewx_proto::Precedence::Routine,
            &format!("{p}-{i}"),
        );
        let env = c.seal(d).await.unwrap();
        let bytes = env.encode().unwrap();
        let sent = Instant::now();
        loop {
            match c.publish_envelope(&bytes).await {
                Ok(ack) => {
                    acked.lock().unwrap().push(Acked {
                        publisher: p,
                        log_index: ack.log_index,
                        id: env.header().id,
                        sent,
                        at: Instant::now(),
                    });
                    break;
                }
                Err(ewx_client::Error::Rejected { reason, detail }) => {
                    panic!("publisher {p}: refused {reason:?}: {detail}")
                }
                Err(_) if stop.load(Ordering::Relaxed) => return,
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
    }
    c.close().await;
}

/// After a clean stop of all three: every acknowledged message on every replica exactly
/// once at its acknowledged index, the replicas' audit logs equal, and each store
/// verifying on its own with checkpoints signed by 2 replicas or more. The audit length.
pub async fn every_replica_holds(net: &ClusterNet, acked: &[Acked]) -> u64 {
    let stores: Vec<_> = (0..3)
        .map(|i| ewx_broker::log::Store::open_for_audit(&net.data_dir(i)).unwrap())
        .collect();
    for (r, store) in stores.iter().enumerate() {
        crate::holds_each_once(
            store,
            acked.iter().map(|a| (a.id, a.log_index)),
            &format!("replica {r}"),
        );
    }
    let lens: Vec<u64> = stores.iter().map(|s| s.audit_len().unwrap()).collect();
    let n = *lens.iter().min().unwrap();
    let prefix: Vec<_> = stores
        .iter()
        .map(|s| s.audit_range(0, n).unwrap())
        .collect();
    assert!(
        prefix.windows(2).all(|w| w[0] == w[1]),
        "replicas' audit logs differ (lengths {lens:?})"
    );
    assert!(
        lens.iter().all(|&l| l == n),
        "a replica is behind after a clean stop: {lens:?}"
    );
    drop(stores);
    for i in 0..3 {
        let summary = crate::verify_copy(&net.data_dir(i), &net.roster, 0)
            .await
            .unwrap();
        assert!(summary.entries >= n, "replica {i}: {summary:?}");
        assert!(summary.replica_signed >= 1, "replica {i}: {summary}");
    }
    n
}
