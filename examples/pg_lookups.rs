//! Lookups per second through the pipelined client alone (no HTTP): the records service's
//! `by_id` statement with ids uniform in 1..ROWS, from CALLERS coroutines on WORKERS workers,
//! one client (connection) per worker, for SECONDS. Prints one line: `lookups/s N`.
//!
//! Configuration: POSTGRES_DB_* (as the service), WORKERS (default 2), CALLERS (default 256),
//! SECONDS (default 10), ROWS (default 10000000). Used by scripts/bench-pg.sh.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use records_service::config;
use records_service::pg::{Client, Param, Statement};
use records_service::records::statements::Query;

fn env_num(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The service's lookup by id, run on the PostgreSQL client alone.
const BY_ID: Statement = Query::ById.statement();

fn main() {
    let workers = env_num("WORKERS", 2) as usize;
    let callers = env_num("CALLERS", 256);
    let seconds = env_num("SECONDS", 10);
    let rows = env_num("ROWS", 10_000_000) as u32;
    may::config()
        .set_workers(workers)
        .set_stack_size(64 * 1024 / 8);
    let db = config::from_env()
        .and_then(|c| c.database())
        .unwrap_or_else(|e| {
            eprintln!("{e}");
            std::process::exit(2)
        });
    let clients: Vec<Client> = (0..workers)
        .map(|_| Client::start(db.connect_params(), &[BY_ID]))
        .collect();
    for c in &clients {
        c.wait_connected(Duration::from_secs(10)).expect("connect");
    }
    let clients = Arc::new(clients);
    let done = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let handles: Vec<_> = (0..callers)
        .map(|i| {
            let (clients, done, stop) = (clients.clone(), done.clone(), stop.clone());
            // SAFETY: the coroutine blocks only on may primitives (the client).
            unsafe {
                may::coroutine::spawn(move || {
                    let client = &clients[i as usize % clients.len()];
                    let mut x = (i as u32).wrapping_mul(0x9E37_79B9) | 1;
                    while !stop.load(Ordering::Relaxed) {
                        x ^= x << 13;
                        x ^= x >> 17;
                        x ^= x << 5;
                        let id = 1 + (x % rows) as i32;
                        let reply = client
                            .query_read(BY_ID.name, &[Param::Int4(id)], Duration::from_secs(5))
                            .expect("lookup");
                        assert_eq!(reply.rows.len(), 1, "id {id} exists");
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                })
            }
        })
        .collect();
    std::thread::sleep(Duration::from_secs(seconds));
    let n = done.load(Ordering::Relaxed);
    let elapsed = started.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    for h in handles {
        let _ = h.join();
    }
    let stats = clients[0].stats();
    let q = stats.queries.load(Ordering::Relaxed);
    let w = stats.writes.load(Ordering::Relaxed).max(1);
    println!("lookups/s {:.0}", n as f64 / elapsed);
    eprintln!(
        "pipelining depth: {:.1} queries per write on connection 0",
        q as f64 / w as f64
    );
}
