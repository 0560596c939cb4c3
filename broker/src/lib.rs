//! # ewx-broker — the exchange's broker
//!
//! Accepts QUIC connections from roster nodes only (mutual TLS pinned to the roster),
//! checks every published envelope (size, sender, signature and publish rights, sequence,
//! clock skew, recipients), stores it durably with its audit entry (group commit: sled
//! transaction + flush + fdatasync, shared by all publishes in flight) and delivers it to
//! the subscribers whose grants allow it, FLASH first.
//!
//! Modules: [`config`] (TOML + limits); `core` (the synchronous decisions: admission,
//! subscriptions and acks, audit access, the routing index — no I/O); [`log`] (the
//! sequencer as a pure step, the single writer and its typed handle, the read and
//! commit traits, and sled behind them); `net` (accept loop, sessions, one file per
//! request kind, delivery lanes, the batched signature verifier).
//!
//! The broker never holds a content key: it routes sealed envelopes. It does not seal,
//! open or display messages (that is `ewx-client`) nor speak TLS or frames itself (that
//! is `ewx-net`).
#![forbid(unsafe_code)]

mod check;
mod cluster;
pub mod config;
mod core;
mod error;
pub mod log;
mod net;
mod ops;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub use check::{Finding, check_config};
pub use cluster::{MembershipChange, change_membership, check_snapshot};
pub use config::Config;
pub use core::Rejection;
pub use error::{Error, Result};
use net::Shared;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use ewx_net::{tls, wire};

/// A running broker.
#[derive(Debug)]
pub struct Broker {
    shared: Arc<Shared>,
    store: log::Store,
    endpoint: quinn::Endpoint,
    addr: SocketAddr,
    /// The operations listener's address, when configured.
    ops_addr: Option<SocketAddr>,
    writer: std::thread::JoinHandle<()>,
    /// This broker's place in a cluster (`None`: a single broker).
    cluster: Option<Arc<cluster::Node>>,
}

