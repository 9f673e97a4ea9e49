//! records-service: a thread-per-core HTTP/1.1 JSON service over PostgreSQL on `may`.
//!
//! `http` and `pg` are self-contained libraries; `records` is the service that joins them.

pub mod config;
pub mod http;
pub mod logging;
pub mod metrics;
pub mod pg;
pub mod records;
pub mod signals;
