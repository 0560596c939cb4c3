//! `ewx` command line (placeholder until the client issue lands).

use std::process::ExitCode;

fn main() -> ExitCode {
    let arg = std::env::args().nth(1);
    match arg.as_deref() {
        None | Some("-h" | "--help" | "help") => {
            println!(
                "ewx — the Compact early-warning exchange\n\nUsage: ewx <COMMAND>\n\nCommands (not yet built):"
            );
            for (name, what) in ewx_client::COMMANDS {
                println!("  {name:<10} {what}");
            }
            ExitCode::SUCCESS
        }
        Some(cmd) if ewx_client::COMMANDS.iter().any(|(n, _)| *n == cmd) => {
            eprintln!(
                "ewx {cmd}: not yet — the broker and client issues have not landed; see the README"
            );
            ExitCode::from(2)
        }
        Some(other) => {
            eprintln!("ewx: unknown command {other:?}; run 'ewx --help'");
            ExitCode::from(2)
        }
    }
}
