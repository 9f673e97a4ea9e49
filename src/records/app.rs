//! The application, assembled: metrics, the repository (connected, or retrying in the
//! background), the service, its listener and the optional metrics listener. `main`'s `serve`
//! and the tests build it the same way ([`build`]), so a test runs what users run.

use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::config::{Config, DatabaseConfig, Hint};
use crate::http::{self, ServerHandle};
use crate::logging::Untrusted;
use crate::pg::{self, ErrorKind};

use super::metrics::Metrics;
use super::routes::{RecordsService, Surface};
use super::Repository;

/// A running service.
pub struct Running {
    pub server: ServerHandle,
    /// The `METRICS_ADDR` listener, when configured.
    pub admin: Option<ServerHandle>,
    pub repo: Arc<Repository>,
    draining: Arc<AtomicBool>,
}

/// Why the service could not start.
#[derive(Debug)]
pub enum StartError {
    /// The database refused this configuration (credentials, database name, pg_hba.conf), or
    /// the TLS settings cannot work (unreadable files, a server certificate that fails
    /// verification): retrying will not help. The message says where and which settings to
    /// check.
    Database(String),
    /// A listening socket could not be opened.
    Listen {
        what: &'static str,
        addr: String,
        source: std::io::Error,
    },
    /// Access control could not start (its JWKS file went missing since the configuration
    /// was read, or its watch could not be started).
    Auth(String),
    /// A server could not start (its coroutines could not be spawned).
    Server {
        what: &'static str,
        source: std::io::Error,
    },
}

impl fmt::Display for StartError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StartError::Database(message) | StartError::Auth(message) => f.write_str(message),
            StartError::Listen { what, addr, source } => {
                write!(f, "cannot listen on {what}{addr}: {source}")
            }
            StartError::Server { what, source } => write!(f, "cannot start {what}: {source}"),
        }
    }
}

impl std::error::Error for StartError {}

/// Starts everything `cfg` describes: waits for the database's first answer (an outage is
/// logged and served as 503 until it ends; a refused configuration or a certificate that fails
/// verification is an error), then listens.
pub fn build(cfg: &Config) -> Result<Running, StartError> {
    let db = &cfg.database;
    let gate = crate::auth::Gate::start(&cfg.auth).map_err(StartError::Auth)?;
    let metrics = Arc::new(Metrics::new(cfg.workers + 2, cfg.metrics));
    let repo = Arc::new(Repository::start(db, cfg.workers, metrics));
    // Each host gets the whole connect timeout.
    let hosts = 1 + db.params.more_hosts.len() as u32;
    match repo.wait_connected(db.params.connect_timeout * hosts + Duration::from_secs(1)) {
        Ok(()) => tracing::info!(event = "database_reachable", database = %db.servers()),
        Err(e) => {
            let message = describe_db_error(db, &e);
            // Configuration errors: retrying will not help, so say so now rather than serve
            // 503 until someone reads the log. A certificate that fails verification is one,
            // as a pg_hba.conf rejection is.
            let misconfigured = e.is_tls_misconfigured()
                || matches!(e.kind(), ErrorKind::AuthFailed | ErrorKind::UnknownDatabase);
            if misconfigured {
                for client in repo.clients() {
                    client.close();
                }
                return Err(StartError::Database(message));
            }
            tracing::warn!(
                event = "database_unreachable",
                error = %Untrusted(&message),
                "serve: {}; serving 503 until it answers, retrying in the background",
                Untrusted(&message)
            );
        }
    }

    let listen = |what: &'static str, host: &str, port: u16| {
        http::bind((host, port)).map_err(|source| StartError::Listen {
            what,
            addr: format!("{host}:{port}"),
            source,
        })
    };
    let listener = listen("", &cfg.host, cfg.port)?;
    let draining = Arc::new(AtomicBool::new(false));
    let service = RecordsService::new(repo.clone(), &cfg.static_dir, draining.clone())
        .access_log(cfg.log.access)
        .clients(cfg.trusted_proxies.clone(), cfg.rate_limit.limiter())
        .access_control(gate);
    // With METRICS_ADDR, /metrics (with /livez and /readyz) has a listener of its own and the
    // public one does not serve it.
    let admin = match &cfg.metrics_addr {
        Some((host, port)) => {
            let admin_listener = listen("METRICS_ADDR ", host, *port)?;
            let admin = Arc::new(service.with_surface(Surface::Admin));
            let admin = http::serve(admin_listener, admin, cfg.http.clone()).map_err(|source| {
                StartError::Server {
                    what: "the metrics server",
                    source,
                }
            })?;
            Some(admin)
        }
        None => None,
    };
    let surface = if admin.is_some() {
        Surface::Public
    } else {
        Surface::All
    };
    let service = Arc::new(service.with_surface(surface));
    let server = http::serve(listener, service.clone(), cfg.http.clone()).map_err(|source| {
        StartError::Server {
            what: "the server",
            source,
        }
    })?;
    service.observe_server(server.clone());
    Ok(Running {
        server,
        admin,
        repo,
        draining,
    })
}

