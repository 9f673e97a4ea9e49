//! As TechEmpower's `src/db_pool.rs`: per worker a `xitca_postgres::pool::Pool` of capacity 1,
//! built by the async state builder (`App::with_async_state` in `main.rs`; TechEmpower's
//! xitca-http entry uses xitca-http's `ContextBuilder`, the layer under it). The pool connects
//! on first use and reconnects a closed connection; `execute(&mut conn)` on the named statement
//! prepares it on the connection the first time and hands out the cached copy afterwards.

use xitca_postgres::{Execute, pool::Pool};

use crate::{
    db::Exec,
    util::{HandleResult, db_url},
};

pub struct Client {
    pool: Pool,
}

impl Client {
    pub async fn create() -> HandleResult<Self> {
        let pool = Pool::builder(db_url()).capacity(1).build()?;
        Ok(Self { pool })
    }

    pub async fn user(&self, id: i32) -> HandleResult<Option<Vec<u8>>> {
        let mut conn = self.pool.get().await?;
        let stmt = Exec::USER_STMT.execute(&mut conn).await?;
        Exec::user(conn, &stmt, id).await
    }
}
