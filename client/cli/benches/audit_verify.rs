//! How fast an auditor verifies a large log: builds a store of N audit entries (default
//! 1 000 000; `EWX_AUDIT_ENTRIES` to change), a quarter of them `Published` with real
//! sealed 1 KiB envelopes, signed checkpoints every 10 000 entries, then times
//! `ewx_client::audit::verify` over a store copy and prints a table. Run with `cargo bench -p ewx-cli --bench
//! audit_verify`.
#![allow(clippy::unwrap_used)]

use std::time::Instant;

use ewx_broker::log::{Batch, NewMessage, Store};
use ewx_proto::audit::{Chain, Event};
use ewx_proto::checkpoint::{Checkpoint, SignedCheckpoint};
use ewx_proto::payload::{Bulletin, Payload};
use ewx_proto::{Digest32, Draft, EpochPolicy, Labels, Level, Precedence, Sealer, Topic};

fn main() {
    let n: u64 = std::env::var("EWX_AUDIT_ENTRIES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let dir = tempfile::tempdir().unwrap();
    let roster = ewx_testkit::Network::compact().roster();
    let broker = ewx_testkit::keys("BROKER");
    let (store, _) = Store::open(dir.path(), 60_000_000).unwrap();
    let mut sealer = Sealer::new(
        ewx_testkit::keys("UA"),
        EpochPolicy {
            max_messages: u32::MAX,
            max_age_ms: u64::MAX,
        },
    );
    let mut rng = rand::rngs::OsRng;
    let mut chain = Chain::new();
    let (mut log_index, mut prev_cp, mut cps) = (0u64, Digest32::default(), 0);
    let t_build = Instant::now();
    let mut batch = Batch {
        roster: Some((1, roster.signed().encode().unwrap())),
        ..Batch::default()
    };
    let now = 1_764_000_000_000u64;
    let (_, b) = chain
        .append(
            now,
            Event::RosterChanged {
                version: 1,
                hash: roster.hash(),
            },
        )
        .unwrap();
    batch.audit.push((0, b));
    while chain.len() < n {
        let i = chain.len();
        let event = if i % 4 == 1 {
            let draft = Draft {
                topic: Topic::new("ew.air.missile").unwrap(),
                precedence: Precedence::Flash,
                labels: Labels::new(Level::Amber, Labels::parse_compartments("CORE").unwrap()),
                payload: Payload::Bulletin(Bulletin {
                    headline: "warning".into(),
                    body: "x".repeat(1000),
                    area: None,
                    event_ms: None,
                    confidence: None,
                }),
                seq: i,
                expires_ms: None,
                receipt: false,
                case: None,
            };
            let env = sealer.seal(&roster, draft, now, &mut rng).unwrap();
            let h = env.header();
            let e = Event::published(&env, log_index);
            batch.messages.push(NewMessage {
                index: log_index,
                precedence: h.precedence,
                id: h.id,
                bytes: env.encode().unwrap().into(),
            });
            log_index += 1;
            e
        } else {
            Event::Delivered {
                to: ewx_testkit::keys("PL").node,
                subscription: "desk".into(),
                precedence: Precedence::Flash,
                through_index: log_index,
            }
        };
        let (entry, bytes) = chain.append(now + i, event).unwrap();
        batch.audit.push((entry.index, bytes));
        if chain.len() % 10_000 == 0 || chain.len() == n {
            let cp = Checkpoint {
                size: chain.len(),
                root: chain.tree().root(),
                prev: prev_cp,
                time_ms: now + i,
            };
            let signed = SignedCheckpoint::sign(&cp, &broker).unwrap();
            prev_cp = signed.body_hash();
            batch.checkpoint = Some((cp.size, signed.encode().unwrap()));
            cps += 1;
            store.commit(&batch).unwrap();
            batch = Batch::default();
        }
    }
    let build = t_build.elapsed();
    drop(store);
    let t = Instant::now();
    let copy = ewx_cli::offline::StoreCopy::open(dir.path()).unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let summary = runtime
        .block_on(ewx_client::audit::verify(&copy, roster, 0, &mut |_, _| {}))
        .unwrap();
    let verify = t.elapsed();
    println!(
        "audit verify benchmark ({} cores)",
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    println!("{:<34} {:>12}", "entries", summary.entries);
    println!(
        "{:<34} {:>12}",
        "envelopes (1 KiB, 8 recipients)", summary.envelopes
    );
    println!("{:<34} {:>12}", "checkpoints", cps);
    println!("{:<34} {:>10.1} s", "build the store", build.as_secs_f64());
    println!(
        "{:<34} {:>10.1} s",
        "ewx audit verify --store",
        verify.as_secs_f64()
    );
    println!(
        "{:<34} {:>10.0} /s",
        "entries verified",
        summary.entries as f64 / verify.as_secs_f64()
    );
}
