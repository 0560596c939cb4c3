//! `ewx`: the command line of the Compact early-warning exchange. It parses flags into a
//! validated request and calls `ewx-client` and the `ewx-cli` library; no logic lives here.

mod commands;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let args = commands::Args::parse();
    // the demo tells its own story; the broker's warnings about the forgery it plays
    // would only repeat it
    // (openraft reports each failed heartbeat of a cluster being started or stopped)
    let default = if args.is_demo() {
        "error,openraft=off"
    } else {
        "warn,openraft=off"
    };
    let filter =
        tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| default.into());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .init();
    match commands::run(args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("ewx: {e:#}");
            ExitCode::FAILURE
        }
    }
}
