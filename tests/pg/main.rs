//! PostgreSQL tests: the client, TLS, failover, PgBouncer and the service's behaviour under a
//! slow query, each against real servers started by the harness (tests/support). One test
//! binary (modules below) so the support code compiles and links once; each test has its own
//! database or server.
//!
//! - `client`: the pipelined client: ordering under concurrency, every authentication method,
//!   typed errors, timeouts, overload, killed sessions and a server restart;
//! - `resilience`: the client's guarantees under trouble, against a real server or a scripted
//!   peer (`support::fakepg`); `RECORDS_TEST_DB=testcontainers cargo test --test pg --
//!   resilience::` runs them against a container;
//! - `tls`: every sslmode, certificate checks, channel binding, the authentication policy;
//! - `failover`: a streaming standby: failover under writes, reads on the standby;
//! - `pgbouncer`: behind PgBouncer in session and transaction pooling;
//! - `head_of_line`: a deep-offset listing does not stall point lookups.

#[path = "../support/mod.rs"]
mod support;

mod client;
mod failover;
mod head_of_line;
mod pgbouncer;
mod resilience;
mod tls;
