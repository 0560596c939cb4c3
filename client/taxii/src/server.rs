//! TAXII 2.1 over axum: discovery, the API root, collections, objects (GET and POST),
//! an object and its versions, the manifest, and POST statuses. Every answer is
//! `application/taxii+json;version=2.1`; a request that accepts none of it gets 406,
//! errors are TAXII error messages.

use std::sync::Arc;

use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Value, json};

use crate::Gateway;
use crate::query::{self, Params};
use crate::stix::timestamp;
use crate::store::{Page, Record};

/// The TAXII media type.
pub const TAXII: &str = "application/taxii+json;version=2.1";
/// The STIX media type (in manifests).
const STIX: &str = "application/stix+json;version=2.1";
/// The API root's path.
pub const API_ROOT: &str = "/api1/";
/// Largest POST body.
pub const MAX_CONTENT: usize = 8 * 1024 * 1024;

type Shared = Arc<Gateway>;

/// The routes.
pub fn router(gateway: Shared) -> axum::Router {
    axum::Router::new()
        .route("/taxii2/", get(discovery))
        .route("/api1/", get(api_root))
        .route("/api1/status/{status}/", get(status))
        .route("/api1/collections/", get(collections))
        .route("/api1/collections/{c}/", get(collection))
        .route(
            "/api1/collections/{c}/objects/",
            get(objects).post(crate::publish::add_objects),
        )
        .route("/api1/collections/{c}/objects/{object}/", get(object))
        .route(
            "/api1/collections/{c}/objects/{object}/versions/",
            get(versions),
        )
        .route("/api1/collections/{c}/manifest/", get(manifest))
        .fallback(|| async { error(StatusCode::NOT_FOUND, "no such TAXII resource", "") })
        .layer(axum::extract::DefaultBodyLimit::max(MAX_CONTENT))
        .layer(axum::middleware::map_response(as_taxii_error))
        .layer(axum::middleware::from_fn_with_state(gateway.clone(), gate))
        .with_state(gateway)
}

/// A TAXII error message.
pub fn error(status: StatusCode, title: &str, description: &str) -> Response {
    let body = json!({
        "title": title,
        "description": description,
        "http_status": status.as_u16().to_string(),
    });
    taxii(status, &body)
}

/// A TAXII answer.
pub fn taxii(status: StatusCode, body: &Value) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, HeaderValue::from_static(TAXII))],
        body.to_string(),
    )
        .into_response()
}

/// An error axum answered itself (a body too large, a malformed query or path) as a
/// TAXII error message: clients parse errors as TAXII JSON.
async fn as_taxii_error(r: Response) -> Response {
    let taxii_already = r
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes() == TAXII.as_bytes());
    if r.status().is_success() || taxii_already {
        return r;
    }
    let status = r.status();
    error(status, status.canonical_reason().unwrap_or("error"), "")
}

/// Authentication, then content negotiation.
async fn gate(State(g): State<Shared>, req: Request, next: Next) -> Response {
    if !g.keys.required() && !ewx_net::https::addressed_to_loopback(req.headers()) {
        tracing::warn!(path = %req.uri().path(), "TAXII request refused: not addressed to loopback");
        return error(
            StatusCode::FORBIDDEN,
            "loopback only",
            "without [auth] the gateway answers requests to localhost only",
        );
    }
    if !g.keys.admit(req.headers()) {
        tracing::warn!(path = %req.uri().path(), "TAXII request refused: no valid credentials");
        let mut r = error(
            StatusCode::UNAUTHORIZED,
            "authentication required",
            "send HTTP Basic credentials or a bearer token",
        );
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"ewx TAXII\", Bearer"),
        );
        return r;
    }
    if !accepts_taxii(req.headers()) {
        return error(
            StatusCode::NOT_ACCEPTABLE,
            "not acceptable",
            &format!("this server answers in {TAXII} only"),
        );
    }
    next.run(req).await
}

