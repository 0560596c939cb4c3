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

/// A replica away while the others compact their Raft log comes back to a log that no
/// longer reaches back to it: it installs the leader's store, verified as an auditor
/// would, then follows the log again. A tampered snapshot is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_behind_the_compacted_log_installs_a_verified_snapshot() {
    let mut net = ClusterNet::new();
    net.cluster_extra = "snapshot_entries = 20\nkeep_entries = 5\n".into();
    let mut brokers = Vec::new();
    for i in 0..3 {
        brokers.push(Some(net.start(i).await));
    }
    let lead = leader(&brokers).await;
    let away = (lead + 1) % 3;
    brokers[away].take().unwrap().shutdown().await.unwrap();

    // one publish at a time: each its own Raft entry, many snapshots, a compacted log
    let ua = net.client(lead, "UA").await;
    for i in 0..120u64 {
        let d = bulletin(
            "ew.air",
            Level::Amber,
            "CORE",
            Precedence::Routine,
            &format!("m{i}"),
        );
        assert_eq!(ua.publish(d).await.unwrap().log_index, i);
    }
    brokers[away] = Some(net.start(away).await);
    let caught_up = converged(&brokers).await;
    assert!(caught_up > 120);
    let installed = brokers[away].as_ref().unwrap().snapshots_installed();
    assert!(installed >= Some(1), "installed: {installed:?}");

    // it serves what it installed, and applies what comes after (nothing twice)
    let pl = net.client(away, "PL").await;
    let mut sub = subscribe(&pl, "desk", "ew.>", StartAt::Earliest).await;
    for i in 120..130u64 {
        let d = bulletin(
            "ew.air",
            Level::Amber,
            "CORE",
            Precedence::Routine,
            &format!("m{i}"),
        );
        assert_eq!(ua.publish(d).await.unwrap().log_index, i);
    }
    for i in 0..130u64 {
        let d = next(&mut sub).await;
        assert_eq!(d.log_index, i);
        sub.ack_delivery(&d).await.unwrap();
    }
    let after = converged(&brokers).await;
    assert!(after > caught_up);
    ua.close().await;
    drop(sub);
    pl.close().await;
    let image = brokers[lead].as_ref().unwrap().store().image().unwrap();
    for b in brokers.into_iter().flatten() {
        assert_eq!(b.store().message_count(), 130);
        b.shutdown().await.unwrap();
    }
    for i in 0..3 {
        let summary = verify_copy(&net.data_dir(i), &net.roster, 0).await.unwrap();
        assert!(summary.replica_signed >= 1, "replica {i}: {summary}");
        assert_eq!(summary.envelopes, 130, "replica {i}: {summary}");
    }

    // replicas restarted over compacted logs and recorded snapshots go on
    let mut brokers = Vec::new();
    for i in 0..3 {
        brokers.push(Some(net.start(i).await));
    }
    let lead = leader(&brokers).await;
    let us = net.client(lead, "US").await;
    let d = bulletin("ew.air", Level::Amber, "CORE", Precedence::Routine, "after");
    assert_eq!(us.publish(d).await.unwrap().log_index, 130);
    us.close().await;
    assert!(converged(&brokers).await > after);
    for b in brokers.into_iter().flatten() {
        assert_eq!(b.store().message_count(), 131);
        b.shutdown().await.unwrap();
    }

    // the leader's image verifies; with one audit entry or one envelope altered it does not
    let encode = |image: &ewx_broker::log::Image| {
        let mut bytes = Vec::new();
        ciborium::into_writer(image, &mut bytes).unwrap();
        bytes
    };
    assert!(ewx_broker::check_snapshot(&encode(&image), &net.roster).is_ok());
    let mut bad = ewx_broker::check_snapshot(&encode(&image), &net.roster).unwrap();
    let last = bad.audit.len() / 2;
    let entry = bad.audit[last].as_mut();
    let at = entry.len() - 3;
    entry[at] ^= 1;
    let refused = ewx_broker::check_snapshot(&encode(&bad), &net.roster).unwrap_err();
    assert!(refused.contains("does not verify"), "{refused}");
    let mut bad = ewx_broker::check_snapshot(&encode(&image), &net.roster).unwrap();
    let envelope = bad.messages[7].1.as_mut();
    let at = envelope.len() - 3;
    envelope[at] ^= 1;
    let refused = ewx_broker::check_snapshot(&encode(&bad), &net.roster).unwrap_err();
    assert!(refused.contains("does not verify"), "{refused}");
}
