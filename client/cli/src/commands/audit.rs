//! `ewx audit …`: verify a broker's log without trusting the broker, and list who
//! received a message.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::Subcommand;
use ewx_cli::files;
use ewx_cli::offline::{Source, StoreCopy};
use ewx_client::audit::{self, Summary};
use ewx_proto::{MessageId, Roster};

use super::{Conn, render, runtime};

#[derive(Debug, Subcommand)]
pub enum AuditCmd {
    /// Verify the whole audit log: hash chain, Merkle roots, checkpoint signatures and
    /// consistency, every envelope's signature and sender rights, every receipt.
    ///
    /// Online (as an auditor node, with --broker/--key) or offline with --store on a copy
    /// of a broker's data directory. The roster you trust comes from --roster. Exits 0
    /// with a summary whose last line starts `verified:`, or 1 with
    /// `first bad index: N (reason)`.
    ///
    /// Example: ewx audit verify --store /backup/ewx-data --roster roster.cbor
    Verify {
        /// A copy of the broker's data directory (offline).
        #[arg(long)]
        store: Option<PathBuf>,
        /// Require at least this many witness co-signatures on the last checkpoint.
        #[arg(long, default_value_t = 0)]
        min_witnesses: usize,
    },
    /// Write an audit bundle: the envelope, its inclusion proof, a (witnessed) checkpoint
    /// and the roster in force — verifiable offline with verify-bundle.
    ///
    /// Example: ewx audit bundle 9f1c0d…e2 -o warning.bundle --store /backup/ewx-data
    Bundle {
        /// Message id (32 hex digits).
        id: String,
        /// Output file.
        #[arg(short, long)]
        out: PathBuf,
        /// Build it from a copy of the broker's data directory instead of the broker.
        #[arg(long)]
        store: Option<PathBuf>,
    },
    /// Check an audit bundle offline, against the roster you trust (--roster).
    ///
    /// Example: ewx audit verify-bundle warning.bundle --roster roster.cbor
    VerifyBundle {
        /// The bundle file.
        file: PathBuf,
    },
    /// List who received and acknowledged a message (verified receipts) and when.
    ///
    /// Example: ewx audit receipts 9f1c0d…e2 --store /backup/ewx-data --roster roster.cbor
    Receipts {
        /// Message id (32 hex digits, as `ewx publish` prints it).
        id: String,
        /// A copy of the broker's data directory (default: ask the broker, as an auditor).
        #[arg(long)]
        store: Option<PathBuf>,
    },
}

fn report(result: ewx_client::Result<Summary>) -> Result<ExitCode> {
    match result {
        Ok(summary) => {
            println!("{summary}");
            Ok(ExitCode::SUCCESS)
        }
        Err(ewx_client::Error::Unsound(failure)) => {
            println!("{failure}");
            Ok(ExitCode::FAILURE)
        }
        Err(e) => Err(e).context("the log could not be read"),
    }
}

fn progress_bar() -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new(0);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{spinner} {pos}/{len} entries {wide_bar} {eta}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    bar
}

/// What an audit command reads: the store copy in `store`, or else the broker, as the
/// node of `conn`.
async fn open_source(conn: &Conn, store: Option<PathBuf>) -> Result<Source> {
    Ok(match store {
        Some(dir) => Source::Store(StoreCopy::open(&dir)?),
        None => Source::Broker(conn.resolve()?.connect().await?),
    })
}

pub fn run(cmd: AuditCmd, conn: &Conn) -> Result<ExitCode> {
    let anchor = ewx_net::files::read_roster(&conn.roster_file()?)?;
    match cmd {
        AuditCmd::Verify {
            store,
            min_witnesses,
        } => verify(conn, store, anchor, min_witnesses),
        AuditCmd::Bundle { id, out, store } => bundle(conn, store, &id.parse()?, &out, &anchor),
        AuditCmd::VerifyBundle { file } => verify_bundle(&file, &anchor),
        AuditCmd::Receipts { id, store } => receipts(conn, store, &id.parse()?, &anchor),
    }
}

fn verify(
    conn: &Conn,
    store: Option<PathBuf>,
    anchor: Roster,
    min_witnesses: usize,
) -> Result<ExitCode> {
    runtime()?.block_on(async {
        let source = open_source(conn, store).await?;
        let bar = progress_bar();
        let result = audit::verify(&source, anchor, min_witnesses, &mut |done, total| {
            bar.set_length(total);
            bar.set_position(done);
        })
        .await;
        bar.finish_and_clear();
        source.close().await;
        report(result)
    })
}

