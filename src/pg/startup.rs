//! Opening a connection: TCP connect, the startup message, authentication (trust, cleartext,
//! MD5, SCRAM-SHA-256) and preparing every statement the caller named, all under one deadline.
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

use super::error::{Error, ErrorKind};
use super::ConnectParams;

/// A prepared statement: its name on the connection and its SQL. Parameter types are left for
/// the server to infer from the SQL (write casts in the SQL where inference is ambiguous).
#[derive(Debug, Clone, Copy)]
pub struct Statement {
    pub name: &'static str,
    pub sql: &'static str,
}

/// A connection past startup: authenticated, statements prepared, idle. `read_buf` may already
/// hold bytes the server sent after the last `ReadyForQuery` (normally none).
pub(crate) struct Established {
    pub stream: TcpStream,
    pub read_buf: BytesMut,
}

pub(crate) fn establish(
    params: &ConnectParams,
    statements: &[Statement],
) -> Result<Established, Error> {
    let deadline = Instant::now() + params.connect_timeout;
    // Every address the name has, in order (localhost may be ::1 first, then 127.0.0.1).
    let mut failure = None;
    let mut connected = None;
    for addr in resolve(&params.host, params.port)? {
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
            failure.unwrap_or_else(|| format!("cannot connect to {}:{}", params.host, params.port)),
        )
    })?;
    stream.set_nodelay(true).ok();
    set_keepalive(&stream);
    let mut conn = Handshake {
        stream,
        buf: BytesMut::with_capacity(8192),
        deadline,
    };

    let mut out = BytesMut::with_capacity(256);
    let statement_timeout = format!("{}", params.statement_timeout.as_millis());
    let mut startup: Vec<(&str, &str)> = vec![
        ("user", params.user.as_str()),
        ("database", params.dbname.as_str()),
        ("application_name", params.application_name.as_str()),
        ("client_encoding", "UTF8"),
    ];
    if !params.statement_timeout.is_zero() {
        startup.push(("statement_timeout", statement_timeout.as_str()));
    }
    frontend::startup_message(startup.iter().copied(), &mut out).map_err(protocol)?;
    conn.send(&mut out)?;
    conn.authenticate(params)?;

    // Wait for ReadyForQuery, skipping ParameterStatus and BackendKeyData.
    loop {
        match conn.next()? {
            Message::ReadyForQuery(_) => break,
            Message::ErrorResponse(body) => return Err(server_error(body)),
            _ => {}
        }
    }

    if !statements.is_empty() {
        for st in statements {
            frontend::parse(st.name, st.sql, std::iter::empty(), &mut out).map_err(protocol)?;
        }
        frontend::sync(&mut out);
        conn.send(&mut out)?;
        let mut failure = None;
        loop {
            match conn.next()? {
                Message::ParseComplete => {}
                Message::ErrorResponse(body) => failure = Some(server_error(body)),
                Message::ReadyForQuery(_) => break,
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
    Ok(Established {
        stream: conn.stream,
        read_buf: conn.buf,
    })
}

/// The addresses to try. An IP literal is parsed in place; a name is looked up with
/// `getaddrinfo`, which blocks the calling thread, so on a plain thread, while this coroutine
/// waits on a may channel and the worker serves other coroutines.
fn resolve(host: &str, port: u16) -> Result<Vec<std::net::SocketAddr>, Error> {
    if let Ok(ip) = host.parse::<std::net::IpAddr>() {
        return Ok(vec![std::net::SocketAddr::new(ip, port)]);
    }
    let (tx, rx) = may::sync::mpsc::channel();
    let name = host.to_string();
    std::thread::Builder::new()
        .name("pg-resolve".into())
        .spawn(move || {
            let _ = tx.send((name.as_str(), port).to_socket_addrs().map(Vec::from_iter));
        })
        .map_err(|e| {
            Error::new(
                ErrorKind::ConnectFailed,
                format!("cannot resolve {host}: {e}"),
            )
        })?;
    match rx.recv() {
        Ok(Ok(addrs)) if !addrs.is_empty() => Ok(addrs),
        Ok(Ok(_)) => Err(Error::new(
            ErrorKind::ConnectFailed,
            format!("{host}:{port} resolves to no address"),
        )),
        Ok(Err(e)) => Err(Error::new(
            ErrorKind::ConnectFailed,
            format!("cannot resolve {host}:{port}: {e}"),
        )),
        Err(_) => Err(Error::new(
            ErrorKind::ConnectFailed,
            format!("cannot resolve {host}:{port}"),
        )),
    }
}

struct Handshake {
    stream: TcpStream,
    buf: BytesMut,
    deadline: Instant,
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

    fn authenticate(&mut self, params: &ConnectParams) -> Result<(), Error> {
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
            Message::AuthenticationOk => return Ok(()),
            Message::AuthenticationCleartextPassword => {
                frontend::password_message(password()?.as_bytes(), &mut out).map_err(protocol)?;
                self.send(&mut out)?;
            }
            Message::AuthenticationMd5Password(body) => {
                let hash = md5_hash(params.user.as_bytes(), password()?.as_bytes(), body.salt());
                frontend::password_message(hash.as_bytes(), &mut out).map_err(protocol)?;
                self.send(&mut out)?;
            }
            Message::AuthenticationSasl(body) => {
                let mut has_scram = false;
                let mut mechanisms = body.mechanisms();
                while let Some(m) = mechanisms.next().map_err(protocol)? {
                    has_scram |= m == sasl::SCRAM_SHA_256;
                }
                if !has_scram {
                    return Err(Error::new(
                        ErrorKind::AuthFailed,
                        "the server offers no SASL mechanism this client supports",
                    ));
                }
                let mut scram = sasl::ScramSha256::new(
                    password()?.as_bytes(),
                    sasl::ChannelBinding::unsupported(),
                );
                frontend::sasl_initial_response(sasl::SCRAM_SHA_256, scram.message(), &mut out)
                    .map_err(protocol)?;
                self.send(&mut out)?;
                match self.next()? {
                    Message::AuthenticationSaslContinue(body) => scram
                        .update(body.data())
                        .map_err(|e| Error::new(ErrorKind::AuthFailed, format!("SCRAM: {e}")))?,
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
                    "the server asks for an authentication method this client does not support",
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

/// Turns a server `ErrorResponse` into a typed error, keeping the SQLSTATE, the constraint and
/// the message (for logs).
pub(crate) fn server_error(body: postgres_protocol::message::backend::ErrorResponseBody) -> Error {
    let mut code = String::new();
    let mut message = String::new();
    let mut constraint = None;
    let mut fields = body.fields();
    while let Ok(Some(field)) = fields.next() {
        let value = String::from_utf8_lossy(field.value_bytes()).into_owned();
        match field.type_() {
            b'C' => code = value,
            b'M' => message = value,
            b'n' => constraint = Some(value),
            _ => {}
        }
    }
    Error::from_server(&code, constraint, message)
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
