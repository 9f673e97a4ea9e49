//! Parsing and validating a request head: the request line and header fields, with the framing
//! rules of RFC 9112 that keep one request from being read as another (request smuggling).
//!
//! Pure functions over bytes: no I/O, no allocation. `httparse` does the tokenizing (and already
//! rejects obs-fold, whitespace before the colon and control characters); this module adds the
//! semantic checks: Content-Length and Transfer-Encoding, Host, Connection, Expect, the
//! request-target's form and the protocol version.

use std::mem::MaybeUninit;

use super::{Limits, Status};

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

/// The detail of a head that `httparse` cannot parse at all (not HTTP/1.x framing).
pub(crate) const MALFORMED: &str = "Malformed request";

/// Why a head was not accepted. Each maps to one status code: see [`HeadError::status`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeadError {
    /// More bytes are needed (not an error: read on).
    Incomplete,
    /// The head is longer than the limit.
    TooLarge,
    /// The head has more fields than the header slots it was parsed into. A connection whose
    /// slots are fewer than the limit grows them to the limit and parses again; at the limit
    /// it is answered like [`HeadError::TooLarge`].
    TooManyFields,
    /// Malformed or ambiguous, with a short reason for the response body.
    Bad(&'static str),
    /// A transfer coding this server does not implement.
    NotImplemented,
    /// A protocol major version other than 1.
    VersionNotSupported,
    /// An `Expect` other than `100-continue`.
    ExpectationFailed,
}

impl HeadError {
    /// The status a refusal is answered with (none for `Incomplete`, which is not one).
    pub fn status(self) -> Status {
        match self {
            HeadError::Incomplete | HeadError::Bad(_) => Status::BAD_REQUEST,
            HeadError::TooLarge | HeadError::TooManyFields => Status::HEADER_FIELDS_TOO_LARGE,
            HeadError::NotImplemented => Status::NOT_IMPLEMENTED,
            HeadError::VersionNotSupported => Status::HTTP_VERSION_NOT_SUPPORTED,
            HeadError::ExpectationFailed => Status::EXPECTATION_FAILED,
        }
    }

    /// The `detail` of the refusal's JSON body.
    pub fn detail(self) -> &'static str {
        match self {
            HeadError::Incomplete => "Incomplete request",
            HeadError::TooLarge | HeadError::TooManyFields => "Request header too large",
            HeadError::Bad(detail) => detail,
            HeadError::NotImplemented => "Transfer coding not implemented",
            HeadError::VersionNotSupported => "HTTP version not supported",
            HeadError::ExpectationFailed => "Unsupported expectation",
        }
    }
}

/// A parsed, checked head, borrowing the connection's buffer.
#[derive(Debug)]
pub struct Head<'h, 'b> {
    pub info: HeadInfo,
    pub method: &'b str,
    /// The target in origin form (`/path?query`): an absolute-form target
    /// (`http://host/path`) has its scheme and authority removed (RFC 9112 3.2.2).
    pub target: &'b str,
    pub headers: &'h [httparse::Header<'b>],
}

/// Parses the head at the start of `buf` into `headers` (slots that need no initialising),
/// checking it against `limits`.
pub fn parse_head<'h, 'b>(
    buf: &'b [u8],
    headers: &'h mut [MaybeUninit<httparse::Header<'b>>],
    limits: &Limits,
) -> Result<Head<'h, 'b>, HeadError> {
    let mut req = httparse::Request::new(&mut []);
    let len = match req.parse_with_uninit_headers(buf, headers) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => {
            return Err(if buf.len() > limits.max_head_bytes {
                HeadError::TooLarge
            } else {
                HeadError::Incomplete
            })
        }
        Err(httparse::Error::TooManyHeaders) => return Err(HeadError::TooManyFields),
        Err(httparse::Error::Version) => return Err(version_error(buf)),
        Err(_) => return Err(HeadError::Bad(MALFORMED)),
    };
    if len > limits.max_head_bytes {
        return Err(HeadError::TooLarge);
    }
    let info = check_fields(&req, len)?;
    let target = origin_target(req.path.unwrap_or("/"))?;
    Ok(Head {
        info,
        method: req.method.unwrap_or("GET"),
        target,
        headers: req.headers,
    })
}

