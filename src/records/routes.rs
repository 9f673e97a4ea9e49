//! The route table: which handler serves each (route, method), which routes each listener
//! serves (`Surface`), and the one place a request is timed, counted, answered on failure and
//! logged (`Service::call`). The routes themselves (path to `Route`, its template) are in
//! `route`, the handlers in `handlers`, the failures in `failure`.

use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU8};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use crate::auth::{Access, Denial, Gate};
use crate::http::{Request, Response, ServerHandle, Service, Status};
use crate::limit::{RateLimiter, TrustedProxies};
use crate::logging::{AccessLog, Untrusted};

use super::assets::{Asset, Assets};
use super::failure::{Failed, Failure, Handled};
use super::metrics::{Exporter, Metrics, Page};
use super::repo::Repository;
use super::route::Route;

const OPENAPI: &str = include_str!("../../docs/openapi.json");

pub struct RecordsService {
    pub(super) repo: Arc<Repository>,
    pub(super) assets: Arc<Assets>,
    /// `/openapi.json`, served as a static file (compressed variants, ETag) from the
    /// document built into the binary.
    openapi: Arc<Asset>,
    /// Set when shutdown begins: `/readyz` turns 503 so a load balancer stops sending.
    pub(super) draining: Arc<AtomicBool>,
    pub(super) metrics: Arc<Metrics>,
    /// What `/metrics` shows.
    pub(super) exporter: Arc<Page>,
    /// The main listener's server, once it runs: its connection counters are exported.
    server: Arc<OnceLock<ServerHandle>>,
    surface: Surface,
    access_log: AccessLog,
    /// The per-client rate limit (`RATE_LIMIT_PER_CLIENT`), one for the process; `None` when
    /// off (and on the metrics listener): one branch per request then.
    limiter: Option<Arc<RateLimiter>>,
    /// The same rate for `/readyz`, in buckets of its own: a probe is never refused and
    /// spends none of its client's tokens, but past this a client's probes are answered with
    /// the last check's outcome, not a query each.
    probes: Option<Arc<RateLimiter>>,
    /// The outcome of the last `/readyz` database check ([`LAST_CHECK_READY`] and
    /// [`LAST_CHECK_FAILED`]; 0: none yet), shared by the listeners.
    pub(super) last_check: Arc<AtomicU8>,
    /// Where `/metrics` finds the limiter (set with it).
    limiter_seen: Arc<OnceLock<Arc<RateLimiter>>>,
    /// `TRUSTED_PROXIES`: who may name the client (the rate limit's key, the access log's
    /// `client`).
    trusted: TrustedProxies,
    /// Access control, when `AUTH_REQUIRED` is not `off`: the one branch a request pays
    /// when it is.
    gate: Option<Arc<Gate>>,
}

impl RecordsService {
    /// The service on every route, `/metrics` included, logging 5xx answers. Queries are
    /// counted in the repository's metrics, requests too.
    pub fn new(repo: Arc<Repository>, static_dir: &str, draining: Arc<AtomicBool>) -> Self {
        let metrics = repo.metrics().clone();
        let server = Arc::new(OnceLock::new());
        let limiter_seen = Arc::new(OnceLock::new());
        let exporter = Arc::new(Exporter::page(
            metrics.clone(),
            repo.pools(),
            server.clone(),
            limiter_seen.clone(),
        ));
        RecordsService {
            repo,
            assets: Arc::new(Assets::load(static_dir)),
            openapi: Arc::new(Asset::new("openapi.json", OPENAPI.as_bytes().to_vec())),
            draining,
            metrics,
            exporter,
            server,
            surface: Surface::All,
            access_log: AccessLog::Errors,
            limiter: None,
            probes: None,
            last_check: Arc::new(AtomicU8::new(0)),
            limiter_seen,
            trusted: TrustedProxies::default(),
            gate: None,
        }
    }

    /// The same service (same counters, same draining flag) for another listener, serving
    /// `surface`.
    pub fn with_surface(&self, surface: Surface) -> Self {
        RecordsService {
            repo: self.repo.clone(),
            assets: self.assets.clone(),
            openapi: self.openapi.clone(),
            draining: self.draining.clone(),
            metrics: self.metrics.clone(),
            exporter: self.exporter.clone(),
            server: self.server.clone(),
            surface,
            access_log: self.access_log,
            // The metrics listener (probes and scrapes) is not limited.
            limiter: self.limiter.clone().filter(|_| surface != Surface::Admin),
            probes: self.probes.clone().filter(|_| surface != Surface::Admin),
            last_check: self.last_check.clone(),
            limiter_seen: self.limiter_seen.clone(),
            trusted: self.trusted.clone(),
            gate: self.gate.clone(),
        }
    }

    pub fn access_log(mut self, access_log: AccessLog) -> Self {
        self.access_log = access_log;
        self
    }

