//! A pipelined PostgreSQL client for the `may` runtime, on `postgres-protocol`.
//!
//! One [`Client`] is one connection shared by every coroutine that uses it: their queries are
//! pipelined (sent together, answered in order), every statement is prepared once per connection
//! by name, rows are handed over without copying, and a dead connection fails its callers at
//! once and is re-established in the background. Knows nothing of HTTP or of the service.

mod blocking;
mod client;
mod codec;
mod conninfo;
mod error;
mod pipeline;
mod row;
mod startup;
mod stats;
mod tls;
mod transport;

use std::time::Duration;

pub use client::{Client, Session, MAX_BACKOFF};
pub use conninfo::{
    env_variable_for, parse_env, parse_url, ConnInfo, DEFAULT_PORT, PG_ENV_VARIABLES,
};
pub use error::{kind_of_sqlstate, Error, ErrorKind};
pub use pipeline::{Isolation, Reply};
pub use row::Row;
pub use startup::Statement;
pub use stats::Stats;

/// A query parameter, sent in binary format.
#[derive(Debug, Clone, Copy)]
pub enum Param<'a> {
    Int4(i32),
    Int8(i64),
    Text(&'a str),
    Null,
}

/// libpq's `sslmode`: whether TLS is used and what of the server is verified.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    /// Plain TCP only.
    Disable,
    /// TLS if the server offers it, plain otherwise; the certificate is not verified (libpq's
    /// default, and ours).
    Prefer,
    /// TLS or nothing; the certificate is not verified (unless `sslrootcert` is given, as libpq).
    Require,
    /// TLS, and the certificate chains to a trusted CA.
    VerifyCa,
    /// TLS, the certificate chains to a trusted CA and names the host connected to.
    VerifyFull,
}

/// libpq's `sslrootcert`: which CAs to trust.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RootCert {
    /// PEM file of CA certificates.
    File(std::path::PathBuf),
    /// The operating system's store (`sslrootcert=system`).
    System,
}

/// libpq's `channel_binding`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChannelBinding {
    Disable,
    /// SCRAM-SHA-256-PLUS when TLS is up and the server offers it (default).
    Prefer,
    /// Refuse to authenticate without channel binding.
    Require,
}

/// An authentication method the server may ask for (libpq's `require_auth` names).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMethod {
    /// No password asked (trust, peer, cert).
    None,
    Password,
    Md5,
    ScramSha256,
}

/// libpq's `target_session_attrs`, for several hosts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TargetSessionAttrs {
    /// The first host that accepts the connection.
    Any,
    /// The first host whose session is not read-only (the primary).
    ReadWrite,
    /// The first standby (a read-only session in recovery) whose replay lag is within
    /// `max_standby_lag`; failing that, the first host that accepts the connection.
    PreferStandby,
}

/// How statements are sent: prepared once per connection by name, or parsed with every use.
/// Named statements do not survive a transaction-pooling proxy (PgBouncer before 1.21, or
/// without `max_prepared_statements`), which hands each transaction to any server connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatementMode {
    /// Named, until the server reports a statement this connection prepared as missing
    /// (SQLSTATE 26000) or already there (42P05): then per transaction, for the client's life.
    Auto,
    Named,
    /// Prepared again (Close, Parse) by the first query of each transaction that uses it
    /// (each group of reads sharing a Sync, each write), bound by name after that.
    PerTransaction,
}

/// TLS settings, libpq's names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsSettings {
    pub mode: SslMode,
    pub root_cert: Option<RootCert>,
    /// Client certificate chain (PEM) and its private key (PEM), both or neither.
    pub cert: Option<std::path::PathBuf>,
    pub key: Option<std::path::PathBuf>,
}

impl Default for TlsSettings {
    fn default() -> Self {
        TlsSettings {
            mode: SslMode::Prefer,
            root_cert: None,
            cert: None,
            key: None,
        }
    }
}

/// Where and how to connect.
#[derive(Clone)]
pub struct ConnectParams {
    /// The first host to try.
    pub host: String,
    pub port: u16,
    /// Further hosts, tried in order after `host` (a multi-host `DATABASE_URL`).
    pub more_hosts: Vec<(String, u16)>,
    pub target_session_attrs: TargetSessionAttrs,
    pub user: String,
    /// Never printed: `Debug` shows whether one is set, not what it is.
    pub password: Option<String>,
    pub dbname: String,
    pub application_name: String,
    pub tls: TlsSettings,
    pub channel_binding: ChannelBinding,
    /// The methods the server may ask for. `None` (the default): any, except that cleartext
    /// and MD5 passwords are refused unless the server's certificate was verified (TLS with
    /// `sslrootcert`, under `sslmode` require, verify-ca or verify-full).
    pub require_auth: Option<Vec<AuthMethod>>,
    /// Bound on TCP connect plus startup and authentication.
    pub connect_timeout: Duration,
    /// The session's `statement_timeout`; zero leaves the server's default.
    pub statement_timeout: Duration,
    /// Queries in flight on one connection; beyond it a query fails at once as overloaded.
    pub max_in_flight: usize,
    /// The largest message accepted from the server; a longer one ends the connection.
    pub max_message_bytes: usize,
    /// With `PreferStandby`: a standby further behind than this (its replay lag, measured when
    /// connecting) is passed over. Zero: no bound.
    pub max_standby_lag: Duration,
    pub statement_mode: StatementMode,
}

impl std::fmt::Debug for ConnectParams {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectParams")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("more_hosts", &self.more_hosts)
            .field("target_session_attrs", &self.target_session_attrs)
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("dbname", &self.dbname)
            .field("application_name", &self.application_name)
            .field("tls", &self.tls)
            .field("channel_binding", &self.channel_binding)
            .field("require_auth", &self.require_auth)
            .field("connect_timeout", &self.connect_timeout)
            .field("statement_timeout", &self.statement_timeout)
            .field("max_in_flight", &self.max_in_flight)
            .field("max_message_bytes", &self.max_message_bytes)
            .field("max_standby_lag", &self.max_standby_lag)
            .field("statement_mode", &self.statement_mode)
            .finish()
    }
}

impl ConnectParams {
    /// Defaults for everything but where to connect.
    pub fn new(host: &str, port: u16, user: &str, password: Option<&str>, dbname: &str) -> Self {
        ConnectParams {
            host: host.to_string(),
            port,
            more_hosts: Vec::new(),
            target_session_attrs: TargetSessionAttrs::Any,
            user: user.to_string(),
            password: password.map(str::to_string),
            dbname: dbname.to_string(),
            application_name: "records-service".to_string(),
            tls: TlsSettings::default(),
            channel_binding: ChannelBinding::Prefer,
            require_auth: None,
            connect_timeout: Duration::from_secs(5),
            statement_timeout: Duration::from_secs(5),
            max_in_flight: 1024,
            max_message_bytes: 64 << 20,
            max_standby_lag: Duration::from_secs(10),
            statement_mode: StatementMode::Auto,
        }
    }
}

/// Starts a client with no prepared statements and waits for its first connection attempt:
/// the client if it connected, else that attempt's error (and the client is stopped, so it
/// does not retry in the background). For command-line tasks (migrate, seed) and test setup.
pub fn connect_once(params: &ConnectParams) -> Result<Client, Error> {
    let client = Client::start(params.clone(), &[]);
    // Each host gets the whole connect_timeout.
    let hosts = 1 + params.more_hosts.len() as u32;
    match client.wait_connected(params.connect_timeout * hosts + Duration::from_secs(1)) {
        Ok(()) => Ok(client),
        Err(e) => {
            client.close();
            Err(e)
        }
    }
}