/// What an unparseable version means: `HTTP/x.y` with a major version other than 1 is a
/// version this server does not speak (505, RFC 9110 15.6.6); anything else is malformed.
fn version_error(buf: &[u8]) -> HeadError {
    let line_end = buf
        .iter()
        .position(|&b| b == b'\r' || b == b'\n')
        .unwrap_or(buf.len());
    let line = &buf[..line_end];
    let version = match line.iter().rposition(|&b| b == b' ') {
        Some(i) => &line[i + 1..],
        None => return HeadError::Bad(MALFORMED),
    };
    match version {
        [b'H', b'T', b'T', b'P', b'/', major, b'.', minor]
            if major.is_ascii_digit() && minor.is_ascii_digit() && *major != b'1' =>
        {
            HeadError::VersionNotSupported
        }
        _ => HeadError::Bad("Unsupported HTTP version"),
    }
}

/// The request target in origin form. Origin form (`/...`) and asterisk form (`*`) are
/// returned as they are; absolute form (`http://authority/path?query`, RFC 9112 3.2.2) has its
/// authority checked and removed, an empty path becoming `/`.
fn origin_target(target: &str) -> Result<&str, HeadError> {
    if target.starts_with('/') || target == "*" {
        return Ok(target);
    }
    let rest = strip_prefix_ignore_case(target, "http://")
        .or_else(|| strip_prefix_ignore_case(target, "https://"))
        .ok_or(HeadError::Bad("Invalid request target"))?;
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(authority_end);
    // userinfo is deprecated in http(s) URIs (RFC 9110 4.2.4) and the authority must name a host.
    if authority.is_empty() || authority.contains('@') || !is_valid_host(authority.as_bytes()) {
        return Err(HeadError::Bad("Invalid request target"));
    }
    Ok(match path.as_bytes().first() {
        Some(b'/') => path,
        // `http://h?q` means path `/` with the query: answered as `/`, the query dropped
        // rather than copied (the target borrows the connection's buffer).
        _ => "/",
    })
}

fn strip_prefix_ignore_case<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &s[prefix.len()..])
}

/// Whether `value` is `uri-host [ ":" port ]` (RFC 9112 3.2, RFC 3986 3.2.2): an IP literal
/// in brackets, or a reg-name (unreserved, percent-encoded and sub-delims characters, which
/// covers IPv4 addresses), then an optional port of digits. An empty value is allowed (a
/// target without an authority).
pub fn is_valid_host(value: &[u8]) -> bool {
    // The usual Host (`name`, `name:port`, an IPv4 address) in one pass: reg-name characters
    // without percent-encoding, then at most a colon and digits. Anything else, valid or not,
    // takes the general path below.
    let name_end = value
        .iter()
        .position(|&b| !is_reg_name_char(b))
        .unwrap_or(value.len());
    match &value[name_end..] {
        [] => return true,
        [b':', port @ ..] if port.iter().all(u8::is_ascii_digit) => return true,
        _ => {}
    }
    is_valid_host_general(value)
}

/// [`is_valid_host`] for any value: IP literals and percent-encoded names included.
fn is_valid_host_general(value: &[u8]) -> bool {
    let (host, port) = if let Some(rest) = value.strip_prefix(b"[") {
        let Some(close) = rest.iter().position(|&b| b == b']') else {
            return false;
        };
        let literal = &rest[..close];
        let ok = !literal.is_empty()
            && literal
                .iter()
                .all(|&b| b.is_ascii_hexdigit() || b == b':' || b == b'.' || is_reg_name_char(b));
        if !ok {
            return false;
        }
        match &rest[close + 1..] {
            [] => return true,
            [b':', port @ ..] => (&b""[..], port),
            _ => return false,
        }
    } else {
        match value.iter().position(|&b| b == b':') {
            Some(i) => (&value[..i], &value[i + 1..]),
            None => (value, &b""[..]),
        }
    };
    valid_reg_name(host) && port.iter().all(u8::is_ascii_digit)
}

/// `unreserved / sub-delims` (RFC 3986), as a table: the Host of every request is checked
/// against it, so one lookup per byte.
const REG_NAME: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        table[b] = c.is_ascii_alphanumeric()
            || matches!(
                c,
                b'-' | b'.'
                    | b'_'
                    | b'~'
                    | b'!'
                    | b'$'
                    | b'&'
                    | b'\''
                    | b'('
                    | b')'
                    | b'*'
                    | b'+'
                    | b','
                    | b';'
                    | b'='
            );
        b += 1;
    }
    table
};

fn is_reg_name_char(b: u8) -> bool {
    REG_NAME[usize::from(b)]
}

fn valid_reg_name(host: &[u8]) -> bool {
    if host.iter().all(|&b| is_reg_name_char(b)) {
        return true;
    }
    let mut i = 0;
    while i < host.len() {
        match host[i] {
            b'%' => {
                let hex = host.get(i + 1..i + 3);
                if !hex.is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit)) {
                    return false;
                }
                i += 3;
            }
            b if is_reg_name_char(b) => i += 1,
            _ => return false,
        }
    }
    true
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
            if !is_valid_host(trim(h.value)) {
                return Err(HeadError::Bad("Invalid Host header"));
            }
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
                return Err(HeadError::ExpectationFailed);
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

