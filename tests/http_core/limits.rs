//! Head limits: the request line, the number of header fields and the head's size.

use std::io::Write;

use crate::support::{config, EchoBody, TestServer};

#[test]
fn request_line_of_8000_octets_is_served() {
    let server = TestServer::default_config();
    let mut c = server.client();
    let target = format!(
        "/{}",
        "a".repeat(8000 - "GET ".len() - " HTTP/1.1".len() - 1)
    );
    let line = format!("GET {target} HTTP/1.1");
    assert_eq!(line.len(), 8000);
    c.send(format!("{line}\r\nHost: a\r\n\r\n").as_bytes());
    let r = c.response();
    assert_eq!(r.status, 200);
    assert_eq!(r.echo().path, target);
}

pub(crate) fn request_with_fields(n: usize) -> Vec<u8> {
    let mut req = b"GET /fields HTTP/1.1\r\nHost: a\r\n".to_vec();
    for i in 1..n {
        write!(req, "X-Field-{i}: {i}\r\n").unwrap();
    }
    req.extend_from_slice(b"\r\n");
    req
}

#[test]
fn one_hundred_header_fields_are_served_and_the_101st_gets_431() {
    let server = TestServer::default_config();
    let mut c = server.client();
    c.send(&request_with_fields(100));
    assert_eq!(c.response().status, 200);
    c.send(&request_with_fields(101));
    let r = c.response();
    assert_eq!(r.status, 431);
    assert!(r.closes());
    c.expect_closed();
    assert_eq!(server.seen(), ["/fields"]);
}

/// A connection starts with fewer header slots than the limit (100 slots are 3.2 KB per
/// connection, most of an idle connection's memory) and grows them when a head has more fields, parsing it again: every
/// field count up to the limit is served whole, on one connection and in one pipelined
/// batch, and the limit still holds after the growth.
#[test]
fn header_slots_grow_on_demand_up_to_the_limit() {
    let server = TestServer::default_config();
    let mut c = server.client();
    for n in [1, 32, 33, 64, 65, 99, 100, 3] {
        c.send(&request_with_fields(n));
        let r = c.response();
        assert_eq!(r.status, 200, "{n} fields");
        let echo = r.echo();
        assert_eq!(echo.fields, n, "{n} fields");
        let last = if n == 1 {
            "Host".to_string()
        } else {
            format!("X-Field-{}", n - 1)
        };
        assert_eq!(echo.last_field, last, "{n} fields");
    }
    // A small head and then a large one in one write: the second grows the slots mid-batch.
    let mut c = server.client();
    let mut batch = request_with_fields(2);
    batch.extend_from_slice(&request_with_fields(90));
    batch.extend_from_slice(&request_with_fields(5));
    c.send(&batch);
    for n in [2, 90, 5] {
        let r = c.response();
        assert_eq!(r.status, 200);
        assert_eq!(r.echo().fields, n);
    }
    c.send(&request_with_fields(101));
    let r = c.response();
    assert_eq!(r.status, 431);
    assert!(r.closes());
    c.expect_closed();
}

/// A limit below the initial number of slots is the limit.
#[test]
fn a_field_limit_below_the_initial_slots_holds() {
    let server = TestServer::start(config(|c| c.limits.max_headers = 4));
    let mut c = server.client();
    c.send(&request_with_fields(4));
    assert_eq!(c.response().status, 200);
    c.send(&request_with_fields(5));
    assert_eq!(c.response().status, 431);
    c.expect_closed();
}

#[test]
fn head_over_the_limit_gets_431() {
    let server = TestServer::default_config();
    // A complete head over 64 KiB.
    let mut c = server.client();
    let mut req = b"GET /huge HTTP/1.1\r\nHost: a\r\nX-Big: ".to_vec();
    req.extend_from_slice(&[b'a'; 70_000]);
    req.extend_from_slice(b"\r\n\r\n");
    let _ = c.try_send(&req);
    let r = c.response();
    assert_eq!(r.status, 431);
    assert!(r.closes());
    c.expect_closed();
    // A head that never ends, streamed past the limit.
    let mut c = server.client();
    let _ = c.try_send(&req[..req.len() - 4]);
    assert_eq!(c.response().status, 431);
    c.expect_closed();
    assert!(server.seen().is_empty());
}

#[test]
fn head_limit_is_configurable() {
    let server = TestServer::start(config(|c| c.limits.max_head_bytes = 1024));
    let mut c = server.client();
    let mut req = b"GET /x HTTP/1.1\r\nHost: a\r\nX-Big: ".to_vec();
    req.extend_from_slice(&[b'a'; 1100]);
    req.extend_from_slice(b"\r\n\r\n");
    let _ = c.try_send(&req);
    assert_eq!(c.response().status, 431);
    c.expect_closed();
}
