//! Failover (issue 11), by the harness and without Docker: a primary and a streaming standby
//! made with `pg_basebackup` on this machine, synchronous replication, and a client given both
//! hosts with `target_session_attrs=read-write`. Writes run all along; the primary is stopped,
//! the standby promoted; writes must come back by themselves within seconds, and no write that
//! was acknowledged may be missing on the promoted server.

#[path = "support/mod.rs"]
mod support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use records_service::pg::{Client, Param, Statement, TargetSessionAttrs};
use support::pg::Cluster;
use support::wait::eventually;

const INSERT: Statement = Statement {
    name: "insert",
    sql: "INSERT INTO t (v) VALUES ($1::int4) RETURNING id",
};

#[test]
fn writes_find_the_promoted_standby_and_lose_nothing_acknowledged() {
    support::init_runtime();
    let primary = Cluster::start_with(
        &[
            "host all postgres 127.0.0.1/32 trust".to_string(),
            "host replication postgres 127.0.0.1/32 trust".to_string(),
        ],
        // The harness's servers run with synchronous_commit=off; a synchronous standby needs on.
        &["synchronous_commit=on".to_string()],
        &[],
    );
    primary
        .server
        .execute("CREATE TABLE t (id bigserial PRIMARY KEY, v int NOT NULL)");
    let standby = Cluster::standby_of(&primary);
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
