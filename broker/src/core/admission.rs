//! Admission: whether the broker accepts a publish, a receipt, a witness's co-signature
//! or a roster update. Each check has its own reason code and a sentence naming what was
//! wrong; the caller logs the rejection and, where DESIGN.md says so, audits it.

use ewx_proto::checkpoint::{Cosignature, SignedCheckpoint};
use ewx_proto::frame::RejectReason;
use ewx_proto::receipt::Receipt;
use ewx_proto::{Envelope, NodeId, Roster, SignedRoster};

use super::{Rejection, reject};

/// The acceptance checks before the signature: size and decoding, and that the sender
/// is the authenticated node. Then [`check_signed`] (the verifier checks the signature
/// and publish rights in between, batched across connections).
///
/// # Errors
/// The first check that fails, as a [`Rejection`].
pub fn check_envelope(
    node: &NodeId,
    bytes: &[u8],
    max_bytes: usize,
) -> Result<Envelope, Rejection> {
    let env = Envelope::decode(bytes, max_bytes).map_err(reject)?;
    let h = env.header();
    if &h.sender != node {
        return Err(Rejection::new(
            RejectReason::WrongSender,
            format!(
                "envelope is signed as {} but the connection is {node}",
                h.sender
            ),
        ));
    }
    Ok(env)
}

/// The acceptance checks after the signature (all but the sequence number, which the
/// writer checks in commit order): clock skew, and that every listed recipient may read
/// the labels.
///
/// # Errors
/// The first check that fails, as a [`Rejection`].
pub fn check_signed(
    env: &Envelope,
    roster: &Roster,
    now_ms: u64,
    max_skew_ms: u64,
) -> Result<(), Rejection> {
    let h = env.header();
    h.check_skew(now_ms, max_skew_ms).map_err(reject)?;
    h.check_recipients(roster)
        .map_err(|e| Rejection::new(RejectReason::RecipientNotPermitted, e.to_string()))
}

/// A receipt's own checks, before the message it names is looked up: it is signed by the
/// connection's node, and the signature verifies under the roster.
///
/// # Errors
/// `WrongSender` or `BadSignature`.
pub fn check_receipt(receipt: &Receipt, node: &NodeId, roster: &Roster) -> Result<(), Rejection> {
    if &receipt.by != node {
        return Err(Rejection::new(
            RejectReason::WrongSender,
            format!("receipt signed as {} on a connection of {node}", receipt.by),
        ));
    }
    receipt
        .verify(roster)
        .map_err(|e| Rejection::new(RejectReason::BadSignature, e.to_string()))
}

/// A receipt against the stored message it names (`None`: no such message): the hash
/// matches and its signer was a recipient. Returns the message's sender, to whom the
/// receipt is forwarded.
///
/// # Errors
/// `Malformed` for an unknown message or a receipt that does not fit it, `Internal` if
/// the stored envelope does not decode.
pub fn receipt_target(receipt: &Receipt, stored: Option<&[u8]>) -> Result<NodeId, Rejection> {
    let Some(bytes) = stored else {
        return Err(Rejection::new(
            RejectReason::Malformed,
            format!("no stored message {}", receipt.id),
        ));
    };
    let env = Envelope::decode(bytes, usize::MAX)
        .map_err(|e| Rejection::new(RejectReason::Internal, e.to_string()))?;
    if env.hash() != receipt.envelope_hash || env.header().wrapped_for(&receipt.by).is_none() {
        return Err(Rejection::new(
            RejectReason::Malformed,
            "receipt does not match the stored message or its recipients".into(),
        ));
    }
    Ok(env.header().sender.clone())
}

/// A witness's co-signature of the stored checkpoint of `size` entries (`None`: there
/// is none): made by the connection's node, and valid under the roster.
///
/// # Errors
/// `WrongSender`, `Malformed` for an unknown checkpoint, `BadSignature`, or `Internal`
/// if the stored checkpoint does not decode.
pub fn check_cosign(
    cosignature: &Cosignature,
    node: &NodeId,
    size: u64,
    stored: Option<&[u8]>,
    roster: &Roster,
) -> Result<(), Rejection> {
    if &cosignature.witness != node {
        return Err(Rejection::new(
            RejectReason::WrongSender,
            format!(
                "co-signature of {} on a connection of {node}",
                cosignature.witness
            ),
        ));
    }
    let Some(bytes) = stored else {
        return Err(Rejection::new(
            RejectReason::Malformed,
            format!("no checkpoint of size {size}"),
        ));
    };
    let mut cp = SignedCheckpoint::decode(bytes)
        .map_err(|e| Rejection::new(RejectReason::Internal, e.to_string()))?;
    cp.cosignatures = vec![cosignature.clone()];
    cp.verify_cosignatures(roster)
        .map(|_| ())
        .map_err(|e| Rejection::new(RejectReason::BadSignature, e.to_string()))
}