/// Decimal digits in the largest `u64`.
const MAX_LENGTH_DIGITS: usize = 20;

/// A Content-Length value: one or more ASCII digits and nothing else (no sign, no list, no
/// whitespace inside), fitting in 64 bits.
fn parse_content_length(value: &[u8]) -> Result<u64, HeadError> {
    let value = trim(value);
    if value.is_empty() || value.len() > MAX_LENGTH_DIGITS || !value.iter().all(u8::is_ascii_digit)
    {
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

/// The value without leading and trailing spaces and tabs (optional whitespace, RFC 9110 5.6.3).
pub(crate) fn trim(mut v: &[u8]) -> &[u8] {
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
        let mut headers = [MaybeUninit::uninit(); 100];
        parse_head(raw, &mut headers, &Limits::default()).map(|head| head.info)
    }

    fn target(raw: &[u8]) -> Result<String, HeadError> {
        let mut headers = [MaybeUninit::uninit(); 100];
        parse_head(raw, &mut headers, &Limits::default()).map(|head| head.target.to_string())
    }

    #[test]
    fn absolute_form_targets_are_served_by_their_path() {
        for (line, want) in [
            ("GET http://x/livez HTTP/1.1", "/livez"),
            ("GET HTTP://x:8000/user/1?a=b HTTP/1.1", "/user/1?a=b"),
            ("GET https://[::1]:8000 HTTP/1.1", "/"),
            ("GET /plain HTTP/1.1", "/plain"),
        ] {
            let raw = format!("{line}\r\nHost: a\r\n\r\n");
            assert_eq!(target(raw.as_bytes()).as_deref(), Ok(want), "{line}");
        }
        for line in [
            "GET ftp://x/ HTTP/1.1",
            "GET http:///x HTTP/1.1",
            "GET http://u@x/ HTTP/1.1",
            "GET x/y HTTP/1.1",
        ] {
            let raw = format!("{line}\r\nHost: a\r\n\r\n");
            assert_eq!(
                target(raw.as_bytes()),
                Err(HeadError::Bad("Invalid request target")),
                "{line}"
            );
        }
    }

    proptest::proptest! {
        /// The one-pass path of `is_valid_host` is a shortcut: it agrees with the general one
        /// on anything built from the characters that matter.
        #[test]
        fn host_fast_path_agrees_with_the_general_one(
            value in "[a-z0-9.:%\\[\\]@/ -]{0,12}"
        ) {
            proptest::prop_assert_eq!(
                is_valid_host(value.as_bytes()),
                is_valid_host_general(value.as_bytes()),
                "{:?}", value
            );
        }
    }

    #[test]
    fn host_must_be_a_uri_host_and_port() {
        for good in [
            "a",
            "a.b:80",
            "127.0.0.1:8000",
            "[::1]",
            "[::1]:80",
            "",
            "x%41y",
            "x%41y:80",
            "a-b_c~",
            "a:",
            ":80",
        ] {
            assert!(is_valid_host(good.as_bytes()), "{good:?}");
        }
        for bad in [
            "a b/c", "a/b", "a:b", "[::1", "[]", "[::1]x", "a%4", "a@b", "a\"b", "a:80:90",
            "a:8%30", "a:80 ", "a:-1",
        ] {
            assert!(!is_valid_host(bad.as_bytes()), "{bad:?}");
        }
        let raw = b"GET / HTTP/1.1\r\nHost: a b/c\r\n\r\n";
        assert_eq!(parse(raw), Err(HeadError::Bad("Invalid Host header")));
    }

    #[test]
    fn other_major_versions_get_505() {
        for (line, want) in [
            ("GET / HTTP/2.0", HeadError::VersionNotSupported),
            ("GET / HTTP/3.0", HeadError::VersionNotSupported),
            ("GET / HTTP/0.9", HeadError::VersionNotSupported),
            ("GET / HTTP/1.x", HeadError::Bad("Unsupported HTTP version")),
            ("GET / FTP/1.0", HeadError::Bad("Unsupported HTTP version")),
        ] {
            let raw = format!("{line}\r\nHost: a\r\n\r\n");
            assert_eq!(parse(raw.as_bytes()), Err(want), "{line}");
        }
        assert_eq!(HeadError::VersionNotSupported.status().as_u16(), 505);
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
