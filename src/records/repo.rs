//! The repository: every SQL statement of the service, prepared on every connection, and the
//! connections they run on.
//!
//! Two lanes keep slow work off the fast path (head-of-line blocking: a pipelined connection
//! answers in order, so one slow query would stall every lookup queued behind it):
//! - the fast lane, one pipelined connection per worker: point lookups, single-row writes and
//!   keyset pages, each an index probe;
//! - the listing lane, a few more connections: `offset` listings, whose cost grows with the
//!   offset (offset 9,000,000 walks nine million index entries).

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::config::DatabaseConfig;
use crate::pg::{Client, Error, Param, Reply, Row, Statement, TargetSessionAttrs};

use super::email::EmailAddress;
use super::metrics::Metrics;

pub const BY_ID: Statement = Statement {
    name: "by_id",
    sql: "SELECT id, email::text, text::text FROM records WHERE id = $1::int4",
};
pub const TEXT_BY_EMAIL: Statement = Statement {
    name: "text_by_email",
    sql: "SELECT text::text FROM records WHERE email = $1::citext",
};
pub const UPSERT: Statement = Statement {
    name: "upsert",
    sql: "INSERT INTO records (email, text) VALUES ($1::citext, $2::text) \
          ON CONFLICT (email) DO UPDATE SET text = EXCLUDED.text",
};
pub const DELETE: Statement = Statement {
    name: "delete",
    sql: "DELETE FROM records WHERE email = $1::citext",
};
pub const PAGE_OFFSET: Statement = Statement {
    name: "page_offset",
    sql: "SELECT email::text, text::text FROM records ORDER BY records.email \
          LIMIT $1::int8 OFFSET $2::int8",
};
pub const PAGE_AFTER: Statement = Statement {
    name: "page_after",
    sql: "SELECT email::text, text::text FROM records WHERE records.email > $1::citext \
          ORDER BY records.email \
          LIMIT $2::int8",
};
pub const PAGE_AFTER_OFFSET: Statement = Statement {
    name: "page_after_offset",
    sql: "SELECT email::text, text::text FROM records WHERE records.email > $1::citext \
          ORDER BY records.email \
          LIMIT $2::int8 OFFSET $3::int8",
};
pub const PING: Statement = Statement {
    name: "ping",
    sql: "SELECT 1",
};

/// Every statement, in the order `/metrics` counts them by (`Metrics::query`'s index).
pub const STATEMENTS: [Statement; 8] = [
    BY_ID,
    TEXT_BY_EMAIL,
    UPSERT,
    DELETE,
    PAGE_OFFSET,
    PAGE_AFTER,
    PAGE_AFTER_OFFSET,
    PING,
];

const FAST_STATEMENTS: &[Statement] = &[BY_ID, TEXT_BY_EMAIL, UPSERT, DELETE, PAGE_AFTER, PING];
const READ_STATEMENTS: &[Statement] = &[BY_ID, TEXT_BY_EMAIL, PAGE_AFTER, PING];
const LISTING_STATEMENTS: &[Statement] = &[PAGE_OFFSET, PAGE_AFTER_OFFSET];

pub struct Repository {
    /// One per worker: writes, and reads unless `reads` has clients of its own.
    fast: Vec<Client>,
    /// One per worker, reads only, when they go to standbys (`target_session_attrs=
    /// prefer-standby`); empty otherwise.
    reads: Vec<Client>,
    listing: Vec<Client>,
    timeout: Duration,
    metrics: Arc<Metrics>,
}

