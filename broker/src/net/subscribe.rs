//! Subscribe, ack and unsubscribe: the grant check (a refusal is audited as `Denied`),
//! the per-connection cap, durable start cursors and `Subscribed` entry, then one lane
//! task per precedence; acks move the durable cursor with one `Delivered` entry per ack
//! batch, never per message.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use ewx_proto::audit::Event;
use ewx_proto::frame::{ExerciseFilter, RejectReason, Response, StartAt};
use ewx_proto::{Precedence, TopicPattern};
use tracing::Instrument;

use super::lane::Lane;
use super::session::{Outcome, Session};
use crate::core::Rejection;
use crate::core::subscription::{SubscriptionSpec, check_subscription, lane_starts};
use crate::log::cursor_key;

fn fail(reason: RejectReason, detail: String) -> Outcome {
    Err((Rejection::new(reason, detail), None))
}

impl Session {
    pub(super) async fn subscribe(
        self: &Arc<Self>,
        name: String,
        pattern: TopicPattern,
        from: StartAt,
        filter: ExerciseFilter,
    ) -> Outcome {
        let shared = &self.shared;
        let spec = SubscriptionSpec {
            node: self.node.clone(),
            name,
            pattern,
            filter,
        };
        if let Err(r) = check_subscription(&spec, &shared.roster.get()) {
            return Ok(self.deny(&spec, r).await);
        }
        let cap = shared.config.limits.max_subscriptions_per_connection;
        {
            let subs = self.subs.lock().unwrap_or_else(|p| p.into_inner());
            if subs.len() >= cap && !subs.contains_key(&spec.name) {
                return fail(
                    RejectReason::RateLimited,
                    format!("at most {cap} subscriptions per connection"),
                );
            }
        }
        let head = shared.head.next_index.load(Ordering::Acquire);
        let starts = lane_starts(from, head, |p| {
            shared.log.cursor(&cursor_key(&spec.node, &spec.name, p))
        })
        .map_err(|e| (Rejection::new(RejectReason::Internal, e.to_string()), None))?;
        let cursors: Vec<_> = starts
            .iter()
            .filter(|s| s.write_cursor)
            .map(|s| (cursor_key(&spec.node, &spec.name, s.precedence), s.start))
            .collect();
        let event = Event::Subscribed {
            node: spec.node.clone(),
            subscription: spec.name.clone(),
            pattern: spec.pattern.clone(),
        };
        if !shared.writer.set_cursors(cursors, Some(event)).await {
            return fail(
                RejectReason::StorageFull,
                "cannot store the subscription".into(),
            );
        }
        let token = self.cancel.child_token();
        let replaced = self
            .subs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(spec.name.clone(), token.clone());
        if let Some(old) = replaced {
            old.cancel();
        }
        let spec = Arc::new(spec);
        for s in starts {
            let lane = Lane::new(shared.clone(), self.conn.clone(), spec.clone(), s);
            let span = tracing::info_span!("lane", sub = %spec.name, precedence = %s.precedence);
            shared.tasks.spawn(lane.run(token.clone()).instrument(span));
        }
        tracing::info!(sub = %spec.name, pattern = %spec.pattern, "subscribed");
        Ok(Response::Subscribed {
            name: spec.name.clone(),
            next_index: head,
        })
    }

    /// A refused subscription: audited as `Denied` (not as `Rejected` too), folded like
    /// every other rejection on this connection.
    async fn deny(&self, spec: &SubscriptionSpec, r: Rejection) -> Response {
        let (own, folded) = self
            .lock_limiter()
            .admit(self.shared.config.clock.now_ms(), &r.detail);
        if let Some(e) = folded {
            self.shared.writer.audit(e).await;
        }
        if own {
            let denied = Event::Denied {
                node: spec.node.clone(),
                pattern: spec.pattern.to_string(),
                reason: r.detail.clone(),
            };
            self.shared.writer.audit(denied).await;
        }
        tracing::warn!(pattern = %spec.pattern, "subscription denied: {}", r.detail);
        r.into_response()
    }

    pub(super) async fn ack(&self, name: &str, precedence: Precedence, through: u64) -> Outcome {
        let open = self
            .subs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains_key(name);
        let head = self.shared.head.next_index.load(Ordering::Acquire);
        let advances = self
            .acks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .advances(open, name, precedence, through, head)
            .map_err(|r| (r, None))?;
        if !advances {
            return Ok(Response::Done); // nothing new: no cursor write, no audit entry
        }
        let key = cursor_key(&self.node, name, precedence);
        let event = Event::Delivered {
            to: self.node.clone(),
            subscription: name.to_owned(),
            precedence,
            through_index: through,
        };
        if !self
            .shared
            .writer
            .set_cursors(vec![(key, through + 1)], Some(event))
            .await
        {
            return fail(RejectReason::StorageFull, "cannot store the cursor".into());
        }
        self.acks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .record(name, precedence, through);
        Ok(Response::Done)
    }

    pub(super) fn unsubscribe(&self, name: &str) -> Response {
        let token = self
            .subs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(name);
        if let Some(t) = token {
            t.cancel();
        }
        Response::Done
    }
}
