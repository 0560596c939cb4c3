//! A damaged store never panics: the broker's data file truncated at many points, and
//! overwritten at the same points, then opened by the broker and by an auditor (`ewx
//! audit verify --store`). Each open either
//! works (the recovered store then checks out) or fails with a clear "damaged" error;
//! sled's own panics on such files are caught and named.
#![allow(clippy::unwrap_used)]

use std::fs::OpenOptions;
use std::panic::{AssertUnwindSafe, catch_unwind};

use ewx_broker::log::Store;
use ewx_proto::{Level, Precedence};
use ewx_tests::{TestNet, bulletin, copy_dir};

/// Cut points across a file of `len` bytes: evenly spread, and near both ends.
fn cuts(len: u64) -> Vec<u64> {
    let mut at: Vec<u64> = (1..40).map(|i| len * i / 40).collect();
    at.extend([
        1,
        8,
        64,
        512,
        4096,
        len - 1,
        len.saturating_sub(17),
        len.saturating_sub(4096),
    ]);
    at.retain(|&c| c > 0 && c < len);
    at.sort_unstable();
    at.dedup();
    at
}

/// Truncate the file at `at`, or overwrite 4 KiB there with 0xFF.
fn damage(path: &std::path::Path, at: u64, overwrite: bool) {
    use std::io::{Seek, SeekFrom, Write};
    let mut f = OpenOptions::new().write(true).open(path).unwrap();
    if overwrite {
        f.seek(SeekFrom::Start(at)).unwrap();
        f.write_all(&[0xFF; 4096]).unwrap();
    } else {
        f.set_len(at).unwrap();
    }
}

/// Messages published before the cuts (`EWX_DAMAGE_MSGS` overrides): enough for
/// several sled segments.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_truncated_store_gives_a_clear_error_and_never_a_panic() {
    let net = TestNet::new();
    let broker = net.start_broker().await;
    let ua = net.client(&broker, "UA").await;
    let n_msgs: usize = std::env::var("EWX_DAMAGE_MSGS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3000);
    // in waves of 64 at once, so commits are large enough for segment files
    for wave in (0..n_msgs).collect::<Vec<_>>().chunks(64) {
        let mut acks = tokio::task::JoinSet::new();
        for &i in wave {
            let ua = ua.clone();
            acks.spawn(async move {
                let d = bulletin(
                    "ew.air",
                    Level::Amber,
                    "CORE",
                    Precedence::Routine,
                    &i.to_string(),
                );
                ua.publish(d).await
            });
        }
        while let Some(ack) = acks.join_next().await {
            ack.unwrap().unwrap();
        }
    }
    ua.close().await;
    broker.shutdown().await.unwrap();
    let len = std::fs::metadata(net.data_dir().join("db")).unwrap().len();
    let (mut opened, mut refused) = (0, Vec::new());
    let damages = cuts(len).into_iter().flat_map(|c| [(c, false), (c, true)]);
    for (cut, overwrite) in damages {
        let copy = tempfile::tempdir().unwrap();
        copy_dir(&net.data_dir(), copy.path());
        damage(&copy.path().join("db"), cut, overwrite);
        let (_, broker) = open_both(copy.path(), cut, &net.roster).await;
        match broker {
            Ok(()) => opened += 1,
            Err(text) => refused.push((cut, text)),
        }
    }
    eprintln!(
        "damaged store of {len} bytes (truncated or overwritten at 47 points each): {opened} \
         opened, {} refused with a clear error",
        refused.len()
    );
    for (cut, text) in refused.iter().take(3) {
        eprintln!("  cut at {cut}: {text}");
    }
    // a store of several sled segments: many cuts land inside one, where sled panics
    assert!(
        !refused.is_empty(),
        "no cut was refused: the test did not damage the store"
    );

    // the envelopes' segment file: every damage is found, by the broker's open (a
    // segment shorter than the log says) or by the auditor (bytes that do not match)
    let segments = net.data_dir().join("segments");
    let mut files: Vec<_> = std::fs::read_dir(&segments)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    let segment = files
        .last()
        .expect("large commits wrote a segment file")
        .file_name()
        .unwrap()
        .to_owned();
    let len = std::fs::metadata(segments.join(&segment)).unwrap().len();
    for (cut, overwrite) in cuts(len).into_iter().flat_map(|c| [(c, false), (c, true)]) {
        let copy = tempfile::tempdir().unwrap();
        copy_dir(&net.data_dir(), copy.path());
        damage(&copy.path().join("segments").join(&segment), cut, overwrite);
        let (audit, broker) = open_both(copy.path(), cut, &net.roster).await;
        assert!(
            audit.is_err(),
            "segment damaged at {cut} (overwrite: {overwrite}): the auditor saw nothing"
        );
        if !overwrite {
            let e = broker.expect_err("a truncated segment is refused");
            assert!(e.contains("damaged"), "{e}");
        }
    }
}

/// Open a damaged copy as an auditor (`verify` over it) and as the broker; neither may
/// panic and each error must be clear. The auditor goes first: the broker's open may
/// repair the files.
async fn open_both(
    dir: &std::path::Path,
    cut: u64,
    roster: &ewx_proto::Roster,
) -> (Result<(), String>, Result<(), String>) {
    let audit = match ewx_cli::offline::StoreCopy::open(dir) {
        Ok(store) => ewx_client::audit::verify(&store, roster.clone(), 0, &mut |_, _| {})
            .await
            .map(|_| ())
            .map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    };
    if let Err(e) = &audit {
        assert!(!e.is_empty());
    }
    let broker = match catch_unwind(AssertUnwindSafe(|| Store::open(dir, 1024))) {
        Err(_) => panic!("cut at {cut}: the broker's open panicked"),
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => {
            let text = e.to_string();
            assert!(
                text.contains("damaged")
                    || text.contains("unusable")
                    || text.contains("cannot open"),
                "cut at {cut}: unclear error {text}"
            );
            Err(text)
        }
    };
    (audit, broker)
}
