//! # ewx-tests — end-to-end test helpers
//!
//! [`TestNet`] writes a small Compact network ([`network`], from `ewx-testkit`: seeded
//! keys, a 2-of-3 council roster) and a broker config into a temporary directory;
//! [`TestNet::start_broker`] starts a real broker on `127.0.0.1:0` with a real sled
//! directory there; [`TestNet::client`] connects a real QUIC client as one node.
#![allow(clippy::unwrap_used, clippy::missing_panics_doc)]

pub mod cases;
pub mod cluster;

use std::path::{Path, PathBuf};

use ewx_broker::{Broker, Config};
use ewx_net::Clock;
use std::time::Duration;

use ewx_client::{Client, Delivery, Subscription};
use ewx_proto::access::Grants;
use ewx_proto::audit::Event;
use ewx_proto::frame::{ExerciseFilter, StartAt};
use ewx_proto::payload::{Bulletin, Payload, Precedence};
use ewx_proto::roster::RosterBody;
use ewx_proto::{Draft, Labels, Level, Role, Roster, SignedRoster, Topic, TopicPattern};
use ewx_testkit::Network;

pub use ewx_testkit::grants::{broader as sanctions_only, core};
pub use ewx_testkit::{council_key, id, keys};

/// The test network at `version` with `revoked` nodes: UA, PL (liaisons), US (a core
/// partner), JP, KR (sanctions only), XX (core, to be revoked), MON1 (a ceasefire
/// monitor), BROKER, AUDIT1; UA, PL and US attest snapbacks and PL, US and XX sit on the
/// Special Commission, 2 of them needed in each.
pub fn network(version: u64, revoked: &[&str]) -> Network {
    Network::new("ewx-test")
        .issued(1_700_000_000_000)
        .version(version)
        .node("UA", Role::Liaison, core())
        .node("PL", Role::Liaison, core())
        .node("US", Role::Partner, core())
        .node("JP", Role::Partner, sanctions_only())
        .node("KR", Role::Partner, sanctions_only())
        .node("XX", Role::Partner, core())
        .node("MON1", Role::Monitor, ewx_testkit::grants::monitor())
        .node("BROKER", Role::Broker, Grants::none())
        .node("AUDIT1", Role::Auditor, Grants::none())
        .attesters(&["UA", "PL", "US"], 2)
        .commission(&["PL", "US", "XX"], 2)
        .revoke(revoked)
}

/// The roster body of [`network`].
pub fn roster_body(version: u64, revoked: &[&str]) -> RosterBody {
    network(version, revoked).body()
}

/// Sign a body with council keys 0 and 1.
pub fn sign_roster(body: &RosterBody) -> SignedRoster {
    ewx_testkit::sign_roster(body, &[0, 1])
}

/// A network on disk: keys, roster, broker config and data dir in a temp directory.
#[derive(Debug)]
pub struct TestNet {
    /// The temp directory (deleted on drop).
    pub dir: tempfile::TempDir,
    /// The roster.
    pub roster: Roster,
}

impl Default for TestNet {
    fn default() -> Self {
        Self::new()
    }
}

impl TestNet {
    /// Write the network.
    pub fn new() -> Self {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(
                tracing_subscriber::EnvFilter::try_from_default_env()
                    .unwrap_or_else(|_| "warn".into()),
            )
            .with_test_writer()
            .try_init();
        let dir = tempfile::tempdir().unwrap();
        let signed = sign_roster(&roster_body(1, &[]));
        std::fs::write(dir.path().join("roster.cbor"), signed.encode().unwrap()).unwrap();
        let key = dir.path().join("broker.key");
        std::fs::write(&key, keys("BROKER").to_secret_file().as_bytes()).unwrap();
        set_mode(&key, 0o600);
        Self {
            dir,
            roster: signed.verify().unwrap(),
        }
    }

    /// Where the broker keeps its store.
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// A broker config on 127.0.0.1:0.
    pub fn config(&self) -> Config {
        let text = "listen = '127.0.0.1:0'\ndata_dir = 'data'\nkey = 'broker.key'\nroster = 'roster.cbor'\n\
             [checkpoint]\nevery_entries = 50\ninterval_ms = 200\n";
        Config::from_toml(text, self.dir.path()).unwrap()
    }

