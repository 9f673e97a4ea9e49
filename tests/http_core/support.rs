//! Harness for the `http_core` tests: an in-process server with test services. The raw client
//! is the one every test binary shares (`tests/support/http.rs`), as is `eventually`.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Once, PoisonError};
use std::time::{Duration, Instant};

use records_service::http::{serve, HttpConfig, Request, Response, ServerHandle, Service};
use serde::{Deserialize, Serialize};

#[path = "../support/http.rs"]
pub mod http;
#[path = "../support/wait.rs"]
mod wait;

pub use http::Conn;
pub use wait::eventually;

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

/// A server whose connections always wait for readiness after a read that emptied the socket
/// (`NextRead::WaitFirst`; by default they do so only while the client is slower than the
/// server, which a test cannot arrange for certain), its config otherwise changed by `f`.
pub fn waiting_first(f: impl FnOnce(&mut HttpConfig)) -> TestServer {
    TestServer::start(config(|c| {
        c.next_read = records_service::http::NextRead::WaitFirst;
        f(c);
    }))
}

/// A default config changed by `f`.
pub fn config(f: impl FnOnce(&mut HttpConfig)) -> HttpConfig {
    let mut c = HttpConfig::default();
    f(&mut c);
    c
}

/// The service under test.
///
/// - `/panic` panics;
/// - `/slow` counts itself in `slow_entered`, then waits (on the coroutine) for `release`;
/// - `/big?n=N` answers N bytes of `x` as text/plain;
/// - `/ignore-body` answers `{}` without looking at the body;
/// - `/close` asks for the connection to close;
/// - `/peer` answers the request's peer address (`Request::peer`) as text, or `none`;
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
    /// How many header fields the handler saw, and the last one's name.
    fields: usize,
    last_field: &'a str,
}

/// What the echo service answers.
#[derive(Debug, Deserialize, PartialEq, Eq)]
pub struct Echo {
    pub method: String,
    pub path: String,
    pub query: Option<String>,
    pub body_len: usize,
    pub body: String,
    pub fields: usize,
    pub last_field: String,
}

/// `response.echo()`: the body of an answer from the echo service.
pub trait EchoBody {
    fn echo(&self) -> Echo;
}

impl EchoBody for http::Response {
    fn echo(&self) -> Echo {
        sonic_rs::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "not an echo ({e}): {} {:?}",
                self.status,
                String::from_utf8_lossy(&self.body)
            )
        })
    }
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
            "/peer" => {
                res.content_type("text/plain");
                let peer = req.peer().map_or("none".to_string(), |p| p.to_string());
                res.body_mut().extend_from_slice(peer.as_bytes());
                return;
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
            fields: req.headers().len(),
            last_field: req.headers().last().map_or("", |h| h.name),
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
        let listener = records_service::http::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
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

    /// Whether the open connections come to `n` within 5 s.
    pub fn connections_settle_at(&self, n: usize) -> bool {
        eventually(Duration::from_secs(5), || {
            self.handle.active_connections() == n
        })
    }

    /// A new connection, every read and write under [`READ_TIMEOUT`].
    pub fn client(&self) -> Conn {
        Conn::connect_with_timeout(self.addr(), READ_TIMEOUT)
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

/// Resident set size (`VmRSS`) or its peak (`VmHWM`) of this process, in KiB.
pub fn proc_status_kib(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("read /proc/self/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/self/status"))
}

/// The text of a response stream with every Date and X-Request-Id value blanked, to compare
/// streams sent at
/// different seconds or on different connections.
pub fn without_dates(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes)
        .split("\r\n")
        .map(|line| {
            if line.len() >= 6 && line[..6].eq_ignore_ascii_case("date: ") {
                "Date: *"
            } else if line.len() >= 14 && line[..14].eq_ignore_ascii_case("x-request-id: ") {
                // Made per connection: two runs of the same stream differ only here.
                "X-Request-Id: *"
            } else {
                line
            }
        })
        .collect::<Vec<_>>()
        .join("\r\n")
}
