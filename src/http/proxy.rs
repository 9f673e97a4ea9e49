//! The PROXY protocol, version 2 (HAProxy's `doc/proxy-protocol.txt`): the binary header a
//! proxy in front of the server may send first on a connection, saying whose connection it
//! relays. Accepted only from the peers [`ProxyProtocol`] trusts, and only as a connection's
//! first bytes; version 1 (the text form) is not.
//!
//! [`parse`] reads one header from the start of a connection's input: the 12-byte signature,
//! the version (2) and command (`LOCAL`: the proxy's own connection, a health check; `PROXY`:
//! a relayed one), the address family and transport, and the length of what follows (address
//! block and TLVs, skipped). Only a relayed TCP connection over IPv4 or IPv6 (`PROXY` with
//! `INET`/`INET6` over `STREAM`) names a client; `LOCAL`, `UNSPEC` and the families or
//! transports a TCP server has no use for (`UNIX`, `DGRAM`) keep the real peer, as the
//! specification lets a receiver do.
//!
//! Must never wait for more than a bounded header ([`MAX_HEADER`]), never take an invalid one
//! for HTTP (an invalid header is refused, and the connection closed), and never read a header
//! from a peer that is not trusted (there the signature is just bytes that are not HTTP: 400).

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

/// The 12 bytes every version 2 header starts with.
pub const SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";

/// The longest header accepted: 16 bytes and the address block (216 at most, for `UNIX`) plus
/// TLVs (HAProxy's: ALPN, authority, unique id up to 128 bytes, SSL details) with room to
/// spare. Within a connection's base input buffer, so a header never takes from the memory
/// budget.
pub const MAX_HEADER: usize = 4096;

/// Which peers may send a PROXY protocol v2 header (`TRUSTED_PROXIES`): a predicate on the
/// socket peer's address, so that this module need not know how the list is kept. Cheap to
/// clone (shared).
#[derive(Clone)]
pub struct ProxyProtocol(Arc<dyn Fn(IpAddr) -> bool + Send + Sync>);

impl ProxyProtocol {
    /// Headers are read from the peers `trusted` holds true for.
    pub fn from(trusted: impl Fn(IpAddr) -> bool + Send + Sync + 'static) -> ProxyProtocol {
        ProxyProtocol(Arc::new(trusted))
    }

    /// Whether a connection from `peer` may begin with a header.
    pub fn accepts(&self, peer: IpAddr) -> bool {
        (self.0)(peer)
    }
}

impl fmt::Debug for ProxyProtocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ProxyProtocol(from trusted peers)")
    }
}

/// What the start of a connection's input holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Header {
    /// Not a PROXY v2 header (the first bytes differ from the signature): plain HTTP.
    Absent,
    /// A prefix of one: wait for more (under the head timeout).
    Incomplete,
    /// A complete header of `len` bytes; `source` is the relayed client's address and port,
    /// or `None` where the real peer stands (`LOCAL`, `UNSPEC`, `UNIX`, `DGRAM`).
    Complete {
        len: usize,
        source: Option<SocketAddr>,
    },
    /// A header that breaks the specification: the connection is refused.
    Invalid(&'static str),
}

