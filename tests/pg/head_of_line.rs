//! Head-of-line blocking: a client paging with `offset` 5,000,000 must not stall the
//! point lookups of everyone else. Listings run on their own connections; without that, every
//! lookup pipelined behind a multi-second listing would wait for it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::support::app::{command, env_for, App};
use crate::support::http::Conn;
use crate::support::pg::TestDb;

const ROWS: u32 = 5_000_000;

/// Lookup latencies from 4 keep-alive clients over `window`.
fn lookup_latencies(app: &App, window: Duration) -> Vec<Duration> {
    let handles: Vec<_> = (0..4u32)
        .map(|t| {
            let addr = app.addr;
            std::thread::spawn(move || {
                let mut c = Conn::connect(addr);
                let mut latencies = Vec::new();
                let mut x = 0x9E37_79B9u32.wrapping_mul(t + 1);
                let end = Instant::now() + window;
                while Instant::now() < end {
                    x ^= x << 13;
                    x ^= x >> 17;
                    x ^= x << 5;
                    let id = 1 + x % ROWS;
                    let began = Instant::now();
                    c.request("GET", &format!("/user/{id}"), None);
                    let r = c.raw_response(false);
                    assert_eq!(r.status, 200, "{}", r.text());
                    latencies.push(began.elapsed());
                }
                latencies
            })
        })
        .collect();
    handles
        .into_iter()
        .flat_map(|h| h.join().unwrap())
        .collect()
}

fn p99(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[(v.len() * 99 / 100).min(v.len() - 1)]
}

#[test]
fn deep_offset_paging_does_not_stall_point_lookups() {
    let db = TestDb::new();
    let out = command(&env_for(&db.server, &db.name))
        .args(["seed", "--rows", &ROWS.to_string()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A deep page takes seconds here; let it finish rather than hit the 5 s default timeout.
    let app = App::start_with(
        &db,
        &[
            ("PG_STATEMENT_TIMEOUT_MS", "60000"),
            ("PG_QUERY_TIMEOUT_MS", "65000"),
        ],
    );

    let baseline = p99(lookup_latencies(&app, Duration::from_secs(3)));

    let stop = Arc::new(AtomicBool::new(false));
    let pages = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let slowest_page = Arc::new(std::sync::Mutex::new(Duration::ZERO));
    let pagers: Vec<_> = (0..2)
        .map(|_| {
            let (stop, pages, slowest_page) = (stop.clone(), pages.clone(), slowest_page.clone());
            let addr = app.addr;
            std::thread::spawn(move || {
                let mut c = Conn::connect(addr);
                while !stop.load(Ordering::Relaxed) {
                    let began = Instant::now();
                    c.request("GET", "/users?offset=5000000", None);
                    let r = c.raw_response(false);
                    assert_eq!(r.status, 200, "{}", r.text());
                    let mut s = slowest_page.lock().unwrap();
                    *s = (*s).max(began.elapsed());
                    pages.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    let with_paging = p99(lookup_latencies(&app, Duration::from_secs(4)));
    stop.store(true, Ordering::Relaxed);
    for p in pagers {
        p.join().unwrap();
    }
    let slowest_page = *slowest_page.lock().unwrap();
    eprintln!(
        "lookup p99 alone {baseline:?}, while paging {with_paging:?}; {} deep pages, slowest {slowest_page:?}",
        pages.load(Ordering::Relaxed)
    );
    assert!(
        slowest_page > Duration::from_millis(200),
        "the deep page must be slow for this test to mean anything: {slowest_page:?}"
    );
    assert!(
        with_paging < baseline * 5 + Duration::from_millis(30),
        "lookups stalled behind the listing: p99 {with_paging:?} vs {baseline:?} alone"
    );
    assert!(
        with_paging < slowest_page / 2,
        "lookup p99 {with_paging:?} is of the order of a deep page ({slowest_page:?})"
    );
}