fn bundle(
    conn: &Conn,
    store: Option<PathBuf>,
    id: &MessageId,
    out: &Path,
    anchor: &Roster,
) -> Result<ExitCode> {
    let bundle = runtime()?.block_on(async {
        let source = open_source(conn, store).await?;
        let b = audit::bundle(&source, id).await;
        source.close().await;
        anyhow::Ok(b?)
    })?;
    let report = bundle.verify(anchor)?;
    files::write_public(out, &bundle.encode()?)?;
    println!(
        "wrote {}: message {} by {} at audit index {}, checkpoint of {} entries, {} witnesses",
        out.display(),
        report.id,
        report.sender,
        report.index,
        report.checkpoint_size,
        report.witnesses.len()
    );
    Ok(ExitCode::SUCCESS)
}

fn verify_bundle(file: &Path, anchor: &Roster) -> Result<ExitCode> {
    let bytes = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
    match audit::Bundle::decode(&bytes).and_then(|b| b.verify(anchor)) {
        Ok(r) => {
            let w: Vec<&str> = r.witnesses.iter().map(|n| n.as_str()).collect();
            println!(
                "verified: message {} published by {} on {} is entry {} of a broker-signed log of {} entries; witnesses: {}",
                r.id,
                r.sender,
                r.topic,
                r.index,
                r.checkpoint_size,
                if w.is_empty() {
                    "none".to_string()
                } else {
                    w.join(" ")
                }
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            println!("NOT VERIFIED: {e}");
            Ok(ExitCode::FAILURE)
        }
    }
}

fn receipts(
    conn: &Conn,
    store: Option<PathBuf>,
    id: &MessageId,
    anchor: &Roster,
) -> Result<ExitCode> {
    let (log_index, receipts) = runtime()?.block_on(async {
        let source = open_source(conn, store).await?;
        let r = audit::receipts(&source, id).await;
        source.close().await;
        anyhow::Ok(r?)
    })?;
    println!(
        "message {id} at log index {log_index}: {} receipts",
        receipts.len()
    );
    let mut bad = 0;
    for r in &receipts {
        let ok = r.verify(anchor).is_ok();
        bad += usize::from(!ok);
        println!(
            "  {:<8} {}  {}",
            r.by.as_str(),
            render::utc(r.time_ms),
            if ok {
                "signature valid"
            } else {
                "SIGNATURE INVALID"
            }
        );
    }
    if bad > 0 {
        bail!("{bad} receipts do not verify");
    }
    Ok(ExitCode::SUCCESS)
}

/// `ewx witness`: co-sign the broker's checkpoints after checking each one extends the
/// last one this node saw; a fork is reported and never co-signed.
pub fn witness(conn: &Conn, state: &std::path::Path, interval: Option<u64>) -> Result<ExitCode> {
    let resolved = conn.resolve()?;
    runtime()?.block_on(async {
        let client = resolved.connect().await?;
        let result = async {
            loop {
                let seen = match std::fs::read(state) {
                    Ok(b) => Some(b),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
                    Err(e) => return Err(e).with_context(|| format!("reading {}", state.display())),
                };
                let (outcome, keep) = audit::witness_once(&client, seen.as_deref()).await?;
                if let Some(b) = keep {
                    files::write_public(state, &b)?;
                }
                match outcome {
                    audit::Witnessed::Cosigned { size } => println!("co-signed the checkpoint of {size} entries"),
                    audit::Witnessed::UpToDate { size } => println!("nothing new since the checkpoint of {size} entries"),
                    audit::Witnessed::NoCheckpoint => println!("the broker has no checkpoint yet"),
                    audit::Witnessed::Fork { reason } => {
                        println!("FORK DETECTED: the broker shows a history that does not extend the one seen before: {reason}");
                        return Ok(ExitCode::from(2));
                    }
                }
                match interval {
                    Some(secs) => tokio::time::sleep(std::time::Duration::from_secs(secs)).await,
                    None => return Ok(ExitCode::SUCCESS),
                }
            }
        }
        .await;
        client.close().await;
        result
    })
}
