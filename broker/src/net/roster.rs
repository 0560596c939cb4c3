//! The roster in force: the hello exchange (a client with an older roster is sent the
//! current one) and updates (verified against the roster in force, persisted and logged,
//! then revoked nodes are disconnected and everyone is sent the new roster).

use std::sync::Arc;

use ewx_proto::audit::Event;
use ewx_proto::frame::{Push, RejectReason, Response};

use super::Shared;
use super::session::{Outcome, Session};
use crate::core::Rejection;
use crate::core::admission::check_roster_update;

impl Session {
    pub(super) fn hello(&self, client_version: u64) -> Response {
        let roster = self.shared.roster.get();
        let newer = (client_version < roster.version())
            .then(|| roster.signed().encode().ok())
            .flatten();
        Response::Welcome {
            node: self.node.clone(),
            roster_version: roster.version(),
            roster: newer,
        }
    }

    pub(super) async fn update_roster(&self, bytes: &[u8]) -> Outcome {
        self.shared
            .update_roster(bytes)
            .await
            .map(|_| Response::Done)
            .map_err(|r| (r, None))
    }
}

impl Shared {
    /// Verify and install a newer roster, log it, disconnect revoked nodes, tell everyone.
    /// Updates are serialised, so a slower, older update can never overwrite a newer one.
    ///
    /// # Errors
    /// A `BadRoster` rejection if it does not verify against the roster in force.
    pub(crate) async fn update_roster(self: &Arc<Self>, bytes: &[u8]) -> Result<u64, Rejection> {
        let _one_at_a_time = self.roster_update.lock().await;
        let current = self.roster.get();
        let Some(new) = check_roster_update(bytes, &current)? else {
            return Ok(current.version());
        };
        let (version, hash) = (new.version(), new.hash());
        let event = Event::RosterChanged { version, hash };
        let new = Arc::new(new);
        if !self.writer.roster(new.clone(), event).await {
            return Err(Rejection::new(
                RejectReason::StorageFull,
                "cannot store the roster".into(),
            ));
        }
        self.roster.set(new);
        tracing::info!(version, "roster updated");
        self.disconnect_inactive();
        self.push(
            None,
            Push::Roster {
                roster: bytes.to_vec(),
            },
        );
        Ok(version)
    }
}
