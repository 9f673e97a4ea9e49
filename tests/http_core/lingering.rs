//! Closing without losing the answer (lingering close, RFC 9112 9.6): on every path where the
//! server closes with input it has not read, a client that sends everything it meant to send
//! and only then reads gets the answer, not a reset.
//!
//! Each test sends its whole request (body, pipelined rest) before reading anything, as
//! Python's `http.client` and most simple clients do, and reads to the end of the stream: a
//! reset anywhere fails the test. Without lingering, the kernel answers the unread bytes with
//! a reset that destroys the answer (seen in 3 of 3 tries with a 5 MB body).

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use crate::support::{config, eventually, http::parse_response, EchoBody, TestServer};

/// Writes `bytes` in full, then reads to the end of the stream. Fails on a reset or any error
/// in either direction; returns what was read.
fn send_all_then_read(stream: &mut TcpStream, bytes: &[u8]) -> Vec<u8> {
    stream
        .set_write_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    if let Err(e) = stream.write_all(bytes) {
        panic!("sending the whole request failed ({e}): the server did not read it to the end");
    }
    read_to_end(stream)
}

fn read_to_end(stream: &mut TcpStream) -> Vec<u8> {
    let mut got = Vec::new();
    match stream.read_to_end(&mut got) {
        Ok(_) => got,
        Err(e) if e.kind() == ErrorKind::ConnectionReset => {
            panic!(
                "reset after {} bytes of answer: the answer was lost",
                got.len()
            )
        }
        Err(e) => panic!("reading the answer failed: {e}"),
    }
}

/// The statuses of the responses in `bytes`, in order.
fn statuses(mut bytes: &[u8]) -> Vec<u16> {
    let mut out = Vec::new();
    while let Some((r, used)) = parse_response(bytes, false) {
        out.push(r.status);
        bytes = &bytes[used..];
    }
    assert!(
        bytes.is_empty(),
        "a torn response: {:?}",
        String::from_utf8_lossy(bytes)
    );
    out
}

fn junk(len: usize) -> Vec<u8> {
    vec![b'x'; len]
}

#[test]
fn body_over_the_limit_is_read_to_its_end_and_the_413_arrives() {
    let server = TestServer::default_config();
    let mut s = TcpStream::connect(server.addr()).unwrap();
    let mut req = b"POST /user HTTP/1.1\r\nHost: a\r\nContent-Length: 5000000\r\n\r\n".to_vec();
    req.extend_from_slice(&junk(5_000_000));
    let got = send_all_then_read(&mut s, &req);
    assert_eq!(statuses(&got), [413]);
}

#[test]
fn a_bad_request_mid_pipeline_is_answered_though_more_follows() {
    let server = TestServer::default_config();
    let mut s = TcpStream::connect(server.addr()).unwrap();
    let mut req = b"GET /a HTTP/1.1\r\nHost: a\r\n\r\nBAD REQUEST\r\n\r\n".to_vec();
    req.extend_from_slice(&junk(2 << 20));
    let got = send_all_then_read(&mut s, &req);
    assert_eq!(statuses(&got), [200, 400]);
}

#[test]
fn more_pipelined_after_connection_close_does_not_destroy_the_answer() {
    let server = TestServer::default_config();
    let mut s = TcpStream::connect(server.addr()).unwrap();
    let mut req = b"GET /a HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n".to_vec();
    req.extend_from_slice(&b"GET /b HTTP/1.1\r\nHost: a\r\n\r\n".repeat(60_000));
    let got = send_all_then_read(&mut s, &req);
    assert_eq!(statuses(&got), [200]);
    assert!(
        !server.saw("/b"),
        "nothing after Connection: close is served"
    );
}

