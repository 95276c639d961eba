//! The client's state in one SQLite file (feature `sqlite`): an app opens with its last state,
//! and sends not acknowledged before a restart are resent with their ids.

use std::{
    path::Path,
    sync::{Arc, Mutex},
};

use async_trait::async_trait;
use diesel::{
    Connection, QueryableByName, RunQueryDsl, SqliteConnection,
    connection::SimpleConnection,
    sql_query,
    sql_types::{BigInt, Binary, Integer, Text},
};
use im_proto::{ErrorCode, v1};
use prost::Message as _;

use super::{LocalStore, Outgoing, Snapshot};
use crate::{
    error::{Error, Result},
    types::{Conversation, Message},
};

const SCHEMA: &str = "
PRAGMA journal_mode = WAL;
PRAGMA synchronous = FULL;
CREATE TABLE IF NOT EXISTS held (
    conversation_id TEXT PRIMARY KEY, seq INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS conversations (
    conversation_id TEXT PRIMARY KEY, kind INTEGER NOT NULL, last_seq INTEGER NOT NULL,
    read_seq INTEGER NOT NULL, unread_count INTEGER NOT NULL, active INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS messages (
    conversation_id TEXT NOT NULL, seq INTEGER NOT NULL, as_of_seq INTEGER NOT NULL,
    message BLOB NOT NULL, PRIMARY KEY (conversation_id, seq));
CREATE TABLE IF NOT EXISTS outbox (
    position INTEGER PRIMARY KEY AUTOINCREMENT, client_msg_id TEXT NOT NULL UNIQUE,
    conversation_id TEXT NOT NULL, body BLOB NOT NULL);
";

fn failed(error: impl std::fmt::Display) -> Error {
    Error::new(ErrorCode::Internal, format!("local store: {error}"))
}

fn int(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// The client's state in a SQLite file; keeps `recent_limit` messages per conversation.
pub struct SqliteStore {
    conn: Arc<Mutex<SqliteConnection>>,
    recent_limit: usize,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore").finish_non_exhaustive()
    }
}

#[derive(QueryableByName)]
struct Held {
    #[diesel(sql_type = Text)]
    conversation_id: String,
    #[diesel(sql_type = BigInt)]
    seq: i64,
}

#[derive(QueryableByName)]
struct ConversationRow {
    #[diesel(sql_type = Text)]
    conversation_id: String,
    #[diesel(sql_type = Integer)]
    kind: i32,
    #[diesel(sql_type = BigInt)]
    last_seq: i64,
    #[diesel(sql_type = BigInt)]
    read_seq: i64,
    #[diesel(sql_type = BigInt)]
    unread_count: i64,
    #[diesel(sql_type = Integer)]
    active: i32,
}

impl From<ConversationRow> for Conversation {
    fn from(r: ConversationRow) -> Self {
        Self {
            conversation_id: r.conversation_id,
            kind: r.kind,
            last_seq: r.last_seq.max(0) as u64,
            read_seq: r.read_seq.max(0) as u64,
            unread_count: r.unread_count.max(0) as u64,
            active: r.active != 0,
        }
    }
}

#[derive(QueryableByName)]
struct MessageRow {
    #[diesel(sql_type = BigInt)]
    as_of_seq: i64,
    #[diesel(sql_type = Binary)]
    message: Vec<u8>,
}

#[derive(QueryableByName)]
struct OutboxRow {
    #[diesel(sql_type = Text)]
    client_msg_id: String,
    #[diesel(sql_type = Text)]
    conversation_id: String,
    #[diesel(sql_type = Binary)]
    body: Vec<u8>,
}

impl SqliteStore {
    /// Opens (creating if needed) the store at `path`.
    pub fn open(path: &Path, recent_limit: usize) -> Result<Self> {
        let url = path
            .to_str()
            .ok_or_else(|| failed("the path is not UTF-8"))?;
        let mut conn = SqliteConnection::establish(url).map_err(failed)?;
        conn.batch_execute(SCHEMA).map_err(failed)?;
        Ok(Self {
            conn: Arc::new(Mutex::new(conn)),
            recent_limit,
        })
    }

    /// Runs `work` on the connection, off the async threads.
    async fn with<T: Send + 'static>(
        &self,
        work: impl FnOnce(&mut SqliteConnection) -> diesel::QueryResult<T> + Send + 'static,
    ) -> Result<T> {
        let conn = self.conn.clone();
        tokio::task::spawn_blocking(move || {
            let mut conn = conn.lock().unwrap_or_else(|e| e.into_inner());
            work(&mut conn)
        })
        .await
        .map_err(failed)?
        .map_err(failed)
    }
}

#[async_trait]
impl LocalStore for SqliteStore {
    async fn load(&self) -> Result<Snapshot> {
        self.with(|conn| {
            let held: Vec<Held> =
                sql_query("SELECT conversation_id, seq FROM held").load(conn)?;
            let conversations: Vec<ConversationRow> = sql_query(
                "SELECT conversation_id, kind, last_seq, read_seq, unread_count, active FROM conversations",
            )
            .load(conn)?;
            let outbox: Vec<OutboxRow> = sql_query(
                "SELECT client_msg_id, conversation_id, body FROM outbox ORDER BY position",
            )
            .load(conn)?;
            Ok(Snapshot {
                held: held
                    .into_iter()
                    .map(|h| (h.conversation_id, h.seq.max(0) as u64))
                    .collect(),
                read: conversations
                    .into_iter()
                    .map(|c| (c.conversation_id, c.read_seq.max(0) as u64))
                    .collect(),
                outbox: outbox
                    .into_iter()
                    .map(|o| Outgoing {
                        client_msg_id: o.client_msg_id,
                        conversation_id: o.conversation_id,
                        body: o.body,
                    })
                    .collect(),
            })
        })
        .await
    }

    async fn set_held(&self, conversation_id: &str, seq: u64) -> Result<()> {
        let id = conversation_id.to_owned();
        self.with(move |conn| {
            sql_query(
                "INSERT INTO held (conversation_id, seq) VALUES (?, ?) \
                 ON CONFLICT (conversation_id) DO UPDATE SET seq = MAX(seq, excluded.seq)",
            )
            .bind::<Text, _>(id)
            .bind::<BigInt, _>(int(seq))
            .execute(conn)
            .map(drop)
        })
        .await
    }

    async fn put_conversation(&self, c: &Conversation) -> Result<()> {
        let c = c.clone();
        self.with(move |conn| {
            sql_query(
                "INSERT OR REPLACE INTO conversations \
                 (conversation_id, kind, last_seq, read_seq, unread_count, active) \
                 VALUES (?, ?, ?, ?, ?, ?)",
            )
            .bind::<Text, _>(c.conversation_id)
            .bind::<Integer, _>(c.kind)
            .bind::<BigInt, _>(int(c.last_seq))
            .bind::<BigInt, _>(int(c.read_seq))
            .bind::<BigInt, _>(int(c.unread_count))
            .bind::<Integer, _>(i32::from(c.active))
            .execute(conn)
            .map(drop)
        })
        .await
    }

    async fn conversations(&self) -> Result<Vec<Conversation>> {
        self.with(|conn| {
            let rows: Vec<ConversationRow> = sql_query(
                "SELECT conversation_id, kind, last_seq, read_seq, unread_count, active \
                 FROM conversations ORDER BY conversation_id",
            )
            .load(conn)?;
            Ok(rows.into_iter().map(Conversation::from).collect())
        })
        .await
    }

    async fn put_message(&self, message: &Message) -> Result<()> {
        let id = message.conversation_id.clone();
        let seq = int(message.seq);
        let as_of = int(message.state.as_ref().map_or(0, |s| s.as_of_seq));
        let bytes = v1::Message::from(message).encode_to_vec();
        let keep = int(self.recent_limit as u64);
        self.with(move |conn| {
            conn.transaction(|conn| {
                sql_query(
                    "INSERT OR IGNORE INTO messages (conversation_id, seq, as_of_seq, message) \
                     VALUES (?, ?, ?, ?)",
                )
                .bind::<Text, _>(&id)
                .bind::<BigInt, _>(seq)
                .bind::<BigInt, _>(as_of)
                .bind::<Binary, _>(bytes)
                .execute(conn)?;
                sql_query(
                    "DELETE FROM messages WHERE conversation_id = ? AND seq NOT IN \
                     (SELECT seq FROM messages WHERE conversation_id = ? ORDER BY seq DESC LIMIT ?)",
                )
                .bind::<Text, _>(&id)
                .bind::<Text, _>(&id)
                .bind::<BigInt, _>(keep)
                .execute(conn)
                .map(drop)
            })
        })
        .await
    }

    async fn recent(&self, conversation_id: &str, limit: usize) -> Result<Vec<Message>> {
        let id = conversation_id.to_owned();
        let limit = int(limit as u64);
        let rows = self
            .with(move |conn| {
                sql_query(
                    "SELECT as_of_seq, message FROM (SELECT seq, as_of_seq, message FROM messages \
                     WHERE conversation_id = ? ORDER BY seq DESC LIMIT ?) ORDER BY seq",
                )
                .bind::<Text, _>(id)
                .bind::<BigInt, _>(limit)
                .load::<MessageRow>(conn)
            })
            .await?;
        rows.into_iter()
            .map(|row| {
                let wire = v1::Message::decode(row.message.as_slice()).map_err(failed)?;
                let mut message = Message::from(&wire);
                if let Some(state) = &mut message.state {
                    state.as_of_seq = row.as_of_seq.max(0) as u64;
                }
                Ok(message)
            })
            .collect()
    }

    async fn push_outgoing(&self, outgoing: &Outgoing) -> Result<()> {
        let o = outgoing.clone();
        self.with(move |conn| {
            sql_query(
                "INSERT OR IGNORE INTO outbox (client_msg_id, conversation_id, body) VALUES (?, ?, ?)",
            )
            .bind::<Text, _>(o.client_msg_id)
            .bind::<Text, _>(o.conversation_id)
            .bind::<Binary, _>(o.body)
            .execute(conn)
            .map(drop)
        })
        .await
    }

    async fn remove_outgoing(&self, client_msg_id: &str) -> Result<()> {
        let id = client_msg_id.to_owned();
        self.with(move |conn| {
            sql_query("DELETE FROM outbox WHERE client_msg_id = ?")
                .bind::<Text, _>(id)
                .execute(conn)
                .map(drop)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::store::suite::{self, local_store_suite};

    local_store_suite!(async {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("client.db"), 3).unwrap();
        (store, dir)
    });

    #[tokio::test]
    async fn what_the_suite_leaves_is_there_after_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("client.db");
        let store = SqliteStore::open(&path, 3).unwrap();
        suite::held_only_moves_forward(&store).await;
        suite::recent_messages_are_kept_in_order_and_bounded(&store).await;
        suite::the_outbox_keeps_order_and_dedups(&store).await;
        suite::conversations_round_trip(&store).await;
        let reopened = SqliteStore::open(&path, 3).unwrap();
        let snapshot = reopened.load().await.unwrap();
        assert_eq!(snapshot.held["d:a:b"], 5);
        assert_eq!(snapshot.outbox.len(), 1);
        assert_eq!(reopened.recent("d:a:b", 10).await.unwrap().len(), 3);
    }
}
