//! A TAXII request's query: `added_after` (strictly after), `limit`, `next`, and
//! `match[id|type|version|spec_version]` (comma-separated lists), checked into a
//! [`Filter`]; anything malformed is a 400 that says what.

use axum::http::StatusCode;
use axum::response::Response;
use serde::Deserialize;

use crate::server::error;
use crate::stix::micros;
use crate::store::{Filter, Versions};

/// The query as sent.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(transparent)]
pub struct Params(Vec<(String, String)>);

impl Params {
    fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// The versions endpoint lists every version, whatever `match[version]` says.
    pub fn all_versions(&mut self) {
        self.0.retain(|(k, _)| k != "match[version]");
        self.0.push(("match[version]".into(), "all".into()));
    }
}

fn bad(what: &str, why: &str) -> Response {
    error(StatusCode::BAD_REQUEST, &format!("bad {what}"), why)
}

fn list(p: &Params, key: &str) -> Option<Vec<String>> {
    p.get(key).map(|v| {
        v.split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect()
    })
}

/// The filter a query asks for; pages hold at most `max_page` objects (also the default).
#[allow(clippy::result_large_err)]
pub fn filter(p: &Params, max_page: usize) -> Result<Filter, Response> {
    let added_after = p
        .get("added_after")
        .map(|t| {
            micros(t).ok_or_else(|| {
                bad(
                    "added_after",
                    "an RFC 3339 timestamp, e.g. 2026-01-01T00:00:00Z",
                )
            })
        })
        .transpose()?;
    let limit = match p.get("limit") {
        Some(l) => match l.parse::<usize>() {
            Ok(n) if n > 0 => n.min(max_page),
            _ => return Err(bad("limit", "a whole number above 0")),
        },
        None => max_page,
    };
    let next = p
        .get("next")
        .map(|n| {
            n.parse::<u64>()
                .map_err(|_| bad("next", "give back the next value of the previous page"))
        })
        .transpose()?;
    let versions = match p.get("match[version]") {
        None => Versions::Last,
        Some(v) => versions(v)?,
    };
    Ok(Filter {
        versions,
        ..base(p, added_after, next, limit)
    })
}

/// `match[version]`: `last`, `first`, `all` or timestamps, alone or in a list (any of
/// them).
#[allow(clippy::result_large_err)]
fn versions(v: &str) -> Result<Versions, Response> {
    let mut any = Vec::new();
    for t in v.split(',').map(str::trim) {
        any.push(match t {
            "last" => Versions::Last,
            "first" => Versions::First,
            "all" => return Ok(Versions::All),
            t => Versions::At(vec![micros(t).ok_or_else(|| {
                bad(
                    "match[version]",
                    "last, first, all or timestamps, comma-separated",
                )
            })?]),
        });
    }
    Ok(if any.len() == 1 {
        any.remove(0)
    } else {
        Versions::Any(any)
    })
}

fn base(p: &Params, added_after: Option<u64>, next: Option<u64>, limit: usize) -> Filter {
    Filter {
        added_after,
        next,
        limit,
        ids: list(p, "match[id]"),
        types: list(p, "match[type]"),
        versions: Versions::Last,
        spec_versions: list(p, "match[spec_version]"),
    }
}
