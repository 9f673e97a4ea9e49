//! Bodies: chunked decoding, the body limit, unread bodies never parsed as requests, and
//! `Expect: 100-continue`.

use std::time::{Duration, Instant};

use crate::support::{config, EchoBody, TestServer};

#[test]
fn chunked_body_is_decoded() {
    let server = TestServer::default_config();
    let mut c = server.client();
    c.send(
        b"POST /chunked?x=1 HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n\
          5;name=value\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n\
          GET /next HTTP/1.1\r\nHost: a\r\n\r\n",
    );
    let e = c.response().echo();
    assert_eq!(e.method, "POST");
    assert_eq!(e.path, "/chunked");
    assert_eq!(e.query.as_deref(), Some("x=1"));
    assert_eq!((e.body_len, e.body.as_str()), (11, "hello world"));
    assert_eq!(c.response().echo().path, "/next");
}

#[test]
fn chunked_body_counts_toward_the_body_limit() {
    let server = TestServer::start(config(|c| c.limits.max_body_bytes = 16));
    let mut c = server.client();
    c.send(b"POST /ok HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n8\r\n12345678\r\n8\r\nabcdefgh\r\n0\r\n\r\n");
    assert_eq!(c.response().echo().body_len, 16);
    c.send(b"POST /big HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n8\r\n12345678\r\n9\r\nabcdefghi\r\n0\r\n\r\n");
    let r = c.response();
    assert_eq!(r.status, 413);
    assert!(r.closes());
    c.expect_closed();
    assert_eq!(server.seen(), ["/ok"]);
}

const SMUGGLED: &str = "GET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n";

#[test]
fn unread_content_length_body_is_not_parsed_as_a_request() {
    let server = TestServer::default_config();
    let mut c = server.client();
    let req = format!(
        "POST /ignore-body HTTP/1.1\r\nHost: a\r\nContent-Length: {}\r\n\r\n{SMUGGLED}\
         GET /next HTTP/1.1\r\nHost: a\r\n\r\n",
        SMUGGLED.len()
    );
    c.send(req.as_bytes());
    let r = c.response();
    assert_eq!((r.status, r.body.as_slice()), (200, &b"{}"[..]));
    assert_eq!(c.response().echo().path, "/next");
    assert!(!c.closed_within(Duration::from_millis(50)));
    assert_eq!(server.seen(), ["/ignore-body", "/next"]);
}

#[test]
fn unread_body_arriving_in_later_writes_is_not_parsed_as_a_request() {
    let server = TestServer::default_config();
    let mut c = server.client();
    // Head, body and next request in three writes, so the body arrives in its own read.
    c.send(
        format!(
            "POST /ignore-body HTTP/1.1\r\nHost: a\r\nContent-Length: {}\r\n\r\n",
            SMUGGLED.len()
        )
        .as_bytes(),
    );
    c.send(SMUGGLED.as_bytes());
    assert_eq!(c.response().body, b"{}");
    c.send(b"GET /next HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!(c.response().echo().path, "/next");
    // The same with a chunked body.
    c.send(b"POST /ignore-body HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n");
    c.send(format!("{:x}\r\n{SMUGGLED}\r\n", SMUGGLED.len()).as_bytes());
    c.send(b"0\r\n\r\nGET /last HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!(c.response().body, b"{}");
    assert_eq!(c.response().echo().path, "/last");
    assert_eq!(
        server.seen(),
        ["/ignore-body", "/next", "/ignore-body", "/last"]
    );
}

#[test]
fn body_over_the_limit_is_refused_from_content_length_alone() {
    let server = TestServer::default_config();
    let mut c = server.client();
    let started = Instant::now();
    // Only the head: the 413 must come without the body being sent.
    c.send(b"POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: 1073741824\r\n\r\n");
    let r = c.response();
    assert_eq!(r.status, 413);
    assert!(r.closes());
    c.expect_closed();
    assert!(started.elapsed() < Duration::from_secs(2));
    assert!(!server.saw("/upload"));
}

#[test]
fn body_at_the_limit_is_served_and_one_more_octet_refused() {
    let server = TestServer::start(config(|c| c.limits.max_body_bytes = 64));
    let mut c = server.client();
    let body = [b'a'; 65];
    c.send(b"POST /at HTTP/1.1\r\nHost: a\r\nContent-Length: 64\r\n\r\n");
    c.send(&body[..64]);
    assert_eq!(c.response().echo().body_len, 64);
    c.send(b"POST /over HTTP/1.1\r\nHost: a\r\nContent-Length: 65\r\n\r\n");
    assert_eq!(c.response().status, 413);
    c.expect_closed();
    assert_eq!(server.seen(), ["/at"]);
}

#[test]
fn expect_100_continue_gets_an_interim_response() {
    let server = TestServer::default_config();
    let mut c = server.client();
    c.send(
        b"POST /upload HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n",
    );
    c.expect_continue();
    c.send(b"hello");
    let e = c.response().echo();
    assert_eq!((e.path.as_str(), e.body.as_str()), ("/upload", "hello"));
    // Refused from its head: the final status instead of 100 Continue.
    c.send(b"POST /upload HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 1073741824\r\n\r\n");
    assert_eq!(c.response().status, 413);
    c.expect_closed();
}
