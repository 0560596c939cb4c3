//! A receipt: signed by this connection's node, for a stored message it was a recipient
//! of; logged once per (message, recipient) and forwarded to the message's sender (by the
//! writer once logged: in a cluster, by whichever replica the sender is connected to).

use ewx_proto::frame::{RejectReason, Response};
use ewx_proto::receipt::Receipt;

use super::session::{Outcome, Session};
use crate::core::Rejection;
use crate::core::admission::{check_receipt, receipt_target};

impl Session {
    pub(super) async fn receipt(&self, r: Receipt) -> Outcome {
        let shared = &self.shared;
        let refused = |rej: Rejection| (rej, None);
        check_receipt(&r, &self.node, &shared.roster.get()).map_err(refused)?;
        let stored = shared
            .log
            .index_of(&r.id)
            .and_then(|i| i.map(|i| shared.log.message(i)).transpose())
            .map_err(|e| refused(Rejection::new(RejectReason::Internal, e.to_string())))?
            .flatten();
        receipt_target(&r, stored.as_deref()).map_err(refused)?;
        // `false`: a duplicate, logged and forwarded once already
        shared.writer.receipt(r).await.map_err(refused)?;
        Ok(Response::Done)
    }
}
