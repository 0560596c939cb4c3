//! Flags, and the dispatch from a parsed command to the library.

mod audit;
mod bench;
mod case;
mod commission;
mod exercise;
mod net;
mod render;
mod report;
mod roster;
mod taxii;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::{Args as ClapArgs, Parser, Subcommand};

/// ewx — the Compact early-warning exchange.
///
/// Signed, end-to-end encrypted early-warning bulletins and exercise notifications between
/// Ukraine and its guarantors, over QUIC, with per-partner access labels and an auditable
/// log. Run `ewx demo` to see it work; `ewx <command> --help` explains each command.
#[derive(Debug, Parser)]
#[command(name = "ewx", version)]
pub struct Args {
    #[command(flatten)]
    conn: Conn,
    #[command(subcommand)]
    command: Command,
}

/// Where the broker is and who we are. Flags win over environment variables, which win
/// over the profile directory.
#[derive(Debug, Clone, ClapArgs)]
pub struct Conn {
    /// Broker address, e.g. 127.0.0.1:4870; for a cluster, its replicas separated by
    /// commas (127.0.0.1:4871,127.0.0.1:4872,127.0.0.1:4873): the first that answers is
    /// used, and after a lost connection whichever answers.
    #[arg(long, global = true, env = "EWX_BROKER", value_parser = parse_brokers)]
    broker: Option<Brokers>,
    /// This node's secret key file (mode 0600).
    #[arg(long, global = true, env = "EWX_KEY")]
    key: Option<PathBuf>,
    /// The signed roster file.
    #[arg(long, global = true, env = "EWX_ROSTER")]
    roster: Option<PathBuf>,
    /// A node profile directory holding `node.key`, `roster.cbor` and a `broker` file
    /// with the address (a cluster's replicas: one per line or separated by commas).
    #[arg(long, global = true, env = "EWX_PROFILE")]
    profile: Option<PathBuf>,
    /// Seconds to wait for the broker (each replica of a cluster) to answer before
    /// giving up.
    #[arg(long, global = true, env = "EWX_CONNECT_TIMEOUT", default_value_t = 5.0, value_parser = parse_timeout)]
    connect_timeout: f64,
}

fn parse_timeout(s: &str) -> std::result::Result<f64, String> {
    match s.parse::<f64>() {
        Ok(t) if t > 0.0 && t <= 3600.0 => Ok(t),
        _ => Err(format!("{s:?}: seconds, more than 0 and at most 3600")),
    }
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Generate a node's keys: an ed25519 identity key and an x25519 key for content keys.
    ///
    /// Writes DIR/NODE.key (secret, mode 0600) and DIR/NODE.pub (give it to the council).
    ///
    /// Example: ewx keygen --node PL --out keys/
    Keygen {
        /// Node name: 1-16 of A-Z, 0-9, '-'.
        #[arg(long)]
        node: String,
        /// Directory to write into (created if missing).
        #[arg(long)]
        out: PathBuf,
    },
    /// Create, edit, sign, verify and show rosters.
    #[command(subcommand)]
    Roster(roster::RosterCmd),
    /// Seal, sign and publish a message; prints its id and log index.
    ///
    /// The payload is read from --file or stdin: JSON for the typed kinds, a STIX 2.1
    /// bundle for a bulletin, or plain text for a bulletin (first line = headline).
    ///
    /// Example: echo '{"headline":"Air raid","body":"Take shelter"}' |
    ///   ewx publish --topic ew.air.missile --level AMBER --compartments CORE --precedence FLASH
    Publish(net::PublishArgs),
    /// Receive, verify and decrypt messages as they arrive.
    ///
    /// Example: ewx subscribe 'ew.air.>' --from earliest --count 10 --json
    Subscribe(net::SubscribeArgs),
    /// Show the connection: broker, roster version, keys, this node's grants.
    ///
    /// Example: ewx status --profile ~/.ewx/PL
    Status,
    /// The Compact's mechanism: consultations (24 h / 72 h) and snapbacks, as cases whose
    /// state every party folds from the signed thread.
    ///
    /// Example: ewx case list; ewx case show CASE; ewx case reply CASE --stage consulted
    #[command(subcommand)]
    Case(case::CaseCmd),
    /// Exercise transparency (Vienna Document): notify, amend or correct, answer an
    /// observation invitation, list the year's calendar. Always labelled EXERCISE.
    ///
    /// Example: ewx exercise notify --file notice.json --invite US,GB; ewx exercise calendar
    #[command(subcommand)]
    Exercise(exercise::ExerciseCmd),
    /// The Special Commission: open an attribution on cited reports, sign or dissent from
    /// a finding (k members adopt it), fire a snapback on an adopted armed-attack finding.
    ///
    /// Example: ewx commission open --cite ID,ID --question "…"; ewx commission sign CASE
    #[command(subcommand)]
    Commission(commission::CommissionCmd),
    /// Ceasefire monitoring: file a structured breach report, export all you may read.
    ///
    /// Example: ewx report breach --file breach.json; ewx report export --format csv
    #[command(subcommand)]
    Report(report::ReportCmd),
    /// A TAXII 2.1 gateway for this node's own MISP/OpenCTI.
    ///
    /// Example: ewx taxii serve --profile ~/.ewx/PL --listen 127.0.0.1:9480
    #[command(subcommand)]
    Taxii(taxii::TaxiiCmd),
    /// Verify the audit log (online or from a store copy) and list receipts.
    #[command(subcommand)]
    Audit(audit::AuditCmd),
    /// Act as a witness: co-sign the broker's newest checkpoint if it extends the last one
    /// this node saw (kept in --state); report a fork and exit 2 if it does not.
    ///
    /// Example: ewx --profile ~/.ewx/PL witness --state ~/.ewx/PL/witness.cbor --interval 60
    Witness {
        /// File holding the last checkpoint this witness accepted.
        #[arg(long)]
        state: PathBuf,
        /// Keep witnessing every SECS seconds (default: once).
        #[arg(long, value_name = "SECS")]
        interval: Option<u64>,
    },
    /// Measure throughput and latency: P publishers and S subscribers over QUIC against an
    /// embedded broker (a child process, so its CPU and memory are measured alone) or
    /// --broker. Prints a table, or one JSON object with --json.
    ///
    /// Example: ewx bench --seconds 10 --publishers 4 --subscribers 10 --size 1024
    Bench(bench::BenchArgs),
    /// (internal) the broker process of `ewx bench`.
    #[command(hide = true, name = "__bench-broker")]
    BenchBroker {
        /// Its configuration.
        #[arg(long)]
        config: PathBuf,
    },
    /// Run the demo Compact network on loopback and check every expectation.
    ///
    /// Starts an embedded broker with a temporary store and the demo keys, plays an air
    /// raid warning, an exercise notice, a consultation request with receipts, a sanctions
    /// snapback, a forgery and a denied read; then, on a simulated clock, the cases: a
    /// consultation through its 24 h / 72 h deadlines, the exercise amended and answered,
    /// a commission finding adopted on a monitor's reports, and the snapback it fires.
    /// Prints each case, a table, and verifies the audit log. Exits non-zero if any
    /// expectation failed.
    ///
    /// Example: ewx demo
    Demo {
        /// Instead, write the demo network (keys, roster, broker.toml, the cluster's
        /// cluster/replica-N.toml) into DIR.
        #[arg(long, value_name = "DIR")]
        write_network: Option<PathBuf>,
        /// Run it against a cluster of three replicas, and kill the leader midway (every
        /// expectation must still hold); the audit log is verified on every replica.
        #[arg(long, conflicts_with = "write_network")]
        cluster: bool,
    },
}

