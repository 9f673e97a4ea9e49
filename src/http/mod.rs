//! An HTTP/1.1 server on `may` coroutines: one coroutine per connection, keep-alive and
//! pipelining, strict RFC 9112 framing, limits and timeouts on everything a client controls,
//! backpressure, panic isolation and graceful shutdown.
//!
//! Knows nothing of records or PostgreSQL: a [`Service`] gets a parsed [`Request`] and fills a
//! [`Response`]. Must never let one request's bytes be read as another's, never grow memory
//! without bound on a client's say-so, and never let a handler's panic take the process down.

mod buffer;
mod chunked;
mod conn;
mod dispatch;
mod head;
pub mod proxy;
pub mod request_id;
mod response;
mod server;
mod shared;
mod socket;
mod stats;
mod status;

use std::net::SocketAddr;
use std::time::Duration;

// The head parser and the in-memory request path, for the hot-path micro-benchmarks
// (benches/hot_path.rs).
pub use dispatch::answer_in_memory;
pub use head::{parse_head, HeadError};
pub use response::Response;
pub use server::{bind, serve, ServerHandle};
pub use stats::{Refused, ServerStats, Timeout};
pub use status::Status;

/// A request as the handler sees it: borrowed from the connection's buffers, valid for the
/// duration of the call.
pub struct Request<'a> {
    method: &'a str,
    target: &'a str,
    headers: &'a [httparse::Header<'a>],
    body: &'a [u8],
    conn_id: u64,
    request_id: &'a str,
    peer: Option<SocketAddr>,
}

impl<'a> Request<'a> {
    /// The method as sent (`GET`, `HEAD`, `POST`...). For `HEAD`, the server drops the body the
    /// handler writes; handlers answer it like `GET`.
    pub fn method(&self) -> &'a str {
        self.method
    }

    /// The request target's path, without the query.
    pub fn path(&self) -> &'a str {
        // A byte search: `str::find` with a char pattern costs more on short paths.
        match self.target.bytes().position(|b| b == b'?') {
            Some(i) => &self.target[..i],
            None => self.target,
        }
    }

    /// The raw (still percent-encoded) query string, if any.
    pub fn query(&self) -> Option<&'a str> {
        self.target.find('?').map(|i| &self.target[i + 1..])
    }

    pub fn headers(&self) -> &'a [httparse::Header<'a>] {
        self.headers
    }

    /// The first header named `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&'a [u8]> {
        self.headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| h.value)
    }

    /// The body, de-chunked if it was sent chunked.
    pub fn body(&self) -> &'a [u8] {
        self.body
    }

    /// A number unique to the connection within this server, stable across its requests.
    pub fn conn_id(&self) -> u64 {
        self.conn_id
    }

    /// The request's id: the client's `X-Request-Id` when valid (see [`request_id::is_valid`]),
    /// else one made by the server. Echoed on the response as `X-Request-Id`.
    pub fn request_id(&self) -> &'a str {
        self.request_id
    }

    /// Sets the request's id: the client's `X-Request-Id` when valid, else one made in `buf`
    /// from the process's `prefix`, the connection and `seq`, the request's number on it. Done
    /// where the request is built, with a buffer the connection owns, so that answering it
    /// needs no second copy of the request on the stack: a request waiting for PostgreSQL
    /// must stay within one page of coroutine stack (`make test-stack`), since every page it
    /// touches stays resident for as long as the coroutine lives.
    pub(crate) fn identify(
        &mut self,
        prefix: u32,
        seq: u64,
        buf: &'a mut [u8; request_id::GENERATED_MAX],
    ) {
        self.request_id = match self.header("x-request-id") {
            Some(v) if request_id::is_valid(v) => std::str::from_utf8(v).unwrap_or(""),
            _ => request_id::generate(prefix, self.conn_id, seq, buf),
        };
    }

    /// The client's address, when the socket could tell.
    pub fn peer(&self) -> Option<SocketAddr> {
        self.peer
    }
}

/// What the server calls for each request. Runs on a connection's coroutine: it may block on
/// `may` I/O, never on thread-blocking calls.
pub trait Service: Send + Sync + 'static {
    fn call(&self, req: &Request<'_>, res: &mut Response<'_>);
}