/// Sends `first`, waits for the answer to begin with `status_line` (peek blocks until it
/// arrives), then trickles a byte every 100 ms, as a slowloris would, and returns how long the
/// server kept the connection after the answer arrived. Lingering after a refusal of a
/// client's never-completed first request let such a client hold a slot for the header timeout
/// plus the whole linger time, for a few bytes.
fn held_while_trickling(server: &TestServer, first: &[u8], status_line: &[u8; 12]) -> Duration {
    let mut s = TcpStream::connect(server.addr()).unwrap();
    s.write_all(first).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut got = [0u8; 12];
    assert_eq!(s.peek(&mut got).unwrap(), 12);
    assert_eq!(&got, status_line, "{:?}", String::from_utf8_lossy(&got));
    let answered = Instant::now();
    let mut writer = s.try_clone().unwrap();
    let pacer = std::thread::spawn(move || {
        // Paces the input, until the server cuts us (the write fails) or 5 s pass.
        while answered.elapsed() < Duration::from_secs(5) && writer.write_all(b"x").is_ok() {
            std::thread::sleep(Duration::from_millis(100));
        }
    });
    assert!(
        eventually(Duration::from_secs(5), || server
            .handle
            .active_connections()
            == 0),
        "the server still holds the connection (lingering)"
    );
    let held = answered.elapsed();
    drop(s);
    pacer.join().unwrap();
    held
}

#[test]
fn a_request_timeout_on_a_first_request_closes_at_once_though_the_client_trickles() {
    let server = TestServer::start(config(|c| c.timeouts.header = Duration::from_millis(300)));
    let held = held_while_trickling(
        &server,
        b"GET /slowloris HTTP/1.1\r\nHost: a\r\n",
        b"HTTP/1.1 408",
    );
    // The linger time is 30 s, its read wait 5 s: either would show.
    assert!(held < Duration::from_secs(1), "held {held:?} after the 408");
}

#[test]
fn a_malformed_first_request_closes_at_once_though_the_client_trickles() {
    let server = TestServer::default_config();
    let held = held_while_trickling(&server, b"BAD REQUEST\r\n\r\n", b"HTTP/1.1 400");
    assert!(held < Duration::from_secs(1), "held {held:?} after the 400");
}

#[test]
fn the_503_at_the_connection_cap_arrives_after_a_whole_request() {
    let server = TestServer::start(config(|c| c.limits.max_connections = 1));
    // The one slot is busy: a request is half sent on it (not an idle keep-alive connection,
    // which would be closed to make room).
    let mut busy = server.client();
    busy.send(b"GET /busy HTTP/1.1\r\n");
    assert!(server.connections_settle_at(1));
    let mut s = TcpStream::connect(server.addr()).unwrap();
    let mut req = b"POST /user HTTP/1.1\r\nHost: a\r\nContent-Length: 1000000\r\n\r\n".to_vec();
    req.extend_from_slice(&junk(1_000_000));
    let got = send_all_then_read(&mut s, &req);
    assert_eq!(statuses(&got), [503]);
}

#[test]
fn the_503_beyond_the_memory_budget_arrives_after_a_whole_request() {
    let server = TestServer::start(config(|c| c.limits.max_buffered_bytes = 256 * 1024));
    // One request holds most of the budget while the rest of its body is on its way...
    let mut holder = server.client();
    holder.send(b"POST /held HTTP/1.1\r\nHost: a\r\nContent-Length: 200000\r\n\r\n");
    holder.send(&junk(190_000));
    assert!(eventually(Duration::from_secs(5), || server
        .handle
        .buffered_bytes()
        > 150_000));
    // ...so another that needs as much is refused, and still gets its answer.
    let mut s = TcpStream::connect(server.addr()).unwrap();
    let mut req = b"POST /refused HTTP/1.1\r\nHost: a\r\nContent-Length: 200000\r\n\r\n".to_vec();
    req.extend_from_slice(&junk(200_000));
    let got = send_all_then_read(&mut s, &req);
    let (r, _) = parse_response(&got, false).expect("an answer");
    assert_eq!(r.status, 503);
    assert_eq!(r.header("retry-after"), Some("1"));
    assert!(!server.saw("/refused"));
    // The holder finishes, and everything it took is given back.
    holder.send(&junk(10_000));
    let r = holder.response();
    assert_eq!(r.status, 200);
    assert_eq!(r.echo().body_len, 200_000);
    assert!(eventually(Duration::from_secs(5), || server
        .handle
        .buffered_bytes()
        == 0));
}

