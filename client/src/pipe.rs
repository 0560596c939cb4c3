//! The publish pipes: one long-lived request stream per connection and precedence on which
//! publishes go back to back, answered by the broker in the order they were sent. A warning then costs
//! no QUIC stream of its own to open, finish and acknowledge, on either side. Answers are
//! matched to requests by position; when the stream breaks, every publish still waiting
//! learns that its envelope may or may not be stored (retrying it is safe).

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use ewx_net::wire::{Wait, read_msg, write_msg};
use ewx_proto::Precedence;
use ewx_proto::frame::{Request, Response};
use tokio::sync::oneshot;

use crate::connection::{MAX_FRAME, RESPONSE_WAIT};
use crate::error::{Error, Result};

type Answer = oneshot::Sender<Result<Response>>;

/// Requests sent and not yet answered, oldest first; `broken` once the stream failed.
#[derive(Default)]
struct Waiting {
    queue: VecDeque<Answer>,
    broken: Option<String>,
}

impl Waiting {
    /// Mark the pipe broken and tell everyone still waiting why.
    fn break_with(&mut self, addr: SocketAddr, reason: &str) {
        self.broken.get_or_insert_with(|| reason.to_string());
        for answer in self.queue.drain(..) {
            let _ = answer.send(Err(lost(addr, reason)));
        }
    }
}

fn lost(addr: SocketAddr, reason: &str) -> Error {
    Error::Connect {
        addr,
        reason: format!(
            "{reason} before the broker answered (the message may or may not be stored; \
             publishing the same envelope again is safe)"
        ),
    }
}

/// One pipe on one connection.
pub(crate) struct Pipe {
    addr: SocketAddr,
    conn_id: usize,
    send: tokio::sync::Mutex<quinn::SendStream>,
    waiting: Arc<Mutex<Waiting>>,
}

impl std::fmt::Debug for Pipe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pipe")
            .field("conn_id", &self.conn_id)
            .finish_non_exhaustive()
    }
}

impl Pipe {
    /// Open a pipe for publishes of one precedence on `conn` (QUIC sends the streams of
    /// higher precedence first) and start reading its answers.
    pub(crate) async fn open(
        conn: &quinn::Connection,
        addr: SocketAddr,
        precedence: Precedence,
    ) -> Result<Arc<Self>> {
        let (send, mut recv) = conn.open_bi().await.map_err(|e| Error::Connect {
            addr,
            reason: e.to_string(),
        })?;
        let _ = send.set_priority(precedence as i32);
        let waiting = Arc::new(Mutex::new(Waiting::default()));
        let answers = waiting.clone();
        tokio::spawn(async move {
            let reason = loop {
                match read_msg::<Response>(&mut recv, MAX_FRAME, Wait::Idle).await {
                    Ok(Some(response)) => {
                        let next = lock(&answers).queue.pop_front();
                        let Some(answer) = next else {
                            break "the broker answered a request not sent".to_string();
                        };
                        let _ = answer.send(match response {
                            Response::Rejected { reason, detail } => {
                                Err(Error::Rejected { reason, detail })
                            }
                            r => Ok(r),
                        });
                    }
                    Ok(None) => break "the broker closed the publish stream".to_string(),
                    Err(e) => break format!("the publish stream broke: {e}"),
                }
            };
            lock(&answers).break_with(addr, &reason);
        });
        Ok(Arc::new(Self {
            addr,
            conn_id: conn.stable_id(),
            send: tokio::sync::Mutex::new(send),
            waiting,
        }))
    }

    /// Whether this pipe is still usable on the connection `conn_id`.
    pub(crate) fn serves(&self, conn_id: usize) -> bool {
        self.conn_id == conn_id && lock(&self.waiting).broken.is_none()
    }

    /// Send `req` down the pipe and wait for its answer.
    ///
    /// # Errors
    /// `Rejected` if the broker refuses it, `Connect` if the stream broke first or no
    /// answer came within [`RESPONSE_WAIT`].
    pub(crate) async fn request(&self, req: &Request) -> Result<Response> {
        let (answer, answered) = oneshot::channel();
        {
            // the order of writes is the order of answers: queue and write under one lock
            let mut send = self.send.lock().await;
            {
                let mut waiting = lock(&self.waiting);
                if let Some(reason) = &waiting.broken {
                    return Err(Error::Connect {
                        addr: self.addr,
                        reason: reason.clone(),
                    });
                }
                waiting.queue.push_back(answer);
            }
            if let Err(e) = write_msg(&mut send, req, MAX_FRAME).await {
                // a frame cut short would garble the stream: end it for good
                let _ = send.reset(0u32.into());
                lock(&self.waiting).break_with(self.addr, &format!("sending failed: {e}"));
            }
        }
        match tokio::time::timeout(RESPONSE_WAIT, answered).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(lost(self.addr, "the publish stream ended")),
            Err(_) => Err(lost(
                self.addr,
                &format!("no answer within {} s", RESPONSE_WAIT.as_secs()),
            )),
        }
    }
}

fn lock(w: &Mutex<Waiting>) -> std::sync::MutexGuard<'_, Waiting> {
    w.lock().unwrap_or_else(|p| p.into_inner())
}
