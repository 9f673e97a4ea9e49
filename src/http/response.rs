//! Writing responses: the status line and the headers every response carries (`Server`, `Date`,
//! `Content-Type`, `Content-Length`), straight into the connection's output buffer.

use std::cell::Cell;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use super::Status;

/// The `Server` header value, as a macro so that the constant heads below can spell it.
macro_rules! server_name {
    () => {
        "records-service"
    };
}

/// At most this many extra headers per response (`Allow`, `Retry-After`, `Cache-Control`...).
const MAX_EXTRA_HEADERS: usize = 4;

/// A response under construction. The handler sets the status, the content type, a few extra
/// headers and writes the body into `body`, or hands over bytes made once and shared
/// ([`Response::shared_body`]); the connection loop serializes it.
pub struct Response<'a> {
    pub(crate) status: Status,
    pub(crate) content_type: &'static str,
    headers: [(&'static str, &'static str); MAX_EXTRA_HEADERS],
    n_headers: usize,
    body: &'a mut Vec<u8>,
    /// Sent instead of `body` when set: bytes made once (a static file) that every answer
    /// sending them shares, so the handler copies nothing and a HEAD touches none of them.
    shared: Option<Arc<[u8]>>,
    /// The `ETag` header's value: computed once with the bytes it tags, so shared too (extra
    /// headers are `&'static`).
    etag: Option<Arc<str>>,
    pub(crate) close: bool,
}

impl<'a> Response<'a> {
    pub(crate) fn new(body: &'a mut Vec<u8>) -> Response<'a> {
        body.clear();
        Response {
            status: Status::OK,
            content_type: "application/json",
            headers: [("", ""); MAX_EXTRA_HEADERS],
            n_headers: 0,
            body,
            shared: None,
            etag: None,
            close: false,
        }
    }

    pub fn status(&mut self, status: Status) -> &mut Self {
        self.status = status;
        self
    }

    /// The status set so far.
    pub fn status_code(&self) -> Status {
        self.status
    }

    pub fn content_type(&mut self, content_type: &'static str) -> &mut Self {
        self.content_type = content_type;
        self
    }

    /// Adds a header. Names and values are static: they come from the program, never from a
    /// client, so they cannot inject header lines. Extra headers beyond the fixed room are a
    /// programming error and are dropped (debug builds assert; handlers run under the
    /// connection's unwind guard, so the assertion answers 500). The connection's own headers
    /// (`Connection`, `Content-Length`) are not set this way and cannot be dropped.
    pub fn header(&mut self, name: &'static str, value: &'static str) -> &mut Self {
        debug_assert!(self.n_headers < MAX_EXTRA_HEADERS, "too many headers");
        if self.n_headers < MAX_EXTRA_HEADERS {
            self.headers[self.n_headers] = (name, value);
            self.n_headers += 1;
        }
        self
    }

    /// Asks the connection to close after this response.
    pub fn close_connection(&mut self) -> &mut Self {
        self.close = true;
        self
    }

    /// The body to write into; a shared body set before is dropped.
    pub fn body_mut(&mut self) -> &mut Vec<u8> {
        self.shared = None;
        self.body
    }

    /// The body that will be sent: the shared one when set, else what was written.
    pub fn body(&self) -> &[u8] {
        match &self.shared {
            Some(bytes) => bytes,
            None => self.body,
        }
    }

    /// Sends `bytes` as the body, shared rather than copied into this response (what was
    /// written into the body is ignored).
    pub fn shared_body(&mut self, bytes: Arc<[u8]>) -> &mut Self {
        self.shared = Some(bytes);
        self
    }

    /// Sets the `ETag` header. The value is the program's (a quoted entity tag it computed),
    /// never a client's, so it cannot inject header lines.
    pub fn etag(&mut self, tag: Arc<str>) -> &mut Self {
        debug_assert!(
            tag.len() >= 2 && tag.ends_with('"') && tag.bytes().all(|b| b.is_ascii_graphic()),
            "an entity tag"
        );
        self.etag = Some(tag);
        self
    }

    /// Sets a JSON error body `{"detail": "..."}` with `status`.
    pub fn error(&mut self, status: Status, detail: &str) -> &mut Self {
        self.status = status;
        self.content_type = "application/json";
        self.shared = None;
        self.etag = None;
        self.body.clear();
        write_detail(self.body, detail);
        self
    }

    /// Forgets everything set so far (used when a handler panicked half-way).
    pub(crate) fn reset(&mut self) {
        self.status = Status::OK;
        self.content_type = "application/json";
        self.n_headers = 0;
        self.shared = None;
        self.etag = None;
        self.body.clear();
    }

    pub(crate) fn extra_headers(&self) -> &[(&'static str, &'static str)] {
        &self.headers[..self.n_headers]
    }
}

/// Appends `{"detail":"..."}` with `detail` escaped as a JSON string.
pub fn write_detail(out: &mut Vec<u8>, detail: &str) {
    out.extend_from_slice(b"{\"detail\":");
    // Serializing a &str cannot fail.
    let _ = sonic_rs::to_writer(&mut *out, detail);
    out.push(b'}');
}

/// What the `Connection` header of a response says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Persistence {
    /// Nothing: HTTP/1.1's default, the connection stays open.
    Default,
    /// `Connection: keep-alive`: an HTTP/1.0 client asked for it and it is granted.
    KeepAlive,
    /// `Connection: close`: the server closes after this response.
    Close,
}

