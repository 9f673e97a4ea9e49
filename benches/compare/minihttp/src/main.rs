//! The reference for `make bench-http`: may_minihttp 0.1.11 serving the same fixed JSON
//! response as records-service's `examples/hello_core.rs`, so the two can be measured side by side.
//!
//! `GET /json` answers 200 `{"message":"Hello, World!"}` (application/json); any other path
//! 404. Listens on 127.0.0.1:${PORT:-8102} with ${WORKERS:-number of cores} worker threads.
//! Not for exposure: may_minihttp's defects are listed in ARCHITECTURE.md.
//!
//!     cd benches/compare/minihttp && cargo build --release
//!     target/release/hello_minihttp &
//!     curl -s localhost:8102/json

use std::io;

use may_minihttp::{HttpService, HttpServiceFactory, Request, Response};

const BODY: &[u8] = br#"{"message":"Hello, World!"}"#;

/// Coroutine stack size, the same for both examples (the service's own default is 64 KiB).
const STACK_BYTES: usize = 64 * 1024;

struct Hello;

impl HttpService for Hello {
    fn call(&mut self, req: Request, rsp: &mut Response) -> io::Result<()> {
        if req.path() == "/json" {
            rsp.header("Content-Type: application/json");
            rsp.body_mut().extend_from_slice(BODY);
        } else {
            rsp.status_code(404, "Not Found");
            rsp.header("Content-Type: application/json");
            rsp.body_mut()
                .extend_from_slice(br#"{"detail":"Not Found"}"#);
        }
        Ok(())
    }
}

struct HelloFactory;

impl HttpServiceFactory for HelloFactory {
    type Service = Hello;

    fn new_service(&self, _id: usize) -> Hello {
        Hello
    }
}

fn env_number(name: &str, default: usize) -> usize {
    match std::env::var(name) {
        Ok(v) => v.trim().parse().unwrap_or_else(|_| {
            eprintln!("hello_minihttp: {name} must be a number (got {v:?})");
            std::process::exit(2)
        }),
        Err(_) => default,
    }
}

fn main() {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let workers = env_number("WORKERS", cores).max(1);
    let port = env_number("PORT", 8102);
    let port = u16::try_from(port).unwrap_or_else(|_| {
        eprintln!("hello_minihttp: PORT must be at most 65535");
        std::process::exit(2)
    });
    raise_fd_limit();
    may::config()
        .set_workers(workers)
        .set_stack_size(STACK_BYTES / std::mem::size_of::<usize>());

    let server = HelloFactory.start(("127.0.0.1", port)).unwrap_or_else(|e| {
        eprintln!("hello_minihttp: cannot listen on 127.0.0.1:{port}: {e}");
        std::process::exit(1)
    });
    eprintln!("hello_minihttp: listening on http://127.0.0.1:{port} with {workers} workers");
    if server.join().is_err() {
        eprintln!("hello_minihttp: the accept loop panicked");
        std::process::exit(1);
    }
}

/// As records-service's `signals::raise_fd_limit`: the soft descriptor limit up to the hard one,
/// so both servers of the comparison may hold as many connections.
fn raise_fd_limit() {
    // SAFETY: getrlimit/setrlimit on a local struct.
    unsafe {
        let mut lim: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}
