//! Connection management: keep-alive and close, the headers of every response, the header,
//! idle and body timeouts, the connection cap, many idle connections, a panicking handler.

use std::io::Write;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use crate::limits::request_with_fields;
use crate::support::{config, eventually, raise_fd_limit, EchoBody, TestServer};

#[test]
fn head_response_has_content_length_and_no_body() {
    let server = TestServer::default_config();
    let mut c = server.client();
    // The GET right behind proves no body bytes follow the HEAD response's head.
    c.send(b"HEAD /h HTTP/1.1\r\nHost: a\r\n\r\nGET /h HTTP/1.1\r\nHost: a\r\n\r\n");
    let head = c.head_response();
    let get = c.response();
    assert_eq!((head.status, get.status), (200, 200));
    assert!(head.body.is_empty());
    let len: usize = head.header("content-length").unwrap().parse().unwrap();
    assert!(len > 0);
    // The HEAD answer announces the length the GET answer has (same path, method aside).
    assert_eq!(
        len,
        get.body.len() + 1,
        "the echoes differ only in the method's length"
    );
}

#[test]
fn http10_closes_unless_keep_alive_is_asked() {
    let server = TestServer::default_config();
    let mut c = server.client();
    c.send(b"GET /old HTTP/1.0\r\n\r\n");
    let r = c.response();
    assert_eq!(r.status, 200);
    assert!(r.closes());
    c.expect_closed();

    let mut c = server.client();
    c.send(b"GET /ka1 HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
    assert!(!c.response().closes());
    c.send(b"GET /ka2 HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n");
    assert!(!c.response().closes());
    c.send(b"GET /last HTTP/1.0\r\n\r\n");
    assert!(c.response().closes());
    c.expect_closed();
}

#[test]
fn connection_close_is_honoured() {
    let server = TestServer::default_config();
    let mut c = server.client();
    c.send(b"GET /c HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\nGET /after HTTP/1.1\r\nHost: a\r\n\r\n");
    let r = c.response();
    assert_eq!(r.status, 200);
    assert!(r.closes());
    c.expect_closed();
    // A handler may ask for the close too.
    let mut c = server.client();
    c.send(b"GET /close HTTP/1.1\r\nHost: a\r\n\r\nGET /after HTTP/1.1\r\nHost: a\r\n\r\n");
    assert!(c.response().closes());
    c.expect_closed();
    assert_eq!(server.seen(), ["/c", "/close"]);
}

#[test]
fn every_response_carries_date_server_content_length_and_content_type() {
    // Conn::response checks the four on every response of every test; here one of each kind.
    let server = TestServer::start(config(|c| c.limits.max_body_bytes = 8));
    for (req, status) in [
        (&b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"[..], 200),
        (b"GET /big?n=0 HTTP/1.1\r\nHost: a\r\n\r\n", 200),
        (b"GET / HTTP/1.1\r\n\r\n", 400),
        (
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 9\r\n\r\n",
            413,
        ),
        (
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n",
            501,
        ),
        (b"GET /panic HTTP/1.1\r\nHost: a\r\n\r\n", 500),
    ] {
        let mut c = server.client();
        c.send(req);
        let r = c.response();
        assert_eq!(r.status, status, "{r:?}");
        assert!(!r.header("content-type").unwrap().is_empty());
    }
    let mut c = server.client();
    c.send(&request_with_fields(101));
    assert_eq!(c.response().status, 431);
}

#[test]
fn slowloris_trickle_is_cut_at_the_header_timeout() {
    let server = TestServer::start(config(|c| c.timeouts.header = Duration::from_millis(300)));
    let mut c = server.client();
    let mut writer = c.stream.try_clone().unwrap();
    let started = Instant::now();
    // A header line every 100 ms, for up to 3 s (far past the timeout), until the server
    // closes and the writes fail.
    let trickle = std::thread::spawn(move || {
        if writer
            .write_all(b"GET /slow-loris HTTP/1.1\r\nHost: a\r\n")
            .is_err()
        {
            return;
        }
        for i in 0..30 {
            std::thread::sleep(Duration::from_millis(100));
            if write!(writer, "X-Trickle-{i}: x\r\n").is_err() {
                return;
            }
        }
    });
    let r = c.response();
    let elapsed = started.elapsed();
    assert_eq!(r.status, 408);
    assert!(r.closes());
    c.expect_closed();
    assert!(
        elapsed >= Duration::from_millis(250) && elapsed < Duration::from_millis(1500),
        "408 after {elapsed:?} for a 300 ms header timeout"
    );
    trickle.join().unwrap();
    assert!(!server.saw("/slow-loris"));
}

#[test]
fn silent_new_connection_is_closed_at_the_header_timeout() {
    let server = TestServer::start(config(|c| c.timeouts.header = Duration::from_millis(300)));
    let mut c = server.client();
    let started = Instant::now();
    // Nothing was asked, so nothing is answered: just the close.
    c.expect_closed();
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_millis(250) && elapsed < Duration::from_secs(2),
        "{elapsed:?}"
    );
}

#[test]
fn idle_keep_alive_connection_is_closed_at_the_idle_timeout() {
    let server = TestServer::start(config(|c| {
        c.timeouts.idle = Duration::from_millis(300);
        c.timeouts.header = Duration::from_secs(5);
    }));
    let mut c = server.client();
    c.send(b"GET /once HTTP/1.1\r\nHost: a\r\n\r\n");
    assert!(!c.response().closes());
    let started = Instant::now();
    c.expect_closed();
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_millis(250) && elapsed < Duration::from_secs(2),
        "idle close after {elapsed:?} for a 300 ms idle timeout"
    );
}