    /// Start a broker with [`TestNet::config`].
    pub async fn start_broker(&self) -> Broker {
        Broker::start(self.config()).await.unwrap()
    }

    /// Start a broker whose log times come from `clock` (a simulated clock the test
    /// moves forward), reminding `reminders_ms` before each case deadline.
    pub async fn start_broker_with_clock(&self, clock: &Clock, reminders_ms: &[u64]) -> Broker {
        let mut config = self.config();
        config.clock = clock.clone();
        config.cases.reminders_ms = reminders_ms.to_vec();
        Broker::start(config).await.unwrap()
    }

    /// Connect a client as `name` that seals by `clock`.
    pub async fn client_with_clock(&self, broker: &Broker, name: &str, clock: &Clock) -> Client {
        Client::connect_with_clock(
            broker.local_addr(),
            keys(name),
            self.roster.clone(),
            clock.clone(),
        )
        .await
        .unwrap()
    }

    /// Connect a client as `name`.
    pub async fn client(&self, broker: &Broker, name: &str) -> Client {
        Client::connect(broker.local_addr(), keys(name), self.roster.clone())
            .await
            .unwrap()
    }
}

/// chmod.
pub fn set_mode(path: &Path, mode: u32) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    }
}

/// A bulletin draft.
pub fn bulletin(
    topic: &str,
    level: Level,
    compartments: &str,
    precedence: Precedence,
    headline: &str,
) -> Draft {
    Draft {
        topic: Topic::new(topic).unwrap(),
        precedence,
        labels: Labels::new(level, Labels::parse_compartments(compartments).unwrap()),
        payload: Payload::Bulletin(Bulletin {
            headline: headline.into(),
            body: "assessment".into(),
            area: None,
            event_ms: None,
            confidence: None,
        }),
        seq: 0,
        expires_ms: None,
        receipt: false,
        case: None,
    }
}

/// The headline of a bulletin payload.
pub fn headline(p: &Option<Payload>) -> String {
    match p {
        Some(Payload::Bulletin(b)) => b.headline.clone(),
        other => format!("{other:?}"),
    }
}

/// How long a test waits for any one delivery before failing.
pub const WAIT: Duration = Duration::from_secs(60);

/// A topic pattern.
pub fn pat(p: &str) -> TopicPattern {
    TopicPattern::new(p).unwrap()
}

/// Open a subscription to `pattern` (real and exercise traffic) or fail.
pub async fn subscribe(c: &Client, name: &str, pattern: &str, from: StartAt) -> Subscription {
    c.subscribe(
        name,
        TopicPattern::new(pattern).unwrap(),
        from,
        ExerciseFilter::All,
    )
    .await
    .unwrap()
}

/// The next delivery, verified and decrypted, or fail after [`WAIT`].
pub async fn next(sub: &mut Subscription) -> Delivery {
    tokio::time::timeout(WAIT, sub.next())
        .await
        .expect("delivery in time")
        .expect("subscription open")
        .unwrap()
}

/// The headlines of the next `n` deliveries.
pub async fn take(sub: &mut Subscription, n: usize) -> Vec<String> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        out.push(headline(&next(sub).await.payload));
    }
    out
}

/// Fail if anything more arrives within a short grace period.
pub async fn nothing_more(sub: &mut Subscription) {
    if let Ok(Some(d)) = tokio::time::timeout(Duration::from_millis(300), sub.next()).await {
        panic!("unexpected delivery: {:?}", d.map(|d| headline(&d.payload)));
    }
}

/// Verify a broker's store (or a copy of it) offline, as `ewx audit verify --store`.
///
/// # Errors
/// `Unsound` with the first bad index, or why the copy could not be read.
pub async fn verify_copy(
    dir: &Path,
    roster: &Roster,
    min_witnesses: usize,
) -> ewx_client::Result<ewx_client::audit::Summary> {
    let copy = ewx_cli::offline::StoreCopy::open(dir)
        .map_err(|e| ewx_client::Error::Audit(e.to_string()))?;
    ewx_client::audit::verify(&copy, roster.clone(), min_witnesses, &mut |_, _| {}).await
}

