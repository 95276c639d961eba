//! The embedded backend: one SQLite file in WAL mode, through diesel-async.

use std::path::Path;

use diesel::{prelude::*, upsert::excluded};
use diesel_migrations::{EmbeddedMigrations, embed_migrations};
use im_common::sqlite::{Conn, SqliteDb, SqliteError};

use super::{
    MemberRecord, StoreError, StoreResult, UserRecord, media_catalog,
    schema::{members, users},
    sql::business_store,
};

const MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/sqlite");

/// Rows inserted per statement, well under SQLite's bound-parameter limit.
const INSERT_CHUNK: usize = 500;

impl From<SqliteError> for StoreError {
    fn from(error: SqliteError) -> Self {
        Self::Backend(Box::new(error))
    }
}

/// The business store on one SQLite file.
#[derive(Debug)]
pub struct SqliteBusinessStore {
    db: SqliteDb,
}

impl SqliteBusinessStore {
    /// Opens (creating if needed) the database file and brings its schema up to date.
    pub async fn open(path: &Path, max_connections: usize) -> StoreResult<Self> {
        Ok(Self {
            db: SqliteDb::open(path, max_connections, MIGRATIONS).await?,
        })
    }
}

/// Creates the users, or updates their profiles (their activity and creation time stay).
async fn upsert_users(conn: &mut Conn, batch: &[UserRecord]) -> StoreResult<()> {
    // Row by row on the synchronous connection, inside the transaction: one thread hop for the
    // whole batch.
    let batch = batch.to_vec();
    conn.spawn_blocking(move |conn| {
        for user in &batch {
            let upsert = diesel::insert_into(users::table)
                .values(user)
                .on_conflict(users::user_id)
                .do_update()
                .set((
                    users::display_name.eq(excluded(users::display_name)),
                    users::avatar_url.eq(excluded(users::avatar_url)),
                    users::extra_json.eq(excluded(users::extra_json)),
                    users::updated_at_ms.eq(excluded(users::updated_at_ms)),
                ));
            diesel::RunQueryDsl::execute(upsert, conn)?;
        }
        Ok(())
    })
    .await?;
    Ok(())
}

/// Inserts the members, many rows per statement.
async fn insert_members(conn: &mut Conn, rows: &[MemberRecord]) -> StoreResult<()> {
    // Multi-row inserts exist only on diesel's synchronous SQLite connection: run them there,
    // on the same connection and so inside the open transaction.
    let rows = rows.to_vec();
    conn.spawn_blocking(move |conn| {
        for chunk in rows.chunks(INSERT_CHUNK) {
            let insert = diesel::insert_into(members::table).values(chunk);
            diesel::RunQueryDsl::execute(insert, conn)?;
        }
        Ok(())
    })
    .await?;
    Ok(())
}

business_store! {
    store: SqliteBusinessStore,
    // No row locks: writers take turns (`SqliteDb::writer`).
    insert_new: on_conflict_do_nothing,
}

media_catalog! {
    store: SqliteBusinessStore,
    insert_new: on_conflict_do_nothing,
}
