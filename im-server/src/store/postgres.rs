//! The message store on PostgreSQL (feature `postgres`), through diesel-async and
//! tokio-postgres: the distributed mode's store, shared by every core node.
//!
//! A conversation's next seq comes from an upsert on its row (`ON CONFLICT ... DO UPDATE ...
//! RETURNING`), which locks the row until the batch's transaction ends: appends to one
//! conversation from any number of nodes take their turns, so seqs stay gap-free, and a batch
//! that fails (a concurrent resend of the same client message id, say) rolls its seqs back too.

use diesel::{prelude::*, sql_types::BigInt};
use diesel_async::{AsyncPgConnection, RunQueryDsl};

use super::{
    StoreResult,
    schema::{conversations, read_cursors},
    sql::{ServerDb, message_store, server_appends},
};

type Conn = AsyncPgConnection;

/// The advisory lock every store's schema is applied under (any constant shared by them).
const SCHEMA_LOCK: i64 = 0x696d_7363_6865_6d61;

/// The schema, applied at open (idempotent); the same tables as the SQLite migrations.
const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS conversations (
    conversation_id TEXT PRIMARY KEY, last_seq BIGINT NOT NULL);
CREATE TABLE IF NOT EXISTS entries (
    conversation_id TEXT NOT NULL, seq BIGINT NOT NULL, server_msg_id TEXT NOT NULL,
    sender_user_id TEXT NOT NULL, sender_device_id TEXT NOT NULL, client_msg_id TEXT NOT NULL,
    kind INTEGER NOT NULL, target_seq BIGINT NOT NULL, body BYTEA NOT NULL,
    server_time_ms BIGINT NOT NULL, PRIMARY KEY (conversation_id, seq));
CREATE UNIQUE INDEX IF NOT EXISTS entries_by_client_id
    ON entries (conversation_id, sender_user_id, client_msg_id);
CREATE INDEX IF NOT EXISTS entries_by_target ON entries (conversation_id, target_seq);
CREATE INDEX IF NOT EXISTS entries_by_kind ON entries (conversation_id, kind, seq);
CREATE TABLE IF NOT EXISTS read_cursors (
    conversation_id TEXT NOT NULL, user_id TEXT NOT NULL, read_seq BIGINT NOT NULL,
    updated_at_ms BIGINT NOT NULL, PRIMARY KEY (conversation_id, user_id));
CREATE TABLE IF NOT EXISTS direct_members (
    user_id TEXT NOT NULL, conversation_id TEXT NOT NULL, PRIMARY KEY (user_id, conversation_id));
";

/// Ids asked for per statement.
const CHUNK: usize = 1000;

/// The message store on a PostgreSQL database.
pub struct PgMessageStore {
    db: ServerDb<Conn>,
}

impl std::fmt::Debug for PgMessageStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgMessageStore").finish_non_exhaustive()
    }
}

impl PgMessageStore {
    /// Connects to `url` (`postgres://user@host:port/db`) and applies the schema.
    pub async fn connect(url: &str, max_connections: usize) -> StoreResult<Self> {
        // Nodes starting together would race on the catalog: one creates, the others wait.
        let schema =
            format!("BEGIN; SELECT pg_advisory_xact_lock({SCHEMA_LOCK}); {SCHEMA}; COMMIT;");
        Ok(Self {
            db: ServerDb::connect(url, max_connections, &schema).await?,
        })
    }
}

/// The conversation's next seq, from an upsert on its row (`ON CONFLICT ... DO UPDATE ...
/// RETURNING`), which locks the row until the transaction ends.
async fn next_seq(conn: &mut Conn, conversation_id: &str) -> QueryResult<i64> {
    diesel::insert_into(conversations::table)
        .values((
            conversations::conversation_id.eq(conversation_id),
            conversations::last_seq.eq(1),
        ))
        .on_conflict(conversations::conversation_id)
        .do_update()
        .set(conversations::last_seq.eq(conversations::last_seq + 1))
        .returning(conversations::last_seq)
        .get_result(conn)
        .await
}

/// Moves `user_id`'s read cursor forward to `target`, in one statement: concurrent moves keep
/// the highest. The cursor after the move.
async fn advance_cursor(
    conn: &mut Conn,
    conversation_id: &str,
    user_id: &str,
    target: i64,
    now_ms: i64,
) -> QueryResult<u64> {
    let read: i64 = diesel::insert_into(read_cursors::table)
        .values((
            read_cursors::conversation_id.eq(conversation_id),
            read_cursors::user_id.eq(user_id),
            read_cursors::read_seq.eq(target),
            read_cursors::updated_at_ms.eq(now_ms),
        ))
        .on_conflict((read_cursors::conversation_id, read_cursors::user_id))
        .do_update()
        .set((
            read_cursors::read_seq.eq(diesel::dsl::sql::<BigInt>(
                "GREATEST(read_cursors.read_seq, excluded.read_seq)",
            )),
            read_cursors::updated_at_ms.eq(now_ms),
        ))
        .returning(read_cursors::read_seq)
        .get_result(conn)
        .await?;
    Ok(read.max(0) as u64)
}

/// Content entries above a seq, not sent by a user, not recalled or deleted.
const UNREAD_COUNT: &str = "SELECT COUNT(*) AS n FROM entries e \
     WHERE e.conversation_id = $1 AND e.seq > $2 AND e.kind = $3 AND e.sender_user_id <> $4 \
     AND NOT EXISTS (SELECT 1 FROM entries t WHERE t.conversation_id = e.conversation_id \
                     AND t.target_seq = e.seq AND t.kind IN ($5, $6))";

server_appends! {
    insert_new: on_conflict_do_nothing,
}

message_store! {
    store: PgMessageStore,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A store on a database of its own, on the server the tests' services run.
    async fn fresh() -> Option<PgMessageStore> {
        let server = im_testkit::service_url("IM_TEST_POSTGRES_URL", "the PostgreSQL store suite")?;
        let url = im_testkit::db::fresh_postgres(&server, "im_suite").await;
        Some(PgMessageStore::connect(&url, 4).await.expect("opens"))
    }

    crate::message_store_suite!(async { Some((fresh().await?, ())) });
}
