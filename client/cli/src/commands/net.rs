//! `ewx publish`, `ewx subscribe`, `ewx status`: the commands that talk to a broker.

use ewx_net::now_ms;
use std::io::{Read, Write};
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::Args;
use ewx_client::SubscriptionOptions;
use ewx_proto::frame::{ExerciseFilter, StartAt};
use ewx_proto::payload::{
    Bulletin, CeasefireReport, ConsultationRequest, ConsultationResponse, ExerciseNotice,
    SanctionsTrigger,
};
use ewx_proto::{Draft, Kind, Labels, Level, NodeId, Payload, Precedence, Topic, TopicPattern};
use serde::Deserialize;

use ewx_client::Client;

use super::render;

#[derive(Debug, Args)]
pub struct PublishArgs {
    /// Topic, e.g. ew.air.missile.
    #[arg(long)]
    topic: String,
    /// TLP level: CLEAR, GREEN, AMBER, AMBER+STRICT, RED.
    #[arg(long, default_value = "AMBER")]
    level: String,
    /// Compartments, comma-separated, e.g. CORE,AIR.
    #[arg(long, default_value = "")]
    compartments: String,
    /// Releasable only to these nodes, comma-separated (must include yourself).
    #[arg(long, default_value = "")]
    rel_to: String,
    /// FLASH, IMMEDIATE, PRIORITY or ROUTINE.
    #[arg(long, default_value = "ROUTINE")]
    precedence: String,
    /// bulletin, exercise-notice, consultation-request, consultation-response,
    /// sanctions-trigger or ceasefire-report.
    #[arg(long, default_value = "bulletin")]
    kind: String,
    /// Mark as exercise traffic (always shown with an EXERCISE banner).
    #[arg(long)]
    exercise: bool,
    /// Ask every recipient for a signed receipt.
    #[arg(long)]
    receipt: bool,
    /// Payload file (default: stdin).
    #[arg(long)]
    file: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct SubscribeArgs {
    /// Topic pattern: `*` one token, `>` the rest, e.g. 'ew.air.>'.
    pattern: String,
    /// Subscription name: the broker keeps your position under it.
    #[arg(long, default_value = "cli")]
    name: String,
    /// earliest, latest, resume (after your last ack under this name) or a log index.
    #[arg(long, default_value = "resume")]
    from: String,
    /// Stop after this many messages.
    #[arg(long)]
    count: Option<usize>,
    /// One JSON object per line instead of the human format.
    #[arg(long)]
    json: bool,
    /// Real warnings only.
    #[arg(long, conflicts_with = "exercise_only")]
    real_only: bool,
    /// Exercise traffic only.
    #[arg(long)]
    exercise_only: bool,
}

/// What a user types for a consultation request: the deadlines are the Compact's.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ConsultationInput {
    case_id: String,
    summary: String,
    attack_ms: u64,
}

/// Turn input text into the payload for `kind`.
fn payload(kind: Kind, text: &str) -> Result<Payload> {
    let json =
        |what: &str| format!("the payload is not valid {what} JSON (see ewx publish --help)");
    Ok(match kind {
        Kind::Bulletin => {
            let trimmed = text.trim_start();
            if trimmed.starts_with('{') {
                let v: serde_json::Value =
                    serde_json::from_str(text).with_context(|| json("bulletin"))?;
                if v.get("type").and_then(|t| t.as_str()) == Some("bundle") {
                    Payload::Stix(text.to_owned())
                } else {
                    Payload::Bulletin(
                        serde_json::from_value::<Bulletin>(v).with_context(|| json("bulletin"))?,
                    )
                }
            } else {
                let (headline, body) = trimmed.split_once('\n').unwrap_or((trimmed, ""));
                if headline.trim().is_empty() {
                    bail!("empty payload: give a headline on the first line, or JSON");
                }
                Payload::Bulletin(Bulletin {
                    headline: headline.trim().into(),
                    body: body.trim().into(),
                    area: None,
                    event_ms: None,
                    confidence: None,
                })
            }
        }
        Kind::ExerciseNotice => Payload::ExerciseNotice(
            serde_json::from_str::<ExerciseNotice>(text)
                .with_context(|| json("exercise-notice"))?,
        ),
        Kind::ConsultationRequest => {
            let i: ConsultationInput = serde_json::from_str(text)
                .with_context(|| json("consultation-request {case_id, summary, attack_ms}"))?;
            Payload::ConsultationRequest(ConsultationRequest::new(
                i.case_id,
                i.summary,
                i.attack_ms,
                now_ms(),
            ))
        }
        Kind::ConsultationResponse => Payload::ConsultationResponse(
            serde_json::from_str::<ConsultationResponse>(text)
                .with_context(|| json("consultation-response"))?,
        ),
        Kind::SanctionsTrigger => Payload::SanctionsTrigger(
            serde_json::from_str::<SanctionsTrigger>(text)
                .with_context(|| json("sanctions-trigger"))?,
        ),
        Kind::CeasefireReport => Payload::CeasefireReport(
            serde_json::from_str::<CeasefireReport>(text)
                .with_context(|| json("ceasefire-report"))?,
        ),
        Kind::CaseReply => {
            bail!("case replies are sent with `ewx case reply` (see ewx case --help)")
        }
        Kind::Finding => {
            bail!("findings are signed with `ewx commission sign` (see ewx commission --help)")
        }
    })
}

