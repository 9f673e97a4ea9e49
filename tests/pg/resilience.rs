//! The client's guarantees under trouble, each a defect found once and kept from coming back,
//! crossed against a real PostgreSQL, or, for what no real server does (absurd lengths, FATAL
//! with odd SQLSTATEs), a scripted peer: the in-flight bound under a stalled server, no write
//! reaching the server after its caller was told it failed, FATAL by severity, the message
//! length cap, one pinned session for multi-message transactions, reconnect backoff, stale
//! cached plans, answers no query waits for, a shared session left in a transaction, no resend
//! after a FATAL, and a failed re-prepare.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::support;
use crate::support::fakepg::{self, FakePg};
use crate::support::pg::TestDb;
use records_service::pg::{self, Client, ErrorKind, Param, Statement};
use support::wait::eventually;

const T: Duration = Duration::from_secs(30);

const ECHO: Statement = Statement {
    name: "echo",
    sql: "SELECT $1::int4",
};
const SLEEP: Statement = Statement {
    name: "sleep",
    sql: "SELECT pg_sleep($1::int4 / 1000.0)",
};
const SET_TEXT: Statement = Statement {
    name: "set_text",
    sql: "UPDATE t SET text = $1::text WHERE id = $2::int4",
};

fn started(params: pg::ConnectParams, statements: &[Statement]) -> Client {
    let client = Client::start(params, statements);
    client.wait_connected(T).expect("connect");
    client
}

fn with_table(db: &TestDb) {
    db.execute(
        "CREATE TABLE t (id int PRIMARY KEY, text text NOT NULL);
         INSERT INTO t VALUES (1, 'one'), (2, 'two'), (3, 'three')",
    );
}

/// Holds a row lock on `t` row `id` in an open transaction until the returned session commits.
fn lock_row(db: &TestDb, id: i32) -> (Client, pg::Session) {
    let c = db.client();
    let session = c.session().unwrap();
    session
        .simple_query(
            &format!("BEGIN; SELECT 1 FROM t WHERE id = {id} FOR UPDATE"),
            T,
        )
        .unwrap();
    (c, session)
}

fn waiting_on_lock(db: &TestDb) -> bool {
    db.scalar(
        "SELECT count(*) FROM pg_stat_activity \
         WHERE wait_event_type = 'Lock' AND query LIKE 'UPDATE t%'",
    )
    .as_deref()
        == Some("1")
}

/// With the server stalled, queries beyond the in-flight bound fail at once with Overloaded,
/// instead of queueing behind the bound; more than 1,024 callers timing out and then the
/// connection dying leaves a client that reconnects and serves (may's semaphore, used before,
/// woke timed-out waiters recursively at that point and could overflow the supervisor's stack).
#[test]
fn a_stalled_server_gets_overload_errors_at_once_and_the_client_recovers() {
    support::init_runtime();
    let db = TestDb::new();
    let mut params = db.params();
    params.application_name = "stalled-bound".into();
    params.statement_timeout = Duration::ZERO;
    let c = Arc::new(started(params, &[ECHO, SLEEP]));
    // The head of the queue sleeps: nothing behind it is answered meanwhile.
    let sleeper = {
        let c = c.clone();
        std::thread::spawn(move || {
            c.query_read(SLEEP.name, &[Param::Int4(30_000)], T)
                .map(drop)
        })
    };
    assert!(eventually(Duration::from_secs(5), || c
        .stats()
        .queries
        .load(Ordering::Relaxed)
        >= 1));
    let callers: Vec<_> = (0..1500)
        .map(|n| {
            let c = c.clone();
            // SAFETY: the coroutine blocks only on the client (may primitives).
            unsafe {
                may::coroutine::spawn(move || {
                    let began = Instant::now();
                    let r = c.query_read(ECHO.name, &[Param::Int4(n)], Duration::from_secs(2));
                    (r.err().map(|e| e.kind()), began.elapsed())
                })
            }
        })
        .collect();
    let outcomes: Vec<_> = callers.into_iter().map(|h| h.join().unwrap()).collect();
    let overloaded: Vec<_> = outcomes
        .iter()
        .filter(|(kind, _)| *kind == Some(ErrorKind::Overloaded))
        .collect();
    let timed_out = outcomes
        .iter()
        .filter(|(kind, _)| *kind == Some(ErrorKind::Timeout))
        .count();
    // The bound is 1,024 queries on the connection, the sleeper included.
    assert_eq!(overloaded.len(), 1500 - 1023, "{outcomes:?}");
    assert_eq!(timed_out, 1023);
    assert!(
        overloaded
            .iter()
            .all(|(_, took)| *took < Duration::from_secs(1)),
        "overload is reported at once, not at the deadline"
    );
    // The stalled connection dies (its backend killed): every waiter is failed, the client
    // reconnects and answers again.
    db.execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE application_name = 'stalled-bound'",
    );
    assert_eq!(
        sleeper.join().unwrap().unwrap_err().kind(),
        ErrorKind::ConnectionLost
    );
    assert!(eventually(Duration::from_secs(10), || c.connects() >= 2));
    let reply = c.query_read(ECHO.name, &[Param::Int4(5)], T).unwrap();
    assert_eq!(reply.rows[0].int4(0).unwrap(), Some(5));
    c.close();
}