impl Repository {
    /// Starts `workers` fast-lane connections and the configured listing connections; they
    /// connect (and reconnect) in the background.
    ///
    /// With several hosts, writes always go to the one whose session is writable (the
    /// primary, `read-write`); `target_session_attrs` says where reads go. With
    /// `prefer-standby`, reads (lookups, keyset pages, listings) have connections of their own
    /// to a standby within `PG_MAX_STANDBY_LAG_MS`, or to the primary when none is.
    /// Queries are counted in `metrics` (by statement and outcome, with their duration).
    pub fn start(db: &DatabaseConfig, workers: usize, metrics: Arc<Metrics>) -> Repository {
        let read_params = db.connect_params();
        let write_params = db.write_params();
        let standby_reads = read_params.target_session_attrs == TargetSessionAttrs::PreferStandby;
        let workers = workers.max(1);
        let listing_params = if standby_reads {
            &read_params
        } else {
            &write_params
        };
        Repository {
            fast: (0..workers)
                .map(|_| Client::start(write_params.clone(), FAST_STATEMENTS))
                .collect(),
            reads: if standby_reads {
                (0..workers)
                    .map(|_| Client::start(read_params.clone(), READ_STATEMENTS))
                    .collect()
            } else {
                Vec::new()
            },
            listing: (0..db.listing_connections.max(1))
                .map(|_| Client::start(listing_params.clone(), LISTING_STATEMENTS))
                .collect(),
            timeout: db.query_timeout,
            metrics,
        }
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// The connections by pool: `fast`, `reads` (empty unless reads go to standbys), `listing`.
    pub fn pools(&self) -> [(&'static str, &[Client]); 3] {
        [
            ("fast", &self.fast),
            ("reads", &self.reads),
            ("listing", &self.listing),
        ]
    }

    /// Runs `query` for `st`, counted by statement and outcome.
    fn counted<T>(
        &self,
        st: &Statement,
        query: impl FnOnce() -> Result<T, Error>,
    ) -> Result<T, Error> {
        if !self.metrics.enabled() {
            return query();
        }
        let started = Instant::now();
        let result = query();
        let index = STATEMENTS
            .iter()
            .position(|s| s.name == st.name)
            .unwrap_or(usize::MAX);
        self.metrics.query(index, &result, started.elapsed());
        result
    }

    /// Waits for the first connection attempt of every client; the first error, if any.
    pub fn wait_connected(&self, timeout: Duration) -> Result<(), Error> {
        for c in self.clients() {
            c.wait_connected(timeout)?;
        }
        Ok(())
    }

    pub fn is_connected(&self) -> bool {
        self.clients().all(Client::is_connected)
    }

    /// Every client, for tests and diagnostics.
    pub fn clients(&self) -> impl Iterator<Item = &Client> {
        self.fast.iter().chain(&self.reads).chain(&self.listing)
    }

    /// The fast-lane connection for `affinity` (the HTTP connection's number: one client's
    /// requests stay on one PostgreSQL connection, so they are answered in order).
    fn fast(&self, affinity: u64) -> &Client {
        &self.fast[(affinity % self.fast.len() as u64) as usize]
    }

    /// A read-only statement: shares a Sync with its neighbours (see `pg::Isolation`); on a
    /// standby when reads go there.
    fn read(&self, affinity: u64, st: &Statement, params: &[Param<'_>]) -> Result<Reply, Error> {
        let client = if self.reads.is_empty() {
            self.fast(affinity)
        } else {
            &self.reads[(affinity % self.reads.len() as u64) as usize]
        };
        self.counted(st, || client.query_read(st.name, params, self.timeout))
    }

    /// A statement with side effects: its own Sync, answered after its commit.
    fn write(&self, affinity: u64, st: &Statement, params: &[Param<'_>]) -> Result<Reply, Error> {
        self.counted(st, || {
            self.fast(affinity).query(st.name, params, self.timeout)
        })
    }

    /// The record's (id, email, text) row.
    pub fn by_id(&self, affinity: u64, id: i32) -> Result<Option<Row>, Error> {
        Ok(self.read(affinity, &BY_ID, &[Param::Int4(id)])?.rows.pop())
    }

    /// The record's (text) row.
    pub fn text_by_email(&self, affinity: u64, email: &str) -> Result<Option<Row>, Error> {
        Ok(self
            .read(affinity, &TEXT_BY_EMAIL, &[Param::Text(email)])?
            .rows
            .pop())
    }

    pub fn upsert(&self, affinity: u64, email: EmailAddress<'_>, text: &str) -> Result<(), Error> {
        self.write(
            affinity,
            &UPSERT,
            &[Param::Text(email.as_str()), Param::Text(text)],
        )
        .map(drop)
    }

    /// Deletes the record with that email, if any; returns how many rows went (0 or 1).
    pub fn delete(&self, affinity: u64, email: &str) -> Result<u64, Error> {
        Ok(self
            .write(affinity, &DELETE, &[Param::Text(email)])?
            .affected)
    }

    /// (email, text) rows ordered by email, from `offset`. On the listing lane.
    pub fn page_offset(&self, affinity: u64, limit: i64, offset: i64) -> Result<Vec<Row>, Error> {
        let client = &self.listing[(affinity % self.listing.len() as u64) as usize];
        let params = [Param::Int8(limit), Param::Int8(offset)];
        let reply = self.counted(&PAGE_OFFSET, || {
            client.query_read(PAGE_OFFSET.name, &params, self.timeout)
        })?;
        Ok(reply.rows)
    }

    /// (email, text) rows ordered by email, after `after`, from `offset`: walks the index up to
    /// the offset like [`Repository::page_offset`], so on the listing lane.
    pub fn page_after_offset(
        &self,
        affinity: u64,
        after: &str,
        limit: i64,
        offset: i64,
    ) -> Result<Vec<Row>, Error> {
        let client = &self.listing[(affinity % self.listing.len() as u64) as usize];
        let params = [Param::Text(after), Param::Int8(limit), Param::Int8(offset)];
        let reply = self.counted(&PAGE_AFTER_OFFSET, || {
            client.query_read(PAGE_AFTER_OFFSET.name, &params, self.timeout)
        })?;
        Ok(reply.rows)
    }

    /// (email, text) rows ordered by email, after `after` (keyset pagination): an index probe,
    /// so on the fast lane.
    pub fn page_after(&self, affinity: u64, after: &str, limit: i64) -> Result<Vec<Row>, Error> {
        Ok(self
            .read(
                affinity,
                &PAGE_AFTER,
                &[Param::Text(after), Param::Int8(limit)],
            )?
            .rows)
    }

    /// Whether the database answers a trivial query (on the fast-lane connection `affinity`
    /// picks) within `timeout`.
    pub fn ping(&self, affinity: u64, timeout: Duration) -> Result<(), Error> {
        self.counted(&PING, || {
            self.fast(affinity).query_read(PING.name, &[], timeout)
        })
        .map(drop)
    }
}
