//! `ewx bench`: the flags, the child broker process, and the output.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, ExitCode, Stdio};

use anyhow::{Context, Result, bail};
use clap::Args;
use ewx_cli::bench::{self, BenchConfig};

use super::runtime;

#[derive(Debug, Args)]
pub struct BenchArgs {
    #[command(flatten)]
    load: bench::Load,
    /// Percentage of FLASH messages (the rest ROUTINE).
    #[arg(long, default_value_t = 1)]
    flash_percent: u8,
    /// Recipients per message (1-8 core nodes: each gets its own key wrap; publishers
    /// and subscribers are chosen among them).
    #[arg(long, default_value_t = 8)]
    recipients: usize,
    /// Measure the broker alone: seal every bulletin before the clock starts (seconds ×
    /// rate, or × 40 000/s) and time deliveries without verifying or decrypting them, so
    /// the load generator sharing the machine costs the broker as little as possible.
    #[arg(long)]
    broker_only: bool,
    /// Case traffic: every publish opens a consultation naming the other recipients as
    /// parties (the case index's largest cost per message: every party checked, two
    /// deadlines added). Needs --recipients 2 or more.
    #[arg(long)]
    cases: bool,
    /// One JSON object instead of a table.
    #[arg(long)]
    json: bool,
}

const LISTENING: &str = "EWX-BENCH-BROKER ";

/// Run as the bench's broker: print the address, serve until killed.
pub fn child_broker(config: &Path) -> Result<ExitCode> {
    let config = ewx_broker::Config::load(config)?;
    runtime()?.block_on(async {
        let broker = ewx_broker::Broker::start(config).await?;
        println!("{LISTENING}{}", broker.local_addr());
        let _ = tokio::signal::ctrl_c().await;
        broker.shutdown().await?;
        anyhow::Ok(ExitCode::SUCCESS)
    })
}

/// Stop the broker process as ctrl-c would (so it shuts down cleanly and its writer logs
/// its profile: `RUST_LOG=ewx_broker::log::writer=info`), killing it after 5 s.
fn stop_child(mut c: std::process::Child) {
    let _ = Command::new("kill")
        .args(["-INT", &c.id().to_string()])
        .status();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while std::time::Instant::now() < deadline {
        if let Ok(Some(_)) = c.try_wait() {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let _ = c.kill();
    let _ = c.wait();
}

pub fn run(args: BenchArgs, external: Option<SocketAddr>) -> Result<ExitCode> {
    if args.load.publishers == 0 || args.load.seconds == 0 {
        bail!("--publishers and --seconds must be at least 1");
    }
    if !(1..=8).contains(&args.recipients) {
        bail!("--recipients must be 1 to 8 (the demo network's core nodes)");
    }
    if args.cases && args.recipients < 2 {
        bail!("--cases needs --recipients 2 or more (a case names parties besides its sender)");
    }
    if args.broker_only && !args.json {
        eprintln!("sealing bulletins ahead of the run ...");
    }
    let dir = tempfile::tempdir().context("cannot make a temp dir")?;
    let mut child = None;
    let broker = match external {
        Some(addr) => addr,
        None => {
            ewx_cli::network::write(dir.path())?;
            let toml = format!(
                "listen = '127.0.0.1:0'\ndata_dir = 'data'\nkey = 'keys/BROKER.key'\nroster = 'roster.cbor'\n\
                 [limits]\nmax_connections_per_node = {}\n",
                (args.load.publishers + args.load.subscribers).max(16)
            );
            let config = dir.path().join("bench.toml");
            std::fs::write(&config, toml)?;
            let mut c = Command::new(std::env::current_exe()?)
                .args(["__bench-broker", "--config"])
                .arg(&config)
                .stdout(Stdio::piped())
                .spawn()
                .context("cannot start the broker process")?;
            let stdout = c.stdout.take().context("no broker output")?;
            let mut lines = BufReader::new(stdout).lines();
            let addr = loop {
                let line = lines.next().context("the broker process exited")??;
                if let Some(a) = line.strip_prefix(LISTENING) {
                    break a.trim().parse::<SocketAddr>()?;
                }
            };
            child = Some(c);
            addr
        }
    };
    let cfg = BenchConfig {
        broker,
        load: args.load.clone(),
        flash_percent: args.flash_percent,
        recipients: args.recipients,
        broker_only: args.broker_only,
        cases: args.cases,
    };
    let pid = child.as_ref().map(std::process::Child::id);
    let quiet = args.json;
    let report = runtime()?.block_on(bench::run(cfg, pid, &|s, p, d| {
        if !quiet {
            eprintln!("  {s:>3} s  published {p:>9}  delivered {d:>10}");
        }
    }));
    if let Some(c) = child {
        stop_child(c);
    }
    let report = report?;
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print!("{}", report.table("ewx bench"));
    }
    Ok(if report.errors == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
