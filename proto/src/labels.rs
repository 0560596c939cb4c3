//! Confidentiality labels carried by every message (in the spirit of STANAG 4774): a TLP
//! 2.0 level, a set of compartments, an optional releasable-to list, and the exercise flag.
//! The labels sit in the signed header and are the AEAD's associated data, so they cannot
//! be changed without breaking both.

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result, echo};
use crate::ids::NodeId;

/// TLP 2.0 levels in increasing order of restriction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum Level {
    /// TLP:CLEAR — no limit on disclosure.
    Clear,
    /// TLP:GREEN — the community.
    Green,
    /// TLP:AMBER — the recipient organisations and their clients.
    Amber,
    /// TLP:AMBER+STRICT — the recipient organisations only.
    AmberStrict,
    /// TLP:RED — named recipients only.
    Red,
}

impl Level {
    /// All levels, lowest first.
    pub const ALL: [Level; 5] = [
        Level::Clear,
        Level::Green,
        Level::Amber,
        Level::AmberStrict,
        Level::Red,
    ];

    /// The TLP 2.0 spelling (`AMBER+STRICT`).
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Clear => "CLEAR",
            Level::Green => "GREEN",
            Level::Amber => "AMBER",
            Level::AmberStrict => "AMBER+STRICT",
            Level::Red => "RED",
        }
    }
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Level {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        let upper = s.trim().to_ascii_uppercase();
        let name = upper.strip_prefix("TLP:").unwrap_or(&upper);
        Level::ALL
            .into_iter()
            .find(|l| l.as_str() == name)
            .ok_or_else(|| Error::InvalidLabel {
                value: echo(s),
                reason: "level must be CLEAR, GREEN, AMBER, AMBER+STRICT or RED",
            })
    }
}

impl TryFrom<String> for Level {
    type Error = Error;
    fn try_from(s: String) -> Result<Self> {
        s.parse()
    }
}

impl From<Level> for String {
    fn from(l: Level) -> Self {
        l.as_str().to_owned()
    }
}

/// A need-to-know compartment (`CORE`, `AIR`, `SANCTIONS`…): 1–32 characters of
/// `[A-Z0-9_-]`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Compartment(String);

impl Compartment {
    /// Validate a compartment name.
    ///
    /// # Errors
    /// `InvalidLabel` if empty, longer than 32, or not `[A-Z0-9_-]`.
    pub fn new(value: impl Into<String>) -> Result<Self> {
        let value = value.into();
        let ok = !value.is_empty()
            && value.len() <= 32
            && value
                .bytes()
                .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
        if ok {
            Ok(Self(value))
        } else {
            Err(Error::InvalidLabel {
                value: echo(&value),
                reason: "compartment must be 1-32 characters of A-Z, 0-9, '_' or '-'",
            })
        }
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for Compartment {
    type Error = Error;
    fn try_from(s: String) -> Result<Self> {
        Self::new(s)
    }
}

impl From<Compartment> for String {
    fn from(c: Compartment) -> Self {
        c.0
    }
}

impl FromStr for Compartment {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Self::new(s)
    }
}

impl fmt::Display for Compartment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The labels of one message.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Labels {
    /// TLP level: a reader's clearance must be at least this.
    pub level: Level,
    /// A reader must hold every one of these.
    pub compartments: BTreeSet<Compartment>,
    /// If non-empty, only these nodes may read ("releasable to").
    pub rel_to: BTreeSet<NodeId>,
    /// Exercise traffic: never to be shown or filtered as a real warning.
    pub exercise: bool,
}

impl Labels {
    /// Labels with the given level and compartments, no release list, real traffic.
    pub fn new(level: Level, compartments: impl IntoIterator<Item = Compartment>) -> Self {
        Self {
            level,
            compartments: compartments.into_iter().collect(),
            rel_to: BTreeSet::new(),
            exercise: false,
        }
    }

    /// Parse a comma-separated compartment list (`"CORE,AIR"`); empty text gives none.
    ///
    /// # Errors
    /// `InvalidLabel` for the first bad name.
    pub fn parse_compartments(list: &str) -> Result<BTreeSet<Compartment>> {
        list.split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(Compartment::new)
            .collect()
    }
}

impl fmt::Display for Labels {
    /// `TLP:AMBER [CORE,AIR] REL UA,PL EXERCISE`
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TLP:{}", self.level)?;
        if !self.compartments.is_empty() {
            let c: Vec<&str> = self.compartments.iter().map(Compartment::as_str).collect();
            write!(f, " [{}]", c.join(","))?;
        }
        if !self.rel_to.is_empty() {
            let r: Vec<&str> = self.rel_to.iter().map(NodeId::as_str).collect();
            write!(f, " REL {}", r.join(","))?;
        }
        if self.exercise {
            f.write_str(" EXERCISE")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_are_ordered_as_tlp() {
        assert!(Level::Clear < Level::Green);
        assert!(Level::Green < Level::Amber);
        assert!(Level::Amber < Level::AmberStrict);
        assert!(Level::AmberStrict < Level::Red);
        for l in Level::ALL {
            assert_eq!(l.as_str().parse::<Level>().unwrap(), l);
        }
        assert_eq!(
            "tlp:amber+strict".parse::<Level>().unwrap(),
            Level::AmberStrict
        );
        assert!("PURPLE".parse::<Level>().is_err());
    }

    #[test]
    fn compartments_parse_from_lists() {
        let set = Labels::parse_compartments("CORE, AIR,,").unwrap();
        assert_eq!(set.len(), 2);
        assert!(Labels::parse_compartments("core").is_err());
        assert!(Labels::parse_compartments("").unwrap().is_empty());
    }
}
