//! The `records-service` command: its arguments, configuration, signals, runtime, and one of
//! `serve`, `migrate`, `seed` or `healthcheck`. Nothing else lives here.

use std::fmt;
use std::io::IsTerminal;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use records_service::config::{self, ConfigError};
use records_service::logging::Untrusted;
use records_service::pg;
use records_service::records::app::{self, describe_db_error, StartError};
use records_service::records::{migrate, seed};
use records_service::{logging, signals};

/// records-service: the records HTTP JSON API over PostgreSQL.
#[derive(Parser)]
#[command(
    name = "records-service",
    version,
    after_help = "Configuration comes from the environment and from a .env file in the working \
                  directory;\nsee .env.example and the README for every variable and its default."
)]
struct Cli {
    /// What to do; without one, `serve`.
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Serve HTTP on SERVER_HOST:SERVER_PORT (the default command)
    ///
    /// Stops gracefully on SIGTERM or SIGINT.
    Serve,
    /// Apply the database migrations that are missing
    ///
    /// Safe to run twice, and from two processes at once.
    Migrate,
    /// Apply migrations, then top the records table up to ids 1..N with generated records
    ///
    /// Progress goes to stderr: a progress bar on a terminal, log lines (event seed_progress)
    /// otherwise.
    #[command(verbatim_doc_comment)]
    Seed {
        /// Top the table up to ids 1..N (0 to 2147483647)
        #[arg(long, value_name = "N", value_parser = parse_rows, allow_negative_numbers = true)]
        rows: i64,
        /// Only when the table holds no record at all
        #[arg(long)]
        if_empty: bool,
    },
    /// GET /readyz of the local service: exit 0 when ready, 1 otherwise
    ///
    /// Asks SERVER_HOST:SERVER_PORT (127.0.0.1 when the service listens on every address).
    /// For container health checks: the image needs no curl or shell.
    #[command(verbatim_doc_comment)]
    Healthcheck,
}

fn parse_rows(value: &str) -> Result<i64, String> {
    value
        .parse::<i64>()
        .ok()
        .filter(|n| (0..=i64::from(i32::MAX)).contains(n))
        .ok_or_else(|| format!("--rows must be a whole number from 0 to {}", i32::MAX))
}

fn main() -> ExitCode {
    // Help and --version print and exit 0; a mistake in the arguments prints itself, a usage
    // line and a suggestion where one fits, and exits 2. All before the configuration is read,
    // so that a broken .env does not hide the help.
    let command = Cli::parse().command.unwrap_or(Command::Serve);
    // Before any thread exists, so every thread inherits the mask and only the signal thread
    // receives SIGTERM and SIGINT.
    let signals = signals::block_termination_signals();
    let log = match config::from_env().and_then(|c| c.log()) {
        Ok(log) => log,
        Err(e) => {
            // Before the logger exists (its own settings are wrong): plain text.
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    // Dropped at the end of main: flushes the log queue.
    let log_guard = logging::init(log.json, log.level);
    logging::log_panics();
    let result = match command {
        Command::Serve => serve(signals),
        Command::Migrate => run_migrate(),
        Command::Healthcheck => healthcheck(),
        Command::Seed { rows, if_empty } => run_seed(rows, if_empty),
    };
    let code = match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(event = "fatal", "error: {}", Untrusted(&error));
            ExitCode::FAILURE
        }
    };
    drop(log_guard);
    code
}

/// Why a command failed. Each variant's text says what went wrong and what to check.
#[derive(Debug)]
enum CommandError {
    /// A setting is missing or malformed (`configuration error: VARIABLE: ...`).
    Config(ConfigError),
    /// `serve` could not start (database refused, port taken...).
    Start(StartError),
    /// Anything else, with its context (`migration failed: ...`, `healthcheck: ...`).
    Failed(String),
}

impl fmt::Display for CommandError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CommandError::Config(e) => e.fmt(f),
            CommandError::Start(e) => e.fmt(f),
            CommandError::Failed(message) => f.write_str(message),
        }
    }
}

impl From<ConfigError> for CommandError {
    fn from(e: ConfigError) -> Self {
        CommandError::Config(e)
    }
}

impl From<StartError> for CommandError {
    fn from(e: StartError) -> Self {
        CommandError::Start(e)
    }
}

impl From<String> for CommandError {
    fn from(message: String) -> Self {
        CommandError::Failed(message)
    }
}

fn admin_client() -> Result<pg::Client, CommandError> {
    let db = config::from_env().and_then(|c| c.database())?;
    let mut params = db.write_params();
    // Migrations and seeding may run for minutes: no statement timeout.
    params.statement_timeout = Duration::ZERO;
    may::config().set_workers(1);
    pg::connect_once(&params).map_err(|e| CommandError::Failed(describe_db_error(&db, &e)))
}