/// A roster update: it decodes and verifies as an update of the roster in force (council
/// threshold, no rollback). `None` if it is the roster in force already.
///
/// # Errors
/// `BadRoster` naming the failure.
pub fn check_roster_update(bytes: &[u8], current: &Roster) -> Result<Option<Roster>, Rejection> {
    let bad = |e: ewx_proto::Error| Rejection::new(RejectReason::BadRoster, e.to_string());
    let new = SignedRoster::decode(bytes)
        .and_then(|s| s.verify_update(current))
        .map_err(bad)?;
    Ok((new.hash() != current.hash()).then_some(new))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::fixture::{NOW, roster, warning};
    use ewx_proto::Digest32;
    use ewx_proto::checkpoint::Checkpoint;
    use ewx_testkit::{Network, id, keys};

    #[test]
    fn publishes_are_checked_in_order_each_with_its_reason() {
        let roster = roster();
        let env = warning(&roster, 1);
        let bytes = env.encode().unwrap();
        assert!(check_envelope(&id("UA"), &bytes, 1 << 20).is_ok());
        let wrong = check_envelope(&id("PL"), &bytes, 1 << 20).unwrap_err();
        assert_eq!(wrong.reason, RejectReason::WrongSender);
        let big = check_envelope(&id("UA"), &bytes, 100).unwrap_err();
        assert_eq!(big.reason, RejectReason::TooLarge);
        assert!(check_signed(&env, &roster, NOW, 1000).is_ok());
        let skewed = check_signed(&env, &roster, NOW + 3_600_000, 1000).unwrap_err();
        assert_eq!(skewed.reason, RejectReason::ClockSkew);
    }

    #[test]
    fn receipts_must_be_the_recipients_own_and_fit_the_message() {
        let roster = roster();
        let env = warning(&roster, 1);
        let stored = env.encode().unwrap();
        let r = Receipt::sign(&keys("PL"), env.header().id, env.hash(), NOW);
        check_receipt(&r, &id("PL"), &roster).unwrap();
        assert_eq!(receipt_target(&r, Some(&stored)).unwrap(), id("UA"));
        let e = check_receipt(&r, &id("GB"), &roster).unwrap_err();
        assert_eq!(e.reason, RejectReason::WrongSender);
        let mut forged = r.clone();
        forged.time_ms += 1;
        let e = check_receipt(&forged, &id("PL"), &roster).unwrap_err();
        assert_eq!(e.reason, RejectReason::BadSignature);
        assert_eq!(
            receipt_target(&r, None).unwrap_err().reason,
            RejectReason::Malformed
        );
        // JP was no recipient of a CORE warning: its receipt does not fit
        let jp = Receipt::sign(&keys("JP"), env.header().id, env.hash(), NOW);
        let e = receipt_target(&jp, Some(&stored)).unwrap_err();
        assert_eq!(e.reason, RejectReason::Malformed);
    }

    #[test]
    fn cosignatures_and_roster_updates_are_verified() {
        let roster = roster();
        let cp = Checkpoint {
            size: 5,
            root: Digest32::default(),
            prev: Digest32::default(),
            time_ms: NOW,
        };
        let signed = SignedCheckpoint::sign(&cp, &keys("BROKER")).unwrap();
        let stored = signed.encode().unwrap();
        let c = signed.cosign(&keys("PL"));
        check_cosign(&c, &id("PL"), 5, Some(&stored), &roster).unwrap();
        let e = check_cosign(&c, &id("UA"), 5, Some(&stored), &roster).unwrap_err();
        assert_eq!(e.reason, RejectReason::WrongSender);
        let e = check_cosign(&c, &id("PL"), 6, None, &roster).unwrap_err();
        assert_eq!(e.reason, RejectReason::Malformed);
        let mut bad = c.clone();
        bad.signature.0[0] ^= 1;
        let e = check_cosign(&bad, &id("PL"), 5, Some(&stored), &roster).unwrap_err();
        assert_eq!(e.reason, RejectReason::BadSignature);

        let same = roster.signed().encode().unwrap();
        assert!(check_roster_update(&same, &roster).unwrap().is_none());
        let v2 = Network::compact().version(2).revoke(&["KR"]).signed();
        let new = check_roster_update(&v2.encode().unwrap(), &roster)
            .unwrap()
            .unwrap();
        assert_eq!(new.version(), 2);
        let one_signer = Network::compact().version(3).signed_by(&[0]);
        let e = check_roster_update(&one_signer.encode().unwrap(), &roster).unwrap_err();
        assert_eq!(e.reason, RejectReason::BadRoster);
        let e = check_roster_update(b"junk", &roster).unwrap_err();
        assert_eq!(e.reason, RejectReason::BadRoster);
    }
}
