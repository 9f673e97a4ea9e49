//! Behind a real PgBouncer (Debian's 1.18, which predates protocol-level prepared statements),
//! in session and in transaction pooling mode: the service starts and serves every route, the
//! statement timeout is in force, and in transaction mode the client notices that its named
//! statements do not survive (42P05 at startup, 26000 later) and switches to preparing them in
//! each transaction.

use std::time::Duration;

use crate::support;
use crate::support::app::{env_for, App};
use crate::support::http::{get, request};
use crate::support::pg::TestDb;
use crate::support::pgbouncer::{PgBouncer, PoolMode};
use records_service::pg::{self, Client, ErrorKind, Param, Statement, StatementMode};
use support::wait::eventually;

const T: Duration = Duration::from_secs(10);

const ECHO: Statement = Statement {
    name: "echo",
    sql: "SELECT $1::int4",
};
const SLEEP: Statement = Statement {
    name: "sleep",
    sql: "SELECT pg_sleep($1::int4 / 1000.0)",
};

fn started(params: pg::ConnectParams, statements: &[Statement]) -> Client {
    let client = Client::start(params, statements);
    client.wait_connected(T).expect("connect through PgBouncer");
    client
}

fn echo(c: &Client, n: i32) -> Result<i32, pg::Error> {
    let reply = c.query_read(ECHO.name, &[Param::Int4(n)], T)?;
    Ok(reply.rows[0].int4(0)?.unwrap())
}

/// Every route of the service through PgBouncer, with the default settings (statement
/// timeout included: before, it was a startup parameter PgBouncer refuses with 08P01, and
/// every request answered 503).
fn every_route_works(bouncer: &PgBouncer, db: &TestDb) -> App {
    let mut env = env_for(&bouncer.server, &db.name);
    env.retain(|(k, _)| k != "WORKERS");
    env.push(("WORKERS".into(), "2".into()));
    let app = App::spawn(&env);
    let addr = app.addr;
    assert!(
        eventually(T, || get(addr, "/readyz").status == 200),
        "{}",
        app.log_text()
    );
    let body = br#"{"text":"through the pooler"}"#;
    for n in 0..20 {
        let r = request(
            addr,
            "POST",
            &format!("/user?email=p{n}@example.com"),
            Some(body),
        );
        assert_eq!(r.status, 200, "{}", r.text());
    }
    let r = get(addr, "/user?email=p7@example.com");
    assert_eq!(
        (r.status, r.json()),
        (200, serde_json::json!(["through the pooler"]))
    );
    let id = db
        .scalar("SELECT id FROM records WHERE email = 'p3@example.com'")
        .unwrap();
    let r = get(addr, &format!("/user/{id}"));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["email"], "p3@example.com");
    let r = get(addr, "/users?limit=5");
    assert_eq!(
        (r.status, r.json().as_array().map(Vec::len)),
        (200, Some(5))
    );
    let r = request(addr, "DELETE", "/user?email=p3@example.com", None);
    assert_eq!(r.status, 200);
    assert_eq!(get(addr, &format!("/user/{id}")).status, 404);
    app
}

#[test]
fn session_pooling_serves_every_route_with_the_statement_timeout() {
    support::init_runtime();
    let db = TestDb::new();
    let bouncer = PgBouncer::start(&db.server, PoolMode::Session, 10);
    let app = every_route_works(&bouncer, &db);
    assert!(
        !app.log_text().contains("transaction-pooling"),
        "{}",
        app.log_text()
    );
    // The statement timeout is in force on sessions made through the pooler.
    let mut params = bouncer.params(&db.name);
    params.statement_timeout = Duration::from_millis(200);
    let c = started(params, &[ECHO, SLEEP]);
    let e = c
        .query(SLEEP.name, &[Param::Int4(3000)], T)
        .expect_err("cancelled by statement_timeout");
    assert_eq!(e.kind(), ErrorKind::QueryCanceled, "{e}");
    assert_eq!(echo(&c, 4).unwrap(), 4);
    assert!(!c.prepares_per_transaction());
    c.close();
}

