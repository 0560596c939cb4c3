//! The error type of the IO half of the protocol.

use std::path::PathBuf;

/// What can go wrong setting up TLS, moving frames or reading key and roster files.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// TLS or QUIC setup failed, or a stream broke or was too slow.
    #[error("transport: {0}")]
    Transport(String),
    /// A frame, key or roster was malformed, too large or did not verify.
    #[error(transparent)]
    Proto(#[from] ewx_proto::Error),
    /// A file could not be read.
    #[error("{path}: {source}")]
    File {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A secret key file is readable by group or others.
    #[error(
        "{path}: secret key file is readable by group or others (mode {mode:o}); run: chmod 600 {path}"
    )]
    KeyFileMode {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// A key or roster file's content is wrong.
    #[error("{path}: {reason}")]
    BadFile {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
}

/// Shorthand.
pub type Result<T, E = Error> = std::result::Result<T, E>;
