//! Routing and the handlers. Every error a client can see is decided here, in [`Failure`]:
//! validation failures (400/404), database trouble (503 with `Retry-After`) and the unexpected
//! (500). Database and internal error text goes to the log, never into a response.

use std::borrow::Cow;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::http::{Request, Response, ServerHandle, Service, Status};
use crate::logging::{AccessLog, Untrusted};
use crate::metrics::Format;
use crate::pg::{self, ErrorKind};

use super::assets::Assets;
use super::email::EmailAddress;
use super::metrics::{Exporter, Metrics, Page, Route, Unavailable};
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
    assets: Arc<Assets>,
    /// Set when shutdown begins: `/readyz` turns 503 so a load balancer stops sending.
    draining: Arc<AtomicBool>,
    metrics: Arc<Metrics>,
    /// What `/metrics` shows.
    exporter: Arc<Page>,
    /// The main listener's server, once it runs: its connection counters are exported.
    server: Arc<OnceLock<ServerHandle>>,
    surface: Surface,
    access_log: AccessLog,
}

/// Which routes a listener serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Surface {
    /// Every route, `/metrics` included.
    All,
    /// Every route but `/metrics` (it has a listener of its own: `METRICS_ADDR`).
    Public,
    /// `/metrics`, `/livez` and `/readyz` only (the `METRICS_ADDR` listener).
    Admin,
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
    /// Writes the answer; returns why it failed, for the access log, when it is the server's
    /// failure (a database error) rather than the client's.
    fn write(self, res: &mut Response<'_>, req: &Request<'_>, metrics: &Metrics) -> Option<Failed> {
        let request_id = req.request_id();
        let e = match self {
            Failure::BadRequest(detail) => {
                res.error(Status::BAD_REQUEST, &detail);
                return None;
            }
            Failure::NotFound(detail) => {
                res.error(Status::NOT_FOUND, &detail);
                return None;
            }
            Failure::Database(e) => e,
        };
        let cause = match e.kind() {
            // The service validates first; these are the database's backstops firing.
            ErrorKind::StringTooLong | ErrorKind::CheckViolation => {
                tracing::warn!(
                    event = "constraint_backstop",
                    request_id,
                    constraint = e.constraint().unwrap_or(""),
                    error = %Untrusted(&e),
                    "a database constraint caught what validation let through"
                );
                res.error(Status::BAD_REQUEST, INVALID_PAYLOAD);
                "constraint"
            }
            ErrorKind::Unavailable
            | ErrorKind::ConnectionLost
            | ErrorKind::ConnectFailed
            | ErrorKind::AuthFailed
            | ErrorKind::UnknownDatabase
            | ErrorKind::Overloaded
            | ErrorKind::Timeout
            | ErrorKind::QueryCanceled => {
                let cause = Unavailable::of(e.kind()).unwrap_or(Unavailable::Database);
                metrics.unavailable(cause);
                res.error(
                    Status::SERVICE_UNAVAILABLE,
                    "Service temporarily unavailable",
                )
                .header("Retry-After", "1");
                // No event of its own: the access log (errors, by default) has the 503 with
                // its cause and error, one event per request; the state changes behind it
                // (connection lost, circuit open) are logged once each by the client.
                cause.label()
            }
            ErrorKind::UniqueViolation | ErrorKind::OtherDatabase | ErrorKind::Protocol => {
                tracing::error!(
                    event = "database_error",
                    request_id,
                    code = e.code().unwrap_or(""),
                    error = %Untrusted(&e),
                    "answered 500"
                );
                res.error(Status::INTERNAL_SERVER_ERROR, "Internal Server Error");
                "database_error"
            }
        };
        Some(Failed {
            cause,
            error: Some(e),
        })
    }
}

/// Why a request failed on the server's side, for its access log event.
struct Failed {
    /// `database`, `timeout`, `panic`... (the label `/metrics` counts 503s by, where it is one).
    cause: &'static str,
    error: Option<pg::Error>,
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
    /// The service on every route, `/metrics` included, logging 5xx answers. Queries are
    /// counted in the repository's metrics, requests too.
    pub fn new(repo: Arc<Repository>, static_dir: &str, draining: Arc<AtomicBool>) -> Self {
        let metrics = repo.metrics().clone();
        let server = Arc::new(OnceLock::new());
        let exporter = Arc::new(Exporter::page(
            metrics.clone(),
            repo.clone(),
            server.clone(),
        ));
        RecordsService {
            repo,
            assets: Arc::new(Assets::load(static_dir)),
            draining,
            metrics,
            exporter,
            server,
            surface: Surface::All,
            access_log: AccessLog::Errors,
        }
    }

    /// The same service (same counters, same draining flag) for another listener, serving
    /// `surface`.
    pub fn with_surface(&self, surface: Surface) -> Self {
        RecordsService {
            repo: self.repo.clone(),
            assets: self.assets.clone(),
            draining: self.draining.clone(),
            metrics: self.metrics.clone(),
            exporter: self.exporter.clone(),
            server: self.server.clone(),
            surface,
            access_log: self.access_log,
        }
    }

    pub fn access_log(mut self, access_log: AccessLog) -> Self {
        self.access_log = access_log;
        self
    }

