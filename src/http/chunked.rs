//! Decoding a chunked request body (RFC 9112 section 7.1), incrementally and in place.
//!
//! The decoder is a byte-level state machine that keeps its place between reads: each input
//! byte is looked at once, whatever way the client splits its writes, so the cost of a body is
//! linear in its size. Chunk data is moved down over the framing that preceded it in the same
//! buffer, so the decoded body ends up contiguous right after the head and no second buffer is
//! needed; framing bytes (size lines, extensions, trailers) are checked against the grammar and
//! dropped as they are read.
//!
//! Grammar (RFC 9112 7.1, RFC 9110 5.6):
//!
//! ```text
//! chunk          = chunk-size [ chunk-ext ] CRLF chunk-data CRLF
//! chunk-size     = 1*HEXDIG
//! chunk-ext      = *( BWS ";" BWS chunk-ext-name [ BWS "=" BWS chunk-ext-val ] )
//! chunk-ext-val  = token / quoted-string
//! last-chunk     = 1*("0") [ chunk-ext ] CRLF
//! trailer-section = *( field-line CRLF ) CRLF
//! ```
//!
//! No whitespace is accepted anywhere else (not after the size without an extension, not
//! before CRLF), and no bare CR or LF.

use crate::ascii::hex_digit;

/// Longest chunk-size line (size and extensions) accepted: hyper and nginx use a few KiB.
pub const MAX_SIZE_LINE: usize = 4096;

/// What feeding the decoder came to.
#[derive(Debug, PartialEq, Eq)]
pub enum Chunked {
    /// The whole body is decoded: it is `buf[..body_len]`, and the chunked framing ended at
    /// `buf[consumed]` (what follows belongs to the next request).
    Complete { body_len: usize, consumed: usize },
    /// Everything given was decoded; the body so far is `buf[..body_len]`, and input from
    /// `body_len` on may be dropped: more input is needed after it.
    Incomplete { body_len: usize },
    /// The body decodes to more than the limit, or its framing is longer than allowed.
    TooLarge,
    /// Not valid chunked framing.
    Bad,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// In the chunk size: `digits` read so far.
    Size {
        digits: u32,
    },
    /// Whitespace after the size; only `;` may follow.
    SizeWs,
    /// After `;`: optional whitespace, then an extension name.
    ExtName {
        started: bool,
    },
    /// After an extension name and whitespace: `=` or `;` may follow.
    ExtAfterName,
    /// After `=`: optional whitespace, then a token or a quoted string.
    ExtValueStart,
    ExtValueToken,
    ExtQuoted,
    ExtQuotedEscape,
    /// Right after a quoted string's closing quote.
    ExtQuoteEnd,
    /// After a value and whitespace: only `;` may follow.
    ExtAfterValue,
    /// Expecting LF after the size line's CR.
    SizeLf,
    /// In chunk data: `left` bytes to go.
    Data {
        left: u64,
    },
    DataCr,
    DataLf,
    /// At the start of a trailer line (or the final CRLF).
    TrailerStart,
    TrailerName,
    TrailerValue,
    TrailerLf,
    EndLf,
    Done,
}

/// The decoder's place in one chunked body, kept between reads.
#[derive(Debug, Clone)]
pub struct Decoder {
    state: State,
    size: u64,
    /// Decoded body bytes so far, at the front of the buffer.
    decoded: usize,
    /// Bytes of the current size line, or of the trailer section.
    line: usize,
    /// Framing bytes (everything but chunk data) seen so far.
    framing: usize,
    max_body: usize,
    max_framing: usize,
    max_trailers: usize,
}

impl Decoder {
    /// A decoder refusing bodies over `max_body` decoded bytes, framing (size lines,
    /// extensions, CRLFs, trailers) over `max_framing` bytes in all, and trailer sections over
    /// `max_trailers` bytes.
    pub fn new(max_body: usize, max_framing: usize, max_trailers: usize) -> Decoder {
        Decoder {
            state: State::Size { digits: 0 },
            size: 0,
            decoded: 0,
            line: 0,
            framing: 0,
            max_body,
            max_framing,
            max_trailers,
        }
    }

    /// Decodes `buf[self.decoded..]` (the new input follows the body decoded so far), moving
    /// chunk data down to `buf[self.decoded..]`.
    pub fn feed(&mut self, buf: &mut [u8]) -> Chunked {
        let mut pos = self.decoded;
        while pos < buf.len() {
            if let State::Data { left } = self.state {
                let n = (buf.len() - pos).min(usize::try_from(left).unwrap_or(usize::MAX));
                buf.copy_within(pos..pos + n, self.decoded);
                self.decoded += n;
                pos += n;
                let left = left - n as u64;
                self.state = if left == 0 {
                    State::DataCr
                } else {
                    State::Data { left }
                };
                continue;
            }
            let b = buf[pos];
            pos += 1;
            self.framing += 1;
            if self.framing > self.max_framing {
                return Chunked::TooLarge;
            }
            match self.step(b) {
                Ok(()) => {}
                Err(e) => return e,
            }
            if self.state == State::Done {
                return Chunked::Complete {
                    body_len: self.decoded,
                    consumed: pos,
                };
            }
        }
        Chunked::Incomplete {
            body_len: self.decoded,
        }
    }

