//! `ewx commission`: the Special Commission's work as an attribution case. A member opens
//! it on the ceasefire reports it cites (resolved here to their envelope hashes from what
//! this node received), members sign a finding's hash or dissent from it, k signatures
//! adopt it, and an adopted finding of armed attack can fire a snapback citing it.

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use ewx_client::Client;
use ewx_client::cases::{CaseView, case_draft, placement};
use ewx_proto::case::{
    CaseTag, CaseType, Characterisation, Citation, Finding, Remedy, Stage, Verdict, finding_hash,
};
use ewx_proto::payload::{CaseReply, SanctionsTrigger};
use ewx_proto::{Labels, MessageId, NodeId, Payload, Topic};

use super::case::{Sanction, case_id, node_list};

#[derive(Debug, Subcommand)]
pub enum CommissionCmd {
    /// Open an attribution on the reports it rests on (ids from `ewx report export`).
    ///
    /// Example: ewx commission open --cite 3f2a…,9b1c… --question "who fired on 1 Dec?"
    Open {
        /// Report ids, comma-separated; each must be a ceasefire report you may read.
        #[arg(long)]
        cite: String,
        /// The question put to the commission.
        #[arg(long)]
        question: String,
        /// Where the cited reports are.
        #[arg(long, default_value = "ceasefire.>")]
        pattern: String,
    },
    /// Sign a finding. With --verdict, the finding is drafted from the flags; without,
    /// you concur with one already signed in the case (--finding, or the one with the
    /// most signatures).
    ///
    /// Example: ewx commission sign CASE --verdict responsible --responsible "the occupying force" --characterisation armed-attack --remedy "withdraw" --remedy-within-hours 48 --reasoning "…"
    Sign(SignArgs),
    /// Sign a dissent from a finding signed in the case (kept in the log with it).
    ///
    /// Example: ewx commission dissent CASE --text "the evidence does not exclude …"
    Dissent {
        /// The attribution case.
        case: String,
        /// The finding's hash (default: the one with the most signatures).
        #[arg(long)]
        finding: Option<String>,
        /// Your reasons.
        #[arg(long)]
        text: String,
    },
    /// Fire a snapback on the case's adopted finding of armed attack (attesters and
    /// members only): it fires at once; the parties must reimpose within --within-hours.
    ///
    /// Example: ewx commission snapback CASE --parties JP,KR --regime "annex" --measure "reimpose"
    Snapback {
        /// The attribution case.
        case: String,
        /// Sanctions partners that must reimpose, comma-separated.
        #[arg(long)]
        parties: String,
        #[command(flatten)]
        sanction: Sanction,
    },
}

#[derive(Debug, Args)]
pub struct SignArgs {
    /// The attribution case.
    case: String,
    /// Concur with this finding (its hash, as `ewx case show` lists it).
    #[arg(long, conflicts_with = "verdict")]
    finding: Option<String>,
    /// responsible, not-attributable or insufficient-evidence.
    #[arg(long)]
    verdict: Option<String>,
    /// With `responsible`: who (in words).
    #[arg(long)]
    responsible: Option<String>,
    /// ceasefire-breach or armed-attack.
    #[arg(long, default_value = "ceasefire-breach")]
    characterisation: String,
    /// What must be done.
    #[arg(long)]
    remedy: Option<String>,
    /// Hours after adoption the remedy is due.
    #[arg(long, default_value_t = 72)]
    remedy_within_hours: u64,
    /// Nodes that owe the remedy, comma-separated (default: none; the members then
    /// report compliance).
    #[arg(long)]
    owed_by: Option<String>,
    /// The reasoning, citing the reports.
    #[arg(long, default_value = "")]
    reasoning: String,
}

pub async fn run(client: Client, cmd: CommissionCmd) -> Result<()> {
    match cmd {
        CommissionCmd::Open {
            cite,
            question,
            pattern,
        } => open(&client, &cite, question, &pattern).await,
        CommissionCmd::Sign(a) => sign(&client, a).await,
        CommissionCmd::Dissent {
            case,
            finding,
            text,
        } => dissent(&client, &case, finding.as_deref(), text).await,
        CommissionCmd::Snapback {
            case,
            parties,
            sanction,
        } => snapback(&client, &case, node_list(&parties)?, sanction).await,
    }
}

fn said(text: String) -> Payload {
    Payload::CaseReply(CaseReply {
        text,
        decision: None,
        in_force_ms: None,
        statement: None,
    })
}

async fn open(client: &Client, cite: &str, question: String, pattern: &str) -> Result<()> {
    let ids: Vec<MessageId> = cite
        .split(',')
        .map(|s| case_id(s.trim()))
        .collect::<Result<_>>()?;
    let mut cites: Vec<Option<Citation>> = vec![None; ids.len()];
    super::report::read_log(client, pattern, |d| {
        let h = d.envelope.header();
        if let (Some(i), Some(Payload::CeasefireReport(_))) =
            (ids.iter().position(|id| *id == h.id), &d.payload)
        {
            cites[i] = Some(Citation {
                id: h.id,
                hash: d.envelope.hash(),
            });
        }
        Ok(())
    })
    .await?;
    let cites = cites
        .into_iter()
        .zip(&ids)
        .map(|(c, id)| c.with_context(|| format!("{id} is not a ceasefire report you may read")))
        .collect::<Result<Vec<_>>>()?;
    let (topic, level, comps) = placement(CaseType::Attribution);
    let labels = Labels::new(level, Labels::parse_compartments(comps)?);
    let mut tag = CaseTag::open(CaseType::Attribution, Vec::new());
    tag.cites = cites;
    let d = case_draft(Topic::new(topic)?, labels, said(question), tag);
    let ack = client.publish_case(d).await?;
    println!(
        "opened attribution {} on {} report(s) (log index {})",
        ack.id,
        ids.len(),
        ack.log_index
    );
    println!("follow   ewx case show {}", ack.id);
    Ok(())
}

