//! `ewx-broker`: run the exchange's broker from a TOML configuration.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;

/// The ewx broker: a QUIC message broker for signed, end-to-end encrypted early-warning
/// bulletins. Only nodes in the signed roster can connect; every publish is checked and
/// stored durably with a hash-chained audit entry before it is acknowledged.
///
/// Example:
///   ewx-broker --config keys-example/broker.toml --data-dir /var/lib/ewx
///
/// Signals: SIGINT/SIGTERM shut down gracefully (in-flight publishes finish, the store is
/// synced); SIGHUP reloads the roster file (a newer version signed by the council
/// threshold is installed and revoked nodes are disconnected) and, on a replica, the
/// `[cluster] replicas` list of the configuration.
///
/// A replica's membership (see `ewx-broker cluster --help`):
///   ewx-broker --config replica-1.toml cluster status
///   ewx-broker --config replica-1.toml cluster add 4
#[derive(Debug, Parser)]
#[command(name = "ewx-broker", version, verbatim_doc_comment)]
struct Args {
    /// The TOML configuration: listen, data_dir, key, roster, [limits], [checkpoint],
    /// [retention]. Relative paths in it are relative to the file.
    #[arg(long, short, env = "EWX_BROKER_CONFIG")]
    config: PathBuf,
    /// UDP address to listen on, overriding `listen` (port 0 picks a free port).
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// Data directory of the sled store, overriding `data_dir` (created if missing).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Log format: `human` (default) or `json` (one object per line). The level comes
    /// from RUST_LOG (default `info`, with openraft's own messages off: the broker logs
    /// leadership changes and unreachable replicas itself; RUST_LOG=info,openraft=info
    /// shows them).
    #[arg(long, default_value = "human", value_parser = ["human", "json"])]
    log_format: String,
    /// Check the configuration as a start would (key file and mode, roster and this
    /// broker's place in it, data directory, listening address, cluster section), print
    /// what was found, and exit: 0 when it is usable, 1 when not. Serves nothing.
    #[arg(long)]
    check_config: bool,
    /// Instead of running the broker: an operator's command to the running cluster.
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Ask or change a cluster's membership, with this replica's key (run it on a
    /// replica's host with its configuration; the leader carries changes out).
    ///
    /// Adding replica N: put its broker node in the roster (SIGHUP every replica), add
    /// `{ id = N, node, addr }` to every replica's [cluster] replicas (SIGHUP them), start
    /// the new replica with `join = true` and all replicas listed, then `cluster add N`:
    /// it catches up as a learner (a snapshot of the store, then the log) and becomes a
    /// voter. Removing: `cluster remove N`, then stop it and take it out of the configs
    /// and the roster.
    #[command(verbatim_doc_comment)]
    Cluster {
        #[command(subcommand)]
        action: ClusterAction,
    },
}

#[derive(Debug, Clone, Copy, clap::Subcommand)]
enum ClusterAction {
    /// Voters, learners, the leader, and how far each replica has the log.
    Status,
    /// Make replica ID (listed in the configurations, a broker of the roster) a voter.
    Add {
        /// Its Raft id.
        id: u64,
    },
    /// Take replica ID out of the membership.
    Remove {
        /// Its Raft id.
        id: u64,
    },
}

fn main() -> ExitCode {
    let args = Args::parse();
    init_logging(&args.log_format);
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // a person at a terminal reads one line; a service's log gets the event
            if std::io::IsTerminal::is_terminal(&std::io::stderr()) {
                eprintln!("ewx-broker: {e:#}");
            } else {
                tracing::error!("{e:#}");
            }
            ExitCode::FAILURE
        }
    }
}

fn init_logging(format: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(DEFAULT_LOG));
    // colour codes only for a person at a terminal, never into a file or a journal
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    if format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
}

fn run(args: Args) -> anyhow::Result<()> {
    let mut config = ewx_broker::Config::load(&args.config)?;
    if let Some(l) = args.listen {
        config.listen = l;
    }
    if let Some(d) = args.data_dir {
        config.data_dir = d;
    }
    if args.check_config {
        if args.command.is_some() {
            anyhow::bail!("--check-config runs alone, without a subcommand");
        }
        let found = ewx_broker::check_config(&config);
        for f in &found {
            println!("{}  {}", if f.ok { "ok " } else { "BAD" }, f.what);
        }
        let bad = found.iter().filter(|f| !f.ok).count();
        if bad > 0 {
            anyhow::bail!(
                "{}: {bad} problem(s) above; the broker would not start",
                args.config.display()
            );
        }
        println!("{}: usable", args.config.display());
        return Ok(());
    }
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    if let Some(Command::Cluster { action }) = args.command {
        let change = match action {
            ClusterAction::Status => ewx_broker::MembershipChange::Status,
            ClusterAction::Add { id } => ewx_broker::MembershipChange::Add(id),
            ClusterAction::Remove { id } => ewx_broker::MembershipChange::Remove(id),
        };
        let report = runtime.block_on(ewx_broker::change_membership(&config, change))?;
        print!("{report}");
        return Ok(());
    }
    runtime.block_on(ewx_broker::run(config, shutdown_signal()))?;
    Ok(())
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!("cannot watch SIGTERM: {e}");
                    let _ = tokio::signal::ctrl_c().await;
                    return;
                }
            };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = tokio::signal::ctrl_c().await;
}

/// The log filter without RUST_LOG: openraft reports every failed heartbeat to a replica
/// that is down (several a second) at ERROR; the broker says it once itself.
const DEFAULT_LOG: &str = "info,openraft=off";
