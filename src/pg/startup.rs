//! Opening a connection: for each host in turn (`host`, then `more_hosts`), TCP connect, TLS as
//! `sslmode` says, the startup message, authentication under the `require_auth` policy (trust,
//! cleartext, MD5, SCRAM-SHA-256, and SCRAM-SHA-256-PLUS with channel binding over TLS), the
//! read-write check of `target_session_attrs`, then the session's settings and every statement
//! the caller named, all under one deadline per host.
//!
//! Runs before the connection joins the pipeline, so it reads and writes synchronously.

use std::io::{Read, Write};
use std::net::ToSocketAddrs;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use fallible_iterator::FallibleIterator;
use may::net::TcpStream;
use postgres_protocol::authentication::{md5_hash, sasl};
use postgres_protocol::message::{backend::Message, frontend};

use super::blocking::off_worker;
#[cfg(test)]
use super::blocking::ran_on;
use super::codec::check_frame;
use super::error::{server_error, Error, ErrorKind};
use super::tls::TlsConfig;
use super::transport::{self, Stream};
use super::{AuthMethod, ChannelBinding, ConnectParams, SslMode, TargetSessionAttrs};

/// A prepared statement: the name callers use and its SQL. Parameter types are left for the
/// server to infer from the SQL (write casts in the SQL where inference is ambiguous).
#[derive(Debug, Clone, Copy)]
pub struct Statement {
    pub name: &'static str,
    pub sql: &'static str,
}

impl Statement {
    /// Its name on the wire: the caller's name and a hash of the SQL. Behind a transaction
    /// pooler, server sessions are shared with other clients (another version of this service
    /// during a rolling deploy, another application): a statement of the same name prepared
    /// there by them must never be bound in place of ours. With the SQL in the name, a name
    /// that exists on the server session is ours.
    pub fn wire_name(&self) -> String {
        // FNV-1a, 64 bits: stable across builds and platforms (std's hasher is not).
        let hash = self.sql.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
        });
        // The hash first: PostgreSQL keeps only the first 63 bytes of a name, and a long
        // caller's name must not push the hash out of them.
        let mut name = format!("s{hash:016x}_{}", self.name);
        name.truncate(63);
        name
    }
}

/// A connection past startup: authenticated, statements prepared, idle. `read_buf` may already
/// hold bytes the server sent after the last `ReadyForQuery` (normally none).
pub(crate) struct Established {
    pub stream: Stream,
    pub read_buf: BytesMut,
}

/// Connects to the first host that accepts the session and, with
/// `target_session_attrs=read-write`, is not read-only. Each host gets the whole
/// `connect_timeout`.
pub(crate) fn establish(
    params: &ConnectParams,
    statements: &[Statement],
) -> Result<Established, Error> {
    // The CA file and client certificate are read at every attempt (a renewed file is picked
    // up), off the worker (a slow disk must not stall its coroutines); an error in them ends
    // the attempt before any connection.
    let tls = if params.tls.mode == SslMode::Disable {
        TlsConfig::disabled()
    } else {
        let settings = params.tls.clone();
        off_worker(
            "pg-tls-load",
            Instant::now() + params.connect_timeout,
            move || TlsConfig::load(&settings),
        )
        .unwrap_or_else(|| {
            Err(Error::new(
                ErrorKind::ConnectFailed,
                "reading the TLS files (sslrootcert, sslcert, sslkey) took longer than \
                 connect_timeout",
            ))
        })?
    };
    let hosts = std::iter::once((params.host.as_str(), params.port))
        .chain(params.more_hosts.iter().map(|(h, p)| (h.as_str(), *p)));
    // libpq's prefer-standby: a pass for standbys only, then one for any host.
    let passes: &[Want] = match params.target_session_attrs {
        TargetSessionAttrs::Any => &[Want::Any],
        TargetSessionAttrs::ReadWrite => &[Want::Writable],
        TargetSessionAttrs::PreferStandby => &[Want::Standby, Want::Any],
    };
    // Per host: its error, or `None` for one whose session is not what the pass wants.
    let mut failures: Vec<(String, Option<Error>)> = Vec::new();
    for want in passes {
        failures.clear();
        for (host, port) in hosts.clone() {
            match establish_host(params, &tls, host, port, statements, *want) {
                Ok(Some(established)) => return Ok(established),
                // Our statement names taken on that server session: a transaction pooler, not
                // a bad host. Said as it is, so that the client switches modes (another host
                // could be a standby, and the last host's error would hide this one).
                Err(e) if e.code() == Some("42P05") => return Err(e),
                Ok(None) => failures.push((format!("{host}:{port}"), None)),
                Err(e) => failures.push((format!("{host}:{port}"), Some(e))),
            }
        }
    }
    Err(no_host(failures))
}

