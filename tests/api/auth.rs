//! Access control (`AUTH_*`), through the real binary: which requests need a bearer token in
//! each mode, every way a token is refused and how (401 or 403, the RFC 6750 challenge, a JSON
//! body, the reason counted in `/metrics`), JWKS keys chosen by `kid` and read again when the
//! file changes, and what reaches the log (the token's `sub`, never the token).
//!
//! Keys: an HS256 secret written here, and RSA and P-256 keys made by `openssl genpkey` once
//! per test run (nothing private is committed); the JWKS files are written from them.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{encode, get_current_timestamp, Algorithm, EncodingKey, Header};
use serde_json::{json, Value};

use crate::support::app::{env_for, readable, App};
use crate::support::http::{Conn, Response};
use crate::support::pg::{server, TestDb};
use crate::support::wait::eventually;

const SECRET: &str = "test-only-hs256-secret-0123456789abcdef";
const WRITE: &str = "records:write";
const READ: &str = "records:read";

/// Keys made once per run by openssl: PEM private keys, and the first RSA key's public PEM.
struct Keys {
    rsa1: String,
    rsa2: String,
    ec1: String,
    rsa1_public: String,
}

fn openssl(args: &[&str], input: Option<&str>) -> String {
    use std::io::Write;
    let mut child = Command::new("openssl")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("openssl (apt-get install openssl)");
    let mut stdin = child.stdin.take().unwrap();
    if let Some(input) = input {
        stdin.write_all(input.as_bytes()).unwrap();
    }
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "openssl {args:?}: {:?}", out);
    String::from_utf8(out.stdout).unwrap()
}

fn keys() -> &'static Keys {
    static KEYS: OnceLock<Keys> = OnceLock::new();
    KEYS.get_or_init(|| {
        let rsa = || {
            openssl(
                &[
                    "genpkey",
                    "-algorithm",
                    "RSA",
                    "-pkeyopt",
                    "rsa_keygen_bits:2048",
                ],
                None,
            )
        };
        let rsa1 = rsa();
        let rsa1_public = openssl(&["pkey", "-pubout"], Some(&rsa1));
        Keys {
            rsa2: rsa(),
            ec1: openssl(
                &[
                    "genpkey",
                    "-algorithm",
                    "EC",
                    "-pkeyopt",
                    "ec_paramgen_curve:P-256",
                ],
                None,
            ),
            rsa1,
            rsa1_public,
        }
    })
}

fn encoding_key(alg: Algorithm, pem: &str) -> EncodingKey {
    match alg {
        Algorithm::RS256 => EncodingKey::from_rsa_pem(pem.as_bytes()).unwrap(),
        Algorithm::ES256 => EncodingKey::from_ec_pem(pem.as_bytes()).unwrap(),
        _ => unreachable!(),
    }
}

/// A token signed with `key` for `alg` (a PEM for RS256 and ES256, the secret for HS*).
fn token(alg: Algorithm, key: &str, kid: Option<&str>, claims: &Value) -> String {
    let mut header = Header::new(alg);
    header.kid = kid.map(str::to_string);
    let key = match alg {
        Algorithm::HS256 | Algorithm::HS384 => EncodingKey::from_secret(key.as_bytes()).unwrap(),
        _ => encoding_key(alg, key),
    };
    encode(&header, claims, &key).unwrap()
}

fn now() -> u64 {
    get_current_timestamp()
}

/// Claims for `alice` with `scope`, valid for five minutes.
fn claims(scope: &str) -> Value {
    json!({"sub": "alice", "exp": now() + 300, "scope": scope})
}

fn hs256(claims: &Value) -> String {
    token(Algorithm::HS256, SECRET, None, claims)
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

/// One request on a new connection, with an `Authorization` header when given; a POST
/// carries a valid body.
fn call(addr: SocketAddr, method: &str, target: &str, authorization: Option<&str>) -> Response {
    let body: &[u8] = if method == "POST" {
        br#"{"text":"hi"}"#
    } else {
        b""
    };
    let mut head = format!("{method} {target} HTTP/1.1\r\nHost: test\r\n");
    if let Some(a) = authorization {
        head.push_str(&format!("Authorization: {a}\r\n"));
    }
    if !body.is_empty() {
        head.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            body.len()
        ));
    }
    head.push_str("\r\n");
    let mut bytes = head.into_bytes();
    bytes.extend_from_slice(body);
    let mut c = Conn::connect(addr);
    c.send(&bytes);
    c.raw_response(method == "HEAD")
}