/// The lost update: a write that timed out while still unsent must never run later, or a caller
/// told "failed" who retries would see its retry overwritten by the first attempt.
/// A row lock stalls the connection; big writes behind it fill the socket so the writer cannot
/// send more; a write queued then times out (its caller told "failed"), the client retries it
/// on another connection and succeeds; when the lock goes, the stalled connection drains. The
/// row must hold the retried value: the timed-out write was withdrawn, not sent late.
#[test]
fn a_write_that_timed_out_unsent_never_reaches_the_server() {
    support::init_runtime();
    let db = TestDb::new();
    with_table(&db);
    let mut params = db.params();
    params.statement_timeout = Duration::ZERO;
    let c = Arc::new(started(params.clone(), &[SET_TEXT]));
    let (_locker, lock) = lock_row(&db, 1);
    let mut writers = Vec::new();
    {
        let c = c.clone();
        writers.push(std::thread::spawn(move || {
            c.query(SET_TEXT.name, &[Param::Text("blocked"), Param::Int4(1)], T)
                .map(drop)
        }));
    }
    assert!(eventually(Duration::from_secs(10), || waiting_on_lock(&db)));
    // One 128 MiB write behind the blocked one: more than the socket buffers hold, on both ends
    // and in a proxy between them (docker-proxy, when the server is a container: 48 MiB was
    // not enough there). One write, not many: once the writer has taken it (its batches' sum
    // counts it), the writer is stuck in that write for good, so the query below stays in the
    // outbox, unsent. With 16 writes of 8 MiB, a writer coroutine that ran late (a loaded
    // machine) could take the last of them together with the query below, which then counted
    // as sent and waited for its outcome (1 run in 16 under load).
    let big: Arc<str> = "x".repeat(128 << 20).into();
    {
        let (c, big) = (c.clone(), big.clone());
        writers.push(std::thread::spawn(move || {
            c.query(SET_TEXT.name, &[Param::Text(&big), Param::Int4(2)], T)
                .map(drop)
        }));
    }
    assert!(eventually(Duration::from_secs(10), || c
        .stats()
        .batches()
        .sum
        >= 2.0));
    let began = Instant::now();
    let e = c
        .query(
            SET_TEXT.name,
            &[Param::Text("OLD"), Param::Int4(3)],
            Duration::from_millis(300),
        )
        .expect_err("the stalled connection cannot send it in time");
    assert_eq!(e.kind(), ErrorKind::Timeout, "{e}");
    assert!(began.elapsed() < Duration::from_secs(2));
    // The client's retry, on another connection, commits.
    let other = started(params, &[SET_TEXT]);
    other
        .query(SET_TEXT.name, &[Param::Text("NEW"), Param::Int4(3)], T)
        .unwrap();
    lock.simple_query("COMMIT", T).unwrap();
    for w in writers {
        w.join().unwrap().expect("the stalled writes complete");
    }
    // Every write sent on the stalled connection has been answered: anything else it carried
    // would have run by now.
    c.query(SET_TEXT.name, &[Param::Text("one"), Param::Int4(1)], T)
        .unwrap();
    assert_eq!(
        db.scalar("SELECT text FROM t WHERE id = 3").as_deref(),
        Some("NEW")
    );
    assert_eq!(
        db.scalar("SELECT length(text) FROM t WHERE id = 2"),
        Some(big.len().to_string())
    );
    c.close();
    other.close();
}

