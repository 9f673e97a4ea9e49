//! Every way a request can be refused for its credentials, in one closed set: its label in
//! `/metrics` and the access log, its status (401 or 403), the `WWW-Authenticate` challenge
//! (RFC 6750 §3) and the JSON detail. No text here comes from the request: the answer never
//! echoes a token or a claim.

/// The realm every challenge names.
macro_rules! bearer {
    () => {
        "Bearer realm=\"records\""
    };
    ($description:literal) => {
        concat!(
            bearer!(),
            ", error=\"invalid_token\", error_description=\"",
            $description,
            "\""
        )
    };
}

/// What a request wants to do to the records, which decides the scope it needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// `GET` or `HEAD` of a record or a page of them: `records:read`, when `AUTH_REQUIRED=all`.
    Read,
    /// `POST` or `DELETE`: `records:write`, unless `AUTH_REQUIRED=off`.
    Write,
}

impl Access {
    /// The scope a token must grant.
    pub fn scope(self) -> &'static str {
        match self {
            Access::Read => "records:read",
            Access::Write => "records:write",
        }
    }
}

/// Why a request was refused. 401 for every variant but [`Denial::InsufficientScope`] (403).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Denial {
    /// No `Authorization` header.
    Missing,
    /// An `Authorization` header with another scheme than `Bearer` (`Basic`, ...).
    OtherScheme,
    /// Not a JWT: longer than `token::MAX_TOKEN_BYTES` (16 KiB), not three base64url parts, a
    /// header or claims that are not JSON, an algorithm name the JWT library does not know
    /// (`none` among them), a required claim (`exp`) missing or of the wrong type. Also two
    /// `Authorization` fields (ambiguous credentials, refused by the service).
    Malformed,
    /// A JWT algorithm the configured keys do not take (`HS256` without `AUTH_JWT_SECRET`,
    /// `RS256` without a JWKS key for it, `HS384`, `PS256`...).
    BadAlgorithm,
    /// A `kid` the JWKS file does not have, or none where the file has several keys of the
    /// token's algorithm.
    UnknownKey,
    /// The signature does not verify with the key.
    BadSignature,
    /// `exp` is past, beyond the leeway.
    Expired,
    /// `nbf` is ahead, beyond the leeway.
    NotYetValid,
    /// `aud` missing or not `AUTH_AUDIENCE`.
    WrongAudience,
    /// `iss` missing or not `AUTH_ISSUER`.
    WrongIssuer,
    /// A valid token without the scope the request needs.
    InsufficientScope(Access),
}

impl Denial {
    /// Every label, in the order `/metrics` lists them; [`Denial::index`] is the position.
    pub const LABELS: [&'static str; 11] = [
        "missing",
        "other_scheme",
        "malformed",
        "bad_algorithm",
        "unknown_key",
        "bad_signature",
        "expired",
        "not_yet_valid",
        "wrong_audience",
        "wrong_issuer",
        "insufficient_scope",
    ];

    /// Its position in [`Denial::LABELS`].
    pub fn index(self) -> usize {
        match self {
            Denial::Missing => 0,
            Denial::OtherScheme => 1,
            Denial::Malformed => 2,
            Denial::BadAlgorithm => 3,
            Denial::UnknownKey => 4,
            Denial::BadSignature => 5,
            Denial::Expired => 6,
            Denial::NotYetValid => 7,
            Denial::WrongAudience => 8,
            Denial::WrongIssuer => 9,
            Denial::InsufficientScope(_) => 10,
        }
    }

