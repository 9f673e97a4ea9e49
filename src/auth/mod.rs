//! Access control: which requests need a bearer token (`AUTH_REQUIRED`), the keys tokens are
//! verified with, and the verdict on one request ([`Gate::admit`]).
//!
//! Off by default, as the original had none: then the service holds no [`Gate`] and a request
//! costs one branch on that. On, each guarded request's JWT (RFC 7519) is verified by
//! `jsonwebtoken`: HS256 with a secret (`AUTH_JWT_SECRET` or `AUTH_JWT_SECRET_FILE`), RS256 and
//! ES256 with the keys of a JWKS file (`AUTH_JWKS_FILE`, read again when it changes); `exp` and
//! `nbf` within `AUTH_LEEWAY_SECONDS`, `aud` and `iss` when configured; then the scope,
//! `records:write` for writes and `records:read` for reads.
//!
//! - `denial`: every way a request is refused, with its status, challenge and label;
//! - `keys`: the secret and the JWKS keys, each pinned to its algorithm; the file watch;
//! - `token`: the `Authorization` header and one token's verification.
//!
//! Knows nothing of HTTP, PostgreSQL or the records: the service asks it about a header's
//! bytes and an [`Access`], and answers the [`Denial`] itself. Must never put a token, a secret
//! or a key into a log line, an error message or `Debug` output.

mod denial;
mod keys;
mod token;

use std::path::PathBuf;
use std::sync::Arc;

pub use denial::{Access, Denial};
pub use keys::{Jwks, KeySet, Secret, JWKS_POLL, MIN_SECRET_BYTES};
pub use token::Claims;

use token::Expect;

/// Which requests need a token (`AUTH_REQUIRED`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Required {
    /// None: the original's behaviour.
    Off,
    /// `POST` and `DELETE` of records.
    Writes,
    /// Every records route, reads included.
    All,
}

/// The access-control settings, validated, with their keys read (`Debug` shows no secret).
#[derive(Debug, Clone)]
pub struct Settings {
    pub required: Required,
    pub secret: Option<Secret>,
    /// `AUTH_JWKS_FILE`, read once to check it; [`Gate::start`] keeps it read.
    pub jwks_file: Option<PathBuf>,
    pub audience: Option<String>,
    pub issuer: Option<String>,
    /// Seconds of clock skew allowed on `exp` and `nbf`.
    pub leeway: u64,
}

impl Settings {
    /// The settings from `get` (the configuration's variables), `leeway` already read: a
    /// problem comes back as (variable, what is wrong), never with a secret in it.
    pub fn read(
        get: impl Fn(&'static str) -> Option<String>,
        leeway: u64,
    ) -> Result<Settings, (&'static str, String)> {
        let given = |name| get(name).filter(|v| !v.trim().is_empty());
        let required = match given("AUTH_REQUIRED").as_deref().map(str::trim) {
            None | Some("off") => Required::Off,
            Some("writes") => Required::Writes,
            Some("all") => Required::All,
            Some(other) => {
                return Err((
                    "AUTH_REQUIRED",
                    format!("{other:?} is not off, writes or all"),
                ))
            }
        };
        let secret = match (given("AUTH_JWT_SECRET"), given("AUTH_JWT_SECRET_FILE")) {
            (Some(_), Some(_)) => {
                return Err((
                    "AUTH_JWT_SECRET",
                    "is set together with AUTH_JWT_SECRET_FILE: set one or the other".into(),
                ))
            }
            (Some(secret), None) => {
                Some(Secret::new(secret.as_bytes()).map_err(|e| ("AUTH_JWT_SECRET", e))?)
            }
            (None, Some(path)) => {
                let path = path.trim();
                let bytes = std::fs::read(path)
                    .map_err(|e| ("AUTH_JWT_SECRET_FILE", format!("cannot read {path}: {e}")))?;
                // One final line end is the file's, not the secret's (`echo secret > file`).
                let bytes = bytes.strip_suffix(b"\n").unwrap_or(&bytes);
                let bytes = bytes.strip_suffix(b"\r").unwrap_or(bytes);
                Some(
                    Secret::new(bytes)
                        .map_err(|e| ("AUTH_JWT_SECRET_FILE", format!("{path}: the secret {e}")))?,
                )
            }
            (None, None) => None,
        };
        let jwks_file = given("AUTH_JWKS_FILE").map(|p| PathBuf::from(p.trim()));
        if let Some(path) = &jwks_file {
            KeySet::load(path).map_err(|e| ("AUTH_JWKS_FILE", e))?;
        }
        if required != Required::Off && secret.is_none() && jwks_file.is_none() {
            return Err((
                "AUTH_REQUIRED",
                format!(
                    "is {} but no key is configured: set AUTH_JWT_SECRET (or \
                     AUTH_JWT_SECRET_FILE) for HS256 tokens, or AUTH_JWKS_FILE for RS256 and \
                     ES256 ones",
                    given("AUTH_REQUIRED").unwrap_or_default().trim()
                ),
            ));
        }
        Ok(Settings {
            required,
            secret,
            jwks_file,
            audience: given("AUTH_AUDIENCE").map(|v| v.trim().to_string()),
            issuer: given("AUTH_ISSUER").map(|v| v.trim().to_string()),
            leeway,
        })
    }
}

/// The verdict on requests, when access control is on.
#[derive(Debug)]
pub struct Gate {
    required: Required,
    secret: Option<Secret>,
    jwks: Option<Arc<Jwks>>,
    expect: Expect,
}

impl Gate {
    /// The gate `settings` describe, its JWKS file read and watched; `None` when
    /// `AUTH_REQUIRED=off` (nothing is checked, and nothing is watched).
    pub fn start(settings: &Settings) -> Result<Option<Arc<Gate>>, String> {
        if settings.required == Required::Off {
            if settings.secret.is_some() || settings.jwks_file.is_some() {
                tracing::warn!(
                    event = "auth_off",
                    "keys are configured but AUTH_REQUIRED is off: no request is checked"
                );
            }
            return Ok(None);
        }
        let jwks = match &settings.jwks_file {
            Some(path) => {
                let jwks = Arc::new(Jwks::open(path).map_err(|e| format!("AUTH_JWKS_FILE: {e}"))?);
                jwks.watch()
                    .map_err(|e| format!("cannot start the AUTH_JWKS_FILE watch: {e}"))?;
                Some(jwks)
            }
            None => None,
        };
        tracing::info!(
            event = "auth_on",
            required = ?settings.required,
            hs256 = settings.secret.is_some(),
            jwks = jwks.as_ref().map(|j| j.keys().keys.len()).unwrap_or(0),
            "bearer tokens required ({:?})",
            settings.required
        );
        Ok(Some(Arc::new(Gate {
            required: settings.required,
            secret: settings.secret.clone(),
            jwks,
            expect: Expect {
                audience: settings.audience.clone(),
                issuer: settings.issuer.clone(),
                leeway: settings.leeway,
            },
        })))
    }