/// The error when no host would do: the one host's own error, or every host's in one, with the
/// last host's kind (read-only everywhere: `ConnectFailed`, a failover may fix it).
fn no_host(mut failures: Vec<(String, Option<Error>)>) -> Error {
    if failures.len() == 1 {
        match failures.pop() {
            Some((_, Some(e))) => return e,
            Some((at, None)) => {
                return Error::new(
                    ErrorKind::ConnectFailed,
                    format!(
                        "{at} is read-only (transaction_read_only = on: a standby, or \
                         default_transaction_read_only) and target_session_attrs=read-write"
                    ),
                )
            }
            None => return Error::new(ErrorKind::ConnectFailed, "no host to connect to"),
        }
    }
    let listed = failures
        .iter()
        .map(|(at, e)| match e {
            Some(e) => format!("{at}: {}", e.message()),
            None => format!("{at}: read-only"),
        })
        .collect::<Vec<_>>()
        .join("; ");
    match failures.iter().rev().find_map(|(_, e)| e.as_ref()) {
        None => Error::new(
            ErrorKind::ConnectFailed,
            format!("no host is writable (target_session_attrs=read-write): {listed}"),
        ),
        Some(last) => {
            let e = reword(last, format!("no host accepted the connection: {listed}"));
            // A verdict on the TLS settings stops the service at start: only when every host
            // gave it, so that it does not depend on which host came last (one that is down
            // for a moment is no reason to stop).
            let all_tls = failures
                .iter()
                .all(|(_, e)| e.as_ref().is_some_and(Error::is_tls_misconfigured));
            if all_tls {
                e
            } else {
                e.tls_settings_not_at_fault()
            }
        }
    }
}

/// What kind of session a pass over the hosts accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Want {
    Any,
    /// Not read-only (the primary).
    Writable,
    /// Read-only, and no further behind than `max_standby_lag`.
    Standby,
}

/// One host: the session ready for the pipeline, or `None` when it is not the kind `want`
/// asks for.
fn establish_host(
    params: &ConnectParams,
    tls: &TlsConfig,
    host: &str,
    port: u16,
    statements: &[Statement],
    want: Want,
) -> Result<Option<Established>, Error> {
    let deadline = Instant::now() + params.connect_timeout;
    let mut conn = match open(params, tls, host, port, deadline) {
        Ok(conn) => conn,
        // libpq's sslmode=prefer: when TLS fails, or the server refuses the session over TLS,
        // try once more without.
        Err(failed) if failed.retry_without_tls => {
            open(params, &TlsConfig::disabled(), host, port, deadline).map_err(|again| {
                reword(
                    &again.error,
                    format!(
                        "over TLS: {}; then without TLS: {}",
                        failed.error.message(),
                        again.error.message()
                    ),
                )
            })?
        }
        Err(failed) => return Err(failed.error),
    };
    match want {
        Want::Any => {}
        Want::Writable => {
            if conn.read_only()? {
                return Ok(None);
            }
        }
        Want::Standby => {
            if !conn.read_only()? {
                return Ok(None);
            }
            if !params.max_standby_lag.is_zero() {
                let lag = conn.replay_lag()?;
                if lag.is_none_or(|lag| lag > params.max_standby_lag) {
                    let said = match lag {
                        Some(lag) => format!("{lag:?}"),
                        None => "not a finite age (Infinity, NaN or negative)".to_string(),
                    };
                    tracing::warn!(
                        event = "standby_lagging",
                        host = %host,
                        port,
                        lag_ms = lag.map(|lag| lag.as_millis() as u64),
                        "pg: passing over standby {host}:{port}: replay lag {said} is over {:?} \
                         (PG_MAX_STANDBY_LAG_MS)",
                        params.max_standby_lag
                    );
                    return Ok(None);
                }
            }
        }
    }

    let mut out = BytesMut::with_capacity(256);

    // The session's settings and the prepared statements, in one round trip: a simple query
    // (answered by its own ReadyForQuery), then the Parses and their Sync.
    let mut readies = 0;
    if !params.statement_timeout.is_zero() {
        let sql = format!(
            "SET statement_timeout = {}",
            params.statement_timeout.as_millis()
        );
        frontend::query(&sql, &mut out).map_err(protocol)?;
        readies += 1;
    }
    if !statements.is_empty() {
        for st in statements {
            frontend::parse(&st.wire_name(), st.sql, std::iter::empty(), &mut out)
                .map_err(protocol)?;
        }
        frontend::sync(&mut out);
        readies += 1;
    }
    if readies > 0 {
        conn.send(&mut out)?;
        let mut failure = None;
        while readies > 0 {
            match conn.next()? {
                Message::ErrorResponse(body) => {
                    failure.get_or_insert(server_error(body));
                }
                Message::ReadyForQuery(_) => readies -= 1,
                _ => {}
            }
        }
        if let Some(e) = failure {
            return Err(e);
        }
    }
    // The startup deadline must not outlive startup: the pipeline's reader waits on an idle
    // connection indefinitely, and callers bound their own waits.
    conn.stream.set_read_timeout(None).map_err(lost)?;
    conn.stream.set_write_timeout(None).map_err(lost)?;
    Ok(Some(Established {
        stream: conn.stream,
        read_buf: conn.buf,
    }))
}

