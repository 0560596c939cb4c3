//! Membership as an operator changes it: a cluster of two `ewx-broker` processes takes a
//! third replica (listed in the configurations, reloaded with SIGHUP, started with
//! `join = true`, then `ewx-broker cluster add`); it catches up from a snapshot and the
//! log and votes; later a replica that is gone is removed with `cluster remove`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::time::{Duration, Instant};

use ewx_client::Client;
use ewx_proto::{Level, Precedence};
use ewx_tests::cluster::{Acked, ClusterNet, client, every_replica_holds, wait_leader};
use ewx_tests::*;

/// Run `ewx-broker --config CONFIG cluster ARGS…`: its stdout, or its stderr as the error.
fn cluster_command(config: &Path, args: &[&str]) -> Result<String, String> {
    let out = std::process::Command::new(broker_binary())
        .arg("--config")
        .arg(config)
        .arg("cluster")
        .args(args)
        .output()
        .unwrap();
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    if out.status.success() {
        Ok(text(&out.stdout))
    } else {
        Err(text(&out.stderr))
    }
}

async fn publish(c: &Client, n: usize, acked: &mut Vec<Acked>) {
    for i in 0..n {
        let d = bulletin(
            "ew.air",
            Level::Amber,
            "CORE",
            Precedence::Routine,
            &format!("m{}", acked.len() + i),
        );
        let env = c.seal(d).await.unwrap();
        let sent = Instant::now();
        let ack = c.publish_envelope(&env.encode().unwrap()).await.unwrap();
        acked.push(Acked {
            publisher: 0,
            log_index: ack.log_index,
            id: env.header().id,
            sent,
            at: Instant::now(),
        });
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_adds_a_replica_and_removes_one_that_is_gone() {
    let mut net = ClusterNet::new();
    net.cluster_extra = "snapshot_entries = 10\nkeep_entries = 2\n".into();
    // replicas 1 and 2 start a cluster of their own
    net.listed = [true, true, false];
    let mut procs: Vec<Option<BrokerProcess>> =
        vec![Some(net.start_process(0)), Some(net.start_process(1)), None];
    wait_leader(&procs).await;
    let mut acked = Vec::new();
    let ua = client(&net, "UA", 0).await;
    publish(&ua, 40, &mut acked).await;

    let status = cluster_command(&net.write_process_config(0), &["status"]).unwrap();
    assert!(status.contains("replica 1 (BROKER): voter"), "{status}");
    assert!(status.contains("replica 2 (BROKER2): voter"), "{status}");
    assert!(!status.contains("replica 3"), "{status}");
    // not listed in the leader's configuration yet: refused, with what to do
    let refused = cluster_command(&net.write_process_config(0), &["add", "3"]).unwrap_err();
    assert!(refused.contains("SIGHUP"), "{refused}");

    // listed everywhere (SIGHUP), started with join = true: it waits to be added
    net.listed = [true; 3];
    net.join[2] = true;
    for (i, p) in procs.iter().enumerate().take(2) {
        net.write_process_config(i);
        p.as_ref().unwrap().signal("HUP");
    }
    procs[2] = Some(net.start_process(2));
    tokio::time::sleep(Duration::from_millis(300)).await; // the reloads are logged
    let config = net.write_process_config(0);
    let report = cluster_command(&config, &["add", "3"]).unwrap();
    assert!(report.contains("replica 3 (BROKER3): voter"), "{report}");
    publish(&ua, 10, &mut acked).await;
    ua.close().await;
    for p in procs.iter_mut() {
        p.take().unwrap().terminate();
    }
    // the new replica holds everything, before and after it joined, verified
    every_replica_holds(&net, &acked).await;

    // it votes: with the first replica gone, replicas 2 and 3 are a majority of three
    let mut procs: Vec<Option<BrokerProcess>> =
        vec![None, Some(net.start_process(1)), Some(net.start_process(2))];
    wait_leader(&procs).await;
    let us = client(&net, "US", 1).await;
    publish(&us, 5, &mut acked).await;
    // the first replica is gone for good: the operator takes it out
    let report = cluster_command(&net.write_process_config(2), &["remove", "1"]).unwrap();
    assert!(!report.contains("replica 1 "), "{report}");
    assert!(report.contains("replica 3 (BROKER3): voter"), "{report}");
    publish(&us, 5, &mut acked).await;
    us.close().await;
    let status = cluster_command(&net.write_process_config(1), &["status"]).unwrap();
    assert!(status.contains("replica 2 (BROKER2): voter"), "{status}");
    for p in procs.iter_mut().flatten() {
        assert!(p.leadership.lock().unwrap().is_some());
    }
    for p in procs.iter_mut() {
        if let Some(p) = p.take() {
            p.terminate();
        }
    }
}
