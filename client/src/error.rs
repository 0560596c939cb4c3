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
    /// Transport setup or framing failed.
    #[error(transparent)]
    Transport(#[from] ewx_broker::Error),
    /// A delivered message failed verification or decryption (tampered, or not for us).
    #[error("message at log index {log_index} could not be opened: {reason}")]
    Undeliverable {
        /// Its log index.
        log_index: u64,
        /// Why.
        reason: String,
    },
    /// Automatic acks could not be sent (the connection is down).
    #[error("acknowledgements could not be sent: {0}")]
    AckPending(String),
    /// A file could not be read or written.
    #[error("{path}: {reason}")]
    Io {
        /// The file.
        path: std::path::PathBuf,
        /// The I/O error.
        reason: String,
    },
    /// A file's content is wrong (with what to do about it).
    #[error("{0}")]
    File(String),
    /// The roster names no active broker to pin.
    #[error("the roster names no active broker node")]
    NoBroker,
}

impl Error {
    /// An I/O error on `path`.
    pub fn io(path: &std::path::Path, e: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            reason: e.to_string(),
        }
    }
}

/// Shorthand.
pub type Result<T, E = Error> = std::result::Result<T, E>;
