//! The routing index: the open delivery lanes, by precedence, and for a committed
//! message the lanes that want it — decided once per message as it is committed, so a
//! lane is woken only for what it delivers (not for every message of every lane).

use std::collections::HashMap;
use std::sync::Arc;

use ewx_proto::{Header, Precedence, Roster};

use super::subscription::{SubscriptionSpec, deliverable};

/// The handle of a lane in the index (to remove it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct LaneId {
    precedence: Precedence,
    n: u64,
}

/// One open lane: what it subscribed to and where its messages go.
#[derive(Debug)]
struct Route<T> {
    spec: Arc<SubscriptionSpec>,
    sink: T,
}

/// Open lanes and their sinks (`T`: a channel on the broker, anything in tests).
#[derive(Debug)]
pub struct RoutingIndex<T> {
    lanes: [HashMap<u64, Route<T>>; 4],
    next: u64,
}

impl<T> Default for RoutingIndex<T> {
    fn default() -> Self {
        Self {
            lanes: std::array::from_fn(|_| HashMap::new()),
            next: 0,
        }
    }
}

impl<T> RoutingIndex<T> {
    /// Add the `precedence` lane of a subscription.
    pub fn add(&mut self, spec: Arc<SubscriptionSpec>, precedence: Precedence, sink: T) -> LaneId {
        self.next += 1;
        self.lanes[precedence as usize].insert(self.next, Route { spec, sink });
        LaneId {
            precedence,
            n: self.next,
        }
    }

    /// Remove a lane (it closed).
    pub fn remove(&mut self, id: LaneId) {
        self.lanes[id.precedence as usize].remove(&id.n);
    }

    /// Every open lane: its subscriber and its sink.
    pub fn routes(&self) -> impl Iterator<Item = (&SubscriptionSpec, &T)> {
        self.lanes
            .iter()
            .flat_map(|l| l.values().map(|r| (r.spec.as_ref(), &r.sink)))
    }

    /// Every open lane's sink.
    pub fn sinks(&self) -> impl Iterator<Item = &T> {
        self.lanes.iter().flat_map(|l| l.values().map(|r| &r.sink))
    }

    /// Open lanes.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.lanes.iter().map(HashMap::len).sum()
    }

    /// No lane open?
    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The sinks of the lanes that deliver a message with this header under the roster
    /// in force: its precedence's lanes whose subscription matches the topic, admits
    /// real or exercise traffic as asked, and whose node may read the labels.
    pub fn route<'a>(
        &'a self,
        header: &'a Header,
        roster: &'a Roster,
    ) -> impl Iterator<Item = &'a T> + 'a {
        self.lanes[header.precedence as usize]
            .values()
            .filter(move |r| deliverable(&r.spec, roster, header))
            .map(|r| &r.sink)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::fixture::{roster, sealed};
    use ewx_proto::frame::ExerciseFilter;
    use ewx_proto::{Level, TopicPattern};
    use ewx_testkit::id;

    fn spec(node: &str, pattern: &str, filter: ExerciseFilter) -> Arc<SubscriptionSpec> {
        Arc::new(SubscriptionSpec {
            node: id(node),
            name: "desk".into(),
            pattern: TopicPattern::new(pattern).unwrap(),
            filter,
        })
    }

    #[test]
    fn a_message_goes_to_the_lanes_that_may_read_it_and_no_others() {
        let roster = roster();
        let mut index = RoutingIndex::default();
        let all = ExerciseFilter::All;
        let ua = index.add(spec("UA", ">", all), Precedence::Flash, "UA flash");
        index.add(spec("UA", ">", all), Precedence::Routine, "UA routine");
        index.add(
            spec("JP", "sanctions.>", all),
            Precedence::Flash,
            "JP flash",
        );
        let real = ExerciseFilter::RealOnly;
        index.add(spec("PL", "ew.>", real), Precedence::Flash, "PL real");
        assert_eq!(index.len(), 4);
        let route = |env: &ewx_proto::Envelope, index: &RoutingIndex<&'static str>| {
            let mut v: Vec<_> = index.route(env.header(), &roster).copied().collect();
            v.sort_unstable();
            v
        };
        let warning = sealed(
            &roster,
            "US",
            "ew.air",
            (Level::Amber, "CORE"),
            Precedence::Flash,
            1,
        );
        assert_eq!(route(&warning, &index), ["PL real", "UA flash"]);
        let sanctions = sealed(
            &roster,
            "US",
            "sanctions.snapback",
            (Level::Amber, "SANCTIONS"),
            Precedence::Flash,
            2,
        );
        assert_eq!(route(&sanctions, &index), ["JP flash", "UA flash"]);
        let routine = sealed(
            &roster,
            "US",
            "ew.air",
            (Level::Green, "CORE"),
            Precedence::Routine,
            3,
        );
        assert_eq!(route(&routine, &index), ["UA routine"]);
        index.remove(ua);
        assert_eq!(route(&warning, &index), ["PL real"]);
        assert!(!index.is_empty());
    }
}