/// `healthcheck`: one HTTP request to the local service's readiness probe, bounded by 2 s.
fn healthcheck() -> Result<(), CommandError> {
    use std::io::{Read, Write};
    let (host, port) = config::from_env().and_then(|c| c.listen_address())?;
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
        other => Err(format!("healthcheck: not ready: {}", String::from_utf8_lossy(other)).into()),
    }
}

fn run_migrate() -> Result<(), CommandError> {
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

fn run_seed(rows: i64, if_empty: bool) -> Result<(), CommandError> {
    let client = admin_client()?;
    migrate::migrate(&client).map_err(|e| format!("migration failed: {e}"))?;
    let empty =
        !if_empty || seed::is_empty(&client).map_err(|e| format!("cannot count records: {e}"))?;
    if empty {
        // A person watching gets a bar; a file, a pipe or a container's log gets log events.
        let mut progress: Box<dyn seed::Progress> = if std::io::stderr().is_terminal() {
            Box::new(SeedBar::new())
        } else {
            Box::new(SeedLog::default())
        };
        seed::seed(&client, rows, progress.as_mut()).map_err(|e| format!("seeding failed: {e}"))?;
    } else {
        tracing::info!(
            event = "seed",
            "seed: the table is not empty; nothing to do (--if-empty)"
        );
    }
    client.close();
    Ok(())
}

/// `seed`'s progress as log events: every step, and the rows each time another tenth of them
/// is in (a line per INSERT would be a hundred lines for ten million rows).
#[derive(Default)]
struct SeedLog {
    tenths: i64,
}

impl seed::Progress for SeedLog {
    fn step(&mut self, line: &str) {
        tracing::info!(event = "seed_progress", "{line}");
    }

    fn rows(&mut self, done: i64, total: i64, line: &str) {
        let tenths = done * 10 / total.max(1);
        if tenths > self.tenths || done >= total {
            self.tenths = tenths;
            tracing::info!(event = "seed_progress", "{line}");
        }
    }
}

/// `seed`'s progress on a terminal: a bar of the rows this run inserts, their rate and the
/// time left, redrawn in place; each step printed above it. Left as it stands at the end (a
/// failure shows where it stopped).
struct SeedBar(ProgressBar);

impl SeedBar {
    fn new() -> SeedBar {
        // Until the first rows are in (the plan, a first INSERT): a spinner and the time.
        let bar = ProgressBar::new_spinner().with_style(
            ProgressStyle::with_template("{spinner} [{elapsed_precise}] {msg}")
                .expect("a valid template"),
        );
        bar.set_message("seed");
        // Redrawn while one INSERT or the index build runs, so the clock moves.
        bar.enable_steady_tick(Duration::from_millis(200));
        SeedBar(bar)
    }
}

impl seed::Progress for SeedBar {
    fn step(&mut self, line: &str) {
        self.0.println(line);
    }

    fn rows(&mut self, done: i64, total: i64, _line: &str) {
        let bar = &self.0;
        if bar.length().is_none() {
            bar.set_style(
                ProgressStyle::with_template(
                    "[{elapsed_precise}] {wide_bar} {human_pos}/{human_len} rows, \
                     {per_sec:0}, {eta} left",
                )
                .expect("a valid template"),
            );
            bar.set_length(total.max(0) as u64);
        }
        bar.set_position(done.max(0) as u64);
        if done >= total {
            // What follows (index build, statistics) adds no rows: a rate would only decay.
            bar.set_style(
                ProgressStyle::with_template(
                    "[{elapsed_precise}] {wide_bar} {human_pos}/{human_len} rows",
                )
                .expect("a valid template"),
            );
        }
    }
}

impl Drop for SeedBar {
    fn drop(&mut self) {
        self.0.abandon();
    }
}

fn serve(signals: signals::TerminationSignals) -> Result<(), CommandError> {
    let mut cfg = config::from_env().and_then(|c| c.config())?;
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

    let running = app::build(&cfg)?;
    tracing::info!(
        event = "listening",
        addr = %running.local_addr(),
        workers = cfg.workers,
        metrics_addr = running
            .metrics_addr()
            .map_or_else(|| "(main listener)".to_string(), |a| a.to_string()),
        "serve: listening on http://{} with {} workers",
        running.local_addr(),
        cfg.workers
    );

    let signal = signals.wait();
    tracing::info!(
        event = "shutdown_started",
        signal = %signal,
        "serve: {signal} received, shutting down"
    );
    running.shutdown(cfg.shutdown_delay, cfg.http.timeouts.shutdown);
    tracing::info!(event = "shutdown_complete", "serve: stopped");
    Ok(())
}
