//! End-to-end: a real broker on 127.0.0.1:0 with a real sled store in a temp dir, real
//! QUIC clients for each node.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use ewx_client::{Client, Error};
use ewx_proto::frame::{ExerciseFilter, RejectReason, StartAt};
use ewx_proto::{Level, Precedence};
use ewx_tests::*;

const T: Duration = Duration::from_secs(20);

fn rejected(r: Result<ewx_client::PublishAck, Error>) -> RejectReason {
    match r {
        Err(Error::Rejected { reason, .. }) => reason,
        other => panic!("expected a rejection, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn labels_decide_who_receives_what() {
    let net = TestNet::new();
    let broker = net.start_broker().await;
    let ua = net.client(&broker, "UA").await;
    let pl = net.client(&broker, "PL").await;
    let jp = net.client(&broker, "JP").await;
    let mut pl_sub = subscribe(&pl, "all", ">", StartAt::Latest).await;
    let mut jp_sub = subscribe(&jp, "all", ">", StartAt::Latest).await;

    let ack = ua
        .publish(bulletin(
            "ew.air.missile",
            Level::Amber,
            "CORE",
            Precedence::Flash,
            "air raid",
        ))
        .await
        .unwrap();
    ua.publish(bulletin(
        "sanctions.snapback",
        Level::Green,
        "SANCTIONS",
        Precedence::Routine,
        "snapback",
    ))
    .await
    .unwrap();
    let mut rel = bulletin(
        "ew.maritime",
        Level::Red,
        "CORE",
        Precedence::Immediate,
        "for UA only",
    );
    rel.labels.rel_to = [id("UA")].into();
    ua.publish(rel).await.unwrap();
    assert_eq!(ack.log_index, 0);

    let mut got = take(&mut pl_sub, 2).await;
    got.sort();
    assert_eq!(got, ["air raid", "snapback"]);
    assert_eq!(take(&mut jp_sub, 1).await, ["snapback"]);
    nothing_more(&mut jp_sub).await;
    nothing_more(&mut pl_sub).await;
    broker.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exercise_filter_and_denied_subscription() {
    let net = TestNet::new();
    let broker = net.start_broker().await;
    let pl = net.client(&broker, "PL").await;
    let us = net.client(&broker, "US").await;
    let jp = net.client(&broker, "JP").await;
    let mut real = us
        .subscribe(
            "real",
            pat("exercise.>"),
            StartAt::Latest,
            ExerciseFilter::RealOnly,
        )
        .await
        .unwrap();
    let mut exer = jp
        .subscribe(
            "ex",
            pat("exercise.>"),
            StartAt::Latest,
            ExerciseFilter::ExerciseOnly,
        )
        .await
        .unwrap();
    let mut d = bulletin(
        "exercise.notice",
        Level::Clear,
        "",
        Precedence::Routine,
        "EXERCISE Anakonda",
    );
    d.labels.exercise = true;
    pl.publish(d).await.unwrap();
    pl.publish(bulletin(
        "exercise.notice",
        Level::Clear,
        "",
        Precedence::Routine,
        "real movement",
    ))
    .await
    .unwrap();
    assert_eq!(take(&mut exer, 1).await, ["EXERCISE Anakonda"]);
    assert_eq!(take(&mut real, 1).await, ["real movement"]);
    nothing_more(&mut exer).await;
    nothing_more(&mut real).await;

    // JP has no grant that can ever match ew.>
    match jp
        .subscribe("ew", pat("ew.>"), StartAt::Latest, ExerciseFilter::All)
        .await
    {
        Err(Error::Rejected {
            reason: RejectReason::NotPermitted,
            ..
        }) => {}
        other => panic!("expected NotPermitted, got {other:?}"),
    }
    broker.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_publishes_are_rejected_and_the_broker_keeps_serving() {
    let net = TestNet::new();
    let broker = net.start_broker().await;
    let ua = net.client(&broker, "UA").await;
    let pl = net.client(&broker, "PL").await;
    let mut pl_sub = subscribe(&pl, "s", "ew.>", StartAt::Latest).await;

    // forged signature
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
    let forged = env
        .clone()
        .with_signature(ewx_proto::keys::Signature([7; 64]));
    assert_eq!(
        rejected(ua.publish_envelope(&forged.encode().unwrap()).await),
        RejectReason::BadSignature
    );
    // wrong sender: PL sends UA's envelope
    assert_eq!(
        rejected(pl.publish_envelope(&env.encode().unwrap()).await),
        RejectReason::WrongSender
    );
    // accepted once; sent again (a retry after a lost ack) it gets its first index, and
    // nothing is stored twice
    let first = ua.publish_envelope(&env.encode().unwrap()).await.unwrap();
    let stored = broker.store().message_count();
    let again = ua.publish_envelope(&env.encode().unwrap()).await.unwrap();
    assert_eq!(again.log_index, first.log_index);
    assert_eq!(broker.store().message_count(), stored);
    // garbage and oversize
    assert_eq!(
        rejected(ua.publish_envelope(b"not cbor at all").await),
        RejectReason::Malformed
    );
    let big = ewx_proto::frame::encode_frame(
        &ewx_proto::frame::Request::Publish {
            envelope: vec![0; 2 << 20],
        },
        4 << 20,
    )
    .unwrap();
    let r = ua.raw_request(&big).await.unwrap();
    assert!(
        matches!(
            r,
            Some(ewx_proto::frame::Response::Rejected {
                reason: RejectReason::TooLarge,
                ..
            })
        ),
        "{r:?}"
    );
    // topic outside grants: JP cannot publish early warnings (sealing refuses; send raw)
    let jp = net.client(&broker, "JP").await;
    let e = jp
        .seal(bulletin("ew.air", Level::Clear, "", Precedence::Flash, "x"))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("no grant"), "{e}");

    // still serving: a good message goes through
    ua.publish(bulletin(
        "ew.air",
        Level::Amber,
        "CORE",
        Precedence::Flash,
        "still here",
    ))
    .await
    .unwrap();
    assert_eq!(take(&mut pl_sub, 2).await, ["x", "still here"]);
    broker.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_on_a_stream_gets_an_error_not_a_crash() {
    let net = TestNet::new();
    let broker = net.start_broker().await;
    let ua = net.client(&broker, "UA").await;
    // a frame whose body is not a request
    let r = raw_request(&ua, &[0, 0, 0, 3, 0xff, 0xff, 0xff]).await;
    assert!(
        matches!(
            r,
            Some(ewx_proto::frame::Response::Rejected {
                reason: RejectReason::Malformed,
                ..
            })
        ),
        "{r:?}"
    );
    // a 4 GiB length prefix
    let r = raw_request(&ua, &[0xff, 0xff, 0xff, 0xff]).await;
    assert!(
        matches!(
            r,
            Some(ewx_proto::frame::Response::Rejected {
                reason: RejectReason::TooLarge,
                ..
            })
        ),
        "{r:?}"
    );
    ua.publish(bulletin(
        "ew.air",
        Level::Amber,
        "CORE",
        Precedence::Flash,
        "ok",
    ))
    .await
    .unwrap();
    broker.shutdown().await.unwrap();
}

async fn raw_request(c: &Client, bytes: &[u8]) -> Option<ewx_proto::frame::Response> {
    c.raw_request(bytes).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_key_is_refused_at_the_handshake() {
    let net = TestNet::new();
    let broker = net.start_broker().await;
    let stranger = ewx_proto::NodeKeys::from_secrets(id("UA"), [42; 32], [43; 32]);
    let r = Client::connect(broker.local_addr(), stranger, net.roster.clone()).await;
    assert!(matches!(r, Err(Error::Connect { .. })), "{r:?}");
    // a revoked key is refused too
    let v2 = sign_roster(&roster_body(2, &["XX"]));
    broker.update_roster(&v2.encode().unwrap()).await.unwrap();
    let r = Client::connect(broker.local_addr(), keys("XX"), net.roster.clone()).await;
    assert!(matches!(r, Err(Error::Connect { .. })), "{r:?}");
    broker.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoked_node_is_disconnected_at_once() {
    let net = TestNet::new();
    let broker = net.start_broker().await;
    let xx = net.client(&broker, "XX").await;
    let ua = net.client(&broker, "UA").await;
    let v2 = sign_roster(&roster_body(2, &["XX"]));
    assert_eq!(
        broker.update_roster(&v2.encode().unwrap()).await.unwrap(),
        2
    );
    let why = tokio::time::timeout(T, xx.closed())
        .await
        .expect("disconnected in time");
    assert!(why.contains("revoked"), "{why}");
    // UA learns the new roster; its next seal no longer includes XX
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(ua.roster().version(), 2);
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
    assert!(env.header().wrapped_for(&id("XX")).is_none());
    // an older or badly signed roster is refused
    let old = sign_roster(&roster_body(1, &[]));
    assert_eq!(
        broker
            .update_roster(&old.encode().unwrap())
            .await
            .unwrap_err()
            .reason,
        RejectReason::BadRoster
    );
    broker.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_past_the_cap_are_refused() {
    let net = TestNet::new();
    let mut config = net.config();
    config.limits.max_connections = 2;
    let broker = ewx_broker::Broker::start(config).await.unwrap();
    let a = net.client(&broker, "UA").await;
    let b = net.client(&broker, "PL").await;
    let third = Client::connect(broker.local_addr(), keys("US"), net.roster.clone()).await;
    assert!(matches!(third, Err(Error::Connect { .. })), "{third:?}");
    // the two admitted keep working, and a slot frees when one leaves
    a.publish(bulletin(
        "ew.air",
        Level::Amber,
        "CORE",
        Precedence::Flash,
        "x",
    ))
    .await
    .unwrap();
    b.close().await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let us = Client::connect(broker.local_addr(), keys("US"), net.roster.clone()).await;
    assert!(us.is_ok(), "{us:?}");
    broker.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_council_signed_roster_can_be_sent_over_the_protocol() {
    let net = TestNet::new();
    let broker = net.start_broker().await;
    let ua = net.client(&broker, "UA").await;
    let xx = net.client(&broker, "XX").await;
    // signed by one council member only: refused
    let mut weak = ewx_proto::SignedRoster::new(&roster_body(2, &["XX"])).unwrap();
    weak.sign(&council_key(0));
    let r = ua
        .request(&ewx_proto::frame::Request::UpdateRoster {
            roster: weak.encode().unwrap(),
        })
        .await;
    assert!(
        matches!(
            r,
            Err(Error::Rejected {
                reason: RejectReason::BadRoster,
                ..
            })
        ),
        "{r:?}"
    );
    assert_eq!(broker.roster().version(), 1);
    // with the threshold: installed, XX is cut off
    let v2 = sign_roster(&roster_body(2, &["XX"]));
    ua.request(&ewx_proto::frame::Request::UpdateRoster {
        roster: v2.encode().unwrap(),
    })
    .await
    .unwrap();
    assert_eq!(broker.roster().version(), 2);
    tokio::time::timeout(T, xx.closed())
        .await
        .expect("XX disconnected");
    broker.shutdown().await.unwrap();
    // the new roster survives a restart even though the file still says version 1
    let broker = net.start_broker().await;
    assert_eq!(broker.roster().version(), 2);
    broker.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_loses_no_acknowledged_publish() {
    let net = TestNet::new();
    let broker = net.start_broker().await;
    let ua = std::sync::Arc::new(net.client(&broker, "UA").await);
    let mut tasks = tokio::task::JoinSet::new();
    for p in 0..8 {
        let ua = ua.clone();
        tasks.spawn(async move {
            let mut acked = Vec::new();
            for i in 0..200 {
                let d = bulletin(
                    "ew.air",
                    Level::Amber,
                    "CORE",
                    Precedence::Routine,
                    &format!("{p}-{i}"),
                );
                match ua.publish(d).await {
                    Ok(a) => acked.push(a.log_index),
                    Err(_) => break, // the broker went away: later publishes are not acked
                }
            }
            acked
        });
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    broker.shutdown().await.unwrap();
    let mut acked = Vec::new();
    while let Some(r) = tasks.join_next().await {
        acked.extend(r.unwrap());
    }
    assert!(!acked.is_empty());
    let (store, _) = ewx_broker::log::Store::open(&net.data_dir(), 60_000_000).unwrap();
    for i in &acked {
        assert!(
            store.message(*i).unwrap().is_some(),
            "acked message {i} lost"
        );
    }
    eprintln!(
        "{} publishes acknowledged before shutdown, all present after",
        acked.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_broker_enforces_publish_grants_itself() {
    let net = TestNet::new();
    let broker = net.start_broker().await;
    let ua = net.client(&broker, "UA").await;
    let jp = net.client(&broker, "JP").await;
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
    // JP signs an early warning on a topic it has no publish grant for
    let topic = resigned(&env, "JP", |h| {
        h.sender = id("JP");
        h.labels = ewx_proto::Labels::new(Level::Clear, []);
        h.recipients.retain(|w| w.node == id("UA"));
    });
    assert_eq!(
        rejected(jp.publish_envelope(&topic).await),
        RejectReason::NotPermitted
    );
    // JP signs a sanctions message labelled CORE, which it may not read itself
    let labels = resigned(&env, "JP", |h| {
        h.sender = id("JP");
        h.topic = ewx_proto::Topic::new("sanctions.snapback").unwrap();
        h.recipients.retain(|w| w.node == id("UA"));
    });
    assert_eq!(
        rejected(jp.publish_envelope(&labels).await),
        RejectReason::NotPermitted
    );
    // UA reuses the id of a stored message with a fresh seq
    ua.publish_envelope(&env.encode().unwrap()).await.unwrap();
    let same_id = resigned(&env, "UA", |h| h.seq += 1);
    assert_eq!(
        rejected(ua.publish_envelope(&same_id).await),
        RejectReason::Replay
    );
    broker.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kr_gets_sanctions_only_and_rel_to_reaches_the_named_node() {
    let net = TestNet::new();
    let broker = net.start_broker().await;
    let ua = net.client(&broker, "UA").await;
    let kr = net.client(&broker, "KR").await;
    let mut kr_sub = subscribe(&kr, "all", ">", StartAt::Latest).await;
    let mut ua_sub = subscribe(&ua, "own", "ew.>", StartAt::Latest).await;
    ua.publish(bulletin(
        "ew.air",
        Level::Green,
        "CORE",
        Precedence::Flash,
        "core",
    ))
    .await
    .unwrap();
    let mut rel = bulletin(
        "ew.maritime",
        Level::Red,
        "CORE",
        Precedence::Immediate,
        "for UA only",
    );
    rel.labels.rel_to = [id("UA")].into();
    ua.publish(rel).await.unwrap();
    ua.publish(bulletin(
        "sanctions.snapback",
        Level::Amber,
        "SANCTIONS",
        Precedence::Routine,
        "snapback",
    ))
    .await
    .unwrap();
    assert_eq!(take(&mut kr_sub, 1).await, ["snapback"]);
    nothing_more(&mut kr_sub).await;
    let mut own = take(&mut ua_sub, 2).await;
    own.sort();
    assert_eq!(own, ["core", "for UA only"]);
    broker.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_node_connection_cap() {
    let net = TestNet::new();
    let mut config = net.config();
    config.limits.max_connections_per_node = 1;
    let broker = ewx_broker::Broker::start(config).await.unwrap();
    let _first = net.client(&broker, "UA").await;
    let second = Client::connect(broker.local_addr(), keys("UA"), net.roster.clone()).await;
    assert!(matches!(second, Err(Error::Connect { .. })), "{second:?}");
    let _pl = net.client(&broker, "PL").await; // other nodes are not affected
    broker.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quiet_flash_lane_still_delivers_after_a_long_pause() {
    let net = TestNet::new();
    let broker = net.start_broker().await;
    let ua = net.client(&broker, "UA").await;
    let pl = net.client(&broker, "PL").await;
    let mut sub = subscribe(&pl, "desk", "ew.>", StartAt::Latest).await;
    ua.publish(bulletin(
        "ew.air",
        Level::Amber,
        "CORE",
        Precedence::Flash,
        "first",
    ))
    .await
    .unwrap();
    assert_eq!(take(&mut sub, 1).await, ["first"]);
    // longer than the per-frame deadline: an idle delivery stream must stay open
    tokio::time::sleep(ewx_net::wire::FRAME_DEADLINE + Duration::from_secs(1)).await;
    ua.publish(bulletin(
        "ew.air",
        Level::Amber,
        "CORE",
        Precedence::Flash,
        "second",
    ))
    .await
    .unwrap();
    assert_eq!(take(&mut sub, 1).await, ["second"]);
    broker.shutdown().await.unwrap();
}
