//! What the records service counts, and the whole `/metrics` answer: its own counters (requests
//! by route, queries by statement), the HTTP core's, the PostgreSQL connections' state, the
//! process and the build.
//!
//! Counting is per thread ([`Striped`]) and can be switched off (`METRICS=off`): the handlers
//! then skip it, which is how `make bench` measures what it costs.

use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use crate::http::{ServerHandle, Status};
use crate::metrics::{
    process::Process, Exposition, Format, Histogram, HistogramSnapshot, Registry, Source, Striped,
    Unit, DURATION_BUCKETS, NANOS,
};
use crate::pg::{self, ErrorKind};

use super::repo::{Repository, STATEMENTS};

/// A request's route, by template: the label requests are counted under (never the raw path,
/// whose values are unbounded).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    UserById,
    User,
    Users,
    Livez,
    Readyz,
    Metrics,
    OpenApi,
    Docs,
    Redoc,
    Index,
    Static,
    Unmatched,
}

impl Route {
    pub const ALL: [Route; 12] = [
        Route::UserById,
        Route::User,
        Route::Users,
        Route::Livez,
        Route::Readyz,
        Route::Metrics,
        Route::OpenApi,
        Route::Docs,
        Route::Redoc,
        Route::Index,
        Route::Static,
        Route::Unmatched,
    ];

    /// The route serving `path` (without the query).
    pub fn of(path: &str) -> Route {
        if path.starts_with("/user/") {
            return Route::UserById;
        }
        match path {
            "/user" => Route::User,
            "/users" => Route::Users,
            "/livez" => Route::Livez,
            "/readyz" => Route::Readyz,
            "/metrics" => Route::Metrics,
            "/openapi.json" => Route::OpenApi,
            "/docs" => Route::Docs,
            "/redoc" => Route::Redoc,
            "/" => Route::Index,
            p if p.starts_with("/static/") => Route::Static,
            _ => Route::Unmatched,
        }
    }

    pub fn template(self) -> &'static str {
        match self {
            Route::UserById => "/user/{id}",
            Route::User => "/user",
            Route::Users => "/users",
            Route::Livez => "/livez",
            Route::Readyz => "/readyz",
            Route::Metrics => "/metrics",
            Route::OpenApi => "/openapi.json",
            Route::Docs => "/docs",
            Route::Redoc => "/redoc",
            Route::Index => "/",
            Route::Static => "/static/{path}",
            Route::Unmatched => "unmatched",
        }
    }
}

const METHODS: [&str; 8] = [
    "GET", "HEAD", "POST", "DELETE", "PUT", "PATCH", "OPTIONS", "other",
];

fn method_index(method: &str) -> usize {
    METHODS[..7].iter().position(|m| *m == method).unwrap_or(7)
}

const OUTCOMES: [&str; 8] = [
    "ok",
    "timeout",
    "overloaded",
    "unavailable",
    "connection_lost",
    "canceled",
    "constraint",
    "error",
];

fn outcome_index<T>(result: &Result<T, pg::Error>) -> usize {
    match result {
        Ok(_) => 0,
        Err(e) => match e.kind() {
            ErrorKind::Timeout => 1,
            ErrorKind::Overloaded => 2,
            ErrorKind::Unavailable
            | ErrorKind::ConnectFailed
            | ErrorKind::AuthFailed
            | ErrorKind::UnknownDatabase => 3,
            ErrorKind::ConnectionLost => 4,
            ErrorKind::QueryCanceled => 5,
            ErrorKind::StringTooLong | ErrorKind::CheckViolation | ErrorKind::UniqueViolation => 6,
            ErrorKind::OtherDatabase | ErrorKind::Protocol => 7,
        },
    }
}

/// Why a 503 was answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unavailable {
    /// No connection to PostgreSQL: the circuit is open.
    Database,
    ConnectionLost,
    Overloaded,
    Timeout,
    QueryCanceled,
    /// `/readyz` failed its check.
    NotReady,
    /// `/readyz` while draining.
    ShuttingDown,
}