/// What follows the status line of every response, up to the Date's value.
const SERVER_UNTIL_DATE: &[u8] = concat!("\r\nServer: ", server_name!(), "\r\nDate: ").as_bytes();

/// The start of a 200 response, status line included, up to the Date's value.
const OK_UNTIL_DATE: &[u8] =
    concat!("HTTP/1.1 200 OK\r\nServer: ", server_name!(), "\r\nDate: ").as_bytes();

/// Room for a response's head without its request id: the status line, the fixed headers, a
/// content type and at most [`MAX_EXTRA_HEADERS`] short extra headers (a guess: a longer head
/// only grows the buffer once more).
const HEAD_RESERVE: usize = 256;

/// Serializes a complete response into `out`. `head_only` omits the body (for HEAD) but keeps
/// its Content-Length. A status that forbids content (1xx, 204, 304) is sent without a body
/// whatever the handler wrote, and without Content-Type or Content-Length.
pub(crate) fn write_response(
    out: &mut Vec<u8>,
    res: &Response<'_>,
    head_only: bool,
    persistence: Persistence,
    request_id: Option<&str>,
) {
    let status = res.status;
    let body = if status.allows_content() {
        res.body()
    } else {
        &[]
    };
    // One reservation for the whole answer, so the appends below never reallocate (a HEAD's
    // body is not sent, so not reserved: the output buffer is charged to the memory budget).
    let sent_body = if head_only { 0 } else { body.len() };
    out.reserve(HEAD_RESERVE + request_id.map_or(0, str::len) + sent_body);
    if status == Status::OK {
        out.extend_from_slice(OK_UNTIL_DATE);
    } else {
        out.extend_from_slice(b"HTTP/1.1 ");
        out.extend_from_slice(&status.digits());
        out.push(b' ');
        out.extend_from_slice(status.reason().as_bytes());
        out.extend_from_slice(SERVER_UNTIL_DATE);
    }
    with_date(|d| out.extend_from_slice(d));
    if status.allows_content() {
        out.extend_from_slice(b"\r\nContent-Type: ");
        out.extend_from_slice(res.content_type.as_bytes());
        out.extend_from_slice(b"\r\nContent-Length: ");
        out.extend_from_slice(itoa::Buffer::new().format(body.len()).as_bytes());
    }
    if let Some(tag) = &res.etag {
        out.extend_from_slice(b"\r\nETag: ");
        out.extend_from_slice(tag.as_bytes());
    }
    for (name, value) in res.extra_headers() {
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
    }
    if let Some(id) = request_id {
        // Valid ids are visible ASCII only (request_id::is_valid): no header injection.
        out.extend_from_slice(b"\r\nX-Request-Id: ");
        out.extend_from_slice(id.as_bytes());
    }
    match persistence {
        Persistence::Default => {}
        Persistence::KeepAlive => out.extend_from_slice(b"\r\nConnection: keep-alive"),
        Persistence::Close => out.extend_from_slice(b"\r\nConnection: close"),
    }
    out.extend_from_slice(b"\r\n\r\n");
    if !head_only {
        // The one copy a shared body costs: into the output buffer, behind the head, where the
        // connection's write path sends everything from.
        out.extend_from_slice(body);
    }
}

/// A response the connection loop makes on its own (a refusal before or around a handler):
/// `{"detail": ...}` and `Connection: close`, with no body when the request was HEAD.
pub(crate) fn write_error(
    out: &mut Vec<u8>,
    scratch: &mut Vec<u8>,
    status: Status,
    detail: &str,
    head_only: bool,
    retry_after: bool,
) {
    let mut res = Response::new(scratch);
    res.error(status, detail);
    if retry_after {
        res.header("Retry-After", "1");
    }
    write_response(out, &res, head_only, Persistence::Close, None);
}

thread_local! {
    /// The IMF-fixdate for the second in `.0`, formatted at most once a second per worker
    /// thread. Thread-local, so no lock and no race; never held across a blocking point.
    static DATE: Cell<(u64, [u8; 29])> = const { Cell::new((0, [0; 29])) };
}

