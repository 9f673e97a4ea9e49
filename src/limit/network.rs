//! `TRUSTED_PROXIES`: the addresses and CIDR blocks whose connections may say who the client is
//! (with `X-Forwarded-For`, or a PROXY protocol v2 header), parsed and checked once at start.
//!
//! An IPv4 peer that reaches an IPv6 socket as an IPv4-mapped address (`::ffff:10.0.0.1`) is
//! the IPv4 address it maps, so `10.0.0.0/8` covers it; an IPv4-mapped block in the list
//! (`::ffff:10.0.0.0/104`) is the IPv4 block it maps. Otherwise the families are apart: `::/0`
//! is every IPv6 address, not every IPv4 one. Must never accept an entry it would read as
//! something else than written: a block with bits set past its prefix (`10.0.0.1/8`) is refused
//! rather than rounded, since it usually means a typo. A block of every address (`0.0.0.0/0`, `::/0`)
//! is refused: the walk of `X-Forwarded-For` would never stop before what the client wrote.

use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;

/// One address or CIDR block of the list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Block {
    V4 { net: u32, prefix: u8 },
    V6 { net: u128, prefix: u8 },
}

impl Block {
    /// `a.b.c.d`, `a.b.c.d/n`, an IPv6 address, or one with `/n`.
    fn parse(entry: &str) -> Result<Block, String> {
        let (addr, prefix) = match entry.split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix)),
            None => (entry, None),
        };
        let addr: IpAddr = addr.parse().map_err(|_| {
            format!(
                "{entry:?} is not an IP address or CIDR block (such as 10.0.0.0/8, 192.0.2.7 or \
                 2001:db8::/32)"
            )
        })?;
        let width = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => width,
            Some(p) => match p.parse::<u8>() {
                Ok(n) if p.bytes().all(|b| b.is_ascii_digit()) && n <= width => n,
                _ => {
                    return Err(format!(
                        "{entry:?}: the prefix length must be a whole number from 0 to {width}"
                    ))
                }
            },
        };
        let block = match addr {
            IpAddr::V4(a) => Block::V4 {
                net: u32::from(a),
                prefix,
            },
            IpAddr::V6(a) => match a.to_ipv4_mapped() {
                Some(v4) if prefix >= 96 => Block::V4 {
                    net: u32::from(v4),
                    prefix: prefix - 96,
                },
                _ => Block::V6 {
                    net: u128::from(a),
                    prefix,
                },
            },
        };
        if block.prefix() == 0 {
            // The walk of X-Forwarded-For would never meet an untrusted entry and would end at
            // the leftmost, which the client wrote: every client would choose its identity.
            return Err(format!(
                "{entry:?} is every address: each client could then name itself in \
                 X-Forwarded-For (list the proxies' own addresses or subnets)"
            ));
        }
        if block.masked() != block {
            return Err(format!(
                "{entry:?} has bits set past its /{prefix} prefix (the block is {})",
                block.masked()
            ));
        }
        Ok(block)
    }

    fn prefix(self) -> u8 {
        match self {
            Block::V4 { prefix, .. } | Block::V6 { prefix, .. } => prefix,
        }
    }

    /// The block with the bits past its prefix cleared.
    fn masked(self) -> Block {
        match self {
            Block::V4 { net, prefix } => Block::V4 {
                net: net & mask32(prefix),
                prefix,
            },
            Block::V6 { net, prefix } => Block::V6 {
                net: net & mask128(prefix),
                prefix,
            },
        }
    }

    /// Whether `ip` (canonical: an IPv4-mapped address already turned IPv4) lies in the block.
    fn contains(self, ip: IpAddr) -> bool {
        match (self, ip) {
            (Block::V4 { net, prefix }, IpAddr::V4(a)) => u32::from(a) & mask32(prefix) == net,
            (Block::V6 { net, prefix }, IpAddr::V6(a)) => u128::from(a) & mask128(prefix) == net,
            _ => false,
        }
    }
}

impl fmt::Display for Block {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Block::V4 { net, prefix } => write!(f, "{}/{prefix}", std::net::Ipv4Addr::from(net)),
            Block::V6 { net, prefix } => write!(f, "{}/{prefix}", std::net::Ipv6Addr::from(net)),
        }
    }
}

fn mask32(prefix: u8) -> u32 {
    u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0)
}

fn mask128(prefix: u8) -> u128 {
    u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0)
}

/// The trusted proxies: empty (the default) trusts no peer. Cheap to clone (shared).
///
/// Looked up by a linear scan: a deployment lists a handful of balancers or their subnets.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies {
    blocks: Arc<[Block]>,
}