    /// Where the main listener's connection counters come from, once it runs.
    pub fn observe_server(&self, server: ServerHandle) {
        let _ = self.server.set(server);
    }

    fn route(&self, route: Route, req: &Request<'_>, res: &mut Response<'_>) -> Outcome {
        let method = match req.method() {
            "HEAD" => "GET",
            m => m,
        };
        let served = match (self.surface, route) {
            (Surface::Admin, Route::Metrics | Route::Livez | Route::Readyz) => true,
            (Surface::Admin, _) | (Surface::Public, Route::Metrics) => false,
            _ => true,
        };
        if !served {
            return not_found(res);
        }
        let lane = req.conn_id();
        let path = req.path();
        match (route, method) {
            (Route::UserById, "GET") => self.get_by_id(lane, &path["/user/".len()..], res),
            (Route::UserById, _) => not_allowed(res, "GET, HEAD"),
            (Route::User, "GET") => self.get_by_email(req, lane, res),
            (Route::User, "POST") => self.upsert(req, lane, res),
            (Route::User, "DELETE") => self.delete(req, lane, res),
            (Route::User, _) => not_allowed(res, "GET, HEAD, POST, DELETE"),
            (Route::Users, "GET") => self.list(req, lane, res),
            (Route::Livez, "GET") => {
                res.body_mut().extend_from_slice(br#"{"status":"ok"}"#);
                Ok(())
            }
            (Route::Readyz, "GET") => self.readyz(req, lane, res),
            (Route::Metrics, "GET") => {
                let format = Format::negotiate(req.header("accept"));
                let text = self.exporter.render(format);
                res.content_type(format.content_type());
                res.body_mut().extend_from_slice(text.as_bytes());
                Ok(())
            }
            (Route::OpenApi, "GET") => {
                res.body_mut().extend_from_slice(OPENAPI.as_bytes());
                Ok(())
            }
            (Route::Index, "GET") => self.asset("index.html", res),
            (Route::Static, "GET") => self.asset(&path["/static/".len()..], res),
            (Route::Unmatched, _) => not_found(res),
            (_, _) => not_allowed(res, "GET, HEAD"),
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
    fn readyz(&self, req: &Request<'_>, lane: u64, res: &mut Response<'_>) -> Outcome {
        if self.draining.load(Ordering::SeqCst) {
            self.metrics.unavailable(Unavailable::ShuttingDown);
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
                self.metrics.unavailable(Unavailable::NotReady);
                tracing::warn!(
                    event = "not_ready",
                    request_id = req.request_id(),
                    error = %Untrusted(&e),
                    "readiness check failed"
                );
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
        let route = Route::of(req.path());
        let counted = self.metrics.enabled();
        let timed = counted || self.access_log != AccessLog::Off;
        let started = timed.then(Instant::now);
        if counted {
            self.metrics.request_started();
        }
        // A panicking handler is answered 500 by the HTTP core; it is counted (and logged) as
        // such here first, so the in-flight gauge does not keep it for ever.
        let outcome =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.route(route, req, res)));
        let (failed, panic) = match outcome {
            Ok(Ok(())) => (None, None),
            Ok(Err(failure)) => (failure.write(res, req, &self.metrics), None),
            Err(panic) => {
                let failed = Failed {
                    cause: "panic",
                    error: None,
                };
                (Some(failed), Some(panic))
            }
        };
        if let Some(started) = started {
            let status = match panic {
                Some(_) => Status::INTERNAL_SERVER_ERROR,
                None => res.status_code(),
            };
            let took = started.elapsed();
            self.finish(req, route, status, took, failed.as_ref(), res.body().len());
        }
        if let Some(panic) = panic {
            std::panic::resume_unwind(panic);
        }
    }
}

impl RecordsService {
    /// Counts a finished request and writes its access log event.
    fn finish(
        &self,
        req: &Request<'_>,
        route: Route,
        status: Status,
        took: Duration,
        failed: Option<&Failed>,
        bytes: usize,
    ) {
        if self.metrics.enabled() {
            self.metrics
                .request_finished(route, req.method(), status, took);
        }
        let logged = match self.access_log {
            AccessLog::Off => false,
            AccessLog::Errors => status.is_server_error(),
            AccessLog::All => true,
        };
        if logged {
            access_log(req, route, status, took, failed, bytes);
        }
    }
}

/// One access log event: no raw path or query (they may hold email addresses), the route
/// template instead; and why it failed, if it was the server's failure.
fn access_log(
    req: &Request<'_>,
    route: Route,
    status: Status,
    took: Duration,
    failed: Option<&Failed>,
    bytes: usize,
) {
    let peer = req.peer().map(tracing::field::display);
    let cause = failed.map(|f| f.cause);
    let error = failed
        .and_then(|f| f.error.as_ref())
        .map(|e| tracing::field::display(Untrusted(e)));
    tracing::info!(
        target: "access",
        event = "request",
        method = %Untrusted(req.method()),
        route = route.template(),
        status = status.as_u16(),
        duration_ms = took.as_secs_f64() * 1e3,
        bytes,
        request_id = req.request_id(),
        peer,
        cause,
        error,
    );
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
