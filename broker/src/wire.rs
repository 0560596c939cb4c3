//! Frames over QUIC streams: read one length-prefixed CBOR message (refusing an oversize
//! length before allocating, with a deadline against slow senders) and write one.
//! Used by the broker and by the client.

use std::time::Duration;

use ewx_proto::frame::{PREFIX, decode_body, encode_frame};
use serde::{Serialize, de::DeserializeOwned};

use crate::error::{Error, Result};

/// How long a peer may take to send one whole request frame.
pub const FRAME_DEADLINE: Duration = Duration::from_secs(10);

/// Read one frame and decode it. `Ok(None)` if the stream ended cleanly before any byte.
///
/// # Errors
/// `Proto(TooLarge | Malformed | TrailingBytes)` for a bad frame, `Transport` for a
/// broken or too slow stream.
pub async fn read_msg<T: DeserializeOwned>(
    recv: &mut quinn::RecvStream,
    max: usize,
) -> Result<Option<T>> {
    let read = async {
        let mut prefix = [0u8; PREFIX];
        match recv.read_exact(&mut prefix).await {
            Ok(()) => {}
            Err(quinn::ReadExactError::FinishedEarly(0)) => return Ok(None),
            Err(quinn::ReadExactError::FinishedEarly(n)) => {
                return Err(Error::Proto(ewx_proto::Error::Malformed {
                    what: "frame",
                    reason: format!("stream ended after {n} bytes of the length prefix"),
                }));
            }
            Err(quinn::ReadExactError::ReadError(e)) => {
                return Err(Error::Transport(e.to_string()));
            }
        }
        let len = u32::from_be_bytes(prefix) as usize;
        if len > max {
            return Err(Error::Proto(ewx_proto::Error::TooLarge {
                what: "frame",
                size: len as u64,
                max: max as u64,
            }));
        }
        let mut body = vec![0u8; len];
        recv.read_exact(&mut body).await.map_err(|e| match e {
            quinn::ReadExactError::FinishedEarly(n) => Error::Proto(ewx_proto::Error::Malformed {
                what: "frame",
                reason: format!("truncated: {n} of {len} bytes"),
            }),
            quinn::ReadExactError::ReadError(e) => Error::Transport(e.to_string()),
        })?;
        Ok(Some(decode_body(&body, max)?))
    };
    tokio::time::timeout(FRAME_DEADLINE, read)
        .await
        .map_err(|_| {
            Error::Transport(format!(
                "no complete frame within {}s",
                FRAME_DEADLINE.as_secs()
            ))
        })?
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
