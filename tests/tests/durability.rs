//! Durability, resume and delivery order end to end: restarts lose nothing acknowledged,
//! replays stay refused, subscribers resume exactly after their last ack, FLASH overtakes
//! a ROUTINE backlog, and a slow subscriber slows nobody else.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use ewx_client::{Client, Error};
use ewx_proto::audit::{Chain, Event};
use ewx_proto::checkpoint::SignedCheckpoint;
use ewx_proto::frame::{ExerciseFilter, RejectReason, StartAt};
use ewx_proto::{Level, Precedence};
use ewx_tests::*;

const T: Duration = Duration::from_secs(60);

/// Publish `n` ROUTINE bulletins from `c` with `parallel` requests in flight.
async fn flood(c: Arc<Client>, topic: &str, n: usize, parallel: usize) -> Vec<u64> {
    let mut tasks = tokio::task::JoinSet::new();
    let chunk = n.div_ceil(parallel);
    for p in 0..parallel {
        let (c, topic) = (c.clone(), topic.to_owned());
        tasks.spawn(async move {
            let mut idx = Vec::new();
            for i in p * chunk..((p + 1) * chunk).min(n) {
                let d = bulletin(
                    &topic,
                    Level::Amber,
                    "CORE",
                    Precedence::Routine,
                    &format!("r{i}"),
                );
                idx.push(c.publish(d).await.unwrap().log_index);
            }
            idx
        });
    }
    let mut all = Vec::new();
    while let Some(r) = tasks.join_next().await {
        all.extend(r.unwrap());
    }
    all.sort();
    all
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_keeps_acked_messages_cursors_and_replay_protection() {
    let net = TestNet::new();
    let broker = net.start_broker().await;
    let ua = net.client(&broker, "UA").await;
    let mut envs = Vec::new();
    for i in 0..5 {
        let env = ua
            .seal(bulletin(
                "ew.air",
                Level::Amber,
                "CORE",
                Precedence::Routine,
                &format!("m{i}"),
            ))
            .await
            .unwrap();
        assert_eq!(
            ua.publish_envelope(&env.encode().unwrap())
                .await
                .unwrap()
                .log_index,
            i
        );
        envs.push(env);
    }
    let pl = net.client(&broker, "PL").await;
    let mut sub = subscribe(&pl, "desk", "ew.>", StartAt::Earliest).await;
    for i in 0..3 {
        let d = next(&mut sub).await;
        assert_eq!(d.log_index, i);
        sub.ack_delivery(&d).await.unwrap();
    }
    drop(sub);
    pl.close().await;
    ua.close().await;
    broker.shutdown().await.unwrap();

    let broker = net.start_broker().await;
    let ua = net.client(&broker, "UA").await;
    // a pre-restart envelope sent again: its original index, not a second copy
    let stored = broker.store().message_count();
    match ua.publish_envelope(&envs[1].encode().unwrap()).await {
        Ok(ack) => assert_eq!(ack.log_index, 1, "the original index"),
        other => panic!("expected the original index, got {other:?}"),
    }
    assert_eq!(broker.store().message_count(), stored);
    assert_eq!(
        ua.publish(bulletin(
            "ew.air",
            Level::Amber,
            "CORE",
            Precedence::Routine,
            "m5"
        ))
        .await
        .unwrap()
        .log_index,
        5
    );
    let pl = net.client(&broker, "PL").await;
    let mut sub = subscribe(&pl, "desk", "ew.>", StartAt::Resume).await;
    let got: Vec<String> = vec![
        headline(&next(&mut sub).await.payload),
        headline(&next(&mut sub).await.payload),
        headline(&next(&mut sub).await.payload),
    ];
    assert_eq!(got, ["m3", "m4", "m5"]);
    broker.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_subscriber_catches_up_without_gaps() {
    let net = TestNet::new();
    let broker = net.start_broker().await;
    let ua = Arc::new(net.client(&broker, "UA").await);
    {
        let pl = net.client(&broker, "PL").await;
        let mut sub = subscribe(&pl, "desk", "ew.>", StartAt::Latest).await;
        ua.publish(bulletin(
            "ew.air",
            Level::Amber,
            "CORE",
            Precedence::Routine,
            "first",
        ))
        .await
        .unwrap();
        let d = next(&mut sub).await;
        sub.ack_delivery(&d).await.unwrap();
        drop(sub);
        pl.close().await;
    }
    let published = flood(ua.clone(), "ew.air", 300, 8).await;
    let pl = net.client(&broker, "PL").await;
    let mut sub = subscribe(&pl, "desk", "ew.>", StartAt::Resume).await;
    let mut got = Vec::new();
    for _ in 0..300 {
        got.push(next(&mut sub).await.log_index);
    }
    assert_eq!(got, published, "every message, in log order, none twice");
    broker.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flash_overtakes_a_routine_backlog_of_10000() {
    let net = TestNet::new();
    let broker = net.start_broker().await;
    let ua = Arc::new(net.client(&broker, "UA").await);
    flood(ua.clone(), "ew.air.drone", 10_000, 32).await;
    let pl = net.client(&broker, "PL").await;
    let mut sub = subscribe(&pl, "desk", "ew.>", StartAt::Earliest).await;
    // the subscriber starts draining the backlog; then the warning comes
    for _ in 0..10 {
        next(&mut sub).await;
    }
    let flash_index = ua
        .publish(bulletin(
            "ew.air.missile",
            Level::Amber,
            "CORE",
            Precedence::Flash,
            "FLASH",
        ))
        .await
        .unwrap()
        .log_index;
    let mut position = None;
    for seen in 10..=10_001 {
        let d = next(&mut sub).await;
        if d.log_index == flash_index {
            position = Some(seen);
            break;
        }
    }
    let position = position.expect("FLASH delivered");
    assert!(
        position < 5_000,
        "FLASH arrived after {position} ROUTINE deliveries"
    );
    broker.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_subscriber_does_not_slow_a_fast_one() {
    let net = TestNet::new();
    let broker = net.start_broker().await;
    let ua = Arc::new(net.client(&broker, "UA").await);
    let slow = net.client(&broker, "PL").await;
    let fast = net.client(&broker, "US").await;
    let mut slow_sub = subscribe(&slow, "slow", "ew.>", StartAt::Latest).await;
    let mut fast_sub = subscribe(&fast, "fast", "ew.>", StartAt::Latest).await;
    const N: usize = 6000;
    let publisher = tokio::spawn(flood(ua.clone(), "ew.air", N, 16));
    // the fast one reads everything while the slow one reads nothing
    let started = Instant::now();
    let mut fast_got = Vec::with_capacity(N);
    for _ in 0..N {
        fast_got.push(next(&mut fast_sub).await.log_index);
    }
    let published = publisher.await.unwrap();
    assert_eq!(fast_got, published);
    let fast_time = started.elapsed();
    // the slow one then gets every message too, in order (from the store where it lagged)
    let mut slow_got = Vec::with_capacity(N);
    for _ in 0..N {
        slow_got.push(next(&mut slow_sub).await.log_index);
    }
    assert_eq!(slow_got, published);
    eprintln!("fast subscriber took {fast_time:?} for {N} messages");
    broker.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_store_holds_a_verifiable_audit_chain() {
    let net = TestNet::new();
    let broker = net.start_broker().await;
    let ua = net.client(&broker, "UA").await;
    let pl = net.client(&broker, "PL").await;
    let jp = net.client(&broker, "JP").await;
    let mut sub = subscribe(&pl, "desk", "ew.>", StartAt::Latest).await;
    let mut d = bulletin("ew.air", Level::Amber, "CORE", Precedence::Flash, "warn");
    d.receipt = true;
    let mut receipts = ua.receipts().unwrap();
    ua.publish(d).await.unwrap();
    let got = next(&mut sub).await;
    sub.ack_delivery(&got).await.unwrap();
    pl.send_receipt(&got.envelope).await.unwrap();
    let r = tokio::time::timeout(T, receipts.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(r.by, id("PL"));
    assert!(
        jp.subscribe("x", pat("ew.>"), StartAt::Latest, ExerciseFilter::All)
            .await
            .is_err()
    );
    assert!(ua.publish_envelope(b"junk").await.is_err());
    drop(sub);
    pl.close().await;
    jp.close().await;
    ua.close().await;
    broker.shutdown().await.unwrap();

    let (store, _) = ewx_broker::log::Store::open(&net.data_dir(), 60_000_000).unwrap();
    let entries = store.audit_range(0, u64::MAX).unwrap();
    let mut chain = Chain::new();
    let mut kinds = Vec::new();
    for e in &entries {
        let entry = chain.push(e).unwrap();
        kinds.push(match entry.event {
            Event::Published { .. } => "published",
            Event::Delivered { .. } => "delivered",
            Event::Receipt(_) => "receipt",
            Event::Rejected { .. } => "rejected",
            Event::Subscribed { .. } => "subscribed",
            Event::Denied { .. } => "denied",
            Event::RosterChanged { .. } => "roster",
            Event::CaseDeadline { .. } => "case-deadline",
        });
    }
    for k in [
        "published",
        "delivered",
        "receipt",
        "rejected",
        "subscribed",
        "denied",
    ] {
        assert!(kinds.contains(&k), "no {k} entry in {kinds:?}");
    }
    let cps = store.checkpoints().unwrap();
    let last = SignedCheckpoint::decode(cps.last().expect("a checkpoint at shutdown")).unwrap();
    let cp = last.verify(&keys("BROKER").sign_public()).unwrap();
    assert_eq!(
        cp.size,
        chain.len(),
        "the final checkpoint covers the whole log"
    );
    assert_eq!(cp.root, chain.tree().root());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_or_newer_store_is_refused() {
    let net = TestNet::new();
    let broker = net.start_broker().await;
    let ua = net.client(&broker, "UA").await;
    ua.publish(bulletin(
        "ew.air",
        Level::Amber,
        "CORE",
        Precedence::Flash,
        "x",
    ))
    .await
    .unwrap();
    ua.close().await;
    broker.shutdown().await.unwrap();
    {
        let db = sled::open(net.data_dir()).unwrap();
        db.open_tree("meta")
            .unwrap()
            .insert("schema", &99u32.to_be_bytes())
            .unwrap();
        db.flush().unwrap();
    }
    let err = ewx_broker::Broker::start(net.config())
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("schema version 99"), "{err}");
    {
        let db = sled::open(net.data_dir()).unwrap();
        db.open_tree("meta")
            .unwrap()
            .insert("schema", &1u32.to_be_bytes())
            .unwrap();
        let audit = db.open_tree("audit").unwrap();
        let (k, mut v) = audit
            .first()
            .unwrap()
            .map(|(k, v)| (k, v.to_vec()))
            .unwrap();
        let at = v.len() / 2;
        v[at] ^= 0x20;
        audit.insert(k, v).unwrap();
        db.flush().unwrap();
    }
    let err = ewx_broker::Broker::start(net.config())
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("unusable") && err.contains("audit entry"),
        "{err}"
    );
}

/// A store of schema 2 (envelopes in a sled tree) is upgraded when the broker starts:
/// every envelope moves to the segment files, byte for byte, the old tree is dropped, and
/// the log still verifies offline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schema_2_store_is_upgraded_with_every_envelope() {
    let net = TestNet::new();
    let broker = net.start_broker().await;
    let ua = net.client(&broker, "UA").await;
    let mut envelopes = Vec::new();
    for i in 0..30 {
        let d = bulletin(
            "ew.air",
            Level::Amber,
            "CORE",
            Precedence::Routine,
            &format!("m{i}"),
        );
        let ack = ua.publish(d).await.unwrap();
        let bytes = broker.store().message(ack.log_index).unwrap().unwrap();
        envelopes.push((ack.log_index, bytes.to_vec()));
    }
    ua.close().await;
    broker.shutdown().await.unwrap();
    // rewrite it as schema 2 stored it
    {
        let db = sled::open(net.data_dir()).unwrap();
        let log = db.open_tree("log").unwrap();
        for (i, bytes) in &envelopes {
            log.insert(i.to_be_bytes(), bytes.as_slice()).unwrap();
        }
        db.drop_tree("places").unwrap();
        db.open_tree("meta")
            .unwrap()
            .insert("schema", &2u32.to_be_bytes())
            .unwrap();
        db.flush().unwrap();
    }
    // (30 publishes one at a time: small commits, all kept in sled — no segment files)
    assert!(!net.data_dir().join("segments").exists());

    let broker = ewx_broker::Broker::start(net.config()).await.unwrap();
    for (i, bytes) in &envelopes {
        let moved = broker.store().message(*i).unwrap();
        assert_eq!(moved.as_deref(), Some(bytes.as_slice()), "envelope {i}");
    }
    broker.shutdown().await.unwrap();
    {
        let db = sled::open(net.data_dir()).unwrap();
        assert!(
            !db.tree_names().iter().any(|n| n.as_ref() == b"log"),
            "old tree dropped"
        );
        let schema = db
            .open_tree("meta")
            .unwrap()
            .get("schema")
            .unwrap()
            .unwrap();
        assert_eq!(schema.as_ref(), ewx_broker::log::SCHEMA.to_be_bytes());
    }
    let store = ewx_cli::offline::StoreCopy::open(&net.data_dir()).unwrap();
    let summary = ewx_client::audit::verify(&store, net.roster.clone(), 0, &mut |_, _| {})
        .await
        .unwrap();
    assert_eq!(summary.envelopes, 30);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_drops_old_envelopes_but_keeps_the_audit_log() {
    let net = TestNet::new();
    let mut config = net.config();
    config.retention.max_messages = Some(5);
    let broker = ewx_broker::Broker::start(config).await.unwrap();
    let ua = net.client(&broker, "UA").await;
    for i in 0..20 {
        ua.publish(bulletin(
            "ew.air",
            Level::Amber,
            "CORE",
            Precedence::Routine,
            &format!("m{i}"),
        ))
        .await
        .unwrap();
    }
    // retention runs on the checkpoint tick (200 ms in tests)
    let deadline = Instant::now() + T;
    while broker.store().message(14).unwrap().is_some() {
        assert!(Instant::now() < deadline, "retention never ran");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(broker.store().message(15).unwrap().is_some());
    let pl = net.client(&broker, "PL").await;
    let mut sub = subscribe(&pl, "s", "ew.>", StartAt::Earliest).await;
    assert_eq!(
        headline(&next(&mut sub).await.payload),
        "m15",
        "earliest retained message first"
    );
    let published = audit_events(broker.store())
        .iter()
        .filter(|e| matches!(e, Event::Published { .. }))
        .count();
    assert_eq!(published, 20, "audit entries are never pruned");
    broker.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clock_skew_and_unreadable_recipients_are_rejected() {
    let net = TestNet::new();
    let broker = net.start_broker().await;
    let ua = net.client(&broker, "UA").await;
    let env = ua
        .seal(bulletin(
            "ew.air",
            Level::Amber,
            "CORE",
            Precedence::Flash,
            "x",
        ))
        .await
        .unwrap();
    let skewed = resigned(&env, "UA", |h| h.created_ms -= 3_600_000);
    let reason = |r: Result<ewx_client::PublishAck, Error>| match r {
        Err(Error::Rejected { reason, .. }) => reason,
        other => panic!("expected a rejection, got {other:?}"),
    };
    assert_eq!(
        reason(ua.publish_envelope(&skewed).await),
        RejectReason::ClockSkew
    );
    // UA lists JP (sanctions only) as a recipient of a CORE message
    let leaky = resigned(&env, "UA", |h| {
        let w = h.recipients[0].clone();
        h.recipients.push(ewx_proto::envelope::WrappedKey {
            node: id("JP"),
            key: w.key,
        });
    });
    assert_eq!(
        reason(ua.publish_envelope(&leaky).await),
        RejectReason::RecipientNotPermitted
    );
    broker.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_covers_lanes_that_were_never_acked() {
    let net = TestNet::new();
    let broker = net.start_broker().await;
    let ua = net.client(&broker, "UA").await;
    {
        let pl = net.client(&broker, "PL").await;
        let mut sub = subscribe(&pl, "desk", "ew.>", StartAt::Latest).await;
        ua.publish(bulletin(
            "ew.air",
            Level::Amber,
            "CORE",
            Precedence::Routine,
            "routine",
        ))
        .await
        .unwrap();
        let d = next(&mut sub).await;
        sub.ack_delivery(&d).await.unwrap(); // only the ROUTINE lane was ever acked
        // the same ack again writes nothing new
        sub.ack_delivery(&d).await.unwrap();
        drop(sub);
        pl.close().await;
    }
    // while PL is away: a FLASH warning and an IMMEDIATE one
    ua.publish(bulletin(
        "ew.air",
        Level::Amber,
        "CORE",
        Precedence::Flash,
        "flash",
    ))
    .await
    .unwrap();
    ua.publish(bulletin(
        "ew.air",
        Level::Amber,
        "CORE",
        Precedence::Immediate,
        "immediate",
    ))
    .await
    .unwrap();
    let pl = net.client(&broker, "PL").await;
    let mut sub = subscribe(&pl, "desk", "ew.>", StartAt::Resume).await;
    let mut got = vec![
        headline(&next(&mut sub).await.payload),
        headline(&next(&mut sub).await.payload),
    ];
    got.sort();
    assert_eq!(got, ["flash", "immediate"]);
    let delivered = audit_events(broker.store())
        .iter()
        .filter(|e| matches!(e, Event::Delivered { .. }))
        .count();
    assert_eq!(delivered, 1, "a repeated ack adds no audit entry");
    broker.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receipt_is_logged_and_forwarded_once() {
    let net = TestNet::new();
    let broker = net.start_broker().await;
    let ua = net.client(&broker, "UA").await;
    let pl = net.client(&broker, "PL").await;
    let jp = net.client(&broker, "JP").await;
    let mut receipts = ua.receipts().unwrap();
    let mut sub = subscribe(&pl, "desk", "ew.>", StartAt::Latest).await;
    ua.publish(bulletin(
        "ew.air",
        Level::Amber,
        "CORE",
        Precedence::Flash,
        "warn",
    ))
    .await
    .unwrap();
    let d = next(&mut sub).await;
    pl.send_receipt(&d.envelope).await.unwrap();
    pl.send_receipt(&d.envelope).await.unwrap();
    // JP was not a recipient: its receipt is refused
    assert!(matches!(
        jp.send_receipt(&d.envelope).await,
        Err(Error::Rejected { .. })
    ));
    let r = tokio::time::timeout(T, receipts.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!((r.by.clone(), r.id), (id("PL"), d.envelope.header().id));
    assert!(
        tokio::time::timeout(Duration::from_millis(300), receipts.recv())
            .await
            .is_err(),
        "forwarded twice"
    );
    let logged = audit_events(broker.store())
        .iter()
        .filter(|e| matches!(e, Event::Receipt(_)))
        .count();
    assert_eq!(logged, 1);
    broker.shutdown().await.unwrap();
}

/// When run with `EWX_CHILD_BROKER=<dir>`, this test is the broker process of
/// `a_kill_9_loses_no_acknowledged_message`: it prints its address and serves forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn child_broker_process() {
    let Ok(dir) = std::env::var("EWX_CHILD_BROKER") else {
        return;
    };
    let text =
        "listen = '127.0.0.1:0'\ndata_dir = 'data'\nkey = 'broker.key'\nroster = 'roster.cbor'\n";
    let config = ewx_broker::Config::from_toml(text, std::path::Path::new(&dir)).unwrap();
    let broker = ewx_broker::Broker::start(config).await.unwrap();
    println!("CHILD-LISTENING {}", broker.local_addr());
    std::future::pending::<()>().await;
}

fn spawn_child(net: &TestNet) -> (std::process::Child, std::net::SocketAddr) {
    use std::io::BufRead;
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "child_broker_process",
            "--nocapture",
            "--test-threads",
            "1",
        ])
        .env("EWX_CHILD_BROKER", net.dir.path())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let addr = loop {
        let line = lines.next().expect("child broker started").unwrap();
        // libtest may print "test child_broker_process ... " on the same line first
        if let Some((_, a)) = line.split_once("CHILD-LISTENING ") {
            break a.trim().parse().unwrap();
        }
    };
    // keep draining its output so it never blocks on a full pipe
    std::thread::spawn(move || lines.for_each(drop));
    (child, addr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_9_loses_no_acknowledged_message() {
    let net = TestNet::new();
    let (mut child, addr) = spawn_child(&net);
    let ua = Arc::new(
        Client::connect(addr, keys("UA"), net.roster.clone())
            .await
            .unwrap(),
    );
    let acked = Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut tasks = tokio::task::JoinSet::new();
    for p in 0..8 {
        let (ua, acked) = (ua.clone(), acked.clone());
        tasks.spawn(async move {
            for i in 0.. {
                let d = bulletin(
                    "ew.air",
                    Level::Amber,
                    "CORE",
                    Precedence::Routine,
                    &format!("{p}-{i}"),
                );
                match ua.publish(d).await {
                    Ok(a) => acked.lock().unwrap().push((a.log_index, a.id)),
                    Err(_) => return,
                }
            }
        });
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    child.kill().unwrap(); // SIGKILL: no shutdown, no final flush
    child.wait().unwrap();
    while tasks.join_next().await.is_some() {}
    let acked = acked.lock().unwrap().clone();
    assert!(
        acked.len() > 10,
        "only {} acks before the kill",
        acked.len()
    );

    // restart on the same store: everything acknowledged is there, once, and verifies
    let broker = net.start_broker().await;
    for (index, id) in &acked {
        let bytes = broker
            .store()
            .message(*index)
            .unwrap()
            .unwrap_or_else(|| panic!("acked {index} lost"));
        let env = ewx_proto::Envelope::decode(&bytes, usize::MAX).unwrap();
        assert_eq!(&env.header().id, id);
        assert_eq!(broker.store().index_of(id).unwrap(), Some(*index));
    }
    let mut chain = Chain::new();
    for e in broker.store().audit_range(0, u64::MAX).unwrap() {
        chain.push(&e).unwrap();
    }
    let pl = net.client(&broker, "PL").await;
    let mut sub = subscribe(&pl, "desk", "ew.>", StartAt::Earliest).await;
    let mut seen = std::collections::BTreeSet::new();
    let max = acked.iter().map(|a| a.0).max().unwrap();
    while seen.len() as u64 <= max {
        assert!(
            seen.insert(next(&mut sub).await.log_index),
            "duplicate delivery"
        );
    }
    eprintln!(
        "kill -9 after {} acks: all present after restart, chain of {} entries verifies",
        acked.len(),
        chain.len()
    );
    broker.shutdown().await.unwrap();
}
