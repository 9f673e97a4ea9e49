//! One bearer token, verified: the `Authorization` header read (RFC 6750 §2.1), the key chosen
//! by the token's algorithm and `kid`, the signature and the claims checked by `jsonwebtoken`,
//! the scope looked for. Each failure is a [`Denial`].
//!
//! The algorithm a key verifies is the key's, never the token's: an HS256 token is verified
//! with the HS256 secret only, an RS256 or ES256 token with a JWKS key of that type only, so a
//! public key can never serve as an HMAC secret (algorithm confusion), and `none` is no
//! algorithm `jsonwebtoken` knows.

use std::collections::HashSet;

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;

use super::denial::{Access, Denial};
use super::keys::{KeySet, Secret};

/// What a verified token says about its bearer.
#[derive(Debug, Default, Deserialize)]
pub struct Claims {
    /// Who the token is for: logged, never trusted for anything else.
    pub sub: Option<String>,
    /// OAuth 2.0's space-separated scopes (RFC 8693 §4.2); some issuers send an array.
    #[serde(default)]
    scope: Option<Scopes>,
    /// The array form some issuers use instead.
    #[serde(default)]
    scopes: Option<Scopes>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Scopes {
    Spaced(String),
    List(Vec<String>),
}

impl Scopes {
    fn grants(&self, scope: &str) -> bool {
        match self {
            Scopes::Spaced(s) => s.split(' ').any(|s| s == scope),
            Scopes::List(l) => l.iter().any(|s| s == scope),
        }
    }
}

impl Claims {
    /// Whether the token grants `scope`, in `scope` or `scopes`.
    pub fn grants(&self, scope: &str) -> bool {
        [&self.scope, &self.scopes]
            .into_iter()
            .flatten()
            .any(|s| s.grants(scope))
    }
}

/// What a token is checked against, besides its signature.
#[derive(Debug, Clone)]
pub struct Expect {
    pub audience: Option<String>,
    pub issuer: Option<String>,
    /// Seconds of clock skew allowed on `exp` and `nbf`.
    pub leeway: u64,
}

/// The longest token looked at: longer is refused as malformed before any of it is decoded or
/// hashed. A client without a key otherwise chooses what each request costs: the head limit
/// (`HTTP_MAX_HEAD_BYTES`, up to 16 MiB) lets a token be as long as the head, and every byte of
/// it is decoded and hashed before its signature fails (a 60 KB token: about 100 µs of HMAC,
/// 130 µs with an RSA key, against 1.6 µs for a real one). Identity providers' tokens are a few KiB; a large group
/// claim reaches about 12 KiB, and proxies commonly refuse header lines past 8 or 16 KiB.
pub const MAX_TOKEN_BYTES: usize = 16 * 1024;

/// The token of an `Authorization` header: `Bearer` (any case) and one or more spaces, then
/// the token, at most [`MAX_TOKEN_BYTES`] long.
pub fn bearer(header: Option<&[u8]>) -> Result<&str, Denial> {
    let value = header.ok_or(Denial::Missing)?;
    let value = std::str::from_utf8(value).map_err(|_| Denial::Malformed)?;
    let (scheme, rest) = value.split_once(' ').unwrap_or((value, ""));
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(Denial::OtherScheme);
    }
    let token = rest.trim_matches(' ');
    if token.is_empty() || token.len() > MAX_TOKEN_BYTES || token.contains(' ') {
        return Err(Denial::Malformed);
    }
    Ok(token)
}

