//! Every setting of the service: its environment variable, default and validation, in one place.
//!
//! Values come from the process environment, then from a `.env` file in the working directory
//! (the environment wins). A missing or malformed value stops the process at start with a message
//! that names the variable and what was wrong; nothing falls back silently.

use std::fmt;
use std::time::Duration;

use crate::http::proxy::ProxyProtocol;
use crate::http::{HttpConfig, Limits, NextRead, Timeouts};
use crate::limit::{RateLimitConfig, TrustedProxies};
use crate::pg::{self, ConnectParams};

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
///
/// `Debug` never shows the password (`ConnectParams` redacts it).
#[derive(Debug, Clone)]
pub struct DatabaseConfig {
    /// Where and how to connect, resolved: `DATABASE_URL` or the `POSTGRES_DB_*` variables,
    /// then the `PG*` variables libpq reads, then the `PG_*` timeouts and limits.
    pub params: ConnectParams,
    /// Which variables said where to connect, for messages that tell what to check.
    pub source: DatabaseSource,
    pub query_timeout: Duration,
    pub listing_connections: usize,
}

/// Where the connection settings came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DatabaseSource {
    /// `DATABASE_URL`.
    Url,
    /// `POSTGRES_DB_HOST`, `POSTGRES_DB_PORT`, `POSTGRES_DB_NAME`, `POSTGRES_DB_USER` and
    /// `POSTGRES_DB_PASSWORD`.
    Variables,
}

impl DatabaseConfig {
    /// The settings as configured: what reads use (`target_session_attrs` says where they go).
    pub fn connect_params(&self) -> ConnectParams {
        self.params.clone()
    }

    /// The settings for writes (and `migrate`, `seed`): with several hosts, always the one
    /// whose session is writable, whatever `target_session_attrs` says for reads.
    pub fn write_params(&self) -> ConnectParams {
        let mut params = self.params.clone();
        if !params.more_hosts.is_empty() {
            params.target_session_attrs = pg::TargetSessionAttrs::ReadWrite;
        }
        params
    }

    /// Every server, in the order tried: `host:port`, an IPv6 address in brackets, joined by
    /// `, `.
    pub fn servers(&self) -> String {
        std::iter::once((&self.params.host, self.params.port))
            .chain(self.params.more_hosts.iter().map(|(h, p)| (h, *p)))
            .map(|(host, port)| {
                if host.contains(':') {
                    format!("[{host}]:{port}")
                } else {
                    format!("{host}:{port}")
                }
            })
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// What to check when the server refuses the credentials, has no such database, or cannot
    /// be reached: the variables (or parts of `DATABASE_URL`) that set them.
    pub fn hint(&self, about: Hint) -> &'static str {
        match (self.source, about) {
            (DatabaseSource::Url, Hint::Credentials) => {
                "the user name and password in DATABASE_URL"
            }
            (DatabaseSource::Url, Hint::Database) => "the database name in DATABASE_URL",
            (DatabaseSource::Url, Hint::Address) => "the host and port in DATABASE_URL",
            (DatabaseSource::Variables, Hint::Credentials) => {
                "POSTGRES_DB_USER and POSTGRES_DB_PASSWORD"
            }
            (DatabaseSource::Variables, Hint::Database) => "POSTGRES_DB_NAME",
            (DatabaseSource::Variables, Hint::Address) => "POSTGRES_DB_HOST and POSTGRES_DB_PORT",
        }
    }
}

/// What a [`DatabaseConfig::hint`] is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hint {
    Credentials,
    Database,
    Address,
}

/// The variables `DATABASE_URL` replaces (setting both is an error).
pub const POSTGRES_DB_VARIABLES: [&str; 5] = [
    "POSTGRES_DB_HOST",
    "POSTGRES_DB_PORT",
    "POSTGRES_DB_NAME",
    "POSTGRES_DB_USER",
    "POSTGRES_DB_PASSWORD",
];

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
    /// After SIGTERM: how long to keep serving with `/readyz` answering 503 before the listener
    /// closes, so that a load balancer's health check takes the replica out first.
    pub shutdown_delay: Duration,
    /// Whether requests and queries are counted for `/metrics` (`METRICS`).
    pub metrics: bool,
    /// A separate listener for `/metrics`, `/livez` and `/readyz` (`METRICS_ADDR`).
    pub metrics_addr: Option<(String, u16)>,
    pub log: LogConfig,
    /// `RATE_LIMIT_PER_CLIENT`, `RATE_LIMIT_MAX_CLIENTS`.
    pub rate_limit: RateLimitConfig,
    /// `TRUSTED_PROXIES`: who may name the client (also `http.proxy_protocol`).
    pub trusted_proxies: TrustedProxies,
    /// Access control (`AUTH_*`), keys read.
    pub auth: crate::auth::Settings,
}

mod variables;

use variables::setting;
pub use variables::{Setting, VARIABLES};