impl Args {
    /// Is this `ewx demo`?
    pub fn is_demo(&self) -> bool {
        matches!(self.command, Command::Demo { .. })
    }
}

/// One broker address, or a cluster's replicas.
#[derive(Debug, Clone)]
pub struct Brokers(pub Vec<SocketAddr>);

impl std::fmt::Display for Brokers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let all: Vec<String> = self.0.iter().map(ToString::to_string).collect();
        f.write_str(&all.join(","))
    }
}

/// Addresses separated by commas or whitespace.
fn parse_brokers(text: &str) -> std::result::Result<Brokers, String> {
    let addrs = text
        .split(|c: char| c == ',' || c.is_whitespace())
        .filter(|a| !a.is_empty())
        .map(|a| {
            a.parse::<SocketAddr>()
                .map_err(|_| format!("{a:?} is not an address like 127.0.0.1:4870"))
        })
        .collect::<std::result::Result<Vec<_>, _>>()?;
    if addrs.is_empty() {
        return Err("no broker address".into());
    }
    Ok(Brokers(addrs))
}

/// A resolved connection: address, keys and roster, ready to connect.
pub struct Resolved {
    broker: Brokers,
    key: PathBuf,
    roster: PathBuf,
    connect_timeout: std::time::Duration,
}

impl Conn {
    fn profile_file(&self, file: &str) -> Option<PathBuf> {
        self.profile
            .as_ref()
            .map(|p| p.join(file))
            .filter(|p| p.exists())
    }

    /// The roster file from --roster, EWX_ROSTER or the profile.
    fn roster_file(&self) -> Result<PathBuf> {
        self.roster.clone().or_else(|| self.profile_file("roster.cbor")).context(
            "no roster file: pass --roster FILE, set EWX_ROSTER, or use --profile DIR with DIR/roster.cbor",
        )
    }

    fn resolve(&self) -> Result<Resolved> {
        let broker = match self.broker.clone() {
            Some(b) => b,
            None => {
                let f = self.profile_file("broker").context(
                    "no broker address: pass --broker ADDR, set EWX_BROKER, or use --profile DIR with a DIR/broker file",
                )?;
                let text = std::fs::read_to_string(&f)
                    .with_context(|| format!("reading {}", f.display()))?;
                parse_brokers(&text).map_err(|e| anyhow::anyhow!("{}: {e}", f.display()))?
            }
        };
        let key = self.key.clone().or_else(|| self.profile_file("node.key")).context(
            "no key file: pass --key FILE, set EWX_KEY, or use --profile DIR with DIR/node.key (see ewx keygen)",
        )?;
        Ok(Resolved {
            broker,
            key,
            roster: self.roster_file()?,
            connect_timeout: std::time::Duration::from_secs_f64(self.connect_timeout),
        })
    }
}