impl Unavailable {
    const ALL: [Unavailable; 7] = [
        Unavailable::Database,
        Unavailable::ConnectionLost,
        Unavailable::Overloaded,
        Unavailable::Timeout,
        Unavailable::QueryCanceled,
        Unavailable::NotReady,
        Unavailable::ShuttingDown,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Unavailable::Database => "database",
            Unavailable::ConnectionLost => "connection_lost",
            Unavailable::Overloaded => "overloaded",
            Unavailable::Timeout => "timeout",
            Unavailable::QueryCanceled => "query_canceled",
            Unavailable::NotReady => "not_ready",
            Unavailable::ShuttingDown => "shutting_down",
        }
    }

    /// The cause of a 503 for a database error of `kind`, if it is one.
    pub fn of(kind: ErrorKind) -> Option<Unavailable> {
        Some(match kind {
            ErrorKind::Unavailable
            | ErrorKind::ConnectFailed
            | ErrorKind::AuthFailed
            | ErrorKind::UnknownDatabase => Unavailable::Database,
            ErrorKind::ConnectionLost => Unavailable::ConnectionLost,
            ErrorKind::Overloaded => Unavailable::Overloaded,
            ErrorKind::Timeout => Unavailable::Timeout,
            ErrorKind::QueryCanceled => Unavailable::QueryCanceled,
            _ => return None,
        })
    }
}

const STATUSES: usize = Status::NAMED.len() + 1;
const DURATION_CELLS: usize = Histogram::cells(DURATION_BUCKETS);

// The layout of the cells.
const REQUESTS: usize = 0;
const REQUEST_DURATIONS: usize = REQUESTS + Route::ALL.len() * METHODS.len() * STATUSES;
/// Requests in a handler: +1 at the start, -1 (wrapping) at the end, in the thread's own cell.
const IN_FLIGHT: usize = REQUEST_DURATIONS + Route::ALL.len() * DURATION_CELLS;
const QUERIES: usize = IN_FLIGHT + 1;
const QUERY_DURATIONS: usize = QUERIES + STATEMENTS.len() * OUTCOMES.len();
const UNAVAILABLE: usize = QUERY_DURATIONS + STATEMENTS.len() * DURATION_CELLS;
const WIDTH: usize = UNAVAILABLE + Unavailable::ALL.len();

fn request_durations(route: Route) -> Histogram {
    Histogram {
        base: REQUEST_DURATIONS + route as usize * DURATION_CELLS,
        bounds: DURATION_BUCKETS,
    }
}

fn query_durations(statement: usize) -> Histogram {
    Histogram {
        base: QUERY_DURATIONS + statement * DURATION_CELLS,
        bounds: DURATION_BUCKETS,
    }
}

/// The service's own counters.
pub struct Metrics {
    cells: Striped,
    enabled: bool,
}

impl Metrics {
    /// Counters for about `threads` recording threads; with `enabled` false nothing is counted.
    pub fn new(threads: usize, enabled: bool) -> Metrics {
        Metrics {
            cells: Striped::new(if enabled { WIDTH } else { 1 }, threads),
            enabled,
        }
    }

    pub fn enabled(&self) -> bool {
        self.enabled
    }

    pub fn request_started(&self) {
        if self.enabled {
            self.cells.inc(IN_FLIGHT);
        }
    }

    pub fn request_finished(&self, route: Route, method: &str, status: Status, took: Duration) {
        if !self.enabled {
            return;
        }
        self.cells.add(IN_FLIGHT, u64::MAX);
        let i =
            (route as usize * METHODS.len() + method_index(method)) * STATUSES + status.ordinal();
        self.cells.inc(REQUESTS + i);
        request_durations(route).observe(&self.cells, took);
    }

    /// Counts a query of statement `STATEMENTS[statement]` and its outcome.
    pub fn query<T>(&self, statement: usize, result: &Result<T, pg::Error>, took: Duration) {
        if !self.enabled || statement >= STATEMENTS.len() {
            return;
        }
        self.cells
            .inc(QUERIES + statement * OUTCOMES.len() + outcome_index(result));
        query_durations(statement).observe(&self.cells, took);
    }

    /// Requests started and not finished. Each thread's cell holds its starts less its ends, so
    /// a request that starts and ends on one thread is never half counted; one whose coroutine
    /// moved to another thread while the shards were being summed may be, and a sum that
    /// comes out below zero reads as 0.
    pub fn in_flight(&self) -> u64 {
        let net = self.cells.sum(IN_FLIGHT) as i64;
        net.max(0) as u64
    }

