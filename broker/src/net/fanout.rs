//! The fan-out: committed messages go from the writer to a thread of their own, which
//! asks the routing index which lanes want each one and queues it for them. So routing
//! never delays the next commit, and every lane is woken only for what it delivers.
//! What all lane queues hold together is bounded; past that a lane is marked lagged and
//! reads from the log instead.
//!
//! **Backpressure**: each lane reports how much it still owes (its live queue, or how far
//! its catch-up is behind the head) and when it last sent. Before a ROUTINE or PRIORITY
//! commit the writer holds (briefly, bounded) while a lane that is moving owes more than
//! [`MAX_OWED`], so acks slow down to the pace of delivery instead of a durable backlog
//! growing. A lane that has not sent for [`STUCK`] does not count: a subscriber
//! that cannot keep up is left to catch up from the log and never slows the others.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock, Mutex, mpsc as std_mpsc};
use std::time::{Duration, Instant};

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

/// Messages a moving lane may owe before the writer holds the next ROUTINE commit.
const MAX_OWED: u64 = 1024;
/// A lane that has sent nothing for this long is stuck: it no longer holds the writer.
const STUCK: Duration = Duration::from_millis(250);

static EPOCH: LazyLock<Instant> = LazyLock::new(Instant::now);

/// Microseconds since the broker's first look at the clock (monotonic).
pub(super) fn now_us() -> u64 {
    EPOCH.elapsed().as_micros() as u64
}

/// What a lane still owes its subscriber, and when it last sent (µs since [`EPOCH`]).
#[derive(Debug)]
pub(super) struct Progress {
    owed: AtomicU64,
    sent_us: AtomicU64,
}

impl Default for Progress {
    fn default() -> Self {
        Self {
            owed: AtomicU64::new(0),
            sent_us: AtomicU64::new(now_us()),
        }
    }
}

impl Progress {
    /// The lane still owes `owed` messages (after a send, if `sent`).
    pub fn report(&self, owed: u64, sent: bool) {
        self.owed.store(owed, Ordering::Relaxed);
        if sent {
            self.sent_us.store(now_us(), Ordering::Relaxed);
        }
    }

    /// What it owes, if it is moving (sent within [`STUCK`]).
    fn owed_if_moving(&self, now: u64) -> u64 {
        let idle = now.saturating_sub(self.sent_us.load(Ordering::Relaxed));
        if idle > STUCK.as_micros() as u64 {
            0
        } else {
            self.owed.load(Ordering::Relaxed)
        }
    }
}

/// Where the routing index puts a lane's messages.
#[derive(Debug)]
pub(super) struct LaneSink {
    /// Bounded (`limits.live_buffer`): when full, the message is dropped here and the
    /// lane marked [`Lag`] — it reads the message from the log instead.
    tx: mpsc::Sender<Arc<Queued>>,
    lag: Arc<Lag>,
    progress: Arc<Progress>,
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

    /// Per subscribing node: its open lanes and the messages they owe together.
    pub(crate) fn lanes_by_node(&self) -> Vec<(String, u64, u64)> {
        let mut by: std::collections::BTreeMap<String, (u64, u64)> = Default::default();
        for (spec, sink) in self.lock().routes() {
            let e = by.entry(spec.node.to_string()).or_default();
            e.0 += 1;
            e.1 += sink.progress.owed.load(Ordering::Relaxed);
        }
        by.into_iter().map(|(n, (l, o))| (n, l, o)).collect()
    }

    /// The most a moving lane owes.
    fn most_owed(&self) -> u64 {
        let now = now_us();
        self.lock()
            .sinks()
            .map(|s| s.progress.owed_if_moving(now))
            .max()
            .unwrap_or(0)
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
        progress: &Arc<Progress>,
    ) -> Self {
        let sink = LaneSink {
            tx,
            lag: lag.clone(),
            progress: progress.clone(),
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

/// The writer's side of the fan-out: hands each commit's messages to the fan-out thread,
/// and holds the writer while moving lanes owe too much.
#[derive(Debug)]
pub(crate) struct Relay(std_mpsc::SyncSender<Vec<Arc<Stored>>>, Arc<Routes>);

impl Fanout for Relay {
    fn committed(&self, messages: Vec<Arc<Stored>>) {
        // full: the fan-out is BACKLOG commits behind, and the writer waits for it;
        // gone: shutting down, nobody is left to deliver to
        let _ = self.0.send(messages);
    }

    fn behind(&self) -> bool {
        self.1.most_owed() > MAX_OWED
    }

    fn grown(&self) {
        for sink in self.1.lock().sinks() {
            sink.lag.set();
        }
    }
}

/// Start the fan-out thread over `routes`; it ends when the writer drops the relay.
///
/// # Errors
/// If the thread cannot be spawned.
pub(crate) fn spawn(routes: Arc<Routes>) -> std::io::Result<Relay> {
    let (tx, rx) = std_mpsc::sync_channel::<Vec<Arc<Stored>>>(BACKLOG);
    let routing = routes.clone();
    std::thread::Builder::new()
        .name("ewx-fanout".into())
        .spawn(move || {
            for messages in rx {
                routing.route(&messages);
            }
        })?;
    Ok(Relay(tx, routes))
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
        let progress = Arc::new(Progress::default());
        let registered = Registered::new(&routes, spec, Precedence::Flash, tx, &lag, &progress);
        progress.report(3, true);
        assert_eq!(routes.most_owed(), 3, "a moving lane's debt counts");
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
