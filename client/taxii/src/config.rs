//! The gateway's configuration (`taxii.toml` in the node's profile): where the store is,
//! who may use it, and the collections — each a feed of what the node receives on a
//! topic pattern (filtered by labels), and optionally writable as the node.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use ewx_proto::{Compartment, Labels, Level, Precedence, Topic, TopicPattern};
use serde::Deserialize;
use sha2::Digest;

use crate::error::{Error, Result};

/// The configuration file as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default = "default_title")]
    title: String,
    #[serde(default)]
    description: String,
    #[serde(default)]
    listen: Option<SocketAddr>,
    #[serde(default = "default_store")]
    store: PathBuf,
    #[serde(default = "default_page")]
    max_page: usize,
    #[serde(default)]
    auth: Auth,
    #[serde(default)]
    tls: Option<Tls>,
    #[serde(rename = "collection", default)]
    collections: Vec<CollectionFile>,
}

fn default_title() -> String {
    "ewx TAXII gateway".into()
}
fn default_store() -> PathBuf {
    "taxii-store".into()
}
fn default_page() -> usize {
    1000
}

/// Who may use the gateway: HTTP Basic users (`user:password` lines) and/or a bearer
/// token, each in an owner-only file. Optional on loopback only.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Auth {
    /// A file of `user:password` lines (mode 0600).
    #[serde(default)]
    pub users_file: Option<PathBuf>,
    /// A file holding a bearer token (mode 0600).
    #[serde(default)]
    pub token_file: Option<PathBuf>,
}