    /// One framing byte.
    fn step(&mut self, b: u8) -> Result<(), Chunked> {
        use State::*;
        let in_size_line = matches!(
            self.state,
            Size { .. }
                | SizeWs
                | ExtName { .. }
                | ExtAfterName
                | ExtValueStart
                | ExtValueToken
                | ExtQuoted
                | ExtQuotedEscape
                | ExtQuoteEnd
                | ExtAfterValue
                | SizeLf
        );
        if in_size_line {
            self.line += 1;
            if self.line > MAX_SIZE_LINE {
                return Err(Chunked::Bad);
            }
        }
        let in_trailers = matches!(
            self.state,
            TrailerStart | TrailerName | TrailerValue | TrailerLf
        );
        if in_trailers {
            self.line += 1;
            if self.line > self.max_trailers {
                return Err(Chunked::Bad);
            }
        }
        self.state = match (self.state, b) {
            (Size { digits }, _) if b.is_ascii_hexdigit() => {
                // Significant digits are counted: leading zeros are allowed (the line's length
                // is bounded anyway).
                if self.size >> 60 != 0 {
                    return Err(Chunked::Bad);
                }
                self.size = (self.size << 4) | u64::from(hex_digit(b).unwrap_or(0));
                Size { digits: digits + 1 }
            }
            (Size { digits: 0 }, _) => return Err(Chunked::Bad),
            (Size { .. }, b';') => ExtName { started: false },
            (Size { .. }, b' ' | b'\t') => SizeWs,
            (Size { .. } | ExtValueToken | ExtName { started: true }, b'\r') => SizeLf,
            (SizeWs, b' ' | b'\t') => SizeWs,
            (SizeWs | ExtAfterName | ExtAfterValue, b';') => ExtName { started: false },
            (ExtName { started: false }, b' ' | b'\t') => ExtName { started: false },
            (ExtName { .. }, _) if is_tchar(b) => ExtName { started: true },
            (ExtName { started: true }, b' ' | b'\t') => ExtAfterName,
            (ExtName { started: true }, b';') => ExtName { started: false },
            (ExtName { started: true } | ExtAfterName, b'=') => ExtValueStart,
            (ExtAfterName, b' ' | b'\t') => ExtAfterName,
            (ExtValueStart, b' ' | b'\t') => ExtValueStart,
            (ExtValueStart, b'"') => ExtQuoted,
            (ExtValueStart | ExtValueToken, _) if is_tchar(b) => ExtValueToken,
            (ExtValueToken, b' ' | b'\t') => ExtAfterValue,
            (ExtValueToken, b';') => ExtName { started: false },
            (ExtQuoted, b'"') => ExtQuoteEnd,
            (ExtQuoteEnd, b' ' | b'\t') => ExtAfterValue,
            (ExtQuoteEnd, b';') => ExtName { started: false },
            (ExtQuoteEnd, b'\r') => SizeLf,
            (ExtQuoted, b'\\') => ExtQuotedEscape,
            (ExtQuoted, _) if is_qdtext(b) => ExtQuoted,
            (ExtQuotedEscape, _) if b == b'\t' || b == b' ' || b >= 0x21 && b != 0x7f => ExtQuoted,
            (ExtAfterValue, b' ' | b'\t') => ExtAfterValue,
            (SizeLf, b'\n') => {
                self.line = 0;
                if self.size == 0 {
                    TrailerStart
                } else {
                    if self.size > (self.max_body - self.decoded) as u64 {
                        return Err(Chunked::TooLarge);
                    }
                    let left = self.size;
                    self.size = 0;
                    Data { left }
                }
            }
            (DataCr, b'\r') => DataLf,
            (DataLf, b'\n') => Size { digits: 0 },
            (TrailerStart, b'\r') => EndLf,
            (TrailerStart | TrailerName, _) if is_tchar(b) => TrailerName,
            (TrailerName, b':') => TrailerValue,
            (TrailerValue, b'\r') => TrailerLf,
            (TrailerValue, _) if b == b'\t' || b == b' ' || b >= 0x21 && b != 0x7f => TrailerValue,
            (TrailerLf, b'\n') => TrailerStart,
            (EndLf, b'\n') => Done,
            _ => return Err(Chunked::Bad),
        };
        Ok(())
    }
}

/// `tchar` (RFC 9110 5.6.2): the characters of a token.
pub(crate) fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// `qdtext` (RFC 9110 5.6.4): what a quoted string holds unescaped.
fn is_qdtext(b: u8) -> bool {
    b == b'\t'
        || b == b' '
        || b == 0x21
        || (0x23..=0x5b).contains(&b)
        || (0x5d..=0x7e).contains(&b)
        || b >= 0x80
}

