//! Who may use the gateway: HTTP Basic users from an owner-only `user:password` file, or
//! a bearer token from an owner-only file (decoded by the `headers` crate; compared in
//! constant time). Without either the gateway serves loopback only.

use std::path::Path;

use axum::http::HeaderMap;
use headers::authorization::{Basic, Bearer};
use headers::{Authorization, HeaderMapExt};

use crate::config::Auth;
use crate::error::{Error, Result};

/// The credentials the gateway accepts.
#[derive(Debug, Default)]
pub struct Keys {
    users: Vec<(String, String)>,
    token: Option<String>,
}

fn secret(path: &Path, what: &str) -> Result<String> {
    ewx_net::files::owner_only(path).map_err(|e| Error::Config(format!("{what}: {e}")))?;
    std::fs::read_to_string(path)
        .map_err(|e| Error::Config(format!("{what} {}: {e}", path.display())))
}

impl Keys {
    /// Read the configured files.
    ///
    /// # Errors
    /// `Config` for a file that is missing, open to others, malformed or empty.
    pub fn load(auth: &Auth) -> Result<Self> {
        let mut keys = Keys::default();
        if let Some(path) = &auth.users_file {
            for (n, line) in secret(path, "auth.users_file")?.lines().enumerate() {
                let line = line.trim();
                if line.is_empty() || line.starts_with('#') {
                    continue;
                }
                match line.split_once(':') {
                    Some((u, p)) if !u.is_empty() && p.len() >= 12 => {
                        keys.users.push((u.to_string(), p.to_string()));
                    }
                    _ => {
                        return Err(Error::Config(format!(
                            "auth.users_file {} line {}: write user:password, the password at least 12 characters",
                            path.display(),
                            n + 1
                        )));
                    }
                }
            }
            if keys.users.is_empty() {
                return Err(Error::Config(format!(
                    "auth.users_file {}: no user in it",
                    path.display()
                )));
            }
        }
        if let Some(path) = &auth.token_file {
            let token = secret(path, "auth.token_file")?.trim().to_string();
            if token.len() < 16 {
                return Err(Error::Config(format!(
                    "auth.token_file {}: the token must be at least 16 characters",
                    path.display()
                )));
            }
            keys.token = Some(token);
        }
        Ok(keys)
    }

    /// Is anything required?
    pub fn required(&self) -> bool {
        !self.users.is_empty() || self.token.is_some()
    }

    /// Do these headers carry an accepted credential (or is none required)?
    pub fn admit(&self, headers: &HeaderMap) -> bool {
        if !self.required() {
            return true;
        }
        if let Some(Authorization(basic)) = headers.typed_get::<Authorization<Basic>>() {
            return self.users.iter().any(|(u, p)| {
                ewx_net::https::same_secret(u.as_bytes(), basic.username().as_bytes())
                    & ewx_net::https::same_secret(p.as_bytes(), basic.password().as_bytes())
            });
        }
        if let (Some(token), Some(Authorization(bearer))) =
            (&self.token, headers.typed_get::<Authorization<Bearer>>())
        {
            return ewx_net::https::same_secret(token.as_bytes(), bearer.token().as_bytes());
        }
        false
    }
}
