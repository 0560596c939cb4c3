//! The gateway's error type.

/// What can go wrong running a TAXII gateway.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The gateway's configuration is wrong (says what to change).
    #[error("taxii config: {0}")]
    Config(String),
    /// The local store failed.
    #[error("taxii store: {0}")]
    Store(#[from] sled::Error),
    /// Talking to the broker failed.
    #[error(transparent)]
    Client(#[from] ewx_client::Error),
    /// TLS set-up or a listener failed.
    #[error(transparent)]
    Net(#[from] ewx_net::Error),
    /// The listen address could not be bound.
    #[error("taxii listen {addr}: {source}")]
    Bind {
        /// The address.
        addr: std::net::SocketAddr,
        /// Why.
        source: std::io::Error,
    },
}

/// Shorthand.
pub type Result<T, E = Error> = std::result::Result<T, E>;
