//! Who a request's client is, and which rate-limit bucket is its.
//!
//! The client is the connection's peer (the socket's, or the source a trusted proxy gave in a
//! PROXY protocol header), unless that peer is a trusted proxy: then it is the address its
//! `X-Forwarded-For` vouches for. Every `X-Forwarded-For` field of the request counts, in
//! order, as one comma-separated list (RFC 9110 5.3); it is walked from the right, each
//! trusted proxy vouching for the entry to its left, and the first entry that is not a trusted
//! proxy is the client. If every entry is trusted, the leftmost is the client.
//!
//! Must never let a client pick its own identity: only what a trusted proxy appended is
//! believed. An entry that is not an address (`unknown`, an obfuscated identifier, an empty
//! element, garbage) stops the walk, and the client is the proxy that appended it (the hop to
//! its right), never an entry further left that the client may have written. From a peer that
//! is not trusted, `X-Forwarded-For` is not looked at.

use std::net::{IpAddr, SocketAddr};

use super::TrustedProxies;

impl TrustedProxies {
    /// The client of a request from `peer` carrying `forwarded_for`, the values of its
    /// `X-Forwarded-For` fields in the order they came (read from the last).
    ///
    /// An entry is an IPv4 or IPv6 address, optionally in brackets (IPv6) and with a port
    /// (`192.0.2.1:4711`, `[2001:db8::1]:4711`), as some proxies append them; spaces and tabs
    /// around it are ignored. Anything else is malformed.
    pub fn client<'v>(
        &self,
        peer: IpAddr,
        forwarded_for: impl DoubleEndedIterator<Item = &'v [u8]>,
    ) -> IpAddr {
        if self.is_empty() || !self.contains(peer) {
            return peer;
        }
        // The nearest hop vouched for so far: the peer, then each trusted entry.
        let mut client = peer;
        for value in forwarded_for.rev() {
            for entry in value.rsplit(|&b| b == b',') {
                let Some(addr) = parse_entry(entry) else {
                    return client;
                };
                client = addr;
                if !self.contains(addr) {
                    return addr;
                }
            }
        }
        client
    }
}

/// One `X-Forwarded-For` entry as an address, if it is one.
fn parse_entry(entry: &[u8]) -> Option<IpAddr> {
    let entry = std::str::from_utf8(entry).ok()?.trim_matches([' ', '\t']);
    if let Ok(ip) = entry.parse::<IpAddr>() {
        return Some(ip);
    }
    // `[v6]`, `[v6]:port`, `v4:port`: the forms RFC 7239's node syntax allows.
    if let Some(bracketed) = entry.strip_prefix('[') {
        let (inside, rest) = bracketed.split_once(']')?;
        let ip = inside.parse::<std::net::Ipv6Addr>().ok()?;
        return (rest.is_empty() || valid_port(rest.strip_prefix(':')?)).then_some(IpAddr::V6(ip));
    }
    entry
        .parse::<SocketAddr>()
        .ok()
        .filter(SocketAddr::is_ipv4)
        .map(|s| s.ip())
}

fn valid_port(port: &str) -> bool {
    !port.is_empty() && port.len() <= 5 && port.parse::<u16>().is_ok()
}

