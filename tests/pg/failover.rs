//! Read replicas and failover, by the harness and without Docker: a primary and a
//! streaming standby made with `pg_basebackup` on this machine.
//!
//! - Failover: synchronous replication and a client given both hosts with
//!   `target_session_attrs=read-write`. Writes run all along; the primary is stopped, the
//!   standby promoted; writes must come back by themselves within seconds, and no write that
//!   was acknowledged may be missing on the promoted server.
//! - Reads on the standby: the service itself with both hosts and `prefer-standby`; lookups are
//!   served by the standby (its counters move), writes by the primary, and when the standby
//!   stops, reads go on from the primary.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::support;
use crate::support::app::{command, App};
use crate::support::http::{get, request};
use crate::support::pg::{Cluster, Server};
use records_service::pg::{Client, Param, Statement, TargetSessionAttrs};
use support::wait::eventually;

fn replicated_pair(settings: &[String]) -> (Cluster, Cluster) {
    let primary = Cluster::start_with(
        &[
            "host all postgres 127.0.0.1/32 trust".to_string(),
            "host replication postgres 127.0.0.1/32 trust".to_string(),
        ],
        settings,
        &[],
    );
    let standby = Cluster::standby_of(&primary);
    (primary, standby)
}

/// The service's environment: `DATABASE_URL` and the test defaults, plus `extra`.
fn service_env(url: String, extra: &[(&str, &str)]) -> Vec<(String, String)> {
    [
        ("DATABASE_URL", url),
        ("SERVER_PORT", "0".to_string()),
        ("WORKERS", "2".to_string()),
        (
            "STATIC_DIR",
            concat!(env!("CARGO_MANIFEST_DIR"), "/static").to_string(),
        ),
    ]
    .into_iter()
    .chain(extra.iter().map(|(k, v)| (*k, v.to_string())))
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

/// Rows the standby's database has handed out so far (its own statistics).
fn tuples_fetched(server: &Server) -> i64 {
    server
        .execute("SELECT tup_fetched FROM pg_stat_database WHERE datname = 'postgres'")
        .rows[0]
        .text(0)
        .unwrap()
        .unwrap()
        .parse()
        .unwrap()
}

const INSERT: Statement = Statement {
    name: "insert",
    sql: "INSERT INTO t (v) VALUES ($1::int4) RETURNING id",
};

#[test]
fn writes_find_the_promoted_standby_and_lose_nothing_acknowledged() {
    support::init_runtime();
    // The harness's servers run with synchronous_commit=off; a synchronous standby needs on.
    let (primary, standby) = replicated_pair(&["synchronous_commit=on".to_string()]);
    primary
        .server
        .execute("CREATE TABLE t (id bigserial PRIMARY KEY, v int NOT NULL)");
    // Two messages: ALTER SYSTEM cannot run in the implicit transaction of a multi-statement
    // query.
    primary
        .server
        .execute("ALTER SYSTEM SET synchronous_standby_names = '*'");
    primary.server.execute("SELECT pg_reload_conf()");
    assert!(
        eventually(Duration::from_secs(30), || primary
            .server
            .execute("SELECT sync_state FROM pg_stat_replication")
            .rows
            .first()
            .and_then(|r| r.text(0).ok().flatten().map(|s| s == "sync"))
            .unwrap_or(false)),
        "the standby is synchronous"
    );

    let mut params = primary.server.params("postgres");
    params.more_hosts = vec![(standby.server.host.clone(), standby.server.port)];
    params.target_session_attrs = TargetSessionAttrs::ReadWrite;
    params.connect_timeout = Duration::from_secs(2);
    let client = Client::start(params, &[INSERT]);
    client.wait_connected(Duration::from_secs(10)).unwrap();

    // Writes all along: the ids acknowledged, and the time of every failure.
    let stop = Arc::new(AtomicBool::new(false));
    let acknowledged = Arc::new(Mutex::new(Vec::<i64>::new()));
    let failures = Arc::new(Mutex::new(Vec::<Instant>::new()));
    let writer = {
        let (client, stop, acknowledged, failures) = (
            client.clone(),
            stop.clone(),
            acknowledged.clone(),
            failures.clone(),
        );
        std::thread::spawn(move || {
            let mut n = 0;
            while !stop.load(Ordering::SeqCst) {
                n += 1;
                match client.query(INSERT.name, &[Param::Int4(n)], Duration::from_secs(2)) {
                    Ok(reply) => {
                        let id = reply.rows[0].integer(0).unwrap().unwrap();
                        acknowledged.lock().unwrap().push(id);
                    }
                    Err(_) => {
                        failures.lock().unwrap().push(Instant::now());
                        std::thread::sleep(Duration::from_millis(20));
                    }
                }
            }
        })
    };
    assert!(eventually(Duration::from_secs(10), || acknowledged
        .lock()
        .unwrap()
        .len()
        >= 200));
    primary.stop_server();
    let stopped = Instant::now();
    // Writes fail while there is no primary (the standby is read-only and skipped).
    assert!(eventually(Duration::from_secs(10), || !failures
        .lock()
        .unwrap()
        .is_empty()));
    let before_promotion = acknowledged.lock().unwrap().len();
    standby.promote();
    let promoted = Instant::now();
    assert!(
        eventually(Duration::from_secs(15), || acknowledged
            .lock()
            .unwrap()
            .len()
            >= before_promotion + 200),
        "writes resumed on the promoted standby"
    );
    let resumed = Instant::now();
    stop.store(true, Ordering::SeqCst);
    writer.join().unwrap();
    eprintln!(
        "failover: primary stopped, writes failing, standby promoted {:?} later; writes back \
         {:?} after the promotion",
        promoted - stopped,
        resumed - promoted
    );
    assert!(resumed - promoted < Duration::from_secs(10));

    // Every acknowledged write is on the promoted server.
    let acknowledged = acknowledged.lock().unwrap().clone();
    let present: std::collections::HashSet<i64> = standby
        .server
        .execute("SELECT id FROM t")
        .rows
        .iter()
        .map(|r| r.text(0).unwrap().unwrap().parse().unwrap())
        .collect();
    let missing: Vec<i64> = acknowledged
        .iter()
        .copied()
        .filter(|id| !present.contains(id))
        .collect();
    assert!(
        missing.is_empty(),
        "{} of {} acknowledged writes missing after failover: {:?}",
        missing.len(),
        acknowledged.len(),
        &missing[..missing.len().min(10)]
    );
    client.close();
}

#[test]
fn reads_go_to_the_standby_and_fall_back_to_the_primary() {
    support::init_runtime();
    let (primary, standby) = replicated_pair(&[]);
    let url = format!(
        "postgres://postgres@127.0.0.1:{},127.0.0.1:{}/postgres?target_session_attrs=prefer-standby&sslmode=disable",
        primary.server.port, standby.server.port
    );
    let env = service_env(url, &[]);
    // Migrations are writes: they reach the primary, and the standby replays them.
    let out = command(&env).arg("migrate").output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    primary.server.execute(
        "INSERT INTO records (id, email, text) \
         SELECT g, 'u' || g || '@x.com', 't' FROM generate_series(1, 100) g; \
         SELECT setval(pg_get_serial_sequence('records', 'id'), 100)",
    );
    // Replayed on the standby (the table may not exist there yet: errors count as not yet).
    assert!(eventually(Duration::from_secs(10), || {
        let c = standby.server.admin();
        let count = c
            .simple_query("SELECT count(*) FROM records", Duration::from_secs(5))
            .ok()
            .and_then(|r| {
                let row = r.rows.first()?;
                row.text(0).ok().flatten().map(str::to_string)
            });
        c.close();
        count.as_deref() == Some("100")
    }));
    let app = App::spawn(&env);
    assert!(eventually(Duration::from_secs(10), || get(
        app.addr, "/readyz"
    )
    .status
        == 200));

    // Lookups are served by the standby: its statistics count the rows.
    let before = tuples_fetched(&standby.server);
    for id in 1..=100 {
        let r = get(app.addr, &format!("/user/{id}"));
        assert_eq!(r.status, 200, "{}", r.text());
    }
    assert!(
        eventually(Duration::from_secs(5), || tuples_fetched(&standby.server)
            >= before + 100),
        "the standby served the lookups"
    );
    // A write goes to the primary (the standby would refuse it), and is read back once the
    // standby has replayed it: reads after writes may be stale for that long.
    let r = request(
        app.addr,
        "POST",
        "/user?email=new@x.com",
        Some(br#"{"text":"written"}"#),
    );
    assert_eq!(r.status, 200, "{}: {}", r.text(), app.log_text());
    assert!(eventually(Duration::from_secs(5), || get(
        app.addr,
        "/user?email=new@x.com"
    )
    .status
        == 200));

    // The standby stops: reads go on, from the primary.
    standby.stop_server();
    let stopped = Instant::now();
    // Every read client (one per worker) reconnects to the primary: until then a lookup on one
    // still reconnecting can answer 503.
    assert!(
        eventually(Duration::from_secs(10), || (1..=20).all(|id| get(
            app.addr,
            &format!("/user/{id}")
        )
        .status
            == 200)),
        "reads resumed on the primary"
    );
    eprintln!("standby stopped: reads back after {:?}", stopped.elapsed());
    for id in 1..=50 {
        assert_eq!(get(app.addr, &format!("/user/{id}")).status, 200);
    }
}

/// A standby whose replay lag is over PG_MAX_STANDBY_LAG_MS when the service connects is passed
/// over: reads go to the primary (and the log says why).
#[test]
fn a_standby_too_far_behind_is_passed_over() {
    support::init_runtime();
    let (primary, standby) = replicated_pair(&[]);
    primary
        .server
        .execute("CREATE TABLE lagging (x int); INSERT INTO lagging VALUES (1)");
    assert!(eventually(Duration::from_secs(10), || {
        let c = standby.server.admin();
        let ok = c
            .simple_query("SELECT 1 FROM lagging", Duration::from_secs(5))
            .is_ok();
        c.close();
        ok
    }));
    // Replay paused, then a write: the standby receives it and does not apply it.
    standby.server.execute("SELECT pg_wal_replay_pause()");
    primary.server.execute("INSERT INTO lagging VALUES (2)");
    let lag = || {
        standby
            .server
            .execute(
                "SELECT pg_last_wal_receive_lsn() <> pg_last_wal_replay_lsn() \
                 AND now() - pg_last_xact_replay_timestamp() > interval '1 second'",
            )
            .rows[0]
            .text(0)
            .unwrap()
            == Some("t")
    };
    assert!(eventually(Duration::from_secs(10), lag), "the standby lags");
    let url = format!(
        "postgres://postgres@127.0.0.1:{},127.0.0.1:{}/postgres?target_session_attrs=prefer-standby&sslmode=disable",
        primary.server.port, standby.server.port
    );
    let env = service_env(url, &[("PG_MAX_STANDBY_LAG_MS", "500")]);
    let out = command(&env).arg("migrate").output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    primary
        .server
        .execute("INSERT INTO records (id, email, text) VALUES (1, 'a@x.com', 'x')");
    let app = App::spawn(&env);
    assert!(eventually(Duration::from_secs(10), || get(
        app.addr, "/readyz"
    )
    .status
        == 200));
    // The row exists only on the primary (the standby has not replayed it): found means read
    // there.
    let r = get(app.addr, "/user/1");
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(
        app.log_text().contains("passing over standby"),
        "{}",
        app.log_text()
    );
}

/// A standby whose replay lag is no finite age (float8 `Infinity`, `NaN`) is too far behind:
/// the connect goes on to the next host. `Infinity` must not panic the whole connect (no host
/// after it would be tried), nor `NaN` pass for a lag of zero. The first host is a scripted
/// standby; the second a real server whose session is read-only for this role, so it passes
/// for a standby that is caught up (no WAL received: no lag).
#[test]
fn a_standby_whose_lag_is_not_a_finite_age_is_passed_over() {
    use crate::support::fakepg::{standby_with_lag, FakePg};
    use crate::support::pg::server;
    let real = server();
    let role = format!("stand_in_{}", std::process::id());
    real.execute(&format!(
        "DROP ROLE IF EXISTS {role}; CREATE ROLE {role} LOGIN PASSWORD 'stand-in'; \
         ALTER ROLE {role} SET default_transaction_read_only = on"
    ));
    type Script = fn(&mut std::net::TcpStream, usize);
    let scripts: [(&str, Script); 2] = [
        ("Infinity", |conn, _| standby_with_lag(conn, "Infinity")),
        ("NaN", |conn, _| standby_with_lag(conn, "NaN")),
    ];
    for (lag, script) in scripts {
        let fake = FakePg::start(script);
        let mut params = real.params(&real.admin_db);
        params.host = "127.0.0.1".into();
        params.port = fake.port;
        params.more_hosts = vec![(real.host.clone(), real.port)];
        params.user = role.clone();
        params.password = Some("stand-in".into());
        params.target_session_attrs = TargetSessionAttrs::PreferStandby;
        params.max_standby_lag = Duration::from_secs(10);
        let client = Client::start(params, &[]);
        client
            .wait_connected(Duration::from_secs(15))
            .unwrap_or_else(|e| panic!("lag {lag}: {e}"));
        // The scripted peer answers no query: an answer comes from the real server.
        let port = client
            .simple_query("SHOW port", Duration::from_secs(5))
            .unwrap_or_else(|e| panic!("lag {lag}: connected to the scripted standby: {e}"));
        assert_eq!(
            port.rows[0].text(0).unwrap(),
            Some(real.port.to_string().as_str()),
            "lag {lag}"
        );
        client.close();
    }
    real.execute(&format!("DROP ROLE IF EXISTS {role}"));
}
