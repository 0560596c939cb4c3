//! The operations listener: HTTP or HTTPS (axum on hyper, rustls) for the partners'
//! Prometheus and their load balancers — `/metrics`, `/healthz`, `/readyz`. Off unless `[ops]` is configured;
//! a listener on any address other than loopback needs a bearer token (the configuration
//! is refused without one), and when a token is set every request must carry it.

mod auth;
pub mod metrics;
mod overview;
mod page;

pub use auth::read_token;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};

use auth::Gate;
use overview::History;

use crate::config::OpsConfig;
use crate::error::{Error, Result};
use crate::net::Shared;

pub use metrics::Metrics;

/// OpenMetrics text, as Prometheus asks for it.
const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[derive(Clone)]
struct Ops {
    shared: Arc<Shared>,
    gate: Arc<Gate>,
    history: Arc<History>,
}

/// The listener, bound, with its token: made before the store is opened, so a bad token
/// file or a taken address stops the start before anything runs.
#[derive(Debug)]
pub struct Bound {
    listener: tokio::net::TcpListener,
    token: Option<Arc<str>>,
    tls: Option<Arc<rustls::ServerConfig>>,
}

/// The HTTPS configuration from `ops.tls_cert` and `ops.tls_key` (owner-only).
///
/// # Errors
/// `Config` naming the file that is wrong.
pub fn tls_config(
    cert: &std::path::Path,
    key: &std::path::Path,
) -> Result<Arc<rustls::ServerConfig>> {
    ewx_net::https::server_config(cert, key).map_err(|e| {
        let which = match &e {
            ewx_net::Error::KeyFileMode { .. } => "ops.tls_key",
            _ => "ops TLS",
        };
        Error::Config(format!("{which}: {e}"))
    })
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
        (Some(cert), Some(key)) => Some(tls_config(cert, key)?),
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
        gate: Arc::new(Gate::new(token, tls.is_some(), addr.port())),
        history: Arc::new(History::default()),
    };
    spawn_sampler(&ops);
    let app = axum::Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready))
        .route("/", get(page::dashboard))
        .route("/api/overview", get(overview))
        .route("/static/{file}", get(page::asset))
        .route("/login", get(auth::login_page).post(auth::login))
        .route("/logout", post(auth::logout))
        .layer(middleware::from_fn_with_state(ops.clone(), auth::authorize))
        .layer(middleware::map_response(page::secure_headers))
        .with_state(ops);
    let cancel = &shared.cancel;
    let scheme = if tls.is_some() { "https" } else { "http" };
    match tls {
        Some(config) => {
            let listener = ewx_net::https::TlsListener::new(listener, config, cancel.clone())
                .map_err(|e| Error::Transport(e.to_string()))?;
            spawn_server(&shared, listener, app);
        }
        None => spawn_server(&shared, listener, app),
    }
    tracing::info!(
        authenticated,
        "ops listening on {scheme}://{addr} (dashboard at /; /metrics, /healthz, /readyz)"
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

/// Sample the totals for the dashboard's history until the broker shuts down.
fn spawn_sampler(ops: &Ops) {
    let (shared, history) = (ops.shared.clone(), ops.history.clone());
    ops.shared.tasks.spawn(async move {
        let mut every = tokio::time::interval(overview::SAMPLE_EVERY);
        loop {
            tokio::select! {
                _ = shared.cancel.cancelled() => break,
                _ = every.tick() => history.sample(&shared).await,
            }
        }
    });
}

/// The dashboard's document.
async fn overview(State(ops): State<Ops>) -> Response {
    let mut overview = ops.history.overview(&ops.shared).await;
    overview.broker.locked = ops.gate.locked();
    (
        [(header::CACHE_CONTROL, HeaderValue::from_static("no-store"))],
        axum::Json(overview),
    )
        .into_response()
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
