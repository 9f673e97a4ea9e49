//! Applying the migrations in `sql/`: numbered files, each applied once, in order, recorded in
//! `schema_migrations`. Safe to run twice (applied versions are skipped) and from two processes
//! at once (a transaction-level advisory lock serializes them; the second finds the work done).

use std::time::Duration;

use crate::pg::{self, Client};

/// The migrations, embedded so the binary needs no `sql/` directory at run time. A unit test
/// checks this list against the files in `sql/`.
pub const MIGRATIONS: &[(i32, &str, &str)] = &[(
    1,
    "0001_create_records.sql",
    include_str!("../../sql/0001_create_records.sql"),
)];

/// Arbitrary but fixed key for `pg_advisory_xact_lock`, so concurrent migrators queue up.
const LOCK_KEY: i64 = 0x0072_6563_6f72_6473; // "records" in ASCII

const TIMEOUT: Duration = Duration::from_secs(600);

/// Applies what is missing; returns the versions applied now.
pub fn migrate(client: &Client) -> Result<Vec<i32>, pg::Error> {
    let mut applied_now = Vec::new();
    for (version, name, sql) in MIGRATIONS {
        // Each transaction on one pinned server session: if the connection is replaced midway,
        // the rest fails instead of running (autocommitted) on the new session, so a migration
        // is recorded as applied if and only if it committed.
        let client = client.session()?;
        // One transaction per migration: lock, check, apply, record. A failure rolls back the
        // whole migration, leaving it to be retried.
        let script = format!(
            "BEGIN;
             SELECT pg_advisory_xact_lock({LOCK_KEY});
             CREATE TABLE IF NOT EXISTS schema_migrations (
                 version    integer PRIMARY KEY,
                 name       text NOT NULL,
                 applied_at timestamptz NOT NULL DEFAULT now()
             );"
        );
        client.simple_query(&script, TIMEOUT)?;
        let done = client.simple_query(
            &format!("SELECT 1 FROM schema_migrations WHERE version = {version}"),
            TIMEOUT,
        );
        let done = match done {
            Ok(reply) => !reply.rows.is_empty(),
            Err(e) => {
                let _ = client.simple_query("ROLLBACK", TIMEOUT);
                return Err(e);
            }
        };
        if done {
            client.simple_query("COMMIT", TIMEOUT)?;
            continue;
        }
        let apply = format!(
            "{sql}\n;INSERT INTO schema_migrations (version, name) VALUES ({version}, '{}');",
            name.replace('\'', "''")
        );
        if let Err(e) = client.simple_query(&apply, TIMEOUT) {
            let _ = client.simple_query("ROLLBACK", TIMEOUT);
            return Err(e);
        }
        client.simple_query("COMMIT", TIMEOUT)?;
        applied_now.push(*version);
    }
    Ok(applied_now)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_sql_file_is_embedded_in_order() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/sql");
        let mut files: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.ends_with(".sql") && n.as_bytes()[0].is_ascii_digit())
            .collect();
        files.sort();
        let embedded: Vec<String> = MIGRATIONS.iter().map(|(_, n, _)| n.to_string()).collect();
        assert_eq!(files, embedded);
        for (i, (version, name, _)) in MIGRATIONS.iter().enumerate() {
            assert_eq!(*version as usize, i + 1, "{name}");
            assert!(name.starts_with(&format!("{version:04}_")), "{name}");
        }
    }
}
