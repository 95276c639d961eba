//! A database server (PostgreSQL, MySQL) through diesel-async, as the distributed mode's
//! stores use it: pooled connections shared by every node, where row locks, not a writer's
//! turn, order the write transactions. Generic over the connection type, so this crate needs
//! no database driver; the stores' crates pick theirs.

use diesel::{
    dsl::AsExprOf,
    query_builder::{QueryFragment, SqlQuery},
    sql_types::Integer,
};
use diesel_async::{
    SimpleAsyncConnection,
    methods::LoadQuery,
    pooled_connection::{
        AsyncDieselConnectionManager, PoolableConnection,
        deadpool::{Object, Pool},
    },
};

/// The database could not be reached or set up.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ServerDbError(String);

fn failed(error: impl std::fmt::Display) -> ServerDbError {
    ServerDbError(error.to_string())
}

/// Pooled connections to one database on a server.
pub struct ServerDb<C>
where
    // What diesel-async's pool asks of a connection type (the queries of its health check).
    C: PoolableConnection + 'static,
    for<'a> diesel::dsl::select<AsExprOf<i32, Integer>>: LoadQuery<'a, C, i32>,
    SqlQuery: QueryFragment<C::Backend>,
{
    pool: Pool<C>,
}

impl<C> std::fmt::Debug for ServerDb<C>
where
    C: PoolableConnection + 'static,
    for<'a> diesel::dsl::select<AsExprOf<i32, Integer>>: LoadQuery<'a, C, i32>,
    SqlQuery: QueryFragment<C::Backend>,
{
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerDb")
            .field("pool", &self.pool.status())
            .finish()
    }
}

impl<C> ServerDb<C>
where
    C: PoolableConnection + 'static,
    for<'a> diesel::dsl::select<AsExprOf<i32, Integer>>: LoadQuery<'a, C, i32>,
    SqlQuery: QueryFragment<C::Backend>,
{
    /// Connects to `url` and runs `setup` (the schema) on one connection.
    pub async fn connect(
        url: &str,
        max_connections: usize,
        setup: &str,
    ) -> Result<Self, ServerDbError> {
        let manager = AsyncDieselConnectionManager::<C>::new(url);
        let pool = Pool::builder(manager)
            .max_size(max_connections.max(1))
            .build()
            .map_err(failed)?;
        let mut conn = pool.get().await.map_err(failed)?;
        conn.batch_execute(setup).await.map_err(failed)?;
        Ok(Self { pool })
    }

    /// A connection for reading.
    pub async fn conn(&self) -> Result<Object<C>, ServerDbError> {
        self.pool.get().await.map_err(failed)
    }

    /// A connection for one write transaction, with no turn to take (row locks order them);
    /// the same shape as [`SqliteDb::writer`](crate::sqlite::SqliteDb::writer), so a store's
    /// code reads the same on both.
    pub async fn writer(&self) -> Result<((), Object<C>), ServerDbError> {
        Ok(((), self.conn().await?))
    }
}

/// An `INSERT` of `$values` into `$table` that skips a row whose key exists, in the form the
/// database knows: `on_conflict_do_nothing` (`ON CONFLICT DO NOTHING`: PostgreSQL, SQLite) or
/// `insert_or_ignore` (`INSERT IGNORE`: MySQL). The caller's crate has `diesel`.
#[macro_export]
macro_rules! insert_new {
    (on_conflict_do_nothing, $table:expr, $values:expr) => {
        diesel::insert_into($table)
            .values($values)
            .on_conflict_do_nothing()
    };
    (insert_or_ignore, $table:expr, $values:expr) => {
        diesel::insert_or_ignore_into($table).values($values)
    };
}
