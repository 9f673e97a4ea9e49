//! Failure paths through the running service: the database going away and coming back, its
//! sessions being killed under load, statement timeouts, and SIGTERM under load.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::support::app::App;
use crate::support::http::{get, Conn};
use crate::support::pg::{Cluster, TestDb};
use crate::support::wait::eventually;

#[test]
fn database_outage_gives_fast_503_and_the_service_recovers_by_itself() {
    let cluster = Cluster::start();
    let s = cluster.server.clone();
    s.execute("CREATE DATABASE outage");
    let c = records_service::pg::connect_once(&s.params("outage")).unwrap();
    records_service::records::migrate::migrate(&c).unwrap();
    c.simple_query(
        "INSERT INTO records (email, text) VALUES ('a@b.com', 'x')",
        Duration::from_secs(5),
    )
    .unwrap();
    c.close();
    let env = crate::support::app::env_for(&s, "outage");
    let app = App::spawn(&env);
    assert_eq!(get(app.addr, "/user/1").status, 200);

    cluster.stop_server();
    // Within a bounded time every request fails fast with 503 and Retry-After.
    assert!(
        eventually(Duration::from_secs(5), || get(app.addr, "/user/1").status
            == 503),
        "503 while the database is down"
    );
    for path in ["/user/1", "/user?email=a@b.com", "/users", "/readyz"] {
        let started = Instant::now();
        let r = get(app.addr, path);
        assert_eq!(r.status, 503, "{path}");
        assert_eq!(r.header("retry-after"), Some("1"), "{path}");
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{path} took {:?}",
            started.elapsed()
        );
        assert!(
            !r.text().contains("connect"),
            "no database error text leaks: {}",
            r.text()
        );
    }
    assert_eq!(
        get(app.addr, "/livez").status,
        200,
        "liveness checks nothing external"
    );

    cluster.start_server();
    // Backoff is capped at about 2 s: the service is back within a few seconds.
    assert!(
        eventually(Duration::from_secs(10), || get(app.addr, "/user/1").status
            == 200),
        "recovered after the database returned; log:\n{}",
        app.log_text()
    );
    // Readiness needs every connection of both lanes back; each reconnects on its own
    // backoff, so the last can come up to one backoff interval (2 s) after the first.
    assert!(
        eventually(Duration::from_secs(5), || get(app.addr, "/readyz").status
            == 200),
        "ready again; log:\n{}",
        app.log_text()
    );
    assert_eq!(
        get(app.addr, "/users").status,
        200,
        "the listing lane recovered too"
    );
}

#[test]
fn service_starts_while_the_database_is_down_and_serves_once_it_is_up() {
    let cluster = Cluster::start();
    let s = cluster.server.clone();
    s.execute("CREATE DATABASE late");
    let c = records_service::pg::connect_once(&s.params("late")).unwrap();
    records_service::records::migrate::migrate(&c).unwrap();
    c.close();
    cluster.stop_server();
    let app = App::spawn(&crate::support::app::env_for(&s, "late"));
    assert!(
        app.log_text().contains("cannot reach PostgreSQL"),
        "{}",
        app.log_text()
    );
    assert_eq!(get(app.addr, "/readyz").status, 503);
    assert_eq!(get(app.addr, "/user/1").status, 503);
    cluster.start_server();
    assert!(eventually(Duration::from_secs(10), || get(
        app.addr, "/readyz"
    )
    .status
        == 200));
    assert_eq!(get(app.addr, "/user/1").status, 404);
}

