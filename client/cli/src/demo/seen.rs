//! What each node received during the demo, collected by one task per node from its
//! subscription to everything it may read; guarantors answer Ukraine's consultation
//! request as it arrives.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ewx_client::{Client, Subscription};
use ewx_proto::{Kind, Payload, Precedence};

use super::drafts::consultation_answer;

/// One node's deliveries.
#[derive(Debug, Default, Clone)]
pub(super) struct Seen {
    pub kinds: Vec<Kind>,
    pub core: usize,
    pub exercise: usize,
    pub flash_latency: Option<Duration>,
    pub denied: Vec<String>,
}

/// Every node's deliveries, and when the FLASH warning was sent.
#[derive(Debug, Default, Clone)]
pub(super) struct Board {
    pub seen: Arc<Mutex<BTreeMap<String, Seen>>>,
    pub flash_sent: Arc<Mutex<Option<Instant>>>,
}

impl Board {
    pub fn with<T>(&self, f: impl FnOnce(&mut BTreeMap<String, Seen>) -> T) -> T {
        f(&mut self.seen.lock().unwrap_or_else(|p| p.into_inner()))
    }

    pub fn flash_sent_now(&self) {
        *self.flash_sent.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
    }

    /// Collect `name`'s deliveries until the subscription ends.
    pub async fn collect(self, name: String, client: Client, mut sub: Subscription) {
        while let Some(d) = sub.next().await {
            let Ok(d) = d else { continue };
            let h = d.envelope.header().clone();
            let sent = *self.flash_sent.lock().unwrap_or_else(|p| p.into_inner());
            self.with(|all| {
                let s = all.entry(name.clone()).or_default();
                s.kinds.push(h.kind);
                s.core += usize::from(h.labels.compartments.iter().any(|c| c.as_str() == "CORE"));
                s.exercise += usize::from(h.labels.exercise);
                if h.precedence == Precedence::Flash {
                    s.flash_latency = sent.map(|t| t.elapsed());
                }
            });
            // guarantors answer Ukraine's consultation request
            if let (Some(Payload::ConsultationRequest(req)), true) =
                (d.payload.as_ref(), name != "UA")
            {
                if let Ok(answer) = consultation_answer(&name, req) {
                    let _ = client.publish(answer).await;
                }
            }
        }
    }
}
