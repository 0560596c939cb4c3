//! The error type of the command line's library half.

/// What can go wrong in the demo, the bench, or reading and writing files.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Talking to the broker failed.
    #[error(transparent)]
    Client(#[from] ewx_client::Error),
    /// The embedded broker (or a store copy) failed.
    #[error(transparent)]
    Broker(#[from] ewx_broker::Error),
    /// A key or roster file, or the transport.
    #[error(transparent)]
    Net(#[from] ewx_net::Error),
    /// Sealing, signing or decoding failed.
    #[error(transparent)]
    Proto(#[from] ewx_proto::Error),
    /// A file could not be read or written.
    #[error("{path}: {reason}")]
    Io {
        /// The file.
        path: std::path::PathBuf,
        /// The I/O error.
        reason: String,
    },
    /// A file's content is wrong (with what to do about it), or something the command
    /// looked for is not there.
    #[error("{0}")]
    File(String),
    /// Something the demo or the bench relies on did not happen.
    #[error("unexpected: {0}")]
    Unexpected(String),
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
