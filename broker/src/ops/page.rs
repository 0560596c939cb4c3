//! The dashboard page and its assets, compiled into the broker: no CDN, no files to
//! install (the partners' machines have no internet). Every response carries a strict
//! Content-Security-Policy: scripts and styles from this listener only.

use axum::extract::Path;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
    connect-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; \
    base-uri 'none'";

/// The dashboard (its data comes from `/api/overview`).
pub(super) async fn dashboard() -> Response {
    (
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        include_str!("page/dashboard.html"),
    )
        .into_response()
}

/// A stylesheet or script of the pages.
pub(super) async fn asset(Path(file): Path<String>) -> Response {
    let (body, kind) = match file.as_str() {
        "ops.css" => (include_str!("page/ops.css"), "text/css; charset=utf-8"),
        "dashboard.js" => (
            include_str!("page/dashboard.js"),
            "text/javascript; charset=utf-8",
        ),
        "login.js" => (
            include_str!("page/login.js"),
            "text/javascript; charset=utf-8",
        ),
        _ => return (StatusCode::NOT_FOUND, "no such file\n").into_response(),
    };
    ([(header::CONTENT_TYPE, kind)], body).into_response()
}

/// Headers every answer carries: the page may not be framed, sniffed or leak its address.
pub(super) async fn secure_headers(mut res: Response) -> Response {
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    res
}