#[test]
fn transaction_pooling_serves_every_route_with_statements_prepared_per_transaction() {
    support::init_runtime();
    let db = TestDb::new();
    // Two server connections for the service's four client connections (two workers, two
    // listing connections): their statement names collide on the shared server sessions.
    let bouncer = PgBouncer::start(&db.server, PoolMode::Transaction, 2);
    let app = every_route_works(&bouncer, &db);
    let log = app.log_text();
    assert!(
        log.contains("assuming a transaction-pooling proxy (PgBouncer)"),
        "{log}"
    );
    // Said once per client connection that noticed, not once per query: one event (log line)
    // each at most. (log_text adds each JSON line's message after the lines: count lines.)
    let events = app
        .log
        .lock()
        .unwrap()
        .iter()
        .filter(|line| line.contains("transaction-pooling"))
        .count();
    assert!((1..=4).contains(&events), "{events} events:\n{log}");
}

/// Both ways a transaction pooler shows itself, one after the other, on one server connection:
/// a second client's startup finds the statement names taken (42P05); the first client finds
/// its statements gone after the server session was reset (26000). Each switches to preparing per
/// transaction
/// statements and its queries succeed; the one that failed is retried, not reported.
#[test]
fn transaction_pooling_is_detected_at_startup_and_mid_session() {
    support::init_runtime();
    let db = TestDb::new();
    let bouncer = PgBouncer::start(&db.server, PoolMode::Transaction, 1);
    let first = started(bouncer.params(&db.name), &[ECHO]);
    assert_eq!(echo(&first, 1).unwrap(), 1);
    assert!(!first.prepares_per_transaction());

    let second = started(bouncer.params(&db.name), &[ECHO]);
    assert!(second.prepares_per_transaction(), "42P05 at startup");
    assert_eq!(echo(&second, 2).unwrap(), 2);

    // The only server connection is reset (as a pooler's server_reset_query or a restart
    // would): the first client's named statement is gone.
    let third = started(bouncer.params(&db.name), &[]);
    third.simple_query("DISCARD ALL", T).unwrap();
    for n in 0..10 {
        assert_eq!(echo(&first, n).unwrap(), n, "26000 is recovered from");
    }
    assert!(first.prepares_per_transaction(), "switched after 26000");
    for c in [first, second, third] {
        c.close();
    }
}

/// The mode can be forced: `Named` never switches (a pooler that keeps prepared statements,
/// PgBouncer 1.21+ with max_prepared_statements, or none), `PerTransaction` never keeps a
/// statement across transactions.
#[test]
fn the_statement_mode_can_be_forced() {
    support::init_runtime();
    let db = TestDb::new();
    let bouncer = PgBouncer::start(&db.server, PoolMode::Transaction, 1);
    let mut per_transaction = bouncer.params(&db.name);
    per_transaction.statement_mode = StatementMode::PerTransaction;
    let a = started(per_transaction.clone(), &[ECHO]);
    let b = started(per_transaction, &[ECHO]);
    assert!(a.prepares_per_transaction() && b.prepares_per_transaction());
    for n in 0..10 {
        assert_eq!(echo(&a, n).unwrap(), n);
        assert_eq!(echo(&b, n).unwrap(), n);
    }
    // Statements prepared per transaction stay on the server connection afterwards (Close and
    // Parse, no Deallocate): clear them so the forced Named client can prepare at startup.
    a.simple_query("DISCARD ALL", T).unwrap();
    let mut named = bouncer.params(&db.name);
    named.statement_mode = StatementMode::Named;
    let c = started(named, &[ECHO]);
    a.simple_query("DISCARD ALL", T).unwrap();
    // A forced Named client does not switch; it prepares the missing statement again.
    assert_eq!(echo(&c, 1).unwrap(), 1);
    assert!(!c.prepares_per_transaction());
    assert_eq!(
        c.stats()
            .reprepared
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
    for c in [a, b, c] {
        c.close();
    }
}