/// Copy a directory tree (a broker's store, to tamper with the copy).
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), target).unwrap();
        }
    }
}

/// Every audit event in a store, in order.
pub fn audit_events(store: &ewx_broker::log::Store) -> Vec<Event> {
    let entries = store.audit_range(0, u64::MAX).unwrap();
    entries
        .iter()
        .map(|e| ewx_proto::audit::Entry::decode(e).unwrap().event)
        .collect()
}

/// A sealed envelope with its header edited and re-signed by `signer`, as wire bytes:
/// what a real (possibly misbehaving) node could send.
pub fn resigned(
    env: &ewx_proto::Envelope,
    signer: &str,
    edit: impl FnOnce(&mut ewx_proto::Header),
) -> Vec<u8> {
    let mut h = env.header().clone();
    edit(&mut h);
    let mut header = Vec::new();
    ciborium::into_writer(&h, &mut header).unwrap();
    ewx_proto::Envelope::sign(header, env.ciphertext().to_vec(), &keys(signer))
        .unwrap()
        .encode()
        .unwrap()
}

/// Newest modification time of the files under `dir`.
fn newest(dir: &Path) -> std::time::SystemTime {
    let mut t = std::time::SystemTime::UNIX_EPOCH;
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        let m = if p.is_dir() {
            newest(&p)
        } else {
            e.metadata()
                .and_then(|m| m.modified())
                .unwrap_or(std::time::SystemTime::UNIX_EPOCH)
        };
        t = t.max(m);
    }
    t
}

/// The `ewx-broker` binary next to this test binary, rebuilt first if it is missing or
/// older than the broker's or protocol's sources (as when one test target is run alone
/// after an edit; `cargo test --workspace` builds it fresh).
pub fn broker_binary() -> PathBuf {
    binary(
        "ewx-broker",
        "ewx-broker",
        &["broker/src", "proto/src", "proto/net/src"],
    )
}

/// The `ewx` binary of this build (built first if any of its sources is newer).
pub fn ewx_binary() -> PathBuf {
    binary(
        "ewx",
        "ewx-cli",
        &[
            "client/cli/src",
            "client/taxii/src",
            "client/src",
            "broker/src",
            "proto/src",
            "proto/net/src",
        ],
    )
}

fn binary(name: &str, package: &str, sources: &[&str]) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    // target/<profile>/deps/<test> -> target/<profile>/<name>
    let profile_dir = exe.parent().and_then(Path::parent).unwrap().to_path_buf();
    let bin = profile_dir.join(name);
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let sources = sources
        .iter()
        .map(|d| newest(&root.join(d)))
        .max()
        .unwrap_or(std::time::SystemTime::UNIX_EPOCH);
    let built = std::fs::metadata(&bin).and_then(|m| m.modified()).ok();
    if built.is_none_or(|b| b < sources) {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let release = profile_dir.ends_with("release");
        let mut cmd = std::process::Command::new(cargo);
        cmd.args(["build", "-p", package, "--bin", name]);
        if release {
            cmd.arg("--release");
        }
        assert!(cmd.status().unwrap().success(), "cannot build {name}");
    }
    bin
}

/// Acks refused by any [`BrokerProcess`] of this test binary because they named a
/// subscription not open on the connection (a client acking before it resubscribed).
static STRAY_ACKS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// How many acks the broker processes of this test binary refused so far because their
/// subscription was not open on that connection.
pub fn stray_acks() -> u64 {
    STRAY_ACKS.load(std::sync::atomic::Ordering::Relaxed)
}

/// A real `ewx-broker` process on a [`TestNet`]'s directory.
#[derive(Debug)]
pub struct BrokerProcess {
    child: std::process::Child,
    /// Where it listens.
    pub addr: std::net::SocketAddr,
    /// The newest `cluster: term T, leader L` it logged: (T, L).
    pub leadership: std::sync::Arc<std::sync::Mutex<Option<(u64, u64)>>>,
}