/// Verifies `token` with `secret` (HS256) or `jwks` (RS256, ES256) and checks `access`'s scope.
pub fn verify(
    token: &str,
    secret: Option<&Secret>,
    jwks: Option<&KeySet>,
    expect: &Expect,
    access: Access,
) -> Result<Claims, Denial> {
    let header = jsonwebtoken::decode_header(token).map_err(|_| Denial::Malformed)?;
    let claims = match header.alg {
        Algorithm::HS256 => {
            let secret = secret.ok_or(Denial::BadAlgorithm)?;
            decode(token, secret.key(), Algorithm::HS256, expect)?
        }
        alg @ (Algorithm::RS256 | Algorithm::ES256) => {
            let jwks = jwks.ok_or(Denial::BadAlgorithm)?;
            let mut candidates = jwks.keys.iter().filter(|k| k.alg == alg).peekable();
            if candidates.peek().is_none() {
                return Err(Denial::BadAlgorithm);
            }
            match &header.kid {
                Some(kid) => {
                    let key = candidates
                        .find(|k| k.kid.as_deref() == Some(kid))
                        .ok_or(Denial::UnknownKey)?;
                    decode(token, &key.key, alg, expect)?
                }
                // No kid: the one key of the algorithm. With several, the token does not say
                // which (OpenID Connect Core §10.1 requires a kid then), and trying each would
                // let a client without a key make a request cost a signature check per key.
                None => {
                    let key = candidates.next().ok_or(Denial::BadAlgorithm)?;
                    if candidates.next().is_some() {
                        return Err(Denial::UnknownKey);
                    }
                    decode(token, &key.key, alg, expect)?
                }
            }
        }
        _ => return Err(Denial::BadAlgorithm),
    };
    if !claims.grants(access.scope()) {
        return Err(Denial::InsufficientScope(access));
    }
    Ok(claims)
}

