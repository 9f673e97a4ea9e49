//! Errors of the Postgres client, typed so that callers map them to outcomes in one place.
//!
//! The server's message text is kept for logs only; a caller that talks to untrusted clients
//! must show them nothing but the [`ErrorKind`].

use std::fmt;

use fallible_iterator::FallibleIterator;

/// What went wrong, as a closed set a caller can `match` on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// SQLSTATE 23505: a unique constraint rejected the row.
    UniqueViolation,
    /// SQLSTATE 23514: a CHECK constraint rejected the row.
    CheckViolation,
    /// SQLSTATE 22001: a value is longer than its column allows.
    StringTooLong,
    /// SQLSTATE 57014: the statement was cancelled (for example by `statement_timeout`).
    QueryCanceled,
    /// Any other error the server reported for this statement.
    OtherDatabase,
    /// The connection failed while the query was in flight (SQLSTATE class 08, 57P0x, EOF, I/O).
    ConnectionLost,
    /// No connection to the server right now (the circuit is open): failed fast, nothing sent.
    Unavailable,
    /// Too many queries in flight on this connection for longer than the wait deadline.
    Overloaded,
    /// The client-side deadline passed before the answer arrived.
    Timeout,
    /// Startup failed: the server refused the credentials (SQLSTATE 28000, 28P01).
    AuthFailed,
    /// Startup failed: the database does not exist (SQLSTATE 3D000).
    UnknownDatabase,
    /// Startup failed: the TCP connection could not be made (refused, unreachable, timed out).
    ConnectFailed,
    /// The server sent something this client does not understand, or a value failed to decode.
    Protocol,
}

/// A client error: its kind, the SQLSTATE if the server sent one, and a message for logs.
#[derive(Debug, Clone)]
pub struct Error {
    kind: ErrorKind,
    code: Option<[u8; 5]>,
    constraint: Option<String>,
    message: String,
    /// [`FATAL`] and [`TLS_MISCONFIGURED`], in one byte: with `kind` and `code` it fills one
    /// word, so the error stays 56 bytes. Every `Result` on the request path carries it, and
    /// each byte more widens the frames of a request waiting for PostgreSQL.
    marks: u8,
}

/// The server sent it with severity FATAL or PANIC: the session is ending.
const FATAL: u8 = 1;
/// The client's TLS settings cannot work: unreadable or unusable files, or a server certificate
/// that fails verification against them.
const TLS_MISCONFIGURED: u8 = 2;

impl Error {
    pub(crate) fn new(kind: ErrorKind, message: impl Into<String>) -> Error {
        Error {
            kind,
            code: None,
            constraint: None,
            message: message.into(),
            marks: 0,
        }
    }

    /// Builds an error from the fields of a server `ErrorResponse`; `severity` is its `V`
    /// field (never localized), or `S` from servers older than 9.6.
    pub(crate) fn from_server(
        severity: &str,
        code: &str,
        constraint: Option<String>,
        message: String,
    ) -> Error {
        let mut sqlstate = [b'0'; 5];
        if code.len() == 5 {
            sqlstate.copy_from_slice(code.as_bytes());
        }
        Error {
            kind: kind_of_sqlstate(code),
            code: Some(sqlstate),
            constraint,
            message,
            marks: if matches!(severity, "FATAL" | "PANIC") {
                FATAL
            } else {
                0
            },
        }
    }

    /// Whether the TLS settings are at fault: a CA file, client certificate or key that cannot
    /// be read or used, or a server certificate that fails verification against sslrootcert
    /// (unknown CA, wrong host name, expired). Retrying cannot help until the settings or the
    /// server's certificate change.
    pub fn is_tls_misconfigured(&self) -> bool {
        self.marks & TLS_MISCONFIGURED != 0
    }

    /// The same error, marked as [`Error::is_tls_misconfigured`].
    pub(crate) fn tls_misconfigured(self) -> Error {
        Error {
            marks: self.marks | TLS_MISCONFIGURED,
            ..self
        }
    }

    /// The same error, without the mark of [`Error::tls_misconfigured`].
    pub(crate) fn tls_settings_not_at_fault(self) -> Error {
        Error {
            marks: self.marks & !TLS_MISCONFIGURED,
            ..self
        }
    }

    /// Whether the server sent this with severity FATAL or PANIC (it then ends the session).
    pub fn is_fatal(&self) -> bool {
        self.marks & FATAL != 0
    }

