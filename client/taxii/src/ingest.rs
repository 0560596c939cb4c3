//! Filling the store: each collection is a durable named subscription of this node
//! (`taxii.<alias>`). A delivery's STIX objects are stored (one atomic write), flushed,
//! and only then acknowledged, so nothing acknowledged is ever missing here; a
//! redelivery after a crash adds nothing (the message is remembered). The first start
//! reads the collection's topic from the earliest retained message; later starts resume.
//! A signed receipt (when asked for) is sent only once the message is stored here.

use std::sync::Arc;

use ewx_client::{Subscription, SubscriptionOptions};
use ewx_proto::Payload;
use ewx_proto::frame::{ExerciseFilter, StartAt};

use crate::Gateway;
use crate::config::Collection;
use crate::error::{Error, Result};
use crate::stix::objects;

/// Open the collection's subscription.
///
/// # Errors
/// `Config` if the broker refuses it (the node's grants), `Client` otherwise.
pub async fn subscribe(g: &Gateway, c: &Collection) -> Result<Subscription> {
    let from = if g.store.started(&c.id)? {
        StartAt::Resume
    } else {
        StartAt::Earliest
    };
    let opts = SubscriptionOptions {
        from,
        filter: ExerciseFilter::All,
        auto_ack: false,
        // receipts are sent once the message is stored here (see `run`)
        auto_receipt: false,
        sealed: false,
    };
    let name = format!("taxii.{}", c.alias);
    let sub = g
        .client
        .subscribe_with(&name, c.topics.clone(), opts)
        .await
        .map_err(|e| match e {
            ewx_client::Error::Rejected { .. } => Error::Config(format!(
                "collection {:?}: the broker refused {name} on {}: {e}",
                c.alias, c.topics
            )),
            e => Error::Client(e),
        })?;
    g.store.mark_started(&c.id)?;
    Ok(sub)
}

/// Take deliveries into the collection until the subscription ends.
///
/// # Errors
/// `Store` if the store fails (nothing of the failed delivery is acknowledged).
pub async fn run(g: Arc<Gateway>, c: Collection, mut sub: Subscription) -> Result<()> {
    while let Some(item) = sub.next().await {
        let d = match item {
            Ok(d) => d,
            Err(e) => {
                tracing::warn!(collection = %c.alias, "a message could not be opened: {e}");
                continue;
            }
        };
        let header = d.envelope.header();
        let stix = match &d.payload {
            Some(Payload::Stix(text)) if c.admits(&header.labels) => Some(text),
            _ => None,
        };
        if let Some(text) = stix {
            match objects(text) {
                Ok((good, refused)) => {
                    for (id, why) in &refused {
                        tracing::warn!(collection = %c.alias, message = %header.id, "object {id:?} left out: {why}");
                    }
                    let store = g.clone();
                    let (col, id, now) = (c.id.clone(), header.id.0, g.clock.now_us());
                    let added = tokio::task::spawn_blocking(move || {
                        store.store.add(&col, Some(&id), &good, now)
                    })
                    .await
                    .map_err(|e| Error::Config(format!("store task: {e}")))??;
                    g.store.flush().await?;
                    tracing::debug!(collection = %c.alias, message = %header.id, added, "stored");
                    // "read": stored, decrypted, verified — only now
                    if header.receipt
                        && let Err(e) = g.client.send_receipt(&d.envelope).await
                    {
                        tracing::warn!(message = %header.id, "receipt not sent: {e}");
                    }
                }
                Err(why) => {
                    tracing::warn!(collection = %c.alias, message = %header.id, "not a STIX bundle: {why}");
                }
            }
        }
        if let Err(e) = sub.ack_delivery(&d).await {
            // not acknowledged: it comes again after a reconnect, and adds nothing then
            tracing::warn!(collection = %c.alias, "ack failed: {e}");
        }
    }
    // the client gave up (the node revoked or removed, the broker closing it for good):
    // serving a store that no longer fills would look healthy and is not
    Err(Error::Config(format!(
        "collection {:?}: the subscription ended (the broker closed this node's connection for good)",
        c.alias
    )))
}
