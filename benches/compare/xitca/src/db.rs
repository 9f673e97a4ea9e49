//! As TechEmpower's `src/db.rs` (`Exec::WORLD_STMT` and `Exec::db`): the statement is a
//! named, typed `StatementNamed` constant, prepared once per connection and cached on it by the
//! pool (`db_pool.rs`); the query is encoded and sent by `query`, then the connection guard is
//! dropped before the reply is awaited, so that the worker's other requests can queue their
//! queries behind it on the same connection.

use xitca_postgres::{
    Execute,
    dev::ClientBorrow,
    iter::AsyncLendingIterator,
    statement::{Statement, StatementNamed},
    types::Type,
};

use crate::{
    ser::{Record, json_serialize},
    util::HandleResult,
};

pub struct Exec;

impl Exec {
    pub const USER_STMT: StatementNamed<'_> = Statement::named(
        "SELECT id, email, text FROM records WHERE id = $1",
        &[Type::INT4],
    );

    /// The record with this id as JSON, or `None`.
    pub async fn user<C>(conn: C, stmt: &Statement, id: i32) -> HandleResult<Option<Vec<u8>>>
    where
        C: ClientBorrow,
    {
        let mut res = stmt.bind([id]).query(conn.borrow_cli_ref()).await?;
        drop(conn);
        let Some(row) = res.try_next().await? else {
            return Ok(None);
        };
        let body = json_serialize(&Record {
            id: row.get(0),
            email: row.get(1),
            text: row.get(2),
        })?;
        Ok(Some(body))
    }
}