    pub fn unavailable(&self, cause: Unavailable) {
        if self.enabled {
            self.cells.inc(UNAVAILABLE + cause as usize);
        }
    }
}

/// A rendered answer is reused for this long: `/metrics` may be public (the default), and a
/// client asking for it in a loop must not make the server sum every counter, list its open
/// descriptors and lock every PostgreSQL outbox once per request.
pub const MIN_RENDER_INTERVAL: Duration = Duration::from_millis(250);

/// The `/metrics` answer: rendered at most once per [`MIN_RENDER_INTERVAL`] per format, by one
/// caller at a time (the others get the answer rendered last, a few milliseconds old).
pub struct Page {
    registry: Registry,
    /// Per format: when it was rendered last, and the text.
    cache: Mutex<[Option<Rendered>; 2]>,
}

type Rendered = (Instant, Arc<String>);

impl Page {
    pub fn new(registry: Registry) -> Page {
        Page {
            registry,
            cache: Mutex::new([None, None]),
        }
    }

    pub fn render(&self, format: Format) -> Arc<String> {
        let slot = format as usize;
        let mut cache = match self.cache.try_lock() {
            Ok(cache) => cache,
            // A render panicked while holding the lock: its data (a cache) is still good.
            Err(std::sync::TryLockError::Poisoned(poisoned)) => poisoned.into_inner(),
            // Another scrape is rendering: wait for it (a short, bounded wait), then share its
            // result if it rendered this format.
            Err(std::sync::TryLockError::WouldBlock) => crate::sync::lock(&self.cache),
        };
        if let Some((at, text)) = &cache[slot] {
            if at.elapsed() < MIN_RENDER_INTERVAL {
                return text.clone();
            }
        }
        let text = Arc::new(self.registry.render(format));
        cache[slot] = Some((Instant::now(), text.clone()));
        text
    }
}

/// Everything `/metrics` shows, read at each scrape.
pub struct Exporter {
    metrics: Arc<Metrics>,
    repo: Arc<Repository>,
    /// The main listener, once it runs (the service exists before its server does).
    server: Arc<OnceLock<ServerHandle>>,
}

impl Exporter {
    /// The registry of the `/metrics` answer: the service's counters and state, then the
    /// process's.
    pub fn page(
        metrics: Arc<Metrics>,
        repo: Arc<Repository>,
        server: Arc<OnceLock<ServerHandle>>,
    ) -> Page {
        let mut registry = Registry::default();
        registry.add(Exporter {
            metrics,
            repo,
            server,
        });
        registry.add(Process);
        Page::new(registry)
    }

    fn requests(&self, out: &mut Exposition<'_>) {
        let c = &self.metrics.cells;
        if !self.metrics.enabled {
            return;
        }
        // Only the (route, method, status) cells ever counted: a series per request kind seen.
        let series: Vec<_> = (0..Route::ALL.len() * METHODS.len() * STATUSES)
            .filter_map(|i| {
                let n = c.sum(REQUESTS + i);
                let (route, rest) = (
                    Route::ALL[i / (METHODS.len() * STATUSES)],
                    i % (METHODS.len() * STATUSES),
                );
                let labels = [
                    ("route", route.template()),
                    ("method", METHODS[rest / STATUSES]),
                    ("status", Status::ordinal_label(rest % STATUSES)),
                ];
                (n > 0).then_some((labels, n))
            })
            .collect();
        out.counters(
            "records_service_http_requests",
            "Requests answered by a route, by route template, method and status.",
            None,
            series.iter().map(|(l, n)| (&l[..], *n)),
        );
        let durations: Vec<([(&str, &str); 1], HistogramSnapshot)> = Route::ALL
            .iter()
            .map(|r| {
                (
                    [("route", r.template())],
                    request_durations(*r).snapshot(c, NANOS),
                )
            })
            .filter(|(_, h)| h.count() > 0)
            .collect();
        out.histograms(
            "records_service_http_request_duration",
            "Time in a route's handler, by route template.",
            Some(Unit::Seconds),
            durations.iter().map(|(l, h)| (&l[..], h.clone())),
        );
        out.gauges(
            "records_service_http_requests_in_flight",
            "Requests in a handler now.",
            None,
            [(&[][..], self.metrics.in_flight() as f64)],
        );
    }

