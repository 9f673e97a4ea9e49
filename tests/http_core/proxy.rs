//! The PROXY protocol v2 header over a real socket: from a trusted peer its source becomes the
//! connection's peer for every request on it, whole or in pieces; an invalid one is refused
//! and the connection closed; a truncated one is cut at the head timeout; from any other peer
//! (or a second one on the same connection) the signature is a malformed request.

use std::io::Write;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use records_service::http::proxy::{ProxyProtocol, SIGNATURE};
use records_service::http::HttpConfig;

use crate::support::{config, TestServer};

/// A server that reads headers from `trusted` peers, its config otherwise changed by `f`.
fn trusting(
    trusted: impl Fn(IpAddr) -> bool + Send + Sync + 'static,
    f: impl FnOnce(&mut HttpConfig),
) -> TestServer {
    TestServer::start(config(|c| {
        c.proxy_protocol = Some(ProxyProtocol::from(trusted));
        f(c);
    }))
}

fn loopback_trusted() -> TestServer {
    trusting(|ip| ip.is_loopback(), |_| {})
}

/// A header: version and command byte, family and transport byte, then `block`.
fn header(ver_cmd: u8, fam: u8, block: &[u8]) -> Vec<u8> {
    let mut h = SIGNATURE.to_vec();
    h.push(ver_cmd);
    h.push(fam);
    h.extend_from_slice(&(block.len() as u16).to_be_bytes());
    h.extend_from_slice(block);
    h
}

/// PROXY, TCP over IPv4, from 192.0.2.10:40000 to 127.0.0.1:8000.
fn tcp4() -> Vec<u8> {
    header(
        0x21,
        0x11,
        &[192, 0, 2, 10, 127, 0, 0, 1, 0x9C, 0x40, 0x1F, 0x40],
    )
}

const PEER: &[u8] = b"GET /peer HTTP/1.1\r\nHost: a\r\n\r\n";

#[test]
fn a_header_from_a_trusted_peer_is_the_peer_of_every_request_on_the_connection() {
    let server = loopback_trusted();
    let mut c = server.client();
    let mut bytes = tcp4();
    bytes.extend_from_slice(PEER);
    bytes.extend_from_slice(PEER);
    c.send(&bytes);
    assert_eq!(c.response().text(), "192.0.2.10:40000");
    assert_eq!(
        c.response().text(),
        "192.0.2.10:40000",
        "the pipelined second"
    );
    c.send(PEER);
    assert_eq!(c.response().text(), "192.0.2.10:40000", "a later request");
}

#[test]
fn an_ipv6_source_with_tlvs_after_it() {
    let server = loopback_trusted();
    let mut block = "2001:db8::7"
        .parse::<std::net::Ipv6Addr>()
        .unwrap()
        .octets()
        .to_vec();
    block.extend_from_slice(&std::net::Ipv6Addr::LOCALHOST.octets());
    block.extend_from_slice(&443u16.to_be_bytes());
    block.extend_from_slice(&8000u16.to_be_bytes());
    block.extend_from_slice(&[0x01, 0x00, 0x02, b'h', b'2']);
    let mut bytes = header(0x21, 0x21, &block);
    bytes.extend_from_slice(PEER);
    let mut c = server.client();
    c.send(&bytes);
    assert_eq!(c.response().text(), "[2001:db8::7]:443");
}

#[test]
fn a_header_in_pieces_is_waited_for_and_not_answered_early() {
    let server = loopback_trusted();
    let mut bytes = tcp4();
    bytes.extend_from_slice(PEER);
    // Cut inside the signature, after it, inside the addresses, and just before HTTP.
    for cut in [3, 12, 20, 27] {
        let mut c = server.client();
        c.send(&bytes[..cut]);
        assert!(
            c.silent_for(Duration::from_millis(100)),
            "answered {cut} bytes of a header"
        );
        c.send(&bytes[cut..]);
        assert_eq!(c.response().text(), "192.0.2.10:40000", "cut at {cut}");
    }
}