/// A refusal as RFC 6750 and the API's error shape say: `status`, a JSON `detail`, and a
/// `WWW-Authenticate: Bearer realm="records"` challenge with `error` (none for a request
/// without credentials).
fn assert_refused(r: &Response, status: u16, error: Option<&str>, case: &str) {
    assert_eq!(r.status, status, "{case}: {} {}", r.status, r.text());
    assert_eq!(r.header("content-type"), Some("application/json"), "{case}");
    assert!(!r.detail().is_empty(), "{case}");
    let challenge = r
        .header("www-authenticate")
        .unwrap_or_else(|| panic!("{case}: no WWW-Authenticate in {r:?}"));
    assert!(
        challenge.starts_with("Bearer realm=\"records\""),
        "{case}: {challenge}"
    );
    match error {
        Some(e) => assert!(
            challenge.contains(&format!("error=\"{e}\"")),
            "{case}: {challenge}"
        ),
        None => assert!(!challenge.contains("error="), "{case}: {challenge}"),
    }
}

/// `records_service_auth_failures_total` by reason, polled until it equals `want` (the page
/// is cached for 250 ms); every reason not in `want` must be 0.
fn assert_failures_counted(addr: SocketAddr, want: &[(&str, f64)]) {
    let mut seen = HashMap::new();
    let counted = eventually(Duration::from_secs(5), || {
        let r = call(addr, "GET", "/metrics", None);
        seen = r
            .text()
            .lines()
            .filter_map(|l| l.strip_prefix("records_service_auth_failures_total{reason=\""))
            .filter_map(|l| {
                let (reason, value) = l.split_once("\"} ")?;
                Some((reason.to_string(), value.parse::<f64>().ok()?))
            })
            .collect::<HashMap<String, f64>>();
        !seen.is_empty()
            && seen.iter().all(|(reason, n)| {
                *n == want
                    .iter()
                    .find(|(r, _)| r == reason)
                    .map_or(0.0, |(_, n)| *n)
            })
    });
    assert!(counted, "auth failures counted {seen:?}, expected {want:?}");
}

fn start(db: &TestDb, extra: &[(&str, &str)]) -> App {
    App::start_with(db, extra)
}

/// Off (the default): no request needs a token, and an `Authorization` header, however
/// bogus, is not looked at.
#[test]
fn off_by_default_nothing_needs_a_token() {
    let db = TestDb::new();
    let app = start(&db, &[]);
    for auth in [None, Some("Bearer not-a-token"), Some("Basic dTpw")] {
        for (method, target) in [
            ("POST", "/user?email=a@b.com"),
            ("GET", "/user?email=a@b.com"),
            ("GET", "/users"),
            ("DELETE", "/user?email=a@b.com"),
        ] {
            let r = call(app.addr, method, target, auth);
            assert_eq!(
                r.status,
                200,
                "{method} {target} with {auth:?}: {}",
                r.text()
            );
            assert!(r.header("www-authenticate").is_none());
        }
    }
    assert_failures_counted(app.addr, &[]);
}

