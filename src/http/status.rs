//! Response status codes: one type that owns the number, its reason phrase and whether a
//! response with it may carry content, so no bare `400` or reason string is scattered around.

use std::fmt;

/// An HTTP status code (RFC 9110 section 15).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Status(u16);

impl Status {
    pub const CONTINUE: Status = Status(100);
    pub const OK: Status = Status(200);
    pub const CREATED: Status = Status(201);
    pub const NO_CONTENT: Status = Status(204);
    pub const NOT_MODIFIED: Status = Status(304);
    pub const BAD_REQUEST: Status = Status(400);
    pub const UNAUTHORIZED: Status = Status(401);
    pub const FORBIDDEN: Status = Status(403);
    pub const NOT_FOUND: Status = Status(404);
    pub const METHOD_NOT_ALLOWED: Status = Status(405);
    pub const REQUEST_TIMEOUT: Status = Status(408);
    pub const CONTENT_TOO_LARGE: Status = Status(413);
    pub const EXPECTATION_FAILED: Status = Status(417);
    pub const UNPROCESSABLE_CONTENT: Status = Status(422);
    pub const TOO_MANY_REQUESTS: Status = Status(429);
    pub const HEADER_FIELDS_TOO_LARGE: Status = Status(431);
    pub const INTERNAL_SERVER_ERROR: Status = Status(500);
    pub const NOT_IMPLEMENTED: Status = Status(501);
    pub const SERVICE_UNAVAILABLE: Status = Status(503);
    pub const HTTP_VERSION_NOT_SUPPORTED: Status = Status(505);

    /// The statuses this crate names, for metrics that count by status without a map: see
    /// [`Status::ordinal`].
    pub const NAMED: [Status; 20] = [
        Status::CONTINUE,
        Status::OK,
        Status::CREATED,
        Status::NO_CONTENT,
        Status::NOT_MODIFIED,
        Status::BAD_REQUEST,
        Status::UNAUTHORIZED,
        Status::FORBIDDEN,
        Status::NOT_FOUND,
        Status::METHOD_NOT_ALLOWED,
        Status::REQUEST_TIMEOUT,
        Status::CONTENT_TOO_LARGE,
        Status::EXPECTATION_FAILED,
        Status::UNPROCESSABLE_CONTENT,
        Status::TOO_MANY_REQUESTS,
        Status::HEADER_FIELDS_TOO_LARGE,
        Status::INTERNAL_SERVER_ERROR,
        Status::NOT_IMPLEMENTED,
        Status::SERVICE_UNAVAILABLE,
        Status::HTTP_VERSION_NOT_SUPPORTED,
    ];

    /// This status's place in [`Status::NAMED`], or `NAMED.len()` for any other.
    pub fn ordinal(self) -> usize {
        Status::NAMED
            .iter()
            .position(|s| *s == self)
            .unwrap_or(Status::NAMED.len())
    }

    /// The label for an [`Status::ordinal`]: the code, or `other`.
    pub fn ordinal_label(ordinal: usize) -> &'static str {
        const LABELS: [&str; 21] = [
            "100", "200", "201", "204", "304", "400", "401", "403", "404", "405", "408", "413",
            "417", "422", "429", "431", "500", "501", "503", "505", "other",
        ];
        LABELS[ordinal.min(LABELS.len() - 1)]
    }

    /// A status from its number; `None` outside 100..=999 (three digits, RFC 9110 15).
    pub const fn from_u16(code: u16) -> Option<Status> {
        if code >= 100 && code <= 999 {
            Some(Status(code))
        } else {
            None
        }
    }

    /// The code's three ASCII digits, as the status line carries them.
    pub const fn digits(self) -> [u8; 3] {
        let c = self.0;
        [
            b'0' + (c / 100) as u8,
            b'0' + (c / 10 % 10) as u8,
            b'0' + (c % 10) as u8,
        ]
    }

    pub const fn as_u16(self) -> u16 {
        self.0
    }

    /// The reason phrase sent on the status line (RFC 9110's names).
    pub fn reason(self) -> &'static str {
        match self.0 {
            100 => "Continue",
            200 => "OK",
            201 => "Created",
            204 => "No Content",
            304 => "Not Modified",
            400 => "Bad Request",
            401 => "Unauthorized",
            403 => "Forbidden",
            404 => "Not Found",
            405 => "Method Not Allowed",
            408 => "Request Timeout",
            413 => "Content Too Large",
            417 => "Expectation Failed",
            422 => "Unprocessable Content",
            429 => "Too Many Requests",
            431 => "Request Header Fields Too Large",
            500 => "Internal Server Error",
            501 => "Not Implemented",
            503 => "Service Unavailable",
            505 => "HTTP Version Not Supported",
            _ => "Unknown",
        }
    }

    /// Whether a response with this status may carry content: 1xx, 204 and 304 never do
    /// (RFC 9110 6.4.1), and 1xx and 204 carry no Content-Length either (RFC 9110 8.6).
    pub const fn allows_content(self) -> bool {
        !(self.0 < 200 || self.0 == 204 || self.0 == 304)
    }

    pub const fn is_server_error(self) -> bool {
        self.0 >= 500
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.0, self.reason())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_without_content() {
        for s in [Status::CONTINUE, Status::NO_CONTENT, Status::NOT_MODIFIED] {
            assert!(!s.allows_content(), "{s}");
        }
        for s in [Status::OK, Status::BAD_REQUEST, Status::SERVICE_UNAVAILABLE] {
            assert!(s.allows_content(), "{s}");
        }
        assert_eq!(Status::from_u16(99), None);
        assert_eq!(Status::from_u16(1000), None);
        assert_eq!(
            Status::HTTP_VERSION_NOT_SUPPORTED.to_string(),
            "505 HTTP Version Not Supported"
        );
    }

    #[test]
    fn ordinal_labels_name_their_status() {
        for (i, s) in Status::NAMED.iter().enumerate() {
            assert_eq!(s.ordinal(), i);
            assert_eq!(Status::ordinal_label(i), s.as_u16().to_string());
        }
        let teapot = Status::from_u16(418).unwrap();
        assert_eq!(Status::ordinal_label(teapot.ordinal()), "other");
    }
}
