//! A client: one pipelined connection kept open by a supervisor coroutine.
//!
//! The supervisor connects (with every statement prepared), runs the connection's reader until
//! the connection dies, then reconnects with exponential backoff capped at
//! [`MAX_BACKOFF`]. While there is no connection, queries fail at once with
//! [`ErrorKind::Unavailable`] instead of queueing: that is the circuit breaker, open while the
//! database is away and closed again by the first successful reconnect.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use postgres_protocol::message::frontend;

use super::error::{Error, ErrorKind};
use super::pipeline::{encode_prepared, Isolation, Pipeline, Protocol, Reply, Stats};
use super::startup::{establish, Statement};
use super::{ConnectParams, Param};

/// Backoff cap between reconnect attempts: the service resumes within about this long of the
/// database's return.
pub const MAX_BACKOFF: Duration = Duration::from_secs(2);
const FIRST_BACKOFF: Duration = Duration::from_millis(50);

#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

struct Inner {
    params: ConnectParams,
    statements: Vec<Statement>,
    /// The live connection, `None` while disconnected. Replaced only by the supervisor.
    current: RwLock<Option<Arc<Pipeline>>>,
    /// Why the last connect attempt or connection failed, for logs and for fail-fast errors.
    last_error: Mutex<Option<Error>>,
    /// Set by `close`; the supervisor exits instead of reconnecting.
    closing: AtomicBool,
    /// Successful connects so far (1 after startup; each reconnect adds one).
    connects: AtomicU64,
    /// Connect attempts so far, successful or not.
    attempts: AtomicU64,
    stats: Arc<Stats>,
}

impl Client {
    /// Starts the supervisor, which connects in the background and keeps reconnecting. Use
    /// [`Client::wait_connected`] to learn how the first attempts went.
    pub fn start(params: ConnectParams, statements: &[Statement]) -> Client {
        let inner = Arc::new(Inner {
            params,
            statements: statements.to_vec(),
            current: RwLock::new(None),
            last_error: Mutex::new(None),
            closing: AtomicBool::new(false),
            connects: AtomicU64::new(0),
            attempts: AtomicU64::new(0),
            stats: Arc::new(Stats::default()),
        });
        let supervisor = inner.clone();
        let spawned = may::coroutine::Builder::new().name("pg-supervisor".into());
        // SAFETY: may's spawn is unsafe because a coroutine must not block its worker thread
        // with thread-blocking calls or hold thread-locals across yields; the supervisor only
        // does may I/O and may sleeps.
        unsafe { spawned.spawn(move || supervise(&supervisor)) }
            .expect("spawning a coroutine only fails when out of memory");
        Client { inner }
    }

    /// Waits until connected or until the first attempt failed, whichever comes first, up to
    /// `timeout`. Returns the first attempt's error if it failed.
    pub fn wait_connected(&self, timeout: Duration) -> Result<(), Error> {
        let deadline = Instant::now() + timeout;
        loop {
            if self.is_connected() {
                return Ok(());
            }
            if self.inner.attempts.load(Ordering::Acquire) > 0 {
                if let Some(e) = self.last_error() {
                    return Err(e);
                }
            }
            if Instant::now() >= deadline {
                return Err(Error::new(
                    ErrorKind::ConnectFailed,
                    "timed out waiting for the first PostgreSQL connection",
                ));
            }
            may::coroutine::sleep(Duration::from_millis(5));
        }
    }

    pub fn is_connected(&self) -> bool {
        read(&self.inner.current).is_some()
    }

    /// How many times a connection was established (reconnects included).
    pub fn connects(&self) -> u64 {
        self.inner.connects.load(Ordering::Acquire)
    }

    /// Queries queued and socket writes made so far, over every connection this client had.
    pub fn stats(&self) -> &Stats {
        &self.inner.stats
    }

