//! The client library against a real broker: reconnection with resume, automatic acks
//! and receipts.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use ewx_client::SubscriptionOptions;
use ewx_proto::audit::Event;
use ewx_proto::{Level, Precedence};
use ewx_tests::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_reconnects_and_resumes_without_gaps_or_repeats() {
    let net = TestNet::new();
    let broker = net.start_broker().await;
    let addr = broker.local_addr();
    let ua = net.client(&broker, "UA").await;
    let pl = net.client(&broker, "PL").await;
    let mut sub = pl
        .subscribe_with("desk", pat("ew.>"), SubscriptionOptions::default())
        .await
        .unwrap();
    for i in 0..3 {
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
    assert_eq!(take(&mut sub, 3).await, ["m0", "m1", "m2"]);
    sub.flush().await.unwrap();

    // the broker goes away; a publish made meanwhile is sent again by the library (the
    // same envelope: stored once) when the broker is back on the same address
    broker.shutdown().await.unwrap();
    let pending = tokio::spawn({
        let ua = ua.clone();
        async move {
            ua.publish(bulletin(
                "ew.air",
                Level::Amber,
                "CORE",
                Precedence::Routine,
                "m3",
            ))
            .await
        }
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut config = net.config();
    config.listen = addr;
    let broker = ewx_broker::Broker::start(config).await.unwrap();
    let ack = pending.await.unwrap().unwrap();
    assert_eq!(ack.log_index, 3);
    ua.publish(bulletin(
        "ew.air",
        Level::Amber,
        "CORE",
        Precedence::Routine,
        "m4",
    ))
    .await
    .unwrap();
    assert_eq!(take(&mut sub, 2).await, ["m3", "m4"]);
    nothing_more(&mut sub).await;
    assert!(pl.is_connected());
    broker.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acks_are_batched_and_receipts_sent_automatically() {
    let net = TestNet::new();
    let broker = net.start_broker().await;
    let ua = net.client(&broker, "UA").await;
    let pl = net.client(&broker, "PL").await;
    let mut receipts = ua.receipts().unwrap();
    let mut sub = pl
        .subscribe_with("desk", pat("ew.>"), SubscriptionOptions::default())
        .await
        .unwrap();
    for i in 0..200 {
        let mut d = bulletin(
            "ew.air",
            Level::Amber,
            "CORE",
            Precedence::Routine,
            &format!("m{i}"),
        );
        d.receipt = i == 7;
        ua.publish(d).await.unwrap();
    }
    take(&mut sub, 200).await;
    sub.flush().await.unwrap();
    let r = tokio::time::timeout(WAIT, receipts.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(r.by, id("PL"));
    let events = audit_events(broker.store());
    let delivered = events
        .iter()
        .filter(|e| matches!(e, Event::Delivered { .. }))
        .count();
    assert!(
        (3..=10).contains(&delivered),
        "{delivered} Delivered entries for 200 messages"
    );
    let last = events.iter().rev().find_map(|e| match e {
        Event::Delivered { through_index, .. } => Some(*through_index),
        _ => None,
    });
    assert_eq!(last, Some(199), "the final ack covers everything");
    broker.shutdown().await.unwrap();
}