/// How the service logs; see [`crate::logging`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogConfig {
    pub json: bool,
    pub level: crate::logging::Level,
    pub access: crate::logging::AccessLog,
}

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

    /// A whole-number setting, with the default and bounds of its row in [`VARIABLES`].
    fn number<T: TryFrom<u64>>(&self, name: &'static str) -> Result<T, ConfigError> {
        let default = setting(name)
            .default
            .and_then(|d| d.parse::<u64>().ok())
            .unwrap_or_else(|| panic!("{name}: a whole-number setting needs a numeric default"));
        self.number_or(name, default)
    }

    /// As [`Source::number`], with a default the table cannot hold (the number of cores).
    fn number_or<T: TryFrom<u64>>(
        &self,
        name: &'static str,
        default: u64,
    ) -> Result<T, ConfigError> {
        let (min, max) = setting(name)
            .bounds
            .unwrap_or_else(|| panic!("{name}: a whole-number setting needs bounds"));
        let out_of_range =
            |v: &dyn fmt::Display| err(name, format!("{v} is out of range ({min} to {max})"));
        let value = match self.raw(name) {
            Some(raw) if !raw.trim().is_empty() => {
                let raw = raw.trim();
                raw.parse::<u64>().map_err(|_| {
                    // A number that does not fit (a negative count) is out of range, not "not
                    // a number".
                    if raw.parse::<i128>().is_ok() {
                        out_of_range(&raw)
                    } else {
                        err(name, format!("{raw:?} is not a whole number"))
                    }
                })?
            }
            _ => default,
        };
        if value < min || value > max {
            return Err(out_of_range(&value));
        }
        T::try_from(value).map_err(|_| out_of_range(&value))
    }

    /// A duration setting in milliseconds (a whole-number row of [`VARIABLES`]).
    fn millis(&self, name: &'static str) -> Result<Duration, ConfigError> {
        self.number::<u64>(name).map(Duration::from_millis)
    }

    /// The variable if set and not blank, trimmed.
    fn given(&self, name: &'static str) -> Option<String> {
        self.raw(name)
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
    }

    /// A variable that `DATABASE_URL` makes unnecessary.
    fn required_without_url(&self, name: &'static str) -> Result<String, ConfigError> {
        self.required(name).map_err(|mut e| {
            e.problem.push_str(" (set it, or DATABASE_URL instead)");
            e
        })
    }

    /// From `DATABASE_URL` or the `POSTGRES_DB_*` variables (not both), then libpq's `PG*`
    /// variables (a `DATABASE_URL` parameter wins over its variable), then the `PG_*` ones (a
    /// `connect_timeout` in `DATABASE_URL` wins over `PG_CONNECT_TIMEOUT_MS`).
    pub fn database(&self) -> Result<DatabaseConfig, ConfigError> {
        let url = self.given("DATABASE_URL");
        if url.is_some() {
            let both: Vec<&str> = POSTGRES_DB_VARIABLES
                .into_iter()
                .filter(|name| self.given(name).is_some())
                .collect();
            if !both.is_empty() {
                return Err(err(
                    "DATABASE_URL",
                    format!(
                        "is set together with {}: set one or the other",
                        both.join(", ")
                    ),
                ));
            }
        }
        let statement_timeout = self.millis("PG_STATEMENT_TIMEOUT_MS")?;
        let query_timeout = self.millis("PG_QUERY_TIMEOUT_MS")?;
        // The server's cancellation (SQLSTATE 57014) must be what ends a slow statement: it
        // frees the statement's place in the connection's pipeline, and it is what bounds the
        // wait for a write already sent (whose real outcome is waited for past the client's
        // deadline). A client deadline that came first would answer 503 for a read the server
        // still runs, with the queries behind it still waiting. With the statement timeout off
        // (0), the server's own setting applies, unknown here.
        if !statement_timeout.is_zero() && query_timeout <= statement_timeout {
            let default = if self.raw("PG_QUERY_TIMEOUT_MS").is_none() {
                " (its default)"
            } else {
                ""
            };
            return Err(err(
                "PG_QUERY_TIMEOUT_MS",
                format!(
                    "{} ms{default} is not longer than PG_STATEMENT_TIMEOUT_MS ({} ms): the \
                     client's deadline must come after the server's statement timeout, so that \
                     a slow statement is cancelled by the server rather than abandoned while it \
                     still runs (raise PG_QUERY_TIMEOUT_MS, or lower PG_STATEMENT_TIMEOUT_MS)",
                    query_timeout.as_millis(),
                    statement_timeout.as_millis()
                ),
            ));
        }
        let (mut params, from_url, source) = match &url {
            Some(url) => {
                let info = pg::parse_url(url).map_err(|problem| err("DATABASE_URL", problem))?;
                let params = ConnectParams::new("", pg::DEFAULT_PORT, "", None, "");
                (params, info, DatabaseSource::Url)
            }
            None => {
                let host = self.required_without_url("POSTGRES_DB_HOST")?;
                let port = self.number("POSTGRES_DB_PORT")?;
                let name = self.required_without_url("POSTGRES_DB_NAME")?;
                let user = self.required_without_url("POSTGRES_DB_USER")?;
                let password = self.raw("POSTGRES_DB_PASSWORD").ok_or_else(|| {
                    err(
                        "POSTGRES_DB_PASSWORD",
                        "is not set (set it, or DATABASE_URL instead)".into(),
                    )
                })?;
                let params = ConnectParams::new(&host, port, &user, Some(&password), &name);
                (params, pg::ConnInfo::default(), DatabaseSource::Variables)
            }
        };
        params.connect_timeout = self.millis("PG_CONNECT_TIMEOUT_MS")?;
        params.statement_timeout = statement_timeout;
        params.max_in_flight = self.number("PG_MAX_IN_FLIGHT")?;
        params.max_message_bytes = self.number("PG_MAX_MESSAGE_BYTES")?;
        params.max_standby_lag = self.millis("PG_MAX_STANDBY_LAG_MS")?;
        params.statement_mode = match self.string_or("PG_STATEMENT_MODE", "auto").as_str() {
            "auto" => pg::StatementMode::Auto,
            "named" => pg::StatementMode::Named,
            "transaction" => pg::StatementMode::PerTransaction,
            other => {
                return Err(err(
                    "PG_STATEMENT_MODE",
                    format!("{other:?} is not one of auto, named, transaction"),
                ))
            }
        };

        let from_env = pg::parse_env(|name| self.raw(name)).map_err(|(v, p)| err(v, p))?;
        let merged = from_url.clone().or(from_env);
        merged.check().map_err(|(param, problem)| {
            let variable = if source == DatabaseSource::Url && from_url.sets(param) {
                "DATABASE_URL"
            } else {
                pg::env_variable_for(param).unwrap_or("DATABASE_URL")
            };
            err(variable, problem)
        })?;
        merged.apply_to(&mut params);

        Ok(DatabaseConfig {
            params,
            source,
            query_timeout,
            listing_connections: self.number("PG_LISTING_CONNECTIONS")?,
        })
    }

    /// `SERVER_HOST` and `SERVER_PORT` alone (what `healthcheck` needs: no database settings).
    pub fn listen_address(&self) -> Result<(String, u16), ConfigError> {
        let host = self.string_or("SERVER_HOST", "127.0.0.1");
        if host.parse::<std::net::IpAddr>().is_err() && host != "localhost" {
            return Err(err("SERVER_HOST", format!("{host:?} is not an IP address")));
        }
        Ok((host, self.number("SERVER_PORT")?))
    }

    pub fn config(&self) -> Result<Config, ConfigError> {
        let cores = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1);
        let limits = Limits {
            max_head_bytes: self.number("HTTP_MAX_HEAD_BYTES")?,
            max_headers: self.number("HTTP_MAX_HEADERS")?,
            max_body_bytes: self.number("HTTP_MAX_BODY_BYTES")?,
            max_connections: self.number("HTTP_MAX_CONNECTIONS")?,
            max_pipelined: self.number("HTTP_MAX_PIPELINED")?,
            max_output_bytes: self.number("HTTP_MAX_OUTPUT_BYTES")?,
            max_buffered_bytes: self.number("HTTP_MAX_BUFFERED_BYTES")?,
            max_linger_bytes: self.number("HTTP_MAX_LINGER_BYTES")?,
            send_buffer_bytes: self.number("HTTP_SEND_BUFFER_BYTES")?,
        };
        let timeouts = Timeouts {
            header: self.millis("HTTP_HEADER_TIMEOUT_MS")?,
            body: self.millis("HTTP_BODY_TIMEOUT_MS")?,
            idle: self.millis("HTTP_IDLE_TIMEOUT_MS")?,
            write: self.millis("HTTP_WRITE_TIMEOUT_MS")?,
            linger: self.millis("HTTP_LINGER_TIME_MS")?,
            linger_read: self.millis("HTTP_LINGER_TIMEOUT_MS")?,
            shutdown: self.millis("SHUTDOWN_TIMEOUT_MS")?,
        };
        let (host, port) = self.listen_address()?;
        let trusted_proxies =
            TrustedProxies::parse(&self.raw("TRUSTED_PROXIES").unwrap_or_default())
                .map_err(|problem| err("TRUSTED_PROXIES", problem))?;
        Ok(Config {
            database: self.database()?,
            host,
            port,
            workers: self.number_or("WORKERS", cores as u64)?,
            http: HttpConfig {
                limits,
                timeouts,
                next_read: NextRead::Adaptive,
                proxy_protocol: (!trusted_proxies.is_empty()).then(|| {
                    let trusted = trusted_proxies.clone();
                    ProxyProtocol::from(move |peer| trusted.contains(peer))
                }),
            },
            static_dir: self.string_or("STATIC_DIR", "static"),
            stack_size: self.number::<usize>("STACK_SIZE_KIB")? * 1024,
            shutdown_delay: self.millis("SHUTDOWN_DELAY_MS")?,
            metrics: self.switch("METRICS", true)?,
            metrics_addr: self.metrics_address()?,
            log: self.log()?,
            rate_limit: RateLimitConfig {
                per_client: self.number("RATE_LIMIT_PER_CLIENT")?,
                max_clients: self.number("RATE_LIMIT_MAX_CLIENTS")?,
            },
            trusted_proxies,
            auth: crate::auth::Settings::read(|n| self.raw(n), self.number("AUTH_LEEWAY_SECONDS")?)
                .map_err(|(v, p)| err(v, p))?,
        })
    }

    /// `on`/`off` (also `true`/`false`, `1`/`0`).
    fn switch(&self, name: &'static str, default: bool) -> Result<bool, ConfigError> {
        match self.raw(name).as_deref().map(str::trim) {
            None | Some("") => Ok(default),
            Some("on" | "true" | "1") => Ok(true),
            Some("off" | "false" | "0") => Ok(false),
            Some(other) => Err(err(name, format!("{other:?} is not on or off"))),
        }
    }

    fn metrics_address(&self) -> Result<Option<(String, u16)>, ConfigError> {
        let Some(raw) = self.raw("METRICS_ADDR").filter(|v| !v.trim().is_empty()) else {
            return Ok(None);
        };
        let bad = || {
            err(
                "METRICS_ADDR",
                format!("{raw:?} is not HOST:PORT (an IP address, or [v6]:PORT)"),
            )
        };
        let (host, port) = raw.trim().rsplit_once(':').ok_or_else(bad)?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.parse::<std::net::IpAddr>().is_err() && host != "localhost" {
            return Err(bad());
        }
        let port = port.parse::<u16>().map_err(|_| bad())?;
        Ok(Some((host.to_string(), port)))
    }

    /// `LOG_FORMAT`, `LOG_LEVEL` and `ACCESS_LOG`; read before anything else is, so that the
    /// rest is logged as configured.
    pub fn log(&self) -> Result<LogConfig, ConfigError> {
        use crate::logging::{AccessLog, Level};
        use std::io::IsTerminal;
        let json = match self.raw("LOG_FORMAT").as_deref().map(str::trim) {
            None | Some("") => !std::io::stderr().is_terminal(),
            Some("json") => true,
            Some("text") => false,
            Some(other) => return Err(err("LOG_FORMAT", format!("{other:?} is not json or text"))),
        };
        let level = match self.raw("LOG_LEVEL").as_deref().map(str::trim) {
            None | Some("") => Level::Info,
            Some(v) => Level::parse(v).ok_or_else(|| {
                err(
                    "LOG_LEVEL",
                    format!("{v:?} is not error, warn, info, debug or trace"),
                )
            })?,
        };
        let access = match self.raw("ACCESS_LOG").as_deref().map(str::trim) {
            None | Some("") | Some("errors") => AccessLog::Errors,
            Some("off") => AccessLog::Off,
            Some("all") => AccessLog::All,
            Some(other) => {
                return Err(err(
                    "ACCESS_LOG",
                    format!("{other:?} is not off, errors or all"),
                ))
            }
        };
        Ok(LogConfig {
            json,
            level,
            access,
        })
    }
}