    pub fn last_error(&self) -> Option<Error> {
        self.inner
            .last_error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Runs a prepared statement by name with binary parameters, waiting at most `timeout`.
    /// The statement gets its own Sync: use this for anything with side effects.
    pub fn query(
        &self,
        statement: &str,
        params: &[Param<'_>],
        timeout: Duration,
    ) -> Result<Reply, Error> {
        self.run(statement, params, timeout, Isolation::OwnSync)
    }

    /// Runs a read-only prepared statement, sharing a Sync with the other queries in the same
    /// write (see the pipeline's docs). It may be sent twice: it must have no side effects.
    pub fn query_read(
        &self,
        statement: &str,
        params: &[Param<'_>],
        timeout: Duration,
    ) -> Result<Reply, Error> {
        self.run(statement, params, timeout, Isolation::SharedSync)
    }

    fn run(
        &self,
        statement: &str,
        params: &[Param<'_>],
        timeout: Duration,
        isolation: Isolation,
    ) -> Result<Reply, Error> {
        let pipeline = self.pipeline()?;
        pipeline.submit(
            Instant::now() + timeout,
            Protocol::Extended(isolation),
            |buf| encode_prepared(statement, params, buf),
        )
    }

    /// Runs SQL through the simple query protocol (several statements allowed, text results).
    /// For administration: migrations, seeding, tests. Not for request paths.
    pub fn simple_query(&self, sql: &str, timeout: Duration) -> Result<Reply, Error> {
        let pipeline = self.pipeline()?;
        pipeline.submit(Instant::now() + timeout, Protocol::Simple, |buf| {
            frontend::query(sql, buf)
                .map_err(|e| Error::new(ErrorKind::Protocol, format!("cannot encode query: {e}")))
        })
    }

    /// Closes the connection for good: the supervisor stops reconnecting.
    pub fn close(&self) {
        self.inner.closing.store(true, Ordering::Release);
        if let Some(p) = read(&self.inner.current).as_ref() {
            p.shutdown();
        }
    }

    fn pipeline(&self) -> Result<Arc<Pipeline>, Error> {
        match read(&self.inner.current).as_ref() {
            Some(p) => Ok(p.clone()),
            None => Err(Error::new(
                ErrorKind::Unavailable,
                match self.last_error() {
                    Some(e) => format!("no connection to PostgreSQL (last error: {e})"),
                    None => "no connection to PostgreSQL yet".to_string(),
                },
            )),
        }
    }
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("host", &self.inner.params.host)
            .field("port", &self.inner.params.port)
            .field("dbname", &self.inner.params.dbname)
            .field("connected", &self.is_connected())
            .finish()
    }
}

fn read<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(|p| p.into_inner())
}

fn supervise(inner: &Inner) {
    let mut backoff = Duration::ZERO;
    let mut logged_down = false;
    while !inner.closing.load(Ordering::Acquire) {
        let attempt = establish(&inner.params, &inner.statements);
        inner.attempts.fetch_add(1, Ordering::AcqRel);
        match attempt {
            Ok(established) => {
                let pipeline = match Pipeline::start(
                    &established.stream,
                    inner.params.max_in_flight,
                    inner.stats.clone(),
                ) {
                    Ok(p) => p,
                    Err(e) => {
                        set_error(inner, Error::new(ErrorKind::ConnectFailed, e.to_string()));
                        may::coroutine::sleep(MAX_BACKOFF);
                        continue;
                    }
                };
                *inner.current.write().unwrap_or_else(|p| p.into_inner()) = Some(pipeline.clone());
                inner.connects.fetch_add(1, Ordering::AcqRel);
                if logged_down {
                    eprintln!(
                        "pg: reconnected to {}:{}",
                        inner.params.host, inner.params.port
                    );
                    logged_down = false;
                }
                backoff = Duration::ZERO;
                if inner.closing.load(Ordering::Acquire) {
                    pipeline.shutdown();
                }
                let error = pipeline.run_reader(established.stream, established.read_buf);
                *inner.current.write().unwrap_or_else(|p| p.into_inner()) = None;
                if !inner.closing.load(Ordering::Acquire) {
                    eprintln!("pg: connection lost: {error}");
                    logged_down = true;
                }
                set_error(inner, error);
            }
            Err(error) => {
                if !logged_down {
                    eprintln!("pg: cannot connect: {error}");
                    logged_down = true;
                }
                set_error(inner, error);
                backoff = (backoff * 2).clamp(FIRST_BACKOFF, MAX_BACKOFF);
                may::coroutine::sleep(backoff);
            }
        }
    }
}

fn set_error(inner: &Inner, error: Error) {
    *inner.last_error.lock().unwrap_or_else(|p| p.into_inner()) = Some(error);
}