/// A write already sent when its deadline passes is not reported as failed: its caller waits
/// for the outcome (here, success once a lock is released), so "503" never hides a commit.
#[test]
fn a_sent_write_past_its_deadline_waits_for_its_outcome() {
    support::init_runtime();
    let db = TestDb::new();
    with_table(&db);
    let mut params = db.params();
    params.statement_timeout = Duration::ZERO;
    let c = Arc::new(started(params, &[SET_TEXT, ECHO]));
    let (_locker, lock) = lock_row(&db, 1);
    let writer = {
        let c = c.clone();
        std::thread::spawn(move || {
            let began = Instant::now();
            let r = c.query(
                SET_TEXT.name,
                &[Param::Text("committed"), Param::Int4(1)],
                Duration::from_millis(200),
            );
            (r.map(|reply| reply.affected), began.elapsed())
        })
    };
    assert!(eventually(Duration::from_secs(10), || waiting_on_lock(&db)));
    // Well past the write's deadline (and a read behind it times out meanwhile, as reads do).
    let e = c
        .query_read(ECHO.name, &[Param::Int4(1)], Duration::from_millis(400))
        .expect_err("behind the lock");
    assert_eq!(e.kind(), ErrorKind::Timeout);
    lock.simple_query("COMMIT", T).unwrap();
    let (outcome, took) = writer.join().unwrap();
    assert_eq!(outcome.expect("the write's real outcome"), 1);
    assert!(took >= Duration::from_millis(400), "{took:?}");
    assert_eq!(
        db.scalar("SELECT text FROM t WHERE id = 1").as_deref(),
        Some("committed")
    );
    c.close();
}

/// FATAL is read off the severity field, whatever the SQLSTATE (an idle-in-transaction or idle
/// session timeout, a recovery conflict): the caller gets ConnectionLost (503), the connection
/// is dropped even though the peer keeps it open, and the client reconnects.
#[test]
fn fatal_by_severity_ends_the_connection() {
    support::init_runtime();
    let fake = FakePg::start(|conn, n| {
        use std::io::Write;
        if n == 0 && fakepg::read_until_sync(conn).is_ok() {
            let _ = conn.write_all(&fakepg::error_response(
                "FATAL",
                "25P03",
                "terminating connection due to idle-in-transaction timeout",
            ));
        }
        fakepg::drain(conn);
    });
    let mut params = pg::ConnectParams::new("127.0.0.1", fake.port, "u", None, "db");
    params.statement_timeout = Duration::ZERO;
    params.tls.mode = pg::SslMode::Disable;
    // Nothing prepared at startup: the script sees the query as its first message.
    params.statement_mode = pg::StatementMode::PerTransaction;
    let c = started(params, &[ECHO]);
    let e = c
        .query_read(ECHO.name, &[Param::Int4(1)], Duration::from_secs(5))
        .expect_err("FATAL");
    assert_eq!(e.kind(), ErrorKind::ConnectionLost, "{e}");
    assert_eq!(e.code(), Some("25P03"));
    assert!(eventually(Duration::from_secs(5), || c.connects() >= 2));
    c.close();
}

/// A backend message longer than the cap ends the connection at once (a protocol error, 503 to
/// the caller) instead of reserving and waiting for the declared length.
#[test]
fn an_oversized_backend_message_is_refused() {
    support::init_runtime();
    let fake = FakePg::start(|conn, _| {
        use std::io::Write;
        if fakepg::read_until_sync(conn).is_ok() {
            // A DataRow header declaring 3.9 GiB, and nothing after it.
            let mut header = vec![b'D'];
            header.extend(0xF000_0000u32.to_be_bytes());
            let _ = conn.write_all(&header);
        }
        fakepg::drain(conn);
    });
    let mut params = pg::ConnectParams::new("127.0.0.1", fake.port, "u", None, "db");
    params.statement_timeout = Duration::ZERO;
    params.tls.mode = pg::SslMode::Disable;
    // Nothing prepared at startup: the script sees the query as its first message.
    params.statement_mode = pg::StatementMode::PerTransaction;
    params.max_message_bytes = 1 << 20;
    let c = started(params, &[ECHO]);
    let began = Instant::now();
    let e = c
        .query_read(ECHO.name, &[Param::Int4(1)], Duration::from_secs(5))
        .expect_err("refused");
    assert_eq!(e.kind(), ErrorKind::ConnectionLost, "{e}");
    assert!(e.message().contains("PG_MAX_MESSAGE_BYTES"), "{e}");
    assert!(
        began.elapsed() < Duration::from_secs(2),
        "at once, not at the deadline"
    );
    c.close();
}