impl BrokerProcess {
    /// Write the configuration a process on `dir` runs with (again, before a SIGHUP).
    pub fn write_config(dir: &Path, listen: std::net::SocketAddr, extra: &str) -> PathBuf {
        let config = dir.join("broker-process.toml");
        std::fs::write(
            &config,
            format!(
                "listen = '{listen}'\ndata_dir = 'data'\nkey = 'broker.key'\nroster = 'roster.cbor'\n{extra}"
            ),
        )
        .unwrap();
        config
    }

    /// Start `ewx-broker` on `dir` (keys, roster and `data/` as [`TestNet`] writes them)
    /// listening on `listen` (port 0: any), with `extra` TOML appended to its config;
    /// returns once it logs `listening on`.
    pub fn start(dir: &Path, listen: std::net::SocketAddr, extra: &str) -> Self {
        Self::start_in(None, dir, listen, extra)
    }

    /// [`BrokerProcess::start`] inside network namespace `netns` (`ip netns exec`).
    pub fn start_in(
        netns: Option<&str>,
        dir: &Path,
        listen: std::net::SocketAddr,
        extra: &str,
    ) -> Self {
        use std::io::BufRead;
        let config = Self::write_config(dir, listen, extra);
        let mut command = match netns {
            Some(ns) => {
                let mut c = std::process::Command::new("ip");
                c.args(["netns", "exec", ns]).arg(broker_binary());
                c
            }
            None => std::process::Command::new(broker_binary()),
        };
        let mut child = command
            .arg("--config")
            .arg(&config)
            .env(
                "RUST_LOG",
                std::env::var("EWX_BROKER_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = std::io::BufReader::new(child.stderr.take().unwrap()).lines();
        // every line is read for leadership, those before `listening on` too (a replica
        // may learn its leader before it listens for clients); EWX_BROKER_LOG shows them
        let show = std::env::var("EWX_BROKER_LOG").is_ok();
        let leadership = std::sync::Arc::new(std::sync::Mutex::new(None));
        let seen = leadership.clone();
        let note = move |line: &str| {
            if line.contains("rejected: no open subscription named") {
                STRAY_ACKS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            if let Some((_, rest)) = line.split_once("cluster: term ") {
                let mut words = rest
                    .split(|c: char| !c.is_ascii_digit())
                    .filter(|w| !w.is_empty());
                if let (Some(t), Some(l)) = (words.next(), words.next()) {
                    *seen.lock().unwrap() = Some((t.parse().unwrap(), l.parse().unwrap()));
                }
            }
            if show {
                eprintln!("[broker] {line}");
            }
        };
        let addr = loop {
            let Some(Ok(line)) = lines.next() else {
                let status = child.wait().unwrap();
                panic!("ewx-broker exited before listening: {status}");
            };
            note(&line);
            if let Some((_, a)) = line.split_once("listening on ") {
                break a.trim().parse().unwrap();
            }
        };
        // keep draining its log so it never blocks on a full pipe
        std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                note(&line);
            }
        });
        Self {
            child,
            addr,
            leadership,
        }
    }

