//! A cluster under fire: three `ewx-broker` processes replicate one log while publishers
//! and subscribers work through any replica. The leader is killed with SIGKILL at random
//! moments (5 times here, 100 with `EWX_SOAK=1`), a follower too, then all three at once.
//! Every acknowledged bulletin must be on every replica exactly once at the same index,
//! the replicas' audit logs must be equal and verify, and subscribers must resume on
//! another replica without gaps. Failover time (leader killed → next acknowledged
//! publish) is printed.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ewx_client::{Client, Error as ClientError};
use ewx_net::Clock;
use ewx_proto::{Envelope, Level, MessageId, Precedence};
use ewx_tests::cluster::ClusterNet;
use ewx_tests::*;
use rand::{Rng, SeedableRng};

#[derive(Debug, Clone)]
struct Acked {
    publisher: usize,
    log_index: u64,
    id: MessageId,
    at: Instant,
}

/// The replicas running now, and the leader the newest term names among them.
fn leader(procs: &[Option<BrokerProcess>]) -> Option<usize> {
    let newest = procs
        .iter()
        .flatten()
        .filter_map(|p| *p.leadership.lock().unwrap())
        .max()?;
    let l = usize::try_from(newest.1).ok()?.checked_sub(1)?;
    procs.get(l)?.as_ref().map(|_| l)
}