/// The finding named by `hash` (or the one with the most signatures) as this node reads
/// it in the case.
fn signed_finding(view: &CaseView, hash: Option<&str>) -> Result<Finding> {
    let counts = view.case.signatures();
    let wanted = match hash {
        Some(h) => counts
            .iter()
            .map(|(d, _)| *d)
            .find(|d| d.to_string().starts_with(h))
            .with_context(|| format!("no finding {h} is signed in this case"))?,
        None => {
            counts
                .iter()
                .max_by_key(|(_, n)| *n)
                .context("no finding is signed in this case yet: draft one with --verdict")?
                .0
        }
    };
    view.items
        .iter()
        .find_map(|i| match &i.payload {
            Some(Payload::Finding(f)) if finding_hash(f) == wanted => Some(f.clone()),
            _ => None,
        })
        .context("the finding's text is not readable here")
}

fn drafted(case: MessageId, a: &SignArgs, verdict: &str) -> Result<Finding> {
    let verdict = match verdict {
        "responsible" => Verdict::Responsible(
            a.responsible
                .clone()
                .context("--verdict responsible needs --responsible WHO")?,
        ),
        "not-attributable" => Verdict::NotAttributable,
        "insufficient-evidence" => Verdict::InsufficientEvidence,
        other => {
            bail!("--verdict {other:?}: use responsible, not-attributable or insufficient-evidence")
        }
    };
    let f = Finding {
        case,
        verdict,
        characterisation: a.characterisation.parse::<Characterisation>()?,
        remedy: a.remedy.clone().map(|text| Remedy {
            text,
            within_ms: a.remedy_within_hours.saturating_mul(3_600_000),
        }),
        owed_by: a
            .owed_by
            .as_deref()
            .map(node_list)
            .transpose()?
            .unwrap_or_default(),
        reasoning: a.reasoning.clone(),
    };
    f.validate()?;
    Ok(f)
}

async fn sign(client: &Client, a: SignArgs) -> Result<()> {
    let id = case_id(&a.case)?;
    let view = client.case(id).await?;
    let finding = match a.verdict.as_deref() {
        Some(v) => drafted(id, &a, v)?,
        None => signed_finding(&view, a.finding.as_deref())?,
    };
    let hash = finding_hash(&finding);
    let ack = client
        .publish_case(view.reply(finding.tag(), Payload::Finding(finding.clone()))?)
        .await?;
    println!(
        "signed finding {} on case {id} (log index {}): {} — {}",
        hash.short(),
        ack.log_index,
        finding.verdict,
        finding.characterisation
    );
    let after = client.case(id).await?;
    if let Some((h, _)) = after.case.adopted {
        println!("ADOPTED: finding {}", h.short());
    }
    Ok(())
}

async fn dissent(client: &Client, case: &str, finding: Option<&str>, text: String) -> Result<()> {
    let id = case_id(case)?;
    let view = client.case(id).await?;
    let from = finding_hash(&signed_finding(&view, finding)?);
    let mut tag = CaseTag::reply(id, CaseType::Attribution, Stage::Dissent);
    tag.statement = Some(from);
    let ack = client.publish_case(view.reply(tag, said(text))?).await?;
    println!(
        "dissented from finding {} on case {id} (log index {})",
        from.short(),
        ack.log_index
    );
    Ok(())
}

async fn snapback(
    client: &Client,
    case: &str,
    parties: Vec<NodeId>,
    sanction: Sanction,
) -> Result<()> {
    let id = case_id(case)?;
    let view = client.case(id).await?;
    let Some((hash, _)) = view.case.adopted else {
        bail!("case {id} has no adopted finding");
    };
    let (topic, level, comps) = placement(CaseType::Snapback);
    let labels = Labels::new(level, Labels::parse_compartments(comps)?);
    let mut tag = CaseTag::open(CaseType::Snapback, parties);
    tag.statement = Some(hash);
    tag.within_ms = Some(sanction.within_hours.saturating_mul(3_600_000));
    tag.cites = vec![Citation { id, hash }];
    let trigger = Payload::SanctionsTrigger(SanctionsTrigger {
        regime: sanction.regime,
        measure: sanction.measure,
        effective_ms: client.clock().now_ms(),
        statement: Some(format!("adopted finding {hash} of case {id}")),
    });
    let ack = client
        .publish_case(case_draft(Topic::new(topic)?, labels, trigger, tag))
        .await?;
    println!(
        "snapback {} FIRED by finding {} (log index {})",
        ack.id,
        hash.short(),
        ack.log_index
    );
    println!("follow   ewx case show {}", ack.id);
    Ok(())
}