/// Decodes a whole chunked body from `input` in one go (for the tests below): the body and the
/// bytes consumed, or the refusal.
#[cfg(test)]
fn decode(input: &[u8], max_body: usize, max_trailers: usize) -> Result<(Vec<u8>, usize), Chunked> {
    let mut buf = input.to_vec();
    let mut decoder = Decoder::new(max_body, usize::MAX, max_trailers);
    match decoder.feed(&mut buf) {
        Chunked::Complete { body_len, consumed } => {
            buf.truncate(body_len);
            Ok((buf, consumed))
        }
        other => Err(other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(input: &[u8]) -> Result<(Vec<u8>, usize), Chunked> {
        decode(input, 1024, 1024)
    }

    fn refused(input: &[u8]) -> Chunked {
        match run(input) {
            Err(e) => e,
            Ok(ok) => panic!("{:?} accepted: {ok:?}", String::from_utf8_lossy(input)),
        }
    }

    #[test]
    fn decodes_chunks_extensions_and_trailers() {
        let input: &[u8] =
            b"5;ext=1\r\nhello\r\n6 ; a = \"q\\\"x\" ;b\r\n world\r\n0\r\nX-T: 1\r\n\r\nNEXT";
        let (body, consumed) = run(input).unwrap();
        assert_eq!(body, b"hello world");
        assert_eq!(&input[consumed..], b"NEXT");
    }

    #[test]
    fn refuses_bad_framing() {
        for bad in [
            &b"zz\r\n"[..],
            b"-1\r\n",
            b"\r\n",
            b" 5\r\n",
            b"5 \r\n",
            b"5\t\r\n",
            b"11111111111111111\r\n",
            b"10000000000000000\r\n",
            b"5\nhello",
            b"5\r\nhelloXX0\r\n\r\n",
            b"5;\r\nhello\r\n",
            b"5;a=\r\nhello\r\n",
            b"5;a b\r\nhello\r\n",
            b"5;a=\"x\r\nhello\r\n",
            b"5;a=b \r\nhello\r\n",
            b"5;@\r\nhello\r\n",
            b"0\r\nX T: 1\r\n\r\n",
            b"0\r\n: 1\r\n\r\n",
            b"0\r\nX-T: \x001\r\n\r\n",
            b"0\r\nX-T 1\r\n\r\n",
            b"0\r\n\n",
            b"0\r\n\r\r",
        ] {
            assert_eq!(
                refused(bad),
                Chunked::Bad,
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn limits_the_decoded_size_and_the_framing() {
        assert_eq!(refused(b"401\r\n"), Chunked::TooLarge);
        assert_eq!(refused(b"ffffffffffffffff\r\n"), Chunked::TooLarge);
        assert!(
            run(b"00000000000000000005\r\nhello\r\n0\r\n\r\n").is_ok(),
            "leading zeros"
        );
        let mut buf = b"1\r\na\r\n1\r\nb\r\n0\r\n\r\n".to_vec();
        assert_eq!(
            Decoder::new(1024, 8, 1024).feed(&mut buf),
            Chunked::TooLarge
        );
        let mut buf = b"1\r\na\r\n1\r\nb\r\n0\r\n\r\n".to_vec();
        assert!(matches!(
            Decoder::new(1024, 16, 1024).feed(&mut buf),
            Chunked::Complete { body_len: 2, .. }
        ));
        let mut long_line = b"1;".to_vec();
        long_line.extend(std::iter::repeat_n(b'a', MAX_SIZE_LINE));
        assert_eq!(refused(&long_line), Chunked::Bad);
    }

    #[test]
    fn incomplete_at_every_prefix() {
        let full = b"5\r\nhello\r\n0\r\n\r\n";
        for cut in 0..full.len() {
            assert!(
                matches!(run(&full[..cut]), Err(Chunked::Incomplete { .. })),
                "cut at {cut}"
            );
        }
    }

    /// Feeding a body split at every point, dropping what the decoder says it no longer needs,
    /// gives the same body as feeding it whole.
    #[test]
    fn split_feeding_matches_whole() {
        let full: &[u8] =
            b"3;x=\"a b\"\r\nabc\r\n10\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n0\r\nT: v\r\n\r\n";
        let (whole, _) = run(full).unwrap();
        for cut in 0..full.len() {
            let mut decoder = Decoder::new(1024, 1024, 1024);
            let mut buf = full[..cut].to_vec();
            let body_len = match decoder.feed(&mut buf) {
                Chunked::Incomplete { body_len } => body_len,
                other => panic!("cut {cut}: {other:?}"),
            };
            buf.truncate(body_len);
            buf.extend_from_slice(&full[cut..]);
            match decoder.feed(&mut buf) {
                Chunked::Complete { body_len, .. } => assert_eq!(&buf[..body_len], &whole[..]),
                other => panic!("cut {cut}: {other:?}"),
            }
        }
    }
}
