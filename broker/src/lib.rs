//! # ewx-broker — the exchange's broker
//!
//! Accepts QUIC connections from roster nodes only (mutual TLS pinned to the roster),
//! checks every published envelope (size, sender, signature and publish rights, sequence,
//! clock skew, recipients), stores it durably with its audit entry (group commit: sled
//! transaction + flush + fdatasync, shared by all publishes in flight) and delivers it to
//! the subscribers whose grants allow it, FLASH first.
//!
//! Modules: [`config`] (TOML + limits), [`router`] (the synchronous decisions),
//! [`store`] (sled), [`writer`] (the single writer: group commit, audit chain,
//! checkpoints), [`server`] (connections, requests, delivery lanes).
//!
//! The broker never holds a content key: it routes sealed envelopes.
#![forbid(unsafe_code)]

pub mod config;
mod error;
pub mod router;
pub mod server;
pub mod store;
pub mod verifier;
pub mod writer;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub use config::Config;
pub use error::{Error, Result};
use server::Shared;
use tokio::sync::{broadcast, mpsc};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use ewx_net::{tls, wire};

/// A running broker.
#[derive(Debug)]
pub struct Broker {
    shared: Arc<Shared>,
    endpoint: quinn::Endpoint,
    addr: SocketAddr,
    writer: std::thread::JoinHandle<()>,
}

impl Broker {
    /// Load keys and roster, open and check the store, start the writer and listen.
    /// Logs `listening on ADDR` once ready.
    ///
    /// # Errors
    /// Any configuration, key, roster, store or socket problem, with its cause.
    pub async fn start(config: Config) -> Result<Self> {
        let keys = Arc::new(ewx_net::files::read_keys(&config.key)?);
        let file_roster = ewx_net::files::read_roster(&config.roster)?;
        let (store, recovered) = store::Store::open(&config.data_dir, config.limits.replay_window)?;
        // the store may hold a newer roster accepted at run time: keep the newer one
        let roster = match &recovered.roster {
            Some(bytes) => match ewx_proto::SignedRoster::decode(bytes)
                .and_then(|s| s.verify_update(&file_roster))
            {
                Ok(stored) => stored,
                Err(e) => {
                    tracing::warn!(
                        "stored roster not used ({e}); using {}",
                        config.roster.display()
                    );
                    file_roster
                }
            },
            None => file_roster,
        };
        let me = roster.active(&keys.node)?;
        if me.role != ewx_proto::Role::Broker || me.sign != keys.sign_public() {
            return Err(Error::Config(format!(
                "key file {} is not the roster's broker key for {}",
                config.key.display(),
                keys.node
            )));
        }
        let roster = tls::RosterCell::new(roster);
        let limits = tls::TransportLimits {
            idle_timeout: Duration::from_millis(config.limits.idle_timeout_ms),
            max_bidi_streams: config.limits.max_streams_per_connection,
            max_uni_streams: 0,
            stream_window: config.limits.stream_window_bytes,
            connection_window: config.limits.connection_window_bytes,
        };
        let server_config = tls::server_config(&keys, roster.clone(), limits)?;
        let endpoint = tls::endpoint(&keys, server_config, config.listen)?;
        let addr = endpoint
            .local_addr()
            .map_err(|e| Error::Transport(e.to_string()))?;

        let logged_roster = recovered.logged_roster;
        let (live, _) = broadcast::channel(config.limits.live_buffer);
        let (tx, rx) = mpsc::channel(config.limits.write_queue);
        let (head, writer) = writer::spawn(
            store.clone(),
            recovered,
            keys,
            writer::Settings {
                checkpoint: config.checkpoint.clone(),
                replay_width: config.limits.replay_window,
                retention: config.retention.clone(),
                queue: config.limits.write_queue,
            },
            live.clone(),
            rx,
        )
        .map_err(|e| Error::Store(format!("cannot start the writer: {e}")))?;
        let shared = Arc::new(Shared {
            request_budget: Arc::new(tokio::sync::Semaphore::new(wire::budget_permits(
                config.limits.request_budget_bytes,
            ) as usize)),
            verifier: verifier::Verifier::start()
                .map_err(|e| Error::Store(format!("cannot start the verifier: {e}")))?,
            config,
            roster,
            roster_update: tokio::sync::Mutex::new(()),
            store,
            writer: tx,
            head,
            live,
            connections: Mutex::new(Default::default()),
            cancel: CancellationToken::new(),
            tasks: TaskTracker::new(),
        });
        // the audit log records every roster in force, starting with this one
        let current = shared.roster.get();
        if logged_roster != Some(current.hash()) {
            let (reply, done) = tokio::sync::oneshot::channel();
            let event = ewx_proto::audit::Event::RosterChanged {
                version: current.version(),
                hash: current.hash(),
            };
            let bytes = current.signed().encode()?;
            let sent = shared
                .writer
                .send(writer::Command::Roster {
                    bytes,
                    event,
                    reply,
                })
                .await
                .is_ok();
            if !sent || !done.await.unwrap_or(false) {
                return Err(Error::Store("cannot record the roster in force".into()));
            }
        }
        shared
            .tasks
            .spawn(server::accept_loop(endpoint.clone(), shared.clone()));
        shared.tasks.spawn(server::ticker(shared.clone()));
        tracing::info!("listening on {addr}");
        Ok(Self {
            shared,
            endpoint,
            addr,
            writer,
        })
    }

