//! Decoding a chunked request body (RFC 9112 section 7.1): chunk-size lines in hex with
//! optional extensions, the data, and a trailer section that is read and discarded.
//!
//! Pure: the decoder sees the bytes after the head and either finishes (reporting how many
//! bytes it consumed), asks for more, or refuses. Every length is checked before it is used.

/// The outcome of decoding what has arrived so far.
#[derive(Debug, PartialEq, Eq)]
pub enum Chunked {
    /// The whole body is here: `consumed` bytes of input (through the trailers' blank line).
    Complete { consumed: usize },
    /// More input is needed.
    Incomplete,
    /// The body decodes to more than the limit.
    TooLarge,
    /// Not valid chunked framing.
    Bad,
}

/// Longest chunk-size line (with extensions) accepted: hyper and nginx use a few KiB at most.
const MAX_SIZE_LINE: usize = 4096;

/// Decodes `input` into `body` (cleared first), refusing bodies over `max_body` bytes and
/// trailer sections over `max_trailers` bytes.
pub fn decode(input: &[u8], body: &mut Vec<u8>, max_body: usize, max_trailers: usize) -> Chunked {
    body.clear();
    let mut pos = 0;
    loop {
        let line_end = match find_crlf(&input[pos..], MAX_SIZE_LINE) {
            Ok(Some(i)) => pos + i,
            Ok(None) => return Chunked::Incomplete,
            Err(()) => return Chunked::Bad,
        };
        let line = &input[pos..line_end];
        let size_part = match line.iter().position(|b| *b == b';') {
            Some(i) => &line[..i],
            None => line,
        };
        let size_part = trim_ws(size_part);
        if size_part.is_empty() || size_part.len() > 16 {
            return Chunked::Bad;
        }
        let mut size: u64 = 0;
        for &b in size_part {
            let digit = match b {
                b'0'..=b'9' => b - b'0',
                b'a'..=b'f' => b - b'a' + 10,
                b'A'..=b'F' => b - b'A' + 10,
                _ => return Chunked::Bad,
            };
            size = (size << 4) | u64::from(digit);
        }
        pos = line_end + 2;
        if size == 0 {
            // Trailer section: field lines until an empty line.
            let start = pos;
            loop {
                let rest = &input[pos..];
                match find_crlf(rest, max_trailers) {
                    Ok(Some(0)) => return Chunked::Complete { consumed: pos + 2 },
                    Ok(Some(i)) => {
                        pos += i + 2;
                        if pos - start > max_trailers {
                            return Chunked::Bad;
                        }
                    }
                    Ok(None) => return Chunked::Incomplete,
                    Err(()) => return Chunked::Bad,
                }
            }
        }
        if size > (max_body - body.len()) as u64 {
            return Chunked::TooLarge;
        }
        let size = size as usize;
        if input.len() < pos + size + 2 {
            return Chunked::Incomplete;
        }
        body.extend_from_slice(&input[pos..pos + size]);
        pos += size;
        if &input[pos..pos + 2] != b"\r\n" {
            return Chunked::Bad;
        }
        pos += 2;
    }
}

/// Position of the first CRLF within the first `max` bytes; `Err` if there is none within the
/// limit though enough bytes are there, or if a bare LF or CR appears.
fn find_crlf(buf: &[u8], max: usize) -> Result<Option<usize>, ()> {
    for (i, &b) in buf.iter().enumerate() {
        if b == b'\r' {
            return match buf.get(i + 1) {
                Some(b'\n') => Ok(Some(i)),
                Some(_) => Err(()),
                None => Ok(None),
            };
        }
        if b == b'\n' || i >= max {
            return Err(());
        }
    }
    if buf.len() > max {
        Err(())
    } else {
        Ok(None)
    }
}

fn trim_ws(mut v: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = v {
        v = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = v {
        v = rest;
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(input: &[u8]) -> (Chunked, Vec<u8>) {
        let mut body = Vec::new();
        let r = decode(input, &mut body, 1024, 1024);
        (r, body)
    }

    #[test]
    fn decodes_chunks_extensions_and_trailers() {
        let (r, body) = run(b"5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-T: 1\r\n\r\nNEXT");
        assert_eq!(r, Chunked::Complete { consumed: 40 });
        assert_eq!(body, b"hello world");
    }

    #[test]
    fn refuses_bad_sizes() {
        for bad in [
            &b"zz\r\n"[..],
            b"-1\r\n",
            b"\r\n",
            b"11111111111111111\r\n",
            b"5\nhello",
        ] {
            assert_eq!(
                run(bad).0,
                Chunked::Bad,
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        assert_eq!(run(b"5\r\nhelloXX0\r\n\r\n").0, Chunked::Bad);
    }

    #[test]
    fn limits_the_decoded_size() {
        assert_eq!(run(b"401\r\n").0, Chunked::TooLarge);
        assert_eq!(run(b"ffffffffffffffff\r\n").0, Chunked::TooLarge);
    }

    #[test]
    fn incomplete_at_every_prefix() {
        let full = b"5\r\nhello\r\n0\r\n\r\n";
        for cut in 0..full.len() {
            assert_eq!(run(&full[..cut]).0, Chunked::Incomplete, "cut at {cut}");
        }
    }
}
