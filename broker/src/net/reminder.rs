//! Case reminders and receipts: the writer hands them over once the step that decided
//! them is durable (on every replica of a cluster alike); a task pushes each to this
//! broker's connections of its node — reminders on a stream with the IMMEDIATE lane's
//! priority. A party that is offline misses the push, not the case: its client folds the
//! case's thread and shows the deadline on its own, and receipts stay in the audit log.

use std::sync::Arc;

use ewx_proto::frame::Push;
use ewx_proto::receipt::Receipt;
use ewx_proto::{NodeId, Precedence};
use tokio::sync::mpsc;

use super::Shared;
use super::fanout::Relay;
use crate::core::cases::Reminding;
use crate::log::{Fanout, Stored};

/// Reminders waiting for the push task; when full, more are dropped with a warning (the
/// writer never waits for a slow push).
const QUEUE: usize = 4096;

/// A push the writer decided: a case reminder to a party, or a receipt to the sender of
/// the message it is for.
pub(crate) enum Notice {
    Reminder(Reminding),
    Receipt(NodeId, Receipt),
}

/// What the writer hands committed work to: messages to the routing index, reminders
/// and receipts to the push task.
pub(crate) struct Outlet {
    fanout: Relay,
    reminders: mpsc::Sender<Notice>,
}

impl Outlet {
    /// An outlet over the fan-out, and the receiving end for [`push_reminders`].
    pub(crate) fn new(fanout: Relay) -> (Self, mpsc::Receiver<Notice>) {
        let (reminders, rx) = mpsc::channel(QUEUE);
        (Self { fanout, reminders }, rx)
    }
}

impl Fanout for Outlet {
    fn committed(&self, messages: Vec<Arc<Stored>>) {
        self.fanout.committed(messages);
    }

    fn behind(&self) -> bool {
        self.fanout.behind()
    }

    fn grown(&self) {
        self.fanout.grown();
    }

    fn remind(&self, reminders: Vec<Reminding>) {
        for r in reminders {
            if self.reminders.try_send(Notice::Reminder(r)).is_err() {
                tracing::warn!("case reminder dropped: the push queue is full");
            }
        }
    }

    fn receipted(&self, receipts: Vec<(NodeId, Receipt)>) {
        for (to, r) in receipts {
            if self.reminders.try_send(Notice::Receipt(to, r)).is_err() {
                tracing::warn!("receipt not forwarded: the push queue is full");
            }
        }
    }
}

/// Push reminders to their parties and receipts to the senders until shutdown.
pub(crate) async fn push_reminders(shared: Arc<Shared>, mut rx: mpsc::Receiver<Notice>) {
    loop {
        let notice = tokio::select! {
            _ = shared.cancel.cancelled() => return,
            r = rx.recv() => match r { Some(r) => r, None => return },
        };
        let (node, reminder) = match notice {
            Notice::Reminder(r) => r,
            Notice::Receipt(to, receipt) => {
                shared.push(Some(&to), Push::Receipt(receipt));
                continue;
            }
        };
        tracing::info!(
            %node, case = %reminder.case, stage = %reminder.stage, due_ms = reminder.due_ms,
            "case reminder"
        );
        shared.push_with(Some(&node), Push::Reminder(reminder), Precedence::Immediate);
    }
}
