//! As TechEmpower's `src/util.rs`: the error type and the database URL (here from the
//! environment instead of a constant), plus what this benchmark needs and TechEmpower's does
//! not: the listen address, the worker count, the io_uring switch, and the path id parsed as
//! records-service parses it.

pub type Error = Box<dyn std::error::Error + Send + Sync + 'static>;

pub type HandleResult<T> = Result<T, Error>;

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("{name} is not set"))
}

/// `postgres://USER:PASSWORD@HOST:PORT/NAME` from the POSTGRES_DB_* variables.
pub fn db_url() -> String {
    let port = std::env::var("POSTGRES_DB_PORT").unwrap_or_else(|_| "5432".into());
    format!(
        "postgres://{}:{}@{}:{}/{}",
        env("POSTGRES_DB_USER"),
        env("POSTGRES_DB_PASSWORD"),
        env("POSTGRES_DB_HOST"),
        port,
        env("POSTGRES_DB_NAME")
    )
}

/// What the server reads from the environment at start.
pub struct Settings {
    pub addr: String,
    pub workers: usize,
    /// io_uring for the HTTP socket: XITCA_IO_URING, on unless `0`, `off`, `false` or `no`
    /// (and always off in a build without the `io-uring` feature).
    pub io_uring: bool,
}

impl Settings {
    pub fn from_env() -> Self {
        let host = std::env::var("HOST").unwrap_or_else(|_| "127.0.0.1".into());
        let port = std::env::var("PORT").unwrap_or_else(|_| "8004".into());
        let workers = std::env::var("WORKERS")
            .ok()
            .map(|w| match w.parse() {
                Ok(n) if n > 0 => n,
                _ => panic!("WORKERS must be a positive integer (got {w:?})"),
            })
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
        let io_uring = match std::env::var("XITCA_IO_URING") {
            Err(_) => true,
            Ok(v) => match v.to_ascii_lowercase().as_str() {
                "" | "1" | "on" | "true" | "yes" => true,
                "0" | "off" | "false" | "no" => false,
                _ => panic!("XITCA_IO_URING must be 1 or 0 (got {v:?})"),
            },
        };
        Self {
            addr: format!("{host}:{port}"),
            workers,
            io_uring: io_uring && cfg!(feature = "io-uring"),
        }
    }
}

/// A path id as records-service reads it: an optional sign and decimal digits of any length.
/// `value` is `None` outside the 32-bit range (never found), `shown` the canonical digits the
/// 404 detail names (no leading zeros, no `+`, no `-0`).
pub struct PathId<'a> {
    pub value: Option<i32>,
    negative: bool,
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
        .ok()
        .map(|v| if negative { -v } else { v })
        .and_then(|v| i32::try_from(v).ok());
    Some(PathId {
        value,
        negative,
        digits,
    })
}
