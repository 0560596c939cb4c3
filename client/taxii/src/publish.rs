//! POST to a writable collection: the objects are published as this node — one STIX
//! bundle, on the collection's topic with its labels and precedence — and, once the
//! broker has logged it, added to the collection. The answer is 202 with a status
//! resource that stays readable at `/api1/status/{id}/`.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::Response;
use ewx_proto::{Draft, Payload};
use serde_json::{Value, json};

use crate::Gateway;
use crate::server::{error, find, taxii};
use crate::stix::{bundle, objects, timestamp};

fn json_body(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<mime::Mime>().ok())
        .is_some_and(|m| {
            matches!(
                m.essence_str(),
                "application/taxii+json" | "application/stix+json" | "application/json"
            )
        })
}

/// `POST …/collections/{c}/objects/`.
pub async fn add_objects(
    State(g): State<Arc<Gateway>>,
    Path(c): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let collection = match find(&g, &c) {
        Ok(c) => c.clone(),
        Err(r) => return r,
    };
    let Some(publish) = &collection.publish else {
        return error(
            StatusCode::FORBIDDEN,
            "read-only collection",
            "this collection has no [collection.publish] in taxii.toml",
        );
    };
    if !json_body(&headers) {
        return error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported media type",
            "send application/taxii+json;version=2.1",
        );
    }
    let text = String::from_utf8_lossy(&body);
    let (good, refused) = match objects(&text) {
        Ok(parsed) => parsed,
        Err(why) => return error(StatusCode::BAD_REQUEST, "not an envelope", &why),
    };
    let requested = g.clock.now_us();
    let mut failures: Vec<Value> = refused
        .iter()
        .map(|(id, why)| json!({ "id": id.clone().unwrap_or_default(), "message": why }))
        .collect();
    let mut successes = Vec::new();
    if !good.is_empty() {
        let draft = Draft {
            topic: publish.topic.clone(),
            precedence: publish.precedence,
            labels: publish.labels.clone(),
            payload: Payload::Stix(bundle(&good)),
            seq: 0,
            expires_ms: None,
            receipt: false,
            case: None,
        };
        match g.client.publish(draft).await {
            Ok(ack) => {
                let added = g
                    .store
                    .add(&collection.id, Some(&ack.id.0), &good, g.clock.now_us())
                    .and(Ok(()));
                if let Err(e) = added.and(g.store.flush().await) {
                    tracing::error!("published as {}, but not stored here: {e}", ack.id);
                }
                tracing::info!(collection = %collection.alias, id = %ack.id, log_index = ack.log_index, objects = good.len(), "published");
                successes = good
                    .iter()
                    .map(|o| json!({ "id": o.id, "version": o.version, "message": format!("published as {}", ack.id) }))
                    .collect();
            }
            Err(e) => {
                tracing::warn!(collection = %collection.alias, "publish refused: {e}");
                failures.extend(good.iter().map(
                    |o| json!({ "id": o.id, "version": o.version, "message": e.to_string() }),
                ));
            }
        }
    }
    let id = crate::config::format_uuid(&rand::random());
    let status = json!({
        "id": id,
        "status": "complete",
        "request_timestamp": timestamp(requested),
        "total_count": successes.len() + failures.len(),
        "success_count": successes.len(),
        "successes": successes,
        "failure_count": failures.len(),
        "failures": failures,
        "pending_count": 0,
        "pendings": [],
    });
    if let Err(e) = g.store.put_status(&id, &status) {
        tracing::warn!("status {id} not kept: {e}");
    }
    taxii(StatusCode::ACCEPTED, &status)
}
