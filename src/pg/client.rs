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

use super::codec::{encode_query, Encoding};
use super::error::{Error, ErrorKind};
use super::pipeline::{Isolation, Limits, Pipeline, Protocol, Reply};
use super::startup::{establish, Statement};
use super::stats::Stats;
use super::{ConnectParams, Param, StatementMode};
use crate::logging::Untrusted;

/// Backoff cap between reconnect attempts: the service resumes within about this long of the
/// database's return.
pub const MAX_BACKOFF: Duration = Duration::from_secs(2);
const FIRST_BACKOFF: Duration = Duration::from_millis(50);
/// A connection that stayed up this long resets the backoff: one that a server accepts and
/// drops at once must not turn into a tight loop of handshakes.
const STABLE_AFTER: Duration = Duration::from_secs(1);

#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

struct Inner {
    params: ConnectParams,
    statements: Vec<Statement>,
    /// Each statement's name on the wire (see [`Statement::wire_name`]), in the same order.
    wire_names: Vec<String>,
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
    /// Statements are prepared again in each transaction that uses them: forced by the
    /// settings, or chosen once a transaction pooler was detected. Never goes back.
    per_transaction: AtomicBool,
    stats: Arc<Stats>,
}

impl Client {
    /// Starts the supervisor, which connects in the background and keeps reconnecting. Use
    /// [`Client::wait_connected`] to learn how the first attempts went.
    pub fn start(params: ConnectParams, statements: &[Statement]) -> Client {
        let inner = Arc::new(Inner {
            params: params.clone(),
            statements: statements.to_vec(),
            wire_names: statements.iter().map(Statement::wire_name).collect(),
            current: RwLock::new(None),
            last_error: Mutex::new(None),
            closing: AtomicBool::new(false),
            connects: AtomicU64::new(0),
            attempts: AtomicU64::new(0),
            per_transaction: AtomicBool::new(
                params.statement_mode == StatementMode::PerTransaction,
            ),
            stats: Arc::new(Stats::default()),
        });
        let supervisor = inner.clone();
        let spawned = may::coroutine::Builder::new().name("pg-supervisor".into());
        // SAFETY: may's spawn is unsafe because a coroutine must not block its worker thread
        // with thread-blocking calls or hold thread-locals across yields; the supervisor does
        // may I/O and may sleeps, and hands what would block its thread (getaddrinfo, reading
        // the TLS files, SCRAM's PBKDF2) to short-lived threads it waits for on a may channel
        // (`off_worker` in blocking.rs).
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
        crate::sync::read(&self.inner.current).is_some()
    }

    /// How many times a connection was established (reconnects included).
    pub fn connects(&self) -> u64 {
        self.inner.connects.load(Ordering::Acquire)
    }

    /// Whether statements are now prepared per transaction (see [`StatementMode`]).
    pub fn prepares_per_transaction(&self) -> bool {
        self.inner.per_transaction.load(Ordering::Acquire)
    }

    /// Queries queued or sent on the current connection and not yet answered (0 while
    /// disconnected).
    pub fn in_flight(&self) -> usize {
        crate::sync::read(&self.inner.current)
            .as_ref()
            .map_or(0, |p| p.in_flight())
    }

    /// Queries queued and socket writes made so far, over every connection this client had.
    pub fn stats(&self) -> &Stats {
        &self.inner.stats
    }

