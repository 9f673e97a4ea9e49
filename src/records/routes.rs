//! Routing and the handlers. Every error a client can see is decided here, in [`Failure`]:
//! validation failures (400/404), database trouble (503 with `Retry-After`) and the unexpected
//! (500). Database and internal error text goes to the log, never into a response.

use std::borrow::Cow;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::http::{Request, Response, Service, Status};
use crate::pg::{self, ErrorKind};

use super::assets::Assets;
use super::email::EmailAddress;
use super::query::{param, MalformedQuery};
use super::repo::Repository;

/// The generic validation message of the original, kept for its clients.
pub const INVALID_PAYLOAD: &str = "Invalid payload provided! Please check the API documentation.";
pub const NO_EMAIL: &str = "No email provided";
/// `text` is at most this many characters (the column is varchar(100)).
pub const MAX_TEXT_CHARS: usize = 100;
/// `/users` pages hold at most this many rows, whatever `limit` asks (as in the original).
pub const MAX_PAGE: i64 = 10;

const OPENAPI: &str = include_str!("../../docs/openapi.json");

pub struct RecordsService {
    repo: Arc<Repository>,
    assets: Assets,
    /// Set when shutdown begins: `/readyz` turns 503 so a load balancer stops sending.
    draining: Arc<AtomicBool>,
}

/// Why a request did not succeed, each with its status.
enum Failure {
    BadRequest(Cow<'static, str>),
    NotFound(String),
    Database(pg::Error),
}

impl From<pg::Error> for Failure {
    fn from(e: pg::Error) -> Self {
        Failure::Database(e)
    }
}

impl Failure {
    fn write(self, res: &mut Response<'_>) {
        match self {
            Failure::BadRequest(detail) => {
                res.error(Status::BAD_REQUEST, &detail);
            }
            Failure::NotFound(detail) => {
                res.error(Status::NOT_FOUND, &detail);
            }
            Failure::Database(e) => match e.kind() {
                // The service validates first; these are the database's backstops firing.
                ErrorKind::StringTooLong | ErrorKind::CheckViolation => {
                    eprintln!("records: constraint backstop fired: {e}");
                    res.error(Status::BAD_REQUEST, INVALID_PAYLOAD);
                }
                ErrorKind::Unavailable
                | ErrorKind::ConnectionLost
                | ErrorKind::ConnectFailed
                | ErrorKind::AuthFailed
                | ErrorKind::UnknownDatabase
                | ErrorKind::Overloaded
                | ErrorKind::Timeout
                | ErrorKind::QueryCanceled => {
                    eprintln!("records: database unavailable: {e}");
                    res.error(
                        Status::SERVICE_UNAVAILABLE,
                        "Service temporarily unavailable",
                    )
                    .header("Retry-After", "1");
                }
                ErrorKind::UniqueViolation | ErrorKind::OtherDatabase | ErrorKind::Protocol => {
                    eprintln!("records: database error: {e}");
                    res.error(Status::INTERNAL_SERVER_ERROR, "Internal Server Error");
                }
            },
        }
    }
}

type Outcome = Result<(), Failure>;

#[derive(Serialize)]
struct RecordJson<'a> {
    id: i64,
    email: &'a str,
    text: Option<&'a str>,
}

#[derive(Deserialize)]
struct TextPayload<'a> {
    #[serde(borrow)]
    text: Cow<'a, str>,
}

impl RecordsService {
    pub fn new(repo: Arc<Repository>, static_dir: &str, draining: Arc<AtomicBool>) -> Self {
        RecordsService {
            repo,
            assets: Assets::load(static_dir),
            draining,
        }
    }

