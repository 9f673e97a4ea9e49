//! records-service: a thread-per-core HTTP/1.1 JSON service over PostgreSQL, on the `may`
//! coroutine runtime.
//!
//! It serves the records API (`docs/API.md`): look a record up by id or email, upsert and delete
//! by email, page through records by offset or by keyset. It also serves a browser console,
//! the OpenAPI document, health probes and Prometheus metrics. The binary (`src/main.rs`) is
//! thin: it reads the configuration, installs logging and signal handling, and calls
//! [`records::app::build`]. The tests build the service the same way.
//!
//! `may` runs one worker thread per core, and every HTTP connection is a coroutine. A request
//! is parsed in place in its connection's buffer. Its query joins others on a pipelined
//! PostgreSQL connection that many coroutines share, and its JSON answer is written from the
//! row's bytes. Every bound a client or the database can push against has a limit, a timeout
//! and a test. `docs/ARCHITECTURE.md` follows one request through the code and maps each
//! concept to the file that implements it.
//!
//! # Layout
//!
//! Three rooms with one-way doors: `records` uses `http` and `pg`; `http` and `pg` know nothing
//! of records or of each other, so either can be lifted out and used alone
//! (`examples/hello_core.rs`, `examples/pg_lookups.rs`). The other modules are shared
//! utilities with no knowledge of the service.
//!
//! * `http`: the HTTP/1.1 server. It accepts connections, validates RFC 9112 framing, enforces
//!   limits, timeouts and backpressure, serves keep-alive and pipelined requests, answers
//!   refusals on its own, and shuts down gracefully. A [`http::Service`] gets a borrowed
//!   [`http::Request`] and fills a [`http::Response`]. It must never let one request's bytes
//!   be read as another's, never grow memory on a client's say-so, never let a handler's panic
//!   take the process down, and never know of records or PostgreSQL.
//!
//! * `pg`: the PostgreSQL client. It handles startup and authentication (SCRAM, channel
//!   binding), TLS, statements prepared per connection, the pipeline shared by many
//!   coroutines, reconnects with backoff and the circuit breaker, and rows borrowed from the
//!   read buffer. It must never block a caller past its deadline, never leave a caller waiting
//!   on a dead connection, never run a write after its caller was told it failed, and never
//!   know of HTTP or records.
//!
//! * `records`: the service, the one place that knows both sides. It holds the route table,
//!   handlers, input validation, the SQL and its two lanes, the mapping of every failure to a
//!   status, the `/metrics` page, migrations and seeding, and the app builder. It must never
//!   send a database, parser or panic message to a client, and never reach into the insides
//!   of `http` or `pg`.
//!
//! * `config`: every setting, with its environment variable, default and validation, in one
//!   table ([`config::VARIABLES`]). It must never fall back silently: a missing or malformed
//!   value stops the process with a message naming the variable, and no message shows the
//!   password.
//!
//! * `metrics`: striped counters and histograms the hot path can afford (one uncontended
//!   atomic add per cell), and the Prometheus/OpenMetrics exposition. It must never take a
//!   lock or allocate when a value is recorded, and never know of HTTP, PostgreSQL or records.
//!
//! * `logging`: structured `tracing` events as JSON or text lines on stderr, through a bounded
//!   non-blocking writer, and [`logging::Untrusted`] for text from outside. It must never make
//!   a worker wait for stderr (a full queue drops lines and counts them), and never let outside
//!   text forge a log line.
//!
//! * `signals`: SIGTERM and SIGINT received on a dedicated thread, and the open-file limit
//!   raised. It must never run service code in a signal handler.
//!
//! * `sync`: locks that recover their data from poisoning. Every lock in the crate goes
//!   through it. It must never turn one panicking request into a poisoned server.
//!
//! * `ascii`: byte-level helpers shared by the parsers. It must never allocate or depend on
//!   another module.

pub mod ascii;
pub mod config;
pub mod http;
pub mod logging;
pub mod metrics;
pub mod pg;
pub mod records;
pub mod signals;
pub mod sync;
