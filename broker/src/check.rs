//! `ewx-broker --check-config`: everything a start would check before it serves, without
//! serving — so an operator (or a deploy script, or systemd's `ExecStartPre`) learns of a
//! bad key mode, a roster that does not name this broker or a cluster list that does not
//! match before the exchange is down.

use std::net::UdpSocket;

use crate::config::Config;

/// One finding: what was checked, and whether it is usable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// Usable as it is.
    pub ok: bool,
    /// What was found, in words.
    pub what: String,
}

/// Check `config` as a start would (the key file and its mode, the roster and this
/// broker's place in it, the data directory, the listening address, the cluster
/// section), without opening the store or serving. Every finding is returned; the
/// configuration is usable when all are `ok`.
pub fn check_config(config: &Config) -> Vec<Finding> {
    let mut found = Vec::new();
    let mut note = |ok: bool, what: String| found.push(Finding { ok, what });
    let keys = match ewx_net::files::read_keys(&config.key) {
        Ok(k) => {
            note(
                true,
                format!("key {}: node {}", config.key.display(), k.node),
            );
            Some(k)
        }
        Err(e) => {
            note(false, format!("key: {e}"));
            None
        }
    };
    let roster = match ewx_net::files::read_roster(&config.roster) {
        Ok(r) => {
            note(
                true,
                format!(
                    "roster {}: version {}, {} nodes, signatures verify",
                    config.roster.display(),
                    r.version(),
                    r.body().nodes.len()
                ),
            );
            Some(r)
        }
        Err(e) => {
            note(false, format!("roster: {e}"));
            None
        }
    };
    if let (Some(keys), Some(roster)) = (&keys, &roster) {
        match crate::check_broker_key(roster, keys, config) {
            Ok(()) => note(
                true,
                format!("{} is an active broker of the roster", keys.node),
            ),
            Err(e) => note(false, e.to_string()),
        }
        if let Some(cluster) = &config.cluster {
            match crate::cluster::identify(cluster, keys, roster) {
                Ok(id) => note(
                    true,
                    format!(
                        "cluster: this broker is replica {id} of {}; every replica is a broker of the roster",
                        cluster.replicas.len()
                    ),
                ),
                Err(e) => note(false, e.to_string()),
            }
        }
    }
    let dir = &config.data_dir;
    if dir.join("db").exists() {
        note(true, format!("data_dir {}: holds a store", dir.display()));
    } else if dir.exists()
        || dir
            .parent()
            .is_none_or(|p| p.as_os_str().is_empty() || p.exists())
    {
        note(
            true,
            format!("data_dir {}: a new store will be created", dir.display()),
        );
    } else {
        note(
            false,
            format!(
                "data_dir {}: its parent directory does not exist",
                dir.display()
            ),
        );
    }
    match UdpSocket::bind(config.listen) {
        Ok(_) => note(true, format!("listen {}: free", config.listen)),
        Err(e) => note(
            false,
            format!(
                "listen {}: {e} (a broker already running there?)",
                config.listen
            ),
        ),
    }
    if let Some(ops) = &config.ops {
        if let Some(file) = &ops.token_file {
            match crate::ops::read_token(file) {
                Ok(_) => note(
                    true,
                    format!("ops token {}: owner-only, usable", file.display()),
                ),
                Err(e) => note(false, e.to_string()),
            }
        }
        if let (Some(cert), Some(key)) = (&ops.tls_cert, &ops.tls_key) {
            match crate::ops::tls_config(cert, key) {
                Ok(_) => note(
                    true,
                    format!("ops TLS {}: key fits, usable", cert.display()),
                ),
                Err(e) => note(false, e.to_string()),
            }
        }
        match std::net::TcpListener::bind(ops.listen) {
            Ok(_) => note(true, format!("ops listen {}: free", ops.listen)),
            Err(e) => note(false, format!("ops listen {}: {e}", ops.listen)),
        }
    }
    found
}
