//! Handing one complete request to the service: the call under an unwind guard, the
//! keep-alive decision, and the serialized answer.

use std::panic::{catch_unwind, AssertUnwindSafe};

use super::head::HeadInfo;
use super::response::{write_response, Persistence, Response};
use super::server::ServerShared;
use super::{Request, Service, Status};

/// Calls `service` for `req` and appends its answer to `out` (`scratch` holds the body while
/// the handler writes it). Returns whether the connection must close after this answer.
///
/// A panicking handler is answered 500 with `Connection: close` and the server goes on.
/// Whether the server is draining is read after the handler, so a request that was in the
/// handler when shutdown began is answered with `Connection: close`.
pub(crate) fn dispatch<S: Service>(
    service: &S,
    req: &Request<'_>,
    info: &HeadInfo,
    shared: &ServerShared,
    out: &mut Vec<u8>,
    scratch: &mut Vec<u8>,
) -> bool {
    let mut res = Response::new(scratch);
    let outcome = catch_unwind(AssertUnwindSafe(|| service.call(req, &mut res)));
    if outcome.is_err() {
        res.reset();
        res.error(Status::INTERNAL_SERVER_ERROR, "Internal Server Error");
        res.close = true;
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
    write_response(out, &res, req.method() == "HEAD", persistence);
    close
}