    /// The same error, as seen by a caller whose query was on a connection that ended: the
    /// SQLSTATE and message are kept for logs.
    pub(crate) fn into_connection_lost(self) -> Error {
        Error {
            kind: ErrorKind::ConnectionLost,
            ..self
        }
    }

    /// An `Unavailable` error with `message`, for callers that decide the database is not
    /// usable before asking it.
    pub fn unavailable(message: &str) -> Error {
        Error::new(ErrorKind::Unavailable, message)
    }

    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The five-character SQLSTATE, when the server sent one.
    pub fn code(&self) -> Option<&str> {
        self.code.as_ref().and_then(|c| std::str::from_utf8(c).ok())
    }

    /// The constraint named by the server, for constraint violations.
    pub fn constraint(&self) -> Option<&str> {
        self.constraint.as_deref()
    }

    pub fn message(&self) -> &str {
        &self.message
    }

    /// Whether this error means the connection (not the statement) is at fault.
    pub fn is_connection_error(&self) -> bool {
        matches!(
            self.kind,
            ErrorKind::ConnectionLost
                | ErrorKind::Unavailable
                | ErrorKind::ConnectFailed
                | ErrorKind::AuthFailed
                | ErrorKind::UnknownDatabase
        )
    }
}

/// Maps a SQLSTATE to the kind a caller acts on. Class 08 and the 57P0x operator interventions
/// mean the session is gone; everything else concerns only the statement.
pub fn kind_of_sqlstate(code: &str) -> ErrorKind {
    match code {
        "23505" => ErrorKind::UniqueViolation,
        "23514" => ErrorKind::CheckViolation,
        "22001" => ErrorKind::StringTooLong,
        "57014" => ErrorKind::QueryCanceled,
        "28000" | "28P01" => ErrorKind::AuthFailed,
        "3D000" => ErrorKind::UnknownDatabase,
        "57P01" | "57P02" | "57P03" => ErrorKind::ConnectionLost,
        c if c.starts_with("08") => ErrorKind::ConnectionLost,
        _ => ErrorKind::OtherDatabase,
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.code() {
            Some(code) => write!(f, "{:?} (SQLSTATE {code}): {}", self.kind, self.message),
            None => write!(f, "{:?}: {}", self.kind, self.message),
        }
    }
}

impl std::error::Error for Error {}

/// Turns a server `ErrorResponse` into a typed error, keeping the SQLSTATE, the constraint and
/// the message (for logs).
pub(crate) fn server_error(body: postgres_protocol::message::backend::ErrorResponseBody) -> Error {
    let mut code = String::new();
    let mut message = String::new();
    let mut constraint = None;
    let mut severity = String::new();
    let mut localized_severity = String::new();
    let mut fields = body.fields();
    while let Ok(Some(field)) = fields.next() {
        let value = String::from_utf8_lossy(field.value_bytes()).into_owned();
        match field.type_() {
            b'C' => code = value,
            b'M' => message = value,
            b'n' => constraint = Some(value),
            b'V' => severity = value,
            b'S' => localized_severity = value,
            _ => {}
        }
    }
    if severity.is_empty() {
        severity = localized_severity;
    }
    Error::from_server(&severity, &code, constraint, message)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An error rides in every `Result` of the request path, up to the frames that stay on a
    /// waiting request's stack: it must not grow unnoticed (`make test-stack` has the budget).
    #[test]
    fn an_error_is_seven_words() {
        assert_eq!(std::mem::size_of::<Error>(), 56);
        let marked = Error::from_server("FATAL", "57P01", None, "bye".into()).tls_misconfigured();
        assert!(marked.is_fatal() && marked.is_tls_misconfigured());
        let plain = Error::new(ErrorKind::Protocol, "x");
        assert!(!plain.is_fatal() && !plain.is_tls_misconfigured());
    }

    #[test]
    fn sqlstates_map_to_kinds() {
        let table = [
            ("23505", ErrorKind::UniqueViolation),
            ("23514", ErrorKind::CheckViolation),
            ("22001", ErrorKind::StringTooLong),
            ("57014", ErrorKind::QueryCanceled),
            ("08006", ErrorKind::ConnectionLost),
            ("57P01", ErrorKind::ConnectionLost),
            ("28P01", ErrorKind::AuthFailed),
            ("3D000", ErrorKind::UnknownDatabase),
            ("42601", ErrorKind::OtherDatabase),
        ];
        for (code, kind) in table {
            assert_eq!(kind_of_sqlstate(code), kind, "SQLSTATE {code}");
        }
    }
}
