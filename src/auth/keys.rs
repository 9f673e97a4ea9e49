//! The keys tokens are verified with: an HS256 secret ([`Secret`]) and the public keys of a
//! JWKS file ([`KeySet`], [`Jwks`]), each pinned to the one algorithm it may verify. The JWKS
//! file is watched: a changed file is read again and its keys replace the old ones; a file that
//! becomes unreadable or invalid keeps the last good keys, and says so in the log.
//!
//! Must never show a secret: `Debug` prints lengths and key ids only, and no message quotes a
//! file's contents.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey};

/// The shortest HS256 secret accepted: RFC 7518 §3.2, "a key of the same size as the hash
/// output (for instance, 256 bits for "HS256") or larger MUST be used".
pub const MIN_SECRET_BYTES: usize = 32;

/// How often the JWKS file's metadata is looked at.
pub const JWKS_POLL: Duration = Duration::from_secs(1);

/// The HS256 secret (`AUTH_JWT_SECRET` or `AUTH_JWT_SECRET_FILE`). Verifies HS256 only.
#[derive(Clone)]
pub struct Secret(DecodingKey);

impl Secret {
    /// The secret from its bytes; shorter than [`MIN_SECRET_BYTES`] is refused.
    pub fn new(bytes: &[u8]) -> Result<Secret, String> {
        if bytes.len() < MIN_SECRET_BYTES {
            return Err(format!(
                "is {} bytes long; HS256 needs a secret of at least {MIN_SECRET_BYTES} bytes \
                 (RFC 7518 §3.2), e.g. `openssl rand -base64 48`",
                bytes.len()
            ));
        }
        DecodingKey::from_secret(bytes)
            .map(Secret)
            .map_err(|e| format!("is not usable ({e})"))
    }

    pub fn key(&self) -> &DecodingKey {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// One public key of a JWKS file, with the one algorithm it verifies.
#[derive(Clone)]
pub struct PublicKey {
    pub kid: Option<String>,
    pub alg: Algorithm,
    pub key: DecodingKey,
}

/// The usable keys of a JWKS file: RSA keys for RS256, P-256 keys for ES256.
#[derive(Clone, Default)]
pub struct KeySet {
    pub keys: Vec<PublicKey>,
}

impl fmt::Debug for KeySet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(
                self.keys
                    .iter()
                    .map(|k| format!("{:?} {}", k.alg, k.kid.as_deref().unwrap_or("(no kid)"))),
            )
            .finish()
    }
}

impl KeySet {
    /// A JWKS document (RFC 7517 §5): `{"keys": [...]}`. Keys this service cannot use are left
    /// out, each with a reason in the second list (RFC 7517 §5 asks that keys of unknown types
    /// be ignored): symmetric keys (an HS256 secret belongs in `AUTH_JWT_SECRET`, so that a
    /// JWKS never turns a public key into an HMAC secret), keys for encryption, other curves
    /// and algorithms. A document with no usable key is an error.
    pub fn parse(text: &str) -> Result<(KeySet, Vec<String>), String> {
        let doc: serde_json::Value =
            serde_json::from_str(text).map_err(|e| format!("is not JSON ({e})"))?;
        let Some(entries) = doc.get("keys").and_then(|k| k.as_array()) else {
            return Err("is not a JWKS: no \"keys\" array".into());
        };
        let mut keys = Vec::new();
        let mut skipped = Vec::new();
        for (i, entry) in entries.iter().enumerate() {
            let kid = entry.get("kid").and_then(|k| k.as_str());
            let name = match kid {
                Some(kid) => format!("key {i} (kid {kid:?})"),
                None => format!("key {i}"),
            };
            match usable(entry) {
                Ok(key) => keys.push(key),
                Err(why) => skipped.push(format!("{name}: {why}")),
            }
        }
        if keys.is_empty() {
            return Err(match skipped.is_empty() {
                true => "has no keys".into(),
                false => format!("has no usable key ({})", skipped.join("; ")),
            });
        }
        Ok((KeySet { keys }, skipped))
    }

    /// Reads and parses the file at `path`.
    pub fn load(path: &Path) -> Result<(KeySet, Vec<String>), String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        KeySet::parse(&text).map_err(|e| format!("{} {e}", path.display()))
    }
}

