//! Cases at a party: the broker only says which messages belong to a case and when it
//! logged them; the client verifies each envelope under its own roster, opens what it
//! may read, and runs the same fold (`ewx_proto::case`) itself — then compares the
//! deadlines the broker recorded with its own result.

use ewx_proto::case::{
    Case, CaseBook, CaseEntry, CaseMessage, CaseTag, CaseThread, CaseType, Characterisation, Stage,
    ThreadMessage,
};
use ewx_proto::exercise;
use ewx_proto::frame::{Request, Response};
use ewx_proto::payload::ExerciseNotice;
use ewx_proto::roster::Role;
use ewx_proto::{
    Draft, Envelope, Header, Labels, MessageId, NodeId, NodeKeys, Opener, Payload, Precedence,
    Roster, Topic,
};

use crate::client::{Client, PublishAck};
use crate::error::{Error, Result};

/// One message of a case, as this node sees it.
#[derive(Debug, Clone)]
pub struct CaseItem {
    /// Message-log index.
    pub log_index: u64,
    /// The broker's log time.
    pub log_ms: u64,
    /// The verified header (`None`: pruned by retention, or withheld from this node).
    pub header: Option<Header>,
    /// What it says, if this node could open it.
    pub payload: Option<Payload>,
    /// Why it was not folded or opened, if so.
    pub note: Option<String>,
}

/// A case folded by this node.
#[derive(Debug, Clone)]
pub struct CaseView {
    /// The fold's state.
    pub case: Case,
    /// The thread, in log order.
    pub items: Vec<CaseItem>,
    /// Deadlines the broker recorded, with who it said was missing.
    pub recorded: Vec<(Stage, Vec<NodeId>)>,
    /// Where the broker's record and this node's fold differ (empty when sound).
    pub disagreements: Vec<String>,
}

impl CaseView {
    /// Fold a case from its thread: verify each envelope under `roster`, open it with
    /// `me` if given, and run the case fold with the broker's log times.
    ///
    /// # Errors
    /// `Audit` if the opening message is missing or does not fold.
    pub fn fold(
        thread: Vec<ThreadMessage>,
        recorded: Vec<(Stage, Vec<NodeId>)>,
        roster: &Roster,
        me: Option<&NodeKeys>,
    ) -> Result<Self> {
        let opener = Opener::default();
        let mut book = CaseBook::partial();
        let mut mismatched = Vec::new();
        let mut id = None;
        let mut items = Vec::with_capacity(thread.len());
        for m in thread {
            let mut item = CaseItem {
                log_index: m.log_index,
                log_ms: m.log_ms,
                header: None,
                payload: None,
                note: None,
            };
            let Some(bytes) = m.envelope else {
                item.note = Some("not available (pruned, or not readable by this node)".into());
                items.push(item);
                continue;
            };
            match Envelope::decode(&bytes, usize::MAX).and_then(|e| e.verify(roster).map(|_| e)) {
                Ok(env) => {
                    let h = env.header();
                    if let Some(tag) = &h.case {
                        let fits = ewx_proto::case::check_recipients(h);
                        let msg = CaseMessage {
                            id: h.id,
                            sender: &h.sender,
                            kind: h.kind,
                            labels: &h.labels,
                            tag,
                            log_index: m.log_index,
                            log_ms: m.log_ms,
                        };
                        match fits.and_then(|()| book.apply(&msg, roster)) {
                            Ok(()) => id = id.or(Some(tag.case.unwrap_or(h.id))),
                            Err(r) => item.note = Some(format!("refused by the fold: {r}")),
                        }
                    }
                    if let Some(keys) = me {
                        match opener.open(&env, roster, keys) {
                            Ok(Payload::Finding(f))
                                if h.case.as_ref().is_some_and(|t| !f.matches(t)) =>
                            {
                                mismatched.push(format!(
                                    "{}'s signed finding (#{}) does not say what its header says",
                                    h.sender, m.log_index
                                ));
                                item.payload = Some(Payload::Finding(f));
                            }
                            Ok(p) => item.payload = Some(p),
                            Err(e) => item.note = item.note.or(Some(format!("not opened: {e}"))),
                        }
                    }
                    item.header = Some(h.clone());
                }
                Err(e) => item.note = Some(format!("does not verify: {e}")),
            }
            items.push(item);
        }
        let case = id
            .and_then(|id| book.get(&id).cloned())
            .ok_or_else(|| Error::Audit("the case's opening message is not available".into()))?;
        let disagreements = mismatched
            .into_iter()
            .chain(recorded.iter()
            .filter_map(|(stage, missing)| {
                let due = case.due(*stage)?;
                let mine = case.missing(*stage, due);
                (&mine != missing).then(|| {
                    format!(
                        "broker recorded {stage} missing {missing:?}; this node's fold says {mine:?}"
                    )
                })
            }))
            .collect();
        Ok(Self {
            case,
            items,
            recorded,
            disagreements,
        })
    }

