//! The service's own families of the `/metrics` answer: requests, the HTTP core's
//! connections and answers, 503s by cause, queries, the PostgreSQL connections, dropped log
//! lines and the build. The process's (`process_*`) are `crate::metrics::process`'s.

use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};

use crate::http::{ServerHandle, Status};
use crate::limit::RateLimiter;
use crate::metrics::{
    process::Process, Exposition, HistogramSnapshot, Registry, Source, Unit, NANOS,
};
use crate::pg::Client;
use crate::records::route::Route;
use crate::records::statements::Query;

use super::{
    query_durations, request_durations, Metrics, Page, Unavailable, AUTH_FAILURES, METHODS,
    OUTCOMES, QUERIES, RATE_LIMITED, REQUESTS, STATUSES, UNAVAILABLE,
};

/// Everything `/metrics` shows, read at each scrape.
pub struct Exporter {
    metrics: Arc<Metrics>,
    /// The PostgreSQL connections, by pool (`Repository::pools`).
    pools: Vec<(&'static str, Vec<Client>)>,
    /// The main listener, once it runs (the service exists before its server does).
    server: Arc<OnceLock<ServerHandle>>,
    /// The rate limiter, once the service has one (`RATE_LIMIT_PER_CLIENT`).
    limiter: Arc<OnceLock<Arc<RateLimiter>>>,
}

impl Exporter {
    /// The registry of the `/metrics` answer: the service's counters and state, then the
    /// process's.
    pub fn page(
        metrics: Arc<Metrics>,
        pools: [(&'static str, &[Client]); 3],
        server: Arc<OnceLock<ServerHandle>>,
        limiter: Arc<OnceLock<Arc<RateLimiter>>>,
    ) -> Page {
        let mut registry = Registry::default();
        registry.add(Exporter {
            metrics,
            pools: pools.map(|(pool, clients)| (pool, clients.to_vec())).into(),
            server,
            limiter,
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
        let series: Vec<_> = (0..Route::COUNT * METHODS.len() * STATUSES)
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

    /// The rate limiter: requests it refused, and the clients it tracks (0 when it is off).
    fn rate_limit(&self, out: &mut Exposition<'_>) {
        let none: &[(&str, &str)] = &[];
        if self.metrics.enabled {
            out.counters(
                "records_service_http_rate_limited",
                "Requests answered 429: their client was over RATE_LIMIT_PER_CLIENT.",
                None,
                [(none, self.metrics.cells.sum(RATE_LIMITED))],
            );
        }
        let tracked = self.limiter.get().map_or(0, |l| l.tracked_clients());
        out.gauges(
            "records_service_rate_limit_tracked_clients",
            "Clients the rate limiter tracks now (at most RATE_LIMIT_MAX_CLIENTS).",
            None,
            [(none, tracked as f64)],
        );
    }

    /// Requests refused for their credentials, by reason (every reason, zeros included, so
    /// that a rate over them exists before the first refusal).
    fn auth_failures(&self, out: &mut Exposition<'_>) {
        if !self.metrics.enabled {
            return;
        }
        let c = &self.metrics.cells;
        let reasons: Vec<([(&str, &str); 1], u64)> = crate::auth::Denial::LABELS
            .iter()
            .enumerate()
            .map(|(i, reason)| ([("reason", *reason)], c.sum(AUTH_FAILURES + i)))
            .collect();
        out.counters(
            "records_service_auth_failures",
            "Requests refused 401 (no valid bearer token) or 403 (a token without the scope), by reason.",
            None,
            reasons.iter().map(|(l, n)| (&l[..], *n)),
        );
    }

    fn queries(&self, out: &mut Exposition<'_>) {
        if !self.metrics.enabled {
            return;
        }
        let c = &self.metrics.cells;
        let mut series = Vec::new();
        for query in Query::ALL {
            for (o, outcome) in OUTCOMES.iter().enumerate() {
                let n = c.sum(QUERIES + query as usize * OUTCOMES.len() + o);
                if n > 0 {
                    series.push(([("statement", query.name()), ("outcome", *outcome)], n));
                }
            }
        }
        out.counters(
            "records_service_pg_queries",
            "Queries by prepared statement and outcome.",
            None,
            series.iter().map(|(l, n)| (&l[..], *n)),
        );
        let durations: Vec<([(&str, &str); 1], HistogramSnapshot)> = Query::ALL
            .iter()
            .map(|q| {
                (
                    [("statement", q.name())],
                    query_durations(*q).snapshot(c, NANOS),
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

    /// The PostgreSQL connections: pipelining depth by pool, then each connection's state and
    /// counters.
    fn connections(&self, out: &mut Exposition<'_>) {
        let conns: Vec<ConnState> = self.pools.iter().flat_map(ConnState::of_pool).collect();
        self.batches(out);
        let labels: Vec<[(&str, &str); 2]> = conns
            .iter()
            .map(|c| [("pool", c.pool), ("conn", c.conn.as_str())])
            .collect();
        let gauges = |f: fn(&ConnState) -> f64| each(&labels, &conns, f);
        out.gauges(
            "records_service_pg_in_flight_queries",
            "Queries sent or queued and not yet answered, per connection.",
            None,
            gauges(|c| c.in_flight as f64),
        );
        out.gauges(
            "records_service_pg_connection_up",
            "1 while the connection is established.",
            None,
            gauges(|c| f64::from(u8::from(c.up))),
        );
        out.gauges(
            "records_service_pg_circuit_open",
            "1 while queries on this connection fail at once (503): it is down and reconnecting.",
            None,
            gauges(|c| f64::from(u8::from(!c.up))),
        );
        let counters = |f: fn(&ConnState) -> u64| each(&labels, &conns, f);
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

    /// Queries per socket write, merged over each pool's connections (pools without any are
    /// left out).
    fn batches(&self, out: &mut Exposition<'_>) {
        let batches: Vec<([(&str, &str); 1], HistogramSnapshot)> = self
            .pools
            .iter()
            .filter(|(_, clients)| !clients.is_empty())
            .map(|(pool, clients)| {
                let mut batch = HistogramSnapshot::default();
                for client in clients {
                    batch.merge(&client.stats().batches());
                }
                ([("pool", *pool)], batch)
            })
            .collect();
        out.histograms(
            "records_service_pg_batch_queries",
            "Queries per socket write to PostgreSQL (the pipelining depth), by pool.",
            None,
            batches.iter().map(|(l, h)| (&l[..], h.clone())),
        );
    }

    /// What is always there: dropped log lines and the build.
    fn log_and_build(&self, out: &mut Exposition<'_>) {
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

/// One PostgreSQL connection's state, read once per scrape.
struct ConnState {
    pool: &'static str,
    /// Its position in the pool.
    conn: String,
    up: bool,
    in_flight: usize,
    reconnects: u64,
    reprepared: u64,
    resent: u64,
}

impl ConnState {
    fn of_pool((pool, clients): &(&'static str, Vec<Client>)) -> Vec<ConnState> {
        clients
            .iter()
            .enumerate()
            .map(|(i, client)| {
                let stats = client.stats();
                ConnState {
                    pool,
                    conn: i.to_string(),
                    up: client.is_connected(),
                    in_flight: client.in_flight(),
                    reconnects: client.connects().saturating_sub(1),
                    reprepared: stats.reprepared.load(Ordering::Relaxed),
                    resent: stats.resent.load(Ordering::Relaxed),
                }
            })
            .collect()
    }
}

/// A per-connection series: each connection's labels, with `value` of its state.
fn each<'l, T>(
    labels: &'l [[(&'l str, &'l str); 2]],
    conns: &[ConnState],
    value: fn(&ConnState) -> T,
) -> Vec<(&'l [(&'l str, &'l str)], T)> {
    labels
        .iter()
        .zip(conns)
        .map(|(l, c)| (&l[..], value(c)))
        .collect()
}

impl Source for Exporter {
    fn collect(&self, out: &mut Exposition<'_>) {
        self.requests(out);
        self.core(out);
        self.rate_limit(out);
        self.auth_failures(out);
        self.queries(out);
        self.connections(out);
        self.log_and_build(out);
    }
}
