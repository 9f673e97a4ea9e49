//! Handing one complete request to the service: the call under an unwind guard, the
//! keep-alive decision, and the serialized answer.

use std::mem::MaybeUninit;
use std::panic::{catch_unwind, AssertUnwindSafe};

use super::head::{parse_head, BodyFraming, HeadError, HeadInfo};
use super::response::{write_response, Persistence, Response};
use super::shared::ServerShared;
use super::{request_id, Limits, Request, Service, Status};

/// What answering a request needs of the server around it.
pub(crate) trait Context {
    /// Whether it is shutting down (the answer then closes the connection).
    fn draining(&self) -> bool;
    /// A handler panicked and was answered 500.
    fn handler_panicked(&self);
}

impl Context for ServerShared {
    fn draining(&self) -> bool {
        ServerShared::draining(self)
    }
    fn handler_panicked(&self) {
        self.stats.core_response(Status::INTERNAL_SERVER_ERROR);
    }
}

/// Calls `service` for `req` and appends its answer to `out` (`scratch` holds the body while
/// the handler writes it). Returns whether the connection must close after this answer.
///
/// A panicking handler is answered 500 with `Connection: close` and the server goes on.
/// Whether the server is draining is read after the handler, so a request that was in the
/// handler when shutdown began is answered with `Connection: close`.
/// `req`'s id is set ([`Request::identify`]).
pub(crate) fn dispatch<S: Service>(
    service: &S,
    req: &Request<'_>,
    info: &HeadInfo,
    shared: &impl Context,
    out: &mut Vec<u8>,
    scratch: &mut Vec<u8>,
) -> bool {
    debug_assert!(
        !req.request_id.is_empty(),
        "dispatch needs the request's id"
    );
    let mut res = Response::new(scratch);
    let outcome = catch_unwind(AssertUnwindSafe(|| service.call(req, &mut res)));
    if outcome.is_err() {
        res.reset();
        res.error(Status::INTERNAL_SERVER_ERROR, "Internal Server Error");
        res.close = true;
        shared.handler_panicked();
    }
    let close = !info.keep_alive || res.close || shared.draining();
    let persistence = if close {
        Persistence::Close
    } else if !info.http11 {
        // HTTP/1.0 closes by default: say that this connection stays open.
        Persistence::KeepAlive
    } else {
        Persistence::Default
    };
    write_response(
        out,
        &res,
        req.method() == "HEAD",
        persistence,
        Some(req.request_id),
    );
    close
}

/// No server around: ids with prefix 0, never draining, panics not counted.
struct Detached;

impl Context for Detached {
    fn draining(&self) -> bool {
        false
    }
    fn handler_panicked(&self) {}
}

/// A connection's whole per-request path without its socket: parses the request at the front
/// of `input`, calls `service` under the unwind guard, and appends the serialized answer to
/// `out` (`scratch` holds the body meanwhile), as a connection does. Returns the bytes of
/// `input` the request took, and whether the connection would close after this answer (a
/// caller answering pipelined requests must stop there, as a connection does). Only requests
/// without a body; `Incomplete` when `input` holds no complete head. For the round-trip
/// micro-benchmark (`benches/hot_path.rs`).
#[doc(hidden)]
pub fn answer_in_memory<'b, S: Service>(
    service: &S,
    input: &'b [u8],
    headers: &mut [MaybeUninit<httparse::Header<'b>>],
    limits: &Limits,
    out: &mut Vec<u8>,
    scratch: &mut Vec<u8>,
) -> Result<(usize, bool), HeadError> {
    let head = parse_head(input, headers, limits)?;
    if head.info.framing != BodyFraming::None {
        return Err(HeadError::Bad("a request body is not supported here"));
    }
    let mut id_buf = [0u8; request_id::GENERATED_MAX];
    let mut req = Request {
        method: head.method,
        target: head.target,
        headers: head.headers,
        body: &[],
        conn_id: 1,
        request_id: "",
        peer: None,
    };
    req.identify(0, 1, &mut id_buf);
    let close = dispatch(service, &req, &head.info, &Detached, out, scratch);
    Ok((head.info.len, close))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::Response;

    struct Hello;

    impl Service for Hello {
        fn call(&self, req: &Request<'_>, res: &mut Response<'_>) {
            res.content_type("text/plain");
            res.body_mut().extend_from_slice(req.path().as_bytes());
        }
    }

    #[test]
    fn a_request_in_memory_is_answered_as_on_a_connection() {
        let input = b"GET /hello HTTP/1.1\r\nHost: a\r\nX-Request-Id: abc\r\n\r\nGET /next";
        let limits = Limits::default();
        let mut headers = vec![MaybeUninit::uninit(); limits.max_headers];
        let (mut out, mut scratch) = (Vec::new(), Vec::new());
        let used = answer_in_memory(&Hello, input, &mut headers, &limits, &mut out, &mut scratch);
        assert_eq!(used, Ok((input.len() - b"GET /next".len(), false)));
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
        assert!(text.contains("\r\nX-Request-Id: abc\r\n"), "{text}");
        assert!(text.ends_with("\r\n\r\n/hello"), "{text}");
        let mut out = Vec::new();
        let partial = answer_in_memory(
            &Hello,
            b"GET /",
            &mut headers,
            &limits,
            &mut out,
            &mut scratch,
        );
        assert_eq!(partial, Err(HeadError::Incomplete));
        assert!(out.is_empty());
        let closing = b"GET /a HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n";
        let answered = answer_in_memory(
            &Hello,
            closing,
            &mut headers,
            &limits,
            &mut out,
            &mut scratch,
        );
        assert_eq!(answered, Ok((closing.len(), true)));
        assert!(String::from_utf8_lossy(&out).contains("\r\nConnection: close\r\n"));
    }
}
