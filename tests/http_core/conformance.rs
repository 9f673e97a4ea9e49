//! RFC 9112 conformance beyond framing: request-target forms, Host syntax, protocol versions,
//! answers without content, chunk extensions and trailers.

use crate::support::{EchoBody, TestServer};

/// Sends `request` and returns the one answer, on a connection expected to close after it.
fn refusal(request: &[u8]) -> crate::support::http::Response {
    let server = TestServer::default_config();
    let mut c = server.client();
    let _ = c.try_send(request);
    let r = c.raw_response(false);
    assert!(r.closes(), "{r:?}");
    c.expect_closed();
    assert!(server.seen().is_empty(), "nothing reaches the handler");
    r
}

#[test]
fn absolute_form_targets_are_served() {
    let server = TestServer::default_config();
    let mut c = server.client();
    c.send(b"GET http://x/livez HTTP/1.1\r\nHost: x\r\n\r\n");
    let r = c.response();
    assert_eq!(r.status, 200);
    assert_eq!(r.echo().path, "/livez");
    c.send(b"GET HTTP://x:8000/user/7?a=b HTTP/1.1\r\nHost: y\r\n\r\n");
    let echo = c.response().echo();
    assert_eq!(
        (echo.path.as_str(), echo.query.as_deref()),
        ("/user/7", Some("a=b"))
    );
    c.send(b"GET http://x HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(c.response().echo().path, "/");
}

#[test]
fn an_absolute_form_target_with_a_bad_authority_gets_400() {
    for target in ["http:///x", "http://u@x/", "http://a b/", "ftp://x/"] {
        let req = format!("GET {target} HTTP/1.1\r\nHost: x\r\n\r\n");
        let r = refusal(req.as_bytes());
        assert_eq!(r.status, 400, "{target}");
    }
}

#[test]
fn a_host_that_is_not_host_and_port_gets_400() {
    for host in ["a b/c", "a/b", "x:y", "[::1", "a@b"] {
        let req = format!("GET / HTTP/1.1\r\nHost: {host}\r\n\r\n");
        let r = refusal(req.as_bytes());
        assert_eq!(r.status, 400, "Host: {host}");
        assert_eq!(r.detail(), "Invalid Host header");
    }
}

#[test]
fn other_major_versions_get_505() {
    for version in ["HTTP/2.0", "HTTP/3.0", "HTTP/0.9"] {
        let req = format!("GET / {version}\r\nHost: a\r\n\r\n");
        let r = refusal(req.as_bytes());
        assert_eq!(r.status, 505, "{version}");
    }
    assert_eq!(refusal(b"GET / HTTP/1.x\r\nHost: a\r\n\r\n").status, 400);
}

#[test]
fn refusals_of_head_requests_carry_no_body() {
    let server = TestServer::default_config();
    let mut c = server.client();
    c.send(b"HEAD /x HTTP/1.1\r\nHost: a\r\nContent-Length: 99999999\r\n\r\n");
    let raw = c.read_to_close();
    let text = String::from_utf8_lossy(&raw);
    assert!(text.starts_with("HTTP/1.1 413 "), "{text}");
    assert!(
        text.ends_with("\r\n\r\n"),
        "no body after the head: {text:?}"
    );
    assert!(text.contains("Content-Length: "), "{text}");
}

#[test]
fn chunk_extensions_and_trailers_follow_the_grammar() {
    let ok = TestServer::default_config();
    let mut c = ok.client();
    c.send(
        b"POST /v HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n\
          2 ; name = \"quoted \\\" value\"\r\nok\r\n0;last\r\nTrailer-Field: some value\r\n\r\n",
    );
    let r = c.response();
    assert_eq!(r.status, 200);
    assert_eq!(r.echo().body, "ok");
    for body in [
        &b"2 \r\nok\r\n0\r\n\r\n"[..],
        b" 2\r\nok\r\n0\r\n\r\n",
        b"2;\r\nok\r\n0\r\n\r\n",
        b"2;a=\r\nok\r\n0\r\n\r\n",
        b"2;a=b c\r\nok\r\n0\r\n\r\n",
        b"2;(a)\r\nok\r\n0\r\n\r\n",
        b"2\r\nok\r\n0\r\nBad Name: v\r\n\r\n",
        b"2\r\nok\r\n0\r\nNo-Colon\r\n\r\n",
        b"2\r\nok\r\n0\r\nCtl: a\x01b\r\n\r\n",
    ] {
        let mut req = b"POST /v HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
        req.extend_from_slice(body);
        let r = refusal(&req);
        assert_eq!(r.status, 400, "{:?}", String::from_utf8_lossy(body));
    }
}

#[test]
fn other_refusals_of_head_requests_carry_no_body_either() {
    for req in [
        &b"HEAD / HTTP/1.1\r\nHost: a b\r\n\r\n"[..],
        b"HEAD / HTTP/2.0\r\nHost: a\r\n\r\n",
        b"HEAD / HTTP/1.1\r\nHost: a\r\nExpect: teapot\r\n\r\n",
    ] {
        let server = TestServer::default_config();
        let mut c = server.client();
        c.send(req);
        let raw = c.read_to_close();
        let text = String::from_utf8_lossy(&raw);
        assert!(text.ends_with("\r\n\r\n"), "no body: {text:?}");
    }
}

#[test]
fn an_unknown_expectation_gets_417() {
    let r = refusal(b"POST / HTTP/1.1\r\nHost: a\r\nExpect: teapot\r\nContent-Length: 1\r\n\r\nx");
    assert_eq!(r.status, 417);
}

/// Blank lines trickled one at a time used to pile up in the head buffer, each arrival
/// re-parsing them all, until the head limit answered 431.
#[test]
fn empty_lines_trickled_before_a_request_are_dropped_as_they_come() {
    let server = TestServer::default_config();
    let mut c = server.client();
    for _ in 0..40_000 {
        c.send(b"\r\n");
    }
    c.send(b"GET /x HTTP/1.1\r\nHost: a\r\n\r\n");
    let r = c.response();
    assert_eq!(
        r.status, 200,
        "80 KB of blank lines do not count as a 64 KiB head"
    );
}

#[test]
fn empty_lines_before_a_request_are_ignored_once_each() {
    let server = TestServer::default_config();
    let mut c = server.client();
    c.send(b"\r\n\r\n\nGET /x HTTP/1.1\r\nHost: a\r\n\r\n\r\nGET /y HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!(c.response().echo().path, "/x");
    assert_eq!(c.response().echo().path, "/y");
}

#[test]
fn http10_keep_alive_is_granted_and_said() {
    let server = TestServer::default_config();
    let mut c = server.client();
    for _ in 0..2 {
        c.send(b"GET /x HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
        let r = c.response();
        assert_eq!(r.header("connection"), Some("keep-alive"));
    }
}
