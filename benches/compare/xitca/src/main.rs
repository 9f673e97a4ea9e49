//! The xitca-web reference, built as xitca-web's authors build their TechEmpower entry
//! (`frameworks/Rust/xitca-web`): xitca-server (a thread per worker, each with its own
//! single-threaded runtime), HTTP/1 over io_uring, and per worker a xitca-postgres pool of one
//! connection on which the worker's requests pipeline their queries (`db_pool.rs`, `db.rs`);
//! mimalloc, sonic-rs, LTO, one codegen unit, `panic = "abort"` (`Cargo.toml`). Only
//! `GET /user/{id}` is served, with records-service's answers: 200 with the record, 404 with a
//! detail when there is none (an id outside the 32-bit range included), 400 when the id is not
//! an integer.
//!
//! Configuration: POSTGRES_DB_HOST, POSTGRES_DB_PORT (default 5432), POSTGRES_DB_NAME,
//! POSTGRES_DB_USER, POSTGRES_DB_PASSWORD, PORT (default 8004), HOST (default 127.0.0.1),
//! WORKERS (default: every CPU), XITCA_IO_URING (default 1; 0: the HTTP socket on epoll).

#[cfg(feature = "perf-allocator")]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod db;
mod db_pool;
mod ser;
mod util;

use std::convert::Infallible;

use xitca_web::{
    App, WebContext,
    http::{
        StatusCode, WebResponse,
        header::{CONTENT_TYPE, HeaderValue, SERVER},
    },
    route::get,
    service::fn_service,
};

use ser::{Detail, json_serialize};
use util::{PathId, Settings, parse_id};

type Ctx<'a> = WebContext<'a, db_pool::Client>;

const INVALID_ID: &[u8] =
    br#"{"detail":"Invalid payload provided! Please check the API documentation."}"#;
const INTERNAL: &[u8] = br#"{"detail":"Internal Server Error"}"#;

fn main() -> std::io::Result<()> {
    let settings = Settings::from_env();
    eprintln!(
        "xitca reference listening on {} with {} workers; HTTP socket on {}; allocator {}; JSON {}",
        settings.addr,
        settings.workers,
        if settings.io_uring {
            "io_uring"
        } else {
            "epoll"
        },
        if cfg!(feature = "perf-allocator") {
            "mimalloc"
        } else {
            "system"
        },
        if cfg!(feature = "perf-json") {
            "sonic-rs"
        } else {
            "serde_json"
        },
    );
    let server = App::new()
        .with_async_state(db_pool::Client::create)
        .at("/user/{id}", get(fn_service(user)))
        .serve()
        .worker_threads(settings.workers);
    #[cfg(feature = "io-uring")]
    let server = if settings.io_uring {
        server.enable_io_uring()
    } else {
        server
    };
    server.bind(settings.addr)?.run().wait()
}

async fn user(ctx: Ctx<'_>) -> Result<WebResponse, Infallible> {
    let (status, body) = answer(&ctx).await;
    let mut res = ctx.into_response(body);
    *res.status_mut() = status;
    let headers = res.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    headers.insert(SERVER, HeaderValue::from_static("xitca-web"));
    Ok(res)
}

async fn answer(ctx: &Ctx<'_>) -> (StatusCode, Vec<u8>) {
    let raw = ctx.req().uri().path().strip_prefix("/user/").unwrap_or("");
    let Some(id) = parse_id(raw) else {
        return (StatusCode::BAD_REQUEST, INVALID_ID.to_vec());
    };
    let Some(value) = id.value else {
        return not_found(&id);
    };
    match ctx.state().user(value).await {
        Ok(Some(body)) => (StatusCode::OK, body),
        Ok(None) => not_found(&id),
        Err(e) => internal(e),
    }
}

#[cold]
#[inline(never)]
fn not_found(id: &PathId<'_>) -> (StatusCode, Vec<u8>) {
    let detail = format!("Record with ID {id} was not found!");
    let body = json_serialize(&Detail { detail: &detail }).expect("a string serializes");
    (StatusCode::NOT_FOUND, body)
}

#[cold]
#[inline(never)]
fn internal(e: util::Error) -> (StatusCode, Vec<u8>) {
    eprintln!("database error: {e}");
    (StatusCode::INTERNAL_SERVER_ERROR, INTERNAL.to_vec())
}
