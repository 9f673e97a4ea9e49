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
//! `docs/ARCHITECTURE.md` has the file map: every module, what it is, what it may use and
//! what it must never know, and which file implements each concept. In short, three rooms with
//! one-way doors: `records` uses `http` and `pg`; `http` and `pg` know nothing of records or of
//! each other, so either can be lifted out and used alone (`examples/hello_core.rs`,
//! `examples/pg_lookups.rs`). The other modules are shared utilities with no knowledge of the
//! service.
//!
//! # What each module must never do
//!
//! * `http`: let one request's bytes be read as another's, grow memory on a client's say-so,
//!   or let a handler's panic take the process down.
//! * `pg`: block a caller past its deadline, leave a caller waiting on a dead connection, or
//!   run a write after its caller was told it failed.
//! * `records`: send a database, parser or panic message to a client, or reach into the
//!   insides of `http` or `pg`.
//! * `config`: fall back silently (a missing or malformed value stops the process with a
//!   message naming the variable), or show the password in a message.
//! * `limit`: let a client choose its own identity (only what trusted proxies appended is
//!   believed), or grow with the number of clients seen.
//! * `metrics`: take a lock or allocate when a value is recorded.
//! * `logging`: make a worker wait for stderr (a full queue drops lines and counts them), or
//!   let outside text forge a log line.
//! * `auth`: let a request that needs a token through without a valid one, or put a token, a
//!   secret or a key into a log line or a message.
//! * `signals`: run service code in a signal handler.
//! * `sync`: turn one panicking request into a poisoned server.
//! * `ascii`: allocate, or depend on another module.

pub mod ascii;
pub mod auth;
pub mod config;
pub mod http;
pub mod limit;
pub mod logging;
pub mod metrics;
pub mod pg;
pub mod records;
pub mod signals;
pub mod sync;
