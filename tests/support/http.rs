//! The raw HTTP/1.1 client every test binary uses: bytes over `std::net::TcpStream`, responses
//! read byte-exactly (Content-Length framing, pipelined answers one after another), every read
//! under a timeout, so a misbehaving server fails a test instead of hanging it.

#![allow(dead_code)]

use std::io::{self, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, SystemTime};

/// Longest a connection waits for any one read or write unless told otherwise.
pub const IO_TIMEOUT: Duration = Duration::from_secs(15);

/// A parsed response.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub reason: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    /// The first header named `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// How many headers are named `name` (case-insensitive).
    pub fn count(&self, name: &str) -> usize {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .count()
    }

    /// Whether the response announces that the connection closes.
    pub fn closes(&self) -> bool {
        self.header("connection")
            .is_some_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case("close")))
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {} {:?}", self.status, self.text()))
    }

    /// The `detail` of a JSON error body.
    pub fn detail(&self) -> String {
        self.json()["detail"]
            .as_str()
            .unwrap_or_else(|| panic!("no detail in {:?}", self.text()))
            .to_string()
    }

    /// Date, Server, Content-Type and Content-Length: each present once, Date a valid
    /// IMF-fixdate within a minute of now, Content-Length matching the body (for non-HEAD).
    pub fn assert_standard_headers(&self, head: bool) {
        self.assert_headers_except_date(head);
        assert_eq!(self.count("date"), 1, "one Date header in {self:?}");
        let date = httpdate::parse_http_date(self.header("date").unwrap())
            .unwrap_or_else(|e| panic!("bad Date in {self:?}: {e}"));
        let skew = match date.duration_since(SystemTime::now()) {
            Ok(d) => d,
            Err(e) => e.duration(),
        };
        assert!(
            skew < Duration::from_secs(60),
            "Date far from now: {self:?}"
        );
    }

    pub fn assert_headers_except_date(&self, head: bool) {
        assert!(
            !self.reason.is_empty() && self.reason != "Unknown",
            "a reason phrase in {self:?}"
        );
        for name in ["server", "content-type", "content-length"] {
            assert_eq!(self.count(name), 1, "one {name} header in {self:?}");
        }
        assert_eq!(self.header("server"), Some("records-service"));
        if !head {
            assert_eq!(
                self.header("content-length").unwrap().parse::<usize>().ok(),
                Some(self.body.len())
            );
        }
    }
}

/// Parses one response at the start of `buf`: `None` if incomplete. `head`: the answer to a
/// HEAD request (no body whatever its Content-Length).
pub fn parse_response(buf: &[u8], head: bool) -> Option<(Response, usize)> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut r = httparse::Response::new(&mut headers);
    let n = match r.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return None,
        Err(e) => panic!(
            "malformed response ({e}): {:?}",
            String::from_utf8_lossy(&buf[..buf.len().min(400)])
        ),
    };
    assert_eq!(r.version, Some(1), "responses are HTTP/1.1");
    let status = r.code.unwrap();
    let headers: Vec<(String, String)> = r
        .headers
        .iter()
        .map(|h| {
            (
                h.name.to_string(),
                String::from_utf8_lossy(h.value).into_owned(),
            )
        })
        .collect();
    let mut resp = Response {
        status,
        reason: r.reason.unwrap_or("").to_string(),
        headers,
        body: Vec::new(),
    };
    let len = if head || (100..200).contains(&status) || status == 204 || status == 304 {
        0
    } else {
        resp.header("content-length")
            .unwrap_or_else(|| panic!("no Content-Length: {resp:?}"))
            .parse::<usize>()
            .expect("numeric Content-Length")
    };
    if buf.len() < n + len {
        return None;
    }
    resp.body = buf[n..n + len].to_vec();
    Some((resp, n + len))
}

/// The bytes of a request: `Host: test`, and for a body `Content-Type: application/json` and
/// its Content-Length.
pub fn request_bytes(method: &str, target: &str, body: Option<&[u8]>) -> Vec<u8> {
    let mut req = format!("{method} {target} HTTP/1.1\r\nHost: test\r\n");
    if let Some(b) = body {
        req.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            b.len()
        ));
    }
    req.push_str("\r\n");
    let mut bytes = req.into_bytes();
    if let Some(b) = body {
        bytes.extend_from_slice(b);
    }
    bytes
}

/// Sends one request on a new connection and reads its response (unchecked).
pub fn request(addr: SocketAddr, method: &str, target: &str, body: Option<&[u8]>) -> Response {
    let mut c = Conn::connect(addr);
    c.request(method, target, body);
    c.raw_response(method == "HEAD")
}

pub fn get(addr: SocketAddr, target: &str) -> Response {
    request(addr, "GET", target, None)
}

/// A raw client connection: what it sends is bytes; what it reads is buffered, so responses
/// pipelined in one segment are read one after another.
pub struct Conn {
    pub stream: TcpStream,
    buf: Vec<u8>,
    /// The read timeout between calls (`closed_within` changes it for its wait only).
    timeout: Duration,
}

impl Conn {
    /// Connects with [`IO_TIMEOUT`] on every read and write.
    pub fn connect(addr: SocketAddr) -> Conn {
        Conn::connect_with_timeout(addr, IO_TIMEOUT)
    }

