//! The old xitca-web reference, kept for comparison with the faithful build in `../xitca`:
//! xitca-web's HTTP/1 server (xitca-server: one thread per worker, each a single-threaded tokio
//! runtime, sockets on epoll) and xitca-postgres, per worker one PostgreSQL `Client` that the
//! worker's requests share (pipelined by its driver), with the statement prepared once when the
//! worker starts (`with_async_state`), the row read zero-copy and written as JSON by serde_json;
//! the system allocator. Only `GET /user/{id}` is served: 200 with the record, 404 with a detail
//! (an id that is not an integer is a 404 here, a 400 in records-service and `../xitca`).
//!
//! Configuration: POSTGRES_DB_HOST, POSTGRES_DB_PORT (default 5432), POSTGRES_DB_NAME,
//! POSTGRES_DB_USER, POSTGRES_DB_PASSWORD, PORT (default 8024), HOST (default 127.0.0.1),
//! WORKERS (default: every CPU).

use std::{convert::Infallible, future::IntoFuture};

use serde::Serialize;
use xitca_postgres::{
    iter::AsyncLendingIterator, types::Type, Client, Execute, Postgres, Statement,
};
use xitca_web::{
    http::{
        header::{HeaderValue, CONTENT_TYPE},
        StatusCode, WebResponse,
    },
    route::get,
    service::fn_service,
    App, WebContext,
};

const SQL: &str = "SELECT id, email, text FROM records WHERE id = $1";

struct Db {
    client: Client,
    stmt: Statement,
}

#[derive(Serialize)]
struct Record<'a> {
    id: i32,
    email: &'a str,
    text: Option<&'a str>,
}

#[derive(Serialize)]
struct Detail {
    detail: String,
}

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("{name} is not set"))
}

fn database_url() -> String {
    let port = std::env::var("POSTGRES_DB_PORT").unwrap_or_else(|_| "5432".into());
    format!(
        "postgres://{}:{}@{}:{}/{}",
        env("POSTGRES_DB_USER"),
        env("POSTGRES_DB_PASSWORD"),
        env("POSTGRES_DB_HOST"),
        port,
        env("POSTGRES_DB_NAME")
    )
}

/// One worker's connection: connect, hand the driver to this worker's runtime, prepare once.
async fn connect() -> Result<Db, xitca_postgres::Error> {
    let (client, driver) = Postgres::new(database_url()).connect().await?;
    tokio::task::spawn_local(driver.into_future());
    let stmt = Statement::named(SQL, &[Type::INT4])
        .execute(&client)
        .await?
        .leak();
    Ok(Db { client, stmt })
}

fn json(status: StatusCode, body: Vec<u8>, ctx: WebContext<'_, Db>) -> WebResponse {
    let mut res = ctx.into_response(body);
    *res.status_mut() = status;
    res.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    res
}

async fn user(ctx: WebContext<'_, Db>) -> Result<WebResponse, Infallible> {
    let (status, body) = answer(&ctx).await;
    Ok(json(status, body, ctx))
}

async fn answer(ctx: &WebContext<'_, Db>) -> (StatusCode, Vec<u8>) {
    let raw = ctx.req().uri().path().strip_prefix("/user/").unwrap_or("");
    let not_found = || {
        let detail = Detail {
            detail: format!("Record with ID {raw} was not found!"),
        };
        (StatusCode::NOT_FOUND, serde_json::to_vec(&detail).unwrap())
    };
    let Ok(id) = raw.parse::<i32>() else {
        return not_found();
    };
    let db = ctx.state();
    let found = async {
        let mut rows = db.stmt.bind([id]).query(&db.client).await?;
        Ok::<_, xitca_postgres::Error>(rows.try_next().await?.map(|row| {
            serde_json::to_vec(&Record {
                id: row.get(0),
                email: row.get(1),
                text: row.get(2),
            })
            .unwrap()
        }))
    }
    .await;
    match found {
        Ok(Some(body)) => (StatusCode::OK, body),
        Ok(None) => not_found(),
        Err(e) => {
            eprintln!("database error: {e}");
            let body = br#"{"detail":"Internal Server Error"}"#.to_vec();
            (StatusCode::INTERNAL_SERVER_ERROR, body)
        }
    }
}

fn main() -> std::io::Result<()> {
    let host = std::env::var("HOST").unwrap_or_else(|_| "127.0.0.1".into());
    let port = std::env::var("PORT").unwrap_or_else(|_| "8024".into());
    let workers = std::env::var("WORKERS")
        .ok()
        .map(|w| w.parse().expect("WORKERS must be a positive integer"))
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    eprintln!("xitca-plain reference listening on {host}:{port} with {workers} workers");
    App::new()
        .with_async_state(connect)
        .at("/user/{id}", get(fn_service(user)))
        .serve()
        .worker_threads(workers)
        .bind(format!("{host}:{port}"))?
        .run()
        .wait()
}
