//! API tests: the real binary on a real socket against a real PostgreSQL, every row of API.md.
//! One test binary (modules below) so the suite links once; each test has its own database.

#[path = "../support/mod.rs"]
mod support;

mod auth;
mod cli;
mod observability;
mod rate_limit;
mod resilience;
mod routes;