impl Resolved {
    async fn connect(&self) -> Result<ewx_client::Client> {
        let keys = ewx_net::files::read_keys(&self.key)?;
        let roster = ewx_net::files::read_roster(&self.roster)?;
        let node = keys.node.clone();
        // a person at a terminal sees what it waits for; scripts get only the outcome
        if std::io::IsTerminal::is_terminal(&std::io::stderr()) {
            eprintln!("connecting to {} as {node} …", self.broker);
        }
        ewx_client::Client::connect_any_within(
            &self.broker.0,
            keys,
            roster,
            ewx_net::Clock::system(),
            Some(self.connect_timeout),
        )
        .await
        .with_context(|| {
            format!(
                "connecting to {} as {node} (is the broker running, and is {node} in its roster? --connect-timeout waits longer)",
                self.broker
            )
        })
    }
}

pub(crate) fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

/// Run one command.
///
/// # Errors
/// Anything that went wrong, with what to do about it.
pub fn run(args: Args) -> Result<ExitCode> {
    match args.command {
        Command::Keygen { node, out } => keygen(&node, &out).map(|()| ExitCode::SUCCESS),
        Command::Roster(cmd) => roster::run(cmd, &args.conn).map(|()| ExitCode::SUCCESS),
        Command::Audit(cmd) => audit::run(cmd, &args.conn),
        Command::Taxii(cmd) => taxii::run(cmd, &args.conn),
        Command::Witness { state, interval } => audit::witness(&args.conn, &state, interval),
        Command::Publish(p) => with_client(&args.conn, |c| net::publish(c, p)),
        Command::Subscribe(s) => with_client(&args.conn, |c| net::subscribe(c, s)),
        Command::Status => with_client(&args.conn, net::status),
        Command::Case(cmd) => with_client(&args.conn, |c| case::run(c, cmd)),
        Command::Report(cmd) => with_client(&args.conn, |c| report::run(c, cmd)),
        Command::Exercise(cmd) => with_client(&args.conn, |c| exercise::run(c, cmd)),
        Command::Commission(cmd) => with_client(&args.conn, |c| commission::run(c, cmd)),
        Command::Bench(b) => bench::run(b, args.conn.broker.map(|b| b.0)),
        Command::BenchBroker { config } => bench::child_broker(&config),
        Command::Demo {
            write_network: Some(dir),
            ..
        } => {
            ewx_cli::network::write(&dir)?;
            println!(
                "wrote the demo network (DEMO KEYS ONLY) to {}",
                dir.display()
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Demo {
            write_network: None,
            cluster,
        } => demo(cluster),
    }
}

/// Connect, run `f`, and close the connection whatever `f` returned.
fn with_client<F, Fut>(conn: &Conn, f: F) -> Result<ExitCode>
where
    F: FnOnce(ewx_client::Client) -> Fut,
    Fut: std::future::Future<Output = Result<()>>,
{
    let resolved = conn.resolve()?;
    runtime()?.block_on(async {
        let client = resolved.connect().await?;
        let result = f(client.clone()).await;
        client.close().await;
        result.map(|()| ExitCode::SUCCESS)
    })
}

fn keygen(node: &str, out: &Path) -> Result<()> {
    let id = ewx_proto::NodeId::new(node)?;
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let (secret, public) = (out.join(format!("{id}.key")), out.join(format!("{id}.pub")));
    if secret.exists() {
        bail!(
            "{} exists; refusing to overwrite a secret key (move it away first)",
            secret.display()
        );
    }
    let keys = ewx_proto::NodeKeys::generate(id, &mut rand::rngs::OsRng);
    ewx_cli::files::write_secret(&secret, keys.to_secret_file().as_bytes())?;
    ewx_cli::files::write_public(&public, ewx_cli::files::public_text(&keys).as_bytes())?;
    println!("node     {}", keys.node);
    println!("key id   {}", keys.sign_public().key_id());
    println!("{}", keys.sign_public().to_text());
    println!("{}", keys.kem_public().to_text());
    println!("secret   {} (mode 0600; never share it)", secret.display());
    println!(
        "public   {} (send it to the roster council)",
        public.display()
    );
    Ok(())
}

fn demo(cluster: bool) -> Result<ExitCode> {
    let report = runtime()?.block_on(ewx_cli::demo::run(cluster))?;
    print!("{}", report.text);
    if report.failures.is_empty() {
        println!("\nall expectations held");
        Ok(ExitCode::SUCCESS)
    } else {
        println!("\nFAILED expectations:");
        for f in &report.failures {
            println!("  - {f}");
        }
        Ok(ExitCode::FAILURE)
    }
}