    /// The opening message's header.
    pub fn opening(&self) -> Option<&Header> {
        self.items
            .iter()
            .filter_map(|i| i.header.as_ref())
            .find(|h| h.id == self.case.id)
    }

    /// An exercise case's notices in log order (the opening, then each amendment and
    /// correction), with what each changed from the one before and the thresholds it
    /// grew past.
    pub fn revisions(&self) -> Vec<Revision<'_>> {
        let mut out: Vec<Revision<'_>> = Vec::new();
        for item in &self.items {
            let (Some(h), Some(Payload::ExerciseNotice(n))) = (&item.header, &item.payload) else {
                continue;
            };
            let stage = h.case.as_ref().map_or(Stage::Open, |t| t.stage);
            let (changes, grew) = match out.last() {
                Some(prev) => (
                    exercise::changes(prev.notice, n),
                    exercise::grew(prev.notice, n),
                ),
                None => (Vec::new(), Vec::new()),
            };
            out.push(Revision {
                stage,
                log_ms: item.log_ms,
                notice: n,
                changes,
                grew,
            });
        }
        out
    }

    /// A reply to this case by this node: the opening's topic and labels, IMMEDIATE.
    ///
    /// # Errors
    /// `Audit` if the opening message is not available.
    pub fn reply(&self, tag: CaseTag, payload: Payload) -> Result<Draft> {
        let h = self
            .opening()
            .ok_or_else(|| Error::Audit("the case's opening message is not available".into()))?;
        Ok(case_draft(h.topic.clone(), h.labels.clone(), payload, tag))
    }
}

/// One notice of an exercise case and what it changed.
#[derive(Debug, Clone)]
pub struct Revision<'a> {
    /// `Open`, `Amended` or `Corrected`.
    pub stage: Stage,
    /// When it was logged.
    pub log_ms: u64,
    /// The notice.
    pub notice: &'a ExerciseNotice,
    /// Fields changed from the notice before it.
    pub changes: Vec<exercise::Change>,
    /// Thresholds the activity grew past since the notice before it.
    pub grew: Vec<exercise::Flag>,
}

/// A case message to seal: on `topic` with `labels`, IMMEDIATE (a case answer needs
/// attention now, and a reminder of it comes on that lane too), with its case tag.
pub fn case_draft(topic: Topic, labels: Labels, payload: Payload, tag: CaseTag) -> Draft {
    Draft {
        topic,
        precedence: Precedence::Immediate,
        labels,
        payload,
        seq: 0,
        expires_ms: None,
        receipt: false,
        case: Some(tag),
    }
}