    /// Tells clients apart by `trusted` (see [`TrustedProxies::client`]) and limits each to
    /// what `limiter` allows (none: no limit).
    pub fn clients(mut self, trusted: TrustedProxies, limiter: Option<RateLimiter>) -> Self {
        self.probes = limiter.as_ref().map(|l| Arc::new(l.for_probes()));
        self.limiter = limiter.map(Arc::new);
        if let Some(limiter) = &self.limiter {
            let _ = self.limiter_seen.set(limiter.clone());
        }
        self.trusted = trusted;
        self
    }

    /// The rate limit, before anything is done for the request (a flood of bad requests is
    /// limited too, and a 429 costs no query): 429 when its client is over the limit.
    /// `Ok(false)`: a `/readyz` past its client's rate, answered without a query of its own.
    #[inline]
    fn admit(&self, route: Route, req: &Request<'_>) -> Result<bool, Failure> {
        match &self.limiter {
            None => Ok(true),
            Some(limiter) => self.limit(limiter, route, req),
        }
    }

    /// Every route but the orchestrator's probes counts against the client's limit (a
    /// request whose peer the socket could not tell is let through). The probes are never
    /// refused; `/readyz`, whose check is a query, counts in buckets of its own.
    #[inline(never)]
    fn limit(
        &self,
        limiter: &RateLimiter,
        route: Route,
        req: &Request<'_>,
    ) -> Result<bool, Failure> {
        let limiter = match (route, &self.probes) {
            (Route::Livez, _) | (Route::Readyz, None) => return Ok(true),
            (Route::Readyz, Some(probes)) => probes,
            _ => limiter,
        };
        match self.client(req) {
            Some(client) if !limiter.admit(client) => match route {
                Route::Readyz => Ok(false),
                _ => Err(Failure::RateLimited {
                    policy: limiter.policy(),
                }),
            },
            _ => Ok(true),
        }
    }

    /// The request's client: its peer, or the address a trusted proxy gave for it.
    fn client(&self, req: &Request<'_>) -> Option<IpAddr> {
        let forwarded_for = req
            .headers()
            .iter()
            .filter(|h| h.name.eq_ignore_ascii_case("x-forwarded-for"))
            .map(|h| h.value);
        Some(self.trusted.client(req.peer()?.ip(), forwarded_for))
    }

    /// Requires bearer tokens as `gate` says (`None`: none).
    pub fn access_control(mut self, gate: Option<Arc<Gate>>) -> Self {
        self.gate = gate;
        self
    }

    /// The verdict of `gate` on a request: the token's subject when it needed and had a valid
    /// token, `None` when it needs none. Only requests the route table would serve are asked
    /// for a token: an unknown path is 404 and a wrong method 405 before any token is looked
    /// at (the routes are public in `/openapi.json`), and `/livez`, `/readyz`, `/metrics`,
    /// the documentation and the console never need one.
    #[inline(never)]
    fn authorize(&self, gate: &Gate, route: Route, req: &Request<'_>) -> Result<Subject, Failure> {
        let access = match (route, req.method()) {
            (Route::User, "POST" | "DELETE") => Access::Write,
            (Route::UserById | Route::User | Route::Users, "GET" | "HEAD") => Access::Read,
            _ => return Ok(None),
        };
        if !self.surface.serves(route) || !gate.guards(access) {
            return Ok(None);
        }
        // One field: two are ambiguous credentials (the field is not a list, RFC 9110 §5.3),
        // and a proxy reading the other one would see another principal than the one served.
        let mut fields = req
            .headers()
            .iter()
            .filter(|h| h.name.eq_ignore_ascii_case("authorization"));
        let authorization = fields.next().map(|h| h.value);
        if fields.next().is_some() {
            return Err(Failure::Denied(Denial::Malformed));
        }
        match gate.admit(authorization, access) {
            Ok(claims) => Ok(Some(claims.sub.unwrap_or_default())),
            Err(denial) => Err(Failure::Denied(denial)),
        }
    }

    /// Where the main listener's connection counters come from, once it runs.
    pub fn observe_server(&self, server: ServerHandle) {
        let _ = self.server.set(server);
    }

