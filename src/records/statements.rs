//! Every SQL statement of the service, as a typed [`Query`]: its SQL, its name, and the lane it
//! runs on. The compiler lists each place to change when one is added: every `match` below
//! names every statement, the lanes' statement lists are derived from [`Query::lane`], and
//! `/metrics` counts a query in the slot `query as usize`.
//!
//! Two lanes keep slow work off the fast path (head-of-line blocking: a pipelined connection
//! answers in order, so one slow query would stall every lookup queued behind it):
//! - the fast lane, one pipelined connection per worker: point lookups, single-row writes and
//!   keyset pages, each an index probe;
//! - the listing lane, a few more connections: `offset` listings, whose cost grows with the
//!   offset (offset 9,000,000 walks nine million index entries).

use crate::pg::Statement;

closed_enum! {
    /// A statement the service runs, prepared on every connection of its lane. `/metrics`
    /// counts `Query::ALL[i]` in slot `i`.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum Query {
        ById,
        TextByEmail,
        Upsert,
        Delete,
        PageOffset,
        PageAfter,
        PageAfterOffset,
        Ping,
    }
}

/// Where a statement runs (see the module's docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lane {
    /// The fast lane; a read-only one also runs on the standby connections when reads go there.
    Fast,
    /// The listing lane.
    Listing,
}

impl Query {
    /// The statement as the PostgreSQL client prepares and runs it.
    pub const fn statement(self) -> Statement {
        match self {
            Query::ById => Statement {
                name: "by_id",
                sql: "SELECT id, email::text, text::text FROM records WHERE id = $1::int4",
            },
            Query::TextByEmail => Statement {
                name: "text_by_email",
                sql: "SELECT text::text FROM records WHERE email = $1::citext",
            },
            Query::Upsert => Statement {
                name: "upsert",
                sql: "INSERT INTO records (email, text) VALUES ($1::citext, $2::text) \
                      ON CONFLICT (email) DO UPDATE SET text = EXCLUDED.text",
            },
            Query::Delete => Statement {
                name: "delete",
                sql: "DELETE FROM records WHERE email = $1::citext",
            },
            Query::PageOffset => Statement {
                name: "page_offset",
                sql: "SELECT email::text, text::text FROM records ORDER BY records.email \
                      LIMIT $1::int8 OFFSET $2::int8",
            },
            Query::PageAfter => Statement {
                name: "page_after",
                sql:
                    "SELECT email::text, text::text FROM records WHERE records.email > $1::citext \
                      ORDER BY records.email \
                      LIMIT $2::int8",
            },
            Query::PageAfterOffset => Statement {
                name: "page_after_offset",
                sql:
                    "SELECT email::text, text::text FROM records WHERE records.email > $1::citext \
                      ORDER BY records.email \
                      LIMIT $2::int8 OFFSET $3::int8",
            },
            Query::Ping => Statement {
                name: "ping",
                sql: "SELECT 1",
            },
        }
    }

    /// The statement's name: what the client runs it by, and its `statement` label.
    #[inline]
    pub const fn name(self) -> &'static str {
        self.statement().name
    }

    /// The lane it runs on. An `offset` walks the index up to the offset: the listing lane.
    pub const fn lane(self) -> Lane {
        match self {
            Query::ById
            | Query::TextByEmail
            | Query::Upsert
            | Query::Delete
            | Query::PageAfter
            | Query::Ping => Lane::Fast,
            Query::PageOffset | Query::PageAfterOffset => Lane::Listing,
        }
    }

    /// Whether it has side effects: it gets its own Sync, and never runs on a standby.
    pub const fn writes(self) -> bool {
        match self {
            Query::Upsert | Query::Delete => true,
            Query::ById
            | Query::TextByEmail
            | Query::PageOffset
            | Query::PageAfter
            | Query::PageAfterOffset
            | Query::Ping => false,
        }
    }

    /// The statements prepared on the fast lane's connections (to the primary).
    pub fn fast_lane() -> Vec<Statement> {
        Query::prepared(|q| q.lane() == Lane::Fast)
    }

    /// The statements prepared on the standby connections (reads on standbys): the fast lane's
    /// read-only ones.
    pub fn read_lane() -> Vec<Statement> {
        Query::prepared(|q| q.lane() == Lane::Fast && !q.writes())
    }

    /// The statements prepared on the listing lane's connections.
    pub fn listing_lane() -> Vec<Statement> {
        Query::prepared(|q| q.lane() == Lane::Listing)
    }

    fn prepared(on_lane: impl Fn(Query) -> bool) -> Vec<Statement> {
        Query::ALL
            .into_iter()
            .filter(|q| on_lane(*q))
            .map(Query::statement)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_the_lanes_keep_their_order() {
        for (i, a) in Query::ALL.iter().enumerate() {
            for b in &Query::ALL[i + 1..] {
                assert_ne!(a.name(), b.name());
            }
        }
        let names = |s: Vec<Statement>| s.iter().map(|s| s.name).collect::<Vec<_>>();
        assert_eq!(
            names(Query::fast_lane()),
            [
                "by_id",
                "text_by_email",
                "upsert",
                "delete",
                "page_after",
                "ping"
            ]
        );
        assert_eq!(
            names(Query::read_lane()),
            ["by_id", "text_by_email", "page_after", "ping"]
        );
        assert_eq!(
            names(Query::listing_lane()),
            ["page_offset", "page_after_offset"]
        );
    }
}