/// Why opening a session failed, and whether sslmode=prefer should try again without TLS.
struct Failed {
    error: Error,
    retry_without_tls: bool,
}

/// TCP connect, TLS, startup and authentication, up to the first `ReadyForQuery`.
fn open(
    params: &ConnectParams,
    tls: &TlsConfig,
    host: &str,
    port: u16,
    deadline: Instant,
) -> Result<Handshake, Failed> {
    let prefer = tls.mode == SslMode::Prefer;
    let tcp = connect(host, port, deadline).map_err(|error| Failed {
        error,
        retry_without_tls: false,
    })?;
    let stream = transport::negotiate(tcp, host, tls, deadline).map_err(|error| Failed {
        // Not after bytes injected before the handshake: that is an attack, not a TLS problem.
        retry_without_tls: prefer && error.kind() != ErrorKind::Protocol,
        error,
    })?;
    let tls_up = stream.is_tls();
    let mut conn = Handshake {
        stream,
        buf: BytesMut::with_capacity(8192),
        deadline,
        // The server is authenticated only when its certificate chain was verified.
        verified: tls_up && tls.roots.is_some(),
        max_message_bytes: params.max_message_bytes.min(STARTUP_MAX_MESSAGE_BYTES),
    };
    match conn.startup(params) {
        Ok(()) => Ok(conn),
        Err(error) => Err(Failed {
            // The server refused the session over TLS (pg_hba.conf, a password): libpq then
            // tries without TLS. Our own refusals (require_auth) would only repeat.
            retry_without_tls: prefer && tls_up && error.code().is_some(),
            error: explain_pg_hba(error, params, tls_up),
        }),
    }
}

/// A TCP connection to the first address of `host` that accepts one (localhost may be ::1
/// first, then 127.0.0.1), with keepalive set.
fn connect(host: &str, port: u16, deadline: Instant) -> Result<TcpStream, Error> {
    let mut failure = None;
    let mut connected = None;
    for addr in resolve(host, port, deadline)? {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        match TcpStream::connect_timeout(&addr, left) {
            Ok(s) => {
                connected = Some(s);
                break;
            }
            Err(e) => failure = Some(format!("cannot connect to PostgreSQL at {addr}: {e}")),
        }
    }
    let stream = connected.ok_or_else(|| {
        Error::new(
            ErrorKind::ConnectFailed,
            failure.unwrap_or_else(|| format!("cannot connect to {host}:{port}")),
        )
    })?;
    stream.set_nodelay(true).ok();
    set_keepalive(&stream);
    Ok(stream)
}

/// SQLSTATE 28000 naming pg_hba.conf: no line of the server's pg_hba.conf accepts this client
/// address, user, database and encryption, or a `reject` line matched. Said plainly, because the
/// usual advice for a refused login (check the user and password) would mislead.
fn explain_pg_hba(e: Error, params: &ConnectParams, tls_up: bool) -> Error {
    if e.code() != Some("28000") || !e.message().contains("pg_hba.conf") {
        return e;
    }
    let (encryption, hint) = if tls_up {
        (
            "with TLS",
            "if the server accepts this user only without TLS (hostnossl lines), TLS must be off \
             (sslmode=disable or prefer)",
        )
    } else {
        (
            "without TLS",
            "if the server accepts this user only over TLS (hostssl lines), set sslmode=require \
             or stronger",
        )
    };
    reword(
        &e,
        format!(
            "the server's pg_hba.conf rejects this connection (this client's address, user {:?}, \
             database {:?}, {encryption}); not a wrong password: no pg_hba.conf line accepts \
             this combination ({}); {hint}",
            params.user,
            params.dbname,
            e.message()
        ),
    )
}

/// `e` with another message; its kind, SQLSTATE, severity and TLS verdict kept.
fn reword(e: &Error, message: String) -> Error {
    let reworded = match e.code() {
        Some(code) => Error::from_server(
            if e.is_fatal() { "FATAL" } else { "ERROR" },
            code,
            e.constraint().map(str::to_string),
            message,
        ),
        None => Error::new(e.kind(), message),
    };
    if e.is_tls_misconfigured() {
        reworded.tls_misconfigured()
    } else {
        reworded
    }
}