    fn route(&self, req: &Request<'_>, res: &mut Response<'_>) -> Outcome {
        let path = req.path();
        let method = match req.method() {
            "HEAD" => "GET",
            m => m,
        };
        let lane = req.conn_id();
        if let Some(id) = path.strip_prefix("/user/") {
            return match method {
                "GET" => self.get_by_id(lane, id, res),
                _ => not_allowed(res, "GET, HEAD"),
            };
        }
        match (path, method) {
            ("/user/", _) => not_found(res),
            ("/user", "GET") => self.get_by_email(req, lane, res),
            ("/user", "POST") => self.upsert(req, lane, res),
            ("/user", "DELETE") => self.delete(req, lane, res),
            ("/user", _) => not_allowed(res, "GET, HEAD, POST, DELETE"),
            ("/users", "GET") => self.list(req, lane, res),
            ("/livez", "GET") => {
                res.body_mut().extend_from_slice(br#"{"status":"ok"}"#);
                Ok(())
            }
            ("/readyz", "GET") => self.readyz(lane, res),
            ("/openapi.json", "GET") => {
                res.body_mut().extend_from_slice(OPENAPI.as_bytes());
                Ok(())
            }
            ("/", "GET") => self.asset("index.html", res),
            ("/users" | "/livez" | "/readyz" | "/openapi.json" | "/", _) => {
                not_allowed(res, "GET, HEAD")
            }
            _ => match path.strip_prefix("/static/") {
                Some(name) if method == "GET" => self.asset(name, res),
                Some(_) => not_allowed(res, "GET, HEAD"),
                None => not_found(res),
            },
        }
    }

    fn get_by_id(&self, lane: u64, raw: &str, res: &mut Response<'_>) -> Outcome {
        let Some(id) = parse_id(raw) else {
            // A path segment that is not an integer: the original's validation error.
            if raw.is_empty() || raw.contains('/') {
                return not_found(res);
            }
            return Err(Failure::BadRequest(INVALID_PAYLOAD.into()));
        };
        let not_found = || Failure::NotFound(format!("Record with ID {id} was not found!"));
        // Outside int4 no record can exist: 404 without asking the database.
        let id32 = i32::try_from(id.value).map_err(|_| not_found())?;
        let row = self.repo.by_id(lane, id32)?.ok_or_else(not_found)?;
        let record = RecordJson {
            id: row.integer(0)?.unwrap_or(id.value),
            email: row.text(1)?.unwrap_or(""),
            text: row.text(2)?,
        };
        write_json(res, &record);
        Ok(())
    }

    fn get_by_email(&self, req: &Request<'_>, lane: u64, res: &mut Response<'_>) -> Outcome {
        let email = required_email(req)?;
        let row = self
            .repo
            .text_by_email(lane, &email)?
            .ok_or_else(|| Failure::NotFound(format!("Record for email {email} was not found!")))?;
        write_json(res, &[row.text(0)?]);
        Ok(())
    }

    fn upsert(&self, req: &Request<'_>, lane: u64, res: &mut Response<'_>) -> Outcome {
        // The original validated the body before the handler ran; keep that order.
        let body = req.body();
        // Only a JSON object will do (serde would also take `["text"]` as the struct), and its
        // nesting is checked without recursion before a recursive parser sees it: hostile depth
        // must not overflow a coroutine's small stack.
        if body.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{')
            || !nesting_within(body, MAX_JSON_DEPTH)
        {
            return Err(Failure::BadRequest(INVALID_PAYLOAD.into()));
        }
        let payload: TextPayload<'_> =
            sonic_rs::from_slice(body).map_err(|_| Failure::BadRequest(INVALID_PAYLOAD.into()))?;
        let raw = required_email(req)?;
        let email = EmailAddress::parse(&raw).map_err(|_| {
            Failure::BadRequest(format!("Invalid email address provided! Email: {raw}").into())
        })?;
        if payload.text.contains('\0') {
            // PostgreSQL's text cannot hold NUL: refused here, not answered 500 by the server.
            return Err(Failure::BadRequest(
                "Text must not contain NUL (\\u0000) characters".into(),
            ));
        }
        if payload.text.chars().count() > MAX_TEXT_CHARS {
            return Err(Failure::BadRequest(
                format!("Text is too long: at most {MAX_TEXT_CHARS} characters are allowed").into(),
            ));
        }
        self.repo.upsert(lane, email, &payload.text)?;
        res.body_mut().extend_from_slice(b"null");
        Ok(())
    }

    fn delete(&self, req: &Request<'_>, lane: u64, res: &mut Response<'_>) -> Outcome {
        let email = required_email(req)?;
        self.repo.delete(lane, &email)?;
        res.body_mut().extend_from_slice(b"null");
        Ok(())
    }

    fn list(&self, req: &Request<'_>, lane: u64, res: &mut Response<'_>) -> Outcome {
        let query = req.query();
        let bad = || Failure::BadRequest(INVALID_PAYLOAD.into());
        let limit_raw = param(query, "limit").map_err(|_| bad())?;
        let offset_raw = param(query, "offset").map_err(|_| bad())?;
        let after = param(query, "after").map_err(|_| bad())?;
        let limit = match &limit_raw {
            Some(s) => parse_i64(s).ok_or_else(bad)?,
            None => MAX_PAGE,
        };
        let offset = match &offset_raw {
            Some(s) => parse_i64(s).ok_or_else(bad)?,
            None => 0,
        };
        if limit < 0 || offset < 0 {
            return Err(Failure::BadRequest(
                format!("Invalid limit or offset provided! Limit: {limit} Offset: {offset}").into(),
            ));
        }
        let limit = limit.min(MAX_PAGE);
        let rows = match after {
            Some(after) => {
                if offset != 0 {
                    return Err(Failure::BadRequest(
                        "Use either after or offset, not both".into(),
                    ));
                }
                self.repo.page_after(lane, &after, limit)?
            }
            None => self.repo.page_offset(lane, limit, offset)?,
        };
        let mut pairs: Vec<(&str, Option<&str>)> = Vec::with_capacity(rows.len());
        for row in &rows {
            pairs.push((row.text(0)?.unwrap_or(""), row.text(1)?));
        }
        write_json(res, &pairs);
        Ok(())
    }

    /// Ready when every connection of both lanes is up and the database answers a query.
    fn readyz(&self, lane: u64, res: &mut Response<'_>) -> Outcome {
        if self.draining.load(Ordering::SeqCst) {
            res.error(Status::SERVICE_UNAVAILABLE, "Shutting down")
                .header("Retry-After", "1");
            return Ok(());
        }
        let check = if self.repo.is_connected() {
            self.repo.ping(lane, Duration::from_secs(1))
        } else {
            Err(pg::Error::unavailable(
                "not every PostgreSQL connection is up",
            ))
        };
        match check {
            Ok(()) => res.body_mut().extend_from_slice(br#"{"status":"ready"}"#),
            Err(e) => {
                eprintln!("records: readiness check failed: {e}");
                res.error(Status::SERVICE_UNAVAILABLE, "Database unavailable")
                    .header("Retry-After", "1");
            }
        }
        Ok(())
    }

    fn asset(&self, name: &str, res: &mut Response<'_>) -> Outcome {
        match self.assets.get(name) {
            Some((content_type, bytes)) => {
                res.content_type(content_type);
                res.body_mut().extend_from_slice(bytes);
                Ok(())
            }
            None => not_found(res),
        }
    }
}

impl Service for RecordsService {
    fn call(&self, req: &Request<'_>, res: &mut Response<'_>) {
        if let Err(failure) = self.route(req, res) {
            failure.write(res);
        }
    }
}

fn not_found(res: &mut Response<'_>) -> Outcome {
    res.error(Status::NOT_FOUND, "Not Found");
    Ok(())
}

fn not_allowed(res: &mut Response<'_>, allow: &'static str) -> Outcome {
    res.error(Status::METHOD_NOT_ALLOWED, "Method Not Allowed")
        .header("Allow", allow);
    Ok(())
}

fn write_json<T: Serialize + ?Sized>(res: &mut Response<'_>, value: &T) {
    // Serializing plain structs of numbers and strings into a Vec cannot fail.
    let _ = sonic_rs::to_writer(res.body_mut(), value);
}

/// `email` from the query string: missing, empty or undecodable is "No email provided".
fn required_email<'q>(req: &Request<'q>) -> Result<Cow<'q, str>, Failure> {
    match param(req.query(), "email") {
        Ok(Some(e)) if !e.is_empty() => Ok(e),
        Ok(_) => Err(Failure::BadRequest(NO_EMAIL.into())),
        Err(MalformedQuery) => Err(Failure::BadRequest(INVALID_PAYLOAD.into())),
    }
}

/// A path id: an optional sign and decimal digits, of any length (as Python's `int`). `value`
/// saturates outside i64, which is outside int4 anyway; `Display` shows the canonical digits.
pub struct PathId<'a> {
    pub value: i64,
    negative: bool,
    /// The digits without leading zeros, borrowed from the path: no allocation per lookup.
    digits: &'a str,
}

