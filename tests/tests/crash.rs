//! Crash durability: a real `ewx-broker` process is killed with SIGKILL at random moments
//! while publishers and subscribers work, and restarted on the same data directory and
//! port. Every acknowledged bulletin must be in the store exactly once, in publish order,
//! subscribers must resume without gaps, a pre-crash envelope sent again must still be
//! refused, and the audit log must verify. 5 kills here, 50 with `EWX_SOAK=1`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ewx_client::{Client, Error as ClientError};
use ewx_proto::frame::RejectReason;
use ewx_proto::{Level, MessageId, Precedence};
use ewx_tests::*;
use rand::{Rng, SeedableRng};

const CHECKPOINTS: &str = "[checkpoint]\nevery_entries = 50\ninterval_ms = 200\n";
/// (publisher node, topic): one sequential publisher each.
const PUBLISHERS: [(&str, &str); 4] = [
    ("UA", "ew.air"),
    ("UA", "ew.land"),
    ("PL", "ew.sea"),
    ("PL", "ew.cyber"),
];

#[derive(Debug, Clone)]
struct Acked {
    publisher: usize,
    log_index: u64,
    id: MessageId,
    bytes: Vec<u8>,
}

/// Publish one sealed envelope until the broker answers: an ack, or a refusal because a
/// copy sent before a crash was stored (then its ack was lost: "in doubt", not acked).
async fn publish_until_answered(
    c: &Client,
    bytes: &[u8],
    stop: &AtomicBool,
) -> Option<Result<u64, RejectReason>> {
    loop {
        match c.publish_envelope(bytes).await {
            Ok(ack) => return Some(Ok(ack.log_index)),
            Err(ClientError::Rejected { reason, .. }) => return Some(Err(reason)),
            Err(_) if stop.load(Ordering::Relaxed) => return None,
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_at_random_moments_loses_nothing_acknowledged() {
    let kills = if soak() { 50 } else { 5 };
    let seed: u64 = std::env::var("EWX_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64)
        });
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let net = TestNet::new();
    let mut broker =
        BrokerProcess::start(net.dir.path(), "127.0.0.1:0".parse().unwrap(), CHECKPOINTS);
    let addr: SocketAddr = broker.addr;
    let started = Instant::now();

    // subscribers: every ew.* bulletin, resumed by the client after each crash
    let mut subscribers = Vec::new();
    for name in ["US", "XX"] {
        let c = Client::connect(addr, keys(name), net.roster.clone())
            .await
            .unwrap();
        let mut sub = desk(&c).await;
        let seen = Arc::new(Mutex::new(Vec::<u64>::new()));
        let s = seen.clone();
        let task = tokio::spawn(async move {
            while let Some(d) = sub.next().await {
                s.lock().unwrap().push(d.unwrap().log_index);
            }
            drop(c);
        });
        subscribers.push((name, seen, task));
    }

    // publishers: sequential per topic, so acked log indices must rise per publisher
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(Mutex::new(Vec::<Acked>::new()));
    let in_doubt = Arc::new(Mutex::new(0u64));
    let mut publishers = tokio::task::JoinSet::new();
    for (p, (node, topic)) in PUBLISHERS.into_iter().enumerate() {
        let c = Client::connect(addr, keys(node), net.roster.clone())
            .await
            .unwrap();
        let (stop, acked, in_doubt) = (stop.clone(), acked.clone(), in_doubt.clone());
        publishers.spawn(async move {
            for i in 0u64.. {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let d = bulletin(
                    topic,
                    Level::Amber,
                    "CORE",
                    Precedence::Routine,
                    &format!("{p}-{i}"),
                );
                let env = c.seal(d).await.unwrap();
                let bytes = env.encode().unwrap();
                match publish_until_answered(&c, &bytes, &stop).await {
                    Some(Ok(log_index)) => acked.lock().unwrap().push(Acked {
                        publisher: p,
                        log_index,
                        id: env.header().id,
                        bytes,
                    }),
                    Some(Err(RejectReason::Replay)) => *in_doubt.lock().unwrap() += 1,
                    Some(Err(other)) => panic!("publisher {p}: unexpected refusal {other:?}"),
                    None => break,
                }
            }
            c.close().await;
        });
    }

    // kill -9 at random moments; restart on the same directory and port
    let mut replays_answered = 0;
    for k in 0..kills {
        tokio::time::sleep(Duration::from_millis(rng.gen_range(150..900))).await;
        let before: Vec<Acked> = acked.lock().unwrap().clone();
        broker.kill_9();
        tokio::time::sleep(Duration::from_millis(rng.gen_range(0..200))).await;
        broker = BrokerProcess::start(net.dir.path(), addr, CHECKPOINTS);
        // an envelope acked before the crash, sent again, gets its original index
        if let Some(old) = before.get(rng.gen_range(0..before.len().max(1))) {
            let node = PUBLISHERS[old.publisher].0;
            let c = Client::connect(addr, keys(node), net.roster.clone())
                .await
                .unwrap();
            let never = AtomicBool::new(false);
            match publish_until_answered(&c, &old.bytes, &never).await {
                Some(Ok(index)) if index == old.log_index => replays_answered += 1,
                other => panic!("kill {k}: pre-crash envelope sent again was {other:?}"),
            }
            c.close().await;
        }
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    while publishers.join_next().await.is_some() {}
    let acked = acked.lock().unwrap().clone();
    assert!(
        acked.len() > kills,
        "too few acks ({}) to prove anything",
        acked.len()
    );

    // acked log indices rise per publisher (publish order kept per topic)
    for p in 0..PUBLISHERS.len() {
        let mine: Vec<u64> = acked
            .iter()
            .filter(|a| a.publisher == p)
            .map(|a| a.log_index)
            .collect();
        assert!(
            mine.windows(2).all(|w| w[0] < w[1]),
            "publisher {p} out of order: {mine:?}"
        );
    }

    // subscribers resume without gaps: every acked index arrives, none twice
    let want: BTreeSet<u64> = acked.iter().map(|a| a.log_index).collect();
    for (name, seen, _) in &subscribers {
        delivered_once(name, seen, &want).await;
    }
    for (_, _, task) in subscribers {
        task.abort();
    }

    // one last crash, then the store itself: every acked message exactly once, chain verifies
    broker.kill_9();
    let store = ewx_broker::log::Store::open_for_audit(&net.data_dir()).unwrap();
    let recovered = holds_each_once(&store, acked.iter().map(|a| (a.id, a.log_index)), "store");
    drop(store);
    let summary = verify_copy(&net.data_dir(), &net.roster, 0)
        .await
        .unwrap_or_else(|e| panic!("audit log does not verify: {e:?}"));
    report(
        "crash",
        &format!(
            "crash durability: {kills} kill -9s in {:.1} s (seed {seed}): {} acked, {recovered} recovered, \
             lost 0, {} in doubt (stored, ack lost), {replays_answered} pre-crash envelopes sent again got their original index, \
             audit chain of {} entries verifies",
            started.elapsed().as_secs_f64(),
            acked.len(),
            *in_doubt.lock().unwrap(),
            summary.entries,
        ),
    );
}

/// After a crash the restarted broker answers its predecessor's connections with a QUIC
/// stateless reset, so an idle subscriber reconnects and resumes at once — long before
/// the 30 s idle timeout that would otherwise be its only sign of the crash.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_broker_resets_old_connections_at_once() {
    let net = TestNet::new();
    let broker = BrokerProcess::start(net.dir.path(), "127.0.0.1:0".parse().unwrap(), "");
    let addr = broker.addr;
    let us = Client::connect(addr, keys("US"), net.roster.clone())
        .await
        .unwrap();
    let mut sub = desk(&us).await;
    broker.kill_9();
    let _broker = BrokerProcess::start(net.dir.path(), addr, "");
    let restarted = Instant::now();
    let ua = Client::connect(addr, keys("UA"), net.roster.clone())
        .await
        .unwrap();
    ua.publish(bulletin(
        "ew.air",
        Level::Amber,
        "CORE",
        Precedence::Flash,
        "after the crash",
    ))
    .await
    .unwrap();
    let d = tokio::time::timeout(Duration::from_secs(10), sub.next())
        .await
        .expect("the idle subscriber did not learn of the restart within 10 s")
        .expect("subscription open")
        .unwrap();
    assert_eq!(headline(&d.payload), "after the crash");
    eprintln!(
        "idle subscriber resumed {:.0} ms after the restart",
        restarted.elapsed().as_secs_f64() * 1000.0
    );
}