/// The addresses to try. An IP literal is parsed in place; a name is looked up with
/// `getaddrinfo`, which blocks the calling thread, so on a plain thread, while this coroutine
/// waits on a may channel and the worker serves other coroutines.
fn resolve(host: &str, port: u16, deadline: Instant) -> Result<Vec<std::net::SocketAddr>, Error> {
    if let Ok(ip) = host.parse::<std::net::IpAddr>() {
        return Ok(vec![std::net::SocketAddr::new(ip, port)]);
    }
    let name = host.to_string();
    let lookup = off_worker("pg-resolve", deadline, move || {
        (name.as_str(), port).to_socket_addrs().map(Vec::from_iter)
    });
    match lookup {
        Some(Ok(addrs)) if !addrs.is_empty() => Ok(addrs),
        Some(Ok(_)) => Err(Error::new(
            ErrorKind::ConnectFailed,
            format!("{host}:{port} resolves to no address"),
        )),
        Some(Err(e)) => Err(Error::new(
            ErrorKind::ConnectFailed,
            format!("cannot resolve {host}:{port}: {e}"),
        )),
        None => Err(Error::new(
            ErrorKind::ConnectFailed,
            format!("cannot resolve {host}:{port}"),
        )),
    }
}

/// How far behind the primary's clock a standby's may be and its lag still be read as none: the
/// lag is the standby's `now()` less the primary's commit time, so a standby replaying as it
/// goes, whose clock is a few milliseconds behind, reads a small negative lag.
const CLOCK_SKEW: f64 = 1.0;

/// The replay lag query's answer, in seconds (float8 text); `None` when it is no age at all:
/// `Infinity` (an infinite replay timestamp), `NaN`, a negative value beyond [`CLOCK_SKEW`]
/// (clocks that far apart say nothing of the lag) or one beyond `Duration`. Such a standby is
/// treated as too far behind: nothing says it is fresh, and `Duration::from_secs_f64` panics on
/// most of them. A negative value within the skew is no lag.
fn parse_replay_lag(text: &[u8]) -> Result<Option<Duration>, Error> {
    let seconds: f64 = std::str::from_utf8(text)
        .ok()
        .and_then(|t| t.parse().ok())
        .ok_or_else(|| unexpected("a replay lag"))?;
    if seconds.is_nan() {
        return Ok(None);
    }
    if seconds < 0.0 {
        return Ok((seconds >= -CLOCK_SKEW).then_some(Duration::ZERO));
    }
    Ok(Duration::try_from_secs_f64(seconds).ok())
}

/// The largest message accepted during startup (authentication requests, parameter status,
/// errors: all small), whatever `max_message_bytes` allows later.
const STARTUP_MAX_MESSAGE_BYTES: usize = 1 << 20;

struct Handshake {
    stream: Stream,
    buf: BytesMut,
    deadline: Instant,
    /// TLS is up and the server's certificate chains to a trusted CA: a man in the middle
    /// cannot stand in for the server.
    verified: bool,
    max_message_bytes: usize,
}

