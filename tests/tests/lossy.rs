//! Lossy links: the broker runs in its own network namespace behind a veth pair, and every
//! packet between it and the nodes is dropped with 10 % probability and delayed
//! 200 ms ± 50 ms in each direction (`tc netem` where the kernel has it, else a
//! userspace relay doing the same). Every bulletin must still arrive, each precedence in
//! publish order, FLASH ahead of a ROUTINE backlog; the latency distribution is printed.
//! Needs root for `ip netns`; skipped with a message elsewhere. Quick here, long with
//! `EWX_SOAK=1`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::SocketAddr;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ewx_client::Client;
use ewx_proto::{Level, Precedence};
use ewx_tests::*;
use rand::Rng;
use tokio::net::UdpSocket;

const LOSS: f64 = 0.10;
const DELAY_MS: u64 = 200;
const JITTER_MS: u64 = 50;

fn run(args: &[&str]) -> bool {
    Command::new(args[0])
        .args(&args[1..])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// A namespace for the broker and a veth pair to it; removed on drop.
struct Netns {
    name: String,
    broker_ip: String,
    netem: bool,
}

impl Netns {
    fn create() -> Option<Self> {
        let id = std::process::id() % 10_000;
        let (name, host, peer) = (
            format!("ewx-b{id}"),
            format!("ewxh{id}"),
            format!("ewxp{id}"),
        );
        let net = format!("10.{}.{}", 100 + id / 250 % 100, id % 250);
        let (host_ip, broker_ip) = (format!("{net}.1"), format!("{net}.2"));
        if !run(&["ip", "netns", "add", &name]) {
            return None;
        }
        let mut ns = Self {
            name: name.clone(),
            broker_ip: broker_ip.clone(),
            netem: false,
        };
        let inside = |args: &[&str]| {
            let mut all = vec!["ip", "netns", "exec", name.as_str()];
            all.extend_from_slice(args);
            run(&all)
        };
        let ok = run(&[
            "ip", "link", "add", &host, "type", "veth", "peer", "name", &peer,
        ]) && run(&["ip", "link", "set", &peer, "netns", &name])
            && run(&["ip", "addr", "add", &format!("{host_ip}/30"), "dev", &host])
            && run(&["ip", "link", "set", &host, "up"])
            && inside(&[
                "ip",
                "addr",
                "add",
                &format!("{broker_ip}/30"),
                "dev",
                &peer,
            ])
            && inside(&["ip", "link", "set", &peer, "up"])
            && inside(&["ip", "link", "set", "lo", "up"]);
        if !ok {
            return None;
        }
        let netem = |dev: &str| {
            vec![
                "tc".to_string(),
                "qdisc".into(),
                "add".into(),
                "dev".into(),
                dev.to_string(),
                "root".into(),
                "netem".into(),
                "loss".into(),
                format!("{}%", LOSS * 100.0),
                "delay".into(),
                format!("{DELAY_MS}ms"),
                format!("{JITTER_MS}ms"),
            ]
        };
        let host_rule = netem(&host);
        let mut peer_rule = vec![
            "ip".to_string(),
            "netns".into(),
            "exec".into(),
            name.clone(),
        ];
        peer_rule.extend(netem(&peer));
        let as_refs = |v: &[String]| -> bool {
            let refs: Vec<&str> = v.iter().map(String::as_str).collect();
            run(&refs)
        };
        ns.netem = as_refs(&host_rule) && as_refs(&peer_rule);
        Some(ns)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // deleting the namespace deletes the veth pair with it
        let _ = run(&["ip", "netns", "del", &self.name]);
    }
}

/// Forward UDP between nodes and the broker, dropping and delaying each packet as netem
/// would: one upstream socket per node address, one task per delayed packet (so jitter
/// reorders, as on a real path).
async fn impairment_relay(broker: SocketAddr) -> SocketAddr {
    let front = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
    let addr = front.local_addr().unwrap();
    tokio::spawn(async move {
        let mut upstream: std::collections::HashMap<SocketAddr, Arc<UdpSocket>> =
            Default::default();
        let mut buf = vec![0u8; 65_536];
        loop {
            let Ok((n, from)) = front.recv_from(&mut buf).await else {
                return;
            };
            let up = match upstream.get(&from) {
                Some(u) => u.clone(),
                None => {
                    let u = Arc::new(UdpSocket::bind("0.0.0.0:0").await.unwrap());
                    u.connect(broker).await.unwrap();
                    upstream.insert(from, u.clone());
                    let (u2, front2) = (u.clone(), front.clone());
                    tokio::spawn(async move {
                        let mut buf = vec![0u8; 65_536];
                        while let Ok(n) = u2.recv(&mut buf).await {
                            let front = front2.clone();
                            impair(buf[..n].to_vec(), move |p| async move {
                                let _ = front.send_to(&p, from).await;
                            });
                        }
                    });
                    u
                }
            };
            impair(buf[..n].to_vec(), move |p| async move {
                let _ = up.send(&p).await;
            });
        }
    });
    addr
}

fn impair<F, Fut>(packet: Vec<u8>, send: F)
where
    F: FnOnce(Vec<u8>) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let mut rng = rand::thread_rng();
    if rng.gen_bool(LOSS) {
        return;
    }
    let delay = Duration::from_millis(rng.gen_range(DELAY_MS - JITTER_MS..=DELAY_MS + JITTER_MS));
    tokio::spawn(async move {
        tokio::time::sleep(delay).await;
        send(packet).await;
    });
}

