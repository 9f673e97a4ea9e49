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

/// A closed enum with `ALL` (every variant, in declaration order, so `ALL[v as usize] == v`)
/// and `COUNT`, both derived from its one list of variants: a variant added anywhere in it is
/// listed and counted, and every `match` on the enum then names the places to change.
macro_rules! closed_enum {
    ($(#[$meta:meta])* $vis:vis enum $name:ident {
        $($(#[$variant_meta:meta])* $variant:ident,)+
    }) => {
        $(#[$meta])*
        $vis enum $name {
            $($(#[$variant_meta])* $variant,)+
        }

        impl $name {
            /// Every variant, in declaration order.
            pub const ALL: [$name; $name::COUNT] = [$($name::$variant,)+];
            /// How many variants there are.
            pub const COUNT: usize = [$(stringify!($variant),)+].len();
        }
    };
}

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
