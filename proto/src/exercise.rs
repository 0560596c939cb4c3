//! Exercise transparency in the shape of the Vienna Document 2011 (Chapter V, prior
//! notification; Chapter VI, observation): the thresholds in one table with their
//! source, and the flags a notice earns against them. Flags are shown, never refused:
//! the record of a notice that came late or too small is the point.

use serde::{Deserialize, Serialize};

use crate::payload::ExerciseNotice;

/// Prior notification is due this long before the start (VD 2011 §38).
pub const NOTIFY_AHEAD_MS: u64 = 42 * 24 * 3600 * 1000;

/// What a threshold counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Measure {
    /// Troops in total.
    Troops,
    /// Battle tanks.
    Tanks,
    /// Armoured combat vehicles.
    ArmouredVehicles,
    /// Artillery pieces of 100 mm calibre and above.
    Artillery,
    /// Airborne troops.
    AirborneTroops,
    /// Amphibious troops.
    AmphibiousTroops,
}

impl Measure {
    /// Its value in a notice.
    pub fn of(self, n: &ExerciseNotice) -> u32 {
        match self {
            Measure::Troops => n.troops,
            Measure::Tanks => n.tanks,
            Measure::ArmouredVehicles => n.armoured_vehicles,
            Measure::Artillery => n.artillery,
            Measure::AirborneTroops => n.airborne_troops,
            Measure::AmphibiousTroops => n.amphibious_troops,
        }
    }

    /// Lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Measure::Troops => "troops",
            Measure::Tanks => "tanks",
            Measure::ArmouredVehicles => "armoured combat vehicles",
            Measure::Artillery => "artillery (100 mm and above)",
            Measure::AirborneTroops => "airborne troops",
            Measure::AmphibiousTroops => "amphibious troops",
        }
    }
}

/// Which obligation a threshold triggers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Obligation {
    /// Notify at least 42 days ahead.
    Notification,
    /// Invite observers.
    Observation,
}

/// One threshold: an activity at or above `at` of `measure` carries `obligation`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Threshold {
    /// What is counted.
    pub measure: Measure,
    /// From this many on.
    pub at: u32,
    /// The obligation.
    pub obligation: Obligation,
    /// Where the rule is written.
    pub source: &'static str,
}

/// The Vienna Document 2011 thresholds ewx checks, in one place.
pub const THRESHOLDS: [Threshold; 8] = [
    Threshold {
        measure: Measure::Troops,
        at: 9_000,
        obligation: Obligation::Notification,
        source: "VD 2011 §40.1.1",
    },
    Threshold {
        measure: Measure::Tanks,
        at: 250,
        obligation: Obligation::Notification,
        source: "VD 2011 §40.1.1",
    },
    Threshold {
        measure: Measure::ArmouredVehicles,
        at: 500,
        obligation: Obligation::Notification,
        source: "VD 2011 §40.1.1",
    },
    Threshold {
        measure: Measure::Artillery,
        at: 250,
        obligation: Obligation::Notification,
        source: "VD 2011 §40.1.1",
    },
    Threshold {
        measure: Measure::AirborneTroops,
        at: 3_000,
        obligation: Obligation::Notification,
        source: "VD 2011 §40.1.3",
    },
    Threshold {
        measure: Measure::AmphibiousTroops,
        at: 3_000,
        obligation: Obligation::Notification,
        source: "VD 2011 §40.1.2",
    },
    Threshold {
        measure: Measure::Troops,
        at: 13_000,
        obligation: Obligation::Observation,
        source: "VD 2011 §47.4",
    },
    Threshold {
        measure: Measure::Tanks,
        at: 300,
        obligation: Obligation::Observation,
        source: "VD 2011 §47.4",
    },
];

/// Something a notice should be looked at for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "flag")]
pub enum Flag {
    /// Meets a notification threshold but was published less than 42 days before the
    /// start.
    Late {
        /// Whole days between publication and start (0 if published after it began).
        days_ahead: u64,
        /// The threshold met.
        measure: Measure,
    },
    /// Meets an observation threshold without an invitation to observe.
    NoObservationInvited {
        /// The threshold met.
        measure: Measure,
    },
    /// A later notice of the same activity crosses a threshold the earlier stayed under
    /// (declared just below it, then run larger).
    GrewPastThreshold {
        /// What grew.
        measure: Measure,
        /// Earlier figure.
        from: u32,
        /// Later figure.
        to: u32,
        /// The threshold crossed.
        at: u32,
    },
}

