//! Files the CLI reads and writes: secret key files (created 0600, refused if readable by
//! others) and public key files; secret key and roster files are read with
//! [`ewx_net::files`]. Every error names the file and what to do.

use std::io::Write;
use std::path::Path;

use ewx_proto::keys::{KemPublic, SignPublic, parse_public};
use ewx_proto::{NodeId, NodeKeys};

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