#[test]
fn killed_sessions_fail_fast_and_reconnect_under_load() {
    let db = TestDb::new();
    db.execute("INSERT INTO records (email, text) SELECT 'u' || g || '@x.com', 't' FROM generate_series(1, 100) g");
    let app = App::start(&db);
    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicUsize::new(0));
    let unavailable = Arc::new(AtomicUsize::new(0));
    let slowest = Arc::new(std::sync::Mutex::new(Duration::ZERO));
    let workers: Vec<_> = (0..4)
        .map(|t| {
            let (stop, ok, unavailable, slowest) = (
                stop.clone(),
                ok.clone(),
                unavailable.clone(),
                slowest.clone(),
            );
            let addr = app.addr;
            std::thread::spawn(move || {
                let mut c = Conn::connect(addr);
                let mut i = 0;
                while !stop.load(Ordering::Relaxed) {
                    i += 1;
                    let started = Instant::now();
                    c.request("GET", &format!("/user/{}", 1 + (i * 7 + t) % 100), None);
                    let r = c
                        .next_response(false)
                        .expect("a response, never a dropped connection");
                    let took = started.elapsed();
                    let mut s = slowest.lock().unwrap();
                    *s = (*s).max(took);
                    match r.status {
                        200 => ok.fetch_add(1, Ordering::Relaxed),
                        503 => unavailable.fetch_add(1, Ordering::Relaxed),
                        other => panic!("unexpected status {other}: {}", r.text()),
                    };
                }
            })
        })
        .collect();
    assert!(eventually(Duration::from_secs(5), || ok
        .load(Ordering::Relaxed)
        > 100));
    let before = db.scalar(&format!(
        "SELECT string_agg(pid::text, ',' ORDER BY pid) FROM pg_stat_activity WHERE datname = '{}' AND application_name = 'records-service'",
        db.name
    ));
    let killed = db.scalar(&format!(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = '{}' AND application_name = 'records-service'",
        db.name
    ));
    assert_eq!(
        killed.as_deref(),
        Some("4"),
        "2 fast-lane and 2 listing connections"
    );
    let ok_at_kill = ok.load(Ordering::Relaxed);
    // It recovers by itself: successes resume.
    assert!(
        eventually(Duration::from_secs(10), || ok.load(Ordering::Relaxed)
            > ok_at_kill + 200),
        "lookups resumed after the sessions were killed"
    );
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.join()
            .expect("no client saw a hang or a dropped connection");
    }
    assert!(
        *slowest.lock().unwrap() < Duration::from_secs(3),
        "callers failed fast: {:?}",
        slowest.lock().unwrap()
    );
    let after = db.scalar(&format!(
        "SELECT string_agg(pid::text, ',' ORDER BY pid) FROM pg_stat_activity WHERE datname = '{}' AND application_name = 'records-service'",
        db.name
    ));
    assert_ne!(before, after, "new sessions replaced the killed ones");
    // Every connection is back (a listing connection killed less than a second after it was
    // made reconnects after a backoff, not at once).
    assert!(eventually(Duration::from_secs(5), || get(
        app.addr, "/readyz"
    )
    .status
        == 200));
}

#[test]
fn statement_timeout_turns_a_slow_listing_into_503() {
    let db = TestDb::new();
    db.execute("INSERT INTO records (email, text) SELECT 'user' || g || '@x.com', 't' FROM generate_series(1, 1000000) g");
    let app = App::start_with(&db, &[("PG_STATEMENT_TIMEOUT_MS", "20")]);
    let started = Instant::now();
    let r = get(app.addr, "/users?offset=999990");
    assert_eq!(r.status, 503, "{}", r.text());
    assert_eq!(r.header("retry-after"), Some("1"));
    assert!(started.elapsed() < Duration::from_secs(2));
    // The log line travels through a pipe; the response may overtake it.
    let logged = || {
        app.log_text()
            .contains("canceling statement due to statement timeout")
    };
    assert!(
        eventually(Duration::from_secs(5), logged),
        "{}",
        app.log_text()
    );
    assert_eq!(
        get(app.addr, "/users?limit=1").status,
        200,
        "the connection survives a cancelled statement"
    );
}