/// `writes`: POST and DELETE need a valid token with `records:write`; reads, probes, metrics
/// and documentation do not; unknown paths and methods answer 404 and 405 before any token
/// is asked for.
#[test]
fn writes_need_a_token_with_the_write_scope() {
    let db = TestDb::new();
    let app = start(
        &db,
        &[("AUTH_REQUIRED", "writes"), ("AUTH_JWT_SECRET", SECRET)],
    );
    let write = bearer(&hs256(&claims(WRITE)));
    for (method, target) in [
        ("POST", "/user?email=w@b.com"),
        ("DELETE", "/user?email=w@b.com"),
    ] {
        let r = call(app.addr, method, target, None);
        assert_refused(&r, 401, None, &format!("{method} without a token"));
        assert_eq!(r.detail(), "Not authenticated");
        let r = call(app.addr, method, target, Some(&write));
        assert_eq!(r.status, 200, "{method} with a token: {}", r.text());
    }
    // A read-only token cannot write: 403, naming the scope.
    let read_only = bearer(&hs256(&claims(READ)));
    let r = call(app.addr, "POST", "/user?email=w@b.com", Some(&read_only));
    assert_refused(
        &r,
        403,
        Some("insufficient_scope"),
        "POST with records:read",
    );
    assert!(
        r.header("www-authenticate")
            .unwrap()
            .contains("scope=\"records:write\""),
        "{r:?}"
    );
    // The `scopes` array form grants too.
    let array = bearer(&hs256(
        &json!({"sub": "bob", "exp": now() + 300, "scopes": ["records:read", WRITE]}),
    ));
    assert_eq!(
        call(app.addr, "POST", "/user?email=w@b.com", Some(&array)).status,
        200
    );
    for target in [
        "/user?email=w@b.com",
        "/users",
        "/user/1",
        "/livez",
        "/readyz",
        "/metrics",
        "/openapi.json",
        "/docs",
        "/redoc",
        "/",
        "/static/app.js",
    ] {
        let r = call(app.addr, "GET", target, None);
        assert!(
            r.status == 200 || (target == "/user/1" && r.status == 404),
            "GET {target} without a token: {}",
            r.status
        );
    }
    assert_eq!(call(app.addr, "POST", "/nope", None).status, 404);
    let r = call(app.addr, "PUT", "/user?email=w@b.com", None);
    assert_eq!(
        r.status, 405,
        "a wrong method is 405 before a token is asked for"
    );
    assert_failures_counted(app.addr, &[("missing", 2.0), ("insufficient_scope", 1.0)]);
}

/// Two `Authorization` fields are ambiguous credentials (the field is not a list, RFC 9110
/// §5.3): a proxy or gateway that reads the last one (to revoke, rate-limit or log a subject)
/// must not see another principal than the one the service acts for. Refused whichever
/// field holds the valid token, in either case of the name.
#[test]
fn two_authorization_fields_are_refused() {
    let db = TestDb::new();
    let app = start(
        &db,
        &[("AUTH_REQUIRED", "writes"), ("AUTH_JWT_SECRET", SECRET)],
    );
    let write = bearer(&hs256(&claims(WRITE)));
    let other = bearer(&hs256(
        &json!({"sub": "mallory", "exp": now() + 300, "scope": WRITE}),
    ));
    for (first, second) in [
        (write.as_str(), "Bearer not-a-token"),
        ("Bearer not-a-token", write.as_str()),
        (write.as_str(), other.as_str()),
    ] {
        let body = br#"{"text":"hi"}"#;
        let head = format!(
            "POST /user?email=two@b.com HTTP/1.1\r\nHost: test\r\nAuthorization: {first}\r\n\
             authorization: {second}\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\n\r\n",
            body.len()
        );
        let mut bytes = head.into_bytes();
        bytes.extend_from_slice(body);
        let mut c = Conn::connect(app.addr);
        c.send(&bytes);
        let r = c.raw_response(false);
        assert_refused(&r, 401, Some("invalid_token"), "two Authorization fields");
    }
    assert_failures_counted(app.addr, &[("malformed", 3.0)]);
}

/// `all`: reads need `records:read` too; a write token alone does not read.
#[test]
fn all_needs_a_token_for_reads_too() {
    let db = TestDb::new();
    let app = start(
        &db,
        &[("AUTH_REQUIRED", "all"), ("AUTH_JWT_SECRET", SECRET)],
    );
    let read = bearer(&hs256(&claims(READ)));
    let write = bearer(&hs256(&claims(WRITE)));
    for (method, target) in [
        ("GET", "/user/1"),
        ("HEAD", "/user/1"),
        ("GET", "/user?email=a@b.com"),
        ("GET", "/users?limit=2"),
    ] {
        let case = format!("{method} {target}");
        let r = call(app.addr, method, target, None);
        assert_eq!(r.status, 401, "{case} without a token");
        if method == "GET" {
            assert_refused(&r, 401, None, &case);
        }
        let r = call(app.addr, method, target, Some(&read));
        assert!(
            r.status == 200 || r.status == 404,
            "{case} with read: {}",
            r.status
        );
        let r = call(app.addr, method, target, Some(&write));
        assert_eq!(r.status, 403, "{case} with only records:write");
    }
    let r = call(app.addr, "GET", "/users", Some(&write));
    assert!(r
        .header("www-authenticate")
        .unwrap()
        .contains("scope=\"records:read\""));
    for target in ["/livez", "/readyz", "/metrics", "/docs", "/openapi.json"] {
        assert_eq!(call(app.addr, "GET", target, None).status, 200, "{target}");
    }
}

