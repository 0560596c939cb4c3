//! Case helpers for the end-to-end tests: drafts and replies placed where each case type
//! goes, the case refusal of a rejected publish, reminders and `CaseDeadline` entries
//! awaited with a bound, and a monitor's breach report.

use std::time::Duration;

use ewx_client::{Client, Error};
use ewx_proto::audit::Event;
use ewx_proto::case::{CaseTag, CaseType, RefusalKind, Reminder, Stage};
use ewx_proto::ceasefire::{CeasefireReport, Observed, Place, Sensor, Window};
use ewx_proto::frame::RejectReason;
use ewx_proto::payload::CaseReply;
use ewx_proto::{Draft, Labels, Level, MessageId, Payload, Topic};
use tokio::sync::mpsc::Receiver;

use crate::audit_events;

pub fn labels(compartment: &str) -> Labels {
    Labels::new(
        Level::Amber,
        Labels::parse_compartments(compartment).unwrap(),
    )
}

pub fn draft(topic: &str, labels: Labels, payload: Payload, tag: CaseTag) -> Draft {
    ewx_client::cases::case_draft(Topic::new(topic).unwrap(), labels, payload, tag)
}

pub fn text(t: &str) -> Payload {
    Payload::CaseReply(CaseReply {
        text: t.into(),
        decision: None,
        in_force_ms: None,
        statement: None,
    })
}

pub async fn reply(
    c: &Client,
    case: MessageId,
    ty: CaseType,
    stage: Stage,
) -> ewx_client::Result<u64> {
    let (topic, level, comps) = ewx_client::cases::placement(ty);
    let mut l = Labels::new(level, Labels::parse_compartments(comps).unwrap());
    l.exercise = ty == CaseType::Exercise;
    let d = draft(
        topic,
        l,
        text(stage.as_str()),
        CaseTag::reply(case, ty, stage),
    );
    c.publish_case(d).await.map(|a| a.log_index)
}

pub fn refused(r: ewx_client::Result<u64>) -> RefusalKind {
    match r {
        Err(Error::Rejected {
            reason: RejectReason::Case(k),
            ..
        }) => k,
        other => panic!("expected a case refusal, got {other:?}"),
    }
}

/// The next reminder within a few seconds (the broker ticks every 200 ms here).
pub async fn reminder(rx: &mut Receiver<Reminder>) -> Option<Reminder> {
    tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .ok()
        .flatten()
}

/// No reminder for a while.
pub async fn no_reminder(rx: &mut Receiver<Reminder>) {
    let got = tokio::time::timeout(Duration::from_millis(800), rx.recv()).await;
    assert!(got.is_err(), "unexpected reminder {got:?}");
}

pub async fn deadlines(broker: &ewx_broker::Broker, n: usize) -> Vec<(Stage, Vec<String>)> {
    for _ in 0..50 {
        let found: Vec<_> = audit_events(broker.store())
            .into_iter()
            .filter_map(|e| match e {
                Event::CaseDeadline { stage, missing, .. } => {
                    Some((stage, missing.iter().map(|n| n.to_string()).collect()))
                }
                _ => None,
            })
            .collect();
        if found.len() >= n {
            return found;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("fewer than {n} CaseDeadline entries");
}

/// Is there (within 5 s: it goes into the next commit) a `Rejected` audit entry whose
/// reason contains `needle`?
pub async fn rejection_audited(broker: &ewx_broker::Broker, needle: &str) -> bool {
    for _ in 0..50 {
        let found = audit_events(broker.store())
            .into_iter()
            .any(|e| matches!(e, Event::Rejected { reason, .. } if reason.contains(needle)));
        if found {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

/// A coherent breach report of `count` events (window, place, camera, explosions).
pub fn breach(count: u32) -> CeasefireReport {
    CeasefireReport {
        window: Window {
            start_ms: 1_800_000_000_000,
            end_ms: 1_800_000_600_000,
        },
        location: Place {
            lat_e6: 48_015_000,
            lon_e6: 37_802_000,
            precision_m: 500,
        },
        sensor: Sensor::Camera,
        observed: Observed::UndeterminedExplosion,
        count,
        description: "two explosions south-east of the camera".into(),
        ..Default::default()
    }
}