impl Handshake {
    fn remaining(&self) -> Result<Duration, Error> {
        let left = self.deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(Error::new(
                ErrorKind::ConnectFailed,
                "PostgreSQL startup timed out",
            ));
        }
        Ok(left)
    }

    fn send(&mut self, out: &mut BytesMut) -> Result<(), Error> {
        self.stream.set_write_timeout(Some(self.remaining()?)).ok();
        self.stream.write_all(out).map_err(lost)?;
        out.clear();
        Ok(())
    }

    fn next(&mut self) -> Result<Message, Error> {
        loop {
            check_frame(&self.buf, self.max_message_bytes)?;
            if let Some(msg) = Message::parse(&mut self.buf).map_err(protocol)? {
                return Ok(msg);
            }
            self.stream.set_read_timeout(Some(self.remaining()?)).ok();
            let len = self.buf.len();
            self.buf.resize(len + 8192, 0);
            let n = match self.stream.read(&mut self.buf[len..]) {
                Ok(n) => n,
                Err(e) => {
                    self.buf.truncate(len);
                    return Err(lost(e));
                }
            };
            self.buf.truncate(len + n);
            if n == 0 {
                return Err(Error::new(
                    ErrorKind::ConnectionLost,
                    "PostgreSQL closed the connection during startup",
                ));
            }
        }
    }

    /// The startup message, authentication, and the wait for the first `ReadyForQuery`.
    fn startup(&mut self, params: &ConnectParams) -> Result<(), Error> {
        let mut out = BytesMut::with_capacity(256);
        // Only parameters a pooler accepts: PgBouncer refuses any other startup parameter
        // (`statement_timeout` among them) unless told to ignore it. The statement timeout is
        // SET after startup, with the statements.
        let startup: [(&str, &str); 4] = [
            ("user", params.user.as_str()),
            ("database", params.dbname.as_str()),
            ("application_name", params.application_name.as_str()),
            ("client_encoding", "UTF8"),
        ];
        frontend::startup_message(startup.iter().copied(), &mut out).map_err(protocol)?;
        self.send(&mut out)?;
        self.authenticate(params)?;

        // Wait for ReadyForQuery, skipping ParameterStatus and BackendKeyData.
        loop {
            match self.next()? {
                Message::ReadyForQuery(_) => return Ok(()),
                Message::ErrorResponse(body) => return Err(server_error(body)),
                _ => {}
            }
        }
    }

    /// `SHOW transaction_read_only`, libpq's test for target_session_attrs=read-write: whether
    /// this session is read-only (a hot standby, or default_transaction_read_only = on).
    /// How far behind its primary a standby's replay is: zero when it has replayed all it
    /// received, else the age of the last transaction it replayed (an idle primary sends
    /// nothing, so a standby that is caught up does not look older and older). `None`: the
    /// answer is no finite age, and the standby counts as too far behind.
    fn replay_lag(&mut self) -> Result<Option<Duration>, Error> {
        let text = self.simple_value(
            "SELECT CASE WHEN pg_last_wal_receive_lsn() = pg_last_wal_replay_lsn() THEN 0 \
             ELSE coalesce(extract(epoch FROM now() - pg_last_xact_replay_timestamp()), 0) \
             END::float8",
        )?;
        parse_replay_lag(&text)
    }

    /// The first column of the first row of a simple query, as text.
    fn simple_value(&mut self, sql: &str) -> Result<Vec<u8>, Error> {
        let mut out = BytesMut::with_capacity(64 + sql.len());
        frontend::query(sql, &mut out).map_err(protocol)?;
        self.send(&mut out)?;
        let mut value = None;
        let mut failure = None;
        loop {
            match self.next()? {
                Message::DataRow(body) => {
                    if let Ok(Some(Some(range))) = body.ranges().next() {
                        value.get_or_insert_with(|| body.buffer()[range].to_vec());
                    }
                }
                Message::ErrorResponse(body) => {
                    failure.get_or_insert(server_error(body));
                }
                Message::ReadyForQuery(_) => break,
                _ => {}
            }
        }
        if let Some(e) = failure {
            return Err(e);
        }
        value.ok_or_else(|| unexpected(sql))
    }

    fn read_only(&mut self) -> Result<bool, Error> {
        Ok(self.simple_value("SHOW transaction_read_only")? == b"on")
    }

    /// Answers the server's authentication request within `require_auth` and
    /// `channel_binding`. A method the policy refuses is refused before any password is sent.
    fn authenticate(&mut self, params: &ConnectParams) -> Result<(), Error> {
        let tls_up = self.stream.is_tls();
        let policy = AuthPolicy {
            allowed: params.require_auth.as_deref(),
            verified: self.verified,
        };
        let binding = params.channel_binding;
        let mut out = BytesMut::with_capacity(256);
        let password = || {
            params.password.as_deref().ok_or_else(|| {
                Error::new(
                    ErrorKind::AuthFailed,
                    "the server asks for a password and none is configured",
                )
            })
        };
        match self.next()? {
            Message::AuthenticationOk => {
                policy.allow(AuthMethod::None)?;
                return unbound(binding, AuthMethod::None);
            }
            Message::AuthenticationCleartextPassword => {
                policy.allow(AuthMethod::Password)?;
                unbound(binding, AuthMethod::Password)?;
                frontend::password_message(password()?.as_bytes(), &mut out).map_err(protocol)?;
                self.send(&mut out)?;
            }
            Message::AuthenticationMd5Password(body) => {
                policy.allow(AuthMethod::Md5)?;
                unbound(binding, AuthMethod::Md5)?;
                let hash = md5_hash(params.user.as_bytes(), password()?.as_bytes(), body.salt());
                frontend::password_message(hash.as_bytes(), &mut out).map_err(protocol)?;
                self.send(&mut out)?;
            }
            Message::AuthenticationSasl(body) => {
                policy.allow(AuthMethod::ScramSha256)?;
                let (mut has_scram, mut has_plus) = (false, false);
                let mut mechanisms = body.mechanisms();
                while let Some(m) = mechanisms.next().map_err(protocol)? {
                    has_scram |= m == sasl::SCRAM_SHA_256;
                    has_plus |= m == sasl::SCRAM_SHA_256_PLUS;
                }
                let end_point = match binding {
                    ChannelBinding::Disable => None,
                    _ => self.stream.tls_server_end_point(),
                };
                let (mechanism, channel_binding) = match end_point {
                    Some(data) if has_plus => (
                        sasl::SCRAM_SHA_256_PLUS,
                        sasl::ChannelBinding::tls_server_end_point(data),
                    ),
                    end_point => {
                        if binding == ChannelBinding::Require {
                            let why = if !tls_up {
                                "the connection has no TLS (set sslmode=require or stronger)"
                            } else if !has_plus {
                                "the server does not offer SCRAM-SHA-256-PLUS"
                            } else {
                                "the server's certificate is signed with an algorithm that \
                                 tls-server-end-point defines no hash for"
                            };
                            return Err(Error::new(
                                ErrorKind::AuthFailed,
                                format!("channel_binding=require, but {why}; refused"),
                            ));
                        }
                        if !has_scram {
                            return Err(Error::new(
                                ErrorKind::AuthFailed,
                                "the server offers no SASL mechanism this client supports",
                            ));
                        }
                        // Over TLS (binding not disabled) the flag is "y": we support binding
                        // but the server offered no PLUS, and a server that does offer it then
                        // detects the downgrade. Never "n" over TLS: a man in the middle could
                        // strip PLUS from the offer unnoticed (libpq does the same). PLUS offered
                        // but no hash for the certificate: refused, as libpq does.
                        let flag = if tls_up && binding != ChannelBinding::Disable {
                            if has_plus && end_point.is_none() {
                                return Err(Error::new(
                                    ErrorKind::AuthFailed,
                                    "the server offers SCRAM-SHA-256-PLUS, but its certificate \
                                     is signed with an algorithm that tls-server-end-point \
                                     defines no hash for; refused (channel_binding=disable \
                                     allows SCRAM without binding)",
                                ));
                            }
                            sasl::ChannelBinding::unrequested()
                        } else {
                            sasl::ChannelBinding::unsupported()
                        };
                        (sasl::SCRAM_SHA_256, flag)
                    }
                };
                let mut scram = sasl::ScramSha256::new(password()?.as_bytes(), channel_binding);
                frontend::sasl_initial_response(mechanism, scram.message(), &mut out)
                    .map_err(protocol)?;
                self.send(&mut out)?;
                match self.next()? {
                    Message::AuthenticationSaslContinue(body) => {
                        scram = client_final(scram, body.data(), self.deadline)?;
                    }
                    Message::ErrorResponse(body) => return Err(server_error(body)),
                    _ => return Err(unexpected("SCRAM continue")),
                }
                frontend::sasl_response(scram.message(), &mut out).map_err(protocol)?;
                self.send(&mut out)?;
                match self.next()? {
                    Message::AuthenticationSaslFinal(body) => scram
                        .finish(body.data())
                        .map_err(|e| Error::new(ErrorKind::AuthFailed, format!("SCRAM: {e}")))?,
                    Message::ErrorResponse(body) => return Err(server_error(body)),
                    _ => return Err(unexpected("SCRAM final")),
                }
            }
            Message::ErrorResponse(body) => return Err(server_error(body)),
            _ => {
                return Err(Error::new(
                    ErrorKind::AuthFailed,
                    "the server asks for an authentication method this client does not support \
                     (GSSAPI, SSPI or Kerberos)",
                ))
            }
        }
        match self.next()? {
            Message::AuthenticationOk => Ok(()),
            Message::ErrorResponse(body) => Err(server_error(body)),
            _ => Err(unexpected("AuthenticationOk")),
        }
    }
}