/// The key of one JWKS entry, pinned to its algorithm, or why it cannot be used.
fn usable(entry: &serde_json::Value) -> Result<PublicKey, String> {
    let jwk: Jwk = serde_json::from_value(entry.clone()).map_err(|e| format!("not a JWK ({e})"))?;
    if matches!(jwk.common.public_key_use, Some(ref u) if *u != PublicKeyUse::Signature) {
        return Err("not a signing key (\"use\" is not \"sig\")".into());
    }
    let stated = jwk.common.key_algorithm;
    let alg = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => match stated {
            None | Some(KeyAlgorithm::RS256) => Algorithm::RS256,
            Some(other) => return Err(format!("RSA for {other}: only RS256 is accepted")),
        },
        AlgorithmParameters::EllipticCurve(p) => match (&p.curve, stated) {
            (EllipticCurve::P256, None | Some(KeyAlgorithm::ES256)) => Algorithm::ES256,
            (curve, alg) => {
                return Err(format!(
                    "EC {curve:?} for {alg:?}: only P-256 for ES256 is accepted"
                ))
            }
        },
        AlgorithmParameters::OctetKey(_) => {
            return Err("a symmetric key: give an HS256 secret as AUTH_JWT_SECRET".into())
        }
        _ => return Err("a key type other than RSA or EC".into()),
    };
    let key = DecodingKey::from_jwk(&jwk).map_err(|e| format!("unusable ({e})"))?;
    Ok(PublicKey {
        kid: jwk.common.key_id,
        alg,
        key,
    })
}

/// What says a file changed: its inode (a file replaced by rename), size and modification
/// time (a file written in place).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    inode: u64,
    len: u64,
    modified: Option<SystemTime>,
}

impl Stamp {
    fn of(path: &Path) -> std::io::Result<Stamp> {
        use std::os::unix::fs::MetadataExt;
        let m = std::fs::metadata(path)?;
        Ok(Stamp {
            inode: m.ino(),
            len: m.len(),
            modified: m.modified().ok(),
        })
    }
}

/// The keys of a JWKS file (`AUTH_JWKS_FILE`), as last read successfully.
pub struct Jwks {
    path: PathBuf,
    current: RwLock<Arc<KeySet>>,
    /// The file as last looked at, and whether it was read successfully then.
    seen: std::sync::Mutex<(Option<Stamp>, bool)>,
}

impl fmt::Debug for Jwks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Jwks")
            .field("path", &self.path)
            .field("keys", &*self.keys())
            .finish()
    }
}

impl Jwks {
    /// Reads `path`: an error if it cannot be read or has no usable key.
    pub fn open(path: &Path) -> Result<Jwks, String> {
        let stamp = Stamp::of(path).ok();
        let (keys, skipped) = KeySet::load(path)?;
        for why in skipped {
            tracing::warn!(event = "auth_jwks_key_skipped", path = %path.display(), why);
        }
        Ok(Jwks {
            path: path.to_path_buf(),
            current: RwLock::new(Arc::new(keys)),
            seen: std::sync::Mutex::new((stamp, true)),
        })
    }

    /// The keys now.
    pub fn keys(&self) -> Arc<KeySet> {
        crate::sync::read(&self.current).clone()
    }

    /// Reads the file again if it changed since it was last looked at; true if new keys
    /// were taken. A file that cannot be read or holds no usable key keeps the keys there
    /// were, and is logged once per change (not once a poll).
    pub fn refresh(&self) -> bool {
        let stamp = Stamp::of(&self.path).ok();
        let mut seen = crate::sync::lock(&self.seen);
        let (last, good) = *seen;
        if stamp == last && (stamp.is_some() || !good) {
            return false;
        }
        *seen = (stamp, false);
        let loaded = match stamp {
            Some(_) => KeySet::load(&self.path),
            None => Err(format!("cannot read {}", self.path.display())),
        };
        match loaded {
            Ok((keys, skipped)) => {
                for why in skipped {
                    tracing::warn!(event = "auth_jwks_key_skipped", path = %self.path.display(), why);
                }
                let count = keys.keys.len();
                *crate::sync::write(&self.current) = Arc::new(keys);
                seen.1 = true;
                tracing::info!(
                    event = "auth_jwks_reloaded",
                    path = %self.path.display(),
                    keys = count,
                    "AUTH_JWKS_FILE read again: {count} keys"
                );
                true
            }
            Err(why) => {
                tracing::error!(
                    event = "auth_jwks_reload_failed",
                    path = %self.path.display(),
                    error = %why,
                    "AUTH_JWKS_FILE: {why}; keeping the keys read before"
                );
                false
            }
        }
    }

