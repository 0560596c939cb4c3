//! How a case looks to people and to scripts: the matrix of parties × stages with log
//! times, late and overdue marks and the countdown to each deadline (`ewx case show`,
//! `ewx demo`), a one-line summary (`ewx case list`), and the same as JSON.

use std::fmt::Write as _;

use ewx_client::cases::CaseView;
use ewx_proto::Payload;
use ewx_proto::case::{Case, CaseType, Stage, Status};
use serde_json::{Value, json};

use crate::text::{after, span, utc};

/// The stages shown as columns for a case type.
fn columns(case: &Case) -> &'static [Stage] {
    Stage::party_stages(case.case_type)
}

fn title(case: &Case) -> &'static str {
    match case.case_type {
        CaseType::Consultation => "CONSULTATION",
        CaseType::Snapback => "SNAPBACK",
        CaseType::Exercise => "EXERCISE NOTIFICATION",
        CaseType::Attribution => "ATTRIBUTION",
    }
}

/// Where a case stands, in words.
pub fn state(case: &Case) -> String {
    match case.status {
        Status::Open if case.case_type == CaseType::Snapback => format!(
            "attesting ({} of {} needed)",
            case.attestations.len(),
            case.threshold.max(1)
        ),
        Status::Open if case.case_type == CaseType::Attribution => format!(
            "signing ({} of {} needed)",
            most_signatures(case),
            case.threshold.max(1)
        ),
        Status::Open => "open".into(),
        Status::Fired { at_ms } if !case.cites.is_empty() => {
            format!("FIRED by a finding at {}", after(case.opened_ms, at_ms))
        }
        Status::Fired { at_ms } => format!("FIRED at {}", after(case.opened_ms, at_ms)),
        Status::Adopted { at_ms } => format!("ADOPTED at {}", after(case.opened_ms, at_ms)),
        Status::Withdrawn { at_ms } => format!("withdrawn at {}", after(case.opened_ms, at_ms)),
    }
}

/// The most members that have signed one finding so far.
fn most_signatures(case: &Case) -> usize {
    case.signatures()
        .into_iter()
        .map(|(_, n)| n)
        .max()
        .unwrap_or(0)
}

/// The lines only some case types have: citations, findings and dissents, what each
/// exercise notice changed.
fn specifics(view: &CaseView, out: &mut String) {
    let case = &view.case;
    for c in &case.cites {
        let what = match case.case_type {
            CaseType::Snapback => "fired by finding",
            _ => "cites report",
        };
        let _ = writeln!(out, "  {what:<16} {} (hash {})", c.id, c.hash.short());
    }
    for id in &case.unchecked {
        let _ = writeln!(
            out,
            "  note: citation {id} not checked here (not in this thread)"
        );
    }
    for v in &case.votes {
        let adopted = case.adopted.is_some_and(|(h, _)| h == v.hash);
        let mark = match (v.stage, adopted) {
            (Stage::Finding, true) => " ADOPTED",
            (Stage::Dissent, true) => " (from the adopted finding)",
            _ => "",
        };
        let terms = v
            .characterisation
            .map(|c| format!(" {c}"))
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "  {:<8} {:<8} {}{terms}{mark}  at {}",
            v.stage.as_str(),
            v.node.as_str(),
            v.hash.short(),
            after(case.opened_ms, v.log_ms)
        );
    }
    for item in &view.items {
        if let Some(Payload::Finding(f)) = &item.payload {
            if case
                .adopted_vote()
                .is_some_and(|v| v.log_index == item.log_index)
            {
                let _ = writeln!(out, "  finding   {} — {}", f.verdict, f.characterisation);
                if let Some(r) = &f.remedy {
                    let _ = writeln!(out, "  remedy    {} (within {})", r.text, span(r.within_ms));
                }
            }
        }
    }
    for r in view.revisions().iter().skip(1) {
        let _ = writeln!(out, "  {} at {}", r.stage, after(case.opened_ms, r.log_ms));
        for c in &r.changes {
            let _ = writeln!(out, "    {}: {} -> {}", c.field, c.before, c.after);
        }
        for f in &r.grew {
            let _ = writeln!(out, "    FLAG {f}");
        }
    }
}