/// Does the request's `Accept` allow TAXII 2.1 JSON? (No `Accept`: anything goes.)
fn accepts_taxii(headers: &HeaderMap) -> bool {
    let Some(accept) = headers.get(header::ACCEPT) else {
        return true;
    };
    let Ok(accept) = accept.to_str() else {
        return false;
    };
    accept
        .split(',')
        .filter_map(|m| m.trim().parse::<mime::Mime>().ok())
        .any(|m| match m.essence_str() {
            "*/*" | "application/*" => true,
            // (the mime crate keeps `+json` as the subtype's suffix)
            "application/taxii+json" => m.get_param("version").is_none_or(|v| v == "2.1"),
            _ => false,
        })
}

async fn discovery(State(g): State<Shared>, headers: HeaderMap) -> Response {
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("localhost");
    let scheme = if g.config.tls.is_some() {
        "https"
    } else {
        "http"
    };
    let root = format!("{scheme}://{host}{API_ROOT}");
    taxii(
        StatusCode::OK,
        &json!({
            "title": g.config.title,
            "description": g.config.description,
            "default": root,
            "api_roots": [root],
        }),
    )
}

async fn api_root(State(g): State<Shared>) -> Response {
    taxii(
        StatusCode::OK,
        &json!({
            "title": format!("{} — node {}", g.config.title, g.node),
            "description": "What this node received over ewx, verified and decrypted",
            "versions": [TAXII],
            "max_content_length": MAX_CONTENT,
        }),
    )
}

fn collection_json(c: &crate::config::Collection) -> Value {
    json!({
        "id": c.id,
        "title": c.title,
        "description": c.description,
        "alias": c.alias,
        "can_read": true,
        "can_write": c.publish.is_some(),
        "media_types": [STIX],
    })
}

async fn collections(State(g): State<Shared>) -> Response {
    let list: Vec<Value> = g.config.collections.iter().map(collection_json).collect();
    taxii(StatusCode::OK, &json!({ "collections": list }))
}

/// The configured collection `id` (or alias), or a 404.
#[allow(clippy::result_large_err)]
pub fn find<'a>(g: &'a Gateway, id: &str) -> Result<&'a crate::config::Collection, Response> {
    g.config
        .collections
        .iter()
        .find(|c| c.id == id || c.alias == id)
        .ok_or_else(|| error(StatusCode::NOT_FOUND, "no such collection", id))
}

async fn collection(State(g): State<Shared>, Path(c): Path<String>) -> Response {
    match find(&g, &c) {
        Ok(c) => taxii(StatusCode::OK, &collection_json(c)),
        Err(r) => r,
    }
}

/// A page read on the blocking pool (sled reads can touch the disk).
async fn read_page(
    g: &Shared,
    c: &str,
    params: &Params,
    id: Option<String>,
) -> Result<Page, Response> {
    let collection = find(g, c)?.id.clone();
    let mut filter = query::filter(params, g.config.max_page)?;
    if let Some(id) = id {
        filter.ids = Some(vec![id]);
    }
    let g = g.clone();
    tokio::task::spawn_blocking(move || g.store.page(&collection, &filter))
        .await
        .map_err(|e| {
            error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "read failed",
                &e.to_string(),
            )
        })?
        .map_err(|e| {
            error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "read failed",
                &e.to_string(),
            )
        })
}

/// A page of objects or manifest entries.
#[derive(serde::Serialize)]
struct Listing<T> {
    more: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    next: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    objects: Vec<T>,
}

/// A page of an object's versions.
#[derive(serde::Serialize)]
struct VersionList {
    more: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    next: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    versions: Vec<String>,
}

/// A manifest entry.
#[derive(serde::Serialize)]
struct Entry<'a> {
    id: std::borrow::Cow<'a, str>,
    date_added: String,
    version: String,
    media_type: &'static str,
}

/// Where the next page starts, if there is one.
fn next_of(page: &Page) -> Option<String> {
    page.more
        .then(|| page.records.last().map(|(d, _)| d.to_string()))
        .flatten()
}

