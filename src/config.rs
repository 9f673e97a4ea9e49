//! Every setting of the service: its environment variable, default and validation, in one place.
//!
//! Values come from the process environment, then from a `.env` file in the working directory
//! (the environment wins). A missing or malformed value stops the process at start with a message
//! that names the variable and what was wrong; nothing falls back silently.

use std::fmt;
use std::time::Duration;

use crate::http::{HttpConfig, Limits, Timeouts};
use crate::pg::ConnectParams;

/// One configuration problem: which variable, and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub variable: &'static str,
    pub problem: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "configuration error: {}: {}",
            self.variable, self.problem
        )
    }
}

impl std::error::Error for ConfigError {}

/// Settings for connecting to PostgreSQL (the `migrate` and `seed` commands need only these).
#[derive(Debug, Clone)]
pub struct DatabaseConfig {
    pub host: String,
    pub port: u16,
    pub name: String,
    pub user: String,
    pub password: String,
    pub connect_timeout: Duration,
    pub statement_timeout: Duration,
    pub query_timeout: Duration,
    pub max_in_flight: usize,
    pub listing_connections: usize,
}

impl DatabaseConfig {
    pub fn connect_params(&self) -> ConnectParams {
        let mut p = ConnectParams::new(
            &self.host,
            self.port,
            &self.user,
            Some(&self.password),
            &self.name,
        );
        p.connect_timeout = self.connect_timeout;
        p.statement_timeout = self.statement_timeout;
        p.max_in_flight = self.max_in_flight;
        p
    }
}

/// Everything `serve` needs.
#[derive(Debug, Clone)]
pub struct Config {
    pub database: DatabaseConfig,
    pub host: String,
    pub port: u16,
    pub workers: usize,
    pub http: HttpConfig,
    pub static_dir: String,
    /// Coroutine stack size in bytes.
    pub stack_size: usize,
}

/// One row of the configuration table: the variable, its default (`None`: required) and what
/// it sets. The README's table and `.env.example` list the same rows.
pub const VARIABLES: &[(&str, Option<&str>, &str)] = &[
    ("POSTGRES_DB_HOST", None, "PostgreSQL host name or address"),
    ("POSTGRES_DB_PORT", Some("5432"), "PostgreSQL port"),
    ("POSTGRES_DB_NAME", None, "database name"),
    ("POSTGRES_DB_USER", None, "user name"),
    (
        "POSTGRES_DB_PASSWORD",
        None,
        "password (may be empty for trust authentication)",
    ),
    ("SERVER_HOST", Some("127.0.0.1"), "address to listen on"),
    ("SERVER_PORT", Some("8000"), "port to listen on"),
    (
        "WORKERS",
        Some("number of cores"),
        "worker threads, and pipelined PostgreSQL connections",
    ),
    (
        "PG_LISTING_CONNECTIONS",
        Some("2"),
        "extra connections for listings (slow queries)",
    ),
    (
        "PG_CONNECT_TIMEOUT_MS",
        Some("5000"),
        "TCP connect plus startup and authentication",
    ),
    (
        "PG_STATEMENT_TIMEOUT_MS",
        Some("5000"),
        "server-side statement_timeout",
    ),
    (
        "PG_QUERY_TIMEOUT_MS",
        Some("6000"),
        "client-side deadline on every query",
    ),
    (
        "PG_MAX_IN_FLIGHT",
        Some("1024"),
        "queries in flight per connection before callers wait",
    ),
    (
        "HTTP_MAX_HEAD_BYTES",
        Some("65536"),
        "request line plus headers (431 beyond)",
    ),
    (
        "HTTP_MAX_HEADERS",
        Some("100"),
        "header fields per request (431 beyond)",
    ),
    (
        "HTTP_MAX_BODY_BYTES",
        Some("1048576"),
        "request body (413 beyond)",
    ),
    (
        "HTTP_MAX_CONNECTIONS",
        Some("10000"),
        "open connections (503 beyond)",
    ),
    (
        "HTTP_MAX_PIPELINED",
        Some("64"),
        "pipelined requests answered per batch",
    ),
    (
        "HTTP_MAX_OUTPUT_BYTES",
        Some("262144"),
        "unsent output before reading stops",
    ),
    (
        "HTTP_MAX_BUFFERED_BYTES",
        Some("268435456"),
        "request heads and bodies buffered across all connections (503 beyond)",
    ),
    (
        "HTTP_MAX_LINGER_BYTES",
        Some("16777216"),
        "input discarded while closing with unread input",
    ),
    (
        "HTTP_HEADER_TIMEOUT_MS",
        Some("10000"),
        "time to send a request head (408 after)",
    ),
    (
        "HTTP_BODY_TIMEOUT_MS",
        Some("30000"),
        "time to send a request body (408 after)",
    ),
    (
        "HTTP_IDLE_TIMEOUT_MS",
        Some("60000"),
        "idle keep-alive connection",
    ),
    (
        "HTTP_WRITE_TIMEOUT_MS",
        Some("30000"),
        "sending one batch of answers to a client (cut after)",
    ),
    (
        "HTTP_LINGER_TIME_MS",
        Some("30000"),
        "lingering close, in all",
    ),
    (
        "HTTP_LINGER_TIMEOUT_MS",
        Some("5000"),
        "lingering close, longest wait for more input",
    ),
    (
        "SHUTDOWN_TIMEOUT_MS",
        Some("10000"),
        "graceful shutdown deadline",
    ),
    (
        "STATIC_DIR",
        Some("static"),
        "directory served at / and /static/",
    ),
    ("STACK_SIZE_KIB", Some("64"), "coroutine stack size"),
];

