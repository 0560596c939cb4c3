//! `ewx demo`: the Compact exchange in one process. An embedded broker on loopback with a
//! temporary store and the demo network; every node connects over real QUIC and plays its
//! part; then a table of what each node received and was denied, the FLASH latency, and
//! an offline verification of the audit log. The report says whether every expectation
//! held, so the command can exit non-zero when one did not. With `cluster`, three
//! replicas serve the same network, clients know all three, and the leader is stopped
//! midway: every expectation must still hold, and every replica's log must verify.

mod cases;
mod commission;
mod drafts;
mod report;
mod seen;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use ewx_client::{Client, SubscriptionOptions};
use ewx_proto::frame::{ExerciseFilter, RejectReason, StartAt};
use ewx_proto::receipt::Receipt;
use ewx_proto::{Kind, Level, MessageId, Precedence, Roster, TopicPattern};
use ewx_testkit::{BROADER, CORE};
use tokio::sync::mpsc;

use crate::error::{Error, Result};
use crate::network;
use drafts::{bulletin, draft};
use seen::Board;

/// What the demo found.
#[derive(Debug)]
pub struct Report {
    /// The printed narrative and table.
    pub text: String,
    /// Expectations that failed (empty: success).
    pub failures: Vec<String>,
}

/// The demo network running: its broker, a client per node, what they have seen.
struct Demo {
    dir: tempfile::TempDir,
    /// The broker, or a cluster's replicas (`None` once stopped).
    brokers: Vec<Option<ewx_broker::Broker>>,
    /// Where they listen; clients know all of them.
    addrs: Vec<std::net::SocketAddr>,
    /// The replica stopped midway, in a cluster.
    killed: Option<usize>,
    /// PL's exercise case (its notice's id).
    exercise: Option<MessageId>,
    roster: Roster,
    /// The broker's and every client's clock, simulated so the case scene can pass 72 h.
    clock: ewx_net::Clock,
    clients: BTreeMap<&'static str, Client>,
    board: Board,
    collectors: Vec<tokio::task::JoinHandle<()>>,
    text: String,
    failures: Vec<String>,
}

/// Run the demo, printing progress into the report text.
///
/// # Errors
/// Only if the demo could not even start (no loopback, no temp dir); failed expectations
/// are reported in [`Report::failures`].
pub async fn run(cluster: bool) -> Result<Report> {
    let mut demo = Demo::start(if cluster { 3 } else { 1 }).await?;
    demo.denied_read().await?;
    let ua = demo.client("UA")?;
    let mut receipts = ua
        .receipts()
        .ok_or_else(|| Error::Unexpected("receipts taken".into()))?;
    let consultation = demo.publish_script().await?;
    if cluster {
        demo.kill_leader().await?;
    }
    demo.forgery(&ua).await?;
    demo.wait_for_traffic().await;
    let pushed = receipts_for(&mut receipts, consultation).await;
    let logged = demo.logged_receipts(consultation).await;
    demo.end_collection().await;
    demo.cases().await?;
    demo.stop().await?;
    demo.table();
    demo.receipts(&pushed, logged);
    demo.audit().await?;
    Ok(Report {
        text: demo.text,
        failures: demo.failures,
    })
}

/// Who sent a receipt for the consultation request, as the broker forwards them to UA.
async fn receipts_for(
    receipts: &mut mpsc::Receiver<Receipt>,
    id: Option<MessageId>,
) -> BTreeSet<String> {
    let mut from = BTreeSet::new();
    while let Ok(Some(r)) = tokio::time::timeout(Duration::from_millis(500), receipts.recv()).await
    {
        if Some(r.id) == id {
            from.insert(r.by.to_string());
        }
    }
    from
}

/// Messages a node should have received: the five published, plus the seven
/// guarantors' answers at each core node; JP and KR only the exercise and the snapback.
fn wanted(node: &str) -> usize {
    if BROADER.contains(&node) {
        2
    } else {
        5 + CORE.len() - 1
    }
}