    /// Whether a request for `access` needs a token at all.
    pub fn guards(&self, access: Access) -> bool {
        match self.required {
            Required::Off => false,
            Required::Writes => access == Access::Write,
            Required::All => true,
        }
    }

    /// The verdict on a request for `access` with this `Authorization` header: the verified
    /// token's claims, or why not.
    pub fn admit(&self, authorization: Option<&[u8]>, access: Access) -> Result<Claims, Denial> {
        let token = token::bearer(authorization)?;
        let keys = self.jwks.as_ref().map(|j| j.keys());
        token::verify(
            token,
            self.secret.as_ref(),
            keys.as_deref(),
            &self.expect,
            access,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn read(pairs: &[(&str, &str)]) -> Result<Settings, (&'static str, String)> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Settings::read(|name| map.get(name).cloned(), 30)
    }

    const SECRET: &str = "0123456789abcdef0123456789abcdef-secret";

    #[test]
    fn off_by_default_and_on_only_with_a_key() {
        assert_eq!(read(&[]).unwrap().required, Required::Off);
        let e = read(&[("AUTH_REQUIRED", "writes")]).unwrap_err();
        assert_eq!(e.0, "AUTH_REQUIRED");
        assert!(e.1.contains("no key is configured"), "{}", e.1);
        let s = read(&[("AUTH_REQUIRED", "all"), ("AUTH_JWT_SECRET", SECRET)]).unwrap();
        assert_eq!(s.required, Required::All);
        let e = read(&[("AUTH_REQUIRED", "yes")]).unwrap_err();
        assert_eq!(
            e,
            ("AUTH_REQUIRED", "\"yes\" is not off, writes or all".into())
        );
    }

    #[test]
    fn bad_key_settings_name_their_variable_and_never_the_secret() {
        let dir = std::env::temp_dir().join(format!("records-auth-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let bad_jwks = dir.join("bad.json");
        std::fs::write(&bad_jwks, "{not json").unwrap();
        let secret_file = dir.join("secret");
        std::fs::write(&secret_file, format!("{SECRET}\n")).unwrap();
        let short_file = dir.join("short");
        std::fs::write(&short_file, "short-secret\n").unwrap();
        let (bad_jwks, secret_file, short_file) = (
            bad_jwks.to_str().unwrap(),
            secret_file.to_str().unwrap(),
            short_file.to_str().unwrap(),
        );
        for (pairs, variable, problem) in [
            (
                vec![
                    ("AUTH_JWT_SECRET", SECRET),
                    ("AUTH_JWT_SECRET_FILE", secret_file),
                ],
                "AUTH_JWT_SECRET",
                "set one or the other",
            ),
            (
                vec![("AUTH_JWT_SECRET", "short-secret")],
                "AUTH_JWT_SECRET",
                "12 bytes",
            ),
            (
                vec![("AUTH_JWT_SECRET_FILE", short_file)],
                "AUTH_JWT_SECRET_FILE",
                "12 bytes",
            ),
            (
                vec![("AUTH_JWT_SECRET_FILE", "/no/such/file")],
                "AUTH_JWT_SECRET_FILE",
                "cannot read /no/such/file",
            ),
            (
                vec![("AUTH_JWKS_FILE", bad_jwks)],
                "AUTH_JWKS_FILE",
                "is not JSON",
            ),
            (
                vec![("AUTH_JWKS_FILE", "/no/such/jwks")],
                "AUTH_JWKS_FILE",
                "cannot read",
            ),
        ] {
            let (var, why) = read(&pairs).unwrap_err();
            assert_eq!(var, variable, "{pairs:?}");
            assert!(why.contains(problem), "{pairs:?}: {why}");
            assert!(
                !why.contains("short-secret") && !why.contains(SECRET),
                "{why}"
            );
        }
        let s = read(&[
            ("AUTH_REQUIRED", "writes"),
            ("AUTH_JWT_SECRET_FILE", secret_file),
        ]);
        let s = s.unwrap();
        assert!(
            s.secret.is_some(),
            "the file's final line end is not the secret's"
        );
        assert!(!format!("{s:?}").contains("0123456789"), "{s:?}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
