//! Harness for `tests/http_core.rs`: an in-process server with test services, and a raw
//! `std::net` client that reads responses byte-exactly, with a timeout on every read.

use std::io::{self, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Once, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use records_service::http::{serve, HttpConfig, Request, Response, ServerHandle, Service};
use serde::{Deserialize, Serialize};

/// Longest a test waits for any one read: no test can hang on a silent server.
pub const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// Coroutine stack, as the service's default (`STACK_SIZE_KIB` = 64).
const STACK_BYTES: usize = 64 * 1024;

static INIT: Once = Once::new();

/// Configures `may` once per test binary, before the first server starts.
pub fn init_runtime() {
    INIT.call_once(|| {
        may::config()
            .set_workers(2)
            .set_stack_size(STACK_BYTES / std::mem::size_of::<usize>());
        raise_fd_limit();
    });
}

pub use records_service::signals::raise_fd_limit;

/// A default config changed by `f`.
pub fn config(f: impl FnOnce(&mut HttpConfig)) -> HttpConfig {
    let mut c = HttpConfig::default();
    f(&mut c);
    c
}

/// Polls `cond` until it holds or `within` passes; true if it held.
pub fn wait_until(within: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + within;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The service under test.
///
/// - `/panic` panics;
/// - `/slow` counts itself in `slow_entered`, then waits (on the coroutine) for `release`;
/// - `/big?n=N` answers N bytes of `x` as text/plain;
/// - `/ignore-body` answers `{}` without looking at the body;
/// - `/close` asks for the connection to close;
/// - anything else echoes the request as JSON (see [`Echo`]).
///
/// Every path the handler is called for is recorded in `seen`, so a test can prove that a
/// smuggled request never reached it.
#[derive(Default)]
pub struct TestService {
    pub seen: Mutex<Vec<String>>,
    pub slow_entered: AtomicUsize,
    pub release: AtomicBool,
}

#[derive(Serialize)]
struct EchoOut<'a> {
    method: &'a str,
    path: &'a str,
    query: Option<&'a str>,
    body_len: usize,
    body: &'a str,
}

/// What the echo service answers.
#[derive(Debug, Deserialize, PartialEq, Eq)]
pub struct Echo {
    pub method: String,
    pub path: String,
    pub query: Option<String>,
    pub body_len: usize,
    pub body: String,
}

impl Service for TestService {
    fn call(&self, req: &Request<'_>, res: &mut Response<'_>) {
        self.seen
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(req.path().to_string());
        match req.path() {
            "/panic" => panic!("deliberate panic in the test handler"),
            "/slow" => {
                self.slow_entered.fetch_add(1, Ordering::SeqCst);
                let deadline = Instant::now() + Duration::from_secs(10);
                while !self.release.load(Ordering::SeqCst) && Instant::now() < deadline {
                    may::coroutine::sleep(Duration::from_millis(2));
                }
            }
            "/big" => {
                let n = req
                    .query()
                    .and_then(|q| q.strip_prefix("n="))
                    .and_then(|n| n.parse().ok())
                    .unwrap_or(0);
                res.content_type("text/plain");
                res.body_mut().resize(n, b'x');
                return;
            }
            "/ignore-body" => {
                res.body_mut().extend_from_slice(b"{}");
                return;
            }
            "/close" => {
                res.close_connection();
            }
            _ => {}
        }
        let body = String::from_utf8_lossy(req.body());
        let out = EchoOut {
            method: req.method(),
            path: req.path(),
            query: req.query(),
            body_len: req.body().len(),
            body: &body,
        };
        sonic_rs::to_writer(res.body_mut(), &out).expect("serialize the echo");
    }
}

/// A server on 127.0.0.1:0 with a [`TestService`]; shut down when dropped.
pub struct TestServer {
    pub handle: ServerHandle,
    pub svc: Arc<TestService>,
}

impl TestServer {
    pub fn start(config: HttpConfig) -> TestServer {
        init_runtime();
        let listener = may::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let svc = Arc::new(TestService::default());
        let handle = serve(listener, svc.clone(), config).expect("serve");
        TestServer { handle, svc }
    }

    pub fn default_config() -> TestServer {
        TestServer::start(HttpConfig::default())
    }

    pub fn addr(&self) -> SocketAddr {
        self.handle.local_addr()
    }

    pub fn client(&self) -> Client {
        Client::connect(self.addr())
    }

    /// Every path the handler was called for, in order.
    pub fn seen(&self) -> Vec<String> {
        self.svc
            .seen
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    pub fn saw(&self, path: &str) -> bool {
        self.seen().iter().any(|p| p == path)
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.svc.release.store(true, Ordering::SeqCst);
        self.handle.shutdown();
    }
}

/// A parsed response.
#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub reason: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Resp {
    /// The first header named `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

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

    pub fn echo(&self) -> Echo {
        sonic_rs::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "not an echo ({e}): {} {:?}",
                self.status,
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    /// The `detail` of a JSON error body.
    pub fn detail(&self) -> String {
        #[derive(Deserialize)]
        struct Detail {
            detail: String,
        }
        let d: Detail = sonic_rs::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "not a JSON error body ({e}): {:?}",
                String::from_utf8_lossy(&self.body)
            )
        });
        d.detail
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

/// Parses one response at the start of `buf`: `None` if incomplete.
pub fn parse_response(buf: &[u8], head: bool) -> Option<(Resp, usize)> {
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
    let resp = Resp {
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
    let mut resp = resp;
    resp.body = buf[n..n + len].to_vec();
    Some((resp, n + len))
}

/// A raw client connection.
pub struct Client {
    pub stream: TcpStream,
    buf: Vec<u8>,
}

impl Client {
    pub fn connect(addr: SocketAddr) -> Client {
        let stream =
            TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect to server");
        Client::from_stream(stream)
    }

    pub fn from_stream(stream: TcpStream) -> Client {
        stream.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
        stream.set_write_timeout(Some(READ_TIMEOUT)).unwrap();
        stream.set_nodelay(true).unwrap();
        Client {
            stream,
            buf: Vec::new(),
        }
    }

    pub fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("write to server");
    }

    /// Sends, ignoring a failure (the server may already have closed on an earlier error).
    pub fn try_send(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream.write_all(bytes)
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
                String::from_utf8_lossy(&self.buf[..self.buf.len().min(400)])
            ),
            Err(e) => panic!("read from server: {e}"),
        }
    }

    /// The next response, checked for the headers every response must carry.
    pub fn response(&mut self) -> Resp {
        let r = self.raw_response(false);
        r.assert_standard_headers(false);
        r
    }

    /// The next response, to a HEAD request (no body whatever its Content-Length).
    pub fn head_response(&mut self) -> Resp {
        let r = self.raw_response(true);
        r.assert_standard_headers(true);
        r
    }

    /// The next response, unchecked.
    pub fn raw_response(&mut self, head: bool) -> Resp {
        loop {
            if let Some((resp, used)) = parse_response(&self.buf, head) {
                self.buf.drain(..used);
                return resp;
            }
            if !self.fill() {
                panic!(
                    "connection closed before a complete response; have {:?}",
                    String::from_utf8_lossy(&self.buf[..self.buf.len().min(400)])
                );
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
            String::from_utf8_lossy(&self.buf[..self.buf.len().min(400)])
        );
    }

    /// Everything until the server closes.
    pub fn read_to_close(&mut self) -> Vec<u8> {
        while self.fill() {}
        std::mem::take(&mut self.buf)
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
        self.set_read_timeout(READ_TIMEOUT);
        r
    }
}

/// Resident set size (`VmRSS`) or its peak (`VmHWM`) of this process, in KiB.
pub fn proc_status_kib(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("read /proc/self/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/self/status"))
}

/// The text of a response stream with every Date value blanked, to compare streams sent at
/// different seconds.
pub fn without_dates(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes)
        .split("\r\n")
        .map(|line| {
            if line.len() >= 6 && line[..6].eq_ignore_ascii_case("date: ") {
                "Date: *"
            } else {
                line
            }
        })
        .collect::<Vec<_>>()
        .join("\r\n")
}