#[test]
fn local_and_unspec_keep_the_socket_peer() {
    let server = loopback_trusted();
    for (ver_cmd, fam, block) in [
        (0x20, 0x00, vec![]),
        (0x21, 0x00, vec![]),
        (0x20, 0x11, tcp4()[16..].to_vec()),
    ] {
        let mut c = server.client();
        let mut bytes = header(ver_cmd, fam, &block);
        bytes.extend_from_slice(PEER);
        c.send(&bytes);
        let peer = c.response().text();
        assert!(
            peer.starts_with("127.0.0.1:"),
            "{ver_cmd:#x} {fam:#x}: {peer}"
        );
    }
}

#[test]
fn a_trusted_peer_without_a_header_is_plain_http() {
    let server = loopback_trusted();
    let mut c = server.client();
    c.send(PEER);
    assert!(c.response().text().starts_with("127.0.0.1:"));
    // Empty lines before a request, which start like the signature, are still empty lines.
    c.send(b"\r\n\r\nGET /peer HTTP/1.1\r\nHost: a\r\n\r\n");
    assert!(c.response().text().starts_with("127.0.0.1:"));
}

#[test]
fn an_invalid_header_is_refused_and_the_connection_closed() {
    let server = loopback_trusted();
    let mut too_long = header(0x21, 0x11, &[]);
    too_long[14..16].copy_from_slice(&u16::MAX.to_be_bytes());
    let cases = [
        (
            header(0x11, 0x11, &tcp4()[16..]),
            "version 1 in a v2 header",
        ),
        (header(0x2F, 0x11, &tcp4()[16..]), "an unknown command"),
        (header(0x21, 0x51, &tcp4()[16..]), "an unknown family"),
        (header(0x21, 0x11, &[192, 0, 2, 10]), "addresses cut short"),
        (
            too_long,
            "a length past the bound, refused before it arrives",
        ),
    ];
    for (mut bytes, why) in cases {
        bytes.extend_from_slice(PEER);
        let mut c = server.client();
        c.send(&bytes);
        let r = c.response();
        assert_eq!(r.status, 400, "{why}");
        assert!(r.closes(), "{why}");
        c.expect_closed();
    }
    assert!(
        !server.saw("/peer"),
        "no request behind an invalid header was served"
    );
}

#[test]
fn a_truncated_header_is_cut_at_the_head_timeout_however_it_trickles() {
    let server = trusting(
        |ip| ip.is_loopback(),
        |c| {
            c.timeouts.header = Duration::from_millis(300);
        },
    );
    let mut c = server.client();
    let mut writer = c.stream.try_clone().unwrap();
    // A header announcing 100 bytes of addresses, then one byte every 100 ms: never complete
    // within the timeout, and the trickle must not extend it.
    let mut start = header(0x21, 0x11, &[]);
    start[14..16].copy_from_slice(&100u16.to_be_bytes());
    let started = Instant::now();
    let trickle = std::thread::spawn(move || {
        if writer.write_all(&start).is_err() {
            return;
        }
        for _ in 0..30 {
            std::thread::sleep(Duration::from_millis(100));
            if writer.write_all(b"x").is_err() {
                return;
            }
        }
    });
    let r = c.response();
    let elapsed = started.elapsed();
    assert_eq!(r.status, 408);
    c.expect_closed();
    assert!(
        elapsed >= Duration::from_millis(250) && elapsed < Duration::from_millis(1500),
        "408 after {elapsed:?} for a 300 ms head timeout"
    );
    trickle.join().unwrap();
}

#[test]
fn from_an_untrusted_peer_the_signature_is_a_malformed_request() {
    let untrusting = trusting(|_| false, |_| {});
    let without = TestServer::default_config();
    for server in [&untrusting, &without] {
        let mut c = server.client();
        let mut bytes = tcp4();
        bytes.extend_from_slice(PEER);
        c.send(&bytes);
        let r = c.response();
        assert_eq!(r.status, 400);
        assert!(r.text().contains("Malformed request"), "{}", r.text());
        c.expect_closed();
        assert!(!server.saw("/peer"));
    }
}

#[test]
fn only_a_connections_first_bytes_may_be_a_header() {
    let server = loopback_trusted();
    let mut c = server.client();
    let mut bytes = tcp4();
    bytes.extend_from_slice(PEER);
    bytes.extend_from_slice(&tcp4());
    bytes.extend_from_slice(PEER);
    c.send(&bytes);
    assert_eq!(c.response().text(), "192.0.2.10:40000");
    let r = c.response();
    assert_eq!(r.status, 400, "a second header is not HTTP");
    c.expect_closed();
}
