//! `ewx bench`: the flags, the child broker process, and the output.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, ExitCode, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

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
    /// Measure a 3-replica cluster (Raft, acks after a majority fsynced and applied) next
    /// to a single broker in the same run: the same load against one broker, then
    /// against three replicas (clients spread over them), then against the cluster at
    /// half its measured rate (the ack latency at a load it carries). Three tables and
    /// the ratios; with --json one object {single, cluster, cluster_half_rate}.
    #[arg(long, conflicts_with = "broker")]
    cluster: bool,
    /// What metrics cost: the same load against a single broker twice in one run,
    /// without and with its operations listener scraped (`/metrics` every second, as
    /// Prometheus would); prints both CPU per publish and their ratio.
    #[arg(long, conflicts_with_all = ["broker", "cluster"])]
    scrape: bool,
    /// One JSON object instead of a table.
    #[arg(long)]
    json: bool,
}

const LISTENING: &str = "EWX-BENCH-BROKER ";
const OPS: &str = "EWX-BENCH-OPS ";

/// Run as the bench's broker: print the address, serve until killed.
pub fn child_broker(config: &Path) -> Result<ExitCode> {
    let config = ewx_broker::Config::load(config)?;
    runtime()?.block_on(async {
        let broker = ewx_broker::Broker::start(config).await?;
        if let Some(ops) = broker.ops_addr() {
            println!("{OPS}{ops}");
        }
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

pub fn run(args: BenchArgs, external: Option<Vec<SocketAddr>>) -> Result<ExitCode> {
    if args.load.publishers == 0 || args.load.seconds == 0 {
        bail!("--publishers and --seconds must be at least 1");
    }
    if !(1..=8).contains(&args.recipients) {
        bail!("--recipients must be 1 to 8 (the demo network's core nodes)");
    }
    if args.cases && args.recipients < 2 {
        bail!("--cases needs --recipients 2 or more (a case names parties besides its sender)");
    }
    if args.cluster && external.is_some() {
        bail!("--cluster starts its own three replicas; it cannot use --broker");
    }
    let dir = tempfile::tempdir().context("cannot make a temp dir")?;
    ewx_cli::network::write(dir.path())?;
    if args.scrape {
        return scrape_cost(&args, dir.path());
    }
    if !args.cluster {
        let report = match external {
            Some(addrs) => measure_run(&args, &args.load, addrs, &[], None)?.0,
            None => measured(&args, &args.load, dir.path(), "single", 1)?,
        };
        if args.json {
            println!("{}", serde_json::to_string(&report)?);
        } else {
            print!("{}", report.table("ewx bench"));
        }
        return Ok(exit(&[&report]));
    }
    let single = measured(&args, &args.load, dir.path(), "single", 1)?;
    let cluster = measured(&args, &args.load, dir.path(), "cluster", 3)?;
    let mut half = args.load.clone();
    half.rate = Some(
        args.load
            .rate
            .unwrap_or((cluster.published_per_s / 2.0).max(1.0) as u64),
    );
    let at_half = measured(&args, &half, dir.path(), "half", 3)?;
    let ratio = cluster.published_per_s / single.published_per_s.max(1e-9);
    if args.json {
        let all = serde_json::json!({
            "single": single,
            "cluster": cluster,
            "cluster_half_rate": at_half,
            "cluster_over_single": ratio,
        });
        println!("{all}");
    } else {
        print!("{}", single.table("single broker"));
        print!("{}", cluster.table("cluster of 3 replicas"));
        print!("{}", at_half.table("cluster of 3, at half its rate"));
        println!(
            "cluster / single published/s: {ratio:.2}; cluster ack p99 at {} msg/s: {:.1} ms",
            half.rate.unwrap_or(0),
            at_half.ack_p99_ms
        );
    }
    Ok(exit(&[&single, &cluster, &at_half]))
}

fn exit(reports: &[&bench::BenchReport]) -> ExitCode {
    if reports.iter().all(|r| r.errors == 0) {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// Start `replicas` broker processes (1: a single broker) for a run called `run`, measure
/// `load` against them, stop them.
fn measured(
    args: &BenchArgs,
    load: &bench::Load,
    dir: &Path,
    run: &str,
    replicas: usize,
) -> Result<bench::BenchReport> {
    measured_with(args, load, dir, (run, replicas), false).map(|(r, _)| r)
}

/// [`measured`], with the (first) broker's `/metrics` scraped every second if `scraped`;
/// the report and the number of good scrapes.
fn measured_with(
    args: &BenchArgs,
    load: &bench::Load,
    dir: &Path,
    (run, replicas): (&str, usize),
    scraped: bool,
) -> Result<(bench::BenchReport, u64)> {
    if args.broker_only && !args.json {
        eprintln!("{run}: sealing bulletins ahead of the run ...");
    }
    let children = spawn_brokers(args, dir, run, replicas, scraped)?;
    let addrs = children.iter().map(|c| c.1).collect();
    let pids: Vec<u32> = children.iter().map(|c| c.0.id()).collect();
    let ops = children.first().and_then(|c| c.2);
    let report = measure_run(args, load, addrs, &pids, ops);
    for (c, _, _) in children {
        stop_child(c);
    }
    report
}

/// `--scrape`: a single broker without, then with, its metrics scraped every second.
fn scrape_cost(args: &BenchArgs, dir: &Path) -> Result<ExitCode> {
    let mut runs = Vec::new();
    for (run, scraped) in [("plain", false), ("scraped", true)] {
        runs.push(measured_with(args, &args.load, dir, (run, 1), scraped)?);
    }
    let [(plain, _), (scraped, scrapes)] =
        <[_; 2]>::try_from(runs).map_err(|_| anyhow::anyhow!("two runs expected"))?;
    let cpu = |r: &bench::BenchReport| r.broker_cpu_us_per_publish.unwrap_or(f64::NAN);
    let ratio = cpu(&scraped) / cpu(&plain);
    if args.json {
        let all = serde_json::json!({
            "plain": plain,
            "scraped": scraped,
            "scrapes": scrapes,
            "cpu_scraped_over_plain": ratio,
        });
        println!("{all}");
    } else {
        print!("{}", plain.table("single broker, metrics not scraped"));
        print!(
            "{}",
            scraped.table("single broker, /metrics scraped every second")
        );
        println!(
            "CPU per publish: {:.1} µs plain, {:.1} µs scraped ({scrapes} scrapes): {:+.1} %",
            cpu(&plain),
            cpu(&scraped),
            (ratio - 1.0) * 100.0
        );
    }
    Ok(exit(&[&plain, &scraped]))
}

/// GET `/metrics` at `addr` every second until aborted, counting good answers in `done`.
async fn scrape_every_second(addr: SocketAddr, done: Arc<AtomicU64>) {
    use http_body_util::BodyExt;
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<http_body_util::Empty<bytes::Bytes>>();
    let Ok(uri) = format!("http://{addr}/metrics").parse::<hyper::Uri>() else {
        return;
    };
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
    loop {
        tick.tick().await;
        let Ok(resp) = client.get(uri.clone()).await else {
            continue;
        };
        let ok = resp.status().is_success();
        if resp.into_body().collect().await.is_ok() && ok {
            done.fetch_add(1, Ordering::Relaxed);
        }
    }
}

fn measure_run(
    args: &BenchArgs,
    load: &bench::Load,
    brokers: Vec<SocketAddr>,
    pids: &[u32],
    scrape: Option<SocketAddr>,
) -> Result<(bench::BenchReport, u64)> {
    let cfg = BenchConfig {
        brokers,
        load: load.clone(),
        flash_percent: args.flash_percent,
        recipients: args.recipients,
        broker_only: args.broker_only,
        cases: args.cases,
    };
    let quiet = args.json;
    let scrapes = Arc::new(AtomicU64::new(0));
    let report = runtime()?.block_on(async {
        let scraper = scrape.map(|a| tokio::spawn(scrape_every_second(a, scrapes.clone())));
        let report = bench::run(cfg, pids, &|s, p, d| {
            if !quiet {
                eprintln!("  {s:>3} s  published {p:>9}  delivered {d:>10}");
            }
        })
        .await;
        if let Some(s) = scraper {
            s.abort();
        }
        report
    })?;
    Ok((report, scrapes.load(Ordering::Relaxed)))
}

/// Start the broker processes of one run: one broker, or a cluster of `replicas`.
fn spawn_brokers(
    args: &BenchArgs,
    dir: &Path,
    run: &str,
    replicas: usize,
    ops: bool,
) -> Result<Vec<(std::process::Child, SocketAddr, Option<SocketAddr>)>> {
    let limits = format!(
        "[limits]\nmax_connections_per_node = {}\n",
        (args.load.publishers + args.load.subscribers).max(16)
    );
    let listens = ewx_cli::network::loopback_listens(replicas)?;
    let cluster = ewx_cli::network::cluster_section(&listens);
    let ops = if ops {
        "[ops]\nlisten = '127.0.0.1:0'\n"
    } else {
        ""
    };
    let mut children = Vec::new();
    for (i, listen) in listens.iter().enumerate() {
        let toml = format!(
            "listen = '{listen}'\ndata_dir = 'data-{run}-{i}'\nkey = 'keys/{}.key'\nroster = 'roster.cbor'\n{limits}{cluster}{ops}",
            ewx_testkit::REPLICAS[i]
        );
        let config = dir.join(format!("bench-{run}-{i}.toml"));
        std::fs::write(&config, toml)?;
        let mut c = Command::new(std::env::current_exe()?)
            .args(["__bench-broker", "--config"])
            .arg(&config)
            .stdout(Stdio::piped())
            .spawn()
            .context("cannot start the broker process")?;
        let stdout = c.stdout.take().context("no broker output")?;
        let mut lines = BufReader::new(stdout).lines();
        let mut ops_addr = None;
        let addr = loop {
            let line = lines.next().context("the broker process exited")??;
            if let Some(a) = line.strip_prefix(OPS) {
                ops_addr = Some(a.trim().parse::<SocketAddr>()?);
            }
            if let Some(a) = line.strip_prefix(LISTENING) {
                break a.trim().parse::<SocketAddr>()?;
            }
        };
        children.push((c, addr, ops_addr));
    }
    Ok(children)
}
