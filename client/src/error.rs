//! The client library's error type.

use ewx_proto::frame::RejectReason;

/// What can go wrong talking to a broker.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The connection could not be made or was lost.
    #[error("connection to {addr}: {reason}")]
    Connect {
        /// Broker address.
        addr: std::net::SocketAddr,
        /// Why.
        reason: String,
    },
    /// The broker refused a request.
    #[error("broker rejected the request ({reason:?}): {detail}")]
    Rejected {
        /// Which check failed.
        reason: RejectReason,
        /// The broker's explanation.
        detail: String,
    },
    /// The broker answered something this client did not expect.
    #[error("unexpected answer from the broker: {0}")]
    Unexpected(String),
    /// Sealing, opening or decoding failed.
    #[error(transparent)]
    Proto(#[from] ewx_proto::Error),
    /// Transport setup, framing, or a key or roster file.
    #[error(transparent)]
    Net(#[from] ewx_net::Error),
    /// A delivered message failed verification or decryption (tampered, or not for us).
    #[error("message at log index {log_index} could not be opened: {reason}")]
    Undeliverable {
        /// Its log index.
        log_index: u64,
        /// Why.
        reason: String,
    },
    /// Automatic acks or receipts could not be sent (the connection is down).
    #[error("acknowledgements or receipts could not be sent: {0}")]
    AckPending(String),
    /// An audited log is unsound: the first bad index and why.
    #[error("{0}")]
    Unsound(ewx_proto::audit::Failure),
    /// What an audit looked for is not in the log (a message, a checkpoint covering it,
    /// an envelope pruned by retention).
    #[error("audit: {0}")]
    Audit(String),
    /// A publish was sent but no answer came back (the connection broke and stayed
    /// broken): the broker may have stored it.
    #[error(
        "no answer to the publish ({reason}); it may be stored: sending the same envelope again is safe (a stored one gets its original log index)"
    )]
    Unconfirmed {
        /// What broke.
        reason: String,
    },
    /// The roster names no active broker to pin.
    #[error("the roster names no active broker node")]
    NoBroker,
}

/// Shorthand.
pub type Result<T, E = Error> = std::result::Result<T, E>;
