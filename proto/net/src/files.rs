//! Key and roster files as every node reads them: a secret key file is refused if group
//! or others may read it, a roster file must decode and verify under its own council.
//! Every error names the file and what is wrong.

use std::path::Path;

use ewx_proto::{NodeKeys, Roster, SignedRoster};

use crate::error::{Error, Result};

fn read(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|source| Error::File {
        path: path.into(),
        source,
    })
}

fn bad(path: &Path, reason: String) -> Error {
    Error::BadFile {
        path: path.into(),
        reason,
    }
}

/// Refuse a secret file (a key, a token) that group or others can read.
///
/// # Errors
/// `File` if it cannot be read, `KeyFileMode` if it is open to others.
pub fn owner_only(path: &Path) -> Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let meta = std::fs::metadata(path).map_err(|source| Error::File {
            path: path.into(),
            source,
        })?;
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(Error::KeyFileMode {
                path: path.into(),
                mode,
            });
        }
    }
    Ok(())
}

/// Read a secret key file (`ewx-secret-key v1`), refusing one readable by group or others.
///
/// # Errors
/// `File`, `KeyFileMode`, or `BadFile` for a malformed file.
pub fn read_keys(path: &Path) -> Result<NodeKeys> {
    owner_only(path)?;
    let text = String::from_utf8(read(path)?)
        .map_err(|_| bad(path, "a secret key file is UTF-8 text".into()))?;
    NodeKeys::from_secret_file(&text).map_err(|e| bad(path, e.to_string()))
}

/// Read a roster file without checking its signatures (drafts are edited unsigned).
///
/// # Errors
/// `File`, or `BadFile` if it is not a roster.
pub fn read_signed_roster(path: &Path) -> Result<SignedRoster> {
    SignedRoster::decode(&read(path)?).map_err(|e| bad(path, format!("not a roster file: {e}")))
}

/// Read and verify a signed roster file (trust anchored in its council: the operator's
/// own file).
///
/// # Errors
/// `File`, or `BadFile` with the decoding or verification failure.
pub fn read_roster(path: &Path) -> Result<Roster> {
    read_signed_roster(path)?
        .verify()
        .map_err(|e| bad(path, format!("roster does not verify: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ewx_proto::NodeId;

    #[test]
    fn key_files_readable_by_others_are_refused_and_bad_files_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("PL.key");
        let keys = NodeKeys::from_secrets(NodeId::new("PL").unwrap(), [1; 32], [2; 32]);
        std::fs::write(&path, keys.to_secret_file()).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
            let e = read_keys(&path).unwrap_err();
            assert!(matches!(e, Error::KeyFileMode { mode: 0o644, .. }), "{e}");
            assert!(e.to_string().contains("chmod 600"), "{e}");
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        }
        assert_eq!(read_keys(&path).unwrap().sign_public(), keys.sign_public());
        let e = read_keys(&dir.path().join("missing.key")).unwrap_err();
        assert!(matches!(e, Error::File { .. }), "{e}");
        std::fs::write(dir.path().join("r.cbor"), b"not cbor").unwrap();
        let e = read_roster(&dir.path().join("r.cbor")).unwrap_err();
        assert!(e.to_string().contains("r.cbor: not a roster file"), "{e}");
    }
}