/// SCRAM's client-final step for the server-first message `server_first`, off the worker: the
/// server picks the PBKDF2 iteration count (postgres-protocol accepts up to 100,000, tens of
/// milliseconds of CPU), and every coroutine on this worker would wait that long at every
/// reconnect.
fn client_final(
    scram: sasl::ScramSha256,
    server_first: &[u8],
    deadline: Instant,
) -> Result<sasl::ScramSha256, Error> {
    let server_first = server_first.to_vec();
    off_worker("pg-scram", deadline, move || {
        derive_scram_keys(scram, &server_first)
    })
    .unwrap_or_else(|| {
        Err(Error::new(
            ErrorKind::ConnectFailed,
            "PostgreSQL startup timed out (deriving SCRAM's keys)",
        ))
    })
}

/// PBKDF2 over the password, with the salt and iteration count the server chose.
fn derive_scram_keys(
    mut scram: sasl::ScramSha256,
    server_first: &[u8],
) -> Result<sasl::ScramSha256, Error> {
    #[cfg(test)]
    ran_on::note("scram");
    scram
        .update(server_first)
        .map_err(|e| Error::new(ErrorKind::AuthFailed, format!("SCRAM: {e}")))?;
    Ok(scram)
}

/// libpq's `require_auth`: the methods the server may use. Unset: any, except a cleartext or
/// MD5 password to a server that is not authenticated (no TLS, or TLS whose certificate was not
/// verified against sslrootcert): a man in the middle would ask for it in place of SCRAM and
/// read the password (or a hash of it as good as the password against this server).
struct AuthPolicy<'a> {
    allowed: Option<&'a [AuthMethod]>,
    verified: bool,
}

