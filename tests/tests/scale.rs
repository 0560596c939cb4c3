//! Scale on one machine: 1 000 subscriber connections and 50 publishers against a real
//! `ewx-broker` process on loopback. Every delivery must arrive (each subscriber gets
//! every bulletin, once); the broker's memory per connection and the publish→deliver
//! latency are reported. Subscribers take deliveries sealed (not decrypted), so the test
//! machine's two cores measure the broker rather than 1 000 decryptions per bulletin.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ewx_client::{Client, SubscriptionOptions};
use ewx_proto::frame::StartAt;
use ewx_proto::{Level, MessageId, Precedence};
use ewx_tests::*;

const SUBSCRIBERS: usize = 1000;
const PUBLISHERS: usize = 50;
const READERS: [&str; 4] = ["US", "XX", "PL", "UA"];

fn percentile(sorted: &[u64], q: f64) -> f64 {
    let i = ((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i] as f64 / 1000.0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_subscribers_and_fifty_publishers_get_everything() {
    let per_publisher = if soak() { 20 } else { 4 };
    let expected = PUBLISHERS * per_publisher;
    let net = TestNet::new();
    let broker = BrokerProcess::start(
        net.dir.path(),
        "127.0.0.1:0".parse().unwrap(),
        "[limits]\nmax_connections = 2000\nmax_connections_per_node = 1000\n",
    );
    let addr = broker.addr;
    let (rss_empty, _) = rss_kb(broker.pid());
    let started = Instant::now();

    // 1 000 subscriber connections, connected 50 at a time
    let sent_at: Arc<Mutex<HashMap<MessageId, Instant>>> = Arc::default();
    let mut subscribers = Vec::with_capacity(SUBSCRIBERS);
    for batch in (0..SUBSCRIBERS).collect::<Vec<_>>().chunks(50) {
        let mut connecting = tokio::task::JoinSet::new();
        for &i in batch {
            let roster = net.roster.clone();
            connecting.spawn(async move {
                let c = Client::connect(addr, keys(READERS[i % READERS.len()]), roster)
                    .await
                    .unwrap();
                let opts = SubscriptionOptions {
                    from: StartAt::Latest,
                    auto_receipt: false,
                    sealed: true,
                    ..Default::default()
                };
                let sub = c
                    .subscribe_with(&format!("scale-{i}"), pat("ew.scale"), opts)
                    .await
                    .unwrap();
                (c, sub)
            });
        }
        while let Some(r) = connecting.join_next().await {
            subscribers.push(r.unwrap());
        }
    }
    let connect_time = started.elapsed();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (rss_idle, _) = rss_kb(broker.pid());

    let mut receiving = tokio::task::JoinSet::new();
    for (c, mut sub) in subscribers {
        let sent_at = sent_at.clone();
        receiving.spawn(async move {
            let mut ids = HashSet::new();
            let mut latencies = Vec::with_capacity(expected);
            while ids.len() < expected {
                let d = tokio::time::timeout(WAIT, sub.next())
                    .await
                    .expect("delivery in time")
                    .expect("subscription open")
                    .unwrap();
                let now = Instant::now();
                let id = d.envelope.header().id;
                assert!(ids.insert(id), "delivered twice");
                if let Some(t) = sent_at.lock().unwrap().get(&id) {
                    latencies.push(now.duration_since(*t).as_micros() as u64);
                }
            }
            drop(c);
            latencies
        });
    }

    // 50 publisher connections, each sending its bulletins one after another
    let publish_started = Instant::now();
    let mut publishing = tokio::task::JoinSet::new();
    for p in 0..PUBLISHERS {
        let (roster, sent_at) = (net.roster.clone(), sent_at.clone());
        publishing.spawn(async move {
            let node = ["UA", "PL"][p % 2];
            let c = Client::connect(addr, keys(node), roster).await.unwrap();
            for i in 0..per_publisher {
                let prec = if i % 4 == 0 {
                    Precedence::Flash
                } else {
                    Precedence::Routine
                };
                // 25 connections per node: a seq taken in the same microsecond by
                // another one is refused as a replay, and sealed again
                loop {
                    let env = c
                        .seal(bulletin("ew.scale", Level::Amber, "CORE", prec, "scale"))
                        .await
                        .unwrap();
                    sent_at
                        .lock()
                        .unwrap()
                        .insert(env.header().id, Instant::now());
                    match c.publish_envelope(&env.encode().unwrap()).await {
                        Ok(_) => break,
                        Err(ewx_client::Error::Rejected {
                            reason: ewx_proto::frame::RejectReason::Replay,
                            ..
                        }) => {}
                        Err(e) => panic!("publish: {e}"),
                    }
                }
            }
            c.close().await;
        });
    }
    while let Some(r) = publishing.join_next().await {
        r.unwrap();
    }
    let mut latencies = Vec::with_capacity(SUBSCRIBERS * expected);
    while let Some(r) = receiving.join_next().await {
        latencies.extend(r.unwrap());
    }
    let delivery_time = publish_started.elapsed();
    latencies.sort_unstable();
    assert_eq!(
        latencies.len(),
        SUBSCRIBERS * expected,
        "every delivery timed"
    );
    let (_, rss_peak) = rss_kb(broker.pid());
    let per_conn_kb = rss_idle.saturating_sub(rss_empty) as f64 / SUBSCRIBERS as f64;
    report(
        "scale",
        &format!(
            "scale: {SUBSCRIBERS} subscriber + {PUBLISHERS} publisher connections (connected in {:.1} s); \
             {expected} bulletins -> {} deliveries, all arrived once, in {:.1} s; \
             publish->deliver p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms; broker RSS {} MiB empty, \
             {} MiB with {SUBSCRIBERS} idle connections ({per_conn_kb:.0} KiB each), peak {} MiB",
            connect_time.as_secs_f64(),
            latencies.len(),
            delivery_time.as_secs_f64(),
            percentile(&latencies, 0.5),
            percentile(&latencies, 0.99),
            percentile(&latencies, 1.0),
            rss_empty / 1024,
            rss_idle / 1024,
            rss_peak / 1024,
        ),
    );
}