/// Every way an HS256 deployment refuses a token: 401 with `invalid_token` (none for another
/// scheme), each counted under its reason; an expiry within the leeway still passes.
#[test]
fn bad_tokens_are_refused_and_counted_by_reason() {
    let db = TestDb::new();
    let app = start(
        &db,
        &[
            ("AUTH_REQUIRED", "writes"),
            ("AUTH_JWT_SECRET", SECRET),
            ("AUTH_LEEWAY_SECONDS", "30"),
        ],
    );
    let t = now();
    let good = hs256(&claims(WRITE));
    let payload = good.split('.').nth(1).unwrap().to_string();
    let other_secret = "another-hs256-secret-0123456789abcdefgh";
    let cases: Vec<(&str, String, Option<&str>, &str)> = vec![
        (
            "Basic scheme",
            "Basic dXNlcjpwYXNz".into(),
            None,
            "other_scheme",
        ),
        (
            "no token after Bearer",
            "Bearer".into(),
            Some("invalid_token"),
            "malformed",
        ),
        (
            "not a JWT",
            "Bearer abc.def".into(),
            Some("invalid_token"),
            "malformed",
        ),
        (
            "alg none, no signature",
            format!("Bearer eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.{payload}."),
            Some("invalid_token"),
            "malformed",
        ),
        (
            "HS384",
            bearer(&token(Algorithm::HS384, SECRET, None, &claims(WRITE))),
            Some("invalid_token"),
            "bad_algorithm",
        ),
        (
            "signed with another secret",
            bearer(&token(Algorithm::HS256, other_secret, None, &claims(WRITE))),
            Some("invalid_token"),
            "bad_signature",
        ),
        (
            "payload swapped under a good signature",
            {
                let forged = json!({"sub": "mallory", "exp": t + 300, "scope": WRITE});
                let other = hs256(&forged);
                let mut parts: Vec<&str> = good.split('.').collect();
                parts[1] = other.split('.').nth(1).unwrap();
                bearer(&parts.join("."))
            },
            Some("invalid_token"),
            "bad_signature",
        ),
        (
            "expired beyond the leeway",
            bearer(&hs256(&json!({"sub": "a", "exp": t - 120, "scope": WRITE}))),
            Some("invalid_token"),
            "expired",
        ),
        (
            "not valid for another five minutes",
            bearer(&hs256(
                &json!({"sub": "a", "exp": t + 900, "nbf": t + 300, "scope": WRITE}),
            )),
            Some("invalid_token"),
            "not_yet_valid",
        ),
        (
            "no exp",
            bearer(&hs256(&json!({"sub": "a", "scope": WRITE}))),
            Some("invalid_token"),
            "malformed",
        ),
    ];
    let mut want: HashMap<&str, f64> = HashMap::new();
    for (case, authorization, error, reason) in &cases {
        let r = call(app.addr, "POST", "/user?email=x@b.com", Some(authorization));
        assert_refused(&r, 401, *error, case);
        *want.entry(reason).or_default() += 1.0;
    }
    let within = bearer(&hs256(&json!({"sub": "a", "exp": t - 5, "scope": WRITE})));
    let r = call(app.addr, "POST", "/user?email=x@b.com", Some(&within));
    assert_eq!(
        r.status,
        200,
        "expired 5 s ago, within the 30 s leeway: {}",
        r.text()
    );
    let want: Vec<(&str, f64)> = want.into_iter().collect();
    assert_failures_counted(app.addr, &want);
}