/// Empty lines after an answered request (a client that ends its request with one CRLF too
/// many) are ignored (RFC 9112 2.2) and leave the connection idle: they used to start the
/// header timeout, and the unsolicited 408 it ended in reads, to a pooled client, as the answer
/// to its next request.
#[test]
fn empty_lines_after_a_request_leave_the_connection_idle() {
    let server = TestServer::start(config(|c| {
        c.timeouts.header = Duration::from_millis(200);
        c.timeouts.idle = Duration::from_secs(10);
    }));
    let mut c = server.client();
    c.send(b"GET /first HTTP/1.1\r\nHost: a\r\n\r\n\r\n\r\n");
    assert_eq!(c.response().status, 200);
    // A measurement window five times the header timeout: nothing may arrive in it.
    assert!(
        c.silent_for(Duration::from_millis(1000)),
        "an answer nobody asked for, or a close: {:?}",
        c.next_response(false).map(|r| r.status)
    );
    c.send(b"GET /second HTTP/1.1\r\nHost: a\r\n\r\n");
    let r = c.response();
    assert_eq!(r.status, 200, "{:?}", r.text());
    assert_eq!(r.echo().path, "/second");
}

/// The same when the extra line's CR and LF come in two reads: the CR alone is not yet an empty
/// line, and must not leave the connection under the header timeout once the LF completes it.
#[test]
fn an_empty_line_split_across_reads_after_a_request_leaves_the_connection_idle() {
    let server = TestServer::start(config(|c| {
        c.timeouts.header = Duration::from_millis(200);
        c.timeouts.idle = Duration::from_secs(10);
    }));
    let mut c = server.client();
    c.send(b"GET /first HTTP/1.1\r\nHost: a\r\n\r\n\r");
    assert_eq!(c.response().status, 200);
    // The answer came back: the server has read the CR. Now the LF.
    c.send(b"\n");
    assert!(
        c.silent_for(Duration::from_millis(1000)),
        "an answer nobody asked for, or a close: {:?}",
        c.next_response(false).map(|r| r.status)
    );
}

/// Empty lines keep a connection idle, not alive: the idle timeout runs from the last answer,
/// so a client sending a CRLF now and then holds no connection longer than the idle timeout.
#[test]
fn empty_lines_between_requests_do_not_extend_the_idle_timeout() {
    let server = TestServer::start(config(|c| {
        c.timeouts.header = Duration::from_millis(300);
        c.timeouts.idle = Duration::from_millis(500);
        c.timeouts.linger = Duration::from_millis(300);
    }));
    let mut c = server.client();
    c.send(b"GET /x HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!(c.response().status, 200);
    let start = Instant::now();
    // Six idle timeouts' worth of a CRLF every 100 ms (pacing, not synchronisation), for as
    // long as the server keeps the connection.
    while start.elapsed() < Duration::from_secs(3)
        && server.handle.active_connections() > 0
        && c.try_send(b"\r\n").is_ok()
    {
        std::thread::sleep(Duration::from_millis(100));
    }
    let held = start.elapsed();
    assert!(
        held < Duration::from_millis(1500),
        "empty lines kept an idle connection open {held:?} (idle timeout 500 ms)"
    );
}

#[test]
fn trickled_body_is_cut_at_the_body_timeout() {
    let server = TestServer::start(config(|c| c.timeouts.body = Duration::from_millis(300)));
    let mut c = server.client();
    let started = Instant::now();
    c.send(b"POST /body HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\nabc");
    let r = c.response();
    assert_eq!(r.status, 408);
    c.expect_closed();
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_millis(250) && elapsed < Duration::from_secs(2),
        "{elapsed:?}"
    );
    assert!(!server.saw("/body"));
}

