//! Who may read what of the audit log. Auditors read everything. Every node reads the
//! checkpoints, consistency proofs and rosters (what a witness needs), and the entries,
//! envelopes and inclusion proofs of its own messages and receipts — one at a time, so
//! a partner can prove its own traffic without seeing anyone else's.

use ewx_proto::audit::{Entry, Event};
use ewx_proto::frame::RejectReason;
use ewx_proto::{Envelope, NodeId, Role, Roster};

use super::Rejection;

/// Most audit entries or checkpoints sent in one answer.
pub const AUDIT_PAGE: u64 = 1024;

/// Is `node` an active auditor?
pub fn is_auditor(node: &NodeId, roster: &Roster) -> bool {
    roster.active(node).is_ok_and(|n| n.role == Role::Auditor)
}

/// Is this stored audit entry about `node`'s own message or receipt?
pub fn entry_is_about(node: &NodeId, entry: &[u8]) -> bool {
    match Entry::decode(entry).map(|e| e.event) {
        Ok(Event::Published { sender, .. }) => &sender == node,
        Ok(Event::Receipt(r)) => &r.by == node,
        _ => false,
    }
}

/// Was this stored envelope sent by `node`?
pub fn envelope_is_from(node: &NodeId, envelope: &[u8]) -> bool {
    Envelope::decode(envelope, usize::MAX).is_ok_and(|e| &e.header().sender == node)
}

/// The end (exclusive) of the page of entries from `from` asked with `limit`.
pub fn page_end(from: u64, limit: u32, audit_len: u64) -> u64 {
    from.saturating_add(u64::from(limit).min(AUDIT_PAGE))
        .min(audit_len)
}

/// The refusal of audit data the node may not read.
pub fn denied(what: &str) -> Rejection {
    Rejection::new(
        RejectReason::NotPermitted,
        format!("{what} is for auditors (or about your own messages)"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use ewx_proto::audit::Chain;
    use ewx_proto::{Digest32, Kind, Labels, Level, MessageId, Precedence, Topic};

    fn published(sender: &str) -> Vec<u8> {
        let event = Event::Published {
            id: MessageId([1; 16]),
            sender: NodeId::new(sender).unwrap(),
            seq: 1,
            topic: Topic::new("ew.air").unwrap(),
            kind: Kind::Bulletin,
            precedence: Precedence::Flash,
            labels: Labels::new(Level::Amber, []),
            log_index: 0,
            envelope_hash: Digest32::default(),
            case: None,
        };
        Chain::new().append(0, event).unwrap().1
    }

    #[test]
    fn nodes_read_only_entries_about_themselves_and_pages_are_bounded() {
        let ua = NodeId::new("UA").unwrap();
        let pl = NodeId::new("PL").unwrap();
        assert!(entry_is_about(&ua, &published("UA")));
        assert!(!entry_is_about(&pl, &published("UA")));
        assert!(!entry_is_about(&ua, b"junk"));
        assert_eq!(page_end(10, 5, 100), 15);
        assert_eq!(page_end(10, u32::MAX, 100_000), 10 + AUDIT_PAGE);
        assert_eq!(page_end(90, 50, 100), 100);
        assert_eq!(denied("the audit log").reason, RejectReason::NotPermitted);
    }
}
