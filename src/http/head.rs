//! Parsing and validating a request head: the request line and header fields, with the framing
//! rules of RFC 9112 that keep one request from being read as another (request smuggling).
//!
//! Pure functions over bytes: no I/O, no allocation. `httparse` does the tokenizing (and already
//! rejects obs-fold, whitespace before the colon and control characters); this module adds the
//! semantic checks: Content-Length and Transfer-Encoding, Host, Connection, Expect.

use super::Limits;

/// How the body of a request is framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFraming {
    None,
    Length(u64),
    Chunked,
}

/// What the connection loop needs to know about a parsed head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeadInfo {
    /// Length of the head in bytes, through the blank line.
    pub len: usize,
    pub framing: BodyFraming,
    /// HTTP/1.1 (true) or HTTP/1.0 (false).
    pub http11: bool,
    /// Whether the connection may stay open after this request.
    pub keep_alive: bool,
    pub expect_continue: bool,
}

/// Why a head was not accepted. Each maps to one status code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeadError {
    /// More bytes are needed (not an error: read on).
    Incomplete,
    /// 431: the head is longer than the limit, or has too many fields.
    TooLarge,
    /// 400, with a short reason for the response body.
    Bad(&'static str),
    /// 501: a transfer coding this server does not implement.
    NotImplemented,
}

/// Parses the head at the start of `buf` into `headers`, checking it against `limits`.
pub fn parse_head<'h, 'b>(
    buf: &'b [u8],
    headers: &'h mut [httparse::Header<'b>],
    limits: &Limits,
) -> Result<(HeadInfo, httparse::Request<'h, 'b>), HeadError> {
    let mut req = httparse::Request::new(headers);
    let len = match req.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => {
            return Err(if buf.len() > limits.max_head_bytes {
                HeadError::TooLarge
            } else {
                HeadError::Incomplete
            })
        }
        Err(httparse::Error::TooManyHeaders) => return Err(HeadError::TooLarge),
        Err(httparse::Error::Version) => return Err(HeadError::Bad("Unsupported HTTP version")),
        Err(_) => return Err(HeadError::Bad("Malformed request")),
    };
    if len > limits.max_head_bytes {
        return Err(HeadError::TooLarge);
    }
    let info = check_fields(&req, len)?;
    Ok((info, req))
}

fn check_fields(req: &httparse::Request<'_, '_>, len: usize) -> Result<HeadInfo, HeadError> {
    let http11 = req.version == Some(1);
    let mut content_length: Option<u64> = None;
    let mut transfer_encoding = false;
    let mut chunked_last = false;
    let mut hosts = 0;
    let mut close = false;
    let mut keep_alive_token = false;
    let mut expect_continue = false;

    for h in req.headers.iter() {
        let name = h.name;
        if name.eq_ignore_ascii_case("content-length") {
            let n = parse_content_length(h.value)?;
            match content_length {
                Some(prev) if prev != n => {
                    return Err(HeadError::Bad("Conflicting Content-Length"))
                }
                _ => content_length = Some(n),
            }
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            // Each coding applies in order; only a final `chunked` is framing we can honour.
            let mut codings = 0;
            for coding in split_list(h.value) {
                codings += 1;
                if transfer_encoding && chunked_last {
                    // `chunked` must be the last coding and appear once.
                    return Err(HeadError::Bad("chunked must be the final transfer coding"));
                }
                transfer_encoding = true;
                chunked_last = coding.eq_ignore_ascii_case(b"chunked");
                if !chunked_last {
                    return Err(HeadError::NotImplemented);
                }
            }
            // An empty value, or a list of nothing but commas: the field is there, but no
            // coding says how the body is framed.
            if codings == 0 {
                return Err(HeadError::Bad("Empty Transfer-Encoding"));
            }
        } else if name.eq_ignore_ascii_case("host") {
            hosts += 1;
        } else if name.eq_ignore_ascii_case("connection") {
            for token in split_list(h.value) {
                if token.eq_ignore_ascii_case(b"close") {
                    close = true;
                } else if token.eq_ignore_ascii_case(b"keep-alive") {
                    keep_alive_token = true;
                }
            }
        } else if name.eq_ignore_ascii_case("expect") {
            if trim(h.value).eq_ignore_ascii_case(b"100-continue") {
                expect_continue = true;
            } else {
                return Err(HeadError::Bad("Unsupported expectation"));
            }
        }
    }

    if http11 && hosts != 1 {
        return Err(HeadError::Bad(if hosts == 0 {
            "Missing Host header"
        } else {
            "Repeated Host header"
        }));
    }
    if hosts > 1 {
        return Err(HeadError::Bad("Repeated Host header"));
    }
    let framing = if transfer_encoding {
        if !http11 {
            return Err(HeadError::Bad("Transfer-Encoding on HTTP/1.0"));
        }
        if content_length.is_some() {
            return Err(HeadError::Bad(
                "Content-Length together with Transfer-Encoding",
            ));
        }
        BodyFraming::Chunked
    } else {
        match content_length {
            None | Some(0) => BodyFraming::None,
            Some(n) => BodyFraming::Length(n),
        }
    };
    let keep_alive = if http11 {
        !close
    } else {
        keep_alive_token && !close
    };
    Ok(HeadInfo {
        len,
        framing,
        http11,
        keep_alive,
        expect_continue: expect_continue && http11,
    })
}