    /// The route table. `HEAD` is answered as `GET` (the HTTP core drops the body).
    #[inline(never)]
    /// `fresh`: false for a `/readyz` past its client's rate (it answers the last check's
    /// outcome).
    fn route(
        &self,
        route: Route,
        req: &Request<'_>,
        res: &mut Response<'_>,
        fresh: bool,
    ) -> Handled {
        let method = match req.method() {
            "HEAD" => "GET",
            m => m,
        };
        if !self.surface.serves(route) {
            return Err(Failure::not_found());
        }
        let affinity = req.conn_id();
        let path = req.path();
        match (route, method) {
            (Route::UserById, "GET") => self.get_by_id(affinity, &path["/user/".len()..], res),
            (Route::User, "GET") => self.get_by_email(req, affinity, res),
            (Route::User, "POST") => self.upsert(req, affinity, res),
            (Route::User, "DELETE") => self.delete(req, affinity, res),
            (Route::User, _) => Err(Failure::NotAllowed {
                allow: "GET, HEAD, POST, DELETE",
            }),
            (Route::Users, "GET") => self.list(req, affinity, res),
            (Route::Livez, "GET") => {
                res.body_mut().extend_from_slice(br#"{"status":"ok"}"#);
                Ok(())
            }
            (Route::Readyz, "GET") => self.readyz(affinity, res, fresh),
            (Route::Metrics, "GET") => self.metrics(req, res),
            (Route::OpenApi, "GET") => {
                self.openapi.answer(req, res);
                Ok(())
            }
            (Route::Docs, "GET") => self.asset(req, "docs.html", res),
            (Route::Redoc, "GET") => self.asset(req, "redoc.html", res),
            (Route::Index, "GET") => self.asset(req, "index.html", res),
            (Route::Static, "GET") => self.asset(req, &path["/static/".len()..], res),
            (Route::Unmatched, _) => Err(Failure::not_found()),
            // Every other route serves GET and HEAD only.
            (_, _) => Err(Failure::NotAllowed { allow: "GET, HEAD" }),
        }
    }
}

/// [`RecordsService::last_check`]: the database answered the last `/readyz` check.
pub(super) const LAST_CHECK_READY: u8 = 1;
/// [`RecordsService::last_check`]: it did not.
pub(super) const LAST_CHECK_FAILED: u8 = 2;

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

impl Surface {
    fn serves(self, route: Route) -> bool {
        match self {
            Surface::All => true,
            Surface::Public => route != Route::Metrics,
            Surface::Admin => matches!(route, Route::Metrics | Route::Livez | Route::Readyz),
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
        let mut subject = None;
        let mut denied = None;
        // A panicking handler is answered 500 by the HTTP core; it is counted (and logged) as
        // such here first, so the in-flight gauge does not keep it for ever.
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let fresh = self.admit(route, req)?;
            if let Some(gate) = &self.gate {
                subject = self.authorize(gate, route, req)?;
            }
            self.route(route, req, res, fresh)
        }));
        let (failed, panic) = match outcome {
            Ok(Ok(())) => (None, None),
            Ok(Err(failure)) => {
                if let Failure::Denied(d) = &failure {
                    denied = Some(d.label());
                }
                (failure.write(res, req, &self.metrics), None)
            }
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
            self.finish(&Finished {
                req,
                route,
                status,
                took: started.elapsed(),
                failed: failed.as_ref(),
                bytes: res.body().len(),
                subject: subject.as_deref(),
                denied,
            });
        }
        if let Some(panic) = panic {
            std::panic::resume_unwind(panic);
        }
    }
}

/// A request, answered: what is counted and logged of it.
struct Finished<'r, 'a> {
    req: &'r Request<'a>,
    route: Route,
    status: Status,
    took: Duration,
    /// Why it failed, when it was the server's failure.
    failed: Option<&'r Failed>,
    /// Body bytes sent.
    bytes: usize,
    /// The `sub` of the request's bearer token, when it needed one and it was valid.
    subject: Option<&'r str>,
    /// Why its token was refused (401 or 403), when it was.
    denied: Option<&'static str>,
}

/// The `sub` claim of a request's verified token ("" when the token has none), or `None`
/// for a request that needed no token.
type Subject = Option<String>;

/// The most of a token's `sub` an access log event shows: the claim is the client's text.
const MAX_LOGGED_SUBJECT_CHARS: usize = 128;

impl RecordsService {
    /// Counts a finished request and writes its access log event.
    #[inline(never)]
    fn finish(&self, done: &Finished<'_, '_>) {
        if self.metrics.enabled() {
            self.metrics
                .request_finished(done.route, done.req.method(), done.status, done.took);
        }
        let logged = match self.access_log {
            AccessLog::Off => false,
            AccessLog::Errors => done.status.is_server_error(),
            AccessLog::All => true,
        };
        if logged {
            access_log(done, self.client(done.req));
        }
    }
}

/// One access log event: no raw path or query (they may hold email addresses), the route
/// template instead; why it failed, if it was the server's failure; the connection's `peer`
/// and the `client` (the peer, or whom a trusted proxy named); the token's `sub` (escaped and
/// cut short: a token is signed, not trusted) or why it was refused. Never the token.
fn access_log(done: &Finished<'_, '_>, client: Option<IpAddr>) {
    let req = done.req;
    let peer = req.peer().map(tracing::field::display);
    let client = client.map(tracing::field::display);
    let sub = done.subject.map(|s| {
        let cut = s
            .char_indices()
            .nth(MAX_LOGGED_SUBJECT_CHARS)
            .map_or(s, |(i, _)| &s[..i]);
        tracing::field::display(Untrusted(cut))
    });
    let auth_failure = done.denied;
    let cause = done.failed.map(|f| f.cause);
    let error = done
        .failed
        .and_then(|f| f.error.as_ref())
        .map(|e| tracing::field::display(Untrusted(e)));
    tracing::info!(
        target: "access",
        event = "request",
        method = %Untrusted(req.method()),
        route = done.route.template(),
        status = done.status.as_u16(),
        duration_ms = done.took.as_secs_f64() * 1e3,
        bytes = done.bytes,
        request_id = req.request_id(),
        peer,
        client,
        sub,
        auth_failure,
        cause,
        error,
    );
}