/// A transaction sent over several messages stays on one server session: once that connection
/// is replaced, the rest fails instead of autocommitting on the new session.
#[test]
fn a_pinned_session_fails_instead_of_running_on_a_new_connection() {
    support::init_runtime();
    let db = TestDb::new();
    let mut params = db.params();
    params.application_name = "pinned-session".into();
    let c = started(params, &[ECHO]);
    let session = c.session().unwrap();
    session
        .simple_query("BEGIN; CREATE TABLE first_half (x int)", T)
        .unwrap();
    db.execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE application_name = 'pinned-session'",
    );
    assert!(eventually(Duration::from_secs(10), || c.connects() >= 2
        && c.is_connected()));
    let e = session
        .simple_query("CREATE TABLE second_half (x int); COMMIT", T)
        .expect_err("the session is gone");
    assert_eq!(e.kind(), ErrorKind::ConnectionLost, "{e}");
    assert_eq!(
        db.scalar(
            "SELECT count(*) FROM pg_tables WHERE tablename IN ('first_half', 'second_half')"
        )
        .as_deref(),
        Some("0")
    );
    // The client itself is fine.
    c.query_read(ECHO.name, &[Param::Int4(1)], T).unwrap();
    c.close();
}

/// A server that accepts and at once drops every connection (here: idle_session_timeout of
/// 1 ms for this role, a FATAL 57P05 right after startup) gets backoff, not a tight loop of
/// handshakes: the backoff resets only after a connection stayed up for a second.
#[test]
fn connections_dropped_at_once_back_off() {
    support::init_runtime();
    let db = TestDb::new();
    let role = format!("flaky_{}", db.name);
    db.execute(&format!(
        "CREATE ROLE {role} LOGIN PASSWORD 'flaky-secret';
         ALTER ROLE {role} SET idle_session_timeout = 1"
    ));
    let mut params = db.params();
    params.user = role.clone();
    params.password = Some("flaky-secret".into());
    let c = Client::start(params, &[ECHO]);
    assert!(eventually(T, || c.connects() >= 1));
    let first = Instant::now();
    let base = c.connects();
    // A time window, measured: how many connects the client makes in 2.5 s.
    while first.elapsed() < Duration::from_millis(2500) {
        std::thread::sleep(Duration::from_millis(50));
    }
    let made = c.connects() - base;
    c.close();
    db.execute(&format!("DROP ROLE {role}"));
    // Backoff 50, 100, 200, 400, 800, 1600 ms: about 5 in 2.5 s. A reset on every connect
    // made one per handshake: well over a hundred.
    assert!((2..=8).contains(&made), "{made} connects in 2.5 s");
}

/// A statement whose cached plan went stale (a column's type changed under a running client:
/// 0A000 "cached plan must not change result type") is prepared again and the query retried
/// once, instead of failing until the process restarts.
#[test]
fn a_stale_cached_plan_is_prepared_again() {
    support::init_runtime();
    let db = TestDb::new();
    db.execute("CREATE TABLE w (id int PRIMARY KEY, v int); INSERT INTO w VALUES (1, 10)");
    const BY_ID: Statement = Statement {
        name: "w_by_id",
        sql: "SELECT * FROM w WHERE id = $1::int4",
    };
    let c = started(db.params(), &[BY_ID]);
    let before = c.query_read(BY_ID.name, &[Param::Int4(1)], T).unwrap();
    assert_eq!(before.rows[0].integer(1).unwrap(), Some(10));
    db.execute("ALTER TABLE w ALTER COLUMN v TYPE bigint");
    for _ in 0..3 {
        let after = c.query_read(BY_ID.name, &[Param::Int4(1)], T).unwrap();
        assert_eq!(after.rows[0].integer(1).unwrap(), Some(10));
    }
    assert_eq!(c.stats().reprepared.load(Ordering::Relaxed), 1);
    c.close();
}