impl AuthPolicy<'_> {
    fn allow(&self, method: AuthMethod) -> Result<(), Error> {
        let refusal = match self.allowed {
            Some(list) if list.contains(&method) => return Ok(()),
            Some(list) => format!(
                "the server {}, which require_auth={} does not allow; refused",
                what_the_server_did(method),
                list.iter()
                    .map(|m| method_name(*m))
                    .collect::<Vec<_>>()
                    .join(",")
            ),
            None => match method {
                AuthMethod::Password | AuthMethod::Md5 if !self.verified => format!(
                    "the server {} over a connection whose server is not verified (no TLS, or \
                     TLS without sslrootcert): a man in the middle could be asking; refused (set \
                     require_auth={} to allow it, or sslmode=verify-full with sslrootcert)",
                    what_the_server_did(method),
                    method_name(method)
                ),
                _ => return Ok(()),
            },
        };
        Err(Error::new(ErrorKind::AuthFailed, refusal))
    }
}

/// libpq's `require_auth` name of a method.
fn method_name(method: AuthMethod) -> &'static str {
    match method {
        AuthMethod::None => "none",
        AuthMethod::Password => "password",
        AuthMethod::Md5 => "md5",
        AuthMethod::ScramSha256 => "scram-sha-256",
    }
}

fn what_the_server_did(method: AuthMethod) -> &'static str {
    match method {
        AuthMethod::None => {
            "authenticated the client without a password (trust, peer or certificate \
             authentication)"
        }
        AuthMethod::Password => "asked for a cleartext password",
        AuthMethod::Md5 => "asked for an MD5 password",
        AuthMethod::ScramSha256 => "asked for SCRAM-SHA-256 authentication",
    }
}

/// Under channel_binding=require, any method but SCRAM-SHA-256-PLUS is refused: only it binds
/// the authentication to this TLS channel.
fn unbound(binding: ChannelBinding, method: AuthMethod) -> Result<(), Error> {
    if binding == ChannelBinding::Require {
        return Err(Error::new(
            ErrorKind::AuthFailed,
            format!(
                "channel_binding=require, but the server {}: only SCRAM-SHA-256-PLUS over TLS \
                 binds the channel; refused",
                what_the_server_did(method)
            ),
        ));
    }
    Ok(())
}