pub async fn publish(client: Client, a: PublishArgs) -> Result<()> {
    let kind: Kind = a.kind.parse()?;
    let mut labels = Labels::new(
        a.level.parse::<Level>()?,
        Labels::parse_compartments(&a.compartments)?,
    );
    labels.exercise = a.exercise;
    labels.rel_to = a
        .rel_to
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(NodeId::new)
        .collect::<Result<_, _>>()?;
    let roster = client.roster();
    if let Some(stranger) = labels.rel_to.iter().find(|n| roster.node(n).is_none()) {
        bail!(
            "--rel-to {stranger}: no such node in the roster (version {}); `ewx roster show` lists them",
            roster.version()
        );
    }
    let text = match &a.file {
        Some(f) => {
            std::fs::read_to_string(f).with_context(|| format!("reading {}", f.display()))?
        }
        None => {
            let mut s = String::new();
            std::io::stdin()
                .read_to_string(&mut s)
                .context("reading the payload from stdin")?;
            s
        }
    };
    let draft = Draft {
        topic: Topic::new(a.topic.as_str())?,
        precedence: a.precedence.parse::<Precedence>()?,
        labels,
        payload: payload(kind, &text)?,
        seq: 0,
        expires_ms: None,
        receipt: a.receipt,
        case: None,
    };
    // sealed (and sealed again if another `ewx publish` of this node took the same seq)
    // and sent again by the library while the broker is briefly away
    let (env, ack) = client.publish_sealed(draft).await.map_err(|e| match e {
        ewx_client::Error::Proto(_) => anyhow::Error::new(e)
            .context("cannot seal this message (check your publish grants and the labels)"),
        e => e.into(),
    })?;
    println!(
        "published id {} log index {} to {} recipients",
        ack.id,
        ack.log_index,
        env.header().recipients.len()
    );
    Ok(())
}

pub async fn subscribe(client: Client, a: SubscribeArgs) -> Result<()> {
    let from = match a.from.as_str() {
        "earliest" => StartAt::Earliest,
        "latest" => StartAt::Latest,
        "resume" => StartAt::Resume,
        n => StartAt::Index(n.parse().with_context(|| {
            format!("--from {n:?}: use earliest, latest, resume or a log index")
        })?),
    };
    let filter = match (a.real_only, a.exercise_only) {
        (true, _) => ExerciseFilter::RealOnly,
        (_, true) => ExerciseFilter::ExerciseOnly,
        _ => ExerciseFilter::All,
    };
    let opts = SubscriptionOptions {
        from,
        filter,
        auto_ack: true,
        auto_receipt: true,
        sealed: false,
    };
    let mut sub = client
        .subscribe_with(&a.name, TopicPattern::new(a.pattern.as_str())?, opts)
        .await?;
    let mut out = std::io::stdout().lock();
    let mut n = 0;
    while a.count.is_none_or(|c| n < c) {
        match sub.next().await {
            Some(Ok(d)) => {
                if a.json {
                    writeln!(out, "{}", render::json(&d))?;
                } else {
                    write!(out, "{}", render::human(&d))?;
                }
                out.flush()?;
                n += 1;
            }
            Some(Err(e)) => eprintln!("ewx: {e}"),
            None => bail!("the broker connection is gone: {}", client.closed().await),
        }
    }
    sub.flush().await?;
    Ok(())
}

pub async fn status(client: Client) -> Result<()> {
    let roster = client.roster();
    let me = roster.active(&client.keys().node)?;
    let broker = roster
        .body()
        .nodes
        .iter()
        .find(|n| n.role == ewx_proto::Role::Broker);
    println!(
        "connected  {} as {} ({}, key id {})",
        client.broker_addr(),
        me.id,
        me.role,
        me.sign.key_id()
    );
    if let Some(b) = broker {
        println!("broker     {} key id {}", b.id, b.sign.key_id());
    }
    println!(
        "roster     {:?} version {} (council id {})",
        roster.body().network,
        roster.version(),
        roster.council_id().short()
    );
    let g = &me.grants;
    let list = |v: Vec<&str>| {
        if v.is_empty() {
            "-".to_string()
        } else {
            v.join(" ")
        }
    };
    println!("clearance  TLP:{}", g.clearance);
    println!(
        "compartments {}",
        list(g.compartments.iter().map(|c| c.as_str()).collect())
    );
    println!(
        "publish    {}",
        list(g.publish.iter().map(|p| p.as_str()).collect())
    );
    println!(
        "subscribe  {}",
        list(g.subscribe.iter().map(|p| p.as_str()).collect())
    );
    Ok(())
}
