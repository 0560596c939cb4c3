//! `ewx roster …`: a roster is drafted, edited and then signed by council members one at
//! a time (k of n). Editing a signed roster starts the next version and drops the old
//! signatures, which no longer cover it.

use ewx_net::now_ms;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::Subcommand;
use ewx_cli::files;
use ewx_proto::access::Grants;
use ewx_proto::roster::{CouncilMember, NodeEntry, RosterBody};
use ewx_proto::{Labels, Level, NodeId, Role, SignedRoster, TopicPattern};

use super::Conn;

#[derive(Debug, Subcommand)]
pub enum RosterCmd {
    /// Start a roster (version 1, unsigned) with its council.
    ///
    /// Example: ewx roster init --network compact --council c1.pub --council c2.pub
    ///   --council c3.pub --threshold 2 --out roster.cbor
    Init {
        /// Name of the exchange.
        #[arg(long)]
        network: String,
        /// Public key files (from ewx keygen) of the council members.
        #[arg(long = "council", required = true)]
        council: Vec<PathBuf>,
        /// Signatures needed.
        #[arg(long)]
        threshold: u8,
        /// Where to write the draft.
        #[arg(long)]
        out: PathBuf,
    },
    /// Add a node from its public key file.
    ///
    /// Example: ewx roster add --roster roster.cbor --pub PL.pub --role liaison
    Add {
        /// Public key file written by ewx keygen.
        #[arg(long = "pub")]
        public: PathBuf,
        /// liaison, partner, auditor or broker.
        #[arg(long)]
        role: String,
    },
    /// Set what a node may read, publish and subscribe to.
    ///
    /// Example: ewx roster grant --roster roster.cbor --node PL --clearance RED
    ///   --compartments CORE,AIR --publish 'ew.>' --subscribe '>'
    Grant {
        /// The node.
        #[arg(long)]
        node: String,
        /// Highest TLP level: CLEAR, GREEN, AMBER, AMBER+STRICT, RED.
        #[arg(long)]
        clearance: Option<String>,
        /// Compartments, comma-separated (replaces the current set).
        #[arg(long)]
        compartments: Option<String>,
        /// Topic patterns it may publish on (repeat; replaces the current list).
        #[arg(long)]
        publish: Vec<String>,
        /// Topic patterns it may subscribe to (repeat; replaces the current list).
        #[arg(long)]
        subscribe: Vec<String>,
    },
    /// Revoke a node: refused at connect, never a recipient again.
    ///
    /// Example: ewx roster revoke --roster roster.cbor --node XX
    Revoke {
        /// The node.
        #[arg(long)]
        node: String,
    },
    /// Add one council member's signature.
    ///
    /// Example: ewx roster sign --roster roster.cbor --council-key council/COUNCIL-1.key
    Sign {
        /// The council member's secret key file.
        #[arg(long)]
        council_key: PathBuf,
    },
    /// Check the signatures (and, with --trusted, that it may replace that roster).
    ///
    /// Example: ewx roster verify --roster new.cbor --trusted roster.cbor
    Verify {
        /// A roster already trusted: the new one must be a valid update of it.
        #[arg(long)]
        trusted: Option<PathBuf>,
    },
    /// Show nodes, roles, clearances, compartments, key ids, signers and threshold.
    ///
    /// Example: ewx roster show --roster keys-example/roster.cbor
    Show,
}

pub fn run(cmd: RosterCmd, conn: &Conn) -> Result<()> {
    if let RosterCmd::Init {
        network,
        council,
        threshold,
        out,
    } = &cmd
    {
        return init(network, council, *threshold, out);
    }
    let path = conn.roster_file()?;
    let draft = ewx_net::files::read_signed_roster(&path)?;
    match cmd {
        RosterCmd::Init { .. } => Ok(()),
        RosterCmd::Add { public, role } => edit(&path, &draft, |b| {
            let (id, sign, kem) = files::read_public(&public)?;
            if b.nodes.iter().any(|n| n.id == id) {
                bail!("{id} is already in the roster (use grant or revoke)");
            }
            b.nodes.push(NodeEntry {
                id,
                role: parse_role(&role)?,
                sign,
                kem,
                grants: Grants::none(),
                revoked: false,
            });
            Ok(())
        }),
        RosterCmd::Grant {
            node,
            clearance,
            compartments,
            publish,
            subscribe,
        } => edit(&path, &draft, |b| {
            let n = find(b, &node)?;
            if let Some(c) = clearance {
                n.grants.clearance = c.parse::<Level>()?;
            }
            if let Some(c) = compartments {
                n.grants.compartments = Labels::parse_compartments(&c)?;
            }
            if !publish.is_empty() {
                n.grants.publish = patterns(&publish)?;
            }
            if !subscribe.is_empty() {
                n.grants.subscribe = patterns(&subscribe)?;
            }
            Ok(())
        }),
        RosterCmd::Revoke { node } => edit(&path, &draft, |b| {
            find(b, &node)?.revoked = true;
            Ok(())
        }),
        RosterCmd::Sign { council_key } => sign(&path, draft, &council_key),
        RosterCmd::Verify { trusted } => verify(&path, &draft, trusted.as_deref()),
        RosterCmd::Show => {
            print!("{}", super::render::roster_table(&draft)?);
            Ok(())
        }
    }
}