fn fake_params(port: u16) -> pg::ConnectParams {
    let mut params = pg::ConnectParams::new("127.0.0.1", port, "u", None, "db");
    params.statement_timeout = Duration::ZERO;
    params.tls.mode = pg::SslMode::Disable;
    // Nothing prepared at startup: the script sees each query as it comes.
    params.statement_mode = pg::StatementMode::PerTransaction;
    params
}

/// During startup too, a message longer than the cap is refused at once: an authentication
/// request declaring 4 GiB made the client reserve it (and abort when memory ran out).
#[test]
fn an_oversized_message_during_startup_is_refused() {
    support::init_runtime();
    let fake = FakePg::start_raw(|conn, _| {
        use std::io::Write;
        let _ = conn.write_all(&[b'R', 0xff, 0xff, 0xff, 0xf0]);
        fakepg::drain(conn);
    });
    let began = Instant::now();
    let e = pg::connect_once(&fake_params(fake.port)).expect_err("refused");
    assert_eq!(e.kind(), ErrorKind::Protocol, "{e}");
    assert!(e.message().contains("over the limit"), "{e}");
    assert!(
        began.elapsed() < Duration::from_secs(2),
        "at once, not at the connect timeout"
    );
}

/// Rows streaming without end make one reply too large: the connection is dropped at the cap
/// (PG_MAX_MESSAGE_BYTES bounds a reply too), instead of memory growing until the deadline.
#[test]
fn a_reply_without_end_is_cut_at_the_cap() {
    support::init_runtime();
    let fake = FakePg::start(|conn, _| {
        use std::io::Write;
        if fakepg::read_until_sync(conn).is_ok() {
            let mut row = 1u16.to_be_bytes().to_vec();
            row.extend(65_000u32.to_be_bytes());
            row.extend(vec![b'x'; 65_000]);
            let row = fakepg::message(b'D', &row);
            while conn.write_all(&row).is_ok() {}
        }
    });
    let mut params = fake_params(fake.port);
    params.max_message_bytes = 1 << 20;
    let c = started(params, &[ECHO]);
    let e = c
        .query_read(ECHO.name, &[Param::Int4(1)], Duration::from_secs(10))
        .expect_err("cut");
    assert_eq!(e.kind(), ErrorKind::ConnectionLost, "{e}");
    assert!(
        e.message().contains("reply of more than 1048576 bytes"),
        "{e}"
    );
    c.close();
}

/// An ErrorResponse that no query is waiting for (a buggy proxy, sent while idle) ends the
/// connection instead of sticking to the next query: that query, a write here, would have been
/// reported failed although the server ran it.
#[test]
fn an_unsolicited_error_ends_the_connection() {
    support::init_runtime();
    let fake = FakePg::start(|conn, n| {
        use std::io::Write;
        if n == 0 {
            let _ = conn.write_all(&fakepg::error_response("ERROR", "42000", "stray"));
            fakepg::drain(conn);
            return;
        }
        while fakepg::read_until_sync(conn).is_ok() {
            if conn.write_all(&fakepg::write_answered()).is_err() {
                return;
            }
        }
    });
    // Not `started`: the first connection may be gone already when the client is asked.
    let c = Client::start(fake_params(fake.port), &[SET_TEXT]);
    assert!(
        eventually(Duration::from_secs(5), || c.connects() >= 2
            && c.is_connected()),
        "the connection that got a stray error was replaced"
    );
    let reply = c
        .query(SET_TEXT.name, &[Param::Text("x"), Param::Int4(1)], T)
        .expect("the write is answered by its own outcome");
    assert_eq!(reply.affected, 1);
    c.close();
}