/// The first threshold of `obligation` that `notice` meets.
fn meets(notice: &ExerciseNotice, obligation: Obligation) -> Option<&'static Threshold> {
    THRESHOLDS
        .iter()
        .find(|t| t.obligation == obligation && t.measure.of(notice) >= t.at)
}

/// The flags of a notice published at `published_ms` (the broker's log time, or the
/// sealing time where the log time is not known).
pub fn flags(notice: &ExerciseNotice, published_ms: u64) -> Vec<Flag> {
    let mut out = Vec::new();
    if let Some(t) = meets(notice, Obligation::Notification) {
        let ahead = notice.start_ms.saturating_sub(published_ms);
        if ahead < NOTIFY_AHEAD_MS {
            out.push(Flag::Late {
                days_ahead: ahead / 86_400_000,
                measure: t.measure,
            });
        }
    }
    if let Some(t) = meets(notice, Obligation::Observation) {
        if !notice.observation_invited {
            out.push(Flag::NoObservationInvited { measure: t.measure });
        }
    }
    out
}

/// The thresholds a later notice of the same activity crosses that the earlier did not.
pub fn grew(earlier: &ExerciseNotice, later: &ExerciseNotice) -> Vec<Flag> {
    THRESHOLDS
        .iter()
        .filter(|t| t.measure.of(earlier) < t.at && t.measure.of(later) >= t.at)
        .map(|t| Flag::GrewPastThreshold {
            measure: t.measure,
            from: t.measure.of(earlier),
            to: t.measure.of(later),
            at: t.at,
        })
        .collect()
}

impl std::fmt::Display for Flag {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Flag::Late {
                days_ahead,
                measure,
            } => write!(
                f,
                "LATE: notified {days_ahead} days ahead, 42 required ({} threshold met)",
                measure.as_str()
            ),
            Flag::NoObservationInvited { measure } => write!(
                f,
                "NO OBSERVATION INVITED although the {} observation threshold is met",
                measure.as_str()
            ),
            Flag::GrewPastThreshold {
                measure,
                from,
                to,
                at,
            } => write!(
                f,
                "GREW PAST A THRESHOLD: {} {from} -> {to} (threshold {at})",
                measure.as_str()
            ),
        }
    }
}

/// One figure or field that differs between two notices of the same activity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// The field's name (as in the notice).
    pub field: &'static str,
    /// Its value in the earlier notice.
    pub before: String,
    /// Its value in the later one.
    pub after: String,
}