    /// The bound address (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The store, for inspection (tests, auditors in-process).
    pub fn store(&self) -> &store::Store {
        &self.shared.store
    }

    /// Install a newer roster (as on SIGHUP): verified against the one in force.
    ///
    /// # Errors
    /// The rejection if it does not verify.
    pub async fn update_roster(&self, bytes: &[u8]) -> std::result::Result<u64, router::Rejection> {
        self.shared.update_roster(bytes).await
    }

    /// The roster in force.
    pub fn roster(&self) -> Arc<ewx_proto::Roster> {
        self.shared.roster.get()
    }

    /// Stop accepting, let in-flight requests finish, close QUIC, commit and sync.
    ///
    /// # Errors
    /// `Store` if the writer thread panicked.
    pub async fn shutdown(self) -> Result<()> {
        tracing::info!("shutting down");
        let Broker {
            shared,
            endpoint,
            writer,
            ..
        } = self;
        shared.cancel.cancel();
        shared.tasks.close();
        if tokio::time::timeout(Duration::from_secs(10), shared.tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!("some requests did not finish within 10 s");
        }
        endpoint.close(ewx_net::CloseCode::Normal.varint(), b"shutdown");
        let _ = tokio::time::timeout(Duration::from_secs(3), endpoint.wait_idle()).await;
        drop(shared); // the last queue sender: the writer commits what is left and stops
        tokio::task::spawn_blocking(move || writer.join())
            .await
            .map_err(|e| Error::Store(e.to_string()))?
            .map_err(|_| Error::Store("writer thread panicked".into()))?;
        tracing::info!("stopped");
        Ok(())
    }
}

/// Run until `shutdown` completes (the binary passes ctrl-c / SIGTERM), reloading the
/// roster file on SIGHUP.
///
/// # Errors
/// Startup failures, or a failed shutdown.
pub async fn run(config: Config, shutdown: impl std::future::Future<Output = ()>) -> Result<()> {
    let roster_file = config.roster.clone();
    let broker = Broker::start(config).await?;
    #[cfg(unix)]
    let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        .map_err(|e| Error::Transport(format!("cannot watch SIGHUP: {e}")))?;
    tokio::pin!(shutdown);
    loop {
        #[cfg(unix)]
        tokio::select! {
            _ = &mut shutdown => break,
            _ = hup.recv() => reload(&broker, &roster_file).await,
        }
        #[cfg(not(unix))]
        {
            (&mut shutdown).await;
            break;
        }
    }
    broker.shutdown().await
}

async fn reload(broker: &Broker, path: &std::path::Path) {
    tracing::info!("SIGHUP: reloading {}", path.display());
    match std::fs::read(path) {
        Ok(bytes) => match broker.update_roster(&bytes).await {
            Ok(v) => tracing::info!(version = v, "roster in force"),
            Err(r) => tracing::warn!("roster not accepted: {r}"),
        },
        Err(e) => tracing::warn!("cannot read {}: {e}", path.display()),
    }
}