impl Demo {
    async fn start(replicas: usize) -> Result<Self> {
        let dir =
            tempfile::tempdir().map_err(|e| Error::File(format!("cannot make a temp dir: {e}")))?;
        network::write(dir.path())?;
        let clock = ewx_net::Clock::simulated();
        let brokers = start_brokers(dir.path(), replicas, &clock).await?;
        let addrs: Vec<std::net::SocketAddr> = brokers
            .iter()
            .flatten()
            .map(ewx_broker::Broker::local_addr)
            .collect();
        let addr = addrs
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ");
        let roster = ewx_testkit::Network::compact().roster();
        let mut text = String::new();
        let _ = writeln!(
            text,
            "ewx demo: the Kyiv Security Compact exchange on {addr} (DEMO KEYS ONLY)"
        );
        let _ = writeln!(
            text,
            "  roster v{} of {}, council 2 of 3, {} nodes\n",
            roster.version(),
            ewx_testkit::NETWORK,
            roster.body().nodes.len()
        );
        let mut clients = BTreeMap::new();
        for (i, n) in CORE.iter().chain(&BROADER).enumerate() {
            let c = connect(&addrs, i, n, &roster, &clock).await?;
            clients.insert(*n, c);
        }
        let mut demo = Self {
            dir,
            brokers,
            addrs,
            killed: None,
            exercise: None,
            roster,
            clock,
            clients,
            board: Board::default(),
            collectors: Vec::new(),
            text,
            failures: Vec::new(),
        };
        demo.subscribe_everyone().await?;
        Ok(demo)
    }

    fn expect(&mut self, ok: bool, what: String) {
        if !ok {
            self.failures.push(what);
        }
    }

    fn client(&self, n: &str) -> Result<Client> {
        self.clients
            .get(n)
            .cloned()
            .ok_or_else(|| Error::Unexpected(format!("no client {n}")))
    }

    /// Every node subscribes to everything it may read, from now on.
    async fn subscribe_everyone(&mut self) -> Result<()> {
        for (name, c) in &self.clients {
            let opts = SubscriptionOptions {
                from: StartAt::Latest,
                ..Default::default()
            };
            let sub = c
                .subscribe_with("demo", TopicPattern::new(">")?, opts)
                .await?;
            let task = self.board.clone().collect(name.to_string(), c.clone(), sub);
            self.collectors.push(tokio::spawn(task));
        }
        Ok(())
    }

    /// JP tries to read early-warning traffic: refused by the broker.
    async fn denied_read(&mut self) -> Result<()> {
        let denied = self
            .client("JP")?
            .subscribe(
                "ew",
                TopicPattern::new("ew.>")?,
                StartAt::Latest,
                ExerciseFilter::All,
            )
            .await;
        let jp_denied = matches!(
            denied,
            Err(ewx_client::Error::Rejected {
                reason: RejectReason::NotPermitted,
                ..
            })
        );
        self.expect(jp_denied, "JP's subscription to ew.> is refused".into());
        self.board.with(|all| {
            all.entry("JP".into())
                .or_default()
                .denied
                .push("ew.>".into())
        });
        let _ = writeln!(
            self.text,
            "  JP  subscribe ew.>           -> {}",
            if jp_denied {
                "DENIED (no grant for military early warning)"
            } else {
                "NOT DENIED"
            }
        );
        Ok(())
    }

    /// Publish the script; returns the consultation request's id.
    async fn publish_script(&mut self) -> Result<Option<MessageId>> {
        self.board.flash_sent_now();
        let mut consultation = None;
        for (who, d) in drafts::script()? {
            let (topic, prec, labels, kind) = (
                d.topic.clone(),
                d.precedence,
                d.labels.clone(),
                d.payload.kind(),
            );
            let flags = match &d.payload {
                ewx_proto::Payload::ExerciseNotice(n) => {
                    ewx_proto::exercise::flags(n, self.clock.now_ms())
                }
                _ => Vec::new(),
            };
            let ack = self.client(who)?.publish(d).await?;
            if kind == Kind::ConsultationRequest {
                consultation = Some(ack.id);
            }
            if kind == Kind::ExerciseNotice {
                self.exercise = Some(ack.id);
            }
            let _ = writeln!(
                self.text,
                "  {who:<3} publish {:<22} {:<9} {:<28} -> log #{}",
                topic.as_str(),
                prec.as_str(),
                labels.to_string(),
                ack.log_index
            );
            for f in &flags {
                let _ = writeln!(self.text, "      FLAG {f}");
            }
            if kind == Kind::ExerciseNotice {
                let late = flags
                    .iter()
                    .any(|f| matches!(f, ewx_proto::exercise::Flag::Late { .. }));
                self.expect(
                    late && flags.len() == 1,
                    format!("the exercise notice has one flag, LATE (got {flags:?})"),
                );
            }
        }
        Ok(consultation)
    }

