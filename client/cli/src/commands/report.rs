//! `ewx report`: file a structured ceasefire breach report, and export every report this
//! node may read as CSV or JSON lines — so nobody has to scrape a PDF again.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use ewx_client::{Client, Delivery, SubscriptionOptions};
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
    /// The report as JSON (default: stdin, unless --observed is given).
    #[arg(long, conflicts_with = "observed")]
    file: Option<PathBuf>,
    /// Or from flags: what was observed (undetermined-explosion, projectile-in-flight,
    /// small-arms-fire, heavy-weapons-outside-withdrawal-lines, access-restriction, …).
    #[arg(long, requires_all = ["lat", "lon"])]
    observed: Option<String>,
    /// Latitude of the event, decimal degrees.
    #[arg(long, allow_hyphen_values = true)]
    lat: Option<f64>,
    /// Longitude of the event, decimal degrees.
    #[arg(long, allow_hyphen_values = true)]
    lon: Option<f64>,
    /// How precisely the location is known, metres.
    #[arg(long, default_value_t = 1000)]
    precision_m: u32,
    /// The sensor (patrol, camera, uav, radar, …).
    #[arg(long, default_value = "patrol")]
    sensor: String,
    /// How many events.
    #[arg(long, default_value_t = 1)]
    count: u32,
    /// Start of the observation window (ms since 1970; default: the end).
    #[arg(long)]
    from_ms: Option<u64>,
    /// End of the observation window (ms since 1970; default: now).
    #[arg(long)]
    to_ms: Option<u64>,
    /// What was seen, in words.
    #[arg(long, default_value = "")]
    description: String,
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

/// A report from the command line's flags, as the JSON the file form takes (so both are
/// checked alike).
fn from_flags(client: &Client, a: &BreachArgs, observed: &str) -> serde_json::Value {
    let micro = |deg: Option<f64>| deg.map(|d| (d * 1e6).round() as i64);
    let to = a.to_ms.unwrap_or_else(|| client.clock().now_ms());
    serde_json::json!({
        "window": {"start_ms": a.from_ms.unwrap_or(to), "end_ms": to},
        "location": {"lat_e6": micro(a.lat), "lon_e6": micro(a.lon), "precision_m": a.precision_m},
        "sensor": a.sensor, "observed": observed, "count": a.count,
        "description": a.description,
    })
}

async fn breach(client: &Client, a: BreachArgs) -> Result<()> {
    let text = match (&a.file, &a.observed) {
        (Some(f), _) => {
            std::fs::read_to_string(f).with_context(|| format!("reading {}", f.display()))?
        }
        (None, Some(observed)) => from_flags(client, &a, observed).to_string(),
        (None, None) => {
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

/// Read every message on `pattern` this node may read, from the start of the log, until
/// the broker has been quiet for a moment; `each` sees them in log order. A message that
/// does not verify or open is reported on stderr and skipped.
pub(super) async fn read_log(
    client: &Client,
    pattern: &str,
    mut each: impl FnMut(&Delivery) -> Result<()>,
) -> Result<()> {
    let opts = SubscriptionOptions {
        from: StartAt::Earliest,
        filter: ExerciseFilter::All,
        auto_ack: false,
        auto_receipt: false,
        sealed: false,
    };
    let name = format!("read-{}", client.clock().now_us());
    let mut sub = client
        .subscribe_with(&name, TopicPattern::new(pattern)?, opts)
        .await?;
    let mut result = Ok(());
    while let Ok(Some(d)) = tokio::time::timeout(QUIET, sub.next()).await {
        match d {
            Ok(d) => {
                result = each(&d);
                if result.is_err() {
                    break;
                }
            }
            Err(e) => eprintln!("ewx: {e}"),
        }
    }
    let _ = client.unsubscribe(&name).await;
    result
}

async fn export(client: &Client, format: &str, pattern: &str) -> Result<()> {
    let csv = match format {
        "csv" => true,
        "jsonl" => false,
        other => anyhow::bail!("--format {other:?}: use csv or jsonl"),
    };
    let mut out = std::io::stdout().lock();
    if csv {
        writeln!(
            out,
            "log_index,id,sender,created_ms,{}",
            CeasefireReport::CSV_HEADER
        )?;
    }
    read_log(client, pattern, |d| {
        let Some(Payload::CeasefireReport(r)) = &d.payload else {
            return Ok(());
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
        Ok(())
    })
    .await?;
    out.flush()?;
    Ok(())
}
