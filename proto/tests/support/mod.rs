//! A broker's log in miniature for the case tests: the case book it keeps from headers,
//! the audit chain it writes, and what a party was delivered.
#![allow(dead_code)]

use std::collections::HashMap;

use ewx_proto::audit::{Chain, Event, Verifier};
use ewx_proto::case::{CaseBook, CaseMessage, CaseTag, CaseType, Refusal, Stage};
use ewx_proto::{Digest32, Kind, Labels, Level, MessageId, NodeId, Precedence, Roster, Topic};
use ewx_testkit::{Network, id};

pub const T0: u64 = 1_800_000_000_000;
pub const H: u64 = 3_600_000;

pub fn core_labels() -> Labels {
    Labels::new(Level::Amber, Labels::parse_compartments("CORE").unwrap())
}

pub fn sanctions_labels() -> Labels {
    Labels::new(
        Level::Amber,
        Labels::parse_compartments("SANCTIONS").unwrap(),
    )
}

pub fn ceasefire_labels() -> Labels {
    Labels::new(
        Level::Amber,
        Labels::parse_compartments("CEASEFIRE").unwrap(),
    )
}

pub fn nodes(names: &[&str]) -> Vec<NodeId> {
    names.iter().map(|n| id(n)).collect()
}

/// A broker's log in miniature: the case book it keeps from headers, and the audit chain
/// it writes (deadlines recorded before anything logged at or after them).
pub struct Log {
    pub roster: Roster,
    pub book: CaseBook,
    pub chain: Chain,
    pub entries: Vec<Vec<u8>>,
    pub next: u64,
    /// What a party's client was delivered: every accepted case message, in log order.
    pub delivered: Vec<Delivered>,
    /// The reports a party was delivered (noted for citations).
    pub notes: Vec<(MessageId, Kind, Labels, Digest32)>,
}

/// A delivered case message: id, sender, kind, labels, tag, log index, log time.
pub type Delivered = (MessageId, NodeId, Kind, Labels, CaseTag, u64, u64);

impl Log {
    pub fn new() -> Self {
        Self::with(Network::compact().roster())
    }

    /// A log under `roster`.
    pub fn with(roster: Roster) -> Self {
        let mut log = Self {
            roster,
            book: CaseBook::new(),
            chain: Chain::new(),
            entries: Vec::new(),
            next: 0,
            delivered: Vec::new(),
            notes: Vec::new(),
        };
        let event = Event::RosterChanged {
            version: log.roster.version(),
            hash: log.roster.hash(),
        };
        log.append(T0 - H, event);
        log
    }

    pub fn append(&mut self, t: u64, event: Event) {
        let (_, bytes) = self.chain.append(t, event).unwrap();
        self.entries.push(bytes);
    }

    /// Time passes to `t`: record every deadline due.
    pub fn at(&mut self, t: u64) {
        for d in self.book.due(t) {
            let event = Event::CaseDeadline {
                case: d.case,
                stage: d.stage,
                due_ms: d.due_ms,
                missing: d.missing.clone(),
            };
            self.append(t, event);
            self.book.record(&d);
        }
    }

    pub fn send(
        &mut self,
        t: u64,
        from: &str,
        labels: &Labels,
        tag: CaseTag,
    ) -> Result<MessageId, Refusal> {
        self.send_kind(t, from, labels, tag, Kind::CaseReply)
    }

    fn next_id(&mut self) -> MessageId {
        self.next += 1;
        let mut raw = [0u8; 16];
        raw[..8].copy_from_slice(&self.next.to_be_bytes());
        MessageId(raw)
    }

    /// Log a message without a case (a ceasefire report, say): its id and envelope hash.
    pub fn publish(
        &mut self,
        t: u64,
        from: &str,
        labels: &Labels,
        kind: Kind,
    ) -> (MessageId, Digest32) {
        self.at(t);
        let mid = self.next_id();
        let hash = Digest32([self.next as u8; 32]);
        self.book.note(mid, kind, labels, hash);
        let event = Event::Published {
            id: mid,
            sender: id(from),
            seq: self.next,
            topic: Topic::new("ceasefire.report").unwrap(),
            kind,
            precedence: Precedence::Immediate,
            labels: labels.clone(),
            log_index: self.next,
            envelope_hash: hash,
            case: None,
        };
        self.append(t, event);
        self.notes.push((mid, kind, labels.clone(), hash));
        (mid, hash)
    }

    /// Log a case message of payload `kind`.
    pub fn send_kind(
        &mut self,
        t: u64,
        from: &str,
        labels: &Labels,
        tag: CaseTag,
        kind: Kind,
    ) -> Result<MessageId, Refusal> {
        self.at(t);
        let mid = self.next_id();
        let sender = id(from);
        let msg = CaseMessage {
            id: mid,
            sender: &sender,
            kind,
            labels,
            tag: &tag,
            log_index: self.next,
            log_ms: t,
        };
        self.book.apply(&msg, &self.roster)?;
        let event = Event::Published {
            id: mid,
            sender: sender.clone(),
            seq: self.next,
            topic: Topic::new("consult.request").unwrap(),
            kind,
            precedence: Precedence::Immediate,
            labels: labels.clone(),
            log_index: self.next,
            envelope_hash: Digest32([7; 32]),
            case: Some(tag.clone()),
        };
        self.append(t, event);
        self.delivered
            .push((mid, sender, kind, labels.clone(), tag, self.next, t));
        Ok(mid)
    }

    pub fn reply(
        &mut self,
        t: u64,
        from: &str,
        case: MessageId,
        ty: CaseType,
        stage: Stage,
    ) -> Result<MessageId, Refusal> {
        let labels = match ty {
            CaseType::Consultation => core_labels(),
            CaseType::Snapback => sanctions_labels(),
            CaseType::Exercise | CaseType::Attribution => ceasefire_labels(),
        };
        self.send(t, from, &labels, CaseTag::reply(case, ty, stage))
    }

    /// An auditor's replay of the audit log (envelopes pruned: headers only).
    pub fn audit(&self) -> Result<CaseBook, String> {
        let mut v = Verifier::new(self.roster.clone()).unwrap();
        let rosters: HashMap<u64, Vec<u8>> = HashMap::from([(
            self.roster.version(),
            self.roster.signed().encode().unwrap(),
        )]);
        let mut lookup = (HashMap::new(), rosters);
        for e in &self.entries {
            v.push(e, &mut lookup).map_err(|f| f.to_string())?;
        }
        let book = v.cases().clone();
        v.finish(&[], &HashMap::new(), 0)
            .map_err(|f| f.to_string())?;
        Ok(book)
    }

    /// A party's fold of what it was delivered.
    pub fn party(&self) -> CaseBook {
        let mut book = CaseBook::new();
        for (mid, kind, labels, hash) in &self.notes {
            book.note(*mid, *kind, labels, *hash);
        }
        for (mid, sender, kind, labels, tag, index, t) in &self.delivered {
            let msg = CaseMessage {
                id: *mid,
                sender,
                kind: *kind,
                labels,
                tag,
                log_index: *index,
                log_ms: *t,
            };
            book.apply(&msg, &self.roster).unwrap();
        }
        book
    }
}