/// `jsonwebtoken`'s verification with exactly one algorithm, `exp` required and checked,
/// `nbf` checked, `aud` and `iss` required and checked when configured.
fn decode(
    token: &str,
    key: &DecodingKey,
    alg: Algorithm,
    expect: &Expect,
) -> Result<Claims, Denial> {
    let mut v = Validation::new(alg);
    v.leeway = expect.leeway;
    v.validate_nbf = true;
    v.validate_aud = expect.audience.is_some();
    if let Some(aud) = &expect.audience {
        v.set_audience(&[aud]);
        v.required_spec_claims.insert("aud".into());
    }
    if let Some(iss) = &expect.issuer {
        v.iss = Some(HashSet::from([iss.clone()]));
        v.required_spec_claims.insert("iss".into());
    }
    match jsonwebtoken::decode::<Claims>(token, key, &v) {
        Ok(data) => Ok(data.claims),
        Err(e) => Err(match e.kind() {
            ErrorKind::InvalidSignature => Denial::BadSignature,
            ErrorKind::ExpiredSignature => Denial::Expired,
            ErrorKind::ImmatureSignature => Denial::NotYetValid,
            ErrorKind::InvalidAudience => Denial::WrongAudience,
            ErrorKind::InvalidIssuer => Denial::WrongIssuer,
            ErrorKind::MissingRequiredClaim(c) if c == "aud" => Denial::WrongAudience,
            ErrorKind::MissingRequiredClaim(c) if c == "iss" => Denial::WrongIssuer,
            ErrorKind::InvalidAlgorithm | ErrorKind::InvalidKeyFormat => Denial::BadAlgorithm,
            _ => Denial::Malformed,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{encode, EncodingKey, Header};
    use serde_json::json;

    const SECRET: &[u8] = b"an-hs256-secret-of-at-least-32-bytes!";

    fn now() -> u64 {
        jsonwebtoken::get_current_timestamp()
    }

    fn hs256(claims: serde_json::Value, secret: &[u8]) -> String {
        encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(secret).unwrap(),
        )
        .unwrap()
    }

    fn expect() -> Expect {
        Expect {
            audience: None,
            issuer: None,
            leeway: 30,
        }
    }

    fn check(token: &str, expect: &Expect, access: Access) -> Result<Claims, Denial> {
        let secret = Secret::new(SECRET).unwrap();
        verify(token, Some(&secret), None, expect, access)
    }

    #[test]
    fn the_authorization_header_is_read_as_rfc_6750_says() {
        assert_eq!(bearer(Some(b"Bearer abc.def.ghi")), Ok("abc.def.ghi"));
        assert_eq!(bearer(Some(b"bearer   abc")), Ok("abc"));
        assert_eq!(bearer(None), Err(Denial::Missing));
        assert_eq!(bearer(Some(b"Basic dTpw")), Err(Denial::OtherScheme));
        assert_eq!(bearer(Some(b"Bearer")), Err(Denial::Malformed));
        assert_eq!(bearer(Some(b"Bearer a b")), Err(Denial::Malformed));
        assert_eq!(bearer(Some(b"Bearer \xff")), Err(Denial::Malformed));
    }

    /// A token is refused by its length before any of it is decoded or hashed: the head limit
    /// (`HTTP_MAX_HEAD_BYTES`, up to 16 MiB) would otherwise let a client without a key make
    /// every request cost an HMAC or RSA check over the whole header, once per JWKS key.
    #[test]
    fn a_token_longer_than_the_bound_is_refused_unread() {
        let padded = |len: usize| {
            let pad = "x".repeat(len);
            let mut claims = json!({"exp": now() + 60, "scope": "records:write", "pad": ""});
            let t = hs256(claims.clone(), SECRET);
            // Each padding byte is 4/3 of a base64 character.
            claims["pad"] = json!(pad[..(len - t.len()) * 3 / 4].to_string());
            let t = hs256(claims, SECRET);
            assert!(t.len() <= len && t.len() + 4 > len, "{} for {len}", t.len());
            t
        };
        let within = padded(MAX_TOKEN_BYTES);
        let header = format!("Bearer {within}");
        let token = bearer(Some(header.as_bytes())).unwrap();
        assert!(check(token, &expect(), Access::Write).is_ok());
        let beyond = padded(MAX_TOKEN_BYTES + 100);
        let header = format!("Bearer {beyond}");
        assert_eq!(
            bearer(Some(header.as_bytes())).map(str::len),
            Err(Denial::Malformed),
            "a token past the bound"
        );
    }

    /// Without a `kid`, a token is checked against the one key of its algorithm; where the JWKS
    /// holds several, it is refused unchecked (OpenID Connect Core §10.1: with several keys a
    /// `kid` must be given), so that a client without a key cannot make each request cost a
    /// signature check per key (an RSA check is about 65 µs, a P-256 one about 300 µs).
    #[test]
    fn without_a_kid_only_a_single_key_of_the_algorithm_is_tried() {
        // RFC 7515 appendix A.2's RSA public key, under two kids.
        const N: &str = "ofgWCuLjybRlzo0tZWJjNiuSfb4p4fAkd_wWJcyQoTbji9k0l8W26mPddxHmfHQp-Vaw-4qPCJrcS2mJPMEzP1Pt0Bm4d4QlL-yRT-SFd2lZS-pCgNMsD1W_YpRPEwOWvG6b32690r2jZ47soMZo9wGzjb_7OMg0LOL-bSf63kpaSHSXndS5z5rexMdbBYUsLA9e-KXBdQOS-UTo7WTBEMa2R2CapHg665xsmtdVMTBQY4uDZlxvb3qCo5ZwKh9kG4LT6_I5IhlJH7aGhyxXFvUK-DWNmoudF8NAco9_h9iaGNj8q2ethFkMLs91kzk2PAcDTW9gb54h4FRWyuXpoQ";
        let rsa = |kid: &str| format!(r#"{{"kty":"RSA","kid":"{kid}","e":"AQAB","n":"{N}"}}"#);
        let set = |keys: &[&str]| {
            let keys: Vec<String> = keys.iter().map(|k| rsa(k)).collect();
            KeySet::parse(&format!(r#"{{"keys":[{}]}}"#, keys.join(",")))
                .unwrap()
                .0
        };
        let (one, two) = (set(&["a"]), set(&["a", "b"]));
        let good = hs256(json!({"exp": now() + 60, "scope": "records:write"}), SECRET);
        let payload = good.split('.').nth(1).unwrap();
        // 256 zero bytes: the length of the key's signatures, and no signature of it.
        let signature = "A".repeat(342);
        // {"alg":"RS256"} and {"alg":"RS256","kid":"b"}
        let no_kid = format!("eyJhbGciOiJSUzI1NiJ9.{payload}.{signature}");
        let kid_b = format!("eyJhbGciOiJSUzI1NiIsImtpZCI6ImIifQ.{payload}.{signature}");
        let verdict = |token: &str, keys: &KeySet| {
            verify(token, None, Some(keys), &expect(), Access::Write).err()
        };
        assert_eq!(verdict(&no_kid, &one), Some(Denial::BadSignature), "tried");
        assert_eq!(verdict(&kid_b, &two), Some(Denial::BadSignature), "tried");
        assert_eq!(
            verdict(&no_kid, &two),
            Some(Denial::UnknownKey),
            "no kid, two keys: refused unchecked"
        );
    }

    #[test]
    fn scopes_come_spaced_or_as_an_array() {
        let exp = now() + 60;
        for (claims, read, write) in [
            (
                json!({"exp": exp, "scope": "records:read records:write"}),
                true,
                true,
            ),
            (json!({"exp": exp, "scope": "records:read"}), true, false),
            (
                json!({"exp": exp, "scopes": ["records:write"]}),
                false,
                true,
            ),
            (json!({"exp": exp, "scope": ["records:write"]}), false, true),
            (json!({"exp": exp, "scope": "records:writer"}), false, false),
            (json!({"exp": exp}), false, false),
        ] {
            let t = hs256(claims.clone(), SECRET);
            assert_eq!(check(&t, &expect(), Access::Read).is_ok(), read, "{claims}");
            let w = check(&t, &expect(), Access::Write);
            assert_eq!(w.is_ok(), write, "{claims}");
            if !write {
                assert_eq!(w.unwrap_err(), Denial::InsufficientScope(Access::Write));
            }
        }
    }

    #[test]
    fn time_audience_and_issuer_are_checked() {
        let t = now();
        let scope = "records:write";
        let deny = |claims: serde_json::Value, expect: &Expect| {
            check(&hs256(claims, SECRET), expect, Access::Write).err()
        };
        let e = expect();
        assert_eq!(
            deny(json!({"scope": scope}), &e),
            Some(Denial::Malformed),
            "no exp"
        );
        assert_eq!(
            deny(json!({"exp": t - 120, "scope": scope}), &e),
            Some(Denial::Expired)
        );
        assert_eq!(
            deny(json!({"exp": t - 10, "scope": scope}), &e),
            None,
            "within leeway"
        );
        let nbf = json!({"exp": t + 600, "nbf": t + 300, "scope": scope});
        assert_eq!(deny(nbf, &e), Some(Denial::NotYetValid));
        let strict = Expect {
            audience: Some("records-api".into()),
            issuer: Some("https://idp.example".into()),
            leeway: 0,
        };
        let ok = json!({"exp": t + 60, "aud": "records-api", "iss": "https://idp.example",
                        "scope": scope});
        assert_eq!(deny(ok, &strict), None);
        for (claims, why) in [
            (
                json!({"exp": t + 60, "iss": "https://idp.example", "scope": scope}),
                Denial::WrongAudience,
            ),
            (
                json!({"exp": t + 60, "aud": "other", "iss": "https://idp.example", "scope": scope}),
                Denial::WrongAudience,
            ),
            (
                json!({"exp": t + 60, "aud": "records-api", "scope": scope}),
                Denial::WrongIssuer,
            ),
            (
                json!({"exp": t + 60, "aud": "records-api", "iss": "https://evil", "scope": scope}),
                Denial::WrongIssuer,
            ),
        ] {
            assert_eq!(deny(claims.clone(), &strict), Some(why), "{claims}");
        }
    }

    #[test]
    fn signatures_and_algorithms_are_checked() {
        let claims = json!({"exp": now() + 60, "scope": "records:write"});
        let other = hs256(claims.clone(), b"another-secret-of-at-least-32-bytes!!");
        assert_eq!(
            check(&other, &expect(), Access::Write).err(),
            Some(Denial::BadSignature)
        );
        let good = hs256(claims.clone(), SECRET);
        // `alg: none`, with the signature dropped.
        let payload = good.split('.').nth(1).unwrap();
        let none = format!("eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.{payload}.");
        assert_eq!(
            check(&none, &expect(), Access::Write).err(),
            Some(Denial::Malformed)
        );
        // HS384 is no algorithm this service takes, whatever the key.
        let hs384 = encode(
            &Header::new(Algorithm::HS384),
            &claims,
            &EncodingKey::from_secret(SECRET).unwrap(),
        )
        .unwrap();
        assert_eq!(
            check(&hs384, &expect(), Access::Write).err(),
            Some(Denial::BadAlgorithm)
        );
        // An HS256 token with no secret configured is never checked against a JWKS key.
        let jwks = KeySet::default();
        assert_eq!(
            verify(&good, None, Some(&jwks), &expect(), Access::Write).err(),
            Some(Denial::BadAlgorithm)
        );
        for junk in ["", "a.b", "a.b.c", "not a token"] {
            assert_eq!(
                check(junk, &expect(), Access::Read).err(),
                Some(Denial::Malformed)
            );
        }
        assert!(check(&good, &expect(), Access::Write).is_ok());
    }
}