fn now_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_micros() as u64
}

fn ms(sorted: &[u64], q: f64) -> f64 {
    let i = ((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i] as f64 / 1000.0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lossy_links_deliver_everything_in_precedence_order() {
    let (backlog, flash, live) = if soak() { (400, 20, 300) } else { (60, 5, 40) };
    let Some(ns) = Netns::create() else {
        report(
            "lossy",
            "lossy links: SKIPPED (cannot create network namespaces here: needs root and iproute2)",
        );
        return;
    };
    let net = TestNet::new();
    let listen: SocketAddr = format!("{}:0", ns.broker_ip).parse().unwrap();
    let broker = BrokerProcess::start_in(Some(&ns.name), net.dir.path(), listen, "");
    let (addr, how) = if ns.netem {
        (broker.addr, "tc netem on the veth pair")
    } else {
        (
            impairment_relay(broker.addr).await,
            "userspace relay (this kernel has no sch_netem) in front of the veth pair",
        )
    };
    let started = Instant::now();
    let ua = Client::connect(addr, keys("UA"), net.roster.clone())
        .await
        .unwrap();

    // a ROUTINE backlog, then FLASH, all published while the subscriber is away
    let mut publishing = tokio::task::JoinSet::new();
    let in_flight = Arc::new(tokio::sync::Semaphore::new(32));
    for i in 0..backlog + flash {
        let (ua, in_flight) = (ua.clone(), in_flight.clone());
        let prec = if i < backlog {
            Precedence::Routine
        } else {
            Precedence::Flash
        };
        publishing.spawn(async move {
            let _slot = in_flight.acquire().await.unwrap();
            let d = bulletin("ew.air", Level::Amber, "CORE", prec, &format!("b{i}"));
            ua.publish(d).await.unwrap();
        });
    }
    while let Some(r) = publishing.join_next().await {
        r.unwrap();
    }
    let pl = Client::connect(addr, keys("PL"), net.roster.clone())
        .await
        .unwrap();
    let mut sub = desk(&pl).await;
    let mut order = Vec::new();
    let mut last_index = [None::<u64>; 4];
    for _ in 0..backlog + flash {
        let d = next(&mut sub).await;
        let p = d.envelope.header().precedence;
        assert!(
            last_index[p as usize].is_none_or(|l| l < d.log_index),
            "{p:?} out of order"
        );
        last_index[p as usize] = Some(d.log_index);
        order.push(p);
    }
    // FLASH overtakes the backlog: all of it is handed out in the first half
    let last_flash = order.iter().rposition(|p| *p == Precedence::Flash).unwrap();
    assert!(
        last_flash < order.len() / 2,
        "FLASH handed out at position {last_flash} of {}",
        order.len()
    );

    // live traffic: every bulletin arrives; latency measured per precedence
    let sender = tokio::spawn(async move {
        for i in 0..live {
            let prec = if i % 5 == 0 {
                Precedence::Flash
            } else {
                Precedence::Routine
            };
            let d = bulletin("ew.air", Level::Amber, "CORE", prec, &now_us().to_string());
            ua.publish(d).await.unwrap();
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        ua
    });
    let mut latencies = (Vec::new(), Vec::new());
    for _ in 0..live {
        let d = next(&mut sub).await;
        let lat = now_us().saturating_sub(headline(&d.payload).parse().unwrap());
        match d.envelope.header().precedence {
            Precedence::Flash => latencies.0.push(lat),
            _ => latencies.1.push(lat),
        }
    }
    sender.await.unwrap().close().await;
    nothing_more(&mut sub).await;
    latencies.0.sort_unstable();
    latencies.1.sort_unstable();
    let dist = |v: &[u64]| {
        format!(
            "p50 {:.0} / p90 {:.0} / p99 {:.0} / max {:.0} ms",
            ms(v, 0.5),
            ms(v, 0.9),
            ms(v, 0.99),
            ms(v, 1.0)
        )
    };
    report(
        "lossy",
        &format!(
            "lossy links ({how}; loss {}% and {DELAY_MS} ± {JITTER_MS} ms each way): backlog of \
             {backlog} ROUTINE + {flash} FLASH all delivered, every FLASH within the first {} of {}; \
             {live} live bulletins all delivered, FLASH {}, ROUTINE {}; {:.1} s",
            LOSS * 100.0,
            last_flash + 1,
            order.len(),
            dist(&latencies.0),
            dist(&latencies.1),
            started.elapsed().as_secs_f64(),
        ),
    );
    pl.close().await;
    drop(broker);
    drop(ns);
}
