//! The `records-service` command: configuration, signals, runtime, and one of `serve`,
//! `migrate` or `seed`. Nothing else lives here.

use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use records_service::config::{self, ConfigError, DatabaseConfig, Hint};
use records_service::logging::Untrusted;
use records_service::pg::{self, ErrorKind};
use records_service::records::metrics::Metrics;
use records_service::records::routes::Surface;
use records_service::records::{migrate, seed, RecordsService, Repository};
use records_service::{http, logging, signals};

const HELP: &str = "\
records-service: the records HTTP JSON API over PostgreSQL

USAGE:
    records-service [COMMAND]

COMMANDS:
    serve            Serve HTTP on SERVER_HOST:SERVER_PORT (the default command). Stops
                     gracefully on SIGTERM or SIGINT.
    migrate          Apply the database migrations that are missing (safe to run twice,
                     and from two processes at once).
    seed --rows N [--if-empty]
                     Apply migrations, then top the records table up to ids 1..N with
                     generated records (progress on stderr). With --if-empty, only
                     when the table holds no record at all.
    healthcheck      GET /readyz of the service on SERVER_HOST:SERVER_PORT (127.0.0.1 when
                     it listens on every address): exit 0 when ready, 1 otherwise. For
                     container health checks: the image needs no curl or shell.
    help             Show this text. `records-service COMMAND --help` shows the same.

Configuration comes from the environment and from a .env file in the working directory;
see .env.example and the README for every variable and its default.
";

enum Command {
    Serve,
    Migrate,
    Seed { rows: i64, if_empty: bool },
    Healthcheck,
    Help,
}

fn parse_args(args: &[String]) -> Result<Command, String> {
    let mut it = args.iter().map(String::as_str);
    let command = match it.next() {
        None | Some("serve") => Command::Serve,
        Some("migrate") => Command::Migrate,
        Some("healthcheck") => Command::Healthcheck,
        Some("seed") => {
            let mut rows = None;
            let mut if_empty = false;
            while let Some(arg) = it.next() {
                match arg {
                    "--if-empty" => if_empty = true,
                    "--rows" => {
                        let value = it.next().ok_or("--rows needs a number")?;
                        rows = Some(parse_rows(value)?);
                    }
                    a if a.starts_with("--rows=") => rows = Some(parse_rows(&a[7..])?),
                    "-h" | "--help" => return Ok(Command::Help),
                    other => return Err(format!("unexpected argument {other:?} for seed")),
                }
            }
            return Ok(Command::Seed {
                rows: rows.ok_or("seed needs --rows N")?,
                if_empty,
            });
        }
        Some("help" | "-h" | "--help") => Command::Help,
        Some(other) => return Err(format!("unknown command {other:?}")),
    };
    match it.next() {
        None => Ok(command),
        Some("-h" | "--help") => Ok(Command::Help),
        Some(other) => Err(format!("unexpected argument {other:?}")),
    }
}

fn parse_rows(value: &str) -> Result<i64, String> {
    value
        .parse::<i64>()
        .ok()
        .filter(|n| (0..=i64::from(i32::MAX)).contains(n))
        .ok_or_else(|| format!("--rows must be a whole number from 0 to {}", i32::MAX))
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let command = match parse_args(&args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}\n\n{HELP}");
            return ExitCode::from(2);
        }
    };
    // Before any thread exists, so every thread inherits the mask and only the signal thread
    // receives SIGTERM and SIGINT.
    let signals = signals::block_termination_signals();
    let log = match config::from_env().log() {
        Ok(log) => log,
        Err(e) => {
            eprintln!("error: configuration error: {e}");
            return ExitCode::FAILURE;
        }
    };
    // Dropped at the end of main: flushes the log queue.
    let log_guard = logging::init(log.json, log.level);
    logging::log_panics();
    let result = match command {
        Command::Help => {
            print!("{HELP}");
            Ok(())
        }
        Command::Serve => serve(signals),
        Command::Migrate => run_migrate(),
        Command::Healthcheck => healthcheck(),
        Command::Seed { rows, if_empty } => run_seed(rows, if_empty),
    };
    let code = match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            tracing::error!(event = "fatal", "error: {}", Untrusted(&message));
            ExitCode::FAILURE
        }
    };
    drop(log_guard);
    code
}

fn config_error(e: ConfigError) -> String {
    e.to_string()
}

