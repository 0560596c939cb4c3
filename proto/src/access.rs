//! The access rules — one place, used by the publisher (to choose who gets the content key),
//! by the broker (to accept publishes and filter deliveries) and by receivers.
//!
//! A node **may read** a message iff its clearance is at least the message level, it holds
//! every compartment of the message, and the release list is empty or names it. A node
//! **may publish** only what it may itself read, on a topic one of its publish grants
//! matches.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::ids::NodeId;
use crate::labels::{Compartment, Labels, Level};
use crate::topic::{Topic, TopicPattern};

/// What the roster grants one node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Grants {
    /// Highest TLP level the node may read.
    pub clearance: Level,
    /// Compartments the node is read into.
    pub compartments: BTreeSet<Compartment>,
    /// Topics the node may publish on.
    pub publish: Vec<TopicPattern>,
    /// Topics the node may receive from.
    pub subscribe: Vec<TopicPattern>,
}

impl Grants {
    /// No clearance, no compartments, no topics (brokers and auditors).
    pub fn none() -> Self {
        Self {
            clearance: Level::Clear,
            compartments: BTreeSet::new(),
            publish: Vec::new(),
            subscribe: Vec::new(),
        }
    }
}

/// Why `node` may not read a message with `labels`, or `Ok` if it may.
///
/// # Errors
/// `NotPermitted` naming the first rule that fails.
pub fn check_read(node: &NodeId, grants: &Grants, labels: &Labels) -> Result<()> {
    if grants.clearance < labels.level {
        return Err(Error::NotPermitted(format!(
            "{node} is cleared to TLP:{} but the message is TLP:{}",
            grants.clearance, labels.level
        )));
    }
    if let Some(missing) = labels
        .compartments
        .iter()
        .find(|c| !grants.compartments.contains(*c))
    {
        return Err(Error::NotPermitted(format!(
            "{node} is not read into compartment {missing}"
        )));
    }
    if !labels.rel_to.is_empty() && !labels.rel_to.contains(node) {
        return Err(Error::NotPermitted(format!(
            "the message is not releasable to {node}"
        )));
    }
    Ok(())
}

/// The single read rule as a predicate.
pub fn may_read(node: &NodeId, grants: &Grants, labels: &Labels) -> bool {
    check_read(node, grants, labels).is_ok()
}

/// Why `node` may not publish this message, or `Ok` if it may.
///
/// # Errors
/// `NotPermitted` if no publish grant matches the topic or the node may not read it.
pub fn check_publish(node: &NodeId, grants: &Grants, topic: &Topic, labels: &Labels) -> Result<()> {
    if !grants.publish.iter().any(|p| p.matches(topic)) {
        return Err(Error::NotPermitted(format!(
            "{node} has no grant to publish on {topic}"
        )));
    }
    check_read(node, grants, labels).map_err(|e| {
        Error::NotPermitted(format!(
            "publisher must be able to read its own message: {e}"
        ))
    })
}

/// Why a subscription pattern is refused, or `Ok` if some subscribe grant overlaps it.
/// (Every delivery is filtered again by [`may_deliver`].)
///
/// # Errors
/// `NotPermitted` if the pattern can never match a granted topic.
pub fn check_subscribe(node: &NodeId, grants: &Grants, pattern: &TopicPattern) -> Result<()> {
    if grants.subscribe.iter().any(|g| g.overlaps(pattern)) {
        Ok(())
    } else {
        Err(Error::NotPermitted(format!(
            "{node} has no grant to subscribe to anything matching {pattern}"
        )))
    }
}

/// Should a message on `topic` with `labels` go to `node`'s subscription `pattern`?
/// Both the subscription and a grant must match the topic, and the node must be allowed
/// to read the labels.
pub fn may_deliver(
    node: &NodeId,
    grants: &Grants,
    pattern: &TopicPattern,
    topic: &Topic,
    labels: &Labels,
) -> bool {
    pattern.matches(topic)
        && grants.subscribe.iter().any(|g| g.matches(topic))
        && may_read(node, grants, labels)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grants(level: Level, comps: &str, pubs: &[&str], subs: &[&str]) -> Grants {
        Grants {
            clearance: level,
            compartments: Labels::parse_compartments(comps).unwrap(),
            publish: pubs
                .iter()
                .map(|p| TopicPattern::new(*p).unwrap())
                .collect(),
            subscribe: subs
                .iter()
                .map(|p| TopicPattern::new(*p).unwrap())
                .collect(),
        }
    }
    fn id(s: &str) -> NodeId {
        NodeId::new(s).unwrap()
    }

    #[test]
    fn read_rule() {
        let pl = grants(Level::Red, "CORE,AIR", &["ew.>"], &[">"]);
        let jp = grants(
            Level::Amber,
            "SANCTIONS",
            &["sanctions.>"],
            &["sanctions.>"],
        );
        let core = Labels::new(Level::Amber, Labels::parse_compartments("CORE").unwrap());
        assert!(may_read(&id("PL"), &pl, &core));
        assert!(!may_read(&id("JP"), &jp, &core));
        let red = Labels::new(Level::Red, []);
        assert!(!may_read(&id("JP"), &jp, &red));
        let mut rel = Labels::new(Level::Clear, []);
        rel.rel_to.insert(id("UA"));
        assert!(!may_read(&id("PL"), &pl, &rel));
        rel.rel_to.insert(id("PL"));
        assert!(may_read(&id("PL"), &pl, &rel));
    }

    #[test]
    fn publish_and_subscribe_rules() {
        let jp = grants(
            Level::Amber,
            "SANCTIONS",
            &["sanctions.>"],
            &["sanctions.>"],
        );
        let s = Labels::new(
            Level::Green,
            Labels::parse_compartments("SANCTIONS").unwrap(),
        );
        let topic = Topic::new("sanctions.snapback").unwrap();
        check_publish(&id("JP"), &jp, &topic, &s).unwrap();
        let ew = Topic::new("ew.air").unwrap();
        assert!(check_publish(&id("JP"), &jp, &ew, &s).is_err());
        let core = Labels::new(Level::Green, Labels::parse_compartments("CORE").unwrap());
        let e = check_publish(&id("JP"), &jp, &topic, &core).unwrap_err();
        assert!(e.to_string().contains("CORE"), "{e}");
        let all = TopicPattern::new(">").unwrap();
        check_subscribe(&id("JP"), &jp, &all).unwrap();
        assert!(check_subscribe(&id("JP"), &jp, &TopicPattern::new("ew.>").unwrap()).is_err());
        assert!(may_deliver(&id("JP"), &jp, &all, &topic, &s));
        assert!(!may_deliver(&id("JP"), &jp, &all, &ew, &s));
        assert!(!may_deliver(&id("JP"), &jp, &all, &topic, &core));
    }
}
