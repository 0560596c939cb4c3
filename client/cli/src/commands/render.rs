//! How things look on a terminal and in JSON lines. Exercise traffic is always framed by
//! an EXERCISE banner, first and last, so it can never be mistaken for a real warning.

use std::fmt::Write as _;

use anyhow::Result;
use ewx_client::Delivery;
use ewx_proto::{Compartment, Payload, SignedRoster};

const EXERCISE: &str = "===== EXERCISE EXERCISE EXERCISE =====";

pub use ewx_cli::text::utc;

pub fn body(p: &Payload) -> String {
    match p {
        Payload::Bulletin(b) => format!("{}\n  {}", b.headline, b.body),
        Payload::ExerciseNotice(e) => format!(
            "{}: {} ({} troops, {} tanks, {} aircraft) in {}, {} to {}",
            e.name,
            e.purpose,
            e.troops,
            e.tanks,
            e.aircraft,
            e.area,
            utc(e.start_ms),
            utc(e.end_ms)
        ),
        Payload::ConsultationRequest(c) => format!(
            "CONSULTATION REQUEST {}: {}\n  consult by {}, decide by {}",
            c.case_id,
            c.summary,
            utc(c.consult_by_ms),
            utc(c.decide_by_ms)
        ),
        Payload::ConsultationResponse(r) => {
            format!("CONSULTATION {} {:?}: {}", r.case_id, r.stance, r.statement)
        }
        Payload::SanctionsTrigger(s) => format!(
            "SANCTIONS {}: {} from {}",
            s.regime,
            s.measure,
            utc(s.effective_ms)
        ),
        Payload::CeasefireReport(c) => format!(
            "CEASEFIRE BREACH {:?} x{} seen by {:?} at {:.5},{:.5} (±{} m) between {} and {}: {}",
            c.observed,
            c.count,
            c.sensor,
            f64::from(c.location.lat_e6) / 1e6,
            f64::from(c.location.lon_e6) / 1e6,
            c.location.precision_m,
            utc(c.window.start_ms),
            utc(c.window.end_ms),
            c.description
        ),
        Payload::Stix(json) => format!("STIX 2.1 bundle ({} bytes)", json.len()),
        Payload::CaseReply(r) => {
            let mut s = format!("CASE REPLY: {}", r.text);
            if let Some(d) = r.decision {
                s.push_str(&format!(" (decision: {d:?})"));
            }
            if let Some(t) = r.in_force_ms {
                s.push_str(&format!(" (in force from {})", utc(t)));
            }
            if let Some(st) = &r.statement {
                s.push_str(&format!(" (statement: {st})"));
            }
            s
        }
        Payload::Finding(f) => {
            let mut s = format!(
                "COMMISSION FINDING {}: {} — {}\n  {}",
                ewx_proto::case::finding_hash(f).short(),
                f.verdict,
                f.characterisation,
                f.reasoning
            );
            if let Some(r) = &f.remedy {
                s.push_str(&format!(
                    "\n  remedy within {}: {}",
                    ewx_cli::text::span(r.within_ms),
                    r.text
                ));
            }
            s
        }
    }
}

/// Human form of a delivery.
pub fn human(d: &Delivery) -> String {
    let h = d.envelope.header();
    let mut out = String::new();
    if h.labels.exercise {
        let _ = writeln!(out, "{EXERCISE}");
    }
    let _ = writeln!(
        out,
        "[{}] {}  #{}  {} -> {}  {}",
        h.precedence,
        utc(h.created_ms),
        d.log_index,
        h.sender,
        h.topic,
        h.labels
    );
    let _ = writeln!(
        out,
        "  {}",
        d.payload
            .as_ref()
            .map_or_else(|| "(still sealed)".into(), body)
    );
    for f in exercise_flags(d) {
        let _ = writeln!(out, "  FLAG {f}");
    }
    if h.labels.exercise {
        let _ = writeln!(out, "{EXERCISE}");
    }
    out
}