fn admin_client() -> Result<pg::Client, String> {
    let db = config::from_env().database().map_err(config_error)?;
    let mut params = db.write_params();
    // Migrations and seeding may run for minutes: no statement timeout.
    params.statement_timeout = Duration::ZERO;
    may::config().set_workers(1);
    pg::connect_once(&params).map_err(|e| describe_db_error(&db, &e))
}

/// A failed connection explained: where, what went wrong, and which settings to check (the
/// `POSTGRES_DB_*` variables or `DATABASE_URL`, whichever configured it). Never the password.
fn describe_db_error(db: &DatabaseConfig, e: &pg::Error) -> String {
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

/// `healthcheck`: one HTTP request to the local service's readiness probe, bounded by 2 s.
fn healthcheck() -> Result<(), String> {
    use std::io::{Read, Write};
    let (host, port) = config::from_env().listen_address().map_err(config_error)?;
    // Listening on every address: ask over loopback.
    let host = match host.as_str() {
        "0.0.0.0" => "127.0.0.1",
        "::" => "::1",
        h => h,
    };
    let timeout = Duration::from_secs(2);
    let addr = std::net::ToSocketAddrs::to_socket_addrs(&(host, port))
        .ok()
        .and_then(|mut a| a.next())
        .ok_or_else(|| format!("healthcheck: cannot resolve {host}:{port}"))?;
    let mut stream = std::net::TcpStream::connect_timeout(&addr, timeout)
        .map_err(|e| format!("healthcheck: cannot connect to {addr}: {e}"))?;
    stream.set_read_timeout(Some(timeout)).ok();
    stream.set_write_timeout(Some(timeout)).ok();
    stream
        .write_all(b"GET /readyz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .map_err(|e| format!("healthcheck: {e}"))?;
    let mut head = [0u8; 12];
    stream
        .read_exact(&mut head)
        .map_err(|e| format!("healthcheck: no answer from {addr}: {e}"))?;
    match &head {
        b"HTTP/1.1 200" => {
            println!("ready");
            Ok(())
        }
        other => Err(format!(
            "healthcheck: not ready: {}",
            String::from_utf8_lossy(other)
        )),
    }
}

fn run_migrate() -> Result<(), String> {
    let client = admin_client()?;
    let applied = migrate::migrate(&client).map_err(|e| format!("migration failed: {e}"))?;
    if applied.is_empty() {
        tracing::info!(event = "migrate", "migrate: the schema is up to date");
    } else {
        tracing::info!(event = "migrate", applied = ?applied, "migrate: applied {applied:?}");
    }
    client.close();
    Ok(())
}

fn run_seed(rows: i64, if_empty: bool) -> Result<(), String> {
    let client = admin_client()?;
    migrate::migrate(&client).map_err(|e| format!("migration failed: {e}"))?;
    let empty =
        !if_empty || seed::is_empty(&client).map_err(|e| format!("cannot count records: {e}"))?;
    if empty {
        seed::seed(&client, rows, &mut |line| {
            tracing::info!(event = "seed_progress", "{line}")
        })
        .map_err(|e| format!("seeding failed: {e}"))?;
    } else {
        tracing::info!(
            event = "seed",
            "seed: the table is not empty; nothing to do (--if-empty)"
        );
    }
    client.close();
    Ok(())
}

fn serve(signals: signals::TerminationSignals) -> Result<(), String> {
    let mut cfg = config::from_env().config().map_err(config_error)?;
    // STACK_DEBUG=1 makes the size odd, which makes may print each coroutine's peak stack use
    // when it ends: how the default was sized (README, "Limits and timeouts").
    may::config().set_workers(cfg.workers).set_stack_size(
        cfg.stack_size / std::mem::size_of::<usize>()
            + usize::from(std::env::var_os("STACK_DEBUG").is_some()),
    );

    let fd_limit = signals::raise_fd_limit();
    // Leave room for the PostgreSQL connections, the listener and stdio.
    let fd_room = fd_limit.saturating_sub(64 + cfg.workers as u64 * 2) as usize;
    if cfg.http.limits.max_connections > fd_room {
        tracing::warn!(
            event = "connection_cap_lowered",
            fd_limit,
            from = cfg.http.limits.max_connections,
            to = fd_room.max(1),
            "serve: the file descriptor limit ({fd_limit}) allows {fd_room} connections; \
             HTTP_MAX_CONNECTIONS lowered from {}",
            cfg.http.limits.max_connections
        );
        cfg.http.limits.max_connections = fd_room.max(1);
    }
    // Debug output masks the password (see DatabaseConfig and ConnectParams).
    tracing::info!(
        event = "config",
        database = %cfg.database.servers(),
        dbname = %cfg.database.params.dbname,
        user = %cfg.database.params.user,
        workers = cfg.workers,
        metrics = cfg.metrics,
        log = ?cfg.log,
        config = ?cfg,
        "serve: configuration read"
    );

    let db = &cfg.database;
    let metrics = Arc::new(Metrics::new(cfg.workers + 2, cfg.metrics));
    let repo = Arc::new(Repository::start(db, cfg.workers, metrics));
    // Each host gets the whole connect timeout.
    let hosts = 1 + db.params.more_hosts.len() as u32;
    if let Err(e) = repo.wait_connected(db.params.connect_timeout * hosts + Duration::from_secs(1))
    {
        let message = describe_db_error(db, &e);
        if matches!(e.kind(), ErrorKind::AuthFailed | ErrorKind::UnknownDatabase) {
            // Configuration, not an outage: retrying will not help.
            return Err(message);
        }
        tracing::warn!(
            event = "database_unreachable",
            error = %Untrusted(&message),
            "serve: {}; serving 503 until it answers, retrying in the background",
            Untrusted(&message)
        );
    } else {
        tracing::info!(event = "database_reachable", database = %db.servers());
    }

    let listener = http::bind((cfg.host.as_str(), cfg.port))
        .map_err(|e| format!("cannot listen on {}:{}: {e}", cfg.host, cfg.port))?;
    let draining = Arc::new(AtomicBool::new(false));
    let service = RecordsService::new(repo.clone(), &cfg.static_dir, draining.clone())
        .access_log(cfg.log.access);
    // With METRICS_ADDR, /metrics (with /livez and /readyz) has a listener of its own and the
    // public one does not serve it.
    let admin = match &cfg.metrics_addr {
        Some((host, port)) => {
            let listener = http::bind((host.as_str(), *port))
                .map_err(|e| format!("cannot listen on METRICS_ADDR {host}:{port}: {e}"))?;
            let admin = Arc::new(service.with_surface(Surface::Admin));
            let server = http::serve(listener, admin, cfg.http.clone())
                .map_err(|e| format!("cannot start the metrics server: {e}"))?;
            Some(server)
        }
        None => None,
    };
    let surface = if admin.is_some() {
        Surface::Public
    } else {
        Surface::All
    };
    let service = Arc::new(service.with_surface(surface));
    let server = http::serve(listener, service.clone(), cfg.http.clone())
        .map_err(|e| format!("cannot start the server: {e}"))?;
    service.observe_server(server.clone());
    let metrics_addr = admin.as_ref().map(|a| a.local_addr().to_string());
    tracing::info!(
        event = "listening",
        addr = %server.local_addr(),
        workers = cfg.workers,
        metrics_addr = metrics_addr.as_deref().unwrap_or("(main listener)"),
        "serve: listening on http://{} with {} workers",
        server.local_addr(),
        cfg.workers
    );

    let signal = signals.wait();
    tracing::info!(
        event = "shutdown_started",
        signal = %signal,
        "serve: {signal} received, shutting down"
    );
    draining.store(true, Ordering::SeqCst);
    if !cfg.shutdown_delay.is_zero() {
        // /readyz answers 503 from now on; everything else is served as usual until a load
        // balancer's health check has taken this replica out (SHUTDOWN_DELAY_MS).
        tracing::info!(
            event = "shutdown_delay",
            delay_ms = cfg.shutdown_delay.as_millis() as u64,
            "serve: /readyz answers 503; serving on for {:?} before closing the listener",
            cfg.shutdown_delay
        );
        std::thread::sleep(cfg.shutdown_delay);
    }
    server.shutdown();
    if server.wait(cfg.http.timeouts.shutdown) {
        tracing::info!(event = "shutdown_drained", "serve: all connections closed");
    } else {
        tracing::warn!(
            event = "shutdown_timeout",
            open = server.active_connections(),
            "serve: {} connections still open after {:?}; exiting",
            server.active_connections(),
            cfg.http.timeouts.shutdown
        );
    }
    // The metrics listener last: probes and scrapes see the whole drain.
    if let Some(admin) = &admin {
        admin.shutdown();
    }
    for client in repo.clients() {
        client.close();
    }
    tracing::info!(event = "shutdown_complete", "serve: stopped");
    Ok(())
}