#[test]
fn audience_and_issuer_are_checked_when_configured() {
    let db = TestDb::new();
    let app = start(
        &db,
        &[
            ("AUTH_REQUIRED", "writes"),
            ("AUTH_JWT_SECRET", SECRET),
            ("AUTH_AUDIENCE", "records-api"),
            ("AUTH_ISSUER", "https://idp.test/"),
        ],
    );
    let exp = now() + 300;
    let with = |extra: Value| {
        let mut c = json!({"sub": "a", "exp": exp, "scope": WRITE});
        c.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        call(
            app.addr,
            "POST",
            "/user?email=y@b.com",
            Some(&bearer(&hs256(&c))),
        )
    };
    let ok = with(json!({"aud": "records-api", "iss": "https://idp.test/"}));
    assert_eq!(ok.status, 200, "{}", ok.text());
    let ok = with(json!({"aud": ["other", "records-api"], "iss": "https://idp.test/"}));
    assert_eq!(ok.status, 200, "one of several audiences: {}", ok.text());
    for (extra, case) in [
        (json!({"iss": "https://idp.test/"}), "no aud"),
        (
            json!({"aud": "other", "iss": "https://idp.test/"}),
            "another aud",
        ),
        (json!({"aud": "records-api"}), "no iss"),
        (
            json!({"aud": "records-api", "iss": "https://evil.test/"}),
            "another iss",
        ),
    ] {
        assert_refused(&with(extra), 401, Some("invalid_token"), case);
    }
    assert_failures_counted(app.addr, &[("wrong_audience", 2.0), ("wrong_issuer", 2.0)]);
}

/// A JWKS file in a directory of its own, replaced atomically (written aside, renamed over),
/// removed with the test.
struct JwksFile {
    dir: PathBuf,
    path: PathBuf,
}

