//! The records service: routes, handlers, validation, SQL and the mapping of errors to statuses.
//! The one place that knows both HTTP and PostgreSQL.

pub mod assets;
pub mod email;
pub mod metrics;
pub mod migrate;
pub mod query;
pub mod repo;
pub mod routes;
pub mod seed;

pub use email::EmailAddress;
pub use repo::Repository;
pub use routes::RecordsService;