impl TrustedProxies {
    /// A comma-separated list of addresses and CIDR blocks, IPv4 or IPv6 (spaces around the
    /// entries are ignored); empty or blank: none. The error names the entry and what is wrong.
    pub fn parse(list: &str) -> Result<TrustedProxies, String> {
        if list.trim().is_empty() {
            return Ok(TrustedProxies::default());
        }
        let blocks = list
            .split(',')
            .map(|entry| match entry.trim() {
                "" => Err("has an empty entry (two commas in a row, or one at an end)".into()),
                entry => Block::parse(entry),
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(TrustedProxies {
            blocks: blocks.into(),
        })
    }

    pub fn is_empty(&self) -> bool {
        self.blocks.is_empty()
    }

    /// Whether `ip` is a trusted proxy (an IPv4-mapped IPv6 address as its IPv4 address).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.blocks.iter().any(|b| b.contains(ip))
    }
}

impl fmt::Debug for TrustedProxies {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.blocks.iter().map(ToString::to_string))
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn addresses_and_blocks_of_both_families_match_what_they_cover() {
        let t = TrustedProxies::parse(" 10.0.0.0/8, 192.0.2.7 ,2001:db8::/32, ::1").unwrap();
        let cases = [
            ("10.1.2.3", true, "inside 10/8"),
            ("11.0.0.1", false, "outside 10/8"),
            ("192.0.2.7", true, "a single address"),
            ("192.0.2.8", false, "its neighbour"),
            ("2001:db8:ffff::1", true, "inside the /32"),
            ("2001:db9::1", false, "outside the /32"),
            ("::1", true, "IPv6 loopback listed"),
            ("127.0.0.1", false, "IPv4 loopback not listed"),
            (
                "::ffff:10.0.0.1",
                true,
                "IPv4-mapped: its IPv4 address is in 10/8",
            ),
            ("::ffff:192.0.2.8", false, "IPv4-mapped, outside"),
        ];
        for (addr, trusted, why) in cases {
            assert_eq!(t.contains(ip(addr)), trusted, "{addr}: {why}");
        }
    }

    #[test]
    fn the_families_stay_apart_except_for_mapped_addresses() {
        let low_v6 = TrustedProxies::parse("::/1").unwrap();
        assert!(low_v6.contains(ip("2001:db8::1")));
        assert!(
            !low_v6.contains(ip("10.0.0.1")),
            "::/1 holds no IPv4 address (::ffff:0:0/96 lies in it)"
        );
        let low_v4 = TrustedProxies::parse("0.0.0.0/1").unwrap();
        assert!(low_v4.contains(ip("10.0.0.1")));
        assert!(low_v4.contains(ip("::ffff:10.0.0.1")));
        assert!(!low_v4.contains(ip("203.0.113.1")));
        assert!(!low_v4.contains(ip("2001:db8::1")));
        let mapped = TrustedProxies::parse("::ffff:10.0.0.0/104").unwrap();
        assert!(
            mapped.contains(ip("10.9.9.9")),
            "a mapped block is its IPv4 block"
        );
        assert_eq!(format!("{mapped:?}"), r#"["10.0.0.0/8"]"#);
    }

    #[test]
    fn a_block_of_every_address_is_refused() {
        // With every address trusted, the walk of X-Forwarded-For never meets an untrusted
        // entry and ends at the leftmost, which the client wrote: each client would choose its
        // own identity (a fresh bucket a request), and any peer could send a PROXY header.
        for list in [
            "0.0.0.0/0",
            "::/0",
            "10.0.0.0/8, 0.0.0.0/0",
            "::ffff:0.0.0.0/96",
        ] {
            let e = TrustedProxies::parse(list).unwrap_err();
            assert!(e.contains("every address"), "{list:?}: {e}");
        }
        assert!(TrustedProxies::parse("0.0.0.0/1, 2001:db8::/32").is_ok());
    }

    #[test]
    fn empty_trusts_no_one() {
        for list in ["", "   "] {
            let t = TrustedProxies::parse(list).unwrap();
            assert!(t.is_empty());
            assert!(!t.contains(ip("127.0.0.1")));
        }
    }

    #[test]
    fn bad_entries_are_refused_by_name() {
        let cases = [
            (
                "10.0.0.0/33",
                "prefix length must be a whole number from 0 to 32",
            ),
            ("2001:db8::/129", "from 0 to 128"),
            ("10.0.0.0/", "prefix length"),
            ("10.0.0.0/+8", "prefix length"),
            ("10.0.0.0/8/8", "prefix length"),
            (
                "10.0.0.1/8",
                "bits set past its /8 prefix (the block is 10.0.0.0/8)",
            ),
            ("2001:db8::1/32", "the block is 2001:db8::/32"),
            ("10.0.0", "is not an IP address or CIDR block"),
            ("localhost", "is not an IP address"),
            ("010.0.0.1", "is not an IP address"),
            ("[::1]", "is not an IP address"),
            ("fe80::1%eth0", "is not an IP address"),
            ("10.0.0.0/8,,192.0.2.1", "empty entry"),
            ("10.0.0.0/8,", "empty entry"),
        ];
        for (list, problem) in cases {
            let e = TrustedProxies::parse(list).unwrap_err();
            assert!(e.contains(problem), "{list:?}: {e}");
        }
    }
}
