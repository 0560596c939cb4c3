//! Topic names (`ew.air.missile`) and subscription patterns (`ew.air.>`, `exercise.*`),
//! with the NATS meaning of `*` (one token) and `>` (one or more trailing tokens).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result, echo};

/// Longest topic or pattern in bytes.
pub const MAX_TOPIC_LEN: usize = 255;
/// Most tokens in a topic or pattern.
pub const MAX_TOKENS: usize = 16;
/// Longest single token.
pub const MAX_TOKEN_LEN: usize = 64;

fn invalid(value: &str, reason: &'static str) -> Error {
    Error::InvalidTopic {
        value: echo(value),
        reason,
    }
}

/// Split and check the shared syntax; `wildcards` allows `*` and a final `>`.
fn tokens(value: &str, wildcards: bool) -> Result<Vec<&str>> {
    if value.is_empty() {
        return Err(invalid(value, "empty"));
    }
    if value.len() > MAX_TOPIC_LEN {
        return Err(invalid(value, "longer than 255 bytes"));
    }
    let toks: Vec<&str> = value.split('.').collect();
    if toks.len() > MAX_TOKENS {
        return Err(invalid(value, "more than 16 tokens"));
    }
    let last = toks.len() - 1;
    for (i, t) in toks.iter().enumerate() {
        match *t {
            "" => {
                return Err(invalid(
                    value,
                    "empty token (leading, trailing or double dot)",
                ));
            }
            "*" | ">" if !wildcards => {
                return Err(invalid(value, "wildcards are only allowed in patterns"));
            }
            ">" if i != last => return Err(invalid(value, "'>' must be the last token")),
            "*" | ">" => {}
            t if t.len() > MAX_TOKEN_LEN => {
                return Err(invalid(value, "a token is longer than 64 bytes"));
            }
            t if !t
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-') =>
            {
                return Err(invalid(
                    value,
                    "tokens may hold only A-Z, a-z, 0-9, '_', '-'",
                ));
            }
            _ => {}
        }
    }
    Ok(toks)
}

/// A concrete topic a message is published on.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Topic(String);

impl Topic {
    /// Validate a topic name.
    ///
    /// # Errors
    /// `InvalidTopic` naming the rule broken.
    pub fn new(value: impl Into<String>) -> Result<Self> {
        let value = value.into();
        tokens(&value, false)?;
        Ok(Self(value))
    }

    /// The topic as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A subscription or grant pattern.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct TopicPattern(String);

impl TopicPattern {
    /// Validate a pattern.
    ///
    /// # Errors
    /// `InvalidTopic` naming the rule broken.
    pub fn new(value: impl Into<String>) -> Result<Self> {
        let value = value.into();
        tokens(&value, true)?;
        Ok(Self(value))
    }

    /// The pattern as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    fn toks(&self) -> std::str::Split<'_, char> {
        self.0.split('.')
    }

    /// Does this pattern match the topic?
    pub fn matches(&self, topic: &Topic) -> bool {
        let mut t = topic.0.split('.');
        for p in self.toks() {
            match (p, t.next()) {
                (">", Some(_)) => return true,
                (_, None) => return false,
                ("*", Some(_)) => {}
                (lit, Some(tok)) if lit == tok => {}
                _ => return false,
            }
        }
        t.next().is_none()
    }

    /// Does every topic matched by `other` also match `self`? Used to check that a
    /// subscription stays within what a grant allows.
    pub fn covers(&self, other: &TopicPattern) -> bool {
        let mut o = other.toks();
        for p in self.toks() {
            match (p, o.next()) {
                (">", Some(_)) => return true,
                (_, None) | (_, Some(">")) => return false,
                ("*", Some(_)) => {}
                (lit, Some(tok)) if lit == tok => {}
                _ => return false,
            }
        }
        o.next().is_none()
    }

    /// Is there at least one topic both patterns match?
    pub fn overlaps(&self, other: &TopicPattern) -> bool {
        let mut o = other.toks();
        for p in self.toks() {
            match (p, o.next()) {
                (_, None) => return false,
                (">", Some(_)) | (_, Some(">")) => return true,
                ("*", Some(_)) | (_, Some("*")) => {}
                (lit, Some(tok)) if lit == tok => {}
                _ => return false,
            }
        }
        o.next().is_none()
    }
}

macro_rules! string_newtype {
    ($t:ty) => {
        impl TryFrom<String> for $t {
            type Error = Error;
            fn try_from(s: String) -> Result<Self> {
                Self::new(s)
            }
        }
        impl From<$t> for String {
            fn from(v: $t) -> Self {
                v.0
            }
        }
        impl FromStr for $t {
            type Err = Error;
            fn from_str(s: &str) -> Result<Self> {
                Self::new(s)
            }
        }
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}
string_newtype!(Topic);
string_newtype!(TopicPattern);

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> TopicPattern {
        TopicPattern::new(s).unwrap()
    }
    fn t(s: &str) -> Topic {
        Topic::new(s).unwrap()
    }

    #[test]
    fn syntax() {
        for bad in ["", ".", "a..b", "a.", ".a", "a.*", "a.>", "a b", "é"] {
            assert!(Topic::new(bad).is_err(), "{bad}");
        }
        for bad in ["a.>.b", ">.a", "a..>", "a.b*"] {
            assert!(TopicPattern::new(bad).is_err(), "{bad}");
        }
        assert!(Topic::new("x".repeat(256)).is_err());
        assert!(Topic::new(vec!["a"; 17].join(".")).is_err());
        assert!(Topic::new("y".repeat(65)).is_err());
        assert!(Topic::new("ew.air.missile").is_ok());
    }

    #[test]
    fn matching() {
        assert!(p("ew.air.>").matches(&t("ew.air.missile")));
        assert!(p("ew.air.>").matches(&t("ew.air.missile.cruise")));
        assert!(!p("ew.air.>").matches(&t("ew.air")));
        assert!(p(">").matches(&t("anything.at.all")));
        assert!(p("ew.*.missile").matches(&t("ew.air.missile")));
        assert!(!p("ew.*").matches(&t("ew.air.missile")));
        assert!(p("ew.air").matches(&t("ew.air")));
        assert!(!p("ew.air").matches(&t("ew.air.x")));
    }

    #[test]
    fn covering_and_overlap() {
        assert!(p(">").covers(&p("ew.>")));
        assert!(p("ew.>").covers(&p("ew.air.*")));
        assert!(!p("ew.air.*").covers(&p("ew.>")));
        assert!(p("ew.*").covers(&p("ew.air")));
        assert!(!p("ew.air").covers(&p("ew.*")));
        assert!(!p("sanctions.>").covers(&p(">")));
        assert!(p("sanctions.>").overlaps(&p(">")));
        assert!(p("ew.*.x").overlaps(&p("ew.air.*")));
        assert!(!p("ew.>").overlaps(&p("sanctions.>")));
        assert!(!p("ew.a").overlaps(&p("ew.a.b")));
    }
}
