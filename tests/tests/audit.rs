//! Auditing end to end: a real broker's log verified online by the auditor node and
//! offline from a copied store, and every kind of tampering with a copy caught at the
//! right index.
#![allow(clippy::unwrap_used)]

use ewx_cli::offline::StoreCopy;
use ewx_client::Error;
use ewx_client::audit::{self, Summary};
use ewx_proto::frame::{RejectReason, Request, Response, StartAt};
use ewx_proto::{Level, Precedence};
use ewx_tests::*;

/// A store with traffic: publishes, deliveries, a receipt, a rejection, checkpoints.
async fn busy_store(net: &TestNet) {
    let broker = net.start_broker().await;
    let ua = net.client(&broker, "UA").await;
    let pl = net.client(&broker, "PL").await;
    let mut sub = subscribe(&pl, "desk", "ew.>", StartAt::Latest).await;
    for i in 0..40 {
        let mut d = bulletin(
            "ew.air",
            Level::Amber,
            "CORE",
            Precedence::Routine,
            &format!("m{i}"),
        );
        d.receipt = i == 3;
        ua.publish(d).await.unwrap();
    }
    for _ in 0..40 {
        let d = next(&mut sub).await;
        if d.envelope.header().receipt {
            pl.send_receipt(&d.envelope).await.unwrap();
        }
        sub.ack_delivery(&d).await.unwrap();
    }
    assert!(ua.publish_envelope(b"junk").await.is_err());
    pl.close().await;
    ua.close().await;
    broker.shutdown().await.unwrap();
}

/// Copy the store, change the copy with `tamper`, verify it offline.
async fn tampered(
    net: &TestNet,
    tamper: impl FnOnce(&sled::Db, &std::path::Path),
) -> ewx_client::Result<Summary> {
    let copy = tempfile::tempdir().unwrap();
    copy_dir(&net.data_dir(), copy.path());
    {
        let db = sled::open(copy.path()).unwrap();
        tamper(&db, copy.path());
        db.flush().unwrap();
    }
    verify_copy(copy.path(), &net.roster, 0).await
}