async fn wait_leader(procs: &[Option<BrokerProcess>]) -> usize {
    let started = Instant::now();
    loop {
        if let Some(l) = leader(procs) {
            return l;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "no leader elected"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Connect to any replica, starting with the `first`.
async fn client(net: &ClusterNet, name: &str, first: usize) -> Client {
    let mut addrs: Vec<SocketAddr> = net.addrs.clone();
    addrs.rotate_left(first);
    Client::connect_any(&addrs, keys(name), net.roster.clone(), Clock::system())
        .await
        .unwrap()
}

/// Wait for the first publish acknowledged after `t0`: the failover time.
async fn next_ack_after(acked: &Mutex<Vec<Acked>>, t0: Instant) -> Duration {
    loop {
        if let Some(a) = acked.lock().unwrap().iter().rev().find(|a| a.at > t0) {
            return a.at - t0;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "no publish acknowledged for 60 s"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_replicas_loses_nothing_acknowledged() {
    let kills = if soak() { 100 } else { 5 };
    let seed: u64 = std::env::var("EWX_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64)
        });
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let net = ClusterNet::new();
    let mut procs: Vec<Option<BrokerProcess>> =
        (0..3).map(|i| Some(net.start_process(i))).collect();
    wait_leader(&procs).await;

    // subscribers on different replicas, resumed wherever they reconnect
    let mut subscribers = Vec::new();
    for (i, name) in ["US", "XX"].into_iter().enumerate() {
        let c = client(&net, name, i + 1).await;
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

    // publishers: one sequential publisher per node, each envelope retried as is until
    // answered (a retry of a stored envelope gets its original index)
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(Mutex::new(Vec::<Acked>::new()));
    let mut publishers = tokio::task::JoinSet::new();
    for (p, node) in ["UA", "PL"].into_iter().enumerate() {
        let c = client(&net, node, p).await;
        let (stop, acked) = (stop.clone(), acked.clone());
        publishers.spawn(async move {
            for i in 0u64.. {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let d = bulletin(
                    "ew.air",
                    Level::Amber,
                    "CORE",
                    Precedence::Routine,
                    &format!("{p}-{i}"),
                );
                let env = c.seal(d).await.unwrap();
                let bytes = env.encode().unwrap();
                loop {
                    match c.publish_envelope(&bytes).await {
                        Ok(ack) => {
                            acked.lock().unwrap().push(Acked {
                                publisher: p,
                                log_index: ack.log_index,
                                id: env.header().id,
                                at: Instant::now(),
                            });
                            break;
                        }
                        Err(ClientError::Rejected { reason, detail }) => {
                            panic!("publisher {p}: refused {reason:?}: {detail}")
                        }
                        Err(_) if stop.load(Ordering::Relaxed) => return,
                        Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
                    }
                }
            }
            c.close().await;
        });
    }

    // kill -9 the leader at random moments; each comes back as a follower
    let started = Instant::now();
    let mut failovers = Vec::new();
    for _ in 0..kills {
        tokio::time::sleep(Duration::from_millis(rng.gen_range(300..1200))).await;
        let lead = wait_leader(&procs).await;
        let t0 = Instant::now();
        procs[lead].take().unwrap().kill_9();
        failovers.push(next_ack_after(&acked, t0).await);
        tokio::time::sleep(Duration::from_millis(rng.gen_range(0..300))).await;
        procs[lead] = Some(net.start_process(lead));
    }
    // a follower
    tokio::time::sleep(Duration::from_millis(500)).await;
    let lead = wait_leader(&procs).await;
    let follower = (lead + 1) % 3;
    procs[follower].take().unwrap().kill_9();
    let t0 = Instant::now();
    next_ack_after(&acked, t0).await;
    procs[follower] = Some(net.start_process(follower));
    // all three at once, then back
    tokio::time::sleep(Duration::from_millis(500)).await;
    for p in &mut procs {
        p.take().unwrap().kill_9();
    }
    let t0 = Instant::now();
    for (i, p) in procs.iter_mut().enumerate() {
        *p = Some(net.start_process(i));
    }
    let after_all = next_ack_after(&acked, t0).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    while publishers.join_next().await.is_some() {}
    let acked = acked.lock().unwrap().clone();
    assert!(
        acked.len() > kills,
        "too few publishes acknowledged: {}",
        acked.len()
    );

    // acked indices rise per publisher
    for p in 0..2 {
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
    // subscribers: every acked index, none twice
    let want: BTreeSet<u64> = acked.iter().map(|a| a.log_index).collect();
    for (name, seen, _) in &subscribers {
        let deadline = Instant::now() + WAIT;
        loop {
            let got: BTreeSet<u64> = seen.lock().unwrap().iter().copied().collect();
            if want.is_subset(&got) {
                break;
            }
            let missing: Vec<_> = want.difference(&got).take(10).collect();
            assert!(
                Instant::now() < deadline,
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
    for (_, _, task) in subscribers {
        task.abort();
    }

    // let the followers apply the last commits, stop all three, compare their stores
    tokio::time::sleep(Duration::from_secs(1)).await;
    for p in &mut procs {
        p.take().unwrap().terminate();
    }
    let stores: Vec<_> = (0..3)
        .map(|i| ewx_broker::log::Store::open_for_audit(&net.data_dir(i)).unwrap())
        .collect();
    for (r, store) in stores.iter().enumerate() {
        let mut copies: HashMap<MessageId, u32> = HashMap::new();
        let (mut index, mut stored) = (0u64, 0u64);
        while stored < store.message_count() as u64 {
            if let Some(bytes) = store.message(index).unwrap() {
                let env = Envelope::decode(&bytes, usize::MAX).unwrap();
                *copies.entry(env.header().id).or_default() += 1;
                stored += 1;
            }
            index += 1;
        }
        for a in &acked {
            assert_eq!(
                copies.get(&a.id),
                Some(&1),
                "replica {r}: acked {} not stored exactly once",
                a.log_index
            );
            assert_eq!(
                store.index_of(&a.id).unwrap(),
                Some(a.log_index),
                "replica {r}"
            );
        }
    }
    let lens: Vec<u64> = stores.iter().map(|s| s.audit_len().unwrap()).collect();
    let n = *lens.iter().min().unwrap();
    let prefix: Vec<_> = stores
        .iter()
        .map(|s| s.audit_range(0, n).unwrap())
        .collect();
    assert!(
        prefix.windows(2).all(|w| w[0] == w[1]),
        "replicas' audit logs differ (lengths {lens:?})"
    );
    assert!(
        lens.iter().all(|&l| l == n),
        "a replica is behind after a clean stop: {lens:?}"
    );
    drop(stores);
    for i in 0..3 {
        let summary = verify_copy(&net.data_dir(i), &net.roster, 0).await.unwrap();
        assert!(summary.entries >= n, "replica {i}: {summary:?}");
        assert!(summary.replica_signed >= 1, "replica {i}: {summary}");
    }

    let mut ms: Vec<u128> = failovers.iter().map(Duration::as_millis).collect();
    ms.sort_unstable();
    report(
        "cluster_crash",
        &format!(
            "cluster: {kills} leader kill -9s in {:.1} s (seed {seed}): {} acked, every one on all 3 replicas at its index; \
             failover (leader killed -> next ack) p50 {} ms, max {} ms; all three killed and restarted -> next ack {} ms; \
             audit logs equal ({n} entries) and verified on every replica",
            started.elapsed().as_secs_f64(),
            acked.len(),
            ms[ms.len() / 2],
            ms[ms.len() - 1],
            after_all.as_millis(),
        ),
    );
}