/// What an amendment or correction changed, field by field, so a changed figure is shown
/// as a change rather than buried in a new notice.
pub fn changes(earlier: &ExerciseNotice, later: &ExerciseNotice) -> Vec<Change> {
    fn text<T: std::fmt::Debug>(v: &T) -> String {
        format!("{v:?}")
    }
    let (a, b) = (earlier, later);
    let fields: [(&'static str, String, String); 22] = [
        ("name", text(&a.name), text(&b.name)),
        ("purpose", text(&a.purpose), text(&b.purpose)),
        ("states", text(&a.states), text(&b.states)),
        (
            "command_level",
            text(&a.command_level),
            text(&b.command_level),
        ),
        ("start_ms", a.start_ms.to_string(), b.start_ms.to_string()),
        ("end_ms", a.end_ms.to_string(), b.end_ms.to_string()),
        ("area", text(&a.area), text(&b.area)),
        ("troops", a.troops.to_string(), b.troops.to_string()),
        ("tanks", a.tanks.to_string(), b.tanks.to_string()),
        (
            "armoured_vehicles",
            a.armoured_vehicles.to_string(),
            b.armoured_vehicles.to_string(),
        ),
        (
            "artillery",
            a.artillery.to_string(),
            b.artillery.to_string(),
        ),
        ("aircraft", a.aircraft.to_string(), b.aircraft.to_string()),
        (
            "helicopters",
            a.helicopters.to_string(),
            b.helicopters.to_string(),
        ),
        ("sorties", a.sorties.to_string(), b.sorties.to_string()),
        (
            "airborne_troops",
            a.airborne_troops.to_string(),
            b.airborne_troops.to_string(),
        ),
        (
            "amphibious_troops",
            a.amphibious_troops.to_string(),
            b.amphibious_troops.to_string(),
        ),
        (
            "troops_by_state",
            text(&a.troops_by_state),
            text(&b.troops_by_state),
        ),
        ("coordinates", text(&a.coordinates), text(&b.coordinates)),
        ("phases", text(&a.phases), text(&b.phases)),
        (
            "related_activities",
            text(&a.related_activities),
            text(&b.related_activities),
        ),
        ("calendar_ref", text(&a.calendar_ref), text(&b.calendar_ref)),
        (
            "observation_invited",
            a.observation_invited.to_string(),
            b.observation_invited.to_string(),
        ),
    ];
    fields
        .into_iter()
        .filter(|(_, x, y)| x != y)
        .map(|(field, before, after)| Change {
            field,
            before,
            after,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const START: u64 = 1_900_000_000_000;
    const DAY: u64 = 86_400_000;

    fn notice() -> ExerciseNotice {
        ExerciseNotice {
            name: "TEST".into(),
            start_ms: START,
            end_ms: START + DAY,
            ..Default::default()
        }
    }

    fn with(measure: Measure, value: u32) -> ExerciseNotice {
        let mut n = notice();
        match measure {
            Measure::Troops => n.troops = value,
            Measure::Tanks => n.tanks = value,
            Measure::ArmouredVehicles => n.armoured_vehicles = value,
            Measure::Artillery => n.artillery = value,
            Measure::AirborneTroops => n.airborne_troops = value,
            Measure::AmphibiousTroops => n.amphibious_troops = value,
        }
        n
    }

    #[test]
    fn every_threshold_at_its_edge() {
        let late = START - NOTIFY_AHEAD_MS + 1;
        for t in THRESHOLDS {
            let below = with(t.measure, t.at - 1);
            let at = with(t.measure, t.at);
            let meets_kind = |f: &Flag| match (t.obligation, f) {
                (Obligation::Notification, Flag::Late { measure, .. }) => *measure == t.measure,
                (Obligation::Observation, Flag::NoObservationInvited { measure }) => {
                    *measure == t.measure
                }
                _ => false,
            };
            assert!(!flags(&below, late).iter().any(meets_kind), "{t:?} below");
            assert!(flags(&at, late).iter().any(meets_kind), "{t:?} at");
        }
    }

    #[test]
    fn forty_two_days_ahead_is_in_time_a_millisecond_less_is_late() {
        let n = with(Measure::Troops, 9_000);
        assert!(flags(&n, START - NOTIFY_AHEAD_MS).is_empty());
        assert_eq!(
            flags(&n, START - NOTIFY_AHEAD_MS + 1),
            [Flag::Late {
                days_ahead: 41,
                measure: Measure::Troops
            }]
        );
        assert_eq!(
            flags(&n, START + DAY),
            [Flag::Late {
                days_ahead: 0,
                measure: Measure::Troops
            }],
            "published after it began"
        );
        // under every notification threshold: never late
        assert!(flags(&with(Measure::Troops, 8_999), START).is_empty());
    }

    #[test]
    fn an_invitation_clears_the_observation_flag() {
        let mut n = with(Measure::Troops, 13_000);
        assert!(flags(&n, 0).contains(&Flag::NoObservationInvited {
            measure: Measure::Troops
        }));
        n.observation_invited = true;
        assert!(flags(&n, 0).is_empty());
    }

    #[test]
    fn a_notice_declared_under_a_threshold_then_larger_is_flagged() {
        // declared at 12,500 (under observation), run at 33,000
        let declared = with(Measure::Troops, 12_500);
        let actual = with(Measure::Troops, 33_000);
        assert_eq!(
            grew(&declared, &actual),
            [Flag::GrewPastThreshold {
                measure: Measure::Troops,
                from: 12_500,
                to: 33_000,
                at: 13_000
            }]
        );
        assert!(
            grew(&actual, &declared).is_empty(),
            "shrinking crosses nothing"
        );
        let small = with(Measure::Troops, 8_000);
        assert_eq!(
            grew(&small, &actual).len(),
            2,
            "notification and observation"
        );
    }

    #[test]
    fn changes_name_each_changed_field_and_nothing_else() {
        let a = notice();
        assert!(changes(&a, &a).is_empty());
        let mut b = a.clone();
        b.troops = a.troops + 4000;
        b.phases.push("live fire".into());
        let c = changes(&a, &b);
        let fields: Vec<&str> = c.iter().map(|c| c.field).collect();
        assert_eq!(fields, ["troops", "phases"]);
        assert_eq!(c[0].before, a.troops.to_string());
        assert_eq!(c[0].after, (a.troops + 4000).to_string());
    }
}
