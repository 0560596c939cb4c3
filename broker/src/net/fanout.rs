//! The fan-out: committed messages go from the writer to a thread of their own, which
//! asks the routing index which lanes want each one and queues it for them. So routing
//! never delays the next commit, and every lane is woken only for what it delivers.
//! What all lane queues hold together is bounded; past that a lane is marked lagged and
//! reads from the log instead.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, mpsc as std_mpsc};

use ewx_net::RosterCell;
use ewx_proto::Precedence;
use tokio::sync::{Notify, mpsc};

use crate::core::routing::{LaneId, RoutingIndex};
use crate::core::subscription::SubscriptionSpec;
use crate::log::{Fanout, Stored};

/// Bytes of committed messages all lane queues may pin at once (a message counts once,
/// however many lanes hold it): what the old shared ring of 4096 could pin.
const QUEUED_BYTES: usize = 64 << 20;
/// Commits the fan-out thread may be behind before the writer waits for it.
const BACKLOG: usize = 64;

/// Where the routing index puts a lane's messages.
#[derive(Debug)]
pub(super) struct LaneSink {
    /// Bounded (`limits.live_buffer`): when full, the message is dropped here and the
    /// lane marked [`Lag`] — it reads the message from the log instead.
    tx: mpsc::Sender<Arc<Queued>>,
    lag: Arc<Lag>,
}

/// A committed message in one or more lane queues; what it pins is released when the
/// last lane drops it.
#[derive(Debug)]
pub(super) struct Queued {
    pub stored: Arc<Stored>,
    cost: usize,
    budget: Arc<AtomicUsize>,
}

impl Drop for Queued {
    fn drop(&mut self) {
        self.budget.fetch_sub(self.cost, Ordering::Relaxed);
    }
}

/// A lane's mark that its live queue overflowed, and the wake-up that goes with it (so
/// a lane that drained its queue before the mark was set still catches up at once).
#[derive(Debug, Default)]
pub(super) struct Lag {
    flag: AtomicBool,
    pub wake: Notify,
}

impl Lag {
    fn set(&self) {
        self.flag.store(true, Ordering::Release);
        self.wake.notify_one();
    }

    /// Was the mark set (and clear it)?
    pub fn take(&self) -> bool {
        self.flag.swap(false, Ordering::AcqRel)
    }
}

/// What a queued message counts against [`QUEUED_BYTES`].
fn cost(m: &Stored) -> usize {
    m.bytes.as_ref().map_or(0, bytes::Bytes::len) + 128
}

/// The open lanes and what their queues hold.
#[derive(Debug)]
pub(crate) struct Routes {
    index: Mutex<RoutingIndex<LaneSink>>,
    roster: RosterCell,
    /// Bytes pinned by [`Queued`] messages.
    queued: Arc<AtomicUsize>,
}

impl Routes {
    pub(crate) fn new(roster: RosterCell) -> Self {
        Self {
            index: Mutex::default(),
            roster,
            queued: Arc::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, RoutingIndex<LaneSink>> {
        self.index.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queue committed messages for the lanes that want them.
    fn route(&self, messages: &[Arc<Stored>]) {
        let roster = self.roster.get();
        let index = self.lock();
        for m in messages {
            let mut queued: Option<Arc<Queued>> = None;
            for sink in index.route(&m.header, &roster) {
                let q = match &queued {
                    Some(q) => q.clone(),
                    None => {
                        let c = cost(m);
                        if self.queued.load(Ordering::Relaxed) + c > QUEUED_BYTES {
                            sink.lag.set(); // over the bound: this lane reads the log
                            continue;
                        }
                        self.queued.fetch_add(c, Ordering::Relaxed);
                        let q = Arc::new(Queued {
                            stored: m.clone(),
                            cost: c,
                            budget: self.queued.clone(),
                        });
                        queued = Some(q.clone());
                        q
                    }
                };
                if sink.tx.try_send(q).is_err() {
                    sink.lag.set();
                }
            }
        }
    }
}

/// A lane in the routing index for as long as this lives.
pub(super) struct Registered<'a>(&'a Routes, LaneId);

impl<'a> Registered<'a> {
    pub(super) fn new(
        routes: &'a Routes,
        spec: Arc<SubscriptionSpec>,
        precedence: Precedence,
        tx: mpsc::Sender<Arc<Queued>>,
        lag: &Arc<Lag>,
    ) -> Self {
        let sink = LaneSink {
            tx,
            lag: lag.clone(),
        };
        let id = routes.lock().add(spec, precedence, sink);
        Self(routes, id)
    }
}

impl Drop for Registered<'_> {
    fn drop(&mut self) {
        self.0.lock().remove(self.1);
    }
}

/// The writer's side of the fan-out: hands each commit's messages to the fan-out thread.
#[derive(Debug)]
pub(crate) struct Relay(std_mpsc::SyncSender<Vec<Arc<Stored>>>);

impl Fanout for Relay {
    fn committed(&self, messages: Vec<Arc<Stored>>) {
        // full: the fan-out is BACKLOG commits behind, and the writer waits for it;
        // gone: shutting down, nobody is left to deliver to
        let _ = self.0.send(messages);
    }
}

/// Start the fan-out thread over `routes`; it ends when the writer drops the relay.
///
/// # Errors
/// If the thread cannot be spawned.
pub(crate) fn spawn(routes: Arc<Routes>) -> std::io::Result<Relay> {
    let (tx, rx) = std_mpsc::sync_channel::<Vec<Arc<Stored>>>(BACKLOG);
    std::thread::Builder::new()
        .name("ewx-fanout".into())
        .spawn(move || {
            for messages in rx {
                routes.route(&messages);
            }
        })?;
    Ok(Relay(tx))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::fixture::{roster, warning};
    use ewx_proto::TopicPattern;
    use ewx_proto::frame::ExerciseFilter;

    #[test]
    fn a_full_queue_marks_the_lane_lagged_and_the_budget_is_returned() {
        let roster = roster();
        let routes = Routes::new(RosterCell::new(roster.clone()));
        let spec = Arc::new(SubscriptionSpec {
            node: ewx_testkit::id("PL"),
            name: "desk".into(),
            pattern: TopicPattern::new("ew.>").unwrap(),
            filter: ExerciseFilter::All,
        });
        let (tx, mut rx) = mpsc::channel(2);
        let lag = Arc::new(Lag::default());
        let registered = Registered::new(&routes, spec, Precedence::Flash, tx, &lag);
        let messages: Vec<Arc<Stored>> = (0..5)
            .map(|i| {
                let env = warning(&roster, i + 1);
                Arc::new(Stored {
                    index: i,
                    header: env.header().clone(),
                    bytes: Some(env.encode().unwrap().into()),
                })
            })
            .collect();
        routes.route(&messages);
        assert!(lag.take(), "three did not fit: the lane must catch up");
        assert!(!lag.take());
        assert!(routes.queued.load(Ordering::Relaxed) > 0);
        let first = rx.try_recv().unwrap();
        assert_eq!(first.stored.index, 0);
        drop(first);
        drop(registered);
        routes.route(&messages); // no lane any more: nothing queued
        rx.close();
        while rx.try_recv().is_ok() {}
        assert_eq!(routes.queued.load(Ordering::Relaxed), 0);
    }
}