    /// A forgery: UA's name, somebody else's signature.
    async fn forgery(&mut self, ua: &Client) -> Result<()> {
        let env = ua
            .seal(draft(
                "ew.air.missile",
                Level::Amber,
                "CORE",
                Precedence::Flash,
                bulletin("FAKE: all clear", "forged"),
            )?)
            .await?;
        let forged = env.with_signature(ewx_proto::keys::Signature([0x42; 64]));
        let r = ua.publish_envelope(&forged.encode()?).await;
        let rejected = matches!(
            r,
            Err(ewx_client::Error::Rejected {
                reason: RejectReason::BadSignature,
                ..
            })
        );
        self.expect(
            rejected,
            format!("a forged envelope is rejected (got {r:?})"),
        );
        let _ = writeln!(
            self.text,
            "  ??  publish forged \"all clear\"  -> {}",
            if rejected {
                "REJECTED (bad signature)"
            } else {
                "NOT REJECTED"
            }
        );
        Ok(())
    }

    /// Wait (up to 15 s) until every node has what it should receive.
    async fn wait_for_traffic(&self) {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let done = self.board.with(|all| {
                CORE.iter()
                    .chain(&BROADER)
                    .all(|n| all.get(*n).is_some_and(|s| s.kinds.len() >= wanted(n)))
            });
            if done || Instant::now() > deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Let late deliveries show up, then stop counting what each node receives.
    async fn end_collection(&mut self) {
        tokio::time::sleep(Duration::from_millis(300)).await;
        for t in self.collectors.drain(..) {
            t.abort();
        }
    }

    /// Close every client and the broker.
    async fn stop(&mut self) -> Result<()> {
        for c in self.clients.values() {
            c.clone().close().await;
        }
        for broker in self.brokers.iter_mut().filter_map(Option::take) {
            broker.shutdown().await?;
        }
        Ok(())
    }

    /// Stop the cluster's leader (as a machine going down would) and say which; the
    /// others elect a new one and the clients of the stopped one reconnect elsewhere.
    async fn kill_leader(&mut self) -> Result<()> {
        let started = Instant::now();
        let lead = loop {
            let views: Vec<_> = self
                .brokers
                .iter()
                .map(|b| b.as_ref().and_then(ewx_broker::Broker::cluster_view))
                .collect();
            if let Some(i) = views
                .iter()
                .position(|v| v.is_some_and(|(me, leader)| leader == Some(me)))
            {
                break i;
            }
            if started.elapsed() > Duration::from_secs(10) {
                return Err(Error::Unexpected("the cluster elected no leader".into()));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        if let Some(b) = self.brokers[lead].take() {
            b.shutdown().await?;
        }
        self.killed = Some(lead);
        let _ = writeln!(
            self.text,
            "\n  cluster: the leader, replica {} ({}), stopped midway; the other two go on\n",
            lead + 1,
            ewx_testkit::REPLICAS[lead]
        );
        Ok(())
    }
}

/// Replica `i`'s data directory under the demo's temp dir (`data` for the one broker).
fn data_dir(i: usize) -> String {
    if i == 0 {
        "data".to_string()
    } else {
        format!("data-{}", i + 1)
    }
}

/// Start one broker, or a cluster of `replicas` sharing the simulated `clock`.
async fn start_brokers(
    dir: &std::path::Path,
    replicas: usize,
    clock: &ewx_net::Clock,
) -> Result<Vec<Option<ewx_broker::Broker>>> {
    let listens = network::loopback_listens(replicas)?;
    let cluster = network::cluster_section(&listens);
    let mut brokers = Vec::new();
    for (i, listen) in listens.iter().enumerate() {
        let data = data_dir(i);
        let mut config = ewx_broker::Config::from_toml(
            &format!(
                "listen = '{listen}'\ndata_dir = '{data}'\nkey = 'keys/{}.key'\nroster = 'roster.cbor'\n\
                 [checkpoint]\nevery_entries = 50\ninterval_ms = 500\n{cluster}",
                ewx_testkit::REPLICAS[i]
            ),
            dir,
        )?;
        config.clock = clock.clone();
        brokers.push(Some(ewx_broker::Broker::start(config).await?));
    }
    Ok(brokers)
}

/// Connect node `n` (the `i`-th client) to the broker, or to any replica starting with
/// replica `i` mod their number, so clients are spread over them.
async fn connect(
    addrs: &[std::net::SocketAddr],
    i: usize,
    n: &str,
    roster: &Roster,
    clock: &ewx_net::Clock,
) -> Result<Client> {
    let mut order = addrs.to_vec();
    let len = order.len();
    order.rotate_left(i % len.max(1));
    Ok(Client::connect_any(&order, ewx_testkit::keys(n), roster.clone(), clock.clone()).await?)
}
