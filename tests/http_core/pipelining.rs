//! Splitting, pipelining, garbage: requests cut anyhow or sent many to a write are answered
//! in order; garbage after a valid request gets 400 (or the header timeout) and a close.

use std::io::Write;
use std::time::{Duration, Instant};

use crate::support::{config, waiting_first, EchoBody, TestServer};

#[test]
fn request_sent_one_byte_at_a_time() {
    let server = TestServer::default_config();
    let mut c = server.client();
    let stream = b"POST /bytes?q=1 HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello\
                   GET /second HTTP/1.1\r\nHost: a\r\n\r\n";
    for b in stream {
        c.send(std::slice::from_ref(b));
        // Pacing (the test's input), so the server sees the bytes in separate reads.
        std::thread::sleep(Duration::from_micros(200));
    }
    let e = c.response().echo();
    assert_eq!(
        (e.path.as_str(), e.query.as_deref(), e.body.as_str()),
        ("/bytes", Some("q=1"), "hello")
    );
    assert_eq!(c.response().echo().path, "/second");
}

#[test]
fn three_pipelined_requests_in_one_write_are_answered_in_order() {
    let server = TestServer::default_config();
    let mut c = server.client();
    c.send(
        b"GET /one HTTP/1.1\r\nHost: a\r\n\r\n\
          POST /two HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc\
          GET /three?x=y HTTP/1.1\r\nHost: a\r\n\r\n",
    );
    assert_eq!(c.response().echo().path, "/one");
    let two = c.response().echo();
    assert_eq!((two.path.as_str(), two.body.as_str()), ("/two", "abc"));
    let three = c.response().echo();
    assert_eq!(
        (three.path.as_str(), three.query.as_deref()),
        ("/three", Some("x=y"))
    );
    assert!(!c.closed_within(Duration::from_millis(50)));
}

#[test]
fn pipelines_longer_than_a_batch_are_answered_in_order() {
    let server = TestServer::start(config(|c| c.limits.max_pipelined = 8));
    let mut c = server.client();
    let mut stream = Vec::new();
    for i in 0..100 {
        write!(stream, "GET /n{i} HTTP/1.1\r\nHost: a\r\n\r\n").unwrap();
    }
    c.send(&stream);
    for i in 0..100 {
        assert_eq!(c.response().echo().path, format!("/n{i}"));
    }
    assert!(!c.closed_within(Duration::from_millis(50)));
}

#[test]
fn half_closed_client_still_gets_every_answer() {
    let server = TestServer::default_config();
    let mut c = server.client();
    c.send(&b"GET /h HTTP/1.1\r\nHost: a\r\n\r\n".repeat(3));
    c.stream.shutdown(std::net::Shutdown::Write).unwrap();
    for _ in 0..3 {
        assert_eq!(c.response().echo().path, "/h");
    }
    c.expect_closed();
}

/// Three pipelined answers of 800 octets with `max_output_bytes` 1,024: the batch stops on its
/// output limit after two. The third request is already buffered and must be answered without
/// more input. conn.rs used to go back to reading when a batch stopped on its output limit
/// (only one stopped by `max_pipelined` was continued), and the client waited until the header
/// timeout; a batch stopped by either limit with input left is now continued first.
#[test]
fn requests_left_when_a_batch_hits_the_output_limit_are_answered() {
    let server = TestServer::start(config(|c| {
        c.limits.max_output_bytes = 1024;
        c.timeouts.header = Duration::from_secs(30);
    }));
    let mut c = server.client();
    c.send(&b"GET /big?n=800 HTTP/1.1\r\nHost: a\r\n\r\n".repeat(3));
    for _ in 0..3 {
        assert_eq!(c.response().body.len(), 800);
    }
}

#[test]
fn long_pipelines_cross_the_batch_and_output_limits_in_order() {
    let server = TestServer::start(config(|c| {
        c.limits.max_pipelined = 8;
        c.limits.max_output_bytes = 4096;
    }));
    let mut c = server.client();
    let mut stream = Vec::new();
    for i in 0..300 {
        if i % 10 == 0 {
            stream.extend_from_slice(b"GET /big?n=3000 HTTP/1.1\r\nHost: a\r\n\r\n");
        } else {
            write!(stream, "GET /n{i} HTTP/1.1\r\nHost: a\r\n\r\n").unwrap();
        }
    }
    c.send(&stream);
    for i in 0..300 {
        let r = c.response();
        assert_eq!(r.status, 200);
        if i % 10 == 0 {
            assert_eq!(r.body.len(), 3000);
        } else {
            assert_eq!(r.echo().path, format!("/n{i}"));
        }
    }
}

#[test]
fn valid_request_then_garbage_gets_200_then_400_and_close() {
    let server = TestServer::default_config();
    let mut c = server.client();
    c.send(b"GET /ok HTTP/1.1\r\nHost: a\r\n\r\n\x16\x03\x01\x00\xa5garbage\x00\r\n\r\n");
    assert_eq!(c.response().echo().path, "/ok");
    let r = c.response();
    assert_eq!(r.status, 400);
    assert!(r.closes());
    c.expect_closed();
}

#[test]
fn valid_request_then_unterminated_garbage_is_cut_by_the_header_timeout() {
    let server = TestServer::start(config(|c| c.timeouts.header = Duration::from_millis(300)));
    let mut c = server.client();
    let started = Instant::now();
    c.send(b"GET /ok HTTP/1.1\r\nHost: a\r\n\r\n\x16\x03\x01\x00\xa5garbage");
    assert_eq!(c.response().status, 200);
    let r = c.response();
    assert!([400, 408].contains(&r.status), "{r:?}");
    c.expect_closed();
    assert!(started.elapsed() < Duration::from_secs(3));
}

/// A request that arrives while an answer is blocked on a full socket is answered once the
/// client reads, without waiting for a timeout. After a read that emptied the socket the
/// connection waits for a readiness event before it reads again; may's blocking write clears
/// that event (it resets the socket's flag before each try), so once the write had to block,
/// the next read must try the socket first.
#[test]
fn a_request_sent_while_an_answer_is_blocked_is_answered_at_once() {
    const BIG: usize = 16 << 20; // far more than the socket buffers hold
    let server = waiting_first(|c| {
        c.timeouts.header = Duration::from_secs(60);
        c.timeouts.idle = Duration::from_secs(60);
        c.timeouts.write = Duration::from_secs(60);
    });
    // Reads under a 5 s timeout.
    let mut c = server.client();
    c.send(format!("GET /big?n={BIG} HTTP/1.1\r\nHost: a\r\n\r\n").as_bytes());
    // The answer has begun: the server is writing it, and cannot finish while we do not read.
    c.stream
        .peek(&mut [0u8; 1])
        .expect("the first answer begins");
    c.send(b"GET /second HTTP/1.1\r\nHost: a\r\n\r\n");
    let start = Instant::now();
    let first = c.response();
    assert_eq!((first.status, first.body.len()), (200, BIG));
    let second = c.response();
    assert_eq!(second.status, 200);
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "the second answer took {:?}",
        start.elapsed()
    );
}
