//! Who may use the operations listener: with a token configured, every request carries it
//! as `Authorization: Bearer …` (Prometheus, curl), or a browser session cookie got by
//! entering it once at `/login` (the dashboard). Sessions are random, held in memory only
//! (a restart logs browsers out), expire after 12 h and are capped in number.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use cookie::{Cookie, SameSite};

use super::Ops;
use crate::error::{Error, Result};

/// A browser session lasts this long.
const SESSION_TTL: Duration = Duration::from_secs(12 * 3600);
/// At most this many sessions at once (the oldest goes first).
const MAX_SESSIONS: usize = 256;

/// A secret file must be readable by its owner only.
///
/// # Errors
/// `Config` if it is missing or open to others.
fn owner_only(path: &Path, what: &str) -> Result<()> {
    ewx_net::files::owner_only(path).map_err(|e| Error::Config(format!("{what}: {e}")))
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

/// The token, and the browser sessions opened with it.
#[derive(Debug)]
pub(super) struct Gate {
    token: Option<Arc<str>>,
    /// The session cookie's name: `ewx_ops_<port>` (cookies ignore ports, and two
    /// brokers on one host must not overwrite each other's sessions).
    cookie: String,
    /// Session cookies get `Secure` when the listener speaks HTTPS.
    https: bool,
    sessions: Mutex<HashMap<String, Instant>>,
}

impl Gate {
    pub(super) fn new(token: Option<Arc<str>>, https: bool, port: u16) -> Self {
        Self {
            token,
            cookie: format!("ewx_ops_{port}"),
            https,
            sessions: Mutex::new(HashMap::new()),
        }
    }

    /// Is a token required at all?
    pub(super) fn locked(&self) -> bool {
        self.token.is_some()
    }

    /// Does this request carry the token or a live session?
    fn admits(&self, headers: &HeaderMap) -> bool {
        let Some(token) = &self.token else {
            return true;
        };
        let bearer = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        if let Some(given) = bearer {
            return ewx_net::https::same_secret(given.as_bytes(), token.as_bytes());
        }
        let Some(id) = session_cookie(headers, &self.cookie) else {
            return false;
        };
        let sessions = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        sessions.iter().any(|(s, at)| {
            ewx_net::https::same_secret(s.as_bytes(), id.as_bytes()) && at.elapsed() < SESSION_TTL
        })
    }

    /// A new session if `given` is the token: its `Set-Cookie` value.
    fn open_session(&self, given: &str) -> Option<String> {
        let token = self.token.as_ref()?;
        if !ewx_net::https::same_secret(given.trim().as_bytes(), token.as_bytes()) {
            return None;
        }
        let id = hex::encode(rand::random::<[u8; 32]>());
        let mut sessions = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        sessions.retain(|_, at| at.elapsed() < SESSION_TTL);
        if sessions.len() >= MAX_SESSIONS
            && let Some(oldest) = sessions
                .iter()
                .min_by_key(|(_, at)| **at)
                .map(|(s, _)| s.clone())
        {
            sessions.remove(&oldest);
        }
        sessions.insert(id.clone(), Instant::now());
        Some(self.cookie(id, SESSION_TTL))
    }

    /// End the request's session: the `Set-Cookie` value that clears it.
    fn close_session(&self, headers: &HeaderMap) -> String {
        if let Some(id) = session_cookie(headers, &self.cookie) {
            let mut sessions = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
            sessions.remove(&id);
        }
        self.cookie(String::new(), Duration::ZERO)
    }

    fn cookie(&self, value: String, ttl: Duration) -> String {
        let max_age = cookie::time::Duration::seconds(i64::try_from(ttl.as_secs()).unwrap_or(0));
        Cookie::build((self.cookie.clone(), value))
            .path("/")
            .http_only(true)
            // Lax: a link to the dashboard from a chat or a wiki opens it; every change
            // (log in, log out) is a POST, and the page's policy allows forms to itself only
            .same_site(SameSite::Lax)
            .secure(self.https)
            .max_age(max_age)
            .build()
            .to_string()
    }
}

/// The session id the request's cookies carry.
fn session_cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(Cookie::split_parse)
        .filter_map(std::result::Result::ok)
        .find(|c| c.name() == name)
        .map(|c| c.value().to_string())
}

/// Every request but the login page's carries the token or a session, when a token is
/// set; a browser asking for the dashboard without one is sent to log in.
pub(super) async fn authorize(State(ops): State<Ops>, req: Request, next: Next) -> Response {
    let path = req.uri().path();
    if !ops.gate.locked() && !ewx_net::https::addressed_to_loopback(req.headers()) {
        tracing::warn!(path = %path, "ops request refused: not addressed to loopback");
        return (
            StatusCode::FORBIDDEN,
            "without a token the ops listener answers requests to localhost only\n",
        )
            .into_response();
    }
    if path == "/login" || path.starts_with("/static/") || ops.gate.admits(req.headers()) {
        return next.run(req).await;
    }
    tracing::warn!(path = %path, "ops request refused: no valid bearer token or session");
    let wants_page = req
        .headers()
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("text/html"));
    if path == "/" && wants_page {
        return Redirect::to("/login").into_response();
    }
    (
        StatusCode::UNAUTHORIZED,
        [(header::WWW_AUTHENTICATE, "Bearer")],
        "a bearer token is required\n",
    )
        .into_response()
}

/// The login form (without a token configured there is nothing to log in to).
pub(super) async fn login_page(State(ops): State<Ops>) -> Response {
    if !ops.gate.locked() {
        return Redirect::to("/").into_response();
    }
    login_form(StatusCode::OK, "")
}

/// The form posted.
#[derive(Debug, serde::Deserialize)]
pub(super) struct Login {
    token: String,
}

/// Log in with the token: a session cookie and the dashboard, or the form again.
pub(super) async fn login(State(ops): State<Ops>, form: axum::Form<Login>) -> Response {
    match ops.gate.open_session(&form.token) {
        Some(cookie) => (
            StatusCode::SEE_OTHER,
            [(header::SET_COOKIE, cookie), (header::LOCATION, "/".into())],
        )
            .into_response(),
        None => {
            tracing::warn!("ops login refused: wrong token");
            login_form(StatusCode::UNAUTHORIZED, "That is not the token.")
        }
    }
}

/// Log out: the session ends here and in the browser.
pub(super) async fn logout(State(ops): State<Ops>, headers: HeaderMap) -> Response {
    let cookie = ops.gate.close_session(&headers);
    (
        StatusCode::SEE_OTHER,
        [
            (header::SET_COOKIE, cookie),
            (header::LOCATION, "/login".into()),
        ],
    )
        .into_response()
}

fn login_form(status: StatusCode, error: &str) -> Response {
    let page = include_str!("page/login.html").replace("{{error}}", error);
    (
        status,
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        page,
    )
        .into_response()
}
