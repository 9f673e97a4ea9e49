//! The pipelined PostgreSQL client against a real PostgreSQL started by the harness:
//! ordering under concurrency, every authentication method, typed errors, timeouts, overload,
//! killed sessions and a server restart.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::support;
use crate::support::pg::{server, Cluster, TestDb, AUTH_USERS};
use records_service::pg::{self, Client, ErrorKind, Param, Statement};

const ECHO: Statement = Statement {
    name: "echo",
    sql: "SELECT $1::int4, 'n' || $1::int4",
};
const SLEEP: Statement = Statement {
    name: "sleep",
    sql: "SELECT pg_sleep($1::int4 / 1000.0)",
};
const T: Duration = Duration::from_secs(10);

fn echo(client: &Client, n: i32, timeout: Duration) -> Result<(i32, String), pg::Error> {
    let reply = client.query_read(ECHO.name, &[Param::Int4(n)], timeout)?;
    let row = &reply.rows[0];
    Ok((row.int4(0)?.unwrap(), row.text(1)?.unwrap().to_string()))
}

fn started(params: pg::ConnectParams, statements: &[Statement]) -> Client {
    let client = Client::start(params, statements);
    client.wait_connected(T).expect("connect");
    client
}

#[test]
fn answers_reach_their_callers_in_order_with_1000_coroutines_on_2_workers() {
    support::init_runtime();
    let db = TestDb::new();
    let client = Arc::new(started(db.params(), &[ECHO]));
    let handles: Vec<_> = (0..1000)
        .map(|i| {
            let client = client.clone();
            // SAFETY: the coroutine only blocks on may primitives (the client).
            unsafe {
                may::coroutine::spawn(move || {
                    for round in 0..5 {
                        let n = i * 10 + round;
                        let (got, text) = echo(&client, n, T).expect("echo");
                        assert_eq!(
                            (got, text),
                            (n, format!("n{n}")),
                            "caller {i} round {round}"
                        );
                    }
                })
            }
        })
        .collect();
    for h in handles {
        h.join().expect("every caller got its own answer");
    }
    let stats = client.stats();
    let queries = stats.queries.load(std::sync::atomic::Ordering::Relaxed);
    let writes = stats.writes.load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(queries, 5000);
    assert!(
        writes < queries / 2,
        "queries were pipelined: {queries} queries in {writes} writes"
    );
    client.close();
}

/// A read that fails inside a shared-Sync group makes the server skip the rest of the group;
/// those reads are re-sent and succeed, and only the failing one sees its error.
#[test]
fn a_failing_read_does_not_fail_its_neighbours() {
    support::init_runtime();
    const DIVIDE: Statement = Statement {
        name: "divide",
        sql: "SELECT 100 / $1::int4",
    };
    let db = TestDb::new();
    let client = Arc::new(started(db.params(), &[ECHO, DIVIDE]));
    let handles: Vec<_> = (0..1000)
        .map(|i| {
            let client = client.clone();
            // SAFETY: the coroutine only blocks on may primitives (the client).
            unsafe {
                may::coroutine::spawn(move || {
                    if i % 10 == 0 {
                        let e = client
                            .query_read(DIVIDE.name, &[Param::Int4(0)], T)
                            .expect_err("division by zero");
                        assert_eq!(e.code(), Some("22012"), "{e}");
                    } else {
                        assert_eq!(
                            echo(&client, i, T).expect("a neighbour of a failure"),
                            (i, format!("n{i}"))
                        );
                    }
                })
            }
        })
        .collect();
    for h in handles {
        h.join().expect("every caller got its own answer");
    }
    let resent = client
        .stats()
        .resent
        .load(std::sync::atomic::Ordering::Relaxed);
    assert!(
        resent > 0,
        "some reads shared a group with a failing one and were re-sent"
    );
    assert_eq!(echo(&client, 5, T).unwrap(), (5, "n5".to_string()));
    client.close();
}

/// The require_auth name of a pg_hba.conf method.
fn auth_method(method: &str) -> pg::AuthMethod {
    match method {
        "trust" => pg::AuthMethod::None,
        "password" => pg::AuthMethod::Password,
        "md5" => pg::AuthMethod::Md5,
        "scram-sha-256" => pg::AuthMethod::ScramSha256,
        other => panic!("no require_auth name for {other}"),
    }
}