/// Reads variables through `get` (the environment, or a map in tests).
pub struct Source<F: Fn(&str) -> Option<String>> {
    get: F,
}

impl<F: Fn(&str) -> Option<String>> Source<F> {
    pub fn new(get: F) -> Self {
        Source { get }
    }

    fn raw(&self, name: &'static str) -> Option<String> {
        (self.get)(name)
    }

    fn required(&self, name: &'static str) -> Result<String, ConfigError> {
        match self.raw(name) {
            Some(v) if !v.trim().is_empty() => Ok(v.trim().to_string()),
            Some(_) => Err(err(name, "is empty".into())),
            None => Err(err(name, "is not set".into())),
        }
    }

    fn string_or(&self, name: &'static str, default: &str) -> String {
        match self.raw(name) {
            Some(v) if !v.trim().is_empty() => v.trim().to_string(),
            _ => default.to_string(),
        }
    }

    fn number<T: std::str::FromStr + PartialOrd + fmt::Display + Copy>(
        &self,
        name: &'static str,
        default: T,
        min: T,
        max: T,
    ) -> Result<T, ConfigError> {
        let Some(raw) = self.raw(name) else {
            return Ok(default);
        };
        let raw = raw.trim();
        if raw.is_empty() {
            return Ok(default);
        }
        let value: T = raw.parse().map_err(|_| {
            // A number that does not fit the type (a port of 70000, a negative count) is out
            // of range, not "not a number".
            if raw.parse::<i128>().is_ok() {
                err(name, format!("{raw} is out of range ({min} to {max})"))
            } else {
                err(name, format!("{raw:?} is not a whole number"))
            }
        })?;
        if value < min || value > max {
            return Err(err(
                name,
                format!("{value} is out of range ({min} to {max})"),
            ));
        }
        Ok(value)
    }

    fn millis(&self, name: &'static str, default: u64, min: u64) -> Result<Duration, ConfigError> {
        self.number(name, default, min, 24 * 3600 * 1000)
            .map(Duration::from_millis)
    }

    pub fn database(&self) -> Result<DatabaseConfig, ConfigError> {
        let statement_timeout = self.millis("PG_STATEMENT_TIMEOUT_MS", 5000, 0)?;
        let query_timeout = self.millis("PG_QUERY_TIMEOUT_MS", 6000, 1)?;
        Ok(DatabaseConfig {
            host: self.required("POSTGRES_DB_HOST")?,
            port: self.number("POSTGRES_DB_PORT", 5432u16, 1, u16::MAX)?,
            name: self.required("POSTGRES_DB_NAME")?,
            user: self.required("POSTGRES_DB_USER")?,
            password: self
                .raw("POSTGRES_DB_PASSWORD")
                .ok_or_else(|| err("POSTGRES_DB_PASSWORD", "is not set".into()))?,
            connect_timeout: self.millis("PG_CONNECT_TIMEOUT_MS", 5000, 1)?,
            statement_timeout,
            query_timeout,
            max_in_flight: self.number("PG_MAX_IN_FLIGHT", 1024usize, 1, 1 << 20)?,
            listing_connections: self.number("PG_LISTING_CONNECTIONS", 2usize, 1, 64)?,
        })
    }

