//! `ewx-broker` binary (placeholder until the broker issue lands).

use std::process::ExitCode;

fn main() -> ExitCode {
    eprintln!(
        "ewx-broker: the broker is not built yet (ALPN {}); see the README",
        String::from_utf8_lossy(ewx_broker::ALPN)
    );
    ExitCode::from(2)
}