    fn core(&self, out: &mut Exposition<'_>) {
        let Some(server) = self.server.get() else {
            return;
        };
        let s = server.stats();
        let none: &[(&str, &str)] = &[];
        out.gauges(
            "records_service_http_connections_open",
            "Open client connections.",
            None,
            [(none, s.open as f64)],
        );
        out.counters(
            "records_service_http_connections_accepted",
            "Client connections accepted.",
            None,
            [(none, s.accepted)],
        );
        let refused: Vec<[(&str, &str); 1]> = s
            .refused
            .iter()
            .map(|(r, _)| [("reason", r.label())])
            .collect();
        out.counters(
            "records_service_http_connections_refused",
            "Connections refused (503 or closed unanswered), by reason.",
            None,
            refused
                .iter()
                .zip(&s.refused)
                .map(|(l, (_, n))| (&l[..], *n)),
        );
        out.counters(
            "records_service_http_connections_evicted",
            "Idle keep-alive connections closed to make room at the connection cap.",
            None,
            [(none, s.evicted)],
        );
        self.core_answers(out, &s);
        self.unavailable(out, &s);
    }

    /// The core's own answers, its timeouts, and bytes.
    fn core_answers(&self, out: &mut Exposition<'_>, s: &crate::http::ServerStats) {
        let none: &[(&str, &str)] = &[];
        let core: Vec<[(&str, &str); 1]> = s
            .core_responses
            .iter()
            .map(|(status, _)| [("status", *status)])
            .collect();
        out.counters(
            "records_service_http_core_responses",
            "Answers the HTTP core gave without a route (malformed or refused requests).",
            None,
            core.iter()
                .zip(&s.core_responses)
                .map(|(l, (_, n))| (&l[..], *n)),
        );
        let timeouts: Vec<[(&str, &str); 1]> = s
            .timeouts
            .iter()
            .map(|(t, _)| [("kind", t.label())])
            .collect();
        out.counters(
            "records_service_http_timeouts",
            "Deadlines clients missed, by kind (head, body, idle, write).",
            None,
            timeouts
                .iter()
                .zip(&s.timeouts)
                .map(|(l, (_, n))| (&l[..], *n)),
        );
        out.counters(
            "records_service_http_received",
            "Bytes read from clients.",
            Some(Unit::Bytes),
            [(none, s.received_bytes)],
        );
        out.counters(
            "records_service_http_sent",
            "Bytes written to clients.",
            Some(Unit::Bytes),
            [(none, s.sent_bytes)],
        );
    }

    /// Every 503, by cause: the service's and the HTTP core's.
    fn unavailable(&self, out: &mut Exposition<'_>, s: &crate::http::ServerStats) {
        let c = &self.metrics.cells;
        let refused = |why| {
            s.refused
                .iter()
                .find(|(r, _)| *r == why)
                .map_or(0, |(_, n)| *n)
        };
        let mut causes: Vec<([(&str, &str); 1], u64)> = Vec::new();
        if self.metrics.enabled {
            causes.extend(
                Unavailable::ALL
                    .iter()
                    .map(|u| ([("cause", u.label())], c.sum(UNAVAILABLE + *u as usize))),
            );
        }
        causes.push(([("cause", "memory")], refused(crate::http::Refused::Memory)));
        causes.push((
            [("cause", "connection_cap")],
            refused(crate::http::Refused::Cap),
        ));
        out.counters(
            "records_service_http_unavailable",
            "503 answers, by cause.",
            None,
            causes.iter().map(|(l, n)| (&l[..], *n)),
        );
    }

