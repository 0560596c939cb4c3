//! Case reminders: the writer hands them over once the step that decided them is
//! durable; a task pushes each to every connection of its party, on a stream with the
//! IMMEDIATE lane's priority. A party that is offline misses the push, not the case: its
//! client folds the case's thread and shows the deadline on its own.

use std::sync::Arc;

use ewx_proto::Precedence;
use ewx_proto::frame::Push;
use tokio::sync::mpsc;

use super::Shared;
use super::fanout::Relay;
use crate::core::cases::Reminding;
use crate::log::{Fanout, Stored};

/// Reminders waiting for the push task; when full, more are dropped with a warning (the
/// writer never waits for a slow push).
const QUEUE: usize = 4096;

/// What the writer hands committed work to: messages to the routing index, reminders to
/// the push task.
pub(crate) struct Outlet {
    fanout: Relay,
    reminders: mpsc::Sender<Reminding>,
}

impl Outlet {
    /// An outlet over the fan-out, and the receiving end for [`push_reminders`].
    pub(crate) fn new(fanout: Relay) -> (Self, mpsc::Receiver<Reminding>) {
        let (reminders, rx) = mpsc::channel(QUEUE);
        (Self { fanout, reminders }, rx)
    }
}

impl Fanout for Outlet {
    fn committed(&self, messages: Vec<Arc<Stored>>) {
        self.fanout.committed(messages);
    }

    fn remind(&self, reminders: Vec<Reminding>) {
        for r in reminders {
            if self.reminders.try_send(r).is_err() {
                tracing::warn!("case reminder dropped: the push queue is full");
            }
        }
    }
}

/// Push reminders to their parties until shutdown.
pub(crate) async fn push_reminders(shared: Arc<Shared>, mut rx: mpsc::Receiver<Reminding>) {
    loop {
        let (node, reminder) = tokio::select! {
            _ = shared.cancel.cancelled() => return,
            r = rx.recv() => match r { Some(r) => r, None => return },
        };
        tracing::info!(
            %node, case = %reminder.case, stage = %reminder.stage, due_ms = reminder.due_ms,
            "case reminder"
        );
        shared.push_with(Some(&node), Push::Reminder(reminder), Precedence::Immediate);
    }
}