/// TCP keepalive and a user timeout, so a link that dies silently (a crashed host, a network
/// partition: no RST ever comes) is noticed within about 30 s even with no query in flight,
/// instead of the kernel's 15-minute retransmission limit. Best effort.
fn set_keepalive(stream: &TcpStream) {
    use std::os::unix::io::AsRawFd;
    let fd = stream.as_raw_fd();
    let set = |level: libc::c_int, name: libc::c_int, value: libc::c_int| {
        // SAFETY: setsockopt on a descriptor we own, with a c_int value of the right size.
        unsafe {
            libc::setsockopt(
                fd,
                level,
                name,
                (&value as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            );
        }
    };
    set(libc::SOL_SOCKET, libc::SO_KEEPALIVE, 1);
    set(libc::IPPROTO_TCP, libc::TCP_KEEPIDLE, 10);
    set(libc::IPPROTO_TCP, libc::TCP_KEEPINTVL, 5);
    set(libc::IPPROTO_TCP, libc::TCP_KEEPCNT, 3);
    set(libc::IPPROTO_TCP, libc::TCP_USER_TIMEOUT, 30_000);
}

fn protocol(e: impl std::fmt::Display) -> Error {
    Error::new(ErrorKind::Protocol, format!("protocol error: {e}"))
}

fn unexpected(what: &str) -> Error {
    Error::new(
        ErrorKind::Protocol,
        format!("unexpected message from the server while waiting for {what}"),
    )
}

fn lost(e: std::io::Error) -> Error {
    if let Some(tls) = transport::describe_io(&e) {
        return Error::new(
            ErrorKind::ConnectFailed,
            format!("TLS failed during startup: {tls}"),
        );
    }
    let kind = if matches!(
        e.kind(),
        std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock
    ) {
        ErrorKind::ConnectFailed
    } else {
        ErrorKind::ConnectionLost
    };
    Error::new(kind, format!("PostgreSQL startup I/O error: {e}"))
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use postgres_protocol::authentication::sasl;

    use super::{client_final, establish, parse_replay_lag, ran_on, Statement};
    use crate::pg::{ConnectParams, RootCert, SslMode};

    /// float8's text for values that are no age: PostgreSQL prints `Infinity` when
    /// `pg_last_xact_replay_timestamp()` is infinite, and clocks that disagree give a negative
    /// lag. None of them says the standby is fresh.
    #[test]
    fn a_replay_lag_that_is_no_finite_age_is_too_far_behind() {
        for (text, why) in [
            ("Infinity", "Duration::from_secs_f64 panics on it"),
            ("-Infinity", "clamped to 0 it would read as caught up"),
            ("NaN", "NaN.max(0.0) is 0: caught up"),
            (
                "-1.5",
                "a standby clock that far behind the primary's: no lag known",
            ),
            ("1e300", "beyond Duration: from_secs_f64 panics on it"),
        ] {
            let lag = std::panic::catch_unwind(|| parse_replay_lag(text.as_bytes()))
                .unwrap_or_else(|_| panic!("{text}: panicked ({why})"));
            assert_eq!(lag.unwrap(), None, "{text}: {why}");
        }
        assert_eq!(parse_replay_lag(b"0").unwrap(), Some(Duration::ZERO));
        assert_eq!(
            parse_replay_lag(b"-0.004").unwrap(),
            Some(Duration::ZERO),
            "a standby clock a few milliseconds behind: caught up, not passed over"
        );
        assert_eq!(
            parse_replay_lag(b"1.5").unwrap(),
            Some(Duration::from_millis(1500))
        );
        assert!(parse_replay_lag(b"soon").is_err(), "not a number at all");
    }

    /// PBKDF2 with the server's iteration count (up to 100,000 in postgres-protocol, tens of
    /// milliseconds) must not run on a may worker: every coroutine there would wait for it.
    #[test]
    fn scram_key_derivation_runs_off_the_workers() {
        let scram = sasl::ScramSha256::new(b"secret", sasl::ChannelBinding::unsupported());
        let client_first = String::from_utf8(scram.message().to_vec()).unwrap();
        let nonce = client_first.rsplit("r=").next().unwrap().to_string();
        let server_first = format!("r={nonce}fromtheserver,s=c2FsdA==,i=4096");
        let derived = may::go!(move || {
            client_final(
                scram,
                server_first.as_bytes(),
                Instant::now() + Duration::from_secs(10),
            )
            .map(|scram| !scram.message().is_empty())
        })
        .join()
        .unwrap();
        assert!(derived.unwrap(), "a client-final message");
        let ran = ran_on::of("scram");
        assert!(!ran.is_empty(), "the key derivation ran");
        assert!(
            ran.iter().all(|on_coroutine| !on_coroutine),
            "PBKDF2 ran on a coroutine, blocking its worker"
        );
    }

    /// The CA file (and client certificate and key) are read at every connection attempt: a
    /// slow disk or network file system must not stall a may worker meanwhile.
    #[test]
    fn tls_files_are_read_off_the_workers() {
        let ca = std::env::temp_dir().join(format!("no-such-ca-{}.pem", std::process::id()));
        let mut params = ConnectParams::new("127.0.0.1", 1, "u", None, "db");
        params.tls.mode = SslMode::VerifyFull;
        params.tls.root_cert = Some(RootCert::File(ca.clone()));
        let e = may::go!(move || establish(&params, &[]).map(drop))
            .join()
            .unwrap()
            .unwrap_err();
        assert!(e.message().contains("sslrootcert"), "{e}");
        let ran = ran_on::of(&format!("tls {}", ca.display()));
        assert!(!ran.is_empty(), "the TLS files were read");
        assert!(
            ran.iter().all(|on_coroutine| !on_coroutine),
            "the TLS files were read on a coroutine, blocking its worker"
        );
    }

    #[test]
    fn wire_names_carry_the_sql() {
        let a = Statement {
            name: "upsert",
            sql: "INSERT INTO t VALUES ($1)",
        };
        let b = Statement {
            name: "upsert",
            sql: "INSERT INTO t VALUES ($1) ON CONFLICT DO NOTHING",
        };
        assert_eq!(a.wire_name(), a.wire_name(), "stable");
        assert_ne!(a.wire_name(), b.wire_name(), "other SQL, other name");
        assert!(a.wire_name().ends_with("_upsert"));
        let long = Statement {
            name: "a_statement_name_much_longer_than_postgresql_keeps_of_an_identifier",
            sql: "SELECT 1",
        };
        assert_eq!(
            long.wire_name().len(),
            63,
            "within PostgreSQL's identifier limit"
        );
        // Fixed across builds and platforms (FNV-1a): a rolling deploy of the same SQL shares
        // the name, and PostgreSQL's 63-byte identifier limit is far off.
        // (The value computed independently, in Python.)
        assert_eq!(a.wire_name(), "s02f6148ab87a1b7a_upsert");
    }
}