/// HTTPS: a certificate chain and key in PEM files.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tls {
    /// The certificate chain.
    pub cert: PathBuf,
    /// Its key (mode 0600).
    pub key: PathBuf,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct CollectionFile {
    alias: String,
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    title: Option<String>,
    #[serde(default)]
    description: String,
    topics: String,
    #[serde(default)]
    max_level: Option<String>,
    #[serde(default)]
    compartments: Option<String>,
    #[serde(default)]
    publish: Option<PublishFile>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct PublishFile {
    topic: String,
    level: String,
    #[serde(default)]
    compartments: String,
    #[serde(default = "default_precedence")]
    precedence: String,
}

fn default_precedence() -> String {
    "ROUTINE".into()
}

/// The gateway's configuration, checked.
#[derive(Debug, Clone)]
pub struct Config {
    /// The discovery title.
    pub title: String,
    /// The discovery description.
    pub description: String,
    /// The address to serve on (`--listen` wins).
    pub listen: Option<SocketAddr>,
    /// The local store's directory.
    pub store: PathBuf,
    /// Most objects one page holds (a client's `limit` is capped at it).
    pub max_page: usize,
    /// Who may use it.
    pub auth: Auth,
    /// HTTPS.
    pub tls: Option<Tls>,
    /// The collections.
    pub collections: Vec<Collection>,
}

/// A collection: what arrives on `topics` within the label filter; writable with
/// `publish`.
#[derive(Debug, Clone)]
pub struct Collection {
    /// Its TAXII id (a UUID: configured, or derived from the alias so it never changes).
    pub id: String,
    /// Short name; also names the node's durable subscription (`taxii.<alias>`).
    pub alias: String,
    /// Title.
    pub title: String,
    /// Description.
    pub description: String,
    /// The topics it carries.
    pub topics: TopicPattern,
    /// Messages above this level are left out.
    pub max_level: Level,
    /// If set, messages in any other compartment are left out.
    pub compartments: Option<BTreeSet<Compartment>>,
    /// How POSTed objects are published (`None`: read-only).
    pub publish: Option<PublishAs>,
}

/// How a writable collection publishes what is POSTed to it.
#[derive(Debug, Clone)]
pub struct PublishAs {
    /// The topic.
    pub topic: Topic,
    /// The labels.
    pub labels: Labels,
    /// The precedence.
    pub precedence: Precedence,
}

impl Collection {
    /// Does a message with these labels belong here?
    pub fn admits(&self, labels: &Labels) -> bool {
        labels.level <= self.max_level
            && self
                .compartments
                .as_ref()
                .is_none_or(|allowed| labels.compartments.is_subset(allowed))
    }
}

impl Config {
    /// Read `path`; relative paths in it are taken from `dir` (the profile).
    ///
    /// # Errors
    /// `Config` saying what is wrong.
    pub fn load(path: &Path, dir: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            Error::Config(format!(
                "{}: {e} (write one: see the README's TAXII section)",
                path.display()
            ))
        })?;
        Self::from_toml(&text, dir).map_err(|e| match e {
            Error::Config(m) => Error::Config(format!("{}: {m}", path.display())),
            e => e,
        })
    }

    /// Parse a configuration; relative paths are taken from `dir`.
    ///
    /// # Errors
    /// `Config` saying what is wrong.
    pub fn from_toml(text: &str, dir: &Path) -> Result<Self> {
        let file: File = toml::from_str(text).map_err(|e| Error::Config(e.to_string()))?;
        let at = |p: PathBuf| if p.is_absolute() { p } else { dir.join(p) };
        if file.max_page == 0 || file.max_page > 10_000 {
            return Err(Error::Config("max_page must be 1 to 10000".into()));
        }
        if file.collections.is_empty() {
            return Err(Error::Config(
                "no [[collection]]: name at least one feed (alias, topics)".into(),
            ));
        }
        let mut collections = Vec::new();
        for c in file.collections {
            let collection = collection(c)?;
            if collections
                .iter()
                .any(|o: &Collection| o.alias == collection.alias || o.id == collection.id)
            {
                return Err(Error::Config(format!(
                    "collection {:?} is named twice",
                    collection.alias
                )));
            }
            collections.push(collection);
        }
        let authenticated = file.auth.users_file.is_some() || file.auth.token_file.is_some();
        if !authenticated && let Some(c) = collections.iter().find(|c| c.publish.is_some()) {
            return Err(Error::Config(format!(
                "collection {:?} publishes as this node: set [auth] users_file or token_file (even on loopback)",
                c.alias
            )));
        }
        Ok(Self {
            title: file.title,
            description: file.description,
            listen: file.listen,
            store: at(file.store),
            max_page: file.max_page,
            auth: Auth {
                users_file: file.auth.users_file.map(at),
                token_file: file.auth.token_file.map(at),
            },
            tls: file.tls.map(|t| Tls {
                cert: at(t.cert),
                key: at(t.key),
            }),
            collections,
        })
    }

    /// Is anyone required to authenticate?
    pub fn authenticated(&self) -> bool {
        self.auth.users_file.is_some() || self.auth.token_file.is_some()
    }
}

fn collection(c: CollectionFile) -> Result<Collection> {
    let bad = |what: &str, e: &dyn std::fmt::Display| {
        Error::Config(format!("collection {:?}: {what}: {e}", c.alias))
    };
    if c.alias.is_empty()
        || !c
            .alias
            .chars()
            .all(|ch| ch.is_ascii_alphanumeric() || ch == '-' || ch == '_')
    {
        return Err(bad("alias", &"use letters, digits, '-' and '_'"));
    }
    let id = match c.id {
        Some(id) if is_uuid(&id) => id.to_ascii_lowercase(),
        Some(id) => return Err(bad("id", &format!("{id:?} is not a UUID"))),
        None => uuid_from(&c.alias),
    };
    let topics = TopicPattern::new(c.topics.clone()).map_err(|e| bad("topics", &e))?;
    let max_level = match &c.max_level {
        Some(l) => l.parse::<Level>().map_err(|e| bad("max_level", &e))?,
        None => Level::Red,
    };
    let compartments = c
        .compartments
        .as_deref()
        .map(Labels::parse_compartments)
        .transpose()
        .map_err(|e| bad("compartments", &e))?;
    let publish = c
        .publish
        .as_ref()
        .map(|p| -> Result<PublishAs> {
            let topic = Topic::new(p.topic.clone()).map_err(|e| bad("publish.topic", &e))?;
            let level = p
                .level
                .parse::<Level>()
                .map_err(|e| bad("publish.level", &e))?;
            let comps = Labels::parse_compartments(&p.compartments)
                .map_err(|e| bad("publish.compartments", &e))?;
            let precedence = p
                .precedence
                .parse::<Precedence>()
                .map_err(|e| bad("publish.precedence", &e))?;
            Ok(PublishAs {
                topic,
                labels: Labels::new(level, comps),
                precedence,
            })
        })
        .transpose()?;
    Ok(Collection {
        id,
        title: c.title.unwrap_or_else(|| c.alias.clone()),
        alias: c.alias,
        description: c.description,
        topics,
        max_level,
        compartments,
        publish,
    })
}