/// Reads the header at the start of `input` (see [`Header`]).
pub fn parse(input: &[u8]) -> Header {
    let seen = input.len().min(SIGNATURE.len());
    if input[..seen] != SIGNATURE[..seen] {
        return Header::Absent;
    }
    if input.len() < 16 {
        return Header::Incomplete;
    }
    let (version, command) = (input[12] >> 4, input[12] & 0x0F);
    if version != 2 {
        return Header::Invalid("PROXY protocol: not version 2");
    }
    let local = match command {
        0x0 => true,
        0x1 => false,
        _ => return Header::Invalid("PROXY protocol: unknown command"),
    };
    let (family, transport) = (input[13] >> 4, input[13] & 0x0F);
    if family > 0x3 {
        return Header::Invalid("PROXY protocol: unknown address family");
    }
    if transport > 0x2 {
        return Header::Invalid("PROXY protocol: unknown transport");
    }
    let len = 16 + usize::from(u16::from_be_bytes([input[14], input[15]]));
    if len > MAX_HEADER {
        return Header::Invalid("PROXY protocol: header too long");
    }
    if input.len() < len {
        return Header::Incomplete;
    }
    let block = &input[16..len];
    let source = match (local, family, transport) {
        (false, 0x1, 0x1) => {
            let Some(a) = block.get(..12) else {
                return Header::Invalid("PROXY protocol: address block too short");
            };
            let ip = Ipv4Addr::new(a[0], a[1], a[2], a[3]);
            Some(SocketAddr::new(
                IpAddr::V4(ip),
                u16::from_be_bytes([a[8], a[9]]),
            ))
        }
        (false, 0x2, 0x1) => {
            let Some(a) = block.get(..36) else {
                return Header::Invalid("PROXY protocol: address block too short");
            };
            let mut octets = [0; 16];
            octets.copy_from_slice(&a[..16]);
            let ip = Ipv6Addr::from(octets);
            Some(SocketAddr::new(
                IpAddr::V6(ip),
                u16::from_be_bytes([a[32], a[33]]),
            ))
        }
        _ => None,
    };
    Header::Complete { len, source }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A header: version and command byte, family and transport byte, then `block`.
    fn header(ver_cmd: u8, fam: u8, block: &[u8]) -> Vec<u8> {
        let mut h = SIGNATURE.to_vec();
        h.push(ver_cmd);
        h.push(fam);
        h.extend_from_slice(&(block.len() as u16).to_be_bytes());
        h.extend_from_slice(block);
        h
    }

    /// TCP over IPv4 from 192.0.2.10:51000 to 198.51.100.1:8000.
    fn tcp4_block() -> Vec<u8> {
        let mut b = vec![192, 0, 2, 10, 198, 51, 100, 1];
        b.extend_from_slice(&51000u16.to_be_bytes());
        b.extend_from_slice(&8000u16.to_be_bytes());
        b
    }

    #[test]
    fn a_relayed_tcp4_connection_names_its_source() {
        let h = header(0x21, 0x11, &tcp4_block());
        let mut input = h.clone();
        input.extend_from_slice(b"GET / HTTP/1.1\r\n");
        assert_eq!(
            parse(&input),
            Header::Complete {
                len: 28,
                source: Some("192.0.2.10:51000".parse().unwrap())
            },
            "the header ends where HTTP begins"
        );
    }

    #[test]
    fn a_relayed_tcp6_connection_names_its_source() {
        let src: Ipv6Addr = "2001:db8::7".parse().unwrap();
        let dst: Ipv6Addr = "2001:db8::1".parse().unwrap();
        let mut block = src.octets().to_vec();
        block.extend_from_slice(&dst.octets());
        block.extend_from_slice(&443u16.to_be_bytes());
        block.extend_from_slice(&8000u16.to_be_bytes());
        assert_eq!(
            parse(&header(0x21, 0x21, &block)),
            Header::Complete {
                len: 52,
                source: Some("[2001:db8::7]:443".parse().unwrap())
            }
        );
    }

    #[test]
    fn tlvs_after_the_addresses_are_skipped() {
        let mut block = tcp4_block();
        // PP2_TYPE_ALPN "h2", PP2_TYPE_UNIQUE_ID of 128 bytes, PP2_TYPE_NOOP.
        block.extend_from_slice(&[0x01, 0x00, 0x02, b'h', b'2']);
        block.extend_from_slice(&[0x05, 0x00, 0x80]);
        block.extend_from_slice(&[0xAB; 128]);
        block.extend_from_slice(&[0x04, 0x00, 0x00]);
        let h = header(0x21, 0x11, &block);
        assert_eq!(
            parse(&h),
            Header::Complete {
                len: h.len(),
                source: Some("192.0.2.10:51000".parse().unwrap())
            }
        );
    }

    #[test]
    fn local_unspec_unix_and_dgram_keep_the_real_peer() {
        let cases: &[(u8, u8, Vec<u8>, &str)] = &[
            (0x20, 0x00, vec![], "LOCAL (a health check), no addresses"),
            (0x20, 0x11, tcp4_block(), "LOCAL with addresses: ignored"),
            (0x21, 0x00, vec![], "PROXY over UNSPEC"),
            (
                0x21,
                0x10,
                tcp4_block(),
                "INET over an unspecified transport",
            ),
            (0x21, 0x12, tcp4_block(), "UDP"),
            (0x21, 0x31, vec![0; 216], "UNIX stream"),
        ];
        for (ver_cmd, fam, block, why) in cases {
            let h = header(*ver_cmd, *fam, block);
            assert_eq!(
                parse(&h),
                Header::Complete {
                    len: h.len(),
                    source: None
                },
                "{why}"
            );
        }
    }

    #[test]
    fn invalid_headers_are_refused() {
        let cases: &[(u8, u8, Vec<u8>, &str)] = &[
            (0x11, 0x11, tcp4_block(), "not version 2"),
            (0x31, 0x11, tcp4_block(), "not version 2"),
            (0x22, 0x11, tcp4_block(), "unknown command"),
            (0x2F, 0x11, tcp4_block(), "unknown command"),
            (0x21, 0x41, tcp4_block(), "unknown address family"),
            (0x21, 0x13, tcp4_block(), "unknown transport"),
            (0x21, 0x11, vec![192, 0, 2, 10], "address block too short"),
            (0x21, 0x21, tcp4_block(), "address block too short"),
        ];
        for (ver_cmd, fam, block, problem) in cases {
            match parse(&header(*ver_cmd, *fam, block)) {
                Header::Invalid(why) => assert!(why.contains(problem), "{why} for {problem}"),
                other => panic!("{problem}: {other:?}"),
            }
        }
    }

    #[test]
    fn a_length_past_the_bound_is_refused_before_it_arrives() {
        let mut h = header(0x21, 0x11, &[]);
        h[14..16].copy_from_slice(&((MAX_HEADER - 16 + 1) as u16).to_be_bytes());
        assert_eq!(
            parse(&h),
            Header::Invalid("PROXY protocol: header too long")
        );
        h[14..16].copy_from_slice(&u16::MAX.to_be_bytes());
        assert_eq!(
            parse(&h),
            Header::Invalid("PROXY protocol: header too long")
        );
        h[14..16].copy_from_slice(&((MAX_HEADER - 16) as u16).to_be_bytes());
        assert_eq!(parse(&h), Header::Incomplete, "at the bound: waits for it");
    }

    #[test]
    fn every_prefix_of_a_header_is_incomplete() {
        let h = header(0x21, 0x11, &tcp4_block());
        for n in 1..h.len() {
            assert_eq!(parse(&h[..n]), Header::Incomplete, "{n} bytes");
        }
        assert!(matches!(parse(&h), Header::Complete { .. }));
    }

    #[test]
    fn http_and_version_1_are_not_a_header() {
        for input in [
            &b"GET / HTTP/1.1\r\n"[..],
            b"PROXY TCP4 192.0.2.1 192.0.2.2 1 2\r\n",
            b"\r\nGET / HTTP/1.1\r\n",
            b"\r\n\r\nGET /",
            b"\r\n\r\n\0\r\nQUIX\n!",
        ] {
            assert_eq!(parse(input), Header::Absent, "{input:?}");
        }
        assert_eq!(
            parse(b"\r\n\r\n"),
            Header::Incomplete,
            "empty lines may yet be one"
        );
    }
}
