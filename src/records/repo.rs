//! The repository: every SQL statement of the service, prepared on every connection, and the
//! connections they run on.
//!
//! Two lanes keep slow work off the fast path (head-of-line blocking: a pipelined connection
//! answers in order, so one slow query would stall every lookup queued behind it):
//! - the fast lane, one pipelined connection per worker: point lookups, single-row writes and
//!   keyset pages, each an index probe;
//! - the listing lane, a few more connections: `offset` listings, whose cost grows with the
//!   offset (offset 9,000,000 walks nine million index entries).

use std::time::Duration;

use crate::config::DatabaseConfig;
use crate::pg::{Client, Error, Param, Reply, Row, Statement};

use super::email::EmailAddress;

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
pub const PING: Statement = Statement {
    name: "ping",
    sql: "SELECT 1",
};

const FAST_STATEMENTS: &[Statement] = &[BY_ID, TEXT_BY_EMAIL, UPSERT, DELETE, PAGE_AFTER, PING];
const LISTING_STATEMENTS: &[Statement] = &[PAGE_OFFSET];

pub struct Repository {
    fast: Vec<Client>,
    listing: Vec<Client>,
    timeout: Duration,
}

impl Repository {
    /// Starts `workers` fast-lane connections and the configured listing connections; they
    /// connect (and reconnect) in the background.
    pub fn start(db: &DatabaseConfig, workers: usize) -> Repository {
        let params = db.connect_params();
        Repository {
            fast: (0..workers.max(1))
                .map(|_| Client::start(params.clone(), FAST_STATEMENTS))
                .collect(),
            listing: (0..db.listing_connections.max(1))
                .map(|_| Client::start(params.clone(), LISTING_STATEMENTS))
                .collect(),
            timeout: db.query_timeout,
        }
    }

    /// Waits for the first connection attempt of every client; the first error, if any.
    pub fn wait_connected(&self, timeout: Duration) -> Result<(), Error> {
        for c in self.fast.iter().chain(&self.listing) {
            c.wait_connected(timeout)?;
        }
        Ok(())
    }

    pub fn is_connected(&self) -> bool {
        self.fast
            .iter()
            .chain(&self.listing)
            .all(Client::is_connected)
    }

    /// Every client, for tests and diagnostics.
    pub fn clients(&self) -> impl Iterator<Item = &Client> {
        self.fast.iter().chain(&self.listing)
    }

    fn fast(&self, lane: u64) -> &Client {
        &self.fast[(lane % self.fast.len() as u64) as usize]
    }

    /// A read-only statement: shares a Sync with its neighbours (see `pg::Isolation`).
    fn read(&self, lane: u64, st: &Statement, params: &[Param<'_>]) -> Result<Reply, Error> {
        self.fast(lane).query_read(st.name, params, self.timeout)
    }

    /// A statement with side effects: its own Sync, answered after its commit.
    fn write(&self, lane: u64, st: &Statement, params: &[Param<'_>]) -> Result<Reply, Error> {
        self.fast(lane).query(st.name, params, self.timeout)
    }

    /// The record's (id, email, text) row.
    pub fn by_id(&self, lane: u64, id: i32) -> Result<Option<Row>, Error> {
        Ok(self.read(lane, &BY_ID, &[Param::Int4(id)])?.rows.pop())
    }

    /// The record's (text) row.
    pub fn text_by_email(&self, lane: u64, email: &str) -> Result<Option<Row>, Error> {
        Ok(self
            .read(lane, &TEXT_BY_EMAIL, &[Param::Text(email)])?
            .rows
            .pop())
    }

    pub fn upsert(&self, lane: u64, email: EmailAddress<'_>, text: &str) -> Result<(), Error> {
        self.write(
            lane,
            &UPSERT,
            &[Param::Text(email.as_str()), Param::Text(text)],
        )
        .map(drop)
    }

    /// Deletes the record with that email, if any; returns how many rows went (0 or 1).
    pub fn delete(&self, lane: u64, email: &str) -> Result<u64, Error> {
        Ok(self.write(lane, &DELETE, &[Param::Text(email)])?.affected)
    }

    /// (email, text) rows ordered by email, from `offset`. On the listing lane.
    pub fn page_offset(&self, lane: u64, limit: i64, offset: i64) -> Result<Vec<Row>, Error> {
        let client = &self.listing[(lane % self.listing.len() as u64) as usize];
        Ok(client
            .query_read(
                PAGE_OFFSET.name,
                &[Param::Int8(limit), Param::Int8(offset)],
                self.timeout,
            )?
            .rows)
    }

    /// (email, text) rows ordered by email, after `after` (keyset pagination): an index probe,
    /// so on the fast lane.
    pub fn page_after(&self, lane: u64, after: &str, limit: i64) -> Result<Vec<Row>, Error> {
        Ok(self
            .read(lane, &PAGE_AFTER, &[Param::Text(after), Param::Int8(limit)])?
            .rows)
    }

    /// Whether the database answers a trivial query on this lane within `timeout`.
    pub fn ping(&self, lane: u64, timeout: Duration) -> Result<(), Error> {
        self.fast(lane)
            .query_read(PING.name, &[], timeout)
            .map(drop)
    }
}
