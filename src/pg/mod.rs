//! A pipelined PostgreSQL client for the `may` runtime, on `postgres-protocol`.
//!
//! One [`Client`] is one connection shared by every coroutine that uses it: their queries are
//! pipelined (sent together, answered in order), every statement is prepared once per connection
//! by name, rows are handed over without copying, and a dead connection fails its callers at
//! once and is re-established in the background. Knows nothing of HTTP or of the service.

mod client;
mod error;
mod pipeline;
mod row;
mod startup;

use std::time::Duration;

pub use client::{Client, MAX_BACKOFF};
pub use error::{kind_of_sqlstate, Error, ErrorKind};
pub use pipeline::{Isolation, Reply, Stats};
pub use row::Row;
pub use startup::Statement;

/// A query parameter, sent in binary format.
#[derive(Debug, Clone, Copy)]
pub enum Param<'a> {
    Int4(i32),
    Int8(i64),
    Text(&'a str),
    Null,
}

/// Where and how to connect.
#[derive(Debug, Clone)]
pub struct ConnectParams {
    pub host: String,
    pub port: u16,
    pub user: String,
    pub password: Option<String>,
    pub dbname: String,
    pub application_name: String,
    /// Bound on TCP connect plus startup and authentication.
    pub connect_timeout: Duration,
    /// Sent as the session's `statement_timeout`; zero leaves the server's default.
    pub statement_timeout: Duration,
    /// Queries in flight on one connection before callers wait (and then fail as overloaded).
    pub max_in_flight: usize,
}

impl ConnectParams {
    /// Defaults for everything but where to connect.
    pub fn new(host: &str, port: u16, user: &str, password: Option<&str>, dbname: &str) -> Self {
        ConnectParams {
            host: host.to_string(),
            port,
            user: user.to_string(),
            password: password.map(str::to_string),
            dbname: dbname.to_string(),
            application_name: "records-service".to_string(),
            connect_timeout: Duration::from_secs(5),
            statement_timeout: Duration::from_secs(5),
            max_in_flight: 1024,
        }
    }
}

/// Starts a client with no prepared statements and waits for its first connection attempt:
/// the client if it connected, else that attempt's error (and the client is stopped, so it
/// does not retry in the background). For command-line tasks (migrate, seed) and test setup.
pub fn connect_once(params: &ConnectParams) -> Result<Client, Error> {
    let client = Client::start(params.clone(), &[]);
    match client.wait_connected(params.connect_timeout + Duration::from_secs(1)) {
        Ok(()) => Ok(client),
        Err(e) => {
            client.close();
            Err(e)
        }
    }
}
