//! A publish: admission before the signature, the signature and publish rights (batched
//! across connections by the verifier), admission after it, then the writer — answered
//! with `PublishAck` only once the envelope and its audit entry are durable.

use ewx_proto::frame::Response;

use super::session::{Outcome, Session};
use crate::core::admission::{check_envelope, check_signed};
use crate::core::reject;

impl Session {
    pub(super) async fn publish(&self, bytes: Vec<u8>) -> Outcome {
        let shared = &self.shared;
        let roster = shared.roster.get();
        let limits = &shared.config.limits;
        let env =
            check_envelope(&self.node, &bytes, limits.max_frame_bytes).map_err(|r| (r, None))?;
        let env = shared
            .verifier
            .verify(env, roster.clone())
            .await
            .map_err(|e| (reject(e), None))?;
        check_signed(
            &env,
            &roster,
            shared.config.clock.now_ms(),
            limits.max_clock_skew_ms,
        )
        .map_err(|r| (r, None))?;
        let (id, hash) = (env.header().id, env.hash());
        match shared.writer.publish(env, bytes).await {
            Ok(log_index) => Ok(Response::PublishAck { id, log_index }),
            Err(r) => Err((r, Some(hash))),
        }
    }
}
