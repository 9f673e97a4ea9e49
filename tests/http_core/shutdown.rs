//! Graceful shutdown: idle connections closed, in-flight requests finished with
//! `Connection: close`, new connections refused.

use std::io::ErrorKind;
use std::net::TcpStream;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crate::support::{eventually, Conn, EchoBody, TestServer, READ_TIMEOUT};

/// An idle keep-alive connection and one whose request is in the handler, then `shutdown()`.
fn shutdown_scenario() -> (TestServer, Conn, Conn) {
    let server = TestServer::default_config();
    let mut idle = server.client();
    idle.send(b"GET /first HTTP/1.1\r\nHost: a\r\n\r\n");
    assert!(!idle.response().closes());
    let mut busy = server.client();
    busy.send(b"GET /slow HTTP/1.1\r\nHost: a\r\n\r\n");
    assert!(eventually(Duration::from_secs(5), || server
        .svc
        .slow_entered
        .load(Ordering::SeqCst)
        == 1));
    assert!(!server.handle.is_draining());
    server.handle.shutdown();
    assert!(server.handle.is_draining());
    (server, idle, busy)
}

#[test]
fn graceful_shutdown_closes_idle_finishes_in_flight_and_refuses_new() {
    let (server, mut idle, mut busy) = shutdown_scenario();
    // The idle connection is closed without an answer.
    let started = Instant::now();
    idle.expect_closed();
    assert!(started.elapsed() < Duration::from_secs(2));
    // New connections are refused.
    match TcpStream::connect_timeout(&server.addr(), Duration::from_secs(2)) {
        Err(e) => assert_eq!(e.kind(), ErrorKind::ConnectionRefused),
        Ok(s) => {
            // Accepted by the kernel before the listener went: must then be closed unserved.
            Conn::with_timeout(s, READ_TIMEOUT).expect_closed();
        }
    }
    // The in-flight request completes, and its connection closes.
    assert!(!server.handle.wait(Duration::from_millis(20)));
    server.svc.release.store(true, Ordering::SeqCst);
    let r = busy.response();
    assert_eq!(r.status, 200);
    assert_eq!(r.echo().path, "/slow");
    busy.expect_closed();
    assert!(server.handle.wait(Duration::from_secs(5)));
    assert_eq!(server.handle.active_connections(), 0);
}

/// In-flight requests finish with `Connection: close`, so the client knows not to send another
/// request on a connection that is about to close. The decision used to be made
/// from `shared.draining()` *before* the handler ran, so a request already in the handler when
/// shutdown started went out without `Connection: close` (and the connection closed
/// unannounced); dispatch.rs now reads `draining()` after the handler.
#[test]
fn graceful_shutdown_in_flight_answer_says_connection_close() {
    let (server, _idle, mut busy) = shutdown_scenario();
    server.svc.release.store(true, Ordering::SeqCst);
    let r = busy.response();
    assert_eq!(r.status, 200);
    assert!(r.closes(), "in-flight answer during shutdown: {r:?}");
}

#[test]
fn shutdown_of_an_unused_server_completes_at_once() {
    let server = TestServer::default_config();
    let addr = server.addr();
    server.handle.shutdown();
    assert!(server.handle.wait(Duration::from_secs(2)));
    let refused = TcpStream::connect_timeout(&addr, Duration::from_secs(2));
    assert_eq!(
        refused.map(|_| ()).unwrap_err().kind(),
        ErrorKind::ConnectionRefused
    );
}
