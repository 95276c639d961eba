//! The embedded backend: conversations' entries in one SQLite file, through diesel-async.

use std::path::Path;

use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use diesel_migrations::{EmbeddedMigrations, embed_migrations};
use im_common::sqlite::{Conn, SqliteDb, SqliteError};

use super::{
    Appended, NewEntry, StoreError, StoreResult, schema::read_cursors, sql::message_store,
};

const MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/sqlite");

/// Ids asked for per statement, well under SQLite's bound-parameter limit.
const CHUNK: usize = 500;

impl From<SqliteError> for StoreError {
    fn from(error: SqliteError) -> Self {
        Self::Backend(Box::new(error))
    }
}

/// The message store on one SQLite file.
#[derive(Debug)]
pub struct SqliteMessageStore {
    db: SqliteDb,
}

impl SqliteMessageStore {
    /// Opens (creating if needed) the database file and brings its schema up to date.
    pub async fn open(path: &Path, max_connections: usize) -> StoreResult<Self> {
        Ok(Self {
            db: SqliteDb::open(path, max_connections, MIGRATIONS).await?,
        })
    }
}

/// The synchronous half: appends run on diesel's synchronous connection, where multi-statement
/// batches cost one thread hop.
mod sync {
    use diesel::prelude::*;

    use im_proto::{ConversationId, ConversationKind};

    use super::super::{
        Appended, NewEntry, StoredEntry,
        schema::{conversations, direct_members, entries},
        sql::stored_entry,
    };

    /// Appends one entry inside the caller's transaction, on the synchronous connection.
    pub(super) fn append_one(
        conn: &mut diesel::SqliteConnection,
        new: &NewEntry,
    ) -> QueryResult<Appended> {
        let first = entries::table
            .filter(entries::conversation_id.eq(&new.conversation_id))
            .filter(entries::sender_user_id.eq(&new.sender_user_id))
            .filter(entries::client_msg_id.eq(&new.client_msg_id))
            .select(StoredEntry::as_select())
            .first(conn)
            .optional()?;
        if let Some(first) = first {
            return Ok(Appended::Duplicate(first));
        }
        let last: i64 = diesel::insert_into(conversations::table)
            .values((
                conversations::conversation_id.eq(&new.conversation_id),
                conversations::last_seq.eq(1),
            ))
            .on_conflict(conversations::conversation_id)
            .do_update()
            .set(conversations::last_seq.eq(conversations::last_seq + 1))
            .returning(conversations::last_seq)
            .get_result(conn)?;
        let stored = stored_entry(new, last);
        diesel::insert_into(entries::table)
            .values(&stored)
            .execute(conn)?;
        if last == 1 {
            // A 1:1 conversation starts with its first entry: both users now have it.
            if let Ok(id) = new.conversation_id.parse::<ConversationId>()
                && let ConversationKind::Direct(a, b) = id.kind()
            {
                for user in [a, b] {
                    diesel::insert_or_ignore_into(direct_members::table)
                        .values((
                            direct_members::user_id.eq(user.as_str()),
                            direct_members::conversation_id.eq(&new.conversation_id),
                        ))
                        .execute(conn)?;
                }
            }
        }
        Ok(Appended::New(stored))
    }
}

/// Appends the batch in one transaction on the synchronous connection: one thread hop and one
/// fsync for all of it (group commit).
async fn append_batch(conn: &mut Conn, batch: &[NewEntry]) -> StoreResult<Vec<Appended>> {
    let batch = batch.to_vec();
    conn.spawn_blocking(move |conn| {
        conn.immediate_transaction(|conn| {
            batch
                .iter()
                .map(|new| sync::append_one(conn, new))
                .collect()
        })
    })
    .await
    .map_err(Into::into)
}

/// Moves `user_id`'s read cursor forward to `target` (writers take turns: a read, then an
/// update or an insert); the cursor after the move.
async fn advance_cursor(
    conn: &mut Conn,
    conversation_id: &str,
    user_id: &str,
    target: i64,
    now_ms: i64,
) -> QueryResult<u64> {
    let key = (conversation_id, user_id);
    let current: Option<i64> = read_cursors::table
        .find(key)
        .select(read_cursors::read_seq)
        .first(conn)
        .await
        .optional()?;
    match current {
        Some(read) if read >= target => return Ok(read as u64),
        Some(_) => {
            diesel::update(read_cursors::table.find(key))
                .set((
                    read_cursors::read_seq.eq(target),
                    read_cursors::updated_at_ms.eq(now_ms),
                ))
                .execute(conn)
                .await?;
        }
        None => {
            diesel::insert_into(read_cursors::table)
                .values((
                    read_cursors::conversation_id.eq(conversation_id),
                    read_cursors::user_id.eq(user_id),
                    read_cursors::read_seq.eq(target),
                    read_cursors::updated_at_ms.eq(now_ms),
                ))
                .execute(conn)
                .await?;
        }
    }
    Ok(target as u64)
}

/// Content entries above a seq, not sent by a user, not recalled or deleted.
const UNREAD_COUNT: &str = "SELECT COUNT(*) AS n FROM entries e \
     WHERE e.conversation_id = ? AND e.seq > ? AND e.kind = ? AND e.sender_user_id <> ? \
     AND NOT EXISTS (SELECT 1 FROM entries t WHERE t.conversation_id = e.conversation_id \
                     AND t.target_seq = e.seq AND t.kind IN (?, ?))";

message_store! {
    store: SqliteMessageStore,
}