    pub fn connect_with_timeout(addr: SocketAddr, timeout: Duration) -> Conn {
        let stream = TcpStream::connect_timeout(&addr, timeout).expect("connect to the server");
        Conn::with_timeout(stream, timeout)
    }

    pub fn from_stream(stream: TcpStream) -> Conn {
        Conn::with_timeout(stream, IO_TIMEOUT)
    }

    pub fn with_timeout(stream: TcpStream, timeout: Duration) -> Conn {
        stream.set_read_timeout(Some(timeout)).unwrap();
        stream.set_write_timeout(Some(timeout)).unwrap();
        stream.set_nodelay(true).unwrap();
        Conn {
            stream,
            buf: Vec::new(),
            timeout,
        }
    }

    pub fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("write to server");
    }

    /// Sends, returning a failure (the server may already have closed on an earlier error).
    pub fn try_send(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream.write_all(bytes)
    }

    /// Sends a request built by [`request_bytes`].
    pub fn request(&mut self, method: &str, target: &str, body: Option<&[u8]>) {
        self.send(&request_bytes(method, target, body));
    }

    pub fn set_read_timeout(&self, t: Duration) {
        self.stream.set_read_timeout(Some(t)).unwrap();
    }

    /// Reads more into the buffer; false at end of stream (EOF, or a reset after the server
    /// closed with our unread bytes in its buffer). Panics on a timeout.
    fn fill(&mut self) -> bool {
        let mut chunk = [0u8; 64 * 1024];
        match self.stream.read(&mut chunk) {
            Ok(0) => false,
            Ok(n) => {
                self.buf.extend_from_slice(&chunk[..n]);
                true
            }
            Err(e)
                if matches!(
                    e.kind(),
                    ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted
                ) =>
            {
                false
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => panic!(
                "timed out waiting for the server; have {:?}",
                self.pending()
            ),
            Err(e) => panic!("read from server: {e}"),
        }
    }

    /// The start of what was read and not yet taken, for failure messages.
    fn pending(&self) -> String {
        String::from_utf8_lossy(&self.buf[..self.buf.len().min(400)]).into_owned()
    }

    /// The next response, checked for the headers every response must carry.
    pub fn response(&mut self) -> Response {
        let r = self.raw_response(false);
        r.assert_standard_headers(false);
        r
    }

    /// The next response, to a HEAD request (no body whatever its Content-Length), checked.
    pub fn head_response(&mut self) -> Response {
        let r = self.raw_response(true);
        r.assert_standard_headers(true);
        r
    }

    /// The next response, unchecked; panics if the server closes first.
    pub fn raw_response(&mut self, head: bool) -> Response {
        self.next_response(head).unwrap_or_else(|| {
            panic!("connection closed before a response");
        })
    }

    /// The next response, unchecked, or `None` if the server closed the connection before
    /// its first byte. Panics on a response torn by the close.
    pub fn next_response(&mut self, head: bool) -> Option<Response> {
        loop {
            if let Some((resp, used)) = parse_response(&self.buf, head) {
                self.buf.drain(..used);
                return Some(resp);
            }
            if !self.fill() {
                assert!(
                    self.buf.is_empty(),
                    "connection closed before a complete response; have {:?}",
                    self.pending()
                );
                return None;
            }
        }
    }

    /// The interim `100 Continue`, exactly.
    pub fn expect_continue(&mut self) {
        const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";
        while self.buf.len() < CONTINUE.len() {
            assert!(self.fill(), "closed before 100 Continue");
        }
        assert_eq!(
            String::from_utf8_lossy(&self.buf[..CONTINUE.len()]),
            String::from_utf8_lossy(CONTINUE)
        );
        self.buf.drain(..CONTINUE.len());
    }

    /// Reads to the end of the stream and checks nothing more came.
    pub fn expect_closed(&mut self) {
        while self.fill() {}
        assert!(
            self.buf.is_empty(),
            "bytes after the last expected response: {:?}",
            self.pending()
        );
    }

    /// Everything until the server closes.
    pub fn read_to_close(&mut self) -> Vec<u8> {
        while self.fill() {}
        std::mem::take(&mut self.buf)
    }

    /// Whether the server stays silent for `within`: sends nothing and does not close. What
    /// arrives meanwhile is kept for the next response.
    pub fn silent_for(&mut self, within: Duration) -> bool {
        let before = self.buf.len();
        !self.closed_within(within) && self.buf.len() == before
    }

    /// Whether the server has closed, waiting at most `within` for a sign either way; bytes
    /// that arrive meanwhile are kept for the next response.
    pub fn closed_within(&mut self, within: Duration) -> bool {
        self.set_read_timeout(within);
        let mut chunk = [0u8; 4096];
        let r = match self.stream.read(&mut chunk) {
            Ok(0) => true,
            Ok(n) => {
                self.buf.extend_from_slice(&chunk[..n]);
                false
            }
            Err(e)
                if matches!(
                    e.kind(),
                    ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted
                ) =>
            {
                true
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => false,
            Err(e) => panic!("read from server: {e}"),
        };
        self.set_read_timeout(self.timeout);
        r
    }
}
