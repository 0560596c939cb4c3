//! The case fold at scale: 10 000 consultations with 30 parties each, every party
//! acknowledging, consulting and deciding (910 000 case messages), folded into one book
//! as the broker's index, a party and an auditor do. Run with
//! `cargo bench -p ewx-proto --bench cases`.
#![allow(clippy::unwrap_used, missing_docs)]

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use ewx_proto::case::{CaseBook, CaseMessage, CaseTag, CaseType, Stage};
use ewx_proto::{Labels, Level, MessageId, NodeId, Role, Roster};
use ewx_testkit::grants::grants;
use ewx_testkit::{Network, id};

const CASES: u32 = 10_000;
const PARTIES: usize = 30;
const T0: u64 = 1_800_000_000_000;

/// An opener and 30 liaisons who may read CORE.
fn roster() -> Roster {
    let g = grants(Level::Red, "CORE", &[">"], &[">"]);
    (0..=PARTIES)
        .fold(Network::new("bench").issued(T0), |net, i| {
            net.node(&format!("N{i}"), Role::Liaison, g.clone())
        })
        .roster()
}

/// Every message of every case, in log order: (id, sender, tag, log time).
fn messages() -> Vec<(MessageId, NodeId, CaseTag, u64)> {
    let parties: Vec<NodeId> = (1..=PARTIES).map(|i| id(&format!("N{i}"))).collect();
    let opener = id("N0");
    let mut out = Vec::new();
    let mut n = 0u64;
    let mut next_id = || {
        n += 1;
        let mut raw = [0u8; 16];
        raw[..8].copy_from_slice(&n.to_be_bytes());
        MessageId(raw)
    };
    for c in 0..CASES {
        let t = T0 + u64::from(c);
        let case = next_id();
        out.push((
            case,
            opener.clone(),
            CaseTag::open(CaseType::Consultation, parties.clone()),
            t,
        ));
        for stage in [Stage::Acknowledged, Stage::Consulted, Stage::Decided] {
            for p in &parties {
                out.push((
                    next_id(),
                    p.clone(),
                    CaseTag::reply(case, CaseType::Consultation, stage),
                    t + 1000,
                ));
            }
        }
    }
    out
}

/// Fold `msgs` into a fresh book.
fn fold_all(
    msgs: &[&(MessageId, NodeId, CaseTag, u64)],
    labels: &Labels,
    roster: &Roster,
) -> usize {
    let mut book = CaseBook::new();
    for (i, (mid, sender, tag, t)) in msgs.iter().enumerate() {
        let m = CaseMessage {
            id: *mid,
            sender,
            kind: ewx_proto::Kind::CaseReply,
            labels,
            tag,
            log_index: i as u64,
            log_ms: *t,
        };
        book.apply(&m, roster).unwrap();
    }
    book.len()
}

fn fold(c: &mut Criterion) {
    let roster = roster();
    let labels = Labels::new(Level::Amber, Labels::parse_compartments("CORE").unwrap());
    let msgs = messages();
    let all: Vec<_> = msgs.iter().collect();
    let opens: Vec<_> = msgs.iter().filter(|m| m.2.case.is_none()).collect();
    let mut g = c.benchmark_group("case_fold");
    g.sample_size(10);
    g.throughput(Throughput::Elements(all.len() as u64));
    g.bench_function("10000_cases_x_30_parties", |b| {
        b.iter(|| black_box(fold_all(&all, &labels, &roster)));
    });
    g.throughput(Throughput::Elements(opens.len() as u64));
    g.bench_function("10000_openings_x_30_parties", |b| {
        b.iter(|| black_box(fold_all(&opens, &labels, &roster)));
    });
    g.finish();
}

criterion_group!(benches, fold);
criterion_main!(benches);