impl Broker {
    /// Load keys and roster, open and check the store, start the writer and listen.
    /// Logs `listening on ADDR` once ready.
    ///
    /// # Errors
    /// Any configuration, key, roster, store or socket problem, with its cause.
    pub async fn start(config: Config) -> Result<Self> {
        let keys = Arc::new(ewx_net::files::read_keys(&config.key)?);
        let ops_bound = match &config.ops {
            Some(o) => Some(ops::bind(o).await?),
            None => None,
        };
        let file_roster = ewx_net::files::read_roster(&config.roster)?;
        let (store, recovered) = log::Store::open(&config.data_dir, config.limits.replay_window)?;
        let roster = newest_roster(recovered.roster.as_deref(), file_roster, &config);
        check_broker_key(&roster, &keys, &config)?;
        let roster = tls::RosterCell::new(roster);
        let endpoint = listen(&config, &keys, &roster)?;
        let addr = endpoint
            .local_addr()
            .map_err(|e| Error::Transport(e.to_string()))?;
        let logged_roster = recovered.logged_roster;
        let routes = Arc::new(net::Routes::new(roster.clone()));
        let settings = log::sequencer::Settings {
            checkpoint: config.checkpoint.clone(),
            replay_width: config.limits.replay_window,
            retention: config.retention.clone(),
            queue: config.limits.write_queue,
            reminders_ms: config.cases.reminders_ms.clone(),
        };
        let read: Arc<dyn log::LogRead> = Arc::new(store.clone());
        let (outlet, reminders) = net::Outlet::new(
            net::spawn_fanout(routes.clone())
                .map_err(|e| Error::Store(format!("cannot start the fan-out: {e}")))?,
        );
        let fanout: Arc<dyn log::Fanout> = Arc::new(outlet);
        let parts = (
            Box::new(store.clone()) as Box<dyn log::LogCommit>,
            read.clone(),
        );
        let spawn_error = |e: std::io::Error| Error::Store(format!("cannot start the writer: {e}"));
        let (writer_handle, head, writer, cluster) = match &config.cluster {
            None => {
                let (handle, head, thread) = log::spawn(
                    recovered,
                    (keys, config.clock.clone()),
                    settings,
                    parts,
                    fanout,
                )
                .map_err(spawn_error)?;
                (handle, head, thread, None)
            }
            Some(cluster_config) => {
                let (jobs, head, thread) = log::spawn_replica(
                    recovered,
                    (keys.clone(), config.clock.clone()),
                    settings,
                    parts,
                    fanout,
                )
                .map_err(spawn_error)?;
                let setup = cluster::Setup {
                    config: cluster_config,
                    data_dir: &config.data_dir,
                    keys,
                    roster: roster.clone(),
                    store: &store,
                    clock: config.clock.clone(),
                };
                let (node, handle) = cluster::start(setup, jobs).await?;
                (handle, head, thread, Some(node))
            }
        };
        let shared = Arc::new(Shared {
            request_budget: Arc::new(tokio::sync::Semaphore::new(wire::budget_permits(
                config.limits.request_budget_bytes,
            ) as usize)),
            verifier: net::verifier::Verifier::start()
                .map_err(|e| Error::Store(format!("cannot start the verifier: {e}")))?,
            config,
            roster,
            roster_update: tokio::sync::Mutex::new(()),
            log: read,
            writer: writer_handle,
            head,
            cluster: cluster.clone(),
            routes,
            connections: Mutex::new(Default::default()),
            cancel: CancellationToken::new(),
            tasks: TaskTracker::new(),
            metrics: ops::Metrics::default(),
        });
        // the audit log records every roster in force, starting with this one
        let current = shared.roster.get();
        if logged_roster != Some(current.hash()) {
            let event = ewx_proto::audit::Event::RosterChanged {
                version: current.version(),
                hash: current.hash(),
            };
            if shared.cluster.is_none() {
                if !shared.writer.roster(current.clone(), event).await {
                    return Err(Error::Store("cannot record the roster in force".into()));
                }
            } else {
                // a replica starts before a leader is elected (it may be the one that
                // completes the majority): the roster is proposed once there is one
                let s = shared.clone();
                shared.tasks.spawn(async move {
                    while !s.cancel.is_cancelled()
                        && !s.writer.roster(current.clone(), event.clone()).await
                    {
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                });
            }
        }
        shared
            .tasks
            .spawn(net::accept_loop(endpoint.clone(), shared.clone()));
        shared.tasks.spawn(net::ticker(shared.clone()));
        let ops_addr = ops_bound
            .map(|b| ops::serve(b, shared.clone()))
            .transpose()?;
        shared
            .tasks
            .spawn(net::push_reminders(shared.clone(), reminders));
        tracing::info!("listening on {addr}");
        Ok(Self {
            shared,
            store,
            endpoint,
            addr,
            ops_addr,
            writer,
            cluster,
        })
    }

    /// Where the operations listener is bound, when `[ops]` is configured.
    pub fn ops_addr(&self) -> Option<SocketAddr> {
        self.ops_addr
    }

    /// The bound address (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// In a cluster: this replica's Raft id and the leader it knows of (`None`: a single
    /// broker).
    pub fn cluster_view(&self) -> Option<(u64, Option<u64>)> {
        self.cluster.as_ref().map(|c| (c.me, c.leader()))
    }

    /// In a cluster: take a new list of replicas (the configuration was edited; as on
    /// SIGHUP). This replica must still be listed.
    ///
    /// # Errors
    /// `Config` if this broker is not a replica or not among `replicas`.
    pub fn update_replicas(&self, replicas: &[config::Replica]) -> Result<()> {
        let c = self
            .cluster
            .as_ref()
            .ok_or_else(|| Error::Config("this broker is not a replica".into()))?;
        match replicas.iter().find(|r| r.id == c.me) {
            Some(r)
                if self.shared.config.cluster.as_ref().is_some_and(|cc| {
                    cc.replicas.iter().any(|o| o.id == r.id && o.node == r.node)
                }) => {}
            _ => {
                return Err(Error::Config(format!(
                    "replica {} (this one) must stay in cluster.replicas with the same node",
                    c.me
                )));
            }
        }
        c.peers.set_replicas(replicas);
        tracing::info!(replicas = replicas.len(), "cluster: replica list reloaded");
        Ok(())
    }

    /// In a cluster: snapshots this replica installed since it started (it was behind
    /// the others' compacted Raft logs).
    pub fn snapshots_installed(&self) -> Option<u64> {
        let c = self.cluster.as_ref()?;
        Some(c.installed.load(std::sync::atomic::Ordering::Relaxed))
    }

    /// The store, for inspection (tests, auditors in-process).
    pub fn store(&self) -> &log::Store {
        &self.store
    }

    /// Install a newer roster (as on SIGHUP): verified against the one in force.
    ///
    /// # Errors
    /// The rejection if it does not verify.
    pub async fn update_roster(&self, bytes: &[u8]) -> std::result::Result<u64, Rejection> {
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
            store,
            cluster,
            ..
        } = self;
        // new handshakes are ignored from now on (not refused: a refusal is a connection
        // the endpoint must drain, and replicas retrying every heartbeat would keep the
        // port bound)
        endpoint.set_server_config(None);
        shared.cancel.cancel();
        shared.tasks.close();
        if tokio::time::timeout(Duration::from_secs(10), shared.tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!("some requests did not finish within 10 s");
        }
        if let Some(node) = cluster {
            // stop replicating first: the state machine lets go of the writer
            if let Err(e) = node.raft.shutdown().await {
                tracing::warn!("Raft did not stop cleanly: {e}");
            }
            node.peers.close();
        }
        endpoint.close(ewx_net::CloseCode::Normal.varint(), b"shutdown");
        let _ = tokio::time::timeout(Duration::from_secs(3), endpoint.wait_idle()).await;
        drop((shared, store)); // the last writer handle: it commits what is left and stops
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
    let source = config.source.clone();
    let broker = Broker::start(config).await?;
    #[cfg(unix)]
    let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        .map_err(|e| Error::Transport(format!("cannot watch SIGHUP: {e}")))?;
    tokio::pin!(shutdown);
    loop {
        #[cfg(unix)]
        tokio::select! {
            _ = &mut shutdown => break,
            _ = hup.recv() => reload(&broker, &roster_file, source.as_deref()).await,
        }
        #[cfg(not(unix))]
        {
            (&mut shutdown).await;
            break;
        }
    }
    broker.shutdown().await
}

async fn reload(broker: &Broker, path: &std::path::Path, config: Option<&std::path::Path>) {
    if let (Some(file), Some(_)) = (config, &broker.cluster) {
        tracing::info!(
            "SIGHUP: reloading the cluster's replicas from {}",
            file.display()
        );
        let replicas = Config::load(file).and_then(|c| {
            c.cluster
                .map(|c| c.replicas)
                .ok_or_else(|| Error::Config("no [cluster] section any more".into()))
        });
        if let Err(e) = replicas.and_then(|r| broker.update_replicas(&r)) {
            tracing::warn!("replicas not reloaded: {e}");
        }
    }
    tracing::info!("SIGHUP: reloading {}", path.display());
    match std::fs::read(path) {
        Ok(bytes) => match broker.update_roster(&bytes).await {
            Ok(v) => tracing::info!(version = v, "roster in force"),
            Err(r) => tracing::warn!("roster not accepted: {r}"),
        },
        Err(e) => tracing::warn!("cannot read {}: {e}", path.display()),
    }
}

/// The roster to run with: the one in the store if it is a valid update of the file's
/// (a newer roster accepted at run time), else the file's.
fn newest_roster(
    stored: Option<&[u8]>,
    file: ewx_proto::Roster,
    config: &Config,
) -> ewx_proto::Roster {
    let Some(bytes) = stored else { return file };
    match ewx_proto::SignedRoster::decode(bytes).and_then(|s| s.verify_update(&file)) {
        Ok(stored) => stored,
        Err(e) => {
            tracing::warn!(
                "stored roster not used ({e}); using {}",
                config.roster.display()
            );
            file
        }
    }
}

/// The key file must be the roster's broker key.
fn check_broker_key(
    roster: &ewx_proto::Roster,
    keys: &ewx_proto::NodeKeys,
    config: &Config,
) -> Result<()> {
    let me = roster.active(&keys.node)?;
    if me.role != ewx_proto::Role::Broker || me.sign != keys.sign_public() {
        return Err(Error::Config(format!(
            "key file {} is not the roster's broker key for {}",
            config.key.display(),
            keys.node
        )));
    }
    Ok(())
}

/// The QUIC endpoint with the roster-pinned server configuration and the limits.
fn listen(
    config: &Config,
    keys: &ewx_proto::NodeKeys,
    roster: &tls::RosterCell,
) -> Result<quinn::Endpoint> {
    let limits = tls::TransportLimits {
        idle_timeout: Duration::from_millis(config.limits.idle_timeout_ms),
        max_bidi_streams: config.limits.max_streams_per_connection,
        max_uni_streams: 0,
        stream_window: config.limits.stream_window_bytes,
        connection_window: config.limits.connection_window_bytes,
    };
    let server_config = tls::server_config(keys, roster.clone(), limits)?;
    Ok(tls::endpoint(keys, server_config, config.listen)?)
}
