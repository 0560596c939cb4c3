//! One authenticated connection: accept request streams, read the requests on each (one,
//! or many back to back from a publish pipe), dispatch each to the file for its kind,
//! answer in order, and log and audit every rejection (folded by the connection's
//! [`RejectLimiter`]).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ewx_net::wire::{Wait, read_frame, write_msg};
use ewx_proto::frame::{Request, Response, decode_body};
use ewx_proto::{Digest32, NodeId};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::Shared;
use crate::core::limiter::RejectLimiter;
use crate::core::subscription::AckBook;
use crate::core::{Rejection, reason_for};

/// How long a finished response may take to reach the client before the task gives up.
const RESPONSE_LINGER: Duration = Duration::from_secs(2);
/// Requests one stream may have in progress; a client sending more waits (flow control).
const PIPELINE: usize = 256;

/// What a request handler returns: the answer, or the rejection and the hash of the
/// envelope it concerned (for the audit entry).
pub(super) type Outcome = Result<Response, (Rejection, Option<Digest32>)>;

/// One authenticated connection.
pub(super) struct Session {
    pub shared: Arc<Shared>,
    pub conn: quinn::Connection,
    pub node: NodeId,
    /// Open subscriptions by name; cancelling one ends its lanes.
    pub subs: Mutex<HashMap<String, CancellationToken>>,
    /// Highest index acked per (subscription, lane): repeated acks write nothing.
    pub acks: Mutex<AckBook>,
    pub limiter: Mutex<RejectLimiter>,
    pub cancel: CancellationToken,
}

impl Session {
    pub(super) async fn run(shared: Arc<Shared>, conn: quinn::Connection, node: NodeId) {
        tracing::info!("connected");
        let id = conn.stable_id();
        shared
            .connections
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id, (node.clone(), conn.clone()));
        let session = Arc::new(Session {
            cancel: shared.cancel.child_token(),
            limiter: Mutex::new(RejectLimiter::new(Some(node.clone()), 10, 1000)),
            subs: Mutex::new(HashMap::new()),
            acks: Mutex::new(AckBook::default()),
            shared: shared.clone(),
            conn: conn.clone(),
            node,
        });
        let reason = loop {
            let (send, recv) = tokio::select! {
                _ = session.cancel.cancelled() => break "shutdown".to_string(),
                s = conn.accept_bi() => match s {
                    Ok(s) => s,
                    Err(e) => break e.to_string(),
                },
            };
            let s = session.clone();
            shared.tasks.spawn(s.requests(send, recv).in_current_span());
        };
        session.cancel.cancel();
        shared
            .connections
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&id);
        let folded = session.lock_limiter().flush(shared.config.clock.now_ms());
        if let Some(e) = folded {
            shared.writer.audit(e).await;
        }
        tracing::info!("disconnected: {reason}");
    }

    pub(super) fn lock_limiter(&self) -> std::sync::MutexGuard<'_, RejectLimiter> {
        self.limiter.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Log a rejection and write its audit entries (as the limiter folds them).
    async fn reject(&self, r: &Rejection, envelope_hash: Option<Digest32>) {
        tracing::warn!(reason = ?r.reason, "rejected: {}", r.detail);
        self.shared.metrics.rejected(r.reason);
        let events =
            self.lock_limiter()
                .record(self.shared.config.clock.now_ms(), r, envelope_hash);
        for e in events {
            self.shared.writer.audit(e).await;
        }
    }

    /// Serve one request stream. A client may send several requests on it back to back
    /// (a publish pipe); they are handled at once, concurrently, and answered in the
    /// order they came, so the client matches answers to requests by position.
    async fn requests(self: Arc<Self>, mut send: quinn::SendStream, mut recv: quinn::RecvStream) {
        let max = self.shared.max_frame();
        let (queue, mut answers) = mpsc::channel::<JoinHandle<Response>>(PIPELINE);
        let reading = async {
            let queue = queue; // dropped when reading ends, so the answers end too
            let budget = self.shared.request_budget.clone();
            // the first request must come promptly; later ones when the client has them
            let mut wait = Wait::Deadline;
            loop {
                // on shutdown no new request is read; those read are still answered
                let read = tokio::select! {
                    () = self.cancel.cancelled() => return,
                    r = read_frame(&mut recv, max, wait, Some(&budget)) => r,
                };
                wait = Wait::Idle;
                let s = self.clone();
                let answer = match read {
                    // the permit is held until the request is answered
                    Ok(Some((body, permit))) => self.shared.tasks.spawn(
                        async move {
                            let _permit = permit;
                            match decode_body::<Request>(&body, max) {
                                Ok(req) => s.handle(req).await,
                                Err(e) => s.refuse_frame(e).await,
                            }
                        }
                        .in_current_span(),
                    ),
                    Ok(None) => return,
                    // after a bad frame the stream cannot be read on: answer, then stop
                    Err(ewx_net::Error::Proto(e)) => {
                        let _ =
                            queue
                                .send(self.shared.tasks.spawn(
                                    async move { s.refuse_frame(e).await }.in_current_span(),
                                ))
                                .await;
                        return;
                    }
                    Err(e) => {
                        tracing::debug!("request stream failed: {e}");
                        return;
                    }
                };
                if queue.send(answer).await.is_err() {
                    return; // the answering side stopped
                }
            }
        };
        let answering = async {
            while let Some(answer) = answers.recv().await {
                let Ok(response) = answer.await else {
                    return; // shutting down
                };
                if let Err(e) = write_msg(&mut send, &response, max).await {
                    tracing::debug!("cannot answer: {e}");
                    return;
                }
            }
            let _ = send.finish();
            // wait until the client has the answers, so a shutdown right after cannot
            // drop them
            let _ = tokio::time::timeout(RESPONSE_LINGER, send.stopped()).await;
        };
        tokio::join!(reading, answering);
    }

    async fn refuse_frame(&self, e: ewx_proto::Error) -> Response {
        let r = Rejection::new(reason_for(&e), format!("bad request frame: {e}"));
        self.reject(&r, None).await;
        r.into_response()
    }

    async fn handle(self: &Arc<Self>, req: Request) -> Response {
        let result = match req {
            Request::Hello { roster_version } => Ok(self.hello(roster_version)),
            Request::Publish { envelope } => {
                let r = self.publish(envelope).await;
                self.shared
                    .metrics
                    .published(r.as_ref().err().map(|(r, _)| r.reason));
                r
            }
            Request::Subscribe {
                name,
                pattern,
                from,
                filter,
            } => self.subscribe(name, pattern, from, filter).await,
            Request::Ack {
                name,
                precedence,
                through,
            } => self.ack(&name, precedence, through).await,
            Request::Unsubscribe { name } => Ok(self.unsubscribe(&name)),
            Request::Receipt(r) => self.receipt(r).await,
            Request::UpdateRoster { roster } => self.update_roster(&roster).await,
            Request::Cases { limit } => self.cases(limit).await,
            Request::CaseThread { case, after } => self.case_thread(case, after).await,
            audit => self.audit_request(audit).await.map_err(|r| (r, None)),
        };
        match result {
            Ok(r) => r,
            Err((r, hash)) => {
                self.reject(&r, hash).await;
                r.into_response()
            }
        }
    }
}
