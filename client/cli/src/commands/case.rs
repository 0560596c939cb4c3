//! `ewx case`: open a consultation or a snapback, reply at a stage, attest, and list,
//! show or watch cases — each folded here from the verified thread, never taken on the
//! broker's word.

use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use ewx_client::Client;
use ewx_client::cases::{CaseView, case_draft as draft, default_parties};
use ewx_proto::case::{CaseTag, CaseType, SNAPBACK_WITHIN_MS, Stage, statement_hash};
use ewx_proto::payload::{CaseReply, ConsultationRequest, Decision, SanctionsTrigger};
use ewx_proto::{Draft, Labels, Level, MessageId, NodeId, Payload, Topic};

#[derive(Debug, Subcommand)]
pub enum CaseCmd {
    /// Open a case: a consultation request or a snapback trigger.
    #[command(subcommand)]
    Open(OpenCmd),
    /// Answer a case at a stage (acknowledged, consulted, decided, reimposed, answered,
    /// remedied), or, as its opener, add parties or withdraw it. Exercises and the
    /// commission have their own commands (`ewx exercise`, `ewx commission`).
    ///
    /// Example: ewx case reply 3f2a… --stage decided --decision join --text "we join"
    Reply(ReplyArgs),
    /// Attest a snapback's statement (attesters named in the roster; k of them fire it).
    ///
    /// Example: ewx case attest 3f2a…
    Attest {
        /// The case id (32 hex digits, as `ewx case list` shows).
        case: String,
        /// The statement attested (default: the one in the trigger, if you can read it).
        #[arg(long)]
        statement: Option<String>,
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// List the cases you may read: state, next deadline, answers.
    List {
        /// At most this many, newest first.
        #[arg(long, default_value_t = 50)]
        limit: u32,
        /// One JSON object per case, one per line.
        #[arg(long)]
        json: bool,
    },
    /// Show one case: parties × stages with log times, LATE and OVERDUE marks and the
    /// countdown to each deadline.
    Show {
        /// The case id.
        case: String,
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Show cases live: refresh every --interval seconds and at every reminder the
    /// broker pushes. Stops on ctrl-c, or after --count refreshes.
    Watch {
        /// Only this case (default: all you may read).
        case: Option<String>,
        /// Seconds between refreshes.
        #[arg(long, default_value_t = 5)]
        interval: u64,
        /// Stop after this many refreshes.
        #[arg(long)]
        count: Option<u32>,
        /// JSON lines instead of tables.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum OpenCmd {
    /// Request consultations: the parties must consult within 24 h and decide within
    /// 72 h of the broker logging the request.
    ///
    /// Example: ewx case open consultation --summary "missile strike on Lviv" --parties PL,GB
    Consultation(ConsultArgs),
    /// Trigger a snapback: it fires once k of the roster's attesters attest the same
    /// statement; then every party must answer "reimposed" within --within-hours.
    ///
    /// Example: ewx case open snapback --statement "armed attack, 2026-12-01" --regime "annex" --measure "reimpose"
    Snapback(SnapbackArgs),
}

#[derive(Debug, Args)]
pub struct Where {
    /// Topic of the case's messages.
    #[arg(long)]
    topic: Option<String>,
    /// TLP level of the case (replies may not be readable more widely).
    #[arg(long, default_value = "AMBER")]
    level: String,
    /// Compartments of the case (default: CORE for a consultation, SANCTIONS for a
    /// snapback).
    #[arg(long)]
    compartments: Option<String>,
    /// Parties expected to answer, comma-separated (default: every liaison that may read
    /// the case for a consultation, every recipient for a snapback; never yourself).
    #[arg(long)]
    parties: Option<String>,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
pub struct ConsultArgs {
    /// What happened.
    #[arg(long)]
    summary: String,
    /// When the attack took place (ms since 1970; default: now).
    #[arg(long)]
    attack_ms: Option<u64>,
    /// Your own reference for the case (default: derived from the time).
    #[arg(long)]
    reference: Option<String>,
    #[command(flatten)]
    at: Where,
}

#[derive(Debug, Args)]
pub struct SnapbackArgs {
    /// The event attested, in words every attester signs alike.
    #[arg(long)]
    statement: String,
    #[command(flatten)]
    sanction: Sanction,
    #[command(flatten)]
    at: Where,
}

/// What a snapback reimposes, and how long its parties have.
#[derive(Debug, Args)]
pub struct Sanction {
    /// The sanctions regime.
    #[arg(long)]
    pub regime: String,
    /// The measure reimposed.
    #[arg(long)]
    pub measure: String,
    /// Hours the parties have to reimpose once the case fires.
    #[arg(long, default_value_t = SNAPBACK_WITHIN_MS / 3_600_000)]
    pub within_hours: u64,
}

#[derive(Debug, Args)]
pub struct ReplyArgs {
    /// The case id.
    case: String,
    /// acknowledged, consulted, decided, reimposed, answered, remedied, add-parties or
    /// withdrawn.
    #[arg(long)]
    stage: String,
    /// What you say (encrypted: the broker sees only the stage).
    #[arg(long, default_value = "")]
    text: String,
    /// For `decided`: join, decline or measure.
    #[arg(long)]
    decision: Option<String>,
    /// For `reimposed`: when the sanctions are in force (ms since 1970; default: now).
    #[arg(long)]
    in_force_ms: Option<u64>,
    /// For `add-parties`: the nodes to add, comma-separated.
    #[arg(long)]
    parties: Option<String>,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
}

pub(super) fn case_id(text: &str) -> Result<MessageId> {
    text.parse()
        .with_context(|| format!("{text:?} is not a case id (32 hex digits, see ewx case list)"))
}

pub(super) fn node_list(text: &str) -> Result<Vec<NodeId>> {
    let list = text
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(NodeId::new)
        .collect::<Result<Vec<_>, _>>()?;
    if list.is_empty() {
        bail!("name at least one party");
    }
    Ok(list)
}

pub async fn run(client: Client, cmd: CaseCmd) -> Result<()> {
    match cmd {
        CaseCmd::Open(OpenCmd::Consultation(a)) => open_consultation(&client, a).await,
        CaseCmd::Open(OpenCmd::Snapback(a)) => open_snapback(&client, a).await,
        CaseCmd::Reply(a) => reply(&client, a).await,
        CaseCmd::Attest {
            case,
            statement,
            json,
        } => attest(&client, &case, statement, json).await,
        CaseCmd::List { limit, json } => list(&client, limit, json).await,
        CaseCmd::Show { case, json } => show(&client, &case, json).await,
        CaseCmd::Watch {
            case,
            interval,
            count,
            json,
        } => watch(&client, case.as_deref(), interval, count, json).await,
    }
}

/// Labels, topic and parties of a new case, with the type's defaults.
fn placement(client: &Client, at: &Where, ty: CaseType) -> Result<(Topic, Labels, Vec<NodeId>)> {
    let (topic, _, comps) = ewx_client::cases::placement(ty);
    let labels = Labels::new(
        at.level.parse::<Level>()?,
        Labels::parse_compartments(at.compartments.as_deref().unwrap_or(comps))?,
    );
    let topic = Topic::new(at.topic.as_deref().unwrap_or(topic))?;
    let parties = match &at.parties {
        Some(p) => node_list(p)?,
        None => default_parties(&client.roster(), &client.keys().node, &labels, ty),
    };
    if parties.is_empty() {
        bail!("nobody else may read a case labelled {labels}: name parties with --parties");
    }
    Ok((topic, labels, parties))
}

async fn publish_open(client: &Client, d: Draft, parties: &[NodeId], json: bool) -> Result<()> {
    let ty = d.case.as_ref().map_or("case", |t| t.case_type.as_str());
    let ack = client.publish_case(d).await?;
    let names: Vec<&str> = parties.iter().map(NodeId::as_str).collect();
    if json {
        println!(
            "{}",
            serde_json::json!({"case": ack.id.to_string(), "type": ty, "log_index": ack.log_index, "parties": names})
        );
    } else {
        println!("opened {ty} {} (log index {})", ack.id, ack.log_index);
        println!("parties  {}", names.join(" "));
        println!("follow   ewx case show {}", ack.id);
    }
    Ok(())
}

async fn open_consultation(client: &Client, a: ConsultArgs) -> Result<()> {
    let (topic, labels, parties) = placement(client, &a.at, CaseType::Consultation)?;
    let now = client.clock().now_ms();
    let reference = a
        .reference
        .unwrap_or_else(|| format!("{}-{now}", client.keys().node));
    let payload = Payload::ConsultationRequest(ConsultationRequest::new(
        reference,
        a.summary,
        a.attack_ms.unwrap_or(now),
        now,
    ));
    let d = draft(
        topic,
        labels,
        payload,
        CaseTag::open(CaseType::Consultation, parties.clone()),
    );
    publish_open(client, d, &parties, a.at.json).await
}

async fn open_snapback(client: &Client, a: SnapbackArgs) -> Result<()> {
    let (topic, labels, parties) = placement(client, &a.at, CaseType::Snapback)?;
    let mut tag = CaseTag::open(CaseType::Snapback, parties.clone());
    tag.statement = Some(statement_hash(&a.statement));
    tag.within_ms = Some(a.sanction.within_hours.saturating_mul(3_600_000));
    let payload = Payload::SanctionsTrigger(SanctionsTrigger {
        regime: a.sanction.regime,
        measure: a.sanction.measure,
        effective_ms: client.clock().now_ms(),
        statement: Some(a.statement),
    });
    publish_open(
        client,
        draft(topic, labels, payload, tag),
        &parties,
        a.at.json,
    )
    .await
}

async fn send_reply(
    client: &Client,
    view: &CaseView,
    tag: CaseTag,
    payload: Payload,
    json: bool,
) -> Result<()> {
    let stage = tag.stage;
    let ack = client.publish_case(view.reply(tag, payload)?).await?;
    if json {
        println!(
            "{}",
            serde_json::json!({"case": view.case.id.to_string(), "stage": stage.as_str(), "log_index": ack.log_index})
        );
    } else {
        println!(
            "{stage} on case {} (log index {})",
            view.case.id, ack.log_index
        );
    }
    Ok(())
}

async fn reply(client: &Client, a: ReplyArgs) -> Result<()> {
    let id = case_id(&a.case)?;
    let stage: Stage = a.stage.parse()?;
    match stage {
        Stage::Open | Stage::Attest => {
            bail!("use `ewx case open` to open a case and `ewx case attest` to attest")
        }
        Stage::Amended | Stage::Corrected => {
            bail!("use `ewx exercise amend` (it sends the whole new notice)")
        }
        Stage::Finding | Stage::Dissent => {
            bail!("use `ewx commission sign` or `ewx commission dissent`")
        }
        _ => {}
    }
    let view = client.case(id).await?;
    let mut tag = CaseTag::reply(id, view.case.case_type, stage);
    if stage == Stage::AddParties {
        tag.parties = node_list(
            a.parties
                .as_deref()
                .context("--stage add-parties needs --parties")?,
        )?;
    }
    let reply = CaseReply {
        text: a.text,
        decision: a
            .decision
            .as_deref()
            .map(str::parse::<Decision>)
            .transpose()?,
        in_force_ms: (stage == Stage::Reimposed)
            .then(|| a.in_force_ms.unwrap_or_else(|| client.clock().now_ms())),
        statement: None,
    };
    send_reply(client, &view, tag, Payload::CaseReply(reply), a.json).await
}

async fn attest(client: &Client, case: &str, statement: Option<String>, json: bool) -> Result<()> {
    let id = case_id(case)?;
    let view = client.case(id).await?;
    let from_trigger = view.items.iter().find_map(|i| match &i.payload {
        Some(Payload::SanctionsTrigger(t)) if i.header.as_ref().is_some_and(|h| h.id == id) => {
            t.statement.clone()
        }
        _ => None,
    });
    let statement = statement
        .or(from_trigger)
        .context("the trigger's statement is not readable here: pass --statement TEXT")?;
    let hash = statement_hash(&statement);
    if view.case.statement != Some(hash) {
        bail!("that statement is not the one this snapback was triggered on");
    }
    let mut tag = CaseTag::reply(id, view.case.case_type, Stage::Attest);
    tag.statement = Some(hash);
    let reply = CaseReply {
        text: "attested".into(),
        decision: None,
        in_force_ms: None,
        statement: Some(statement),
    };
    send_reply(client, &view, tag, Payload::CaseReply(reply), json).await
}

async fn views(client: &Client, only: Option<MessageId>, limit: u32) -> Result<Vec<CaseView>> {
    let ids = match only {
        Some(id) => vec![id],
        None => client
            .cases(limit)
            .await?
            .into_iter()
            .map(|c| c.case)
            .collect(),
    };
    let mut out = Vec::with_capacity(ids.len());
    for id in ids {
        match client.case(id).await {
            Ok(v) => out.push(v),
            Err(e) if only.is_none() => eprintln!("case {id}: {e}"),
            Err(e) => return Err(e.into()),
        }
    }
    Ok(out)
}

async fn list(client: &Client, limit: u32, json: bool) -> Result<()> {
    let now = client.clock().now_ms();
    let all = views(client, None, limit).await?;
    if all.is_empty() && !json {
        println!("no cases you may read");
    }
    for v in &all {
        if json {
            println!("{}", ewx_cli::cases::to_json(v, now));
        } else {
            println!("{}", ewx_cli::cases::summary(v, now));
        }
    }
    Ok(())
}

async fn show(client: &Client, case: &str, json: bool) -> Result<()> {
    let view = client.case(case_id(case)?).await?;
    let now = client.clock().now_ms();
    if json {
        println!("{}", ewx_cli::cases::to_json(&view, now));
    } else {
        print!("{}", ewx_cli::cases::matrix(&view, now));
    }
    Ok(())
}

async fn watch(
    client: &Client,
    case: Option<&str>,
    interval: u64,
    count: Option<u32>,
    json: bool,
) -> Result<()> {
    let only = case.map(case_id).transpose()?;
    let mut reminders = client.reminders().context("reminders already taken")?;
    let mut n = 0;
    loop {
        let now = client.clock().now_ms();
        for v in views(client, only, 50).await? {
            if json {
                println!("{}", ewx_cli::cases::to_json(&v, now));
            } else {
                println!("{}", ewx_cli::cases::matrix(&v, now));
            }
        }
        n += 1;
        if count.is_some_and(|c| n >= c) {
            return Ok(());
        }
        tokio::select! {
            r = reminders.recv() => if let Some(r) = r {
                if !json {
                    println!("REMINDER: {} of case {} due {}", r.stage, r.case, ewx_cli::text::utc(r.due_ms));
                }
            },
            _ = tokio::time::sleep(Duration::from_secs(interval.max(1))) => {}
            _ = tokio::signal::ctrl_c() => return Ok(()),
        }
    }
}
