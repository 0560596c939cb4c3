//! Grant presets of the Compact's tiers, as the demo and the tests give them.

use ewx_proto::access::Grants;
use ewx_proto::{Labels, Level, TopicPattern};

/// Every compartment the demo network uses.
pub const ALL_COMPARTMENTS: &str = "CORE,AIR,MARITIME,CYBER,SANCTIONS,CEASEFIRE";

/// Grants from a level, compartments (`A,B`) and publish and subscribe patterns.
///
/// # Panics
/// If a compartment or pattern is invalid (callers pass constants).
pub fn grants(level: Level, compartments: &str, publish: &[&str], subscribe: &[&str]) -> Grants {
    let patterns = |list: &[&str]| {
        list.iter()
            .map(|p| TopicPattern::new(*p).unwrap_or_else(|e| panic!("pattern {p:?}: {e}")))
            .collect()
    };
    Grants {
        clearance: level,
        compartments: Labels::parse_compartments(compartments)
            .unwrap_or_else(|e| panic!("compartments {compartments:?}: {e}")),
        publish: patterns(publish),
        subscribe: patterns(subscribe),
    }
}

/// The core guarantors: every compartment up to RED; they publish early warning,
/// exercises, consultations, sanctions and ceasefire reports, and may subscribe to all.
pub fn core() -> Grants {
    grants(
        Level::Red,
        ALL_COMPARTMENTS,
        &[
            "ew.>",
            "exercise.>",
            "consult.>",
            "sanctions.>",
            "ceasefire.>",
        ],
        &[">"],
    )
}

/// The broader group: sanctions only, up to AMBER; they also see exercise notices.
pub fn broader() -> Grants {
    grants(
        Level::Amber,
        "SANCTIONS",
        &["sanctions.>"],
        &["sanctions.>", "exercise.>"],
    )
}

/// A ceasefire monitor: files reports in `ceasefire.>` (CEASEFIRE, up to AMBER) and
/// reads what monitors file.
pub fn monitor() -> Grants {
    grants(
        Level::Amber,
        "CEASEFIRE",
        &["ceasefire.>"],
        &["ceasefire.>"],
    )
}

/// Every compartment up to RED, and any topic to publish and subscribe: for protocol
/// tests that are about something other than the publish rule.
pub fn unrestricted() -> Grants {
    grants(Level::Red, ALL_COMPARTMENTS, &[">"], &[">"])
}