#[test]
fn connection_limit_answers_503_and_frees_its_slots() {
    let server = TestServer::start(config(|c| c.limits.max_connections = 2));
    let mut a = server.client();
    let mut b = server.client();
    for c in [&mut a, &mut b] {
        // Busy with a request (an idle keep-alive connection would be closed to make room).
        c.send(b"GET /next HTTP/1.1\r\n");
    }
    assert!(server.connections_settle_at(2));

    let mut third = server.client();
    let r = third.raw_response(false);
    assert_eq!(r.status, 503);
    assert!(r.closes());
    r.assert_headers_except_date(false);
    third.expect_closed();

    drop(a);
    assert!(server.connections_settle_at(1));
    let mut d = server.client();
    d.send(b"GET /again HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!(d.response().status, 200);
    // The survivor is still served.
    b.send(b"Host: a\r\n\r\n");
    assert_eq!(b.response().status, 200);
}

/// Every response carries Date (RFC 9110 6.6.1: an origin server with a clock must send it),
/// the 503 for an over-limit connection included (it
/// used to be a fixed byte string without one; `refuse_busy` now writes it as any error).
#[test]
fn connection_limit_503_carries_a_date() {
    let server = TestServer::start(config(|c| c.limits.max_connections = 1));
    // Busy with a request (an idle keep-alive connection would be closed to make room).
    let mut a = server.client();
    a.send(b"GET /busy HTTP/1.1\r\n");
    assert!(server.connections_settle_at(1));
    let mut refused = server.client();
    let r = refused.raw_response(false);
    assert_eq!(r.status, 503);
    r.assert_standard_headers(false);
}

#[test]
fn two_thousand_idle_connections_do_not_stop_a_new_one_being_served() {
    let server = TestServer::default_config();
    let limit = raise_fd_limit();
    assert!(
        limit >= 4200,
        "RLIMIT_NOFILE {limit} is too low for 2,000 connections"
    );
    let idle: Vec<TcpStream> = (0..2000)
        .map(|_| TcpStream::connect(server.addr()).expect("connect an idle connection"))
        .collect();
    assert!(
        eventually(Duration::from_secs(20), || server
            .handle
            .active_connections()
            >= 2000),
        "only {} of 2,000 connections accepted",
        server.handle.active_connections()
    );
    let started = Instant::now();
    let mut c = server.client();
    c.send(b"GET /busy HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!(c.response().status, 200);
    let elapsed = started.elapsed();
    assert!(
        elapsed < Duration::from_secs(1),
        "served in {elapsed:?} beside 2,000 idle connections"
    );
    drop(idle);
}

#[test]
fn panicking_handler_answers_500_closes_and_the_server_serves_on() {
    let server = TestServer::default_config();
    let mut c = server.client();
    c.send(b"GET /panic HTTP/1.1\r\nHost: a\r\n\r\nGET /after HTTP/1.1\r\nHost: a\r\n\r\n");
    let r = c.response();
    assert_eq!(r.status, 500);
    assert_eq!(r.body, br#"{"detail":"Internal Server Error"}"#);
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert!(r.closes());
    c.expect_closed();
    // The unread `/after` made the server linger until the client closes.
    drop(c);
    assert!(!server.saw("/after"));
    for _ in 0..3 {
        let mut c = server.client();
        c.send(b"GET /fine HTTP/1.1\r\nHost: a\r\n\r\n");
        assert_eq!(c.response().status, 200);
    }
    assert!(server.connections_settle_at(0));
}