/// A paged answer with the date headers of its first and last record.
fn paged(page: &Page, body: &impl serde::Serialize) -> Response {
    let text = match serde_json::to_string(body) {
        Ok(t) => t,
        Err(e) => {
            return error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "encoding failed",
                &e.to_string(),
            );
        }
    };
    let mut r = (
        StatusCode::OK,
        [(header::CONTENT_TYPE, HeaderValue::from_static(TAXII))],
        text,
    )
        .into_response();
    if let (Some((first, _)), Some((last, _))) = (page.records.first(), page.records.last()) {
        let h = r.headers_mut();
        for (name, at) in [
            ("x-taxii-date-added-first", first),
            ("x-taxii-date-added-last", last),
        ] {
            if let Ok(v) = HeaderValue::from_str(&timestamp(*at)) {
                h.insert(name, v);
            }
        }
    }
    r
}

fn records(page: &Page) -> impl Iterator<Item = (u64, Record<'_>)> {
    page.records.iter().filter_map(|(d, v)| {
        serde_json::from_slice::<Record<'_>>(v)
            .ok()
            .map(|r| (*d, r))
    })
}

fn version_of(d: u64, r: &Record<'_>) -> String {
    r.version
        .as_deref()
        .map_or_else(|| timestamp(d), str::to_string)
}

fn envelope(page: &Page) -> Response {
    let body = Listing {
        more: page.more,
        next: next_of(page),
        objects: records(page).map(|(_, r)| r.object).collect(),
    };
    paged(page, &body)
}

async fn objects(
    State(g): State<Shared>,
    Path(c): Path<String>,
    Query(p): Query<Params>,
) -> Response {
    match read_page(&g, &c, &p, None).await {
        Ok(page) => envelope(&page),
        Err(r) => r,
    }
}

async fn object(
    State(g): State<Shared>,
    Path((c, id)): Path<(String, String)>,
    Query(p): Query<Params>,
) -> Response {
    match read_page(&g, &c, &p, Some(id.clone())).await {
        Ok(page) if page.records.is_empty() && !known(&g, &c, &id) => error(
            StatusCode::NOT_FOUND,
            "no such object in this collection",
            &id,
        ),
        Ok(page) => envelope(&page),
        Err(r) => r,
    }
}

fn known(g: &Gateway, c: &str, id: &str) -> bool {
    find(g, c).is_ok_and(|c| g.store.has(&c.id, id).unwrap_or(false))
}

async fn versions(
    State(g): State<Shared>,
    Path((c, id)): Path<(String, String)>,
    Query(mut p): Query<Params>,
) -> Response {
    p.all_versions();
    match read_page(&g, &c, &p, Some(id.clone())).await {
        Ok(page) if page.records.is_empty() && !known(&g, &c, &id) => error(
            StatusCode::NOT_FOUND,
            "no such object in this collection",
            &id,
        ),
        Ok(page) => {
            let body = VersionList {
                more: page.more,
                next: next_of(&page),
                versions: records(&page).map(|(d, r)| version_of(d, &r)).collect(),
            };
            paged(&page, &body)
        }
        Err(r) => r,
    }
}

async fn manifest(
    State(g): State<Shared>,
    Path(c): Path<String>,
    Query(p): Query<Params>,
) -> Response {
    match read_page(&g, &c, &p, None).await {
        Ok(page) => {
            let body = Listing {
                more: page.more,
                next: next_of(&page),
                objects: records(&page)
                    .map(|(d, r)| Entry {
                        date_added: timestamp(d),
                        version: version_of(d, &r),
                        id: r.id,
                        media_type: STIX,
                    })
                    .collect(),
            };
            paged(&page, &body)
        }
        Err(r) => r,
    }
}

async fn status(State(g): State<Shared>, Path(id): Path<String>) -> Response {
    match g.store.status(&id) {
        Ok(Some(s)) => taxii(StatusCode::OK, &s),
        Ok(None) => error(StatusCode::NOT_FOUND, "no such status", &id),
        Err(e) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "read failed",
            &e.to_string(),
        ),
    }
}