impl Running {
    pub fn local_addr(&self) -> SocketAddr {
        self.server.local_addr()
    }

    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.admin.as_ref().map(ServerHandle::local_addr)
    }

    /// From now on `/readyz` answers 503 (everything else is served as usual), so that a load
    /// balancer takes this replica out before its listener closes.
    pub fn begin_draining(&self) {
        self.draining.store(true, Ordering::SeqCst);
    }

    /// The graceful shutdown: `/readyz` turns 503, `delay` passes (`SHUTDOWN_DELAY_MS`), the
    /// listener closes and open connections finish their current batch, for at most `timeout`;
    /// then the metrics listener and the database connections close. True if every connection
    /// closed in time.
    pub fn shutdown(self, delay: Duration, timeout: Duration) -> bool {
        self.begin_draining();
        if !delay.is_zero() {
            tracing::info!(
                event = "shutdown_delay",
                delay_ms = delay.as_millis() as u64,
                "serve: /readyz answers 503; serving on for {delay:?} before closing the listener"
            );
            std::thread::sleep(delay);
        }
        self.server.shutdown();
        let drained = self.server.wait(timeout);
        if drained {
            tracing::info!(event = "shutdown_drained", "serve: all connections closed");
        } else {
            tracing::warn!(
                event = "shutdown_timeout",
                open = self.server.active_connections(),
                "serve: {} connections still open after {timeout:?}; exiting",
                self.server.active_connections()
            );
        }
        // The metrics listener last: probes and scrapes see the whole drain.
        if let Some(admin) = &self.admin {
            admin.shutdown();
        }
        for client in self.repo.clients() {
            client.close();
        }
        drained
    }
}

/// A failed connection explained: where, what went wrong, and which settings to check (the
/// `POSTGRES_DB_*` variables or `DATABASE_URL`, whichever configured it). Never the password.
pub fn describe_db_error(db: &DatabaseConfig, e: &pg::Error) -> String {
    let at = db.servers();
    let tls = ["certificate", "TLS", "sslrootcert", "sslmode", "sslcert"]
        .iter()
        .any(|word| e.message().contains(word));
    match e.kind() {
        // A wrong password (28P01); pg_hba.conf rejections and the client's own refusals
        // (require_auth, channel_binding) explain themselves, and "check the password" would
        // mislead.
        ErrorKind::AuthFailed if e.code() == Some("28P01") => format!(
            "PostgreSQL at {at} refused the credentials of user {:?} (check {}): {}",
            db.params.user,
            db.hint(Hint::Credentials),
            e.message()
        ),
        ErrorKind::AuthFailed => format!(
            "authentication with PostgreSQL at {at} as user {:?} refused: {}",
            db.params.user,
            e.message()
        ),
        ErrorKind::ConnectFailed if tls => {
            format!("TLS with PostgreSQL at {at} failed: {}", e.message())
        }
        ErrorKind::UnknownDatabase => format!(
            "PostgreSQL at {at} has no database {:?} (check {}): {}",
            db.params.dbname,
            db.hint(Hint::Database),
            e.message()
        ),
        ErrorKind::ConnectFailed | ErrorKind::ConnectionLost => format!(
            "cannot reach PostgreSQL at {at} (check {}, and that the server runs): {}",
            db.hint(Hint::Address),
            e.message()
        ),
        _ => format!("PostgreSQL at {at}: {e}"),
    }
}