    fn queries(&self, out: &mut Exposition<'_>) {
        if !self.metrics.enabled {
            return;
        }
        let c = &self.metrics.cells;
        let mut series = Vec::new();
        for (s, statement) in STATEMENTS.iter().map(|st| st.name).enumerate() {
            for (o, outcome) in OUTCOMES.iter().enumerate() {
                let n = c.sum(QUERIES + s * OUTCOMES.len() + o);
                if n > 0 {
                    series.push(([("statement", statement), ("outcome", *outcome)], n));
                }
            }
        }
        out.counters(
            "records_service_pg_queries",
            "Queries by prepared statement and outcome.",
            None,
            series.iter().map(|(l, n)| (&l[..], *n)),
        );
        let durations: Vec<([(&str, &str); 1], HistogramSnapshot)> = STATEMENTS
            .iter()
            .enumerate()
            .map(|(s, st)| {
                (
                    [("statement", st.name)],
                    query_durations(s).snapshot(c, NANOS),
                )
            })
            .filter(|(_, h)| h.count() > 0)
            .collect();
        out.histograms(
            "records_service_pg_query_duration",
            "From a query's submission to its answer, by statement.",
            Some(Unit::Seconds),
            durations.iter().map(|(l, h)| (&l[..], h.clone())),
        );
    }