fn parse_role(role: &str) -> Result<Role> {
    Ok(match role {
        "liaison" => Role::Liaison,
        "partner" => Role::Partner,
        "auditor" => Role::Auditor,
        "broker" => Role::Broker,
        "monitor" => Role::Monitor,
        other => bail!("unknown role {other:?}: use liaison, partner, monitor, auditor or broker"),
    })
}

fn patterns(list: &[String]) -> Result<Vec<TopicPattern>> {
    list.iter()
        .map(|p| TopicPattern::new(p.as_str()).map_err(Into::into))
        .collect()
}

fn find<'b>(b: &'b mut RosterBody, node: &str) -> Result<&'b mut NodeEntry> {
    let id = NodeId::new(node)?;
    b.nodes
        .iter_mut()
        .find(|n| n.id == id)
        .with_context(|| format!("{id} is not in the roster (add it first)"))
}

fn init(network: &str, council: &[PathBuf], threshold: u8, out: &Path) -> Result<()> {
    if out.exists() {
        bail!("{} exists; refusing to overwrite a roster", out.display());
    }
    let council = council
        .iter()
        .map(|p| {
            let (id, key, _) = files::read_public(p)?;
            Ok(CouncilMember {
                name: id.to_string(),
                key,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let body = RosterBody {
        v: 1,
        network: network.into(),
        version: 1,
        issued_ms: now_ms(),
        valid_until_ms: None,
        threshold,
        council,
        nodes: Vec::new(),
        attesters: None,
        commission: None,
    };
    let draft = SignedRoster::new(&body)?;
    files::write_public(out, &draft.encode()?)?;
    println!(
        "wrote {} (version 1, unsigned, {threshold} signatures needed)",
        out.display()
    );
    Ok(())
}

/// Apply `change` to the body and write the result back as an unsigned draft.
fn edit(
    path: &Path,
    draft: &SignedRoster,
    change: impl FnOnce(&mut RosterBody) -> Result<()>,
) -> Result<()> {
    let mut body = draft.body()?;
    change(&mut body)?;
    if !draft.signatures.is_empty() {
        body.version += 1;
        println!(
            "the roster was signed: this edit starts version {} (signatures dropped)",
            body.version
        );
    }
    body.issued_ms = now_ms();
    let new = SignedRoster::new(&body)?;
    files::write_public(path, &new.encode()?)?;
    println!(
        "wrote {} (version {}, unsigned; needs {} council signatures)",
        path.display(),
        body.version,
        body.threshold
    );
    Ok(())
}

fn sign(path: &Path, mut draft: SignedRoster, key_file: &Path) -> Result<()> {
    let key = ewx_net::files::read_keys(key_file)?;
    let body = draft.body()?;
    let public = key.sign_public();
    if !body.council.iter().any(|m| m.key == public) {
        bail!(
            "{} is not a council key of this roster (key id {})",
            key_file.display(),
            public.key_id()
        );
    }
    draft.sign(key.signing_key());
    files::write_public(path, &draft.encode()?)?;
    let have = draft.signatures.len();
    println!(
        "signed as {} ({have} of {} signatures)",
        key.node, body.threshold
    );
    Ok(())
}

fn verify(path: &Path, draft: &SignedRoster, trusted: Option<&Path>) -> Result<()> {
    let roster = match trusted {
        Some(t) => {
            let trusted = ewx_net::files::read_roster(t)?;
            draft.verify_update(&trusted).with_context(|| {
                format!(
                    "{} is not a valid update of {}",
                    path.display(),
                    t.display()
                )
            })?
        }
        None => draft
            .verify()
            .with_context(|| format!("{} does not verify", path.display()))?,
    };
    println!(
        "ok: {} version {} of {:?}, {} nodes, {} of {} council signatures valid, council id {}",
        path.display(),
        roster.version(),
        roster.body().network,
        roster.body().nodes.len(),
        draft.signatures.len(),
        roster.body().council.len(),
        roster.council_id().short()
    );
    Ok(())
}