    /// Send a signal (`STOP`, `CONT`, `TERM`…) with `kill`.
    pub fn signal(&self, name: &str) {
        let ok = std::process::Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.child.id().to_string())
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -{name} failed");
    }

    /// SIGTERM and wait for a clean exit (at most 30 s, then SIGKILL and fail).
    pub fn terminate(mut self) {
        self.signal("TERM");
        let started = std::time::Instant::now();
        while started.elapsed() < Duration::from_secs(30) {
            if let Some(status) = self.child.try_wait().unwrap() {
                assert!(status.success(), "ewx-broker exited with {status}");
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("ewx-broker did not stop within 30 s of SIGTERM");
    }

    /// SIGKILL: no shutdown, no final flush.
    pub fn kill_9(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for BrokerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Soak mode (`EWX_SOAK=1`): the long versions of the reliability tests.
pub fn soak() -> bool {
    std::env::var("EWX_SOAK").is_ok_and(|v| v == "1")
}

/// Print a reliability figure and keep it in `target/<profile>/reliability/NAME.txt`,
/// which `.ci/run` shows at the end of the run.
pub fn report(name: &str, text: &str) {
    eprintln!("{text}");
    let exe = std::env::current_exe().unwrap();
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .unwrap()
        .join("reliability");
    let _ = std::fs::create_dir_all(&dir);
    let _ = std::fs::write(dir.join(format!("{name}.txt")), format!("{text}\n"));
}

/// Wait (at most [`WAIT`]) until subscriber `name` has seen every index in `want`, then
/// check it saw none twice (a subscription resumed after a crash or a failover).
pub async fn delivered_once(
    name: &str,
    seen: &std::sync::Mutex<Vec<u64>>,
    want: &std::collections::BTreeSet<u64>,
) {
    use std::collections::BTreeSet;
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let got: BTreeSet<u64> = seen.lock().unwrap().iter().copied().collect();
        if want.is_subset(&got) {
            break;
        }
        let missing: Vec<_> = want.difference(&got).take(10).collect();
        assert!(
            std::time::Instant::now() < deadline,
            "{name} is missing deliveries {missing:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let seen = seen.lock().unwrap().clone();
    let unique: BTreeSet<u64> = seen.iter().copied().collect();
    assert_eq!(
        unique.len(),
        seen.len(),
        "{name} was handed a message twice"
    );
}

/// Resident and peak resident memory of a process, KiB (`VmRSS`, `VmHWM`).
pub fn rss_kb(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// The subscription "desk" to every early warning from the earliest stored, with
/// automatic (batched) acks, so the client resumes it after a reconnect.
pub async fn desk(c: &Client) -> Subscription {
    let opts = ewx_client::SubscriptionOptions {
        from: StartAt::Earliest,
        auto_receipt: false,
        ..Default::default()
    };
    c.subscribe_with("desk", pat("ew.>"), opts).await.unwrap()
}

/// Check that a store holds each acknowledged message exactly once, at the index its
/// ack gave (`acked`: id and index); `who` names the store in failures. How many it held.
pub fn holds_each_once(
    store: &ewx_broker::log::Store,
    acked: impl IntoIterator<Item = (ewx_proto::MessageId, u64)>,
    who: &str,
) -> usize {
    let mut copies: std::collections::HashMap<ewx_proto::MessageId, u32> =
        std::collections::HashMap::new();
    // counted once: sled counts a tree by walking it
    let count = store.message_count() as u64;
    let (mut index, mut stored) = (0u64, 0u64);
    while stored < count {
        if let Some(bytes) = store.message(index).unwrap() {
            let env = ewx_proto::Envelope::decode(&bytes, usize::MAX).unwrap();
            *copies.entry(env.header().id).or_default() += 1;
            stored += 1;
        }
        index += 1;
    }
    let mut held = 0;
    for (id, log_index) in acked {
        assert_eq!(
            copies.get(&id),
            Some(&1),
            "{who}: acked {log_index} not stored exactly once"
        );
        assert_eq!(store.index_of(&id).unwrap(), Some(log_index), "{who}");
        held += 1;
    }
    held
}

/// The demo network (`ewx demo`'s, DEMO KEYS ONLY) written to `dir`, and a broker of it
/// on 127.0.0.1:0 with `extra` TOML appended to its configuration.
pub async fn demo_broker(dir: &Path, extra: &str) -> (Broker, Roster) {
    ewx_cli::network::write(dir).unwrap();
    let text = format!(
        "listen = '127.0.0.1:0'\ndata_dir = 'data'\nkey = 'keys/BROKER.key'\nroster = 'roster.cbor'\n\
         [checkpoint]\nevery_entries = 20\ninterval_ms = 300\n{extra}"
    );
    let config = Config::from_toml(&text, dir).unwrap();
    let broker = Broker::start(config).await.unwrap();
    (broker, ewx_testkit::Network::compact().roster())
}

/// A client of a [`demo_broker`] as `node`.
pub async fn demo_client(broker: &Broker, roster: &Roster, node: &str) -> Client {
    Client::connect(broker.local_addr(), ewx_testkit::keys(node), roster.clone())
        .await
        .unwrap()
}