/// A Content-Length value: one or more ASCII digits and nothing else (no sign, no list, no
/// whitespace inside), fitting in 64 bits.
fn parse_content_length(value: &[u8]) -> Result<u64, HeadError> {
    let value = trim(value);
    if value.is_empty() || value.len() > 20 || !value.iter().all(u8::is_ascii_digit) {
        return Err(HeadError::Bad("Invalid Content-Length"));
    }
    let mut n: u64 = 0;
    for d in value {
        n = n
            .checked_mul(10)
            .and_then(|n| n.checked_add(u64::from(d - b'0')))
            .ok_or(HeadError::Bad("Invalid Content-Length"))?;
    }
    Ok(n)
}

fn trim(mut v: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = v {
        v = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = v {
        v = rest;
    }
    v
}

/// The non-empty elements of a comma-separated header list, trimmed.
fn split_list(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value
        .split(|b| *b == b',')
        .map(trim)
        .filter(|t| !t.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(raw: &[u8]) -> Result<HeadInfo, HeadError> {
        let mut headers = [httparse::EMPTY_HEADER; 100];
        parse_head(raw, &mut headers, &Limits::default()).map(|(info, _)| info)
    }

    #[test]
    fn content_length_must_be_plain_decimal() {
        for bad in [
            "+5",
            "-1",
            "xyz",
            "1000,1000",
            "5 5",
            "",
            "18446744073709551616",
            "0x10",
        ] {
            let raw = format!("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: {bad}\r\n\r\n");
            assert_eq!(
                parse(raw.as_bytes()),
                Err(HeadError::Bad("Invalid Content-Length")),
                "Content-Length {bad:?} must be refused"
            );
        }
        let ok =
            parse(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 18446744073709551615\r\n\r\n");
        assert_eq!(ok.unwrap().framing, BodyFraming::Length(u64::MAX));
    }

    #[test]
    fn keep_alive_defaults_follow_the_version() {
        assert!(
            parse(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
                .unwrap()
                .keep_alive
        );
        assert!(
            !parse(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
                .unwrap()
                .keep_alive
        );
        assert!(!parse(b"GET / HTTP/1.0\r\n\r\n").unwrap().keep_alive);
        assert!(
            parse(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
                .unwrap()
                .keep_alive
        );
    }

    #[test]
    fn incomplete_until_the_blank_line() {
        assert_eq!(
            parse(b"GET / HTTP/1.1\r\nHost: a\r\n"),
            Err(HeadError::Incomplete)
        );
    }
}
