//! The configuration table: every variable the service reads, its default, its bounds and what
//! it sets. The parser (`super::Source`) reads defaults and bounds from here; the README's table
//! and `.env.example` are checked against it (`super`'s tests).

/// One row of the configuration table: the variable, its default (`None`: no default; the
/// description says whether it is required), for whole numbers the bounds, and what it sets.
/// The parser reads defaults and bounds from here ([`Source`]); the README's table and
/// `.env.example` are checked against it (tests below).
#[derive(Debug, Clone, Copy)]
pub struct Setting {
    pub name: &'static str,
    pub default: Option<&'static str>,
    /// The accepted range of a whole-number setting, inclusive.
    pub bounds: Option<(u64, u64)>,
    pub description: &'static str,
}

/// A day in milliseconds: the longest timeout accepted.
pub(super) const DAY_MS: u64 = 24 * 3600 * 1000;

/// The row of `name`. Every variable the parser reads has one (a test checks it).
pub(super) fn setting(name: &str) -> &'static Setting {
    VARIABLES
        .iter()
        .find(|s| s.name == name)
        .unwrap_or_else(|| panic!("{name} is not in config::VARIABLES"))
}

pub const VARIABLES: &[Setting] = &[
    Setting {
        name: "DATABASE_URL",
        default: None,
        bounds: None,
        description: "postgres://USER:PASSWORD@HOST:PORT/DATABASE?PARAMETERS, libpq's URL, instead of the \
         POSTGRES_DB_* variables (not both; empty counts as unset)",
    },
    Setting {
        name: "POSTGRES_DB_HOST",
        default: None,
        bounds: None,
        description: "PostgreSQL host name or address (required unless DATABASE_URL is set)",
    },
    Setting {
        name: "POSTGRES_DB_PORT",
        default: Some("5432"),
        bounds: Some((1, 65535)),
        description: "PostgreSQL port (not with DATABASE_URL)",
    },
    Setting {
        name: "POSTGRES_DB_NAME",
        default: None,
        bounds: None,
        description: "database name (required unless DATABASE_URL is set)",
    },
    Setting {
        name: "POSTGRES_DB_USER",
        default: None,
        bounds: None,
        description: "user name (required unless DATABASE_URL is set)",
    },
    Setting {
        name: "POSTGRES_DB_PASSWORD",
        default: None,
        bounds: None,
        description: "password, may be empty for trust authentication (required unless DATABASE_URL is set)",
    },
    Setting {
        name: "PGSSLMODE",
        default: None,
        bounds: None,
        description: "TLS: disable, prefer (the default), require, verify-ca or verify-full",
    },
    Setting {
        name: "PGSSLROOTCERT",
        default: None,
        bounds: None,
        description: "CA certificates (PEM file) to verify the server against, or system for the system's \
         store (then sslmode defaults to verify-full)",
    },
    Setting {
        name: "PGSSLCERT",
        default: None,
        bounds: None,
        description: "client certificate (PEM file), with PGSSLKEY",
    },
    Setting {
        name: "PGSSLKEY",
        default: None,
        bounds: None,
        description: "the client certificate's key (PEM file)",
    },
    Setting {
        name: "PGCHANNELBINDING",
        default: None,
        bounds: None,
        description: "SCRAM channel binding: disable, prefer (the default) or require",
    },
    Setting {
        name: "PGREQUIREAUTH",
        default: None,
        bounds: None,
        description: "authentication methods the server may ask for: password, md5, scram-sha-256, none, \
         comma-separated (or !method, to refuse one); by default any, but no cleartext or MD5 \
         password unless the server's certificate is verified (TLS with PGSSLROOTCERT, sslmode \
         require, verify-ca or verify-full)",
    },
    Setting {
        name: "PGTARGETSESSIONATTRS",
        default: None,
        bounds: None,
        description: "where reads go with several hosts: any (the default, the first that answers), \
         read-write (the primary) or prefer-standby (a standby, else the primary); writes always \
         go to the primary",
    },
    Setting {
        name: "PGAPPNAME",
        default: None,
        bounds: None,
        description: "application_name the server shows for the connections (default records-service)",
    },
    Setting {
        name: "SERVER_HOST",
        default: Some("127.0.0.1"),
        bounds: None,
        description: "address to listen on",
    },
    Setting {
        name: "SERVER_PORT",
        default: Some("8000"),
        bounds: Some((0, 65535)),
        description: "port to listen on",
    },
    Setting {
        name: "WORKERS",
        default: Some("number of cores"),
        bounds: Some((1, 1024)),
        description: "worker threads, and pipelined PostgreSQL connections",
    },
    Setting {
        name: "PG_LISTING_CONNECTIONS",
        default: Some("2"),
        bounds: Some((1, 64)),
        description: "extra connections for listings (slow queries)",
    },
    Setting {
        name: "PG_CONNECT_TIMEOUT_MS",
        default: Some("5000"),
        bounds: Some((1, DAY_MS)),
        description: "TCP connect plus startup and authentication",
    },
    Setting {
        name: "PG_STATEMENT_TIMEOUT_MS",
        default: Some("5000"),
        // Below PG_QUERY_TIMEOUT_MS's bound, which must be longer.
        bounds: Some((0, DAY_MS - 1)),
        description: "server-side statement_timeout (0: the server's own setting)",
    },
    Setting {
        name: "PG_QUERY_TIMEOUT_MS",
        default: Some("6000"),
        bounds: Some((1, DAY_MS)),
        description: "client-side deadline on every query; must be longer than PG_STATEMENT_TIMEOUT_MS \
         (unless that is 0), so that the server cancels a slow statement before the client gives up on it",
    },
    Setting {
        name: "PG_MAX_IN_FLIGHT",
        default: Some("1024"),
        bounds: Some((1, 1 << 20)),
        description: "queries in flight per connection (503 at once beyond)",
    },
    Setting {
        name: "PG_MAX_MESSAGE_BYTES",
        default: Some("67108864"),
        bounds: Some((1 << 16, 1 << 30)),
        description: "largest message accepted from the server (the connection is dropped beyond)",
    },
    Setting {
        name: "PG_MAX_STANDBY_LAG_MS",
        default: Some("10000"),
        bounds: Some((0, DAY_MS)),
        description: "with target_session_attrs=prefer-standby: a standby further behind is passed over (0: no bound)",
    },
    Setting {
        name: "PG_STATEMENT_MODE",
        default: Some("auto"),
        bounds: None,
        description: "auto, named or transaction: statements prepared once per connection, or in each transaction (for transaction poolers)",
    },
    Setting {
        name: "HTTP_MAX_HEAD_BYTES",
        default: Some("65536"),
        bounds: Some((1024, 16 << 20)),
        description: "request line plus headers (431 beyond)",
    },
    Setting {
        name: "HTTP_MAX_HEADERS",
        default: Some("100"),
        bounds: Some((1, 10_000)),
        description: "header fields per request (431 beyond)",
    },
    Setting {
        name: "HTTP_MAX_BODY_BYTES",
        default: Some("1048576"),
        bounds: Some((0, 1 << 30)),
        description: "request body (413 beyond)",
    },
    Setting {
        name: "HTTP_MAX_CONNECTIONS",
        default: Some("10000"),
        bounds: Some((1, 1 << 24)),
        description: "open connections (503 beyond)",
    },
    Setting {
        name: "HTTP_MAX_PIPELINED",
        default: Some("64"),
        bounds: Some((1, 1 << 16)),
        description: "pipelined requests answered per batch",
    },
    Setting {
        name: "HTTP_MAX_OUTPUT_BYTES",
        default: Some("262144"),
        bounds: Some((1024, 1 << 30)),
        description: "unsent output before reading stops",
    },
    Setting {
        name: "HTTP_MAX_BUFFERED_BYTES",
        default: Some("268435456"),
        bounds: Some((0, 1 << 40)),
        description: "request heads and bodies, and answers waiting for slow readers, buffered across all connections (503 beyond)",
    },
    Setting {
        name: "HTTP_MAX_LINGER_BYTES",
        default: Some("16777216"),
        bounds: Some((0, 1 << 40)),
        description: "input discarded while closing with unread input",
    },
    Setting {
        name: "HTTP_SEND_BUFFER_BYTES",
        default: Some("262144"),
        bounds: Some((0, 1 << 30)),
        description: "kernel send buffer per connection (SO_SNDBUF; 0: the kernel's default)",
    },
    Setting {
        name: "HTTP_HEADER_TIMEOUT_MS",
        default: Some("10000"),
        bounds: Some((1, DAY_MS)),
        description: "time to send a request head (408 after)",
    },
    Setting {
        name: "HTTP_BODY_TIMEOUT_MS",
        default: Some("30000"),
        bounds: Some((1, DAY_MS)),
        description: "time to send a request body (408 after)",
    },
    Setting {
        name: "HTTP_IDLE_TIMEOUT_MS",
        default: Some("60000"),
        bounds: Some((1, DAY_MS)),
        description: "idle keep-alive connection",
    },
    Setting {
        name: "HTTP_WRITE_TIMEOUT_MS",
        default: Some("30000"),
        bounds: Some((1, DAY_MS)),
        description: "sending one batch of answers to a client (cut after)",
    },
    Setting {
        name: "HTTP_LINGER_TIME_MS",
        default: Some("30000"),
        bounds: Some((0, DAY_MS)),
        description: "lingering close, in all",
    },
    Setting {
        name: "HTTP_LINGER_TIMEOUT_MS",
        default: Some("5000"),
        bounds: Some((1, DAY_MS)),
        description: "lingering close, longest wait for more input",
    },
    Setting {
        name: "RATE_LIMIT_PER_CLIENT",
        default: Some("0"),
        bounds: Some((0, 1_000_000)),
        description: "requests a second per client, and the burst (429 beyond); 0: no limit",
    },
    Setting {
        name: "RATE_LIMIT_MAX_CLIENTS",
        default: Some("100000"),
        bounds: Some((1, 10_000_000)),
        description: "clients the rate limiter tracks at once (beyond, the least active are forgotten)",
    },
    Setting {
        name: "TRUSTED_PROXIES",
        default: None,
        bounds: None,
        description: "proxies trusted to name the client (X-Forwarded-For, PROXY protocol v2): \
         addresses and CIDR blocks, comma-separated; unset: none",
    },
    Setting {
        name: "SHUTDOWN_DELAY_MS",
        default: Some("0"),
        bounds: Some((0, DAY_MS)),
        description: "after SIGTERM, keep serving this long with /readyz at 503 before closing the listener (for a balancer to notice)",
    },
    Setting {
        name: "SHUTDOWN_TIMEOUT_MS",
        default: Some("10000"),
        bounds: Some((0, DAY_MS)),
        description: "graceful shutdown deadline",
    },
    Setting {
        name: "STATIC_DIR",
        default: Some("static"),
        bounds: None,
        description: "directory served at / and /static/",
    },
    Setting {
        name: "STACK_SIZE_KIB",
        default: Some("64"),
        bounds: Some((16, 8192)),
        description: "coroutine stack size",
    },
    Setting {
        name: "METRICS",
        default: Some("on"),
        bounds: None,
        description: "on: count requests and queries for /metrics; off: skip the counting (/metrics then shows only the process, the connections and PostgreSQL's state)",
    },
    Setting {
        name: "METRICS_ADDR",
        default: None,
        bounds: None,
        description: "HOST:PORT of a separate listener for /metrics, /livez and /readyz (the public port then answers 404 for /metrics); unset: the main listener serves them",
    },
    Setting {
        name: "LOG_FORMAT",
        default: None,
        bounds: None,
        description: "json (one object per line) or text; unset: json, or text when stderr is a terminal",
    },
    Setting {
        name: "LOG_LEVEL",
        default: Some("info"),
        bounds: None,
        description: "error, warn, info, debug or trace",
    },
    Setting {
        name: "ACCESS_LOG",
        default: Some("errors"),
        bounds: None,
        description: "off, errors (requests answered 5xx) or all: one log event per request",
    },
    Setting {
        name: "AUTH_REQUIRED",
        default: Some("off"),
        bounds: None,
        description: "which requests need a bearer token (JWT): off, writes (POST and DELETE) or all (every records route); never /livez, /readyz, /metrics or the documentation",
    },
    Setting {
        name: "AUTH_JWT_SECRET",
        default: None,
        bounds: None,
        description: "the HS256 secret tokens are verified with, at least 32 bytes (not with AUTH_JWT_SECRET_FILE)",
    },
    Setting {
        name: "AUTH_JWT_SECRET_FILE",
        default: None,
        bounds: None,
        description: "a file holding the HS256 secret (one final line end is not part of it)",
    },
    Setting {
        name: "AUTH_JWKS_FILE",
        default: None,
        bounds: None,
        description: "a JWKS file of RSA (RS256) and P-256 (ES256) public keys, chosen by kid; read again within a second of a change",
    },
    Setting {
        name: "AUTH_AUDIENCE",
        default: None,
        bounds: None,
        description: "when set, tokens must carry this aud",
    },
    Setting {
        name: "AUTH_ISSUER",
        default: None,
        bounds: None,
        description: "when set, tokens must carry this iss",
    },
    Setting {
        name: "AUTH_LEEWAY_SECONDS",
        default: Some("30"),
        bounds: Some((0, 300)),
        description: "clock skew allowed on a token's exp and nbf",
    },
];
