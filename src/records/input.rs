//! Reading what a client sent: path ids, integers, the `email` parameter and the JSON body,
//! each with the limits that keep hostile input cheap (JSON nesting is checked without
//! recursion before a recursive parser sees it).

use std::borrow::Cow;

use serde::Deserialize;

use crate::http::Request;

use super::failure::{Failure, INVALID_PAYLOAD, NO_EMAIL};
use super::query::{param, MalformedQuery};

/// `text` is at most this many characters (the column is varchar(100)).
pub const MAX_TEXT_CHARS: usize = 100;
/// `/users` pages hold at most this many rows, whatever `limit` asks (as in the original).
pub const MAX_PAGE: i64 = 10;

/// The body of `POST /user`.
#[derive(Deserialize)]
pub(super) struct TextPayload<'a> {
    #[serde(borrow)]
    pub text: Cow<'a, str>,
}

/// The body of `POST /user`: a JSON object (serde would also take `["text"]` as the struct),
/// nested at most [`MAX_JSON_DEPTH`] deep, with a string `text`. Not inlined: the parser's
/// state is gone from the stack before the handler waits for the database, the deepest point
/// of a connection's stack (`make test-stack`).
#[inline(never)]
pub(super) fn text_payload(body: &[u8]) -> Result<TextPayload<'_>, Failure> {
    if body.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{')
        || !nesting_within(body, MAX_JSON_DEPTH)
    {
        return Err(Failure::bad_request(INVALID_PAYLOAD));
    }
    sonic_rs::from_slice(body).map_err(|_| Failure::bad_request(INVALID_PAYLOAD))
}

/// `email` from the query string: missing, empty or undecodable is "No email provided".
pub(super) fn required_email<'q>(req: &Request<'q>) -> Result<Cow<'q, str>, Failure> {
    match param(req.query(), "email") {
        Ok(Some(e)) if !e.is_empty() => Ok(e),
        Ok(_) => Err(Failure::bad_request(NO_EMAIL)),
        Err(MalformedQuery) => Err(Failure::bad_request(INVALID_PAYLOAD)),
    }
}

/// A path id: an optional sign and decimal digits, of any length (as Python's `int`). `value`
/// saturates outside i64, which is outside int4 anyway; `Display` shows the canonical digits.
pub struct PathId<'a> {
    pub value: i64,
    negative: bool,
    /// The digits without leading zeros, borrowed from the path: no allocation per lookup.
    digits: &'a str,
}

impl std::fmt::Display for PathId<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.negative && self.digits != "0" {
            f.write_str("-")?;
        }
        f.write_str(self.digits)
    }
}

pub fn parse_id(raw: &str) -> Option<PathId<'_>> {
    let (negative, digits) = match raw.as_bytes().first()? {
        b'-' => (true, &raw[1..]),
        b'+' => (false, &raw[1..]),
        _ => (false, raw),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let trimmed = digits.trim_start_matches('0');
    let digits = if trimmed.is_empty() { "0" } else { trimmed };
    let value = digits
        .parse::<i64>()
        .map(|v| if negative { -v } else { v })
        .unwrap_or(if negative { i64::MIN } else { i64::MAX });
    Some(PathId {
        value,
        negative,
        digits,
    })
}

/// Deepest JSON nesting accepted in a request body; the payload needs 1.
pub const MAX_JSON_DEPTH: usize = 32;

/// Whether the arrays and objects in `json` nest at most `max` deep (strings skipped, escapes
/// honoured). A linear scan with no recursion; malformed JSON is left to the parser.
pub fn nesting_within(json: &[u8], max: usize) -> bool {
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    for &b in json {
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > max {
                    return false;
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    true
}

pub(super) fn parse_i64(s: &str) -> Option<i64> {
    let s = s.trim();
    let digits = s.strip_prefix(['-', '+']).unwrap_or(s);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_ids() {
        let cases: &[(&str, Option<(i64, &str)>)] = &[
            ("1", Some((1, "1"))),
            ("007", Some((7, "7"))),
            ("+5", Some((5, "5"))),
            ("-3", Some((-3, "-3"))),
            ("2147483648", Some((2147483648, "2147483648"))),
            (
                "99999999999999999999999",
                Some((i64::MAX, "99999999999999999999999")),
            ),
            ("abc", None),
            ("1.5", None),
            ("", None),
            ("-", None),
            (" 1", None),
        ];
        for (raw, want) in cases {
            let got = parse_id(raw).map(|p| (p.value, p.to_string()));
            let want = want.map(|(v, s)| (v, s.to_string()));
            assert_eq!(got, want, "{raw:?}");
        }
    }

    #[test]
    fn nesting_depth() {
        assert!(nesting_within(br#"{"a":[[1]]}"#, 3));
        assert!(!nesting_within(br#"{"a":[[1]]}"#, 2));
        assert!(
            nesting_within(br#"{"a":"[[[[[[\"[[["}"#, 1),
            "brackets in strings do not count"
        );
        let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        assert!(!nesting_within(deep.as_bytes(), MAX_JSON_DEPTH));
    }

    #[test]
    fn payloads() {
        let ok: TextPayload =
            sonic_rs::from_slice(br#"{"text":"hello","extra":[1,{"a":2}]}"#).unwrap();
        assert_eq!(ok.text, "hello");
        for bad in [
            &br#"{"text":null}"#[..],
            br#"{"text":1}"#,
            br#"{}"#,
            b"[]",
            b"",
            b"{",
            br#""text""#,
        ] {
            assert!(
                sonic_rs::from_slice::<TextPayload>(bad).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }
}
