//! Query-string parsing: `application/x-www-form-urlencoded` as the original (Starlette) read
//! it: `+` is a space, `%XX` is a byte, a repeated parameter takes its last value, unknown
//! parameters are ignored. A decoded value that is not UTF-8, or that holds a NUL character
//! (which no PostgreSQL text value can hold), is refused.

use crate::ascii::hex_digit;
use std::borrow::Cow;

/// A query string whose decoded value is not UTF-8 or holds a NUL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MalformedQuery;

/// The last value of parameter `name` in `query`, decoded. `Ok(None)` if absent.
pub fn param<'q>(
    query: Option<&'q str>,
    name: &str,
) -> Result<Option<Cow<'q, str>>, MalformedQuery> {
    let Some(query) = query else {
        return Ok(None);
    };
    let mut found = None;
    for pair in query.split('&') {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        if decode(key)? == name {
            found = Some(value);
        }
    }
    found.map(decode).transpose()
}

/// Percent-decodes one component. Malformed escapes are kept literally, as Python's
/// `unquote_plus` does.
pub fn decode(s: &str) -> Result<Cow<'_, str>, MalformedQuery> {
    if !s.bytes().any(|b| b == b'%' || b == b'+') {
        return Ok(Cow::Borrowed(s));
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len()
                && hex_digit(bytes[i + 1]).is_some()
                && hex_digit(bytes[i + 2]).is_some() =>
            {
                out.push(
                    hex_digit(bytes[i + 1]).unwrap_or(0) << 4
                        | hex_digit(bytes[i + 2]).unwrap_or(0),
                );
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    if out.contains(&0) {
        return Err(MalformedQuery);
    }
    String::from_utf8(out)
        .map(Cow::Owned)
        .map_err(|_| MalformedQuery)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_and_takes_the_last_value() {
        let cases: &[(Option<&str>, &str, Option<&str>)] = &[
            (Some("email=a%40b.com"), "email", Some("a@b.com")),
            (Some("email=a+b%2Bc"), "email", Some("a b+c")),
            (Some("email=x&email=y"), "email", Some("y")),
            (Some("other=1"), "email", None),
            (Some("email"), "email", Some("")),
            (Some("email="), "email", Some("")),
            (Some("e%6dail=z"), "email", Some("z")),
            (Some("email=100%"), "email", Some("100%")),
            (Some("email=%zz"), "email", Some("%zz")),
            (Some("email=%C3%A9"), "email", Some("é")),
            (None, "email", None),
        ];
        for (query, name, want) in cases {
            let got = param(*query, name).unwrap();
            assert_eq!(got.as_deref(), *want, "{query:?}");
        }
    }

    #[test]
    fn refuses_invalid_utf8() {
        assert!(param(Some("email=%FF"), "email").is_err());
    }

    #[test]
    fn refuses_nul() {
        assert!(param(Some("email=a%00b"), "email").is_err());
        assert!(param(Some("after=%00"), "after").is_err());
        assert_eq!(
            param(Some("email=a%01b"), "email").unwrap().as_deref(),
            Some("a\u{1}b")
        );
    }
}