fn err(variable: &'static str, problem: String) -> ConfigError {
    ConfigError { variable, problem }
}

/// Loads `.env` from the working directory (if there is one) without overriding the
/// environment, then reads through the environment. A `.env` that cannot be read or parsed is
/// an error naming the file and the line: a setting silently ignored is worse than none.
pub fn from_env() -> Result<Source<impl Fn(&str) -> Option<String>>, ConfigError> {
    load_dotenv(std::path::Path::new(".env"))?;
    Ok(Source::new(|name: &str| std::env::var(name).ok()))
}

fn load_dotenv(path: &std::path::Path) -> Result<(), ConfigError> {
    match dotenvy::from_path(path) {
        Ok(()) => Ok(()),
        Err(e) if e.not_found() => Ok(()),
        Err(dotenvy::Error::LineParse(fragment, _)) => {
            // dotenvy hands back the text it choked on: for an error in a value, the value
            // (a password, say) and, for an unterminated quote, the rest of the file. None of
            // it is shown; the line is found by where that text starts, and named by its
            // variable.
            let text = std::fs::read_to_string(path).unwrap_or_default();
            let at = text.find(fragment.as_str()).unwrap_or(0);
            let number = text[..at].matches('\n').count() + 1;
            let line = text.lines().nth(number - 1).unwrap_or("");
            let variable = line
                .split_once('=')
                .map(|(name, _)| name.trim().trim_start_matches("export ").trim())
                .filter(|name| {
                    !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
                })
                .map_or_else(String::new, |name| format!(" ({name})"));
            Err(err(
                ".env",
                format!(
                    "{} line {number}{variable} cannot be parsed (expected NAME=VALUE, with \
                     quotes around a value that holds spaces; a comment; or an empty line)",
                    path.display()
                ),
            ))
        }
        Err(e) => Err(err(".env", format!("cannot read {}: {e}", path.display()))),
    }
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
        assert_eq!(c.database.params.port, 5432);
        assert_eq!(c.database.source, DatabaseSource::Variables);
        assert_eq!(c.database.params.application_name, "records-service");
        assert_eq!(c.database.params.tls, pg::TlsSettings::default());
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
            ("RATE_LIMIT_PER_CLIENT", "-5", "out of range"),
            ("RATE_LIMIT_MAX_CLIENTS", "0", "out of range"),
            (
                "TRUSTED_PROXIES",
                "10.0.0.0/33",
                "\"10.0.0.0/33\": the prefix length",
            ),
            (
                "TRUSTED_PROXIES",
                "10.0.0.1/8",
                "bits set past its /8 prefix",
            ),
            (
                "TRUSTED_PROXIES",
                "proxy.internal",
                "is not an IP address or CIDR block",
            ),
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
    fn a_malformed_env_file_is_an_error_naming_the_file_and_line() {
        let dir = std::env::temp_dir().join(format!("records-dotenv-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(".env");
        std::fs::write(
            &path,
            "# settings\nRECORDS_TEST_OK=1\nTHIS LINE IS BROKEN\n",
        )
        .unwrap();
        let shown = load_dotenv(&path).unwrap_err().to_string();
        assert!(
            shown.contains(".env") && shown.contains("line 3"),
            "{shown}"
        );
        // A value that cannot be parsed is never shown (it may be a password), the variable
        // and line are; also when an unterminated quote swallows the lines after it.
        for (text, line, variable) in [
            (
                "A=1\nPOSTGRES_DB_PASSWORD=hunter2 x\n",
                "line 2",
                "(POSTGRES_DB_PASSWORD)",
            ),
            ("B=\"x\nPOSTGRES_DB_PASSWORD=hunter2\n", "line 1", "(B)"),
        ] {
            std::fs::write(&path, text).unwrap();
            let shown = load_dotenv(&path).unwrap_err().to_string();
            assert!(
                !shown.contains("hunter2"),
                "a value in the message: {shown}"
            );
            assert!(shown.contains(line) && shown.contains(variable), "{shown}");
        }
        assert!(
            load_dotenv(&dir.join("missing")).is_ok(),
            "no file: nothing to load"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// The table's defaults are the parser's: a configuration with every defaulted variable
    /// set to its table default equals one with none of them set. (A default changed in one
    /// place and not the other fails here.)
    #[test]
    fn the_table_defaults_are_the_defaults_the_parser_applies() {
        let required = [
            ("POSTGRES_DB_HOST", "db"),
            ("POSTGRES_DB_NAME", "records"),
            ("POSTGRES_DB_USER", "u"),
            ("POSTGRES_DB_PASSWORD", "p"),
        ];
        let implicit = format!("{:?}", source(&required).config().unwrap());
        let mut explicit: Vec<(&str, &str)> = required.to_vec();
        for Setting { name, default, .. } in VARIABLES {
            match default {
                Some("number of cores") | None => {}
                Some(d) if !required.iter().any(|(n, _)| n == name) => explicit.push((*name, *d)),
                Some(_) => {}
            }
        }
        let explicit = format!("{:?}", source(&explicit).config().unwrap());
        assert_eq!(implicit, explicit);
    }

    /// The README's configuration table lists every variable with the table's default.
    #[test]
    fn the_readme_lists_every_variable_with_its_default() {
        let readme = include_str!("../../README.md");
        for Setting { name, default, .. } in VARIABLES {
            let row = readme
                .lines()
                .find(|l| l.starts_with(&format!("| `{name}` |")))
                .unwrap_or_else(|| panic!("{name} has no row in the README's table"));
            if let Some(d) = default {
                let shown = row.split('|').nth(2).unwrap_or("").trim();
                assert!(
                    shown == format!("`{d}`") || shown == *d,
                    "{name}: README says {shown}, the table {d}"
                );
            }
        }
    }

    #[test]
    fn env_example_lists_every_variable_with_its_default() {
        let example = include_str!("../../.env.example");
        for Setting { name, default, .. } in VARIABLES {
            let listed = match default {
                Some(d) if *d != "number of cores" => example.contains(&format!("\n{name}={d}\n")),
                // No default: listed commented out (`# NAME=...`), or empty where required.
                _ => example.lines().any(|line| {
                    line.trim_start_matches("# ")
                        .starts_with(&format!("{name}="))
                }),
            };
            assert!(
                listed,
                "{name} is missing from .env.example or has another default"
            );
        }
        // Commented out, so that a copy of the file does not set it (empty would count as
        // unset, but a value would conflict with the POSTGRES_DB_* lines).
        assert!(!example.lines().any(|l| l.starts_with("DATABASE_URL=")));
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
            assert_eq!(
                (e.variable, e.problem.as_str()),
                (var, "is not set (set it, or DATABASE_URL instead)")
            );
        }
    }

    const URL: &str = "postgres://app:hunter2-secret@db1.example.com:6432,[2001:db8::1]/records\
                       ?sslmode=verify-full&sslrootcert=system&application_name=api";

    #[test]
    fn database_url_instead_of_the_variables() {
        let c = source(&[("DATABASE_URL", URL)]).config().unwrap();
        let db = &c.database;
        assert_eq!(db.source, DatabaseSource::Url);
        let p = &db.params;
        assert_eq!((p.host.as_str(), p.port), ("db1.example.com", 6432));
        assert_eq!(p.more_hosts, vec![("2001:db8::1".to_string(), 5432)]);
        assert_eq!(p.user, "app");
        assert_eq!(p.password.as_deref(), Some("hunter2-secret"));
        assert_eq!(p.dbname, "records");
        assert_eq!(p.tls.mode, pg::SslMode::VerifyFull);
        assert_eq!(p.tls.root_cert, Some(pg::RootCert::System));
        assert_eq!(p.application_name, "api");
        // The PG_* limits still apply.
        assert_eq!(p.connect_timeout, Duration::from_secs(5));
        assert_eq!(p.statement_timeout, Duration::from_secs(5));
        assert_eq!(p.max_in_flight, 1024);
        assert_eq!(db.query_timeout, Duration::from_secs(6));
        assert_eq!(db.servers(), "db1.example.com:6432, [2001:db8::1]:5432");
        assert_eq!(
            db.hint(Hint::Credentials),
            "the user name and password in DATABASE_URL"
        );
        assert_eq!(db.hint(Hint::Address), "the host and port in DATABASE_URL");
        assert_eq!(db.connect_params().dbname, "records");

        let c = source(&[("DATABASE_URL", "postgresql://u@h")])
            .config()
            .unwrap();
        assert_eq!(
            c.database.params.dbname, "u",
            "libpq's default: the user name"
        );
        assert_eq!(c.database.params.password, None);
        assert_eq!(c.database.params.application_name, "records-service");
        assert_eq!(c.database.params.tls.mode, pg::SslMode::Prefer);

        let c = source(BASE).config().unwrap();
        assert_eq!(c.database.servers(), "db:5432");
        assert_eq!(c.database.hint(Hint::Database), "POSTGRES_DB_NAME");
    }

    #[test]
    fn database_url_and_the_variables_together_are_refused() {
        let mut pairs = BASE.to_vec();
        pairs.push(("DATABASE_URL", URL));
        let e = source(&pairs).config().unwrap_err();
        assert_eq!(e.variable, "DATABASE_URL");
        assert_eq!(
            e.problem,
            "is set together with POSTGRES_DB_HOST, POSTGRES_DB_NAME, POSTGRES_DB_USER, \
             POSTGRES_DB_PASSWORD: set one or the other"
        );
        let e = source(&[("DATABASE_URL", URL), ("POSTGRES_DB_PORT", "5432")])
            .config()
            .unwrap_err();
        assert_eq!(
            e.problem,
            "is set together with POSTGRES_DB_PORT: set one or the other"
        );
        // Empty counts as unset, either way (a `.env` with `DATABASE_URL=` or `NAME=` lines).
        let mut pairs = BASE.to_vec();
        pairs.push(("DATABASE_URL", "  "));
        assert_eq!(
            source(&pairs).config().unwrap().database.source,
            DatabaseSource::Variables
        );
        let c = source(&[("DATABASE_URL", URL), ("POSTGRES_DB_HOST", "")])
            .config()
            .unwrap();
        assert_eq!(c.database.source, DatabaseSource::Url);
    }

    #[test]
    fn malformed_database_urls_name_the_variable() {
        for (url, problem) in [
            ("mysql://u@h/d", "must start with postgres://"),
            (
                "postgres://u@h:99999/d",
                "the port of host \"h\" is not a number",
            ),
            ("postgres:///d", "names no host"),
            (
                "postgres://u@h/d?sslmode=allow",
                "parameter sslmode: \"allow\"",
            ),
            (
                "postgres://u@h/d?nope=1",
                "parameter nope: is not a connection parameter",
            ),
            (
                "postgres://u@h/d?sslcert=c.pem",
                "sslcert is given without sslkey",
            ),
        ] {
            let e = source(&[("DATABASE_URL", url)]).config().unwrap_err();
            assert_eq!(e.variable, "DATABASE_URL", "{url}");
            assert!(e.problem.starts_with(problem), "{url}: {}", e.problem);
        }
    }

    #[test]
    fn libpq_variables_apply_and_url_parameters_win() {
        let env = [
            ("PGSSLMODE", "require"),
            ("PGSSLROOTCERT", "/etc/ca.pem"),
            ("PGSSLCERT", "/c.pem"),
            ("PGSSLKEY", "/k.pem"),
            ("PGAPPNAME", "batch"),
            ("PGCHANNELBINDING", "require"),
            ("PGREQUIREAUTH", "scram-sha-256"),
            ("PGTARGETSESSIONATTRS", "read-write"),
        ];
        // With the POSTGRES_DB_* variables.
        let mut pairs = BASE.to_vec();
        pairs.extend(env);
        let p = source(&pairs).database().unwrap().params;
        assert_eq!(p.tls.mode, pg::SslMode::Require);
        assert_eq!(
            p.tls.root_cert,
            Some(pg::RootCert::File("/etc/ca.pem".into()))
        );
        assert_eq!(p.tls.cert.as_deref(), Some(std::path::Path::new("/c.pem")));
        assert_eq!(p.tls.key.as_deref(), Some(std::path::Path::new("/k.pem")));
        assert_eq!(p.application_name, "batch");
        assert_eq!(p.channel_binding, pg::ChannelBinding::Require);
        assert_eq!(p.require_auth, Some(vec![pg::AuthMethod::ScramSha256]));
        assert_eq!(p.target_session_attrs, pg::TargetSessionAttrs::ReadWrite);
        assert_eq!((p.host.as_str(), p.user.as_str()), ("db", "u"));

        // With DATABASE_URL: its parameters win, the variables fill in the rest.
        let mut pairs = env.to_vec();
        pairs.push((
            "DATABASE_URL",
            "postgres://u@h/d?sslmode=verify-ca&application_name=api&connect_timeout=9",
        ));
        pairs.push(("PG_CONNECT_TIMEOUT_MS", "1000"));
        let p = source(&pairs).database().unwrap().params;
        assert_eq!(p.tls.mode, pg::SslMode::VerifyCa);
        assert_eq!(p.application_name, "api");
        assert_eq!(
            p.tls.root_cert,
            Some(pg::RootCert::File("/etc/ca.pem".into()))
        );
        assert_eq!(p.channel_binding, pg::ChannelBinding::Require);
        assert_eq!(p.connect_timeout, Duration::from_secs(9), "the URL's wins");
    }

    #[test]
    fn the_query_timeout_must_exceed_the_statement_timeout() {
        let with = |pairs: &[(&'static str, &'static str)]| {
            let mut all = BASE.to_vec();
            all.extend_from_slice(pairs);
            source(&all).database()
        };
        let db = with(&[]).unwrap();
        assert!(
            db.query_timeout > db.params.statement_timeout,
            "the defaults keep the rule"
        );
        let e = with(&[
            ("PG_STATEMENT_TIMEOUT_MS", "3000"),
            ("PG_QUERY_TIMEOUT_MS", "3000"),
        ])
        .unwrap_err();
        assert_eq!(e.variable, "PG_QUERY_TIMEOUT_MS");
        assert!(
            e.problem.starts_with(
                "3000 ms is not longer than PG_STATEMENT_TIMEOUT_MS (3000 ms): the client's \
                 deadline must come after the server's statement timeout"
            ),
            "{}",
            e.problem
        );
        let e = with(&[("PG_STATEMENT_TIMEOUT_MS", "7000")]).unwrap_err();
        assert_eq!(e.variable, "PG_QUERY_TIMEOUT_MS", "against the default");
        assert!(
            e.problem.starts_with("6000 ms (its default) is not longer"),
            "an operator who never set it is told it is the default: {}",
            e.problem
        );
        // The statement timeout's bound leaves room for a longer query deadline.
        let db = with(&[
            ("PG_STATEMENT_TIMEOUT_MS", "86399999"),
            ("PG_QUERY_TIMEOUT_MS", "86400000"),
        ]);
        assert!(db.is_ok(), "{:?}", db.err());
        let e = with(&[("PG_STATEMENT_TIMEOUT_MS", "86400000")]).unwrap_err();
        assert_eq!(e.variable, "PG_STATEMENT_TIMEOUT_MS");
        let db = with(&[
            ("PG_STATEMENT_TIMEOUT_MS", "3000"),
            ("PG_QUERY_TIMEOUT_MS", "3001"),
        ])
        .unwrap();
        assert_eq!(db.query_timeout, Duration::from_millis(3001));
        // 0 turns the statement timeout off: any deadline goes.
        let db = with(&[
            ("PG_STATEMENT_TIMEOUT_MS", "0"),
            ("PG_QUERY_TIMEOUT_MS", "1"),
        ])
        .unwrap();
        assert_eq!(db.params.statement_timeout, Duration::ZERO);
    }

    /// The table's `PG*` rows are the variables `pg` reads (libpq's, through
    /// [`pg::PG_ENV_VARIABLES`]): one honoured but undocumented, or documented but ignored,
    /// fails here.
    #[test]
    fn the_libpq_rows_are_the_variables_pg_reads() {
        let documented: Vec<&str> = VARIABLES
            .iter()
            .map(|s| s.name)
            .filter(|n| n.starts_with("PG") && !n.starts_with("PG_"))
            .collect();
        let mut read: Vec<&str> = pg::PG_ENV_VARIABLES.iter().map(|(v, _)| *v).collect();
        let mut sorted = documented.clone();
        sorted.sort_unstable();
        read.sort_unstable();
        assert_eq!(sorted, read);
    }

    #[test]
    fn bad_libpq_variables_are_named() {
        for (var, value, problem) in [
            ("PGSSLMODE", "allow", "not supported"),
            ("PGSSLMODE", "on", "is not one of"),
            ("PGCHANNELBINDING", "yes", "is not one of"),
            ("PGREQUIREAUTH", "md5,!md5", "cannot be mixed"),
            ("PGTARGETSESSIONATTRS", "standby", "not supported"),
            ("PGSSLKEY", "/k.pem", "sslkey is given without sslcert"),
        ] {
            let mut pairs = BASE.to_vec();
            pairs.push((var, value));
            let e = source(&pairs).config().unwrap_err();
            assert_eq!(e.variable, var, "{var}={value}");
            assert!(e.problem.contains(problem), "{var}={value}: {}", e.problem);
        }
        // A conflict between the URL and a variable blames the one that set the weak value.
        let pairs = [
            ("DATABASE_URL", "postgres://u@h/d?sslrootcert=system"),
            ("PGSSLMODE", "require"),
        ];
        let e = source(&pairs).config().unwrap_err();
        assert_eq!(e.variable, "PGSSLMODE");
        assert!(e.problem.contains("use verify-full"), "{}", e.problem);
        let pairs = [
            ("DATABASE_URL", "postgres://u@h/d?sslmode=require"),
            ("PGSSLROOTCERT", "system"),
        ];
        assert_eq!(
            source(&pairs).config().unwrap_err().variable,
            "DATABASE_URL"
        );
        // Empty counts as unset.
        let mut pairs = BASE.to_vec();
        pairs.push(("PGSSLMODE", ""));
        assert_eq!(
            source(&pairs).database().unwrap().params.tls.mode,
            pg::SslMode::Prefer
        );
    }

    /// The password appears in no error message and no `Debug` output, however the URL is
    /// malformed around it.
    #[test]
    fn the_password_is_never_shown() {
        const SECRET: &str = "hunter2-secret";
        let c = source(&[("DATABASE_URL", URL)]).config().unwrap();
        let shown = format!("{c:?} {:?} {:#?}", c.database, c.database.connect_params());
        assert!(!shown.contains(SECRET), "{shown}");
        assert!(!shown.contains("hunter2"), "{shown}");
        let mut shown = Vec::new();
        for url in [
            "postgres://u:hunter2-secret@h:54x2/d",
            "postgres://u:hunter2-secret@h:0/d",
            "postgres://u:hunter2-secret@@h/d",
            "postgres://u:hunter2-secret@h@x/d",
            "postgres://u:hunter2-secret/x@h/d",
            "postgres://u:hunter2/secret@h/d",
            "postgres://u:hunter2-secret%zz@h/d",
            "postgres://u:hunter2-secret%00@h/d",
            "postgres://u:hunter2-secret%C3@h/d",
            "postgres://u:hunter2-secret@/d",
            "postgres://u:hunter2-secret@h/d?sslmode=bogus",
            "postgres://u:hunter2-secret@h/d?bogus=1",
            "postgres://u:hunter2-secret@h/d?sslmode",
            "postgres://u:hunter2-secret@h/d?password=hunter2-secret=x",
            "postgres://u:hunter2-secret@h/d?password=hunter2-secret%x",
            "postgres://u@h/d?hunter2-secret",
            "postgres://:hunter2-secret@h/d",
            "mysql://u:hunter2-secret@h/d",
            "host=h user=u password=hunter2-secret",
            "postgres://u:hunter2-secret@h/d?sslcert=c",
        ] {
            let e = source(&[("DATABASE_URL", url)]).config().unwrap_err();
            shown.push(format!("{e} {e:?}"));
        }
        let mut pairs = BASE.to_vec();
        pairs.push(("DATABASE_URL", URL));
        let e = source(&pairs).config().unwrap_err();
        shown.push(format!("{e} {e:?}"));
        for s in &shown {
            assert!(!s.contains("hunter2"), "{s}");
            assert!(s.contains("DATABASE_URL"), "{s}");
        }
    }
}