    /// Looks at the file every [`JWKS_POLL`] from a thread of its own (file I/O never runs on
    /// a worker), for as long as the process lives.
    pub fn watch(self: &Arc<Self>) -> std::io::Result<()> {
        let jwks = Arc::downgrade(self);
        std::thread::Builder::new()
            .name("auth-jwks".into())
            .spawn(move || loop {
                std::thread::sleep(JWKS_POLL);
                let Some(jwks) = jwks.upgrade() else { return };
                jwks.refresh();
            })
            .map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A P-256 public key (RFC 7515 appendix A.3's) and an RSA one, as JWKS entries.
    const EC: &str = r#"{"kty":"EC","crv":"P-256","kid":"ec1",
        "x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
        "y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"}"#;
    const RSA: &str = r#"{"kty":"RSA","kid":"rsa1","use":"sig","e":"AQAB",
        "n":"ofgWCuLjybRlzo0tZWJjNiuSfb4p4fAkd_wWJcyQoTbji9k0l8W26mPddxHmfHQp-Vaw-4qPCJrcS2mJPMEzP1Pt0Bm4d4QlL-yRT-SFd2lZS-pCgNMsD1W_YpRPEwOWvG6b32690r2jZ47soMZo9wGzjb_7OMg0LOL-bSf63kpaSHSXndS5z5rexMdbBYUsLA9e-KXBdQOS-UTo7WTBEMa2R2CapHg665xsmtdVMTBQY4uDZlxvb3qCo5ZwKh9kG4LT6_I5IhlJH7aGhyxXFvUK-DWNmoudF8NAco9_h9iaGNj8q2ethFkMLs91kzk2PAcDTW9gb54h4FRWyuXpoQ"}"#;

    #[test]
    fn keys_are_pinned_to_their_algorithm_by_type() {
        let (set, skipped) = KeySet::parse(&format!(r#"{{"keys":[{EC},{RSA}]}}"#)).unwrap();
        assert!(skipped.is_empty(), "{skipped:?}");
        let got: Vec<_> = set
            .keys
            .iter()
            .map(|k| (k.kid.clone().unwrap(), k.alg))
            .collect();
        assert_eq!(
            got,
            [
                ("ec1".to_string(), Algorithm::ES256),
                ("rsa1".to_string(), Algorithm::RS256)
            ]
        );
    }

    #[test]
    fn keys_it_cannot_use_are_left_out_with_a_reason() {
        let doc = format!(
            r#"{{"keys":[
                {{"kty":"oct","kid":"h","k":"c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LXNlY3JldA"}},
                {{"kty":"RSA","kid":"enc","use":"enc","e":"AQAB","n":"AQAB"}},
                {{"kty":"RSA","kid":"ps","alg":"PS256","e":"AQAB","n":"AQAB"}},
                {{"kty":"OKP","crv":"Ed25519","kid":"ed","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}},
                {{"kty":"what"}},
                {RSA}
            ]}}"#
        );
        let (set, skipped) = KeySet::parse(&doc).unwrap();
        assert_eq!(set.keys.len(), 1);
        assert_eq!(skipped.len(), 5, "{skipped:#?}");
        assert!(skipped[0].contains("symmetric"), "{}", skipped[0]);
        assert!(skipped[1].contains("not a signing key"), "{}", skipped[1]);
        assert!(skipped[2].contains("only RS256"), "{}", skipped[2]);
    }

    #[test]
    fn a_document_without_usable_keys_is_an_error() {
        for (doc, why) in [
            ("nope", "is not JSON"),
            (r#"{"keys":{}}"#, "no \"keys\" array"),
            (r#"{"keys":[]}"#, "has no keys"),
            (r#"{"keys":[{"kty":"oct","k":"AAAA"}]}"#, "no usable key"),
        ] {
            let e = KeySet::parse(doc).unwrap_err();
            assert!(e.contains(why), "{doc}: {e}");
        }
    }

    #[test]
    fn a_short_secret_is_refused_and_a_secret_is_never_shown() {
        let e = Secret::new(b"too-short-secret").unwrap_err();
        assert!(e.contains("16 bytes") && !e.contains("too-short"), "{e}");
        let s = Secret::new(b"0123456789abcdef0123456789abcdef").unwrap();
        assert_eq!(format!("{s:?}"), "Secret(<redacted>)");
    }

    #[test]
    fn a_changed_file_is_read_again_and_a_broken_one_keeps_the_keys() {
        let dir = std::env::temp_dir().join(format!("records-jwks-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("jwks.json");
        std::fs::write(&path, format!(r#"{{"keys":[{EC}]}}"#)).unwrap();
        let jwks = Jwks::open(&path).unwrap();
        assert!(!jwks.refresh(), "unchanged");
        let replace = |text: &str| {
            let tmp = dir.join("next.json");
            std::fs::write(&tmp, text).unwrap();
            std::fs::rename(&tmp, &path).unwrap();
        };
        replace(&format!(r#"{{"keys":[{RSA}]}}"#));
        assert!(jwks.refresh(), "replaced");
        assert_eq!(jwks.keys().keys[0].alg, Algorithm::RS256);
        replace("{ broken");
        assert!(!jwks.refresh());
        assert_eq!(
            jwks.keys().keys[0].alg,
            Algorithm::RS256,
            "the last good keys"
        );
        std::fs::remove_file(&path).unwrap();
        assert!(!jwks.refresh());
        assert_eq!(jwks.keys().keys.len(), 1);
        replace(&format!(r#"{{"keys":[{EC},{RSA}]}}"#));
        assert!(jwks.refresh(), "back");
        assert_eq!(jwks.keys().keys.len(), 2);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
