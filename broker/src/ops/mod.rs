//! The operations listener: HTTP or HTTPS (axum on hyper, rustls) for the partners'
//! Prometheus and their load balancers — `/metrics`, `/healthz`, `/readyz`. Off unless `[ops]` is configured;
//! a listener on any address other than loopback needs a bearer token (the configuration
//! is refused without one), and when a token is set every request must carry it.

pub mod metrics;
mod tls;

pub use tls::server_config as tls_config;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::config::OpsConfig;
use crate::error::{Error, Result};
use crate::net::Shared;

pub use metrics::Metrics;

/// OpenMetrics text, as Prometheus asks for it.
const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[derive(Clone)]
struct Ops {
    shared: Arc<Shared>,
    token: Option<Arc<str>>,
}

/// A secret file must be readable by its owner only.
///
/// # Errors
/// `Config` if it is missing or open to others.
pub fn owner_only(path: &Path, what: &str) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(path)
        .map_err(|e| Error::Config(format!("{what} {}: {e}", path.display())))?;
    if meta.permissions().mode() & 0o077 != 0 {
        return Err(Error::Config(format!(
            "{what} {} is readable by others: chmod 600 it",
            path.display()
        )));
    }
    Ok(())
}

/// Read the bearer token: the file must be readable by its owner only.
///
/// # Errors
/// `Config` if it is missing, empty or readable by others.
pub fn read_token(path: &Path) -> Result<String> {
    owner_only(path, "ops.token_file")?;
    let token = std::fs::read_to_string(path)
        .map_err(|e| Error::Config(format!("ops.token_file {}: {e}", path.display())))?;
    let token = token.trim().to_string();
    if token.len() < 16 {
        return Err(Error::Config(format!(
            "ops.token_file {}: the token must be at least 16 characters",
            path.display()
        )));
    }
    Ok(token)
}

/// The listener, bound, with its token: made before the store is opened, so a bad token
/// file or a taken address stops the start before anything runs.
#[derive(Debug)]
pub struct Bound {
    listener: tokio::net::TcpListener,
    token: Option<Arc<str>>,
    tls: Option<Arc<rustls::ServerConfig>>,
}

/// Read the token and bind the address.
///
/// # Errors
/// `Config` for a bad token file, `Transport` if the address cannot be bound.
pub async fn bind(config: &OpsConfig) -> Result<Bound> {
    let token = config
        .token_file
        .as_deref()
        .map(read_token)
        .transpose()?
        .map(Arc::from);
    let tls = match (&config.tls_cert, &config.tls_key) {
        (Some(cert), Some(key)) => Some(tls::server_config(cert, key)?),
        _ => None,
    };
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|e| Error::Transport(format!("ops.listen {}: {e}", config.listen)))?;
    Ok(Bound {
        listener,
        token,
        tls,
    })
}

/// Serve until the broker shuts down; the bound address.
///
/// # Errors
/// `Transport` if the bound address cannot be read.
pub fn serve(bound: Bound, shared: Arc<Shared>) -> Result<SocketAddr> {
    let Bound {
        listener,
        token,
        tls,
    } = bound;
    let addr = listener
        .local_addr()
        .map_err(|e| Error::Transport(e.to_string()))?;
    let authenticated = token.is_some();
    let ops = Ops {
        shared: shared.clone(),
        token,
    };
    let app = axum::Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready))
        .layer(middleware::from_fn_with_state(ops.clone(), authorize))
        .with_state(ops);
    let cancel = &shared.cancel;
    let scheme = if tls.is_some() { "https" } else { "http" };
    match tls {
        Some(config) => {
            let listener = tls::TlsListener::new(listener, config, cancel.clone())
                .map_err(|e| Error::Transport(e.to_string()))?;
            spawn_server(&shared, listener, app);
        }
        None => spawn_server(&shared, listener, app),
    }
    tracing::info!(
        authenticated,
        "ops listening on {scheme}://{addr} (/metrics, /healthz, /readyz)"
    );
    Ok(addr)
}

/// Serve `app` on `listener` until the broker shuts down.
fn spawn_server<L>(shared: &Shared, listener: L, app: axum::Router)
where
    L: axum::serve::Listener,
    L::Addr: std::fmt::Debug,
{
    let cancel = shared.cancel.clone();
    shared.tasks.spawn(async move {
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(cancel.cancelled_owned())
            .await;
        if let Err(e) = served {
            tracing::error!("ops listener stopped: {e}");
        }
    });
}

/// Every request carries the token, when one is set (compared in constant time).
async fn authorize(State(ops): State<Ops>, req: Request, next: Next) -> Response {
    if let Some(token) = &ops.token {
        let given = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
        if !same(given.as_bytes(), token.as_bytes()) {
            tracing::warn!(path = %req.uri().path(), "ops request refused: no valid bearer token");
            return (
                StatusCode::UNAUTHORIZED,
                [(header::WWW_AUTHENTICATE, "Bearer")],
                "a bearer token is required\n",
            )
                .into_response();
        }
    }
    next.run(req).await
}

/// Equal bytes, in time that depends on the length only.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn metrics(State(ops): State<Ops>) -> Response {
    let mut levels = ops.shared.levels();
    levels.cases = ops.shared.case_tally().await;
    match ops.shared.metrics.encode(&levels) {
        Ok(text) => ([(header::CONTENT_TYPE, OPENMETRICS)], text).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

/// Ready: the store is open and its writer takes work, and (on a replica) a leader is
/// known.
async fn ready(State(ops): State<Ops>) -> Response {
    match ops.shared.not_ready() {
        None => "ready\n".into_response(),
        Some(why) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {why}\n"),
        )
            .into_response(),
    }
}
