//! Files the CLI reads and writes: secret key files (created 0600, refused if readable by
//! others), public key files, signed rosters. Every error names the file and what to do.

use std::io::Write;
use std::path::Path;

use ewx_proto::keys::{KemPublic, SignPublic, parse_public};
use ewx_proto::{NodeId, NodeKeys, Roster, SignedRoster};

use crate::error::{Error, Result};

/// Write a secret file with mode 0600 from the start (never readable by others, not
/// even briefly); refuses to overwrite an existing file.
///
/// # Errors
/// `Io` naming the file.
pub fn write_secret(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(path).map_err(|e| Error::io(path, e))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        f.set_permissions(std::fs::Permissions::from_mode(0o600))
            .map_err(|e| Error::io(path, e))?;
    }
    f.write_all(bytes)
        .and_then(|()| f.sync_all())
        .map_err(|e| Error::io(path, e))
}

/// Write a public file.
///
/// # Errors
/// `Io` naming the file.
pub fn write_public(path: &Path, bytes: &[u8]) -> Result<()> {
    std::fs::write(path, bytes).map_err(|e| Error::io(path, e))
}

/// Read a secret key file (refused if group or others can read it).
///
/// # Errors
/// `Io`, or `File` saying what is wrong and what to do.
pub fn read_keys(path: &Path) -> Result<NodeKeys> {
    ewx_broker::config::read_key_file(path).map_err(|e| Error::File(e.to_string()))
}

/// Text of a public key file: node name and both public keys, with the key id.
pub fn public_text(k: &NodeKeys) -> String {
    format!(
        "# ewx public keys of {node} (key id {id}); give this file to the roster council\n\
         node {node}\n{}\n{}\n",
        k.sign_public().to_text(),
        k.kem_public().to_text(),
        node = k.node,
        id = k.sign_public().key_id(),
    )
}

/// Read a public key file written by `ewx keygen`.
///
/// # Errors
/// `File` naming the file and the problem.
pub fn read_public(path: &Path) -> Result<(NodeId, SignPublic, KemPublic)> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let bad = |why: String| Error::File(format!("{}: {why}", path.display()));
    let (mut node, mut sign, mut kem) = (None, None, None);
    for line in text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
    {
        if let Some(n) = line.strip_prefix("node ") {
            node = Some(NodeId::new(n.trim()).map_err(|e| bad(e.to_string()))?);
        } else if line.starts_with("ed25519:") {
            sign = Some(SignPublic(
                parse_public("ed25519", line).map_err(|e| bad(e.to_string()))?,
            ));
        } else if line.starts_with("x25519:") {
            kem = Some(KemPublic(
                parse_public("x25519", line).map_err(|e| bad(e.to_string()))?,
            ));
        } else {
            return Err(bad(format!("unexpected line {line:?}")));
        }
    }
    match (node, sign, kem) {
        (Some(n), Some(s), Some(k)) => Ok((n, s, k)),
        _ => Err(bad("needs a 'node' line, an 'ed25519:' key and an 'x25519:' key (as written by ewx keygen)".into())),
    }
}

/// Read a roster file without checking signatures (drafts are edited unsigned).
///
/// # Errors
/// `Io` or `File`.
pub fn read_roster_draft(path: &Path) -> Result<SignedRoster> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    SignedRoster::decode(&bytes)
        .map_err(|e| Error::File(format!("{}: not a roster file: {e}", path.display())))
}

/// Read and verify a signed roster file (trust anchored in its council: the operator's
/// own file).
///
/// # Errors
/// `Io` or `File` with the verification failure.
pub fn read_roster(path: &Path) -> Result<Roster> {
    read_roster_draft(path)?
        .verify()
        .map_err(|e| Error::File(format!("{}: roster does not verify: {e}", path.display())))
}