fn key(i: u64) -> [u8; 8] {
    i.to_be_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sound_log_verifies_offline_and_online() {
    let net = TestNet::new();
    busy_store(&net).await;
    let offline = verify_copy(&net.data_dir(), &net.roster, 0).await.unwrap();
    assert_eq!(offline.envelopes, 40);
    assert_eq!(offline.receipts, 1);
    assert!(
        offline.checkpoints >= 1 && offline.unsigned_tail == 0,
        "{offline}"
    );
    assert!(
        offline
            .to_string()
            .lines()
            .last()
            .unwrap()
            .starts_with("verified:")
    );

    let broker = net.start_broker().await;
    let auditor = net.client(&broker, "AUDIT1").await;
    let online = audit::verify(&auditor, net.roster.clone(), 0, &mut |_, _| {})
        .await
        .unwrap();
    assert_eq!(online.envelopes, 40);
    assert!(online.entries >= offline.entries);
    // witnesses required but absent: refused, naming the checkpoint
    let r = audit::verify(&auditor, net.roster.clone(), 1, &mut |_, _| {}).await;
    assert!(
        matches!(&r, Err(Error::Unsound(f)) if f.reason.contains("witness")),
        "{r:?}"
    );
    broker.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_data_is_for_auditors_except_ones_own() {
    let net = TestNet::new();
    busy_store(&net).await;
    let broker = net.start_broker().await;
    let pl = net.client(&broker, "PL").await;
    let ua = net.client(&broker, "UA").await;
    let r = pl
        .request(&Request::AuditEntries { from: 0, limit: 10 })
        .await;
    assert!(
        matches!(
            r,
            Err(Error::Rejected {
                reason: RejectReason::NotPermitted,
                ..
            })
        ),
        "{r:?}"
    );
    // anyone gets checkpoints and consistency proofs (witnesses need them)
    let Response::Checkpoints { checkpoints } = pl
        .request(&Request::Checkpoints { from_size: 0 })
        .await
        .unwrap()
    else {
        panic!()
    };
    assert!(!checkpoints.is_empty());
    assert!(matches!(
        pl.request(&Request::ConsistencyProof { old: 1, new: 5 })
            .await
            .unwrap(),
        Response::Proof { .. }
    ));
    // UA's first publish is audit entry 1 (entry 0 is the roster): UA may prove it, PL may not
    let events = audit_events(broker.store());
    let first_publish = events
        .iter()
        .position(|e| matches!(e, ewx_proto::audit::Event::Published { .. }))
        .unwrap() as u64;
    assert!(matches!(
        ua.request(&Request::InclusionProof {
            index: first_publish,
            size: 10
        })
        .await
        .unwrap(),
        Response::Proof { .. }
    ));
    assert!(
        pl.request(&Request::InclusionProof {
            index: first_publish,
            size: 10
        })
        .await
        .is_err()
    );
    assert!(
        pl.request(&Request::GetEnvelope { log_index: 0 })
            .await
            .is_err()
    );
    assert!(matches!(
        ua.request(&Request::GetEnvelope { log_index: 0 })
            .await
            .unwrap(),
        Response::Bytes { bytes: Some(_) }
    ));
    broker.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_kind_of_tampering_is_caught_at_the_right_index() {
    let net = TestNet::new();
    busy_store(&net).await;
    let audit_len = verify_copy(&net.data_dir(), &net.roster, 0)
        .await
        .unwrap()
        .entries;
    let at = |r: ewx_client::Result<Summary>| match r {
        Err(Error::Unsound(f)) => f,
        other => panic!("expected an unsound log, got {other:?}"),
    };

    // an entry edited (and re-encoded so it still decodes)
    let f = at(tampered(&net, |db, _| {
        let audit = db.open_tree("audit").unwrap();
        let mut e = ewx_proto::audit::Entry::decode(&audit.get(key(7)).unwrap().unwrap()).unwrap();
        e.time_ms += 1;
        audit.insert(key(7), e.encode().unwrap()).unwrap();
    })
    .await);
    assert_eq!(f.index, 7, "{f}");
    assert!(f.reason.contains("altered"), "{f}");

    // an entry deleted
    let f = at(tampered(&net, |db, _| {
        db.open_tree("audit").unwrap().remove(key(12)).unwrap();
    })
    .await);
    assert_eq!(f.index, 12, "{f}");
    assert!(f.reason.contains("missing"), "{f}");

    // two entries swapped
    let f = at(tampered(&net, |db, _| {
        let audit = db.open_tree("audit").unwrap();
        let (a, b) = (
            audit.get(key(20)).unwrap().unwrap(),
            audit.get(key(21)).unwrap().unwrap(),
        );
        audit.insert(key(20), b).unwrap();
        audit.insert(key(21), a).unwrap();
    })
    .await);
    assert_eq!(f.index, 20, "{f}");

    // the tail cut off
    let f = at(tampered(&net, |db, _| {
        let audit = db.open_tree("audit").unwrap();
        for i in audit_len - 5..audit_len {
            audit.remove(key(i)).unwrap();
        }
    })
    .await);
    assert_eq!(f.index, audit_len - 5, "{f}");
    assert!(f.reason.contains("missing"), "{f}");

    // a checkpoint's signature swapped for another checkpoint's
    let f = at(tampered(&net, |db, _| {
        let cps = db.open_tree("checkpoints").unwrap();
        let all: Vec<_> = cps.iter().map(|kv| kv.unwrap()).collect();
        assert!(all.len() >= 2, "need two checkpoints");
        let first = ewx_proto::checkpoint::SignedCheckpoint::decode(&all[0].1).unwrap();
        let mut last =
            ewx_proto::checkpoint::SignedCheckpoint::decode(&all[all.len() - 1].1).unwrap();
        last.signature = first.signature;
        cps.insert(&all[all.len() - 1].0, last.encode().unwrap())
            .unwrap();
    })
    .await);
    assert_eq!(f.index, audit_len, "{f}");
    assert!(f.reason.contains("bad signature"), "{f}");

    // an envelope replaced by another one (its place pointed at another's bytes)
    let f = at(tampered(&net, |db, _| {
        let places = db.open_tree("places").unwrap();
        let other = places.get(key(9)).unwrap().unwrap();
        places.insert(key(10), other).unwrap();
    })
    .await);
    assert!(f.reason.contains("does not match its audit entry"), "{f}");

    // the last byte of an envelope changed where it is kept: in sled (a small commit) or
    // in a segment file (tag 1, then segment, offset, length)
    let f = at(tampered(&net, |db, dir| {
        use std::io::{Read, Seek, SeekFrom, Write};
        let places = db.open_tree("places").unwrap();
        let mut value = places.get(key(12)).unwrap().unwrap().to_vec();
        if value[0] == 0 {
            let last = value.len() - 1;
            value[last] ^= 1;
            places.insert(key(12), value).unwrap();
            return;
        }
        let word = |at: usize| u64::from_be_bytes(value[at..at + 8].try_into().unwrap());
        let len = u64::from(u32::from_be_bytes(value[17..21].try_into().unwrap()));
        let (segment, at) = (word(1), word(9) + len - 1);
        let path = dir.join("segments").join(format!("{segment:020}.seg"));
        let mut f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .unwrap();
        let mut b = [0u8];
        f.seek(SeekFrom::Start(at)).unwrap();
        f.read_exact(&mut b).unwrap();
        f.seek(SeekFrom::Start(at)).unwrap();
        f.write_all(&[b[0] ^ 1]).unwrap();
    })
    .await);
    assert!(
        f.reason.contains("envelope 12") && f.reason.contains("does not match"),
        "{f}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn witnesses_cosign_a_growing_log_and_detect_a_fork() {
    use ewx_client::audit::{Witnessed, witness_once};
    let net = TestNet::new();
    busy_store(&net).await;
    let broker = net.start_broker().await;
    let (pl, jp) = (
        net.client(&broker, "PL").await,
        net.client(&broker, "JP").await,
    );
    let (out, pl_seen) = witness_once(&pl, None).await.unwrap();
    assert!(matches!(out, Witnessed::Cosigned { .. }), "{out:?}");
    let (out, jp_seen) = witness_once(&jp, None).await.unwrap();
    assert!(matches!(out, Witnessed::Cosigned { .. }), "{out:?}");
    // more traffic, a new checkpoint: consistent, co-signed again
    let ua = net.client(&broker, "UA").await;
    for i in 0..60 {
        ua.publish(bulletin(
            "ew.air",
            Level::Amber,
            "CORE",
            Precedence::Routine,
            &format!("n{i}"),
        ))
        .await
        .unwrap();
    }
    tokio::time::sleep(std::time::Duration::from_millis(400)).await;
    let (out, pl_seen) = witness_once(&pl, pl_seen.as_deref()).await.unwrap();
    assert!(matches!(out, Witnessed::Cosigned { .. }), "{out:?}");
    let (out, _) = witness_once(&jp, jp_seen.as_deref()).await.unwrap();
    assert!(matches!(out, Witnessed::Cosigned { .. }), "{out:?}");
    let auditor = net.client(&broker, "AUDIT1").await;
    let summary = audit::verify(&auditor, net.roster.clone(), 2, &mut |_, _| {}).await;
    ua.close().await;
    auditor.close().await;
    pl.close().await;
    jp.close().await;
    broker.shutdown().await.unwrap();
    // the log is sound and its last checkpoint carries both witnesses
    let summary = summary.unwrap();
    assert_eq!(summary.witnesses, vec![id("PL"), id("JP")]);
    let offline = verify_copy(&net.data_dir(), &net.roster, 2).await.unwrap();
    assert_eq!(offline.witnesses.len(), 2);

    // the same broker identity shows PL a different history (another store)
    let other = TestNet::new();
    let forked = other.start_broker().await;
    let ua2 = other.client(&forked, "UA").await;
    for i in 0..200 {
        ua2.publish(bulletin(
            "ew.air",
            Level::Amber,
            "CORE",
            Precedence::Routine,
            &format!("other {i}"),
        ))
        .await
        .unwrap();
    }
    tokio::time::sleep(std::time::Duration::from_millis(400)).await;
    let pl2 = other.client(&forked, "PL").await;
    let (out, kept) = witness_once(&pl2, pl_seen.as_deref()).await.unwrap();
    assert!(matches!(out, Witnessed::Fork { .. }), "{out:?}");
    assert_eq!(kept, pl_seen, "a fork never replaces what the witness saw");
    forked.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_audit_bundle_proves_a_message_offline() {
    use ewx_client::audit::Bundle;
    let net = TestNet::new();
    let broker = net.start_broker().await;
    let ua = net.client(&broker, "UA").await;
    let mut id = None;
    for i in 0..30 {
        let ack = ua
            .publish(bulletin(
                "ew.air",
                Level::Amber,
                "CORE",
                Precedence::Flash,
                &format!("w{i}"),
            ))
            .await
            .unwrap();
        if i == 11 {
            id = Some(ack.id);
        }
    }
    let id = id.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(400)).await; // a checkpoint
    let pl = net.client(&broker, "PL").await;
    ewx_client::audit::witness_once(&pl, None).await.unwrap();
    let auditor = net.client(&broker, "AUDIT1").await;
    let online = audit::bundle(&auditor, &id).await.unwrap();
    let report = Bundle::decode(&online.encode().unwrap())
        .unwrap()
        .verify(&net.roster)
        .unwrap();
    assert_eq!((report.id, report.sender.clone()), (id, id_of("UA")));
    assert_eq!(report.witnesses, vec![id_of("PL")]);
    // PL is not an auditor: it cannot build one from the broker
    assert!(audit::bundle(&pl, &id).await.is_err());
    for c in [ua, pl, auditor] {
        c.close().await;
    }
    broker.shutdown().await.unwrap();

    let copy = StoreCopy::open(&net.data_dir()).unwrap();
    let offline = audit::bundle(&copy, &id).await.unwrap();
    offline.verify(&net.roster).unwrap();
    // any change breaks it
    let mut t = offline.clone();
    t.envelope[40] ^= 1;
    assert!(t.verify(&net.roster).is_err());
    let mut t = offline.clone();
    t.proof[0].0[0] ^= 1;
    assert!(
        t.verify(&net.roster)
            .unwrap_err()
            .to_string()
            .contains("inclusion")
    );
    let mut t = offline.clone();
    t.index += 1;
    assert!(t.verify(&net.roster).is_err());
    // a roster from another council is refused
    let mut other = roster_body(1, &[]);
    other.council.truncate(2);
    other.threshold = 1;
    let mut s = ewx_proto::SignedRoster::new(&other).unwrap();
    s.sign(&council_key(0));
    let mut t = offline.clone();
    t.roster = s.encode().unwrap();
    assert!(
        t.verify(&net.roster)
            .unwrap_err()
            .to_string()
            .contains("council")
    );
}

fn id_of(s: &str) -> ewx_proto::NodeId {
    ewx_proto::NodeId::new(s).unwrap()
}
