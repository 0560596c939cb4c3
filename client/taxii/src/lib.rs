//! # ewx-taxii — a TAXII 2.1 gateway at a partner's node
//!
//! The broker cannot read contents, so TAXII is served where they are read: by a process
//! holding the node's key. Each configured collection is a durable subscription of the
//! node; what arrives (verified and decrypted by `ewx-client`) is kept in a local sled
//! store and served to the partner's own MISP or OpenCTI over TAXII 2.1 (axum). A
//! writable collection publishes what is POSTed as this node.
//!
//! Paging never loses or repeats an object: every stored object version gets its own
//! `date_added` (microseconds, strictly increasing), and `next` names the last one given.
#![forbid(unsafe_code)]

mod auth;
pub mod config;
mod error;
mod ingest;
mod publish;
mod query;
mod server;
pub mod stix;
pub mod store;

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

pub use config::Config;
pub use error::{Error, Result};
pub use server::{API_ROOT, TAXII};

/// What the handlers share.
#[derive(Debug)]
pub struct Gateway {
    config: Config,
    store: store::Store,
    client: ewx_client::Client,
    keys: auth::Keys,
    node: String,
    clock: ewx_net::Clock,
}

/// A running gateway.
#[derive(Debug)]
pub struct Running {
    addr: SocketAddr,
    cancel: CancellationToken,
    server: tokio::task::JoinHandle<Result<()>>,
    ingest: JoinSet<Result<()>>,
}

impl Running {
    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Run until a task ends (the listener, or a collection's subscription failing) or
    /// `stop` resolves; then stop the rest.
    ///
    /// # Errors
    /// The first task's error.
    pub async fn wait(mut self, stop: impl std::future::Future<Output = ()>) -> Result<()> {
        let joined = |r: std::result::Result<Result<()>, tokio::task::JoinError>| match r {
            Ok(r) => r,
            Err(e) => Err(Error::Config(format!("a gateway task failed: {e}"))),
        };
        let first = tokio::select! {
            () = stop => Ok(()),
            done = &mut self.server => joined(done),
            Some(done) = self.ingest.join_next() => joined(done),
        };
        // requests in flight (a POST being published) are answered before the end
        self.cancel.cancel();
        self.ingest.abort_all();
        if !self.server.is_finished()
            && tokio::time::timeout(std::time::Duration::from_secs(10), &mut self.server)
                .await
                .is_err()
        {
            self.server.abort();
        }
        first
    }
}

/// Check what can be checked before connecting to the broker: the secret files, and
/// that a listener other than loopback requires credentials.
///
/// # Errors
/// `Config` saying what to change.
pub fn preflight(config: &Config, listen: SocketAddr) -> Result<()> {
    let keys = auth::Keys::load(&config.auth)?;
    if !keys.required() && !listen.ip().is_loopback() {
        return Err(Error::Config(format!(
            "{listen} is not loopback: set [auth] users_file or token_file"
        )));
    }
    if let Some(t) = &config.tls {
        ewx_net::https::server_config(&t.cert, &t.key)?;
    }
    Ok(())
}

/// Start serving on `listen` as the node `client` speaks for.
///
/// # Errors
/// `Config` for a configuration that cannot serve (no credentials on a non-loopback
/// address, a bad secret file, a store in use, a subscription the broker refuses),
/// `Bind` if the address is taken.
pub async fn serve(
    config: Config,
    client: ewx_client::Client,
    listen: SocketAddr,
) -> Result<Running> {
    preflight(&config, listen)?;
    let keys = auth::Keys::load(&config.auth)?;
    let tls = match &config.tls {
        Some(t) => Some(ewx_net::https::server_config(&t.cert, &t.key)?),
        None => None,
    };
    let ids: Vec<String> = config.collections.iter().map(|c| c.id.clone()).collect();
    let store = store::Store::open(&config.store, &ids)?;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|source| Error::Bind {
            addr: listen,
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| Error::Bind {
        addr: listen,
        source,
    })?;
    let gateway = Arc::new(Gateway {
        node: client.keys().node.to_string(),
        config,
        store,
        client,
        keys,
        clock: ewx_net::Clock::system(),
    });
    let mut ingest = JoinSet::new();
    for c in &gateway.config.collections {
        let sub = ingest::subscribe(&gateway, c).await?;
        ingest.spawn(ingest::run(gateway.clone(), c.clone(), sub));
    }
    let cancel = CancellationToken::new();
    let app = server::router(gateway.clone());
    let shutdown = cancel.clone().cancelled_owned();
    let server = match tls {
        Some(config) => {
            let listener = ewx_net::https::TlsListener::new(listener, config, cancel.clone())
                .map_err(|source| Error::Bind { addr, source })?;
            tokio::spawn(async move {
                axum::serve(listener, app)
                    .with_graceful_shutdown(shutdown)
                    .await
                    .map_err(|source| Error::Bind { addr, source })
            })
        }
        None => tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(shutdown)
                .await
                .map_err(|source| Error::Bind { addr, source })
        }),
    };
    tracing::info!(
        node = %gateway.node,
        collections = gateway.config.collections.len(),
        authenticated = gateway.keys.required(),
        "TAXII 2.1 gateway on {}://{addr}/taxii2/",
        if gateway.config.tls.is_some() { "https" } else { "http" }
    );
    Ok(Running {
        addr,
        cancel,
        server,
        ingest,
    })
}