/// `8-4-4-4-12` hex digits.
fn is_uuid(s: &str) -> bool {
    let parts: Vec<&str> = s.split('-').collect();
    parts.iter().map(|p| p.len()).eq([8, 4, 4, 4, 12])
        && parts
            .iter()
            .all(|p| p.chars().all(|c| c.is_ascii_hexdigit()))
}

/// A stable UUID (version 8, name-based on SHA-256) for an alias.
pub(crate) fn uuid_from(name: &str) -> String {
    let digest = sha2::Sha256::digest(format!("ewx-taxii collection {name}").as_bytes());
    let mut b = [0u8; 16];
    b.copy_from_slice(&digest[..16]);
    b[6] = (b[6] & 0x0f) | 0x80;
    b[8] = (b[8] & 0x3f) | 0x80;
    format_uuid(&b)
}

/// Bytes as a UUID's text.
pub(crate) fn format_uuid(b: &[u8; 16]) -> String {
    let h = hex::encode(b);
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const ONE: &str = "[[collection]]\nalias = 'ew'\ntopics = 'ew.>'\n";

    #[test]
    fn defaults_and_a_stable_id() {
        let c = Config::from_toml(ONE, Path::new("/p")).unwrap();
        assert_eq!(c.store, Path::new("/p/taxii-store"));
        assert_eq!(c.max_page, 1000);
        assert!(is_uuid(&c.collections[0].id));
        assert_eq!(c.collections[0].id, uuid_from("ew"));
        assert!(c.collections[0].publish.is_none());
        assert!(!c.authenticated());
    }

    #[test]
    fn bad_input_says_what() {
        for (text, want) in [
            ("", "no [[collection]]"),
            ("[[collection]]\nalias = 'a b'\ntopics = 'x'\n", "alias"),
            (
                "[[collection]]\nalias = 'a'\ntopics = 'x'\nid = 'nope'\n",
                "not a UUID",
            ),
            (
                "[[collection]]\nalias = 'a'\ntopics = 'x'\nmax_level = 'PURPLE'\n",
                "max_level",
            ),
            (&format!("{ONE}{ONE}"), "named twice"),
            (
                "max_page = 0\n[[collection]]\nalias = 'a'\ntopics = 'x'\n",
                "max_page",
            ),
            (
                "[[collection]]\nalias = 'a'\ntopics = 'x'\n[collection.publish]\ntopic = 'cti'\nlevel = 'AMBER'\nprecedence = 'SOON'\n",
                "precedence",
            ),
            ("colour = 1\n", "unknown field"),
            (
                "[[collection]]\nalias = 'a'\ntopics = 'x'\n[collection.publish]\ntopic = 'cti'\nlevel = 'AMBER'\n",
                "set [auth]",
            ),
        ] {
            let e = Config::from_toml(text, Path::new("."))
                .unwrap_err()
                .to_string();
            assert!(e.contains(want), "{text:?}: {e}");
        }
    }
}
