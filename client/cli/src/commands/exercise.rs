//! `ewx exercise`: notify an exercise in Vienna Document form (an exercise case, with the
//! observation invitation its invited partners answer by a deadline), amend or correct
//! it so each changed figure shows as a change, answer an invitation, and list the year's
//! notified activities. Every notice is labelled EXERCISE, so it never reads as a warning.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use ewx_client::Client;
use ewx_client::cases::{case_draft, placement};
use ewx_proto::case::{CaseTag, CaseType, Stage};
use ewx_proto::exercise::{self, Flag};
use ewx_proto::payload::{CaseReply, Decision, ExerciseNotice};
use ewx_proto::{Labels, Level, MessageId, Payload, Topic};

use super::case::{case_id, node_list};
use super::render::utc;

#[derive(Debug, Subcommand)]
pub enum ExerciseCmd {
    /// Notify an exercise from its Vienna Document notice (JSON, see README "Exercises");
    /// LATE, no-observation and similar flags are shown, not refused.
    ///
    /// Example: ewx exercise notify --file anakonda.json --invite US,GB,TR --answer-within-days 14
    Notify(NotifyArgs),
    /// Amend (the activity changed) or correct (the notice was wrong) your notice: the
    /// whole new notice, from JSON; what changed is shown field by field.
    ///
    /// Example: ewx exercise amend CASE --file anakonda-v2.json
    Amend {
        /// The exercise case (the first notice's id).
        case: String,
        /// The new notice as JSON.
        #[arg(long)]
        file: PathBuf,
        /// A correction of an error, rather than an amendment of the plan.
        #[arg(long)]
        correction: bool,
    },
    /// Answer an observation invitation by its deadline.
    ///
    /// Example: ewx exercise answer CASE --accept --text "two observers"
    Answer {
        /// The exercise case.
        case: String,
        /// Accept the invitation.
        #[arg(long, conflicts_with = "decline", required_unless_present = "decline")]
        accept: bool,
        /// Decline it.
        #[arg(long)]
        decline: bool,
        /// What you say (who will observe, why not…).
        #[arg(long, default_value = "")]
        text: String,
    },
    /// The year's notified activities you may read, by start date: latest figures,
    /// amendments, flags.
    ///
    /// Example: ewx exercise calendar --year 2027
    Calendar {
        /// Calendar year (UTC) of the start date (default: this year).
        #[arg(long)]
        year: Option<i32>,
        /// Topic pattern of the notices.
        #[arg(long, default_value = "exercise.>")]
        pattern: String,
        /// One JSON object per activity, one per line.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Args)]
pub struct NotifyArgs {
    /// The notice as JSON.
    #[arg(long)]
    file: PathBuf,
    /// Partners invited to observe, comma-separated (they answer with `ewx exercise
    /// answer`).
    #[arg(long)]
    invite: Option<String>,
    /// Days the invited partners have to answer.
    #[arg(long, default_value_t = 14)]
    answer_within_days: u64,
    /// TLP level (the notice is always labelled EXERCISE too).
    #[arg(long, default_value = "CLEAR")]
    level: String,
    /// Compartments, comma-separated (default none: every partner may read it).
    #[arg(long, default_value = "")]
    compartments: String,
}

pub async fn run(client: Client, cmd: ExerciseCmd) -> Result<()> {
    match cmd {
        ExerciseCmd::Notify(a) => notify(&client, a).await,
        ExerciseCmd::Amend {
            case,
            file,
            correction,
        } => amend(&client, &case, &file, correction).await,
        ExerciseCmd::Answer {
            case,
            accept,
            decline: _,
            text,
        } => answer(&client, &case, accept, text).await,
        ExerciseCmd::Calendar {
            year,
            pattern,
            json,
        } => calendar(&client, year, &pattern, json).await,
    }
}

fn read_notice(file: &Path) -> Result<ExerciseNotice> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    let n: ExerciseNotice = serde_json::from_str(&text)
        .with_context(|| format!("{} is not an exercise notice (see README)", file.display()))?;
    if n.end_ms < n.start_ms {
        bail!("the exercise ends before it starts");
    }
    Ok(n)
}

fn print_flags(flags: &[Flag]) {
    for f in flags {
        println!("  FLAG {f}");
    }
}

async fn notify(client: &Client, a: NotifyArgs) -> Result<()> {
    let notice = read_notice(&a.file)?;
    let (topic, ..) = placement(CaseType::Exercise);
    let mut labels = Labels::new(
        a.level.parse::<Level>()?,
        Labels::parse_compartments(&a.compartments)?,
    );
    labels.exercise = true;
    let mut tag = CaseTag::open(CaseType::Exercise, Vec::new());
    if let Some(invite) = &a.invite {
        tag.parties = node_list(invite)?;
        tag.within_ms = Some(a.answer_within_days.saturating_mul(86_400_000));
    }
    let flags = exercise::flags(&notice, client.clock().now_ms());
    let draft = case_draft(
        Topic::new(topic)?,
        labels,
        Payload::ExerciseNotice(notice),
        tag,
    );
    let ack = client.publish_case(draft).await?;
    println!(
        "EXERCISE notified as case {} (log index {})",
        ack.id, ack.log_index
    );
    print_flags(&flags);
    Ok(())
}

async fn amend(client: &Client, case: &str, file: &Path, correction: bool) -> Result<()> {
    let id = case_id(case)?;
    let notice = read_notice(file)?;
    let view = client.case(id).await?;
    let stage = if correction {
        Stage::Corrected
    } else {
        Stage::Amended
    };
    let last = view.revisions().last().map(|r| r.notice.clone());
    let tag = CaseTag::reply(id, CaseType::Exercise, stage);
    let flags = exercise::flags(&notice, client.clock().now_ms());
    let draft = view.reply(tag, Payload::ExerciseNotice(notice.clone()))?;
    let ack = client.publish_case(draft).await?;
    println!("EXERCISE {stage} case {id} (log index {})", ack.log_index);
    if let Some(before) = last {
        for c in exercise::changes(&before, &notice) {
            println!("  {}: {} -> {}", c.field, c.before, c.after);
        }
        print_flags(&exercise::grew(&before, &notice));
    }
    print_flags(&flags);
    Ok(())
}

async fn answer(client: &Client, case: &str, accept: bool, text: String) -> Result<()> {
    let id = case_id(case)?;
    let view = client.case(id).await?;
    let decision = if accept {
        Decision::Accept
    } else {
        Decision::Decline
    };
    let reply = CaseReply {
        text,
        decision: Some(decision),
        in_force_ms: None,
        statement: None,
    };
    let tag = CaseTag::reply(id, CaseType::Exercise, Stage::Answered);
    let ack = client
        .publish_case(view.reply(tag, Payload::CaseReply(reply))?)
        .await?;
    let word = if accept { "accepted" } else { "declined" };
    println!(
        "EXERCISE observation invitation {word} on case {id} (log index {})",
        ack.log_index
    );
    Ok(())
}

/// One activity of the calendar: its first notice's id, the latest notice, how many
/// notices, the flags of the latest and any threshold grown past along the way.
struct Activity {
    case: MessageId,
    notice: ExerciseNotice,
    notices: usize,
    flags: Vec<String>,
}

async fn calendar(client: &Client, year: Option<i32>, pattern: &str, json: bool) -> Result<()> {
    let year = year.unwrap_or_else(|| ewx_cli::text::year_of(client.clock().now_ms()));
    let mut all: Vec<Activity> = Vec::new();
    super::report::read_log(client, pattern, |d| {
        let Some(Payload::ExerciseNotice(n)) = &d.payload else {
            return Ok(());
        };
        let h = d.envelope.header();
        let case = h.case.as_ref().and_then(|t| t.case).unwrap_or(h.id);
        let mut flags: Vec<String> = exercise::flags(n, h.created_ms)
            .iter()
            .map(ToString::to_string)
            .collect();
        match all.iter_mut().find(|a| a.case == case) {
            Some(a) => {
                let grew = exercise::grew(&a.notice, n);
                a.flags.retain(|f| f.starts_with("GREW"));
                a.flags.extend(grew.iter().map(ToString::to_string));
                a.flags.append(&mut flags);
                a.notice = n.clone();
                a.notices += 1;
            }
            None => all.push(Activity {
                case,
                notice: n.clone(),
                notices: 1,
                flags,
            }),
        }
        Ok(())
    })
    .await?;
    all.retain(|a| ewx_cli::text::year_of(a.notice.start_ms) == year);
    all.sort_by_key(|a| a.notice.start_ms);
    if all.is_empty() && !json {
        println!("no exercises notified for {year} that you may read");
    }
    for a in &all {
        let n = &a.notice;
        if json {
            let line = serde_json::json!({"case": a.case.to_string(), "name": n.name,
                "states": n.states, "start_ms": n.start_ms, "end_ms": n.end_ms,
                "troops": n.troops, "tanks": n.tanks, "area": n.area,
                "notices": a.notices, "flags": a.flags});
            println!("{line}");
        } else {
            println!(
                "EXERCISE {:<20} {} to {}  {:>6} troops {:>4} tanks  {}  [{}]  notices {}  case {}",
                n.name,
                utc(n.start_ms),
                utc(n.end_ms),
                n.troops,
                n.tanks,
                n.states.join(","),
                n.area,
                a.notices,
                a.case
            );
            for f in &a.flags {
                println!("  FLAG {f}");
            }
        }
    }
    Ok(())
}