/// A session is a connection of its own: other callers' writes on the client do not run inside
/// its transaction, so its ROLLBACK cannot undo a write that was acknowledged to someone else.
#[test]
fn a_session_does_not_share_its_transaction() {
    support::init_runtime();
    let db = TestDb::new();
    with_table(&db);
    let c = started(db.params(), &[SET_TEXT]);
    let session = c.session().unwrap();
    session
        .simple_query(
            "BEGIN; UPDATE t SET text = 'in the session' WHERE id = 2",
            T,
        )
        .unwrap();
    let reply = c
        .query(
            SET_TEXT.name,
            &[Param::Text("acknowledged"), Param::Int4(1)],
            T,
        )
        .unwrap();
    assert_eq!(reply.affected, 1);
    session.simple_query("ROLLBACK", T).unwrap();
    assert_eq!(
        db.scalar("SELECT text FROM t WHERE id = 1").as_deref(),
        Some("acknowledged")
    );
    assert_eq!(
        db.scalar("SELECT text FROM t WHERE id = 2").as_deref(),
        Some("two")
    );
    c.close();
}

/// Waits until the connection the script ended (or the client dropped) was replaced, and
/// returns why the first one ended.
fn replaced(c: &Client) -> pg::Error {
    assert!(
        eventually(Duration::from_secs(5), || c.connects() >= 2
            && c.is_connected()),
        "the first connection was dropped and a new one made"
    );
    c.last_error().expect("why the first connection ended")
}

/// The stray messages of a broken proxy, sent while the connection is idle: the connection is
/// dropped as a protocol error, and a query on the next connection gets its own rows only.
fn a_stray_message_ends_the_connection(script: fn(&mut std::net::TcpStream, usize)) {
    support::init_runtime();
    let fake = FakePg::start(script);
    // Not `started`: the first connection may be gone already when the client is asked.
    let c = Client::start(fake_params(fake.port), &[ECHO]);
    let e = replaced(&c);
    assert_eq!(e.kind(), ErrorKind::Protocol, "{e}");
    assert!(e.message().contains("no query was waiting"), "{e}");
    let reply = c.query_read(ECHO.name, &[Param::Int4(1)], T).unwrap();
    assert_eq!(reply.rows.len(), 1, "only its own row");
    c.close();
}

/// Zero-column DataRows streamed while idle: kept, they grew memory without bound (a `Row`
/// each, which the reply cap did not count) and were handed to the next query as its own.
#[test]
fn stray_rows_while_idle_end_the_connection() {
    a_stray_message_ends_the_connection(|conn, n| {
        use std::io::Write;
        if n == 0 {
            let _ = conn.write_all(&fakepg::message(b'D', &[0, 0]).repeat(1000));
            fakepg::drain(conn);
        } else {
            fakepg::serve(conn);
        }
    });
}

#[test]
fn a_stray_command_complete_ends_the_connection() {
    a_stray_message_ends_the_connection(|conn, n| {
        use std::io::Write;
        if n == 0 {
            let _ = conn.write_all(&fakepg::message(b'C', b"SELECT 0\0"));
            fakepg::drain(conn);
        } else {
            fakepg::serve(conn);
        }
    });
}

#[test]
fn a_stray_empty_query_response_ends_the_connection() {
    a_stray_message_ends_the_connection(|conn, n| {
        use std::io::Write;
        if n == 0 {
            let _ = conn.write_all(&fakepg::message(b'I', &[]));
            fakepg::drain(conn);
        } else {
            fakepg::serve(conn);
        }
    });
}

/// A row's own overhead counts toward the reply cap: zero-column rows, counted by their column
/// bytes, counted nothing and made a reply of any length.
#[test]
fn zero_column_rows_count_toward_the_reply_cap() {
    support::init_runtime();
    let fake = FakePg::start(|conn, _| {
        use std::io::Write;
        if fakepg::read_until_sync(conn).is_ok() {
            // 700 kB on the wire, 100 000 rows.
            let mut out = fakepg::message(b'D', &[0, 0]).repeat(100_000);
            out.extend(fakepg::message(b'C', b"SELECT 100000\0"));
            out.extend(fakepg::message(b'Z', b"I"));
            let _ = conn.write_all(&out);
        }
        fakepg::drain(conn);
    });
    let mut params = fake_params(fake.port);
    params.max_message_bytes = 64 << 10;
    let c = started(params, &[ECHO]);
    let e = match c.query_read(ECHO.name, &[Param::Int4(1)], Duration::from_secs(10)) {
        Ok(reply) => panic!("not cut: a reply of {} rows", reply.rows.len()),
        Err(e) => e,
    };
    assert_eq!(e.kind(), ErrorKind::ConnectionLost, "{e}");
    assert!(
        e.message().contains("reply of more than 65536 bytes"),
        "{e}"
    );
    c.close();
}