fn with_date<R>(f: impl FnOnce(&[u8]) -> R) -> R {
    let secs = coarse_unix_seconds();
    DATE.with(|cell| {
        let (cached, mut text) = cell.get();
        if cached != secs {
            let formatted =
                httpdate::fmt_http_date(UNIX_EPOCH + std::time::Duration::from_secs(secs));
            text.copy_from_slice(&formatted.as_bytes()[..29]);
            cell.set((secs, text));
        }
        f(&text)
    })
}

/// Seconds since the Unix epoch from the kernel's coarse clock (updated every tick, a few
/// milliseconds: plenty for a Date of one-second resolution, and several times cheaper than a
/// precise read, which every response would otherwise pay).
fn coarse_unix_seconds() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes the timespec we own; CLOCK_REALTIME_COARSE exists on Linux.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_REALTIME_COARSE, &mut ts) };
    if rc == 0 {
        u64::try_from(ts.tv_sec).unwrap_or(0)
    } else {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_constant_ok_head_is_what_the_general_path_writes() {
        let general = [
            &b"HTTP/1.1 "[..],
            &Status::OK.digits(),
            b" ",
            Status::OK.reason().as_bytes(),
            SERVER_UNTIL_DATE,
        ]
        .concat();
        assert_eq!(OK_UNTIL_DATE, &general[..]);
        assert_eq!(&Status::HTTP_VERSION_NOT_SUPPORTED.digits(), b"505");
        assert_eq!(&Status::CONTINUE.digits(), b"100");
    }

    #[test]
    fn error_bodies_escape_the_detail() {
        let mut out = Vec::new();
        write_detail(&mut out, "a \"quoted\"\nline");
        assert_eq!(out, br#"{"detail":"a \"quoted\"\nline"}"#);
    }

    #[test]
    fn responses_carry_the_required_headers() {
        let mut body = Vec::new();
        let mut res = Response::new(&mut body);
        res.body_mut().extend_from_slice(b"{}");
        let mut out = Vec::new();
        write_response(&mut out, &res, false, Persistence::Default, None);
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("HTTP/1.1 200 OK\r\nServer: records-service\r\nDate: "));
        assert!(text.contains("\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"));
        assert!(text.contains(" GMT\r\n"), "{text}");
    }

    #[test]
    fn a_shared_body_is_sent_with_its_etag_and_left_out_for_head() {
        let mut body = Vec::new();
        let mut res = Response::new(&mut body);
        res.body_mut().extend_from_slice(b"ignored");
        res.shared_body(Arc::from(&b"shared"[..]))
            .etag(Arc::from("\"t1\""));
        let mut out = Vec::new();
        write_response(&mut out, &res, false, Persistence::Default, None);
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.contains("\r\nContent-Length: 6\r\nETag: \"t1\"\r\n"),
            "{text:?}"
        );
        assert!(text.ends_with("\r\n\r\nshared"), "{text:?}");
        let mut out = Vec::new();
        write_response(&mut out, &res, true, Persistence::Default, None);
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.contains("Content-Length: 6\r\n") && text.ends_with("\r\n\r\n"),
            "{text:?}"
        );
        res.error(Status::NOT_FOUND, "x");
        assert_eq!(res.body(), br#"{"detail":"x"}"#);
        assert!(res.etag.is_none());
    }

    #[test]
    fn statuses_that_forbid_content_never_carry_it() {
        for (status, length) in [
            (Status::NO_CONTENT, false),
            (Status::NOT_MODIFIED, false),
            (Status::CONTINUE, false),
        ] {
            let mut body = Vec::new();
            let mut res = Response::new(&mut body);
            res.status(status)
                .body_mut()
                .extend_from_slice(b"{\"x\":1}");
            let mut out = Vec::new();
            write_response(&mut out, &res, false, Persistence::Default, None);
            let text = String::from_utf8(out).unwrap();
            assert!(text.ends_with("\r\n\r\n"), "{status}: no body: {text:?}");
            assert_eq!(text.contains("Content-Length"), length, "{text:?}");
        }
    }

    #[test]
    fn error_answers_to_head_have_no_body() {
        let (mut out, mut scratch) = (Vec::new(), Vec::new());
        write_error(
            &mut out,
            &mut scratch,
            Status::CONTENT_TOO_LARGE,
            "x",
            true,
            false,
        );
        let text = String::from_utf8(out).unwrap();
        assert!(text.ends_with("Connection: close\r\n\r\n"), "{text:?}");
        assert!(text.contains("Content-Length: 14\r\n"), "{text:?}");
    }
}
