//! The message store on MySQL / MariaDB (feature `mysql`), through diesel-async and mysql_async:
//! the distributed mode's store, shared by every core node.
//!
//! A conversation's next seq comes from an upsert on its row (`ON DUPLICATE KEY UPDATE`), which
//! locks the row until the batch's transaction ends, then a read of it in the same transaction:
//! appends to one conversation from any number of nodes take their turns, so seqs stay
//! gap-free, and a batch that fails rolls its seqs back too.

use diesel::{
    prelude::*,
    sql_types::{BigInt, Text},
};
use diesel_async::{AsyncMysqlConnection, RunQueryDsl};

use super::{
    StoreResult,
    schema::{conversations, read_cursors},
    sql::{ServerDb, message_store, server_appends},
};

type Conn = AsyncMysqlConnection;

/// The schema, applied at open (idempotent); the same tables as the SQLite migrations.
/// Ids are at most 131 bytes (`d:` and two 64-byte user ids), ASCII.
const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS conversations (
    conversation_id VARCHAR(160) CHARACTER SET ascii COLLATE ascii_bin PRIMARY KEY,
    last_seq BIGINT NOT NULL) ENGINE = InnoDB;
CREATE TABLE IF NOT EXISTS entries (
    conversation_id VARCHAR(160) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    seq BIGINT NOT NULL,
    server_msg_id VARCHAR(64) CHARACTER SET ascii NOT NULL,
    sender_user_id VARCHAR(64) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    sender_device_id VARCHAR(64) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    client_msg_id VARCHAR(64) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
    kind INTEGER NOT NULL, target_seq BIGINT NOT NULL, body LONGBLOB NOT NULL,
    server_time_ms BIGINT NOT NULL, PRIMARY KEY (conversation_id, seq),
    UNIQUE KEY entries_by_client_id (conversation_id, sender_user_id, client_msg_id),
    KEY entries_by_target (conversation_id, target_seq),
    KEY entries_by_kind (conversation_id, kind, seq)) ENGINE = InnoDB;
CREATE TABLE IF NOT EXISTS read_cursors (
    conversation_id VARCHAR(160) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    user_id VARCHAR(64) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    read_seq BIGINT NOT NULL, updated_at_ms BIGINT NOT NULL,
    PRIMARY KEY (conversation_id, user_id)) ENGINE = InnoDB;
CREATE TABLE IF NOT EXISTS direct_members (
    user_id VARCHAR(64) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    conversation_id VARCHAR(160) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    PRIMARY KEY (user_id, conversation_id)) ENGINE = InnoDB;
";

/// Ids asked for per statement.
const CHUNK: usize = 1000;

/// The message store on a MySQL or MariaDB database.
pub struct MysqlMessageStore {
    db: ServerDb<Conn>,
}

impl std::fmt::Debug for MysqlMessageStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MysqlMessageStore").finish_non_exhaustive()
    }
}

impl MysqlMessageStore {
    /// Connects to `url` (`mysql://user@host:port/db`) and applies the schema.
    pub async fn connect(url: &str, max_connections: usize) -> StoreResult<Self> {
        Ok(Self {
            db: ServerDb::connect(url, max_connections, SCHEMA).await?,
        })
    }
}

/// The conversation's next seq, from an upsert on its row (`ON DUPLICATE KEY UPDATE`), which
/// locks the row until the transaction ends, then a read of it in the same transaction.
async fn next_seq(conn: &mut Conn, conversation_id: &str) -> QueryResult<i64> {
    diesel::sql_query(
        "INSERT INTO conversations (conversation_id, last_seq) VALUES (?, 1) \
         ON DUPLICATE KEY UPDATE last_seq = last_seq + 1",
    )
    .bind::<Text, _>(conversation_id)
    .execute(conn)
    .await?;
    // The row is locked by the upsert until the transaction ends: this is our seq.
    conversations::table
        .find(conversation_id)
        .select(conversations::last_seq)
        .first(conn)
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
    diesel::sql_query(
        "INSERT INTO read_cursors (conversation_id, user_id, read_seq, updated_at_ms) \
         VALUES (?, ?, ?, ?) ON DUPLICATE KEY UPDATE \
         read_seq = GREATEST(read_seq, VALUES(read_seq)), updated_at_ms = VALUES(updated_at_ms)",
    )
    .bind::<Text, _>(conversation_id)
    .bind::<Text, _>(user_id)
    .bind::<BigInt, _>(target)
    .bind::<BigInt, _>(now_ms)
    .execute(conn)
    .await?;
    let read: i64 = read_cursors::table
        .find((conversation_id, user_id))
        .select(read_cursors::read_seq)
        .first(conn)
        .await?;
    Ok(read.max(0) as u64)
}

/// Content entries above a seq, not sent by a user, not recalled or deleted.
const UNREAD_COUNT: &str = "SELECT COUNT(*) AS n FROM entries e \
     WHERE e.conversation_id = ? AND e.seq > ? AND e.kind = ? AND e.sender_user_id <> ? \
     AND NOT EXISTS (SELECT 1 FROM entries t WHERE t.conversation_id = e.conversation_id \
                     AND t.target_seq = e.seq AND t.kind IN (?, ?))";

server_appends! {
    insert_new: insert_or_ignore,
}

message_store! {
    store: MysqlMessageStore,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A store on a database of its own, on the server the tests' services run.
    async fn fresh() -> Option<MysqlMessageStore> {
        let server = im_testkit::service_url("IM_TEST_MARIADB_URL", "the MariaDB store suite")?;
        let url = im_testkit::db::fresh_mysql(&server, "im_suite").await;
        Some(MysqlMessageStore::connect(&url, 4).await.expect("opens"))
    }

    crate::message_store_suite!(async { Some((fresh().await?, ())) });
}