/// One cell: when the party answered (LATE if after the deadline), or what is pending.
fn cell(case: &Case, party: &ewx_proto::NodeId, stage: Stage, now_ms: u64) -> String {
    let p = &case.parties[party];
    if let Some(a) = p.answer(stage) {
        let late = if a.late { " LATE" } else { "" };
        return format!("{}{late}", after(case.opened_ms, a.log_ms));
    }
    if matches!(case.status, Status::Withdrawn { .. }) {
        return "—".into();
    }
    match case.due(stage) {
        Some(due) if now_ms > due => "— OVERDUE".into(),
        Some(due) => format!("— due in {}", span(due - now_ms)),
        None if case.case_type == CaseType::Snapback && case.fired_ms.is_none() => {
            "— (not fired)".into()
        }
        None => "—".into(),
    }
}

/// The deadlines, each with its countdown or who missed it.
fn deadlines(case: &Case, now_ms: u64) -> String {
    let parts: Vec<String> = case
        .deadlines()
        .into_iter()
        .map(|d| {
            let when = after(case.opened_ms, d.due_ms);
            if now_ms >= d.due_ms {
                let missing = case.missing(d.stage, d.due_ms);
                let names: Vec<&str> = missing.iter().map(|n| n.as_str()).collect();
                format!(
                    "{} due {when}: PASSED, missing {}",
                    d.stage,
                    if names.is_empty() {
                        "none".into()
                    } else {
                        names.join(" ")
                    }
                )
            } else {
                format!("{} due {when} (in {})", d.stage, span(d.due_ms - now_ms))
            }
        })
        .collect();
    if parts.is_empty() {
        "none yet".into()
    } else {
        parts.join("; ")
    }
}

/// The matrix of `ewx case show`: a header, the deadlines, parties × stages, then any
/// message this node could not fold and any disagreement with the broker's record.
pub fn matrix(view: &CaseView, now_ms: u64) -> String {
    let case = &view.case;
    let mut out = String::new();
    let exercise = case.labels.exercise;
    if exercise {
        let _ = writeln!(out, "===== EXERCISE EXERCISE EXERCISE =====");
    }
    let _ = writeln!(
        out,
        "{} {}  opened by {} at {}  [{}]",
        title(case),
        case.id,
        case.opener,
        utc(case.opened_ms),
        state(case)
    );
    let _ = writeln!(out, "  labels     {}", case.labels);
    if let Some(s) = case.statement.filter(|_| case.cites.is_empty()) {
        let who: Vec<&str> = case.attestations.iter().map(|a| a.node.as_str()).collect();
        let _ = writeln!(
            out,
            "  statement  {}  attested by {}",
            s.short(),
            who.join(" ")
        );
    }
    let _ = writeln!(out, "  deadlines  {}", deadlines(case, now_ms));
    specifics(view, &mut out);
    let cols = columns(case);
    let _ = write!(out, "  {:<8}", "party");
    for s in cols {
        let _ = write!(out, "{:<24}", s.as_str());
    }
    let _ = writeln!(out);
    for party in case.parties.keys() {
        let _ = write!(out, "  {:<8}", party.as_str());
        for s in cols {
            let _ = write!(out, "{:<24}", cell(case, party, *s, now_ms));
        }
        let _ = writeln!(out);
    }
    for item in view.items.iter().filter(|i| i.note.is_some()) {
        let _ = writeln!(
            out,
            "  note: #{} {}",
            item.log_index,
            item.note.as_deref().unwrap_or("")
        );
    }
    for d in &view.disagreements {
        let _ = writeln!(out, "  DISAGREES WITH THE BROKER: {d}");
    }
    if exercise {
        let _ = writeln!(out, "===== EXERCISE EXERCISE EXERCISE =====");
    }
    out.lines().map(|l| format!("{}\n", l.trim_end())).collect()
}

