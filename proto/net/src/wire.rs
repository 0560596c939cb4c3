//! Frames over QUIC streams: read one length-prefixed CBOR message (refusing an oversize
//! length before allocating, with a deadline against slow senders) and write one.
//! Used by the broker and by the client.

use std::sync::Arc;
use std::time::Duration;

use ewx_proto::frame::{PREFIX, decode_body, encode_frame};
use serde::{Serialize, de::DeserializeOwned};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::error::{Error, Result};

/// How long a peer may take to send one whole frame once it has started it (and, on a
/// request stream, to start it at all).
pub const FRAME_DEADLINE: Duration = Duration::from_secs(10);

/// Bytes of frame bodies buffered, counted in KiB so a permit count fits in `u32`.
pub fn budget_permits(len: usize) -> u32 {
    u32::try_from(len.div_ceil(1024).max(1)).unwrap_or(u32::MAX)
}

/// How a reader waits for a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wait {
    /// A request stream: the whole frame must arrive within [`FRAME_DEADLINE`].
    Deadline,
    /// A long-lived delivery stream: wait as long as it takes for the next frame to
    /// start, then apply the deadline to the rest.
    Idle,
    /// An answer the reader asked for: the whole frame within this long (a client
    /// waiting on a slow or lossy link must not give up after [`FRAME_DEADLINE`]).
    Within(Duration),
}

fn malformed(reason: String) -> Error {
    Error::Proto(ewx_proto::Error::Malformed {
        what: "frame",
        reason,
    })
}

async fn read_prefix(recv: &mut quinn::RecvStream) -> Result<Option<[u8; PREFIX]>> {
    let mut prefix = [0u8; PREFIX];
    match recv.read_exact(&mut prefix).await {
        Ok(()) => Ok(Some(prefix)),
        Err(quinn::ReadExactError::FinishedEarly(0)) => Ok(None),
        Err(quinn::ReadExactError::FinishedEarly(n)) => Err(malformed(format!(
            "stream ended after {n} bytes of the length prefix"
        ))),
        Err(quinn::ReadExactError::ReadError(e)) => Err(Error::Transport(e.to_string())),
    }
}

async fn within<T>(
    limit: Duration,
    fut: impl std::future::Future<Output = Result<T>>,
) -> Result<T> {
    tokio::time::timeout(limit, fut)
        .await
        .map_err(|_| Error::Transport(format!("no complete frame within {}s", limit.as_secs())))?
}

async fn deadline<T>(fut: impl std::future::Future<Output = Result<T>>) -> Result<T> {
    within(FRAME_DEADLINE, fut).await
}

/// Read one frame body. `Ok(None)` if the stream ended cleanly before any byte. With a
/// `budget`, permits for the body size are taken (waiting if the broker is holding too
/// many request bytes already) before the body is allocated, and returned with it.
///
/// # Errors
/// `Proto(TooLarge | Malformed)` for a bad frame, `Transport` for a broken or too slow
/// stream.
pub async fn read_frame(
    recv: &mut quinn::RecvStream,
    max: usize,
    wait: Wait,
    budget: Option<&Arc<Semaphore>>,
) -> Result<Option<(Vec<u8>, Option<OwnedSemaphorePermit>)>> {
    if let Wait::Within(limit) = wait {
        return within(limit, async {
            Box::pin(read_frame(recv, max, Wait::Idle, budget)).await
        })
        .await;
    }
    let prefix = match wait {
        Wait::Deadline => deadline(read_prefix(recv)).await?,
        Wait::Idle | Wait::Within(_) => read_prefix(recv).await?,
    };
    let Some(prefix) = prefix else {
        return Ok(None);
    };
    let len = u32::from_be_bytes(prefix) as usize;
    if len > max {
        return Err(Error::Proto(ewx_proto::Error::TooLarge {
            what: "frame",
            size: len as u64,
            max: max as u64,
        }));
    }
    let permit = match budget {
        Some(b) => Some(
            b.clone()
                .acquire_many_owned(budget_permits(len))
                .await
                .map_err(|_| Error::Transport("shutting down".into()))?,
        ),
        None => None,
    };
    let body = deadline(async {
        let mut body = vec![0u8; len];
        recv.read_exact(&mut body).await.map_err(|e| match e {
            quinn::ReadExactError::FinishedEarly(n) => {
                malformed(format!("truncated: {n} of {len} bytes"))
            }
            quinn::ReadExactError::ReadError(e) => Error::Transport(e.to_string()),
        })?;
        Ok(body)
    })
    .await?;
    Ok(Some((body, permit)))
}

/// Read one frame and decode it. `Ok(None)` if the stream ended cleanly before any byte.
///
/// # Errors
/// As [`read_frame`], plus `Proto` if the body does not decode as a `T`.
pub async fn read_msg<T: DeserializeOwned>(
    recv: &mut quinn::RecvStream,
    max: usize,
    wait: Wait,
) -> Result<Option<T>> {
    match read_frame(recv, max, wait, None).await? {
        Some((body, _)) => Ok(Some(decode_body(&body, max)?)),
        None => Ok(None),
    }
}

/// Encode and write one frame.
///
/// # Errors
/// `Proto(TooLarge)` if it exceeds `max`, `Transport` if the stream is gone.
pub async fn write_msg<T: Serialize>(
    send: &mut quinn::SendStream,
    msg: &T,
    max: usize,
) -> Result<()> {
    let frame = encode_frame(msg, max)?;
    send.write_all(&frame)
        .await
        .map_err(|e| Error::Transport(e.to_string()))
}
