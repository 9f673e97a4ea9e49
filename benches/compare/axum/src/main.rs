//! The axum reference: axum 0.8 + tokio (multi-thread) + tokio-postgres + deadpool-postgres.
//!
//! Written the way axum users write it: a deadpool pool of 16 in the router state, one pooled
//! client per request, a prepared statement cached per connection (`prepare_cached`), the row
//! mapped to a serde struct and returned as `Json`. Only `GET /user/{id}` is served.
//!
//! Configuration: POSTGRES_DB_HOST, POSTGRES_DB_PORT (default 5432), POSTGRES_DB_NAME,
//! POSTGRES_DB_USER, POSTGRES_DB_PASSWORD, PORT (default 8002), HOST (default 127.0.0.1).

use axum::{
    extract::{Path, State},
    http::StatusCode,
    response::{IntoResponse, Response},
    routing::get,
    Json, Router,
};
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use serde::Serialize;
use serde_json::json;

#[derive(Serialize)]
struct Record {
    id: i32,
    email: String,
    text: Option<String>,
}

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("{name} is not set"))
}

async fn get_user(State(pool): State<Pool>, Path(id): Path<i64>) -> Response {
    let not_found = || {
        (
            StatusCode::NOT_FOUND,
            Json(json!({ "detail": format!("Record with ID {id} was not found!") })),
        )
            .into_response()
    };
    let Ok(id32) = i32::try_from(id) else {
        return not_found();
    };
    let result = async {
        let client = pool.get().await.map_err(|e| e.to_string())?;
        let stmt = client
            .prepare_cached("SELECT id, email, text FROM records WHERE id = $1")
            .await
            .map_err(|e| e.to_string())?;
        client.query_opt(&stmt, &[&id32]).await.map_err(|e| e.to_string())
    }
    .await;
    match result {
        Ok(Some(row)) => Json(Record {
            id: row.get(0),
            email: row.get(1),
            text: row.get(2),
        })
        .into_response(),
        Ok(None) => not_found(),
        Err(e) => {
            eprintln!("database error: {e}");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                Json(json!({ "detail": "Internal Server Error" })),
            )
                .into_response()
        }
    }
}

#[tokio::main]
async fn main() {
    let mut cfg = tokio_postgres::Config::new();
    cfg.host(env("POSTGRES_DB_HOST"))
        .port(
            std::env::var("POSTGRES_DB_PORT")
                .ok()
                .map(|p| p.parse().expect("POSTGRES_DB_PORT must be a port number"))
                .unwrap_or(5432),
        )
        .dbname(env("POSTGRES_DB_NAME"))
        .user(env("POSTGRES_DB_USER"))
        .password(env("POSTGRES_DB_PASSWORD"));
    let manager = Manager::from_config(
        cfg,
        tokio_postgres::NoTls,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    let pool = Pool::builder(manager)
        .max_size(16)
        .build()
        .expect("building the pool");

    let app = Router::new()
        .route("/user/{id}", get(get_user))
        .with_state(pool);

    let host = std::env::var("HOST").unwrap_or_else(|_| "127.0.0.1".into());
    let port = std::env::var("PORT").unwrap_or_else(|_| "8002".into());
    let listener = tokio::net::TcpListener::bind(format!("{host}:{port}"))
        .await
        .expect("binding the listener");
    eprintln!("axum reference listening on {host}:{port}");
    axum::serve(listener, app)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await
        .expect("serving");
}