impl std::fmt::Display for PathId<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.negative && self.digits != "0" {
            f.write_str("-")?;
        }
        f.write_str(self.digits)
    }
}

pub fn parse_id(raw: &str) -> Option<PathId<'_>> {
    let (negative, digits) = match raw.as_bytes().first()? {
        b'-' => (true, &raw[1..]),
        b'+' => (false, &raw[1..]),
        _ => (false, raw),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let trimmed = digits.trim_start_matches('0');
    let digits = if trimmed.is_empty() { "0" } else { trimmed };
    let value = digits
        .parse::<i64>()
        .map(|v| if negative { -v } else { v })
        .unwrap_or(if negative { i64::MIN } else { i64::MAX });
    Some(PathId {
        value,
        negative,
        digits,
    })
}

/// Deepest JSON nesting accepted in a request body; the payload needs 1.
pub const MAX_JSON_DEPTH: usize = 32;

/// Whether the arrays and objects in `json` nest at most `max` deep (strings skipped, escapes
/// honoured). A linear scan with no recursion; malformed JSON is left to the parser.
pub fn nesting_within(json: &[u8], max: usize) -> bool {
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    for &b in json {
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > max {
                    return false;
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    true
}

fn parse_i64(s: &str) -> Option<i64> {
    let s = s.trim();
    let digits = s.strip_prefix(['-', '+']).unwrap_or(s);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_ids() {
        let cases: &[(&str, Option<(i64, &str)>)] = &[
            ("1", Some((1, "1"))),
            ("007", Some((7, "7"))),
            ("+5", Some((5, "5"))),
            ("-3", Some((-3, "-3"))),
            ("2147483648", Some((2147483648, "2147483648"))),
            (
                "99999999999999999999999",
                Some((i64::MAX, "99999999999999999999999")),
            ),
            ("abc", None),
            ("1.5", None),
            ("", None),
            ("-", None),
            (" 1", None),
        ];
        for (raw, want) in cases {
            let got = parse_id(raw).map(|p| (p.value, p.to_string()));
            let want = want.map(|(v, s)| (v, s.to_string()));
            assert_eq!(got, want, "{raw:?}");
        }
    }

    #[test]
    fn json_encoding_of_records() {
        let mut out = Vec::new();
        sonic_rs::to_writer(
            &mut out,
            &RecordJson {
                id: 1,
                email: "a\"b@c.com",
                text: None,
            },
        )
        .unwrap();
        assert_eq!(out, br#"{"id":1,"email":"a\"b@c.com","text":null}"#);
        out.clear();
        sonic_rs::to_writer(&mut out, &[("a@b.com", Some("hi")), ("c@d.com", None)]).unwrap();
        assert_eq!(out, br#"[["a@b.com","hi"],["c@d.com",null]]"#);
    }

    #[test]
    fn nesting_depth() {
        assert!(nesting_within(br#"{"a":[[1]]}"#, 3));
        assert!(!nesting_within(br#"{"a":[[1]]}"#, 2));
        assert!(
            nesting_within(br#"{"a":"[[[[[[\"[[["}"#, 1),
            "brackets in strings do not count"
        );
        let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        assert!(!nesting_within(deep.as_bytes(), MAX_JSON_DEPTH));
    }

    #[test]
    fn payloads() {
        let ok: TextPayload =
            sonic_rs::from_slice(br#"{"text":"hello","extra":[1,{"a":2}]}"#).unwrap();
        assert_eq!(ok.text, "hello");
        for bad in [
            &br#"{"text":null}"#[..],
            br#"{"text":1}"#,
            br#"{}"#,
            b"[]",
            b"",
            b"{",
            br#""text""#,
        ] {
            assert!(
                sonic_rs::from_slice::<TextPayload>(bad).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }
}