    fn connections(&self, out: &mut Exposition<'_>) {
        struct Conn {
            labels: [(&'static str, String); 2],
            up: bool,
            in_flight: usize,
            reconnects: u64,
            reprepared: u64,
            resent: u64,
        }
        let mut conns = Vec::new();
        let mut batches: Vec<(&'static str, HistogramSnapshot)> = Vec::new();
        for (pool, clients) in self.repo.pools() {
            let mut batch = HistogramSnapshot::default();
            for (i, client) in clients.iter().enumerate() {
                let stats = client.stats();
                batch.merge(&stats.batches());
                conns.push(Conn {
                    labels: [("pool", pool.to_string()), ("conn", i.to_string())],
                    up: client.is_connected(),
                    in_flight: client.in_flight(),
                    reconnects: client.connects().saturating_sub(1),
                    reprepared: stats.reprepared.load(std::sync::atomic::Ordering::Relaxed),
                    resent: stats.resent.load(std::sync::atomic::Ordering::Relaxed),
                });
            }
            if !clients.is_empty() {
                batches.push((pool, batch));
            }
        }
        let labels: Vec<[(&str, &str); 2]> = conns
            .iter()
            .map(|c| {
                [
                    (c.labels[0].0, c.labels[0].1.as_str()),
                    (c.labels[1].0, c.labels[1].1.as_str()),
                ]
            })
            .collect();
        let each = |f: fn(&Conn) -> f64| {
            labels
                .iter()
                .zip(&conns)
                .map(move |(l, c)| (&l[..], f(c)))
                .collect::<Vec<_>>()
        };
        let batch_labels: Vec<[(&str, &str); 1]> =
            batches.iter().map(|(p, _)| [("pool", *p)]).collect();
        out.histograms(
            "records_service_pg_batch_queries",
            "Queries per socket write to PostgreSQL (the pipelining depth), by pool.",
            None,
            batch_labels
                .iter()
                .zip(&batches)
                .map(|(l, (_, h))| (&l[..], h.clone())),
        );
        out.gauges(
            "records_service_pg_in_flight_queries",
            "Queries sent or queued and not yet answered, per connection.",
            None,
            each(|c| c.in_flight as f64),
        );
        out.gauges(
            "records_service_pg_connection_up",
            "1 while the connection is established.",
            None,
            each(|c| f64::from(u8::from(c.up))),
        );
        out.gauges(
            "records_service_pg_circuit_open",
            "1 while queries on this connection fail at once (503): it is down and reconnecting.",
            None,
            each(|c| f64::from(u8::from(!c.up))),
        );
        let counters = |f: fn(&Conn) -> u64| {
            labels
                .iter()
                .zip(&conns)
                .map(move |(l, c)| (&l[..], f(c)))
                .collect::<Vec<_>>()
        };
        out.counters(
            "records_service_pg_reconnects",
            "Connections re-established after the first.",
            None,
            counters(|c| c.reconnects),
        );
        out.counters(
            "records_service_pg_reprepares",
            "Statements prepared again (a stale plan, or a pooler that lost them).",
            None,
            counters(|c| c.reprepared),
        );
        out.counters(
            "records_service_pg_resent_queries",
            "Reads sent again because another query of their pipelined group failed.",
            None,
            counters(|c| c.resent),
        );
    }
}

impl Source for Exporter {
    fn collect(&self, out: &mut Exposition<'_>) {
        self.requests(out);
        self.core(out);
        self.queries(out);
        self.connections(out);
        let none: &[(&str, &str)] = &[];
        out.counters(
            "records_service_log_events_dropped",
            "Log lines dropped because the log writer's queue was full.",
            None,
            [(none, crate::logging::dropped_events())],
        );
        out.gauges(
            "records_service_build_info",
            "The version and source revision of this build; always 1.",
            None,
            [(
                &[
                    ("version", env!("CARGO_PKG_VERSION")),
                    (
                        "revision",
                        option_env!("RECORDS_REVISION").unwrap_or("unknown"),
                    ),
                ][..],
                1.0,
            )],
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_are_templates_never_raw_paths() {
        assert_eq!(Route::of("/user/12345").template(), "/user/{id}");
        assert_eq!(Route::of("/user/").template(), "/user/{id}");
        assert_eq!(Route::of("/user").template(), "/user");
        assert_eq!(Route::of("/static/app.js").template(), "/static/{path}");
        assert_eq!(Route::of("/nope/42").template(), "unmatched");
        assert_eq!(Route::of("/users/").template(), "unmatched");
        for (i, r) in Route::ALL.iter().enumerate() {
            assert_eq!(*r as usize, i, "ALL is in declaration order");
        }
    }

    #[test]
    fn every_error_kind_has_an_outcome() {
        let e = pg::Error::new(ErrorKind::Overloaded, "x");
        assert_eq!(OUTCOMES[outcome_index::<()>(&Err(e))], "overloaded");
        assert_eq!(OUTCOMES[outcome_index(&Ok(()))], "ok");
    }

    /// A render that panics (a bug in a source) must not leave the page locked for good: the
    /// next scrape, on another thread, gets an answer.
    #[test]
    fn a_panicking_render_does_not_wedge_the_page() {
        struct Flaky(std::sync::atomic::AtomicBool);
        impl Source for Flaky {
            fn collect(&self, out: &mut Exposition<'_>) {
                if !self.0.swap(true, std::sync::atomic::Ordering::SeqCst) {
                    panic!("the first render fails");
                }
                out.gauges("t_ok", "Rendered.", None, [(&[][..], 1.0)]);
            }
        }
        let mut registry = Registry::default();
        registry.add(Flaky(std::sync::atomic::AtomicBool::new(false)));
        let page = Arc::new(Page::new(registry));
        let first =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| page.render(Format::Text)));
        assert!(first.is_err());
        let (tx, rx) = std::sync::mpsc::channel();
        let p = page.clone();
        std::thread::spawn(move || tx.send(p.render(Format::Text)).unwrap());
        let text = rx
            .recv_timeout(Duration::from_secs(5))
            .expect("the second scrape hangs on the poisoned lock");
        assert!(text.contains("t_ok 1.0"), "{text}");
    }

    #[test]
    fn in_flight_is_never_negative_while_requests_come_and_go() {
        let m = Arc::new(Metrics::new(4, true));
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let worker = {
            let (m, stop) = (m.clone(), stop.clone());
            std::thread::spawn(move || {
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    m.request_started();
                    m.request_finished(Route::Livez, "GET", Status::OK, Duration::ZERO);
                }
            })
        };
        for _ in 0..200_000 {
            assert!(m.in_flight() <= 1, "{}", m.in_flight());
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        worker.join().unwrap();
        assert_eq!(m.in_flight(), 0);
    }

    #[test]
    fn requests_are_counted_by_route_method_and_status() {
        let m = Metrics::new(2, true);
        m.request_started();
        m.request_finished(
            Route::UserById,
            "GET",
            Status::NOT_FOUND,
            Duration::from_micros(300),
        );
        m.request_started();
        m.request_finished(Route::User, "BREW", Status::OK, Duration::from_millis(3));
        let i = |r: Route, m: usize, s: Status| {
            REQUESTS + (r as usize * METHODS.len() + m) * STATUSES + s.ordinal()
        };
        assert_eq!(m.cells.sum(i(Route::UserById, 0, Status::NOT_FOUND)), 1);
        assert_eq!(
            m.cells.sum(i(Route::User, 7, Status::OK)),
            1,
            "other method"
        );
        assert_eq!(m.in_flight(), 0);
        let off = Metrics::new(2, false);
        off.request_finished(Route::User, "GET", Status::OK, Duration::ZERO);
        assert_eq!(off.cells.width(), 1, "nothing is allocated when off");
    }
}
