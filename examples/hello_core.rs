//! The subject of `make bench-http`: our HTTP/1.1 core serving one fixed JSON response.
//!
//! `GET /json` answers 200 `{"message":"Hello, World!"}` (application/json); any other path
//! 404. Listens on 127.0.0.1:${PORT:-8101} with ${WORKERS:-number of cores} worker threads and
//! the core's default limits and timeouts. `benches/compare/minihttp` is the same program on
//! may_minihttp 0.1.11; `scripts/bench-http.sh` runs both side by side.
//!
//!     cargo build --release --examples
//!     target/release/examples/hello_core &
//!     curl -s localhost:8101/json

use std::sync::Arc;

use records_service::http::{serve, HttpConfig, Request, Response, Service, Status};

const BODY: &[u8] = br#"{"message":"Hello, World!"}"#;

/// Coroutine stack size, the same for both examples (the service's own default is 64 KiB).
const STACK_BYTES: usize = 64 * 1024;

struct Hello;

impl Service for Hello {
    fn call(&self, req: &Request<'_>, res: &mut Response<'_>) {
        if req.path() == "/json" {
            res.content_type("application/json");
            res.body_mut().extend_from_slice(BODY);
        } else {
            res.error(Status::NOT_FOUND, "Not Found");
        }
    }
}

fn env_number(name: &str, default: usize) -> usize {
    match std::env::var(name) {
        Ok(v) => v.trim().parse().unwrap_or_else(|_| {
            eprintln!("hello_core: {name} must be a number (got {v:?})");
            std::process::exit(2)
        }),
        Err(_) => default,
    }
}

fn main() {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let workers = env_number("WORKERS", cores).max(1);
    let port = env_number("PORT", 8101);
    let port = u16::try_from(port).unwrap_or_else(|_| {
        eprintln!("hello_core: PORT must be at most 65535");
        std::process::exit(2)
    });
    records_service::signals::raise_fd_limit();
    may::config()
        .set_workers(workers)
        .set_stack_size(STACK_BYTES / std::mem::size_of::<usize>());

    let listener = records_service::http::bind(("127.0.0.1", port)).unwrap_or_else(|e| {
        eprintln!("hello_core: cannot listen on 127.0.0.1:{port}: {e}");
        std::process::exit(1)
    });
    let server = serve(listener, Arc::new(Hello), HttpConfig::default()).unwrap_or_else(|e| {
        eprintln!("hello_core: cannot start the server: {e}");
        std::process::exit(1)
    });
    eprintln!(
        "hello_core: listening on http://{} with {workers} workers",
        server.local_addr()
    );
    loop {
        std::thread::park();
    }
}