/// One JSON object for a delivery.
pub fn json(d: &Delivery) -> serde_json::Value {
    let h = d.envelope.header();
    serde_json::json!({
        "log_index": d.log_index,
        "id": h.id.to_string(),
        "sender": h.sender.as_str(),
        "seq": h.seq,
        "topic": h.topic.as_str(),
        "kind": h.kind.as_str(),
        "precedence": h.precedence.as_str(),
        "labels": {
            "level": h.labels.level.as_str(),
            "compartments": h.labels.compartments.iter().map(Compartment::as_str).collect::<Vec<_>>(),
            "rel_to": h.labels.rel_to.iter().map(|n| n.as_str()).collect::<Vec<_>>(),
            "exercise": h.labels.exercise,
        },
        "exercise": h.labels.exercise,
        "created_ms": h.created_ms,
        "envelope_hash": d.envelope.hash().to_string(),
        "payload": serde_json::to_value(&d.payload).unwrap_or(serde_json::Value::Null),
        "flags": exercise_flags(d).iter().map(ToString::to_string).collect::<Vec<_>>(),
    })
}

/// Vienna Document flags of an exercise notice, against its sealing time.
fn exercise_flags(d: &Delivery) -> Vec<ewx_proto::exercise::Flag> {
    match &d.payload {
        Some(Payload::ExerciseNotice(n)) => {
            ewx_proto::exercise::flags(n, d.envelope.header().created_ms)
        }
        _ => Vec::new(),
    }
}

/// The roster as a table.
pub fn roster_table(draft: &SignedRoster) -> Result<String> {
    let b = draft.body()?;
    let verified = draft.verify();
    let mut out = String::new();
    let _ = writeln!(
        out,
        "roster {:?} version {} issued {}",
        b.network,
        b.version,
        utc(b.issued_ms)
    );
    let _ = writeln!(
        out,
        "signatures: {} of {} needed — {}",
        draft.signatures.len(),
        b.threshold,
        match &verified {
            Ok(_) => "valid".to_string(),
            Err(e) => format!("NOT VALID: {e}"),
        }
    );
    for m in &b.council {
        let signed = draft.signatures.iter().any(|s| s.key == m.key);
        let _ = writeln!(
            out,
            "  council {:<12} key {}  {}",
            m.name,
            m.key.key_id(),
            if signed { "signed" } else { "-" }
        );
    }
    let _ = writeln!(
        out,
        "\n{:<8} {:<8} {:<13} {:<44} {:<16} publish / subscribe",
        "node", "role", "clearance", "compartments", "key id"
    );
    for n in &b.nodes {
        let comps: Vec<&str> = n
            .grants
            .compartments
            .iter()
            .map(Compartment::as_str)
            .collect();
        let pubs: Vec<&str> = n.grants.publish.iter().map(|p| p.as_str()).collect();
        let subs: Vec<&str> = n.grants.subscribe.iter().map(|p| p.as_str()).collect();
        let _ = writeln!(
            out,
            "{:<8} {:<8} {:<13} {:<44} {:<16} {} / {}{}",
            n.id.as_str(),
            n.role.to_string(),
            n.grants.clearance.as_str(),
            if comps.is_empty() {
                "-".to_string()
            } else {
                comps.join(",")
            },
            n.sign.key_id().to_string(),
            if pubs.is_empty() {
                "-".to_string()
            } else {
                pubs.join(" ")
            },
            if subs.is_empty() {
                "-".to_string()
            } else {
                subs.join(" ")
            },
            if n.revoked { "  REVOKED" } else { "" }
        );
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    #[test]
    fn utc_dates() {
        assert_eq!(super::utc(0), "1970-01-01 00:00:00Z");
        assert_eq!(super::utc(951_782_400_000), "2000-02-29 00:00:00Z");
        assert_eq!(super::utc(1_795_591_849_902), "2026-11-25 07:30:49Z");
    }
}
