//! SQLite through diesel-async, as the embedded stores use it: one file in WAL mode, each
//! store's migrations (embedded in its crate) run at open, commits durable before they return,
//! and one writer at a time.

use std::path::Path;

use diesel::{Connection, sqlite::SqliteConnection};
use diesel_async::{
    AsyncConnection, SimpleAsyncConnection,
    pooled_connection::{
        AsyncDieselConnectionManager, ManagerConfig,
        deadpool::{Object, Pool},
    },
    sync_connection_wrapper::SyncConnectionWrapper,
};
use diesel_migrations::{EmbeddedMigrations, MigrationHarness};
use tokio::sync::{Mutex, MutexGuard};

/// An async connection to the database.
pub type Conn = SyncConnectionWrapper<SqliteConnection>;

/// Settings of every connection: wait for a lock instead of failing, and make every commit
/// durable before it returns (an acknowledged change survives a crash or a power loss).
const CONNECTION_PRAGMAS: &str =
    "PRAGMA busy_timeout = 5000; PRAGMA foreign_keys = ON; PRAGMA synchronous = FULL;";

/// The database could not be opened or used.
#[derive(Debug, thiserror::Error)]
#[error("sqlite: {0}")]
pub struct SqliteError(String);

fn failed(error: impl std::fmt::Display) -> SqliteError {
    SqliteError(error.to_string())
}

/// One SQLite database file, pooled.
pub struct SqliteDb {
    pool: Pool<Conn>,
    /// SQLite has one writer at a time; taking turns here, rather than in SQLite's lock, keeps
    /// two transactions from deadlocking when both upgrade from read to write.
    writer: Mutex<()>,
}

impl std::fmt::Debug for SqliteDb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteDb")
            .field("pool", &self.pool.status())
            .finish()
    }
}

impl SqliteDb {
    /// Opens (creating if needed) the file and brings its schema up to date.
    pub async fn open(
        path: &Path,
        max_connections: usize,
        migrations: EmbeddedMigrations,
    ) -> Result<Self, SqliteError> {
        let url = path
            .to_str()
            .ok_or_else(|| failed("database path is not UTF-8"))?
            .to_owned();
        let migrate_url = url.clone();
        tokio::task::spawn_blocking(move || -> Result<(), SqliteError> {
            let mut conn = SqliteConnection::establish(&migrate_url).map_err(failed)?;
            diesel::connection::SimpleConnection::batch_execute(
                &mut conn,
                "PRAGMA journal_mode = WAL;",
            )
            .map_err(failed)?;
            conn.run_pending_migrations(migrations).map_err(failed)?;
            Ok(())
        })
        .await
        .map_err(failed)??;

        let mut config = ManagerConfig::<Conn>::default();
        config.custom_setup = Box::new(|url| {
            let url = url.to_owned();
            Box::pin(async move {
                let mut conn = Conn::establish(&url).await?;
                conn.batch_execute(CONNECTION_PRAGMAS)
                    .await
                    .map_err(diesel::ConnectionError::CouldntSetupConfiguration)?;
                Ok(conn)
            })
        });
        let manager = AsyncDieselConnectionManager::<Conn>::new_with_config(url, config);
        let pool = Pool::builder(manager)
            .max_size(max_connections.max(1))
            .build()
            .map_err(failed)?;
        Ok(Self {
            pool,
            writer: Mutex::new(()),
        })
    }

    /// A connection for reading.
    pub async fn conn(&self) -> Result<Object<Conn>, SqliteError> {
        self.pool.get().await.map_err(failed)
    }

    /// A connection for one write transaction, and the turn to write.
    pub async fn writer(&self) -> Result<(MutexGuard<'_, ()>, Object<Conn>), SqliteError> {
        let turn = self.writer.lock().await;
        Ok((turn, self.conn().await?))
    }
}