    /// The label it is counted and logged under.
    pub fn label(self) -> &'static str {
        Denial::LABELS[self.index()]
    }

    /// 403 for a valid token without the scope, 401 for the rest.
    pub fn is_forbidden(self) -> bool {
        matches!(self, Denial::InsufficientScope(_))
    }

    /// The `WWW-Authenticate` header's value. RFC 6750 §3.1: a request without credentials
    /// (or with another scheme) gets the bare challenge, with no error code; a bad token
    /// `invalid_token`, with a description for the developer; a token without the scope
    /// `insufficient_scope` naming the scope.
    pub fn challenge(self) -> &'static str {
        match self {
            Denial::Missing | Denial::OtherScheme => bearer!(),
            Denial::Malformed => bearer!("the token is not a well-formed JWT"),
            Denial::BadAlgorithm => bearer!("the token's algorithm is not accepted"),
            Denial::UnknownKey => bearer!("the token's key id is unknown"),
            Denial::BadSignature => bearer!("the token's signature does not verify"),
            Denial::Expired => bearer!("the token has expired"),
            Denial::NotYetValid => bearer!("the token is not valid yet"),
            Denial::WrongAudience => bearer!("the token is not for this audience"),
            Denial::WrongIssuer => bearer!("the token is not from the expected issuer"),
            Denial::InsufficientScope(Access::Read) => concat!(
                bearer!(),
                ", error=\"insufficient_scope\", scope=\"records:read\""
            ),
            Denial::InsufficientScope(Access::Write) => concat!(
                bearer!(),
                ", error=\"insufficient_scope\", scope=\"records:write\""
            ),
        }
    }

    /// The `detail` of the JSON body.
    pub fn detail(self) -> &'static str {
        match self {
            Denial::Missing | Denial::OtherScheme => "Not authenticated",
            Denial::Malformed => "Invalid token: not a well-formed JWT",
            Denial::BadAlgorithm => "Invalid token: its algorithm is not accepted",
            Denial::UnknownKey => "Invalid token: its key id is unknown",
            Denial::BadSignature => "Invalid token: the signature does not verify",
            Denial::Expired => "Invalid token: it has expired",
            Denial::NotYetValid => "Invalid token: it is not valid yet",
            Denial::WrongAudience => "Invalid token: it is not for this audience",
            Denial::WrongIssuer => "Invalid token: it is not from the expected issuer",
            Denial::InsufficientScope(Access::Read) => {
                "Not enough permissions: the token lacks the scope records:read"
            }
            Denial::InsufficientScope(Access::Write) => {
                "Not enough permissions: the token lacks the scope records:write"
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: [Denial; 12] = [
        Denial::Missing,
        Denial::OtherScheme,
        Denial::Malformed,
        Denial::BadAlgorithm,
        Denial::UnknownKey,
        Denial::BadSignature,
        Denial::Expired,
        Denial::NotYetValid,
        Denial::WrongAudience,
        Denial::WrongIssuer,
        Denial::InsufficientScope(Access::Read),
        Denial::InsufficientScope(Access::Write),
    ];

    /// RFC 6750 §3: the bare challenge without credentials, an error code otherwise; every
    /// value is a valid header value (visible ASCII and spaces, quotes balanced).
    #[test]
    fn challenges_follow_rfc_6750() {
        for d in ALL {
            let c = d.challenge();
            assert!(c.starts_with("Bearer realm=\"records\""), "{c}");
            assert!(c.bytes().all(|b| b == b' ' || b.is_ascii_graphic()), "{c}");
            assert_eq!(c.matches('"').count() % 2, 0, "{c}");
            let code = match d {
                Denial::Missing | Denial::OtherScheme => None,
                Denial::InsufficientScope(_) => Some("insufficient_scope"),
                _ => Some("invalid_token"),
            };
            match code {
                None => assert!(!c.contains("error="), "{c}"),
                Some(code) => assert!(c.contains(&format!("error=\"{code}\"")), "{c}"),
            }
            assert_eq!(d.is_forbidden(), code == Some("insufficient_scope"));
        }
        assert!(Denial::InsufficientScope(Access::Write)
            .challenge()
            .ends_with("scope=\"records:write\""));
    }

    #[test]
    fn each_denial_has_its_own_label() {
        for d in ALL {
            assert_eq!(Denial::LABELS[d.index()], d.label());
        }
        let mut labels = Denial::LABELS.to_vec();
        labels.sort_unstable();
        labels.dedup();
        assert_eq!(labels.len(), Denial::LABELS.len());
    }
}