#[test]
fn every_authentication_method_and_clear_startup_errors() {
    support::init_runtime();
    let s = server();
    if std::env::var("DATABASE_URL").is_ok() || std::env::var("POSTGRES_DB_HOST").is_ok() {
        eprintln!("external server: the per-method users exist only in the throwaway cluster");
        return;
    }
    for (user, password, method) in AUTH_USERS {
        // Plain TCP: cleartext and MD5 passwords need require_auth to name them (the default
        // refuses them without TLS; the `tls` module covers that).
        let mut p = pg::ConnectParams::new(&s.host, s.port, user, Some(password), "postgres");
        p.require_auth = Some(vec![auth_method(method)]);
        let c = pg::connect_once(&p).unwrap_or_else(|e| panic!("{method} as {user}: {e}"));
        let r = c.simple_query("SELECT current_user", T).unwrap();
        assert_eq!(r.rows[0].text(0).unwrap(), Some(*user), "{method}");
        c.close();
        if !password.is_empty() {
            let mut p = pg::ConnectParams::new(&s.host, s.port, user, Some("wrong"), "postgres");
            p.require_auth = Some(vec![auth_method(method)]);
            let e = pg::connect_once(&p).expect_err("a wrong password fails");
            assert_eq!(e.kind(), ErrorKind::AuthFailed, "{method}: {e}");
            assert_eq!(e.code(), Some("28P01"), "{method}");
        }
    }
    let p = pg::ConnectParams::new(&s.host, s.port, "postgres", None, "no_such_db");
    let e = pg::connect_once(&p).err().unwrap();
    assert_eq!(e.kind(), ErrorKind::UnknownDatabase, "{e}");
    let mut p = pg::ConnectParams::new("127.0.0.1", 1, "postgres", None, "postgres");
    p.connect_timeout = Duration::from_secs(2);
    let began = Instant::now();
    let e = pg::connect_once(&p).err().unwrap();
    assert_eq!(e.kind(), ErrorKind::ConnectFailed, "{e}");
    assert!(began.elapsed() < Duration::from_secs(4));
    let p = pg::ConnectParams::new(&s.host, s.port, "scram_user", None, "postgres");
    let e = pg::connect_once(&p).err().unwrap();
    assert_eq!(
        e.kind(),
        ErrorKind::AuthFailed,
        "no password configured: {e}"
    );
}

