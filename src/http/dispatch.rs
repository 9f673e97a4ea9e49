//! Handing one complete request to the service: the call under an unwind guard, the
//! keep-alive decision, and the serialized answer.

use std::panic::{catch_unwind, AssertUnwindSafe};

use super::head::HeadInfo;
use super::response::{write_response, Persistence, Response};
use super::server::ServerShared;
use super::{request_id, Request, Service, Status};

/// Calls `service` for `req` and appends its answer to `out` (`scratch` holds the body while
/// the handler writes it). Returns whether the connection must close after this answer.
///
/// A panicking handler is answered 500 with `Connection: close` and the server goes on.
/// Whether the server is draining is read after the handler, so a request that was in the
/// handler when shutdown began is answered with `Connection: close`.
/// `seq` numbers the request on its connection (for a generated request id).
pub(crate) fn dispatch<S: Service>(
    service: &S,
    req: &Request<'_>,
    seq: u64,
    info: &HeadInfo,
    shared: &ServerShared,
    out: &mut Vec<u8>,
    scratch: &mut Vec<u8>,
) -> bool {
    let mut id_buf = [0u8; request_id::GENERATED_MAX];
    let id = match req.header("x-request-id") {
        Some(v) if request_id::is_valid(v) => std::str::from_utf8(v).unwrap_or(""),
        _ => request_id::generate(shared.id_prefix, req.conn_id, seq, &mut id_buf),
    };
    let req = &Request {
        request_id: id,
        ..*req
    };
    let mut res = Response::new(scratch);
    let outcome = catch_unwind(AssertUnwindSafe(|| service.call(req, &mut res)));
    if outcome.is_err() {
        res.reset();
        res.error(Status::INTERNAL_SERVER_ERROR, "Internal Server Error");
        res.close = true;
        shared.stats.core_response(Status::INTERNAL_SERVER_ERROR);
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
    write_response(out, &res, req.method() == "HEAD", persistence, Some(id));
    close
}
