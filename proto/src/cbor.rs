//! Strict CBOR helpers: every decoder in the crate goes through [`decode`], which checks
//! the size before touching the bytes and refuses trailing data, so no structure has two
//! encodings that differ only by junk appended after it.

use serde::{Serialize, de::DeserializeOwned};

use crate::error::{Error, Result};

/// Nesting deeper than this is refused (our structures nest fewer than 8 levels).
const MAX_DEPTH: usize = 32;

/// Encode a value as CBOR. Encoding our own types cannot fail except on a bug, which is
/// reported as `Malformed` rather than a panic.
pub fn encode<T: Serialize>(what: &'static str, value: &T) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(256);
    ciborium::into_writer(value, &mut out).map_err(|e| Error::Malformed {
        what,
        reason: format!("cannot encode: {e}"),
    })?;
    Ok(out)
}

/// Decode exactly one CBOR value of type `T` from `bytes`, which must not exceed `max`.
///
/// # Errors
/// `TooLarge` before decoding, `Malformed` on bad CBOR or a shape mismatch,
/// `TrailingBytes` if anything follows the value.
pub fn decode<T: DeserializeOwned>(what: &'static str, bytes: &[u8], max: usize) -> Result<T> {
    if bytes.len() > max {
        return Err(Error::TooLarge {
            what,
            size: bytes.len() as u64,
            max: max as u64,
        });
    }
    let mut rest = bytes;
    let value = ciborium::de::from_reader_with_recursion_limit(&mut rest, MAX_DEPTH).map_err(
        |e: ciborium::de::Error<std::io::Error>| Error::Malformed {
            what,
            reason: describe(&e),
        },
    )?;
    if !rest.is_empty() {
        return Err(Error::TrailingBytes {
            what,
            extra: rest.len(),
        });
    }
    Ok(value)
}

/// [`decode`] for a signed body: also refuse any encoding other than the one [`encode`]
/// makes (shortest integers and lengths, definite lengths, fields in order), so every
/// signed structure has exactly one byte form and one hash.
///
/// # Errors
/// As [`decode`], and `Malformed` for a non-canonical encoding.
pub fn decode_canonical<T: DeserializeOwned + Serialize>(
    what: &'static str,
    bytes: &[u8],
    max: usize,
) -> Result<T> {
    let value: T = decode(what, bytes, max)?;
    if encode(what, &value)? != bytes {
        return Err(Error::Malformed {
            what,
            reason: "not canonical CBOR (shortest form, definite lengths, fields in order)".into(),
        });
    }
    Ok(value)
}

fn describe(e: &ciborium::de::Error<std::io::Error>) -> String {
    use ciborium::de::Error as E;
    match e {
        E::Io(io) if io.kind() == std::io::ErrorKind::UnexpectedEof => "truncated".to_owned(),
        E::Io(io) => format!("read error: {io}"),
        E::Syntax(at) => format!("cbor syntax error at byte {at}"),
        E::Semantic(_, msg) => msg.clone(),
        E::RecursionLimitExceeded => format!("nested deeper than {MAX_DEPTH} levels"),
    }
}

/// `u64` length prefix used in every signed message, so that two fields can never be
/// re-split into a different pair with the same concatenation.
pub(crate) fn len_prefix(len: usize) -> [u8; 8] {
    (len as u64).to_be_bytes()
}

/// The bytes a signature covers: `domain ‖ len(body) ‖ body ‖ tail`. The domain tag keeps a
/// signature over one kind of object from ever verifying as another.
pub(crate) fn signed_bytes(domain: &[u8], body: &[u8], tail: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(domain.len() + 8 + body.len() + tail.len());
    m.extend_from_slice(domain);
    m.extend_from_slice(&len_prefix(body.len()));
    m.extend_from_slice(body);
    m.extend_from_slice(tail);
    m
}