/// Where a case of each type goes by default: topic, level and compartments (an
/// exercise case is also labelled EXERCISE).
pub fn placement(case_type: CaseType) -> (&'static str, ewx_proto::Level, &'static str) {
    use ewx_proto::Level;
    match case_type {
        CaseType::Consultation => ("consult.request", Level::Amber, "CORE"),
        CaseType::Snapback => ("sanctions.snapback", Level::Amber, "SANCTIONS"),
        CaseType::Exercise => ("exercise.notice", Level::Clear, ""),
        CaseType::Attribution => ("ceasefire.attribution", Level::Amber, "CEASEFIRE"),
    }
}

/// The parties a case opened by `sender` expects by default: for a consultation every
/// liaison that may read `labels` but the sender, for a snapback every node that
/// receives content and may read them but the sender.
pub fn default_parties(
    roster: &Roster,
    sender: &NodeId,
    labels: &Labels,
    case_type: CaseType,
) -> Vec<NodeId> {
    roster
        .recipients(labels)
        .filter(|n| &n.id != sender)
        .filter(|n| case_type != CaseType::Consultation || n.role == Role::Liaison)
        .map(|n| n.id.clone())
        .collect()
}

impl Client {
    /// The cases this node may read, newest first.
    ///
    /// # Errors
    /// `Connect`, `Rejected`, `Unexpected`.
    pub async fn cases(&self, limit: u32) -> Result<Vec<CaseEntry>> {
        match self.request(&Request::Cases { limit }).await? {
            Response::Cases(list) => Ok(list),
            other => Err(Error::Unexpected(format!("{other:?}"))),
        }
    }

    /// Fetch a case's whole thread and fold it here.
    ///
    /// # Errors
    /// `Rejected` (`Case(UnknownCase)`) for a case this node may not read, `Audit` if its
    /// opening is not available, `Connect`, `Unexpected`.
    pub async fn case(&self, id: MessageId) -> Result<CaseView> {
        let mut messages = Vec::new();
        let mut after = None;
        loop {
            let page = match self
                .request(&Request::CaseThread { case: id, after })
                .await?
            {
                Response::CaseThread(t) => t,
                other => return Err(Error::Unexpected(format!("{other:?}"))),
            };
            let CaseThread {
                messages: got,
                more,
                recorded,
                ..
            } = page;
            after = got.last().map(|m| m.log_index);
            messages.extend(got);
            if !more || after.is_none() {
                let roster = self.roster();
                let mut view = CaseView::fold(messages, recorded, &roster, Some(self.keys()))?;
                self.check_finding(&mut view).await;
                return Ok(view);
            }
        }
    }

    /// A snapback fired by a finding: check, if this node may read the attribution case,
    /// that it holds that finding adopted and of armed attack (else it stays unchecked).
    async fn check_finding(&self, view: &mut CaseView) {
        let case = &view.case;
        let [cite] = *case.cites.as_slice() else {
            return;
        };
        if case.case_type != CaseType::Snapback || !case.unchecked.contains(&cite.id) {
            return;
        }
        let Ok(Response::CaseThread(t)) = self
            .request(&Request::CaseThread {
                case: cite.id,
                after: None,
            })
            .await
        else {
            return;
        };
        let Ok(attribution) = CaseView::fold(t.messages, t.recorded, &self.roster(), None) else {
            return;
        };
        let a = &attribution.case;
        let fires = a.adopted.is_some_and(|(h, _)| h == cite.hash)
            && a.adopted_vote().and_then(|v| v.characterisation)
                == Some(Characterisation::ArmedAttack);
        if fires {
            view.case.unchecked.retain(|id| *id != cite.id);
        } else {
            view.disagreements.push(format!(
                "case {} holds no adopted finding {} of armed attack",
                cite.id, cite.hash
            ));
        }
    }

    /// Publish a case message (a draft whose `case` tag is set).
    ///
    /// # Errors
    /// As [`Client::publish`]; the broker refuses with `Case(kind)` what the fold refuses.
    pub async fn publish_case(&self, draft: Draft) -> Result<PublishAck> {
        if draft.case.is_none() {
            return Err(Error::Audit("a case message needs its case tag".into()));
        }
        self.publish(draft).await
    }
}
