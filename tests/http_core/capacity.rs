//! What the server holds across connections: the connection cap (idle keep-alive connections
//! make room before a new one is refused) and the budget for buffered request data.

use std::time::Duration;

use crate::support::{config, eventually, EchoBody, TestServer};

#[test]
fn at_the_cap_the_oldest_idle_keep_alive_connection_makes_room() {
    let server = TestServer::start(config(|c| c.limits.max_connections = 2));
    let mut oldest = server.client();
    oldest.send(b"GET /1 HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!(oldest.response().status, 200);
    let mut newer = server.client();
    newer.send(b"GET /2 HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!(newer.response().status, 200);

    let mut third = server.client();
    third.send(b"GET /3 HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!(third.response().status, 200, "served, not refused");
    assert!(
        oldest.closed_within(Duration::from_secs(5)),
        "the oldest idle connection was closed"
    );
    newer.send(b"GET /2b HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!(
        newer.response().status,
        200,
        "the newer idle connection stays"
    );
    assert!(server.connections_settle_at(2));
}

#[test]
fn at_the_cap_a_connection_served_again_is_no_longer_the_oldest_idle() {
    let server = TestServer::start(config(|c| c.limits.max_connections = 3));
    let mut first = server.client();
    first.send(b"GET /1 HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!(first.response().status, 200);
    let mut second = server.client();
    second.send(b"GET /2 HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!(second.response().status, 200);
    let mut third = server.client();
    third.send(b"GET /3 HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!(third.response().status, 200);
    // The first went idle first, and many times since: each idle period is its own, so the
    // one idle longest is now the second.
    for _ in 0..50 {
        first.send(b"GET /1again HTTP/1.1\r\nHost: a\r\n\r\n");
        assert_eq!(first.response().status, 200);
    }

    let mut fourth = server.client();
    fourth.send(b"GET /4 HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!(fourth.response().status, 200, "served, not refused");
    assert!(
        second.closed_within(Duration::from_secs(5)),
        "the connection idle longest was closed"
    );
    for (c, path) in [(&mut first, "/1b"), (&mut third, "/3b")] {
        c.send(format!("GET {path} HTTP/1.1\r\nHost: a\r\n\r\n").as_bytes());
        assert_eq!(c.response().status, 200, "{path}: the others stay");
    }
    assert!(server.connections_settle_at(3));
}

#[test]
fn at_the_cap_with_no_idle_connection_a_new_one_gets_503() {
    let server = TestServer::start(config(|c| c.limits.max_connections = 2));
    // Busy: one has sent half a head, one has not sent a request yet (neither is an idle
    // keep-alive connection).
    let mut half = server.client();
    half.send(b"GET /half HTTP/1.1\r\n");
    let _silent = server.client();
    assert!(server.connections_settle_at(2));
    let mut refused = server.client();
    let r = refused.raw_response(false);
    assert_eq!(r.status, 503);
    assert_eq!(r.header("retry-after"), Some("1"));
    r.assert_standard_headers(false);
    // The busy ones go on.
    half.send(b"Host: a\r\n\r\n");
    assert_eq!(half.response().status, 200);
}

#[test]
fn a_chunked_body_with_framing_far_beyond_its_data_gets_413() {
    // 1 KiB body limit: framing may add the larger of the limit and 8 KiB, plus the 64 KiB
    // head limit (for extensions and trailers). 20 chunks with 4,000-byte extensions carry
    // 20 bytes of data in 80 KB of framing.
    let server = TestServer::start(config(|c| c.limits.max_body_bytes = 1024));
    let mut c = server.client();
    let mut req = b"POST /v HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    let ext = "e".repeat(4000);
    for _ in 0..20 {
        req.extend_from_slice(format!("1;{ext}\r\nx\r\n").as_bytes());
    }
    req.extend_from_slice(b"0\r\n\r\n");
    let _ = c.try_send(&req);
    let r = c.raw_response(false);
    assert_eq!(r.status, 413);
    assert!(!server.saw("/v"));
}

#[test]
fn the_budget_is_given_back_after_bodies_and_refusals() {
    let server = TestServer::start(config(|c| c.limits.max_buffered_bytes = 4 << 20));
    let body = vec![b'y'; 900_000];
    for _ in 0..3 {
        let mut c = server.client();
        let mut req = format!(
            "POST /p HTTP/1.1\r\nHost: a\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .into_bytes();
        req.extend_from_slice(&body);
        c.send(&req);
        assert_eq!(c.response().echo().body_len, body.len());
        // Between requests the connection holds no more than its base buffer.
        assert!(eventually(Duration::from_secs(5), || server
            .handle
            .buffered_bytes()
            == 0));
        // A refused chunked body gives back what it took too.
        let mut bad = server.client();
        let _ = bad.try_send(b"POST /p HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n");
        let _ = bad.try_send(&[b"1000\r\n".as_slice(), &[b'z'; 0x1000], b"\r\nzz\r\n"].concat());
        assert_eq!(bad.raw_response(false).status, 400);
        drop(bad);
        assert!(eventually(Duration::from_secs(5), || server
            .handle
            .buffered_bytes()
            == 0));
    }
}

#[test]
fn a_head_alone_takes_none_of_the_budget() {
    let server = TestServer::default_config();
    let mut c = server.client();
    c.send(
        b"POST /p HTTP/1.1\r\nHost: a\r\nContent-Length: 1000000\r\nExpect: 100-continue\r\n\r\n",
    );
    // The interim answer proves the head was read and parsed.
    c.expect_continue();
    assert_eq!(
        server.handle.buffered_bytes(),
        0,
        "memory is taken as the body arrives, not on the head's say-so"
    );
    c.send(&vec![b'b'; 1_000_000]);
    assert_eq!(c.response().echo().body_len, 1_000_000);
}

#[test]
fn a_byte_left_behind_a_large_request_does_not_keep_its_buffer() {
    let server = TestServer::default_config();
    let mut c = server.client();
    let mut req =
        b"POST /upload HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    for _ in 0..200 {
        req.extend_from_slice(b"1000\r\n");
        req.extend_from_slice(&[b'q'; 0x1000]);
        req.extend_from_slice(b"\r\n");
    }
    req.extend_from_slice(b"0\r\n\r\nG");
    c.send(&req);
    assert_eq!(c.response().echo().body_len, 200 * 0x1000);
    assert!(
        eventually(Duration::from_secs(5), || server.handle.buffered_bytes()
            == 0),
        "the large buffer is given back though a byte of the next request is in it"
    );
    c.send(b"ET /rest HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!(c.response().echo().path, "/rest", "the byte was kept");
}

/// Answers are buffered until the client reads them (up to the write timeout): a large one
/// comes out of the same budget as large requests. One that does not fit is a 503 with
/// Retry-After, in its place, and the connection closes; what fits is given back once written.
/// (Before, output was not budgeted: 10,000 slow readers of a 1.7 MB page held 17 GB.)
#[test]
fn a_large_answer_is_budgeted_like_a_large_request() {
    let server = TestServer::start(config(|c| c.limits.max_buffered_bytes = 1 << 20));
    let mut c = server.client();
    c.request("GET", "/big?n=4000000", None);
    let r = c.response();
    assert_eq!(r.status, 503, "a 4 MB answer over a 1 MiB budget");
    assert_eq!(r.header("retry-after"), Some("1"));
    assert!(r.closes());
    // A HEAD of it holds no body while it waits for the client: served, and the budget is
    // untouched.
    let mut head = server.client();
    head.request("HEAD", "/big?n=4000000", None);
    let r = head.head_response();
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-length"), Some("4000000"));
    // A request other than GET or HEAD has been acted on: its answer is sent whatever the
    // budget says (a 503 would invite a retry of something already done).
    let mut post = server.client();
    post.request("POST", "/big?n=4000000", Some(b"x"));
    let r = post.response();
    assert_eq!((r.status, r.body.len()), (200, 4_000_000));
    // Ordinary pipelined answers are not charged: 64 answers of 5 KB, batched at the output
    // limit, fit a budget of 128 KiB.
    let small = TestServer::start(config(|c| c.limits.max_buffered_bytes = 128 << 10));
    let mut pipe = small.client();
    pipe.send(&b"GET /big?n=5000 HTTP/1.1\r\nHost: a\r\n\r\n".repeat(64));
    for i in 0..64 {
        let r = pipe.response();
        assert_eq!((r.status, r.body.len()), (200, 5000), "answer {i}");
    }
    // Within the budget: served, and the budget comes back once it is written and read.
    let mut ok = server.client();
    ok.request("GET", "/big?n=300000", None);
    let r = ok.response();
    assert_eq!((r.status, r.text().len()), (200, 300_000));
    assert!(eventually(Duration::from_secs(5), || server
        .handle
        .buffered_bytes()
        == 0));
    let stats = server.handle.stats();
    let memory = stats
        .refused
        .iter()
        .find(|(why, _)| *why == records_service::http::Refused::Memory)
        .unwrap()
        .1;
    assert_eq!(memory, 1, "{stats:?}");
}
