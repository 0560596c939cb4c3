//! Three replicas, one log: publishes through any replica are committed on a majority
//! and applied alike everywhere; losing the leader costs an election, not a message.

use ewx_proto::frame::StartAt;
use ewx_proto::{Level, Precedence};
use ewx_tests::cluster::{ClusterNet, converged, leader};
use ewx_tests::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_hold_one_log_and_survive_losing_the_leader() {
    let net = ClusterNet::new();
    let mut brokers = Vec::new();
    for i in 0..3 {
        brokers.push(Some(net.start(i).await));
    }
    let lead = leader(&brokers).await;
    let follower = (lead + 1) % 3;
    let other = (lead + 2) % 3;

    // publish through a follower: forwarded, committed, acknowledged in order
    let ua = net.client(follower, "UA").await;
    for i in 0..10u64 {
        let d = bulletin(
            "ew.air",
            Level::Amber,
            "CORE",
            Precedence::Routine,
            &format!("m{i}"),
        );
        assert_eq!(ua.publish(d).await.unwrap().log_index, i);
    }
    // a retried publish (same envelope) gets its original index on any replica
    let env = ua
        .seal(bulletin(
            "ew.air",
            Level::Amber,
            "CORE",
            Precedence::Flash,
            "again",
        ))
        .await
        .unwrap();
    let bytes = env.encode().unwrap();
    let first = ua.publish_envelope(&bytes).await.unwrap().log_index;
    let on_other = net.client(other, "UA").await;
    assert_eq!(
        on_other.publish_envelope(&bytes).await.unwrap().log_index,
        first
    );

    // a subscriber on the third replica gets everything, from what that replica applied
    let pl = net.client(other, "PL").await;
    let mut sub = subscribe(&pl, "desk", "ew.>", StartAt::Earliest).await;
    let mut got = Vec::new();
    for _ in 0..=10u64 {
        let d = next(&mut sub).await;
        got.push(d.log_index);
        sub.ack_delivery(&d).await.unwrap();
    }
    got.sort_unstable(); // the FLASH one comes first
    assert_eq!(got, (0..=10).collect::<Vec<u64>>());
    let before = converged(&brokers).await;
    assert!(before > 11, "every publish and the roster are logged");

    // the leader goes away: the others elect one and go on
    ua.close().await;
    on_other.close().await;
    drop(sub);
    pl.close().await;
    brokers[lead].take().unwrap().shutdown().await.unwrap();
    let new_lead = leader(&brokers).await;
    assert_ne!(new_lead, lead);
    let us = net.client(follower, "US").await;
    for i in 0..5u64 {
        let d = bulletin(
            "ew.land",
            Level::Amber,
            "CORE",
            Precedence::Routine,
            &format!("n{i}"),
        );
        assert_eq!(us.publish(d).await.unwrap().log_index, 11 + i);
    }
    us.close().await;

    // the old leader comes back and catches up from the Raft log
    brokers[lead] = Some(net.start(lead).await);
    let after = converged(&brokers).await;
    assert!(after > before);

    // every replica signs each checkpoint itself; the signatures reach every replica
    let started = std::time::Instant::now();
    loop {
        let signed: Vec<usize> = brokers
            .iter()
            .flatten()
            .map(|b| {
                let last = b.store().checkpoints().unwrap().pop().unwrap();
                let cp = ewx_proto::checkpoint::SignedCheckpoint::decode(&last).unwrap();
                cp.verify_replicas(&net.roster).unwrap().len()
            })
            .collect();
        if signed.iter().all(|&n| n == 3) {
            break;
        }
        assert!(
            started.elapsed().as_secs() < 30,
            "replica signatures: {signed:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    for b in brokers.into_iter().flatten() {
        assert_eq!(b.store().message_count(), 16);
        b.shutdown().await.unwrap();
    }
    // and each replica's store verifies on its own, its checkpoints signed by 2 or more
    for i in 0..3 {
        let summary = verify_copy(&net.data_dir(i), &net.roster, 0).await.unwrap();
        assert!(summary.replica_signed >= 1, "replica {i}: {summary}");
        assert!(summary.entries >= after, "replica {i}: {summary}");
    }
}
