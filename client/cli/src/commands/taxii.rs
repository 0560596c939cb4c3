//! `ewx taxii serve`: the node's TAXII 2.1 gateway (see `ewx-taxii`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Subcommand;

use super::Conn;

#[derive(Debug, Subcommand)]
pub enum TaxiiCmd {
    /// Serve what this node receives to local TAXII 2.1 clients (MISP, OpenCTI,
    /// taxii2-client): each collection of taxii.toml is a durable subscription of the
    /// node; STIX bundles that arrive are verified, decrypted and kept in a local store;
    /// a writable collection publishes POSTed objects as this node. Runs until Ctrl-C.
    ///
    /// Example: ewx taxii serve --profile ~/.ewx/PL --listen 127.0.0.1:9480
    Serve {
        /// Address for TAXII clients (default: `listen` in the config, else
        /// 127.0.0.1:9480). Anything but loopback needs [auth] in the config.
        #[arg(long)]
        listen: Option<SocketAddr>,
        /// The gateway's configuration (default: PROFILE/taxii.toml). Relative paths in
        /// it are taken from its directory.
        #[arg(long)]
        config: Option<PathBuf>,
    },
}

pub fn run(cmd: TaxiiCmd, conn: &Conn) -> Result<ExitCode> {
    let TaxiiCmd::Serve { listen, config } = cmd;
    let path = config
        .or_else(|| conn.profile.as_ref().map(|p| p.join("taxii.toml")))
        .context(
            "no gateway configuration: pass --config FILE or --profile DIR with DIR/taxii.toml",
        )?;
    let dir = path
        .parent()
        .map(std::path::Path::to_path_buf)
        .unwrap_or_default();
    let config = ewx_taxii::Config::load(&path, &dir)?;
    let listen = listen
        .or(config.listen)
        .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 9480)));
    ewx_taxii::preflight(&config, listen)?;
    let scheme = if config.tls.is_some() {
        "https"
    } else {
        "http"
    };
    let resolved = conn.resolve()?;
    super::runtime()?.block_on(async move {
        let client = resolved.connect().await?;
        let running = ewx_taxii::serve(config, client.clone(), listen).await?;
        println!(
            "TAXII 2.1 gateway of {} on {scheme}://{}/taxii2/ (Ctrl-C or SIGTERM stops it)",
            client.keys().node,
            running.addr()
        );
        // Ctrl-C or SIGTERM (systemd): requests in flight are answered first
        let stop = async {
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(mut term) => {
                    tokio::select! {
                        _ = tokio::signal::ctrl_c() => {}
                        _ = term.recv() => {}
                    }
                }
                Err(_) => {
                    let _ = tokio::signal::ctrl_c().await;
                }
            }
        };
        let result = running.wait(stop).await;
        client.close().await;
        result.context("the TAXII gateway stopped")?;
        Ok(ExitCode::SUCCESS)
    })
}
