//! `ewx report`: file a structured ceasefire breach report, and export every report this
//! node may read as CSV or JSON lines — so nobody has to scrape a PDF again.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use ewx_client::{Client, SubscriptionOptions};
use ewx_proto::ceasefire::{CeasefireReport, csv_field};
use ewx_proto::frame::{ExerciseFilter, StartAt};
use ewx_proto::{Draft, Labels, Level, Payload, Precedence, Topic, TopicPattern};

#[derive(Debug, Subcommand)]
pub enum ReportCmd {
    /// File a breach report from its JSON (see README "Ceasefire monitoring" for the
    /// fields); it is validated before it is sealed.
    ///
    /// Example: ewx report breach --file breach.json --level AMBER --compartments CEASEFIRE
    Breach(BreachArgs),
    /// Export every breach report this node may read, oldest first, then stop.
    ///
    /// Example: ewx report export --format csv > breaches.csv
    Export {
        /// csv or jsonl.
        #[arg(long, default_value = "csv")]
        format: String,
        /// Topic pattern of the reports.
        #[arg(long, default_value = "ceasefire.>")]
        pattern: String,
    },
}

#[derive(Debug, Args)]
pub struct BreachArgs {
    /// The report as JSON (default: stdin).
    #[arg(long)]
    file: Option<PathBuf>,
    /// Topic to publish on.
    #[arg(long, default_value = "ceasefire.report")]
    topic: String,
    /// TLP level.
    #[arg(long, default_value = "AMBER")]
    level: String,
    /// Compartments, comma-separated.
    #[arg(long, default_value = "CEASEFIRE")]
    compartments: String,
}

pub async fn run(client: Client, cmd: ReportCmd) -> Result<()> {
    match cmd {
        ReportCmd::Breach(a) => breach(&client, a).await,
        ReportCmd::Export { format, pattern } => export(&client, &format, &pattern).await,
    }
}

async fn breach(client: &Client, a: BreachArgs) -> Result<()> {
    let text = match &a.file {
        Some(f) => {
            std::fs::read_to_string(f).with_context(|| format!("reading {}", f.display()))?
        }
        None => {
            let mut s = String::new();
            std::io::stdin().read_to_string(&mut s)?;
            s
        }
    };
    let report: CeasefireReport =
        serde_json::from_str(&text).context("the report is not valid ceasefire report JSON")?;
    report.validate()?;
    let draft = Draft {
        topic: Topic::new(a.topic.as_str())?,
        precedence: Precedence::Priority,
        labels: Labels::new(
            a.level.parse::<Level>()?,
            Labels::parse_compartments(&a.compartments)?,
        ),
        payload: Payload::CeasefireReport(report),
        seq: 0,
        expires_ms: None,
        receipt: false,
        case: None,
    };
    let ack = client.publish(draft).await?;
    println!("filed report {} (log index {})", ack.id, ack.log_index);
    Ok(())
}

/// Quiet time after which the export takes the log as read to its end.
const QUIET: Duration = Duration::from_millis(1500);

async fn export(client: &Client, format: &str, pattern: &str) -> Result<()> {
    let csv = match format {
        "csv" => true,
        "jsonl" => false,
        other => anyhow::bail!("--format {other:?}: use csv or jsonl"),
    };
    let opts = SubscriptionOptions {
        from: StartAt::Earliest,
        filter: ExerciseFilter::All,
        auto_ack: false,
        auto_receipt: false,
        sealed: false,
    };
    let name = format!("export-{}", client.clock().now_us());
    let mut sub = client
        .subscribe_with(&name, TopicPattern::new(pattern)?, opts)
        .await?;
    let mut out = std::io::stdout().lock();
    if csv {
        writeln!(
            out,
            "log_index,id,sender,created_ms,{}",
            CeasefireReport::CSV_HEADER
        )?;
    }
    while let Ok(Some(d)) = tokio::time::timeout(QUIET, sub.next()).await {
        let d = match d {
            Ok(d) => d,
            Err(e) => {
                eprintln!("ewx: {e}");
                continue;
            }
        };
        let Some(Payload::CeasefireReport(r)) = &d.payload else {
            continue;
        };
        let h = d.envelope.header();
        if csv {
            let meta = [
                d.log_index.to_string(),
                h.id.to_string(),
                h.sender.to_string(),
                h.created_ms.to_string(),
            ];
            let meta: Vec<String> = meta.iter().map(|m| csv_field(m)).collect();
            writeln!(out, "{},{}", meta.join(","), r.csv_row())?;
        } else {
            let line = serde_json::json!({"log_index": d.log_index, "id": h.id.to_string(),
                "sender": h.sender.as_str(), "created_ms": h.created_ms, "report": r});
            writeln!(out, "{line}")?;
        }
    }
    out.flush()?;
    let _ = client.unsubscribe(&name).await;
    Ok(())
}