    pub fn config(&self) -> Result<Config, ConfigError> {
        let cores = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1);
        let limits = Limits {
            max_head_bytes: self.number("HTTP_MAX_HEAD_BYTES", 65536usize, 1024, 16 << 20)?,
            max_headers: self.number("HTTP_MAX_HEADERS", 100usize, 1, 10_000)?,
            max_body_bytes: self.number("HTTP_MAX_BODY_BYTES", 1 << 20, 0, 1 << 30)?,
            max_connections: self.number("HTTP_MAX_CONNECTIONS", 10_000usize, 1, 1 << 24)?,
            max_pipelined: self.number("HTTP_MAX_PIPELINED", 64usize, 1, 1 << 16)?,
            max_output_bytes: self.number("HTTP_MAX_OUTPUT_BYTES", 256 << 10, 1024, 1 << 30)?,
            max_buffered_bytes: self.number("HTTP_MAX_BUFFERED_BYTES", 256 << 20, 0, 1 << 40)?,
            max_linger_bytes: self.number("HTTP_MAX_LINGER_BYTES", 16 << 20, 0, 1 << 40)?,
        };
        let timeouts = Timeouts {
            header: self.millis("HTTP_HEADER_TIMEOUT_MS", 10_000, 1)?,
            body: self.millis("HTTP_BODY_TIMEOUT_MS", 30_000, 1)?,
            idle: self.millis("HTTP_IDLE_TIMEOUT_MS", 60_000, 1)?,
            write: self.millis("HTTP_WRITE_TIMEOUT_MS", 30_000, 1)?,
            linger: self.millis("HTTP_LINGER_TIME_MS", 30_000, 0)?,
            linger_read: self.millis("HTTP_LINGER_TIMEOUT_MS", 5_000, 1)?,
            shutdown: self.millis("SHUTDOWN_TIMEOUT_MS", 10_000, 0)?,
        };
        let host = self.string_or("SERVER_HOST", "127.0.0.1");
        if host.parse::<std::net::IpAddr>().is_err() && host != "localhost" {
            return Err(err("SERVER_HOST", format!("{host:?} is not an IP address")));
        }
        Ok(Config {
            database: self.database()?,
            host,
            port: self.number("SERVER_PORT", 8000u16, 0, u16::MAX)?,
            workers: self.number("WORKERS", cores, 1, 1024)?,
            http: HttpConfig { limits, timeouts },
            static_dir: self.string_or("STATIC_DIR", "static"),
            stack_size: self.number("STACK_SIZE_KIB", 64usize, 16, 8192)? * 1024,
        })
    }
}

fn err(variable: &'static str, problem: String) -> ConfigError {
    ConfigError { variable, problem }
}

/// Loads `.env` (if present) without overriding the environment, then reads through the
/// environment.
pub fn from_env() -> Source<impl Fn(&str) -> Option<String>> {
    let _ = dotenvy::dotenv();
    Source::new(|name: &str| std::env::var(name).ok())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn source(pairs: &[(&str, &str)]) -> Source<impl Fn(&str) -> Option<String>> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Source::new(move |name: &str| map.get(name).cloned())
    }

    const BASE: &[(&str, &str)] = &[
        ("POSTGRES_DB_HOST", "db"),
        ("POSTGRES_DB_NAME", "records"),
        ("POSTGRES_DB_USER", "u"),
        ("POSTGRES_DB_PASSWORD", "p"),
    ];

    #[test]
    fn defaults_apply_when_only_the_database_is_given() {
        let c = source(BASE).config().unwrap();
        assert_eq!(c.database.port, 5432);
        assert_eq!(c.host, "127.0.0.1");
        assert_eq!(c.port, 8000);
        assert!(c.workers >= 1);
        assert_eq!(c.http.limits.max_headers, 100);
        assert_eq!(c.http.timeouts.header, Duration::from_secs(10));
    }

    #[test]
    fn bad_values_name_their_variable() {
        let cases: &[(&str, &str, &str)] = &[
            ("POSTGRES_DB_PORT", "abc", "is not a whole number"),
            (
                "POSTGRES_DB_PORT",
                "70000",
                "70000 is out of range (1 to 65535)",
            ),
            ("POSTGRES_DB_PORT", "0", "out of range"),
            ("SERVER_PORT", "-1", "-1 is out of range (0 to 65535)"),
            ("WORKERS", "0", "out of range"),
            ("HTTP_HEADER_TIMEOUT_MS", "10s", "is not a whole number"),
            ("SERVER_HOST", "not an ip", "is not an IP address"),
            ("POSTGRES_DB_HOST", "  ", "is empty"),
        ];
        for (var, value, problem) in cases {
            let mut pairs = BASE.to_vec();
            pairs.retain(|(k, _)| k != var);
            pairs.push((var, value));
            let e = source(&pairs).config().unwrap_err();
            assert_eq!(e.variable, *var, "{var}={value}");
            assert!(e.problem.contains(problem), "{var}={value}: {}", e.problem);
        }
    }

    #[test]
    fn env_example_lists_every_variable_with_its_default() {
        let example = include_str!("../.env.example");
        for (name, default, _) in VARIABLES {
            let listed = match default {
                Some(d) if *d != "number of cores" => example.contains(&format!("\n{name}={d}\n")),
                _ => example.contains(&format!("{name}=")),
            };
            assert!(
                listed,
                "{name} is missing from .env.example or has another default"
            );
        }
    }

    #[test]
    fn missing_required_variables_are_named() {
        for var in [
            "POSTGRES_DB_HOST",
            "POSTGRES_DB_NAME",
            "POSTGRES_DB_USER",
            "POSTGRES_DB_PASSWORD",
        ] {
            let pairs: Vec<_> = BASE.iter().copied().filter(|(k, _)| *k != var).collect();
            let e = source(&pairs).config().unwrap_err();
            assert_eq!((e.variable, e.problem.as_str()), (var, "is not set"));
        }
    }
}
