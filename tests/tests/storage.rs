//! A storage fault: the broker's data directory is a small tmpfs that fills up. Publishes
//! must then be refused as `StorageFull` with a clear reason (never acknowledged and then
//! lost), nothing acknowledged before may be lost or corrupted, and once space returns a
//! restarted broker recovers its store, verifies its audit chain and accepts bulletins
//! again. Needs root for `mount -t tmpfs`; skipped with a message elsewhere.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::Command;

use ewx_client::{Client, Error};
use ewx_proto::frame::RejectReason;
use ewx_proto::payload::{Bulletin, Payload};
use ewx_proto::{Envelope, Level, Precedence};
use ewx_tests::*;

/// A tmpfs mounted for the test, unmounted on drop.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(at: &Path, size: &str) -> Option<Self> {
        std::fs::create_dir_all(at).ok()?;
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at)
            .status()
            .is_ok_and(|s| s.success());
        ok.then(|| Self(at.to_path_buf()))
    }

    fn resize(&self, size: &str) {
        let ok = Command::new("mount")
            .args(["-o", &format!("remount,size={size}")])
            .arg(&self.0)
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "cannot grow the tmpfs");
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

fn big_bulletin(n: usize) -> ewx_proto::Draft {
    let mut d = bulletin(
        "ew.air",
        Level::Amber,
        "CORE",
        Precedence::Routine,
        &n.to_string(),
    );
    d.payload = Payload::Bulletin(Bulletin {
        headline: n.to_string(),
        body: "x".repeat(16 << 10),
        area: None,
        event_ms: None,
        confidence: None,
    });
    d
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_gives_storage_full_loses_nothing_and_recovers() {
    let net = TestNet::new();
    let Some(tmpfs) = Tmpfs::mount(&net.data_dir(), "24m") else {
        report(
            "storage",
            "storage fault: SKIPPED (cannot mount a tmpfs here: needs root or CAP_SYS_ADMIN)",
        );
        return;
    };
    let broker = BrokerProcess::start(net.dir.path(), "127.0.0.1:0".parse().unwrap(), "");
    let addr = broker.addr;

    // four publishers fill the disk until each is refused
    let mut tasks = tokio::task::JoinSet::new();
    for p in 0..4 {
        let roster = net.roster.clone();
        tasks.spawn(async move {
            let c = Client::connect(addr, keys(["UA", "PL"][p % 2]), roster)
                .await
                .unwrap();
            let mut acked = Vec::new();
            for i in 0.. {
                match c.publish(big_bulletin(p * 1_000_000 + i)).await {
                    Ok(a) => acked.push((a.log_index, a.id)),
                    Err(Error::Rejected {
                        reason: RejectReason::StorageFull,
                        detail,
                    }) => {
                        c.close().await;
                        return (acked, detail);
                    }
                    Err(e) => panic!("publisher {p}: {e}"),
                }
                assert!(i < 100_000, "the disk never filled");
            }
            unreachable!()
        });
    }
    let mut acked = Vec::new();
    let mut detail = String::new();
    while let Some(r) = tasks.join_next().await {
        let (a, d) = r.unwrap();
        acked.extend(a);
        detail = d;
    }
    assert!(
        !acked.is_empty(),
        "nothing was acknowledged before the disk filled"
    );
    assert!(
        detail.contains("storage") && detail.contains("restart"),
        "unclear refusal: {detail}"
    );
    // it stays refused (fail-stop), with the same clear reason
    let ua = Client::connect(addr, keys("UA"), net.roster.clone())
        .await
        .unwrap();
    let again = ua.publish(big_bulletin(7)).await;
    assert!(
        matches!(
            again,
            Err(Error::Rejected {
                reason: RejectReason::StorageFull,
                ..
            })
        ),
        "{again:?}"
    );
    ua.close().await;

    // space returns; the broker is restarted (as its supervisor would) and recovers
    broker.kill_9();
    tmpfs.resize("256m");
    let broker = BrokerProcess::start(net.dir.path(), addr, "");
    let ua = Client::connect(addr, keys("UA"), net.roster.clone())
        .await
        .unwrap();
    ua.publish(bulletin(
        "ew.air",
        Level::Amber,
        "CORE",
        Precedence::Flash,
        "space is back",
    ))
    .await
    .unwrap();
    ua.close().await;
    broker.kill_9();

    // nothing acknowledged was lost or damaged, and the audit chain verifies
    let store = ewx_broker::log::Store::open_for_audit(&net.data_dir()).unwrap();
    for (index, id) in &acked {
        let bytes = store
            .message(*index)
            .unwrap()
            .unwrap_or_else(|| panic!("acked {index} lost"));
        assert_eq!(
            &Envelope::decode(&bytes, usize::MAX).unwrap().header().id,
            id
        );
    }
    drop(store);
    let summary = verify_copy(&net.data_dir(), &net.roster, 0)
        .await
        .unwrap_or_else(|e| panic!("audit log does not verify: {e:?}"));
    report(
        "storage",
        &format!(
            "storage fault: 24 MiB tmpfs filled after {} acked 16 KiB bulletins; every later publish \
             refused as StorageFull (\"{detail}\"); after growing it and a restart all {} are intact, \
             the audit chain of {} entries verifies, and publishing works again",
            acked.len(),
            acked.len(),
            summary.entries
        ),
    );
    drop(tmpfs);
}