/// Bounds on what one client may make the server hold. Defaults are near what trusted servers
/// use (sources noted per field).
#[derive(Debug, Clone)]
pub struct Limits {
    /// Request line plus header fields. hyper allows about 400 KB, actix 128 KiB, nginx
    /// 4 x 8 KiB; 64 KiB serves the 8,000-octet request line RFC 9112 asks for with room.
    pub max_head_bytes: usize,
    /// Header fields per request: hyper's 100.
    pub max_headers: usize,
    /// Request body (after de-chunking): nginx's 1 MiB.
    pub max_body_bytes: usize,
    /// Open connections; past it new ones get 503 and are closed at once.
    pub max_connections: usize,
    /// Pipelined requests answered per batch before the output is flushed and more is read.
    pub max_pipelined: usize,
    /// Unsent output per connection that stops further request processing until flushed.
    pub max_output_bytes: usize,
    /// Buffered request heads and bodies across all connections, beyond each connection's
    /// 8 KiB base buffer. A request that would need more is answered 503 with `Retry-After`.
    /// The default, 256 MiB, holds 256 bodies at the default body limit at once.
    pub max_buffered_bytes: usize,
    /// Input read and discarded while closing a connection that has unread input (lingering
    /// close), at most.
    pub max_linger_bytes: usize,
    /// Each connection's kernel send buffer (`SO_SNDBUF`; Linux doubles it for its own
    /// bookkeeping); 0 keeps the kernel's default, which grows to `tcp_wmem`'s maximum (4 MiB).
    /// Answers the kernel holds for a client that does not read are memory outside the budget
    /// until the write timeout cuts the connection: 256 KiB bounds that and still fills a
    /// 20 Mbit/s path with 100 ms of round trip.
    pub send_buffer_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_head_bytes: 64 * 1024,
            max_headers: 100,
            max_body_bytes: 1024 * 1024,
            max_connections: 10_000,
            max_pipelined: 64,
            max_output_bytes: 256 * 1024,
            max_buffered_bytes: 256 * 1024 * 1024,
            max_linger_bytes: 16 * 1024 * 1024,
            send_buffer_bytes: 256 * 1024,
        }
    }
}

/// How long the server waits on a client.
#[derive(Debug, Clone)]
pub struct Timeouts {
    /// From the first byte of a request to the end of its head (nginx client_header_timeout,
    /// 60 s; we use 10 s). Also bounds the wait for a new connection's first request. On expiry:
    /// 408 and close.
    pub header: Duration,
    /// From the end of the head to the end of the body (nginx client_body_timeout is per read;
    /// this is for the whole body, so a trickle cannot hold a connection).
    pub body: Duration,
    /// Idle keep-alive connection between requests (nginx keepalive_timeout 75 s).
    pub idle: Duration,
    /// Sending one batch of answers (nginx send_timeout 60 s is per write; this bounds the
    /// batch, whatever the client sends meanwhile), delivery included: answers the kernel still
    /// holds this long after the last write are late too. On expiry the connection is cut with
    /// a reset, so the kernel frees what it held.
    pub write: Duration,
    /// Lingering close, in all (nginx lingering_time, 30 s).
    pub linger: Duration,
    /// Lingering close, the longest wait for more input (nginx lingering_timeout, 5 s).
    pub linger_read: Duration,
    /// Graceful shutdown: longest wait for in-flight requests.
    pub shutdown: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            header: Duration::from_secs(10),
            body: Duration::from_secs(30),
            idle: Duration::from_secs(60),
            write: Duration::from_secs(30),
            linger: Duration::from_secs(30),
            linger_read: Duration::from_secs(5),
            shutdown: Duration::from_secs(10),
        }
    }
}

/// Server settings.
#[derive(Debug, Clone, Default)]
pub struct HttpConfig {
    pub limits: Limits,
    pub timeouts: Timeouts,
    pub next_read: NextRead,
    /// Peers whose connections may begin with a PROXY protocol v2 header naming the client
    /// (see [`proxy`]); `None`: no connection may.
    pub proxy_protocol: Option<proxy::ProxyProtocol>,
}

/// How a connection reads the next request after a read that emptied the socket.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum NextRead {
    /// Waits for a readiness event before it reads while its client is slower than the
    /// server (its last read that tried the socket first found it empty), saving the read that
    /// would find nothing; otherwise reads at once.
    #[default]
    Adaptive,
    /// Always waits for readiness first (what the tests of that path force).
    WaitFirst,
}
