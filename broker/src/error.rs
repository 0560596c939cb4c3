//! The broker library's error type.

use std::path::PathBuf;

/// What can stop the broker from starting or running.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The configuration file or a flag is wrong.
    #[error("config: {0}")]
    Config(String),
    /// A file could not be read or written.
    #[error("{path}: {reason}")]
    File {
        /// The file.
        path: PathBuf,
        /// The I/O error (in the message, so not also a source: shown once).
        reason: std::io::Error,
    },
    /// TLS, QUIC, framing, or a key or roster file.
    #[error(transparent)]
    Net(#[from] ewx_net::Error),
    /// A protocol-level check failed (bad roster, bad key, …).
    #[error(transparent)]
    Proto(#[from] ewx_proto::Error),
    /// The store could not be opened or written.
    #[error("store: {0}")]
    Store(String),
    /// The store is corrupt or from an unknown schema: the broker refuses to start.
    #[error("store {path} is unusable: {reason}")]
    CorruptStore {
        /// The data directory.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// TLS or QUIC setup failed.
    #[error("transport: {0}")]
    Transport(String),
}

impl From<sled::Error> for Error {
    fn from(e: sled::Error) -> Self {
        Error::Store(e.to_string())
    }
}

/// Shorthand.
pub type Result<T, E = Error> = std::result::Result<T, E>;