impl JwksFile {
    fn new(keys: &[(Algorithm, &str, &str)]) -> JwksFile {
        let dir = std::env::temp_dir().join(format!(
            "records-auth-test-{}-{}",
            std::process::id(),
            rand_suffix()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let f = JwksFile {
            path: dir.join("jwks.json"),
            dir,
        };
        f.write(keys);
        f
    }

    /// `(alg, private PEM, kid)`: the public halves, as a JWKS.
    fn write(&self, keys: &[(Algorithm, &str, &str)]) {
        let keys: Vec<Value> = keys
            .iter()
            .map(|(alg, pem, kid)| {
                let mut jwk = Jwk::from_encoding_key(&encoding_key(*alg, pem), *alg).unwrap();
                jwk.common.key_id = Some(kid.to_string());
                serde_json::to_value(jwk).unwrap()
            })
            .collect();
        self.write_text(&json!({ "keys": keys }).to_string());
    }

    fn write_text(&self, text: &str) {
        let aside = self.dir.join("next.json");
        std::fs::write(&aside, text).unwrap();
        std::fs::rename(&aside, &self.path).unwrap();
    }

    fn path(&self) -> &str {
        self.path.to_str().unwrap()
    }
}

impl Drop for JwksFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn rand_suffix() -> u64 {
    use std::hash::{BuildHasher, RandomState};
    RandomState::new().hash_one(std::time::SystemTime::now())
}

/// RS256 and ES256 keys from a JWKS, chosen by `kid`; a key of the set cannot be borrowed by
/// another algorithm, and a public key is never an HMAC secret.
#[test]
fn jwks_keys_are_chosen_by_kid_and_pinned_to_their_algorithm() {
    let k = keys();
    let jwks = JwksFile::new(&[
        (Algorithm::RS256, &k.rsa1, "r1"),
        (Algorithm::ES256, &k.ec1, "e1"),
    ]);
    let db = TestDb::new();
    let app = start(
        &db,
        &[("AUTH_REQUIRED", "writes"), ("AUTH_JWKS_FILE", jwks.path())],
    );
    let post =
        |authorization: &str| call(app.addr, "POST", "/user?email=j@b.com", Some(authorization));
    let c = claims(WRITE);
    for (alg, pem, kid) in [
        (Algorithm::RS256, &k.rsa1, Some("r1")),
        (Algorithm::ES256, &k.ec1, Some("e1")),
        (Algorithm::RS256, &k.rsa1, None),
    ] {
        let r = post(&bearer(&token(alg, pem, kid, &c)));
        assert_eq!(r.status, 200, "{alg:?} {kid:?}: {}", r.text());
    }
    let cases = [
        (
            "another RSA key under kid r1",
            token(Algorithm::RS256, &k.rsa2, Some("r1"), &c),
            "bad_signature",
        ),
        (
            "a kid the set does not have",
            token(Algorithm::RS256, &k.rsa2, Some("r9"), &c),
            "unknown_key",
        ),
        (
            "an RS256 token naming the EC key",
            token(Algorithm::RS256, &k.rsa1, Some("e1"), &c),
            "unknown_key",
        ),
        (
            "HS256 with the RSA public key as the secret (algorithm confusion)",
            token(Algorithm::HS256, &k.rsa1_public, Some("r1"), &c),
            "bad_algorithm",
        ),
    ];
    for (case, t, _) in &cases {
        assert_refused(&post(&bearer(t)), 401, Some("invalid_token"), case);
    }
    assert_failures_counted(
        app.addr,
        &[
            ("bad_signature", 1.0),
            ("unknown_key", 2.0),
            ("bad_algorithm", 1.0),
        ],
    );
    drop(app);

    // With an HS256 secret configured as well, the confused token is checked against that
    // secret (and fails), never against the public key.
    let app = start(
        &db,
        &[
            ("AUTH_REQUIRED", "writes"),
            ("AUTH_JWKS_FILE", jwks.path()),
            ("AUTH_JWT_SECRET", SECRET),
        ],
    );
    let r = call(
        app.addr,
        "POST",
        "/user?email=j@b.com",
        Some(&bearer(&cases[3].1)),
    );
    assert_refused(
        &r,
        401,
        Some("invalid_token"),
        "confusion with a secret configured",
    );
    let r = call(
        app.addr,
        "POST",
        "/user?email=j@b.com",
        Some(&bearer(&hs256(&c))),
    );
    assert_eq!(r.status, 200, "the secret's own tokens: {}", r.text());
    assert_failures_counted(app.addr, &[("bad_signature", 1.0)]);
}

/// A JWKS file replaced while the service runs: the new key is taken within a poll (about a
/// second), the old one refused; a file that turns invalid keeps the keys there were.
#[test]
fn a_replaced_jwks_file_is_read_again() {
    let k = keys();
    let jwks = JwksFile::new(&[(Algorithm::RS256, &k.rsa1, "r1")]);
    let db = TestDb::new();
    let app = start(
        &db,
        &[("AUTH_REQUIRED", "writes"), ("AUTH_JWKS_FILE", jwks.path())],
    );
    let c = claims(WRITE);
    let old = bearer(&token(Algorithm::RS256, &k.rsa1, Some("r1"), &c));
    let new = bearer(&token(Algorithm::RS256, &k.rsa2, Some("r2"), &c));
    let status = |authorization: &str| {
        call(app.addr, "POST", "/user?email=k@b.com", Some(authorization)).status
    };
    assert_eq!(status(&old), 200);
    assert_eq!(status(&new), 401);

    jwks.write(&[(Algorithm::RS256, &k.rsa2, "r2")]);
    assert!(
        eventually(Duration::from_secs(10), || status(&new) == 200),
        "the new key was not taken; log:\n{}",
        app.log_text()
    );
    assert_eq!(status(&old), 401, "the old key is gone");

    jwks.write_text("{\"keys\": [ broken");
    assert!(
        eventually(Duration::from_secs(10), || app
            .log_text()
            .contains("auth_jwks_reload_failed")),
        "the broken file was not noticed; log:\n{}",
        app.log_text()
    );
    assert_eq!(status(&new), 200, "the last good keys are kept");
}

/// The access log names the token's `sub` (escaped, cut short) and why a token was refused;
/// no token, signature or secret reaches the log, whatever is sent.
#[test]
fn the_log_has_the_subject_and_never_a_token() {
    let db = TestDb::new();
    let app = start(
        &db,
        &[
            ("AUTH_REQUIRED", "writes"),
            ("AUTH_JWT_SECRET", SECRET),
            ("ACCESS_LOG", "all"),
            ("LOG_LEVEL", "trace"),
        ],
    );
    let exp = now() + 300;
    let alice = hs256(&json!({"sub": "alice@example", "exp": exp, "scope": WRITE}));
    let forged_line = "evil\n2026-01-01T00:00:00Z  INFO fake: all good";
    let hostile = hs256(&json!({"sub": forged_line, "exp": exp, "scope": WRITE}));
    let long = hs256(&json!({"sub": "x".repeat(1000), "exp": exp, "scope": WRITE}));
    let expired = hs256(&json!({"sub": "late", "exp": exp - 1000, "scope": WRITE}));
    let bad = token(
        Algorithm::HS256,
        "another-hs256-secret-0123456789abcdefgh",
        None,
        &claims(WRITE),
    );
    for t in [&alice, &hostile, &long] {
        assert_eq!(
            call(app.addr, "POST", "/user?email=l@b.com", Some(&bearer(t))).status,
            200
        );
    }
    for t in [&expired, &bad] {
        assert_eq!(
            call(app.addr, "POST", "/user?email=l@b.com", Some(&bearer(t))).status,
            401
        );
    }
    let events = |pred: &dyn Fn(&Value) -> bool| -> Vec<Value> {
        app.log
            .lock()
            .unwrap()
            .iter()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|v| v["event"] == "request" && v["route"] == "/user" && pred(v))
            .collect()
    };
    assert!(
        eventually(Duration::from_secs(5), || events(&|_| true).len() >= 5),
        "five access log events; log:\n{}",
        app.log_text()
    );
    assert_eq!(events(&|v| v["sub"] == "alice@example").len(), 1);
    let escaped = events(&|v| v["sub"].as_str().is_some_and(|s| s.starts_with("evil")));
    assert_eq!(escaped.len(), 1, "{escaped:?}");
    assert_eq!(
        escaped[0]["sub"], "evil\\n2026-01-01T00:00:00Z  INFO fake: all good",
        "control characters escaped"
    );
    let cut = events(&|v| v["sub"].as_str().is_some_and(|s| s.starts_with("xxx")));
    assert_eq!(cut[0]["sub"].as_str().unwrap().len(), 128, "cut short");
    assert_eq!(events(&|v| v["auth_failure"] == "expired").len(), 1);
    assert_eq!(events(&|v| v["auth_failure"] == "bad_signature").len(), 1);
    assert_eq!(
        events(&|v| v["status"] == 401 && !v["sub"].is_null()).len(),
        0,
        "a refused token's sub is not logged"
    );

    let log = app.log.lock().unwrap().join("\n");
    for t in [&alice, &hostile, &long, &expired, &bad] {
        for part in t.split('.') {
            assert!(!log.contains(part), "a token part reached the log:\n{log}");
        }
    }
    assert!(!log.contains(SECRET), "the secret reached the log");
}

/// Settings that cannot work stop the process at start, naming the variable.
#[test]
fn bad_auth_settings_stop_the_process_naming_the_variable() {
    let dir = std::env::temp_dir().join(format!("records-auth-cfg-{}", rand_suffix()));
    std::fs::create_dir_all(&dir).unwrap();
    let bad_jwks = dir.join("jwks.json");
    std::fs::write(
        &bad_jwks,
        "{\"keys\": [{\"kty\": \"oct\", \"k\": \"c2VjcmV0\"}]}",
    )
    .unwrap();
    let bad_jwks = bad_jwks.to_str().unwrap();
    let cases: &[(&[(&str, &str)], &str)] = &[
        (
            &[("AUTH_REQUIRED", "writes")],
            "AUTH_REQUIRED: is writes but no key is configured",
        ),
        (
            &[("AUTH_REQUIRED", "sometimes")],
            "AUTH_REQUIRED: \"sometimes\" is not off",
        ),
        (
            &[("AUTH_JWT_SECRET", "too-short")],
            "AUTH_JWT_SECRET: is 9 bytes long",
        ),
        (
            &[("AUTH_JWT_SECRET", SECRET), ("AUTH_JWT_SECRET_FILE", "/x")],
            "AUTH_JWT_SECRET: is set together with AUTH_JWT_SECRET_FILE",
        ),
        (&[("AUTH_JWKS_FILE", bad_jwks)], "has no usable key"),
        (
            &[("AUTH_LEEWAY_SECONDS", "3600")],
            "AUTH_LEEWAY_SECONDS: 3600 is out of range",
        ),
    ];
    for (extra, message) in cases {
        let mut env = env_for(server(), "records");
        env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        let out = crate::support::app::command(&env)
            .arg("serve")
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let text = readable(&String::from_utf8_lossy(&out.stderr));
        assert_eq!(out.status.code(), Some(1), "{extra:?}: {text}");
        assert!(text.contains(message), "{extra:?}: {text}");
        assert!(
            !text.contains(SECRET) && !text.contains("too-short"),
            "{text}"
        );
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