    pub fn last_error(&self) -> Option<Error> {
        crate::sync::lock(&self.inner.last_error).clone()
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

    /// Runs a statement, recovering once from the two errors that mean "not executed, the
    /// statement itself is stale": 26000 (a statement this connection prepared is missing: a
    /// transaction pooler handed us another server connection) switches to statements prepared per
    /// transaction
    /// (in `Auto` mode); 0A000 (a cached plan no longer matches the schema, after an ALTER) has
    /// the statement prepared again in the same message as its retry.
    fn run(
        &self,
        name: &str,
        params: &[Param<'_>],
        timeout: Duration,
        isolation: Isolation,
    ) -> Result<Reply, Error> {
        let at = self
            .inner
            .statements
            .iter()
            .position(|s| s.name == name)
            .ok_or_else(|| undeclared(name))?;
        let statement = (
            self.inner.wire_names[at].as_str(),
            self.inner.statements[at].sql,
        );
        let deadline = Instant::now() + timeout;
        let mut encoding = Encoding::Named;
        let mut retried = false;
        loop {
            let pipeline = self.pipeline()?;
            let result =
                pipeline.submit(deadline, Protocol::Extended(isolation), |buf, prepared| {
                    // Read at every encoding: a query skipped and sent again after the switch
                    // is prepared per transaction too.
                    let encoding = match encoding {
                        Encoding::Named if self.prepares_per_transaction() => {
                            self.pooled_encoding(at)
                        }
                        e => e,
                    };
                    encode_query(encoding, statement, params, buf, prepared)
                });
            let code = match &result {
                // Not when the error ended the connection (a FATAL 26000 or 0A000): whatever
                // it says of the statement, a write's outcome on it is unknown, and sending
                // it again could run it twice.
                Err(e) if !retried && !e.is_connection_error() => e.code(),
                _ => return result,
            };
            retried = true;
            match code {
                Some("26000") if self.inner.params.statement_mode == StatementMode::Auto => {
                    self.switch_to_per_transaction(
                        "a statement this connection prepared is missing (SQLSTATE 26000)",
                    );
                    encoding = self.pooled_encoding(at);
                }
                // Forced named statements: one went missing (DISCARD ALL, a restarted pooler):
                // prepare it again rather than fail until the connection is replaced.
                Some("26000") if !self.prepares_per_transaction() => {
                    self.inner.stats.reprepared.fetch_add(1, Ordering::Relaxed);
                    encoding = Encoding::Reprepare;
                }
                Some("0A000") if !self.prepares_per_transaction() => {
                    self.inner.stats.reprepared.fetch_add(1, Ordering::Relaxed);
                    encoding = Encoding::Reprepare;
                }
                _ => return result,
            }
        }
    }

    /// How statement `at` is sent once named statements cannot be kept: prepared again in each
    /// transaction (a bit per statement; the 65th and later are parsed unnamed each time).
    /// Rather than unnamed for every query: within a transaction (a group of reads sharing a
    /// Sync) the server parses and plans a statement once, not once per query (the
    /// measurement is in `docs/benchmarks.md`).
    fn pooled_encoding(&self, at: usize) -> Encoding {
        if at >= 64 {
            Encoding::Unnamed
        } else {
            Encoding::PerTransaction(1 << at)
        }
    }

    fn switch_to_per_transaction(&self, why: &str) {
        switch_to_per_transaction(&self.inner, why);
    }

    /// Runs SQL through the simple query protocol (several statements allowed, text results).
    /// For administration: migrations, seeding, tests. Not for request paths.
    pub fn simple_query(&self, sql: &str, timeout: Duration) -> Result<Reply, Error> {
        simple(&*self.pipeline()?, sql, timeout)
    }

    /// A new connection with these settings, pinned, for work that must stay on one server
    /// session (an explicit transaction sent over several messages): once that connection is
    /// gone, the session's queries fail instead of running on a replacement, where they would
    /// run outside the transaction.
    pub fn session(&self) -> Result<Session, Error> {
        // A connection of its own: on a shared one, other callers' statements would run inside
        // the session's transaction (and vanish with its ROLLBACK).
        let client = super::connect_once(&self.inner.params)?;
        let pipeline = client.pipeline()?;
        pipeline.pin_to_session();
        Ok(Session { client, pipeline })
    }

    /// Closes the connection for good: the supervisor stops reconnecting.
    pub fn close(&self) {
        self.inner.closing.store(true, Ordering::Release);
        if let Some(p) = crate::sync::read(&self.inner.current).as_ref() {
            p.shutdown();
        }
    }

    fn pipeline(&self) -> Result<Arc<Pipeline>, Error> {
        match crate::sync::read(&self.inner.current).as_ref() {
            Some(p) => Ok(p.clone()),
            None => Err(self.unavailable()),
        }
    }

    /// Out of line: its formatting takes no room in the frames of every query's path.
    #[cold]
    #[inline(never)]
    fn unavailable(&self) -> Error {
        Error::new(
            ErrorKind::Unavailable,
            match self.last_error() {
                Some(e) => format!("no connection to PostgreSQL (last error: {e})"),
                None => "no connection to PostgreSQL yet".to_string(),
            },
        )
    }
}

/// A server session on a connection of its own; see [`Client::session`]. Closed on drop.
pub struct Session {
    client: Client,
    pipeline: Arc<Pipeline>,
}

impl Drop for Session {
    fn drop(&mut self) {
        self.client.close();
    }
}

impl Session {
    /// As [`Client::simple_query`], on this session only: fails with
    /// [`ErrorKind::ConnectionLost`] once the session's connection has ended.
    pub fn simple_query(&self, sql: &str, timeout: Duration) -> Result<Reply, Error> {
        simple(&self.pipeline, sql, timeout)
    }
}

/// A statement name the client was not given: a bug in the caller. Out of line, so its
/// formatting takes no room in [`Client::run`]'s frame on every query's path.
#[cold]
#[inline(never)]
fn undeclared(name: &str) -> Error {
    Error::new(
        ErrorKind::Protocol,
        format!("no statement named {name:?} was declared to this client"),
    )
}

fn simple(pipeline: &Pipeline, sql: &str, timeout: Duration) -> Result<Reply, Error> {
    pipeline.submit(Instant::now() + timeout, Protocol::Simple, |buf, _| {
        frontend::query(sql, buf)
            .map_err(|e| Error::new(ErrorKind::Protocol, format!("cannot encode query: {e}")))
    })
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

/// Switches the client to statements prepared per transaction for good, saying why once in the
/// log.
fn switch_to_per_transaction(inner: &Inner, why: &str) {
    if !inner.per_transaction.swap(true, Ordering::AcqRel) {
        tracing::warn!(
            event = "statement_mode_per_transaction",
            host = %inner.params.host,
            port = inner.params.port,
            why,
            "pg: {why}: assuming a transaction-pooling proxy (PgBouncer) in front of {}:{}; \
             statements are prepared in each transaction from now on (set PG_STATEMENT_MODE \
             to choose)",
            inner.params.host,
            inner.params.port
        );
    }
}

fn supervise(inner: &Inner) {
    let mut backoff = Duration::ZERO;
    let mut logged_down = false;
    let limits = Limits {
        max_in_flight: inner.params.max_in_flight,
        statement_timeout: inner.params.statement_timeout,
        max_message_bytes: inner.params.max_message_bytes,
    };
    while !inner.closing.load(Ordering::Acquire) {
        let statements: &[Statement] = if inner.per_transaction.load(Ordering::Acquire) {
            &[]
        } else {
            &inner.statements
        };
        // A panic while connecting (a bug, or a server finding one) must not end the
        // supervisor: the client would stay disconnected for good, silently.
        let attempt = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            establish(&inner.params, statements)
        }))
        .unwrap_or_else(|_| {
            Err(Error::new(
                ErrorKind::Protocol,
                "connecting to PostgreSQL panicked (see the log above)",
            ))
        });
        inner.attempts.fetch_add(1, Ordering::AcqRel);
        match attempt {
            Err(e)
                if e.code() == Some("42P05")
                    && !statements.is_empty()
                    && inner.params.statement_mode == StatementMode::Auto =>
            {
                // Our statement (same name, same SQL: the name holds a hash of it) already
                // exists on this server session: a transaction pooler gave us a server
                // connection another client of ours prepared on.
                // Connect again at once, preparing nothing: this cannot repeat (the guard above
                // needs named statements), so it cannot become a loop.
                switch_to_per_transaction(
                    inner,
                    "a statement name is already taken (SQLSTATE 42P05)",
                );
            }
            Ok(established) => {
                let pipeline =
                    match Pipeline::start(&established.stream, limits, inner.stats.clone()) {
                        Ok(p) => p,
                        Err(e) => {
                            set_error(inner, Error::new(ErrorKind::ConnectFailed, e.to_string()));
                            may::coroutine::sleep(MAX_BACKOFF);
                            continue;
                        }
                    };
                *crate::sync::write(&inner.current) = Some(pipeline.clone());
                inner.connects.fetch_add(1, Ordering::AcqRel);
                if logged_down {
                    tracing::info!(
                        event = "database_reconnected",
                        circuit = "closed",
                        host = %inner.params.host,
                        port = inner.params.port,
                        "pg: reconnected to {}:{}",
                        inner.params.host,
                        inner.params.port
                    );
                    logged_down = false;
                }
                if inner.closing.load(Ordering::Acquire) {
                    pipeline.shutdown();
                }
                let up_since = Instant::now();
                let error = pipeline.run_reader(established.stream, established.read_buf);
                *crate::sync::write(&inner.current) = None;
                if !inner.closing.load(Ordering::Acquire) {
                    tracing::warn!(
                        event = "database_connection_lost",
                        circuit = "open",
                        host = %inner.params.host,
                        port = inner.params.port,
                        error = %Untrusted(&error),
                        "pg: connection lost: {}",
                        Untrusted(&error)
                    );
                    logged_down = true;
                }
                set_error(inner, error);
                if up_since.elapsed() >= STABLE_AFTER {
                    backoff = Duration::ZERO;
                } else {
                    backoff = (backoff * 2).clamp(FIRST_BACKOFF, MAX_BACKOFF);
                    may::coroutine::sleep(backoff);
                }
            }
            Err(error) => {
                if !logged_down {
                    tracing::warn!(
                        event = "database_connect_failed",
                        circuit = "open",
                        host = %inner.params.host,
                        port = inner.params.port,
                        error = %Untrusted(&error),
                        "pg: cannot connect: {}",
                        Untrusted(&error)
                    );
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
    *crate::sync::lock(&inner.last_error) = Some(error);
}