#[test]
fn lingering_stops_at_its_byte_bound() {
    let server = TestServer::start(config(|c| c.limits.max_linger_bytes = 64 * 1024));
    let mut s = TcpStream::connect(server.addr()).unwrap();
    s.set_write_timeout(Some(Duration::from_secs(20))).unwrap();
    s.write_all(b"POST /user HTTP/1.1\r\nHost: a\r\nContent-Length: 100000000\r\n\r\n")
        .unwrap();
    // 100 MB would take the server a while to discard: it stops after 64 KiB and closes,
    // so writing fails long before the end.
    let chunk = junk(64 * 1024);
    let mut sent = 0usize;
    let failed = loop {
        if s.write_all(&chunk).is_err() {
            break true;
        }
        sent += chunk.len();
        if sent >= 100_000_000 {
            break false;
        }
    };
    assert!(failed, "the server read all 100 MB");
    assert!(
        sent < 32 << 20,
        "sent {sent} bytes before the server closed"
    );
}

#[test]
fn lingering_stops_when_the_client_goes_quiet() {
    let server = TestServer::start(config(|c| {
        c.timeouts.linger_read = Duration::from_millis(300);
    }));
    let mut c = server.client();
    c.send(b"POST /user HTTP/1.1\r\nHost: a\r\nContent-Length: 100000000\r\n\r\nxxxx");
    let start = Instant::now();
    assert_eq!(c.raw_response(false).status, 413);
    // The client keeps its side open and sends nothing: the server stops waiting after the
    // linger read timeout, not the 30 s linger time.
    assert!(server.connections_settle_at(0));
    assert!(
        start.elapsed() < Duration::from_secs(3),
        "closed after {:?}",
        start.elapsed()
    );
    drop(c);
}

#[test]
fn lingering_stops_at_its_time_bound_though_input_keeps_coming() {
    let server = TestServer::start(config(|c| {
        c.timeouts.linger = Duration::from_millis(500);
        c.timeouts.linger_read = Duration::from_secs(5);
    }));
    let mut s = TcpStream::connect(server.addr()).unwrap();
    s.write_all(b"POST /user HTTP/1.1\r\nHost: a\r\nContent-Length: 100000000\r\n\r\n")
        .unwrap();
    // The 413 has been sent (the server now lingers).
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut first = [0u8; 12];
    assert_eq!(s.peek(&mut first).unwrap(), 12);
    assert_eq!(&first, b"HTTP/1.1 413");
    let start = Instant::now();
    let mut writer = s.try_clone().unwrap();
    let pacer = std::thread::spawn(move || {
        // A byte every 50 ms (paces the input; well inside the 5 s read wait) until the
        // server closes or 5 s pass.
        while start.elapsed() < Duration::from_secs(5) && writer.write_all(b"x").is_ok() {
            std::thread::sleep(Duration::from_millis(50));
        }
    });
    assert!(server.connections_settle_at(0), "still lingering");
    let took = start.elapsed();
    assert!(
        took < Duration::from_millis(2000),
        "lingered {took:?} for a 500 ms bound"
    );
    drop(s);
    pacer.join().unwrap();
}

/// A first request whose head parses but is refused (here: no Host) may be sending a body, and
/// a client that sends its whole request before it reads must still get the 400: the close
/// lingers (only a head that never parsed closes at once).
#[test]
fn a_400_to_a_first_post_with_a_body_is_still_readable() {
    let server = TestServer::default_config();
    let mut s = TcpStream::connect(server.addr()).unwrap();
    s.set_write_timeout(Some(Duration::from_secs(20))).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut req = b"POST /x HTTP/1.1\r\nContent-Length: 4194304\r\n\r\n".to_vec();
    req.extend_from_slice(&junk(4 << 20));
    if let Err(e) = s.write_all(&req) {
        panic!("sending the request failed ({e}): the 400 was lost to a reset");
    }
    let mut got = Vec::new();
    if let Err(e) = s.read_to_end(&mut got) {
        panic!("read failed ({e}) after {} bytes", got.len());
    }
    assert!(
        got.starts_with(b"HTTP/1.1 400"),
        "{:?}",
        String::from_utf8_lossy(&got)
    );
}
