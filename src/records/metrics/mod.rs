//! What the records service counts: requests by route, method and status, queries by
//! statement and outcome, 503s by cause, each with its duration where it has one. The
//! `/metrics` answer is rendered from these cells (and the HTTP core's and the PostgreSQL
//! connections' own) by `exporter`, and cached by `page`.
//!
//! Counting is per thread ([`Striped`]) and can be switched off (`METRICS=off`): the handlers
//! then skip it, which is how `make bench` measures what it costs.

mod exporter;
mod page;

use std::time::Duration;

use crate::auth::Denial;
use crate::http::Status;
use crate::metrics::{Histogram, Striped, DURATION_BUCKETS};
use crate::pg::{self, ErrorKind};

use super::route::Route;
use super::statements::Query;

pub use exporter::Exporter;
pub use page::{Page, MIN_RENDER_INTERVAL};

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

closed_enum! {
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
}

impl Unavailable {
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
const REQUEST_DURATIONS: usize = REQUESTS + Route::COUNT * METHODS.len() * STATUSES;
/// Requests in a handler: +1 at the start, -1 (wrapping) at the end, in the thread's own cell.
const IN_FLIGHT: usize = REQUEST_DURATIONS + Route::COUNT * DURATION_CELLS;
const QUERIES: usize = IN_FLIGHT + 1;
const QUERY_DURATIONS: usize = QUERIES + Query::COUNT * OUTCOMES.len();
const UNAVAILABLE: usize = QUERY_DURATIONS + Query::COUNT * DURATION_CELLS;
/// Requests answered 429 by the rate limiter.
const RATE_LIMITED: usize = UNAVAILABLE + Unavailable::ALL.len();
/// Requests refused for their credentials, by [`Denial::index`].
const AUTH_FAILURES: usize = RATE_LIMITED + 1;
const WIDTH: usize = AUTH_FAILURES + Denial::LABELS.len();

fn request_durations(route: Route) -> Histogram {
    Histogram {
        base: REQUEST_DURATIONS + route as usize * DURATION_CELLS,
        bounds: DURATION_BUCKETS,
    }
}

fn query_durations(query: Query) -> Histogram {
    Histogram {
        base: QUERY_DURATIONS + query as usize * DURATION_CELLS,
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

    /// Counts a query of `query` and its outcome.
    pub fn query<T>(&self, query: Query, result: &Result<T, pg::Error>, took: Duration) {
        if !self.enabled {
            return;
        }
        self.cells
            .inc(QUERIES + query as usize * OUTCOMES.len() + outcome_index(result));
        query_durations(query).observe(&self.cells, took);
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

    /// A request was answered 429 (its client was over the rate limit).
    pub fn rate_limited(&self) {
        if self.enabled {
            self.cells.inc(RATE_LIMITED);
        }
    }

    /// Counts a request refused 401 or 403.
    pub fn auth_failure(&self, denial: Denial) {
        if self.enabled {
            self.cells.inc(AUTH_FAILURES + denial.index());
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    #[test]
    fn every_error_kind_has_an_outcome() {
        let e = pg::Error::new(ErrorKind::Overloaded, "x");
        assert_eq!(OUTCOMES[outcome_index::<()>(&Err(e))], "overloaded");
        assert_eq!(OUTCOMES[outcome_index(&Ok(()))], "ok");
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
