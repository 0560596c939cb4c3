//! A leader paused with SIGSTOP past the election timeout, and a leader cut off from the
//! other replicas (userspace UDP relays between replicas; clients still reach it): the
//! majority elects another leader and goes on, and the cut-off leader acknowledges
//! nothing while it is alone. Then a follower is cut off while 10 000 bulletins are
//! published, and the time it takes to catch up once reconnected is printed. At the end
//! every acknowledged bulletin is on every replica at its index, and every store verifies.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ewx_client::Client;
use ewx_net::Clock;
use ewx_proto::{Level, Precedence};
use ewx_tests::cluster::{
    Acked, ClusterNet, client, every_replica_holds, newest_leadership, next_ack_after,
    publish_until_stopped, wait_leader,
};
use ewx_tests::*;

/// Bulletins published while a follower is cut off (`EWX_SOAK=1`: 50 000).
fn backlog() -> u64 {
    if soak() { 50_000 } else { 10_000 }
}

/// Publish `n` bulletins as `c`, 64 at a time; their acks.
async fn flood(c: &Client, n: u64, publisher: usize) -> Vec<Acked> {
    let mut set = tokio::task::JoinSet::new();
    let mut acked = Vec::new();
    for i in 0..n {
        if set.len() >= 64 {
            acked.push(set.join_next().await.unwrap().unwrap());
        }
        let c = c.clone();
        set.spawn(async move {
            let sent = Instant::now();
            let d = bulletin(
                "ew.sea",
                Level::Amber,
                "CORE",
                Precedence::Routine,
                &format!("flood-{i}"),
            );
            let env = c.seal(d).await.unwrap();
            let ack = c.publish_envelope(&env.encode().unwrap()).await.unwrap();
            Acked {
                publisher,
                log_index: ack.log_index,
                id: env.header().id,
                sent,
                at: Instant::now(),
            }
        });
    }
    while let Some(a) = set.join_next().await {
        acked.push(a.unwrap());
    }
    acked
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_or_cut_off_leader_acknowledges_nothing_and_a_follower_catches_up() {
    let net = ClusterNet::with_relays().await;
    let procs: Vec<Option<BrokerProcess>> = (0..3).map(|i| Some(net.start_process(i))).collect();
    wait_leader(&procs).await;
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(Mutex::new(Vec::<Acked>::new()));
    let mut publishers = tokio::task::JoinSet::new();
    for (p, node) in ["UA", "PL"].into_iter().enumerate() {
        let c = client(&net, node, p).await;
        publishers.spawn(publish_until_stopped(c, p, stop.clone(), acked.clone()));
    }

    // the leader paused past the election timeout: the others go on without it
    tokio::time::sleep(Duration::from_millis(500)).await;
    let lead = wait_leader(&procs).await;
    procs[lead].as_ref().unwrap().signal("STOP");
    let t0 = Instant::now();
    let paused = next_ack_after(&acked, t0).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    procs[lead].as_ref().unwrap().signal("CONT");

    // the leader cut off: a client that knows only it gets no ack while it is alone
    tokio::time::sleep(Duration::from_secs(1)).await;
    let lead = wait_leader(&procs).await;
    let lonely = Client::connect_any(
        &[net.addrs[lead]],
        keys("US"),
        net.roster.clone(),
        Clock::system(),
    )
    .await
    .unwrap();
    net.set_cut(lead, true);
    let t0 = Instant::now();
    let cut = next_ack_after(&acked, t0).await;
    let env = lonely
        .seal(bulletin(
            "ew.land",
            Level::Amber,
            "CORE",
            Precedence::Flash,
            "alone",
        ))
        .await
        .unwrap();
    let bytes = env.encode().unwrap();
    let sent = Instant::now();
    let pending = tokio::spawn(async move {
        let r = lonely.publish_envelope(&bytes).await;
        (r, Instant::now())
    });
    tokio::time::sleep(Duration::from_secs(2)).await;
    let healed = Instant::now();
    net.set_cut(lead, false);
    let (r, at) = pending.await.unwrap();
    let ack = r.expect("the publish is acknowledged once the partition heals");
    assert!(
        at >= healed,
        "a leader cut off from the majority acknowledged a publish"
    );
    acked.lock().unwrap().push(Acked {
        publisher: 2,
        log_index: ack.log_index,
        id: env.header().id,
        sent,
        at,
    });

    // a follower cut off while 10 000 bulletins are published, then reconnected
    tokio::time::sleep(Duration::from_secs(1)).await;
    let lead = wait_leader(&procs).await;
    let behind = (lead + 1) % 3;
    let watcher = Client::connect_any(
        &[net.addrs[behind]],
        keys("XX"),
        net.roster.clone(),
        Clock::system(),
    )
    .await
    .unwrap();
    let mut sub = desk(&watcher).await;
    let seen = Arc::new(Mutex::new(BTreeSet::<u64>::new()));
    let s = seen.clone();
    let watching = tokio::spawn(async move {
        while let Some(d) = sub.next().await {
            s.lock().unwrap().insert(d.unwrap().log_index);
        }
    });
    let before = newest_leadership(&procs);
    net.set_cut(behind, true);
    let flooder = client(&net, "US", lead).await;
    let n = backlog();
    let flooded = flood(&flooder, n, 3).await;
    let last = flooded.iter().map(|a| a.log_index).max().unwrap();
    let reconnected = Instant::now();
    net.set_cut(behind, false);
    loop {
        if seen.lock().unwrap().contains(&last) {
            break;
        }
        assert!(
            reconnected.elapsed() < WAIT,
            "the follower did not catch up within {WAIT:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let catch_up = reconnected.elapsed();
    // cut off, it could not win a pre-vote, so it raised no term: back, it follows the
    // same leader (without Pre-Vote its higher term would depose a working leader)
    assert_eq!(
        newest_leadership(&procs),
        before,
        "the follower cut off disrupted the leader when it returned"
    );
    acked.lock().unwrap().extend(flooded);
    watching.abort();
    flooder.close().await;

    stop.store(true, Ordering::Relaxed);
    while publishers.join_next().await.is_some() {}
    tokio::time::sleep(Duration::from_secs(1)).await;
    for p in procs.into_iter().flatten() {
        p.terminate();
    }
    let acked = acked.lock().unwrap().clone();
    let entries = every_replica_holds(&net, &acked).await;
    report(
        "cluster_partition",
        &format!(
            "cluster: leader SIGSTOPped -> next ack {} ms; leader cut off -> next ack {} ms, none from it while alone; \
             a follower cut off for {n} bulletins caught up in {:.2} s after reconnecting; {} acked, {entries} audit entries equal on 3 replicas",
            paused.as_millis(),
            cut.as_millis(),
            catch_up.as_secs_f64(),
            acked.len(),
        ),
    );
}
