//! The repository: the connections the service's statements run on, by lane, and one method
//! per statement. The statements and their lanes are in `statements`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::config::DatabaseConfig;
use crate::pg::{Client, Error, Param, Reply, Row, TargetSessionAttrs};

use super::email::EmailAddress;
use super::metrics::Metrics;
use super::statements::{Lane, Query};

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
        let (fast_lane, read_lane) = (Query::fast_lane(), Query::read_lane());
        let listing_lane = Query::listing_lane();
        Repository {
            fast: (0..workers)
                .map(|_| Client::start(write_params.clone(), &fast_lane))
                .collect(),
            reads: if standby_reads {
                (0..workers)
                    .map(|_| Client::start(read_params.clone(), &read_lane))
                    .collect()
            } else {
                Vec::new()
            },
            listing: (0..db.listing_connections.max(1))
                .map(|_| Client::start(listing_params.clone(), &listing_lane))
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

    /// Runs `run`, a query of `query`, counted by statement and outcome.
    fn counted<T>(&self, query: Query, run: impl FnOnce() -> Result<T, Error>) -> Result<T, Error> {
        if !self.metrics.enabled() {
            return run();
        }
        let started = Instant::now();
        let result = run();
        self.metrics.query(query, &result, started.elapsed());
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
    fn read(&self, affinity: u64, query: Query, params: &[Param<'_>]) -> Result<Reply, Error> {
        debug_assert!(query.lane() == Lane::Fast && !query.writes(), "{query:?}");
        let client = if self.reads.is_empty() {
            self.fast(affinity)
        } else {
            &self.reads[(affinity % self.reads.len() as u64) as usize]
        };
        self.counted(query, || {
            client.query_read(query.name(), params, self.timeout)
        })
    }

    /// A statement with side effects: its own Sync, answered after its commit.
    fn write(&self, affinity: u64, query: Query, params: &[Param<'_>]) -> Result<Reply, Error> {
        debug_assert!(query.lane() == Lane::Fast && query.writes(), "{query:?}");
        self.counted(query, || {
            self.fast(affinity)
                .query(query.name(), params, self.timeout)
        })
    }

    /// A read-only statement of the listing lane.
    fn listing(&self, affinity: u64, query: Query, params: &[Param<'_>]) -> Result<Reply, Error> {
        debug_assert!(
            query.lane() == Lane::Listing && !query.writes(),
            "{query:?}"
        );
        let client = &self.listing[(affinity % self.listing.len() as u64) as usize];
        self.counted(query, || {
            client.query_read(query.name(), params, self.timeout)
        })
    }

    /// The record's (id, email, text) row.
    pub fn by_id(&self, affinity: u64, id: i32) -> Result<Option<Row>, Error> {
        Ok(self
            .read(affinity, Query::ById, &[Param::Int4(id)])?
            .rows
            .pop())
    }

    /// The record's (text) row.
    pub fn text_by_email(&self, affinity: u64, email: &str) -> Result<Option<Row>, Error> {
        Ok(self
            .read(affinity, Query::TextByEmail, &[Param::Text(email)])?
            .rows
            .pop())
    }

    pub fn upsert(&self, affinity: u64, email: EmailAddress<'_>, text: &str) -> Result<(), Error> {
        self.write(
            affinity,
            Query::Upsert,
            &[Param::Text(email.as_str()), Param::Text(text)],
        )
        .map(drop)
    }

    /// Deletes the record with that email, if any; returns how many rows went (0 or 1).
    pub fn delete(&self, affinity: u64, email: &str) -> Result<u64, Error> {
        Ok(self
            .write(affinity, Query::Delete, &[Param::Text(email)])?
            .affected)
    }

    /// (email, text) rows ordered by email, from `offset`. On the listing lane.
    pub fn page_offset(&self, affinity: u64, limit: i64, offset: i64) -> Result<Vec<Row>, Error> {
        let params = [Param::Int8(limit), Param::Int8(offset)];
        Ok(self.listing(affinity, Query::PageOffset, &params)?.rows)
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
        let params = [Param::Text(after), Param::Int8(limit), Param::Int8(offset)];
        Ok(self
            .listing(affinity, Query::PageAfterOffset, &params)?
            .rows)
    }

    /// (email, text) rows ordered by email, after `after` (keyset pagination): an index probe,
    /// so on the fast lane.
    pub fn page_after(&self, affinity: u64, after: &str, limit: i64) -> Result<Vec<Row>, Error> {
        Ok(self
            .read(
                affinity,
                Query::PageAfter,
                &[Param::Text(after), Param::Int8(limit)],
            )?
            .rows)
    }

    /// Whether the database answers a trivial query (on the fast-lane connection `affinity`
    /// picks) within `timeout`.
    pub fn ping(&self, affinity: u64, timeout: Duration) -> Result<(), Error> {
        self.counted(Query::Ping, || {
            self.fast(affinity)
                .query_read(Query::Ping.name(), &[], timeout)
        })
        .map(drop)
    }
}
