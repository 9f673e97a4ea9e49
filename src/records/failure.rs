//! Every way a request can fail, in one type: [`Failure`] says its status (`status()`), writes
//! its answer, counts it and logs what the operator needs. Database and internal error text goes
//! to the log, never into a response.

use std::borrow::Cow;

use crate::auth::Denial;
use crate::http::{Request, Response, Status};
use crate::logging::Untrusted;
use crate::pg::{self, ErrorKind};

use super::metrics::{Metrics, Unavailable};

/// The generic validation message of the original, kept for its clients.
pub const INVALID_PAYLOAD: &str = "Invalid payload provided! Please check the API documentation.";
pub const NO_EMAIL: &str = "No email provided";

/// The CHECK constraint on `records.email` (sql/0001_create_records.sql): the backstop behind
/// the service's own email validation.
pub const EMAIL_CHECK: &str = "records_email_check";

/// What a handler returns: the answer is in the response, or this failure says what it is.
pub type Handled = Result<(), Failure>;

/// Why a request did not succeed.
#[derive(Debug)]
pub enum Failure {
    /// 400 with this detail.
    BadRequest(Cow<'static, str>),
    /// 404 with this detail.
    NotFound(Cow<'static, str>),
    /// 405, with the methods the path does allow.
    NotAllowed { allow: &'static str },
    /// 429: the client is over `RATE_LIMIT_PER_CLIENT`; `policy` is the `RateLimit-Policy`.
    RateLimited { policy: &'static str },
    /// 401 (no valid token) or 403 (a token without the scope), with a `WWW-Authenticate`
    /// challenge.
    Denied(Denial),
    /// 503 from `/readyz`: the database did not answer its check.
    NotReady(pg::Error),
    /// 503 from `/readyz` while the service drains.
    ShuttingDown,
    /// A database error: 400 (a known constraint's backstop), 503 (unavailable, retry) or 500.
    Database(pg::Error),
}

impl From<pg::Error> for Failure {
    fn from(e: pg::Error) -> Self {
        Failure::Database(e)
    }
}

/// What a database error means for the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DatabaseFailure {
    /// A constraint the service validates first fired anyway: the input was invalid.
    Backstop,
    /// Not executed, or not answered in time: retry later.
    Unavailable(Unavailable),
    /// Anything else, an unknown constraint included: a bug or a schema the service does not
    /// know. Logged with its SQLSTATE and constraint.
    Internal,
}

fn classify(e: &pg::Error) -> DatabaseFailure {
    if let Some(cause) = Unavailable::of(e.kind()) {
        return DatabaseFailure::Unavailable(cause);
    }
    match (e.kind(), e.constraint()) {
        // varchar(100): the length check the service makes first.
        (ErrorKind::StringTooLong, _) => DatabaseFailure::Backstop,
        // By name: a constraint added later cannot be mistaken for this one.
        (ErrorKind::CheckViolation, Some(EMAIL_CHECK)) => DatabaseFailure::Backstop,
        _ => DatabaseFailure::Internal,
    }
}

/// Why a request failed on the server's side, for its access log event.
pub struct Failed {
    /// `database`, `timeout`, `not_ready`, `panic`... (the label `/metrics` counts 503s by,
    /// where it is one).
    pub cause: &'static str,
    pub error: Option<pg::Error>,
}

impl Failure {
    pub fn bad_request(detail: &'static str) -> Failure {
        Failure::BadRequest(Cow::Borrowed(detail))
    }

    /// The generic 404 of an unknown path.
    pub fn not_found() -> Failure {
        Failure::NotFound(Cow::Borrowed("Not Found"))
    }

    pub fn status(&self) -> Status {
        match self {
            Failure::BadRequest(_) => Status::BAD_REQUEST,
            Failure::NotFound(_) => Status::NOT_FOUND,
            Failure::NotAllowed { .. } => Status::METHOD_NOT_ALLOWED,
            Failure::RateLimited { .. } => Status::TOO_MANY_REQUESTS,
            Failure::Denied(d) if d.is_forbidden() => Status::FORBIDDEN,
            Failure::Denied(_) => Status::UNAUTHORIZED,
            Failure::NotReady(_) | Failure::ShuttingDown => Status::SERVICE_UNAVAILABLE,
            Failure::Database(e) => match classify(e) {
                DatabaseFailure::Backstop => Status::BAD_REQUEST,
                DatabaseFailure::Unavailable(_) => Status::SERVICE_UNAVAILABLE,
                DatabaseFailure::Internal => Status::INTERNAL_SERVER_ERROR,
            },
        }
    }

    /// Writes the answer and counts it; returns why it failed, for the access log, when it is
    /// the server's failure rather than the client's.
    #[inline(never)]
    pub fn write(
        self,
        res: &mut Response<'_>,
        req: &Request<'_>,
        metrics: &Metrics,
    ) -> Option<Failed> {
        let status = self.status();
        match self {
            Failure::BadRequest(detail) | Failure::NotFound(detail) => {
                res.error(status, &detail);
                None
            }
            Failure::NotAllowed { allow } => {
                res.error(status, "Method Not Allowed")
                    .header("Allow", allow);
                None
            }
            Failure::RateLimited { policy } => {
                // The connection stays open: a client that waits as told is served on it.
                metrics.rate_limited();
                res.error(status, "Too Many Requests")
                    .header("Retry-After", crate::limit::RETRY_AFTER)
                    .header("RateLimit-Policy", policy)
                    .header("RateLimit", crate::limit::EXHAUSTED);
                None
            }
            Failure::Denied(denial) => {
                metrics.auth_failure(denial);
                res.error(status, denial.detail())
                    .header("WWW-Authenticate", denial.challenge());
                None
            }
            Failure::ShuttingDown => {
                metrics.unavailable(Unavailable::ShuttingDown);
                res.error(status, "Shutting down")
                    .header("Retry-After", "1");
                Some(Failed {
                    cause: Unavailable::ShuttingDown.label(),
                    error: None,
                })
            }
            Failure::NotReady(e) => {
                // No event of its own, as for every 503: the access log has it, with cause and
                // error; the connection state behind it is logged once by the client.
                metrics.unavailable(Unavailable::NotReady);
                res.error(status, "Database unavailable")
                    .header("Retry-After", "1");
                Some(Failed {
                    cause: Unavailable::NotReady.label(),
                    error: Some(e),
                })
            }
            Failure::Database(e) => Some(database(e, res, req, metrics)),
        }
    }
}

fn database(e: pg::Error, res: &mut Response<'_>, req: &Request<'_>, metrics: &Metrics) -> Failed {
    let request_id = req.request_id();
    let cause = match classify(&e) {
        DatabaseFailure::Backstop => {
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
        DatabaseFailure::Unavailable(cause) => {
            metrics.unavailable(cause);
            res.error(
                Status::SERVICE_UNAVAILABLE,
                "Service temporarily unavailable",
            )
            .header("Retry-After", "1");
            // No event of its own: the access log (errors, by default) has the 503 with its
            // cause and error, one event per request; the state changes behind it (connection
            // lost, circuit open) are logged once each by the client.
            cause.label()
        }
        DatabaseFailure::Internal => {
            tracing::error!(
                event = "database_error",
                request_id,
                code = e.code().unwrap_or(""),
                constraint = e.constraint().unwrap_or(""),
                error = %Untrusted(&e),
                "answered 500"
            );
            res.error(Status::INTERNAL_SERVER_ERROR, "Internal Server Error");
            "database_error"
        }
    };
    Failed {
        cause,
        error: Some(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server_error(code: &str, constraint: Option<&str>) -> Failure {
        Failure::Database(pg::Error::from_server(
            "ERROR",
            code,
            constraint.map(str::to_string),
            "rejected".into(),
        ))
    }

    #[test]
    fn constraints_are_told_apart_by_name() {
        assert_eq!(
            server_error("23514", Some(EMAIL_CHECK)).status(),
            Status::BAD_REQUEST
        );
        assert_eq!(
            server_error("23514", Some("records_text_not_blank")).status(),
            Status::INTERNAL_SERVER_ERROR,
            "a constraint the service does not know is not its email check"
        );
        assert_eq!(
            server_error("23505", Some("records_email_key")).status(),
            Status::INTERNAL_SERVER_ERROR
        );
        assert_eq!(server_error("22001", None).status(), Status::BAD_REQUEST);
    }

    #[test]
    fn every_failure_has_its_status() {
        assert_eq!(Failure::bad_request("x").status(), Status::BAD_REQUEST);
        assert_eq!(Failure::not_found().status(), Status::NOT_FOUND);
        assert_eq!(
            Failure::NotAllowed { allow: "GET" }.status(),
            Status::METHOD_NOT_ALLOWED
        );
        assert_eq!(Failure::ShuttingDown.status(), Status::SERVICE_UNAVAILABLE);
        assert_eq!(
            Failure::RateLimited { policy: "" }.status(),
            Status::TOO_MANY_REQUESTS
        );
        assert_eq!(
            Failure::NotReady(pg::Error::unavailable("down")).status(),
            Status::SERVICE_UNAVAILABLE
        );
        assert_eq!(
            server_error("57014", None).status(),
            Status::SERVICE_UNAVAILABLE,
            "a canceled statement"
        );
    }
}
