//! `ewx-compare`: the `ewx bench` workload against a peer broker, for side-by-side
//! numbers (see README.md). Not part of the shipped binaries: its own workspace.

mod peers;

use std::process::ExitCode;

use anyhow::Result;
use clap::{Args, Parser, Subcommand};

use ewx_cli::bench::{Load, Peer, measure};

#[derive(Debug, Parser)]
#[command(
    name = "ewx-compare",
    about = "The ewx bench workload against NATS JetStream or Redis streams"
)]
struct Cli {
    #[command(subcommand)]
    peer: PeerCmd,
}

#[derive(Debug, Subcommand)]
enum PeerCmd {
    /// NATS JetStream: a file-storage stream, PubAck per publish, an ordered push consumer
    /// per subscriber. Durability (sync_interval) is the server's configuration.
    Nats {
        /// Server URL.
        #[arg(long, default_value = "nats://127.0.0.1:4222")]
        url: String,
        #[command(flatten)]
        bench: BenchArgs,
    },
    /// Redis streams: XADD per publish, XREAD BLOCK per subscriber. Durability
    /// (appendfsync) is the server's configuration.
    Redis {
        /// Server URL.
        #[arg(long, default_value = "redis://127.0.0.1:6379")]
        url: String,
        #[command(flatten)]
        bench: BenchArgs,
    },
}

/// The workload flags of `ewx bench` (the same `Load`), plus the server to watch.
#[derive(Debug, Args)]
struct BenchArgs {
    #[command(flatten)]
    load: Load,
    /// The server's process id, to read its CPU time and peak memory from /proc.
    #[arg(long)]
    server_pid: Option<u32>,
    /// One JSON object (the fields of `ewx bench --json`) instead of a table.
    #[arg(long)]
    json: bool,
}

#[tokio::main]
async fn main() -> Result<ExitCode> {
    let cli = Cli::parse();
    let (name, bench, peer): (&str, &BenchArgs, Box<dyn Peer>) = match &cli.peer {
        PeerCmd::Nats { url, bench } => (
            "NATS JetStream",
            bench,
            Box::new(peers::Nats::new(url, bench.load.size).await?),
        ),
        PeerCmd::Redis { url, bench } => (
            "Redis streams",
            bench,
            Box::new(peers::Redis::new(url, bench.load.size).await?),
        ),
    };
    let quiet = bench.json;
    // the same load loop as `ewx bench` (ewx_cli::bench::measure)
    let pids: Vec<u32> = bench.server_pid.into_iter().collect();
    let report = measure(&bench.load, peer.as_ref(), &pids, &|s, p, d| {
        if !quiet {
            eprintln!("  {s:>3} s  published {p:>9}  delivered {d:>10}");
        }
    })
    .await
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    if bench.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print!("{}", report.table(name));
    }
    Ok(if report.errors == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