/// The rate-limit bucket of `client`: an IPv4 address (an IPv4-mapped one as its IPv4
/// address) is its own bucket; an IPv6 address shares one with its whole /64, since one host
/// (or one customer) is usually given a /64 and may use any of its 2^64 addresses: keyed by
/// the full address, one host could rotate through them and never be limited. Both fit in one
/// `u128`: an IPv4 address as its mapped form (`::ffff:a.b.c.d`, whose low 64 bits are never
/// zero), an IPv6 /64 with its low 64 bits cleared.
pub fn bucket(client: IpAddr) -> u128 {
    match client.to_canonical() {
        IpAddr::V4(v4) => u128::from(v4.to_ipv6_mapped()),
        IpAddr::V6(v6) => u128::from(v6) & !u128::from(u64::MAX),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    /// The client for a request from `peer` with these `X-Forwarded-For` fields, trusting
    /// 127.0.0.1, 10.0.0.0/8 and 2001:db8:f::/48.
    fn client(peer: &str, fields: &[&str]) -> IpAddr {
        let trusted = TrustedProxies::parse("127.0.0.1, 10.0.0.0/8, 2001:db8:f::/48").unwrap();
        trusted.client(ip(peer), fields.iter().map(|f| f.as_bytes()))
    }

    #[test]
    fn the_first_untrusted_entry_from_the_right_is_the_client() {
        // (peer, X-Forwarded-For fields, the client, why)
        let cases: &[(&str, &[&str], &str, &str)] = &[
            ("127.0.0.1", &[], "127.0.0.1", "no header: the peer"),
            ("127.0.0.1", &["203.0.113.5"], "203.0.113.5", "one proxy"),
            (
                "127.0.0.1",
                &["198.51.100.1, 203.0.113.5, 10.0.0.2"],
                "203.0.113.5",
                "a trusted hop is skipped; what the client wrote (left) is not believed",
            ),
            (
                "127.0.0.1",
                &["198.51.100.1", "203.0.113.5,10.0.0.2"],
                "203.0.113.5",
                "several fields are one list, in order",
            ),
            (
                "127.0.0.1",
                &["203.0.113.5", "10.0.0.3", ""],
                "127.0.0.1",
                "an empty field is malformed: the proxy that appended it",
            ),
            (
                "127.0.0.1",
                &["10.0.0.9, 10.0.0.2"],
                "10.0.0.9",
                "all trusted: the leftmost",
            ),
            (
                "127.0.0.1",
                &["\t203.0.113.5 ,  10.0.0.2 "],
                "203.0.113.5",
                "spaces and tabs around entries",
            ),
            (
                "::ffff:127.0.0.1",
                &["203.0.113.5"],
                "203.0.113.5",
                "an IPv4-mapped peer is trusted as its IPv4 address",
            ),
            (
                "2001:db8:f::1",
                &["2001:db8:1::7"],
                "2001:db8:1::7",
                "IPv6 proxy and client",
            ),
            (
                "127.0.0.1",
                &["[2001:db8::7]:443"],
                "2001:db8::7",
                "[v6]:port",
            ),
            ("127.0.0.1", &["[2001:db8::7]"], "2001:db8::7", "[v6]"),
            ("127.0.0.1", &["203.0.113.5:4711"], "203.0.113.5", "v4:port"),
        ];
        for (peer, fields, want, why) in cases {
            assert_eq!(client(peer, fields), ip(want), "{fields:?}: {why}");
        }
    }

    #[test]
    fn a_malformed_entry_stops_the_walk_at_the_proxy_that_appended_it() {
        let cases: &[(&[&str], &str)] = &[
            (&["unknown"], "127.0.0.1"),
            (&["203.0.113.5, garbage"], "127.0.0.1"),
            (&["203.0.113.5, garbage, 10.0.0.2"], "10.0.0.2"),
            (&["203.0.113.5,,10.0.0.2"], "10.0.0.2"),
            (&["203.0.113.5, _hidden, 10.0.0.2"], "10.0.0.2"),
            (&["fe80::1%eth0"], "127.0.0.1"),
            (&["[2001:db8::7]:99999"], "127.0.0.1"),
            (&["[2001:db8::7]x"], "127.0.0.1"),
            (&["[203.0.113.5]"], "127.0.0.1"),
            (&["010.0.0.1"], "127.0.0.1"),
            (&["203.0.113.5\u{a0}"], "127.0.0.1"),
        ];
        for (fields, want) in cases {
            assert_eq!(client("127.0.0.1", fields), ip(want), "{fields:?}");
        }
        let bytes = [&b"203.0.113.5, \xff\xfe"[..]];
        let trusted = TrustedProxies::parse("127.0.0.1").unwrap();
        assert_eq!(
            trusted.client(ip("127.0.0.1"), bytes.into_iter()),
            ip("127.0.0.1"),
            "not UTF-8"
        );
    }

    #[test]
    fn an_untrusted_peer_is_the_client_whatever_it_forwards() {
        for fields in [&["203.0.113.5"][..], &["10.0.0.2"], &["garbage"]] {
            assert_eq!(client("198.51.100.1", fields), ip("198.51.100.1"));
        }
        let nobody = TrustedProxies::default();
        let fields = [&b"203.0.113.5"[..]];
        assert_eq!(
            nobody.client(ip("127.0.0.1"), fields.into_iter()),
            ip("127.0.0.1"),
            "an empty list trusts no one"
        );
    }

    #[test]
    fn ipv6_clients_share_a_bucket_per_64_and_ipv4_ones_do_not() {
        assert_eq!(
            bucket(ip("2001:db8::1")),
            bucket(ip("2001:db8::ffff:1:2:3"))
        );
        assert_ne!(bucket(ip("2001:db8::1")), bucket(ip("2001:db8:0:1::1")));
        assert_ne!(bucket(ip("192.0.2.1")), bucket(ip("192.0.2.2")));
        assert_eq!(bucket(ip("192.0.2.1")), bucket(ip("::ffff:192.0.2.1")));
        // No IPv6 /64 is an IPv4 bucket, ::/64 included (the low bits of a mapped address
        // are not zero).
        assert_ne!(bucket(ip("::1")), bucket(ip("0.0.0.1")));
        assert_ne!(bucket(ip("::")), bucket(ip("0.0.0.0")));
    }
}