/// A FATAL 26000 (or 0A000) ends the connection: a write sent on it has an unknown outcome
/// and is not sent again (on the next connection it could run twice); its caller gets
/// ConnectionLost (503), the statement mode stays as it was, and the next connection serves.
#[test]
fn a_write_ended_by_a_fatal_error_is_not_sent_again() {
    use std::sync::atomic::AtomicUsize;
    static BINDS: AtomicUsize = AtomicUsize::new(0);
    support::init_runtime();
    let fake = FakePg::start(|conn, n| {
        use std::io::Write;
        while let Ok(batch) = fakepg::read_batch(conn) {
            let binds = batch.iter().filter(|(kind, _)| *kind == b'B').count();
            BINDS.fetch_add(binds, Ordering::SeqCst);
            if n == 0 && binds > 0 {
                let _ = conn.write_all(&fakepg::error_response(
                    "FATAL",
                    "26000",
                    "prepared statement does not exist",
                ));
                fakepg::drain(conn);
                return;
            }
            if conn.write_all(&fakepg::obliging_answers(&batch)).is_err() {
                return;
            }
        }
    });
    let mut params = fake_params(fake.port);
    params.statement_mode = pg::StatementMode::Auto;
    let c = started(params, &[SET_TEXT]);
    let e = c
        .query(SET_TEXT.name, &[Param::Text("x"), Param::Int4(1)], T)
        .expect_err("FATAL");
    assert_eq!(e.kind(), ErrorKind::ConnectionLost, "{e}");
    assert_eq!(e.code(), Some("26000"), "{e}");
    replaced(&c);
    assert_eq!(BINDS.load(Ordering::SeqCst), 1, "sent once");
    assert!(!c.prepares_per_transaction());
    c.query(SET_TEXT.name, &[Param::Text("x"), Param::Int4(1)], T)
        .expect("the next connection serves");
    c.close();
}

/// ReadyForQuery saying "in a transaction" (`T`, or `E`: failed) on the shared connection: the
/// next callers' writes would join that transaction, and vanish with it. The write is not
/// reported as done; the connection is dropped as a protocol error.
#[test]
fn a_shared_connection_left_in_a_transaction_is_dropped() {
    support::init_runtime();
    let fake = FakePg::start(|conn, n| {
        use std::io::Write;
        if n == 0 {
            if fakepg::read_until_sync(conn).is_ok() {
                let mut out = fakepg::message(b'2', &[]);
                out.extend(fakepg::message(b'C', b"UPDATE 1\0"));
                out.extend(fakepg::message(b'Z', b"T"));
                let _ = conn.write_all(&out);
            }
            fakepg::drain(conn);
        } else {
            fakepg::serve(conn);
        }
    });
    let c = started(fake_params(fake.port), &[SET_TEXT]);
    let e = c
        .query(SET_TEXT.name, &[Param::Text("x"), Param::Int4(1)], T)
        .expect_err("not committed");
    assert_eq!(e.kind(), ErrorKind::ConnectionLost, "{e}");
    let why = replaced(&c);
    assert_eq!(why.kind(), ErrorKind::Protocol, "{why}");
    c.query(SET_TEXT.name, &[Param::Text("x"), Param::Int4(1)], T)
        .expect("the next connection serves");
    c.close();
}