#[test]
fn sigterm_under_load_finishes_requests_and_exits_zero() {
    let db = TestDb::new();
    db.execute("INSERT INTO records (email, text) VALUES ('a@b.com', 'x')");
    let mut app = App::start(&db);
    let stop = Arc::new(AtomicBool::new(false));
    let complete = Arc::new(AtomicUsize::new(0));
    let workers: Vec<_> = (0..8)
        .map(|_| {
            let (stop, complete) = (stop.clone(), complete.clone());
            let addr = app.addr;
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let Ok(stream) = std::net::TcpStream::connect(addr) else {
                        return;
                    };
                    // Reads and writes time out after 15 s.
                    let mut c = Conn::from_stream(stream);
                    loop {
                        if c.try_send(b"GET /user/1 HTTP/1.1\r\nHost: t\r\n\r\n")
                            .is_err()
                        {
                            break;
                        }
                        // `next_response` panics on a torn response; None is a clean close.
                        match c.next_response(false) {
                            Some(r) => {
                                assert_eq!(r.status, 200, "{}", r.text());
                                complete.fetch_add(1, Ordering::Relaxed);
                                if r.header("connection") == Some("close") {
                                    break;
                                }
                            }
                            None => break,
                        }
                    }
                }
            })
        })
        .collect();
    assert!(eventually(Duration::from_secs(5), || complete
        .load(Ordering::Relaxed)
        > 500));
    app.signal(libc::SIGTERM);
    let code = app.wait_exit(Duration::from_secs(12));
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.join().expect("no torn response");
    }
    assert_eq!(
        code,
        Some(0),
        "exit 0 within the shutdown deadline; log:\n{}",
        app.log_text()
    );
    let logged = || app.log_text().contains("SIGTERM received");
    assert!(
        eventually(Duration::from_secs(5), logged),
        "{}",
        app.log_text()
    );
}

/// A schema change under the running service (`ALTER TABLE records ALTER COLUMN id TYPE
/// bigint` used to make every `GET /user/{id}` answer 500 until a restart: "cached plan must not
/// change result type", 0A000). The statement is prepared again and the lookup retried.
#[test]
fn a_column_widened_under_the_running_service_keeps_lookups_working() {
    let db = TestDb::new();
    db.execute("INSERT INTO records (id, email, text) VALUES (7, 'seven@x.com', 'seven')");
    let app = App::start(&db);
    assert_eq!(get(app.addr, "/user/7").status, 200);
    db.execute("ALTER TABLE records ALTER COLUMN id TYPE bigint");
    for _ in 0..4 {
        let r = get(app.addr, "/user/7");
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.json()["id"], 7);
        assert_eq!(r.json()["text"], "seven");
    }
    assert_eq!(get(app.addr, "/user/8").status, 404);
}

/// SHUTDOWN_DELAY_MS: after SIGTERM, /readyz answers 503 at once (a balancer's health check
/// takes the replica out) while new connections and requests are still served for the delay;
/// then the usual graceful shutdown, exit 0.
#[test]
fn shutdown_delay_keeps_serving_while_readyz_says_503() {
    let db = TestDb::new();
    db.execute("INSERT INTO records (id, email, text) VALUES (1, 'a@b.com', 'x')");
    let mut app = App::start_with(&db, &[("SHUTDOWN_DELAY_MS", "1500")]);
    assert_eq!(get(app.addr, "/readyz").status, 200);
    let signalled = Instant::now();
    app.signal(libc::SIGTERM);
    assert!(eventually(Duration::from_secs(1), || get(
        app.addr, "/readyz"
    )
    .status
        == 503));
    // Well inside the delay: a new connection is still accepted and served.
    let r = get(app.addr, "/user/1");
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(signalled.elapsed() < Duration::from_millis(1500));
    assert_eq!(app.wait_exit(Duration::from_secs(15)), Some(0));
    assert!(
        signalled.elapsed() >= Duration::from_millis(1500),
        "exited only after the delay"
    );
}
