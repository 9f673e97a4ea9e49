//! Request ids: a client's `X-Request-Id` when it is 1 to 128 visible ASCII characters, else one
//! made here. Made without a shared counter or an allocation: a per-process random prefix, the
//! connection's number and the request's number on that connection, in hex.

/// Longest client id taken.
pub const MAX_LEN: usize = 128;

/// Room for a generated id: 8 + 1 + 16 + 1 + 16 hex digits and dashes.
pub(crate) const GENERATED_MAX: usize = 42;

/// Whether a client's `X-Request-Id` value is taken as is: 1 to [`MAX_LEN`] visible ASCII
/// characters (no space, no control character: it is echoed in a header and written in logs).
pub fn is_valid(value: &[u8]) -> bool {
    (1..=MAX_LEN).contains(&value.len()) && value.iter().all(|b| (0x21..=0x7e).contains(b))
}

/// A random prefix for this process's ids, so ids of two processes (or of one restarted) differ.
pub(crate) fn process_prefix() -> u32 {
    use std::hash::{BuildHasher, Hasher};
    // RandomState is seeded from the operating system's randomness once per process.
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    h.finish() as u32
}

/// Writes `{prefix:08x}-{conn:x}-{seq:x}` into `buf` and returns it.
pub(crate) fn generate(prefix: u32, conn: u64, seq: u64, buf: &mut [u8; GENERATED_MAX]) -> &str {
    let mut len = 0;
    push_hex(buf, &mut len, u64::from(prefix), 8);
    buf[len] = b'-';
    len += 1;
    push_hex(buf, &mut len, conn, 1);
    buf[len] = b'-';
    len += 1;
    push_hex(buf, &mut len, seq, 1);
    debug_assert!(buf[..len]
        .iter()
        .all(|b| b.is_ascii_hexdigit() || *b == b'-'));
    // SAFETY: only ASCII hex digits and dashes were written, and ASCII is UTF-8 (checking it
    // again was a visible share of a request's time in the core, `benches/hot_path.rs`; the
    // measurement is in docs/benchmarks.md).
    unsafe { std::str::from_utf8_unchecked(&buf[..len]) }
}

/// Appends `v` in lowercase hex, at least `min` digits.
fn push_hex(buf: &mut [u8], len: &mut usize, v: u64, min: usize) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let digits = ((64 - v.leading_zeros() as usize).div_ceil(4)).max(min);
    for i in (0..digits).rev() {
        buf[*len] = DIGITS[((v >> (i * 4)) & 0xf) as usize];
        *len += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_ids_must_be_short_visible_ascii() {
        assert!(is_valid(b"abc-123_XYZ.~!"));
        assert!(is_valid(&[b'a'; MAX_LEN]));
        assert!(!is_valid(&[b'a'; MAX_LEN + 1]));
        assert!(!is_valid(b""));
        assert!(!is_valid(b"a b"), "space");
        assert!(!is_valid(b"a\tb"), "control");
        assert!(!is_valid("é".as_bytes()), "not ASCII");
    }

    #[test]
    fn generated_ids_are_distinct_and_valid() {
        let mut buf = [0; GENERATED_MAX];
        assert_eq!(generate(0xab, 0x1f, 0, &mut buf), "000000ab-1f-0");
        let longest = generate(u32::MAX, u64::MAX, u64::MAX, &mut buf).to_string();
        assert_eq!(longest.len(), GENERATED_MAX);
        assert!(is_valid(longest.as_bytes()));
        let a = generate(1, 2, 3, &mut buf).to_string();
        assert_ne!(a, generate(1, 2, 4, &mut buf));
        assert_ne!(a, generate(1, 3, 3, &mut buf));
    }
}