/// Preparing a stale statement again whose new Parse fails (here: the schema change that
/// staled it dropped a column it reads) keeps the old statement: closed first, it was gone,
/// the next query found it missing (26000) and `auto` mode took that for a transaction pooler.
#[test]
fn a_failed_re_prepare_keeps_the_statement() {
    use std::sync::atomic::AtomicBool;
    /// The peer's schema change: Parse fails and the prepared statement's plan is stale.
    static CHANGED: AtomicBool = AtomicBool::new(false);
    /// Whether the peer's session still has the statement.
    static PREPARED: AtomicBool = AtomicBool::new(false);
    support::init_runtime();
    let fake = FakePg::start(|conn, _| {
        use std::io::Write;
        let error = |code, text| fakepg::error_response("ERROR", code, text);
        while let Ok(batch) = fakepg::read_batch(conn) {
            let changed = CHANGED.load(Ordering::SeqCst);
            let mut out = Vec::new();
            // After an error the server skips everything up to the Sync.
            let mut failed = false;
            for (kind, body) in &batch {
                match kind {
                    b'S' => {
                        out.extend(fakepg::message(b'Z', b"I"));
                        failed = false;
                    }
                    _ if failed => {}
                    b'P' if changed => {
                        out.extend(error("42703", "column \"v\" does not exist"));
                        failed = true;
                    }
                    b'P' => {
                        if !fakepg::cstr(body, 0).is_empty() {
                            PREPARED.store(true, Ordering::SeqCst);
                        }
                        out.extend(fakepg::message(b'1', &[]));
                    }
                    b'C' => {
                        if !fakepg::cstr(&body[1..], 0).is_empty() {
                            PREPARED.store(false, Ordering::SeqCst);
                        }
                        out.extend(fakepg::message(b'3', &[]));
                    }
                    b'B' if !fakepg::cstr(body, 1).is_empty()
                        && !PREPARED.load(Ordering::SeqCst) =>
                    {
                        out.extend(error("26000", "prepared statement does not exist"));
                        failed = true;
                    }
                    b'B' if changed && !fakepg::cstr(body, 1).is_empty() => {
                        out.extend(error("0A000", "cached plan must not change result type"));
                        failed = true;
                    }
                    b'B' => out.extend(fakepg::message(b'2', &[])),
                    b'E' => {
                        out.extend(fakepg::int4_row(1));
                        out.extend(fakepg::message(b'C', b"SELECT 1\0"));
                    }
                    _ => {}
                }
            }
            if conn.write_all(&out).is_err() {
                return;
            }
        }
    });
    let mut params = fake_params(fake.port);
    params.statement_mode = pg::StatementMode::Auto;
    let c = started(params, &[ECHO]);
    CHANGED.store(true, Ordering::SeqCst);
    for _ in 0..2 {
        let e = c
            .query_read(ECHO.name, &[Param::Int4(1)], T)
            .expect_err("the new Parse fails");
        assert_eq!(e.code(), Some("42703"), "{e}");
        assert!(PREPARED.load(Ordering::SeqCst), "the old statement is kept");
    }
    assert!(!c.prepares_per_transaction(), "no pooler was seen");
    CHANGED.store(false, Ordering::SeqCst);
    let reply = c.query_read(ECHO.name, &[Param::Int4(1)], T).unwrap();
    assert_eq!(reply.rows.len(), 1);
    assert_eq!(c.connects(), 1, "served on the same connection throughout");
    c.close();
}

/// A simple query that fails inside the transaction block it opened (`BEGIN; SELECT 1/0;
/// COMMIT` in one Query) leaves the session in a failed transaction (ReadyForQuery `E`). The
/// connection must go, but that statement's outcome is known (it failed, nothing committed):
/// its caller gets the server's error, not "connection lost".
#[test]
fn a_failed_transaction_block_reports_the_servers_error() {
    support::init_runtime();
    let fake = FakePg::start(|conn, n| {
        use std::io::Write;
        if n == 0 {
            if fakepg::read_until_sync(conn).is_ok() {
                let mut out = fakepg::message(b'C', b"BEGIN\0");
                out.extend(fakepg::error_response("ERROR", "22012", "division by zero"));
                out.extend(fakepg::message(b'Z', b"E"));
                let _ = conn.write_all(&out);
            }
            fakepg::drain(conn);
        } else {
            fakepg::serve(conn);
        }
    });
    let c = Client::start(fake_params(fake.port), &[]);
    c.wait_connected(T).expect("connect");
    let e = c
        .simple_query("BEGIN; SELECT 1/0; COMMIT", T)
        .expect_err("division by zero");
    assert_eq!(e.code(), Some("22012"), "the server's own error: {e}");
    assert!(
        eventually(Duration::from_secs(5), || c.connects() >= 2
            && c.is_connected()),
        "the connection left in a failed transaction was replaced"
    );
    c.close();
}
