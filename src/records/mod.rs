//! The records service: the one place that knows both HTTP and PostgreSQL.
//!
//! - `routes`: the route table, which routes each listener serves, and `Service::call` (timing,
//!   counting, failures, the access log);
//! - `handlers`: one method per route;
//! - `input`: reading what a client sent (path ids, integers, `email`, the JSON body);
//! - `failure`: every way a request fails, with its status and answer;
//! - `route`: every route, which one a path is, and its template;
//! - `statements`: every SQL statement and its lane;
//! - `repo`: the connections the statements run on, one method per statement;
//! - `metrics`: what is counted, and the `/metrics` answer;
//! - `email`, `query`, `assets`, `migrate`, `seed`: the rest.

pub mod app;
pub mod assets;
pub mod email;
pub mod failure;
mod handlers;
pub mod input;
pub mod metrics;
pub mod migrate;
pub mod query;
pub mod repo;
pub mod route;
pub mod routes;
pub mod seed;
pub mod statements;

pub use email::EmailAddress;
pub use repo::Repository;
pub use routes::RecordsService;