/// The line of `ewx case list`: type, id, opener, state, next deadline, answers.
pub fn summary(view: &CaseView, now_ms: u64) -> String {
    let case = &view.case;
    let next = case
        .deadlines()
        .into_iter()
        .find(|d| d.due_ms > now_ms)
        .map_or_else(
            || "no deadline ahead".into(),
            |d| format!("next: {} in {}", d.stage, span(d.due_ms - now_ms)),
        );
    let last = columns(case).last().copied();
    let done = last.map_or(0, |s| {
        case.parties
            .values()
            .filter(|p| p.answer(s).is_some())
            .count()
    });
    let ex = if case.labels.exercise {
        "EXERCISE "
    } else {
        ""
    };
    format!(
        "{ex}{:<12} {}  by {:<4} {:<24} {}/{} answered  {next}",
        title(case),
        case.id,
        case.opener.as_str(),
        state(case),
        done,
        case.parties.len()
    )
}

/// The case as JSON (`--json`).
pub fn to_json(view: &CaseView, now_ms: u64) -> Value {
    let case = &view.case;
    let parties: serde_json::Map<String, Value> = case
        .parties
        .iter()
        .map(|(n, p)| {
            let stages: serde_json::Map<String, Value> = columns(case)
                .iter()
                .map(|s| {
                    let v = match p.answer(*s) {
                        Some(a) => {
                            json!({"log_index": a.log_index, "log_ms": a.log_ms, "late": a.late})
                        }
                        None => json!({"overdue": case.due(*s).is_some_and(|d| now_ms > d)}),
                    };
                    (s.as_str().to_string(), v)
                })
                .collect();
            (n.to_string(), Value::Object(stages))
        })
        .collect();
    let deadlines: Vec<Value> = case
        .deadlines()
        .into_iter()
        .map(|d| {
            let passed = now_ms >= d.due_ms;
            let missing: Vec<String> = case
                .missing(d.stage, d.due_ms)
                .iter()
                .map(|n| n.to_string())
                .collect();
            json!({"stage": d.stage.as_str(), "due_ms": d.due_ms, "passed": passed,
                   "remaining_ms": d.due_ms.saturating_sub(now_ms), "missing": missing})
        })
        .collect();
    json!({
        "case": case.id.to_string(),
        "type": case.case_type.as_str(),
        "opener": case.opener.as_str(),
        "opened_ms": case.opened_ms,
        "labels": case.labels.to_string(),
        "exercise": case.labels.exercise,
        "state": state(case),
        "fired_ms": case.fired_ms,
        "attestations": case.attestations.iter().map(|a| a.node.to_string()).collect::<Vec<_>>(),
        "threshold": case.threshold,
        "cites": case.cites.iter().map(|c| json!({"id": c.id.to_string(), "hash": c.hash.to_string()})).collect::<Vec<_>>(),
        "unchecked": case.unchecked.iter().map(|c| c.to_string()).collect::<Vec<_>>(),
        "votes": case.votes.iter().map(|v| json!({"stage": v.stage.as_str(), "node": v.node.as_str(), "hash": v.hash.to_string(), "characterisation": v.characterisation.map(|c| c.as_str()), "log_ms": v.log_ms})).collect::<Vec<_>>(),
        "adopted": case.adopted.map(|(h, at)| json!({"hash": h.to_string(), "at_ms": at})),
        "revisions": view.revisions().iter().map(|r| json!({"stage": r.stage.as_str(), "log_ms": r.log_ms,
            "changes": r.changes.iter().map(|c| json!({"field": c.field, "before": c.before, "after": c.after})).collect::<Vec<_>>(),
            "flags": r.grew.iter().map(|f| f.to_string()).collect::<Vec<_>>()})).collect::<Vec<_>>(),
        "deadlines": deadlines,
        "parties": parties,
        "recorded_by_broker": view.recorded.iter().map(|(s, m)| json!({"stage": s.as_str(), "missing": m.iter().map(|n| n.to_string()).collect::<Vec<_>>()})).collect::<Vec<_>>(),
        "disagreements": view.disagreements,
        "notes": view.items.iter().filter_map(|i| i.note.as_ref().map(|n| json!({"log_index": i.log_index, "note": n}))).collect::<Vec<_>>(),
    })
}