#[test]
fn database_errors_are_typed_by_sqlstate() {
    support::init_runtime();
    let db = TestDb::new();
    db.execute("CREATE TABLE t (id int PRIMARY KEY, v varchar(3) CHECK (v <> 'bad'))");
    const INSERT: Statement = Statement {
        name: "insert",
        sql: "INSERT INTO t (id, v) VALUES ($1::int4, $2::text)",
    };
    let mut params = db.params();
    params.statement_timeout = Duration::from_millis(100);
    let c = started(params, &[INSERT, SLEEP]);
    c.query(INSERT.name, &[Param::Int4(1), Param::Text("ok")], T)
        .unwrap();
    let cases: &[(&[Param<'_>], ErrorKind, &str)] = &[
        (
            &[Param::Int4(1), Param::Text("ok")],
            ErrorKind::UniqueViolation,
            "23505",
        ),
        (
            &[Param::Int4(2), Param::Text("bad")],
            ErrorKind::CheckViolation,
            "23514",
        ),
        (
            &[Param::Int4(3), Param::Text("long")],
            ErrorKind::StringTooLong,
            "22001",
        ),
    ];
    for (params, kind, code) in cases {
        let e = c.query(INSERT.name, params, T).expect_err("an error");
        assert_eq!((e.kind(), e.code()), (*kind, Some(*code)), "{e}");
    }
    assert_eq!(
        c.query(INSERT.name, &[Param::Int4(1), Param::Text("ok")], T)
            .unwrap_err()
            .constraint(),
        Some("t_pkey")
    );
    // statement_timeout (100 ms) cancels a 2 s sleep on the server.
    let began = Instant::now();
    let e = c.query(SLEEP.name, &[Param::Int4(2000)], T).err().unwrap();
    assert_eq!(
        (e.kind(), e.code()),
        (ErrorKind::QueryCanceled, Some("57014")),
        "{e}"
    );
    assert!(began.elapsed() < Duration::from_secs(1));
    // The connection is fine afterwards: each query has its own Sync.
    c.query(INSERT.name, &[Param::Int4(4), Param::Text("ok")], T)
        .unwrap();
    c.close();
}

#[test]
fn client_deadline_and_in_flight_bound() {
    support::init_runtime();
    let db = TestDb::new();
    let mut params = db.params();
    params.max_in_flight = 1;
    let c = Arc::new(started(params, &[ECHO, SLEEP]));
    // A read's deadline passes before the answer: Timeout, and the late answer is discarded
    // without shifting later answers onto the wrong callers.
    let began = Instant::now();
    let e = c
        .query_read(SLEEP.name, &[Param::Int4(300)], Duration::from_millis(50))
        .err()
        .unwrap();
    assert_eq!(e.kind(), ErrorKind::Timeout, "{e}");
    assert!(began.elapsed() < Duration::from_millis(250));
    // The server is still sleeping on it, so it still counts against the bound until its late
    // answer arrives: meanwhile a query is refused at once (Overloaded), then served again.
    assert_eq!(
        echo(&c, 6, T).unwrap_err().kind(),
        ErrorKind::Overloaded,
        "the timed-out read still occupies the connection"
    );
    assert!(support::wait::eventually(Duration::from_secs(5), || {
        echo(&c, 7, T).is_ok_and(|answer| answer == (7, "n7".to_string()))
    }));
    // One query in flight at most: a second caller fails at once, long before its deadline.
    let holder = {
        let c = c.clone();
        std::thread::spawn(move || c.query(SLEEP.name, &[Param::Int4(500)], T).map(drop))
    };
    support::wait::eventually(Duration::from_secs(5), || {
        c.stats().queries.load(std::sync::atomic::Ordering::Relaxed) >= 3
    });
    let began = Instant::now();
    let e = echo(&c, 8, Duration::from_secs(5)).err().unwrap();
    assert_eq!(e.kind(), ErrorKind::Overloaded, "{e}");
    assert!(began.elapsed() < Duration::from_secs(1), "failed fast");
    holder.join().unwrap().unwrap();
    assert_eq!(echo(&c, 9, T).unwrap(), (9, "n9".to_string()));
    c.close();
}

/// A query that never answers (no statement timeout, a sleep standing in for a lock wait or a
/// dead link) holds up everything behind it on a pipelined connection: once it is overdue by
/// the grace period, the watchdog declares the connection dead and the client reconnects.
#[test]
fn a_stalled_connection_is_abandoned_and_replaced() {
    support::init_runtime();
    let db = TestDb::new();
    let mut params = db.params();
    params.statement_timeout = Duration::ZERO;
    // A host name, not an address: resolution goes through the resolver thread.
    params.host = "localhost".into();
    let c = started(params, &[ECHO, SLEEP]);
    let e = c
        .query_read(
            SLEEP.name,
            &[Param::Int4(60_000)],
            Duration::from_millis(100),
        )
        .expect_err("deadline");
    assert_eq!(e.kind(), ErrorKind::Timeout);
    let began = Instant::now();
    assert!(
        support::wait::eventually(Duration::from_secs(15), || c.connects() >= 2),
        "the stalled connection was replaced"
    );
    assert!(
        began.elapsed() >= Duration::from_secs(4),
        "not before the grace period"
    );
    assert_eq!(echo(&c, 12, T).unwrap(), (12, "n12".to_string()));
    c.close();
}

#[test]
fn terminated_session_fails_callers_at_once_and_reconnects_with_statements() {
    support::init_runtime();
    let db = TestDb::new();
    let mut params = db.params();
    params.application_name = "pg-client-kill".into();
    let c = Arc::new(started(params, &[ECHO, SLEEP]));
    // A caller is waiting on a long query when the session is killed.
    let waiter = {
        let c = c.clone();
        std::thread::spawn(move || {
            let began = Instant::now();
            let r = c.query(SLEEP.name, &[Param::Int4(30_000)], Duration::from_secs(60));
            (r.map(drop), began.elapsed())
        })
    };
    support::wait::eventually(Duration::from_secs(5), || {
        c.stats().queries.load(std::sync::atomic::Ordering::Relaxed) >= 1
    });
    let killed = db.scalar(&format!(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
         WHERE datname = '{}' AND application_name = 'pg-client-kill'",
        db.name
    ));
    assert_eq!(killed.as_deref(), Some("1"));
    let (result, waited) = waiter.join().unwrap();
    let e = result.expect_err("the waiting caller gets an error");
    assert_eq!(e.kind(), ErrorKind::ConnectionLost, "{e}");
    assert!(
        waited < Duration::from_secs(5),
        "at once, not at the deadline: {waited:?}"
    );
    // It reconnects by itself and prepares its statements again.
    assert!(support::wait::eventually(Duration::from_secs(5), || c
        .connects()
        >= 2));
    assert_eq!(echo(&c, 11, T).unwrap(), (11, "n11".to_string()));
    c.close();
}

#[test]
fn server_restart_fails_fast_while_down_and_recovers() {
    support::init_runtime();
    let cluster = Cluster::start();
    let c = started(cluster.server.params("postgres"), &[ECHO]);
    assert_eq!(echo(&c, 1, T).unwrap().0, 1);
    cluster.stop_server();
    assert!(support::wait::eventually(Duration::from_secs(5), || !c.is_connected()));
    for _ in 0..20 {
        let began = Instant::now();
        let e = echo(&c, 2, T).expect_err("down");
        assert!(e.is_connection_error(), "{e}");
        assert!(
            began.elapsed() < Duration::from_millis(100),
            "fails fast: {:?}",
            began.elapsed()
        );
    }
    cluster.start_server();
    let began = Instant::now();
    assert!(support::wait::eventually(Duration::from_secs(10), || echo(
        &c, 3, T
    )
    .is_ok()));
    assert!(
        began.elapsed() <= pg::MAX_BACKOFF + Duration::from_secs(2),
        "back within the backoff cap: {:?}",
        began.elapsed()
    );
    c.close();
}
