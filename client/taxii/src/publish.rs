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

/// Object JSON per published bundle at most: an envelope (header, a key wrap per
/// recipient, the sealed bundle) must fit the broker's frame limit.
const BUNDLE_BYTES: usize = ewx_proto::frame::DEFAULT_MAX_FRAME * 3 / 4;

/// The objects in runs that each fit one bundle (an object larger than that goes alone,
/// and the broker says whether it fits).
fn parts(objects: &[crate::stix::StixObject]) -> Vec<&[crate::stix::StixObject]> {
    let mut parts = Vec::new();
    let (mut start, mut bytes) = (0, 0);
    for (i, o) in objects.iter().enumerate() {
        let len = o.json.get().len() + 1;
        if i > start && bytes + len > BUNDLE_BYTES {
            parts.push(&objects[start..i]);
            (start, bytes) = (i, 0);
        }
        bytes += len;
    }
    if start < objects.len() {
        parts.push(&objects[start..]);
    }
    parts
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
        .map(|(id, why)| {
            json!({ "id": id.clone().unwrap_or_default(), "version": timestamp(requested), "message": why })
        })
        .collect();
    let version =
        |o: &crate::stix::StixObject| o.version.clone().unwrap_or_else(|| timestamp(requested));
    let mut successes = Vec::new();
    for part in parts(&good) {
        let draft = Draft {
            topic: publish.topic.clone(),
            precedence: publish.precedence,
            labels: publish.labels.clone(),
            payload: Payload::Stix(bundle(part)),
            seq: 0,
            expires_ms: None,
            receipt: false,
            case: None,
        };
        match g.client.publish(draft).await {
            Ok(ack) => {
                let (store, col, objs) = (g.clone(), collection.id.clone(), part.to_vec());
                let now = g.clock.now_us();
                let added = tokio::task::spawn_blocking(move || {
                    store.store.add(&col, Some(&ack.id.0), &objs, now)
                })
                .await;
                match added {
                    Ok(Ok(_)) => {
                        if let Err(e) = g.store.flush().await {
                            tracing::error!("published as {}, not yet stored here: {e}", ack.id);
                        }
                    }
                    Ok(Err(e)) => tracing::error!("published as {}, not stored here: {e}", ack.id),
                    Err(e) => tracing::error!("published as {}, not stored here: {e}", ack.id),
                }
                tracing::info!(collection = %collection.alias, id = %ack.id, log_index = ack.log_index, objects = part.len(), "published");
                successes.extend(part.iter().map(|o| {
                    json!({ "id": o.id, "version": version(o), "message": format!("published as {}", ack.id) })
                }));
            }
            Err(e) => {
                tracing::warn!(collection = %collection.alias, "publish refused: {e}");
                failures.extend(part.iter().map(
                    |o| json!({ "id": o.id, "version": version(o), "message": e.to_string() }),
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_large_post_goes_out_in_bundles_that_fit_a_frame() {
        let pad = "x".repeat(1000);
        let list: Vec<String> = (0..3000)
            .map(|i| format!(r#"{{"type":"note","id":"note--{i}","content":"{pad}"}}"#))
            .collect();
        let (objs, _) = objects(&format!("{{\"objects\":[{}]}}", list.join(","))).unwrap();
        let split = parts(&objs);
        assert!(split.len() >= 4, "{}", split.len());
        assert_eq!(split.iter().map(|p| p.len()).sum::<usize>(), 3000);
        for p in &split {
            assert!(bundle(p).len() < ewx_proto::frame::DEFAULT_MAX_FRAME * 3 / 4 + 4096);
        }
        assert!(parts(&[]).is_empty());
    }
}
