//! The message store on PostgreSQL (feature `postgres`), through diesel-async and
//! tokio-postgres: the distributed mode's store, shared by every core node.
//!
//! A conversation's next seq comes from an upsert on its row (`ON CONFLICT ... DO UPDATE ...
//! RETURNING`), which locks the row until the batch's transaction ends: appends to one
//! conversation from any number of nodes take their turns, so seqs stay gap-free, and a batch
//! that fails (a concurrent resend of the same client message id, say) rolls its seqs back too.

use async_trait::async_trait;
use diesel::{
    OptionalExtension, QueryableByName,
    prelude::*,
    sql_types::{BigInt, Integer, Text},
};
use diesel_async::{
    AsyncConnection, AsyncPgConnection, RunQueryDsl, SimpleAsyncConnection,
    pooled_connection::{AsyncDieselConnectionManager, deadpool::Pool},
};
use im_proto::{ConversationId, ConversationKind};

use super::{
    Appended, EntryKind, MessageStore, NewEntry, StoreError, StoreResult, StoredEntry,
    schema::{conversations, direct_members, entries, read_cursors},
};

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

fn backend(error: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(error.to_string())
}

fn seq(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// The message store on a PostgreSQL database.
pub struct PgMessageStore {
    pool: Pool<AsyncPgConnection>,
}

impl std::fmt::Debug for PgMessageStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgMessageStore").finish_non_exhaustive()
    }
}

impl PgMessageStore {
    /// Connects to `url` (`postgres://user@host:port/db`) and applies the schema.
    pub async fn connect(url: &str, max_connections: usize) -> StoreResult<Self> {
        let manager = AsyncDieselConnectionManager::<AsyncPgConnection>::new(url);
        let pool = Pool::builder(manager)
            .max_size(max_connections.max(1))
            .build()
            .map_err(backend)?;
        let mut conn = pool.get().await.map_err(backend)?;
        // Nodes starting together would race on the catalog: one creates, the others wait.
        let schema =
            format!("BEGIN; SELECT pg_advisory_xact_lock({SCHEMA_LOCK}); {SCHEMA}; COMMIT;");
        conn.batch_execute(&schema).await.map_err(backend)?;
        Ok(Self { pool })
    }

    async fn conn(
        &self,
    ) -> StoreResult<diesel_async::pooled_connection::deadpool::Object<AsyncPgConnection>> {
        self.pool.get().await.map_err(backend)
    }
}

async fn append_one(conn: &mut AsyncPgConnection, new: &NewEntry) -> QueryResult<Appended> {
    let first = entries::table
        .filter(entries::conversation_id.eq(&new.conversation_id))
        .filter(entries::sender_user_id.eq(&new.sender_user_id))
        .filter(entries::client_msg_id.eq(&new.client_msg_id))
        .select(StoredEntry::as_select())
        .first(conn)
        .await
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
        .get_result(conn)
        .await?;
    let stored = StoredEntry {
        conversation_id: new.conversation_id.clone(),
        seq: last,
        server_msg_id: uuid::Uuid::new_v4().simple().to_string(),
        sender_user_id: new.sender_user_id.clone(),
        sender_device_id: new.sender_device_id.clone(),
        client_msg_id: new.client_msg_id.clone(),
        kind: new.kind as i32,
        target_seq: seq(new.target_seq),
        body: new.body.clone(),
        server_time_ms: new.server_time_ms,
    };
    diesel::insert_into(entries::table)
        .values((
            entries::conversation_id.eq(&stored.conversation_id),
            entries::seq.eq(stored.seq),
            entries::server_msg_id.eq(&stored.server_msg_id),
            entries::sender_user_id.eq(&stored.sender_user_id),
            entries::sender_device_id.eq(&stored.sender_device_id),
            entries::client_msg_id.eq(&stored.client_msg_id),
            entries::kind.eq(stored.kind),
            entries::target_seq.eq(stored.target_seq),
            entries::body.eq(&stored.body),
            entries::server_time_ms.eq(stored.server_time_ms),
        ))
        .execute(conn)
        .await?;
    if last == 1
        && let Ok(id) = new.conversation_id.parse::<ConversationId>()
        && let ConversationKind::Direct(a, b) = id.kind()
    {
        for user in [a, b] {
            diesel::insert_into(direct_members::table)
                .values((
                    direct_members::user_id.eq(user.as_str()),
                    direct_members::conversation_id.eq(&new.conversation_id),
                ))
                .on_conflict_do_nothing()
                .execute(conn)
                .await?;
        }
    }
    Ok(Appended::New(stored))
}

#[async_trait]
impl MessageStore for PgMessageStore {
    async fn append(&self, batch: &[NewEntry]) -> StoreResult<Vec<Appended>> {
        if let Some(bad) = batch.iter().find(|e| e.client_msg_id.is_empty()) {
            return Err(StoreError::Invalid(format!(
                "an entry of {} has no client message id",
                bad.conversation_id
            )));
        }
        let mut conn = self.conn().await?;
        let batch = batch.to_vec();
        conn.transaction(async |conn| {
            let mut appended = Vec::with_capacity(batch.len());
            for new in &batch {
                appended.push(append_one(conn, new).await?);
            }
            Ok::<_, diesel::result::Error>(appended)
        })
        .await
        .map_err(Into::into)
    }

    async fn entries_after(
        &self,
        conversation_id: &str,
        after_seq: u64,
        limit: u32,
    ) -> StoreResult<Vec<StoredEntry>> {
        if limit == 0 {
            return Err(StoreError::Invalid("limit is 0".into()));
        }
        let mut conn = self.conn().await?;
        Ok(entries::table
            .filter(entries::conversation_id.eq(conversation_id))
            .filter(entries::seq.gt(seq(after_seq)))
            .order(entries::seq.asc())
            .limit(i64::from(limit))
            .select(StoredEntry::as_select())
            .load(&mut conn)
            .await?)
    }

    async fn entries_before(
        &self,
        conversation_id: &str,
        before_seq: u64,
        limit: u32,
    ) -> StoreResult<Vec<StoredEntry>> {
        if limit == 0 {
            return Err(StoreError::Invalid("limit is 0".into()));
        }
        let before = if before_seq == 0 {
            i64::MAX
        } else {
            seq(before_seq)
        };
        let mut conn = self.conn().await?;
        let mut page: Vec<StoredEntry> = entries::table
            .filter(entries::conversation_id.eq(conversation_id))
            .filter(entries::seq.lt(before))
            .order(entries::seq.desc())
            .limit(i64::from(limit))
            .select(StoredEntry::as_select())
            .load(&mut conn)
            .await?;
        page.reverse();
        Ok(page)
    }

    async fn entry(&self, conversation_id: &str, at: u64) -> StoreResult<Option<StoredEntry>> {
        let mut conn = self.conn().await?;
        Ok(entries::table
            .find((conversation_id, seq(at)))
            .select(StoredEntry::as_select())
            .first(&mut conn)
            .await
            .optional()?)
    }

    async fn entry_by_client_id(
        &self,
        conversation_id: &str,
        sender_user_id: &str,
        client_msg_id: &str,
    ) -> StoreResult<Option<StoredEntry>> {
        let mut conn = self.conn().await?;
        Ok(entries::table
            .filter(entries::conversation_id.eq(conversation_id))
            .filter(entries::sender_user_id.eq(sender_user_id))
            .filter(entries::client_msg_id.eq(client_msg_id))
            .select(StoredEntry::as_select())
            .first(&mut conn)
            .await
            .optional()?)
    }

    async fn last_seqs(&self, conversation_ids: &[String]) -> StoreResult<Vec<u64>> {
        let mut conn = self.conn().await?;
        let mut found = std::collections::HashMap::new();
        for chunk in conversation_ids.chunks(CHUNK) {
            let rows: Vec<(String, i64)> = conversations::table
                .filter(conversations::conversation_id.eq_any(chunk))
                .select((conversations::conversation_id, conversations::last_seq))
                .load(&mut conn)
                .await?;
            found.extend(rows);
        }
        Ok(conversation_ids
            .iter()
            .map(|id| found.get(id).map_or(0, |s| *s as u64))
            .collect())
    }

    async fn advance_read(
        &self,
        conversation_id: &str,
        user_id: &str,
        to: u64,
        now_ms: i64,
    ) -> StoreResult<u64> {
        let mut conn = self.conn().await?;
        let (conversation_id, user_id) = (conversation_id.to_owned(), user_id.to_owned());
        conn.transaction(async |conn| {
            let last: i64 = conversations::table
                .find(&conversation_id)
                .select(conversations::last_seq)
                .first(conn)
                .await
                .optional()?
                .unwrap_or(0);
            let target = seq(to).min(last);
            // Forward only, in one statement: concurrent moves keep the highest.
            let read: i64 = diesel::insert_into(read_cursors::table)
                .values((
                    read_cursors::conversation_id.eq(&conversation_id),
                    read_cursors::user_id.eq(&user_id),
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
            Ok::<_, diesel::result::Error>(read.max(0) as u64)
        })
        .await
        .map_err(Into::into)
    }

    async fn direct_conversations(&self, user_id: &str) -> StoreResult<Vec<String>> {
        let mut conn = self.conn().await?;
        Ok(direct_members::table
            .filter(direct_members::user_id.eq(user_id))
            .order(direct_members::conversation_id.asc())
            .select(direct_members::conversation_id)
            .load(&mut conn)
            .await?)
    }

    async fn read_seqs(&self, user_id: &str, conversation_ids: &[String]) -> StoreResult<Vec<u64>> {
        let mut conn = self.conn().await?;
        let mut found = std::collections::HashMap::new();
        for chunk in conversation_ids.chunks(CHUNK) {
            let rows: Vec<(String, i64)> = read_cursors::table
                .filter(read_cursors::user_id.eq(user_id))
                .filter(read_cursors::conversation_id.eq_any(chunk))
                .select((read_cursors::conversation_id, read_cursors::read_seq))
                .load(&mut conn)
                .await?;
            found.extend(rows);
        }
        Ok(conversation_ids
            .iter()
            .map(|id| found.get(id).map_or(0, |s| *s as u64))
            .collect())
    }

    async fn unread_count(
        &self,
        conversation_id: &str,
        user_id: &str,
        after_seq: u64,
    ) -> StoreResult<u64> {
        #[derive(QueryableByName)]
        struct Count {
            #[diesel(sql_type = BigInt)]
            n: i64,
        }
        let mut conn = self.conn().await?;
        let count: Count = diesel::sql_query(
            "SELECT COUNT(*) AS n FROM entries e \
             WHERE e.conversation_id = $1 AND e.seq > $2 AND e.kind = $3 AND e.sender_user_id <> $4 \
             AND NOT EXISTS (SELECT 1 FROM entries t WHERE t.conversation_id = e.conversation_id \
                             AND t.target_seq = e.seq AND t.kind IN ($5, $6))",
        )
        .bind::<Text, _>(conversation_id)
        .bind::<BigInt, _>(seq(after_seq))
        .bind::<Integer, _>(EntryKind::Content as i32)
        .bind::<Text, _>(user_id)
        .bind::<Integer, _>(EntryKind::Recall as i32)
        .bind::<Integer, _>(EntryKind::Delete as i32)
        .get_result(&mut conn)
        .await?;
        Ok(count.n.max(0) as u64)
    }

    async fn last_content(&self, conversation_id: &str) -> StoreResult<Option<StoredEntry>> {
        let mut conn = self.conn().await?;
        Ok(entries::table
            .filter(entries::conversation_id.eq(conversation_id))
            .filter(entries::kind.eq(EntryKind::Content as i32))
            .order(entries::seq.desc())
            .select(StoredEntry::as_select())
            .first(&mut conn)
            .await
            .optional()?)
    }

    async fn effects(
        &self,
        conversation_id: &str,
        targets: &[u64],
        up_to: u64,
    ) -> StoreResult<Vec<StoredEntry>> {
        let mut conn = self.conn().await?;
        let targets: Vec<i64> = targets.iter().map(|t| seq(*t)).collect();
        let mut found = Vec::new();
        for chunk in targets.chunks(CHUNK) {
            let rows: Vec<StoredEntry> = entries::table
                .filter(entries::conversation_id.eq(conversation_id))
                .filter(entries::target_seq.eq_any(chunk))
                .filter(entries::seq.le(seq(up_to)))
                .select(StoredEntry::as_select())
                .load(&mut conn)
                .await?;
            found.extend(rows);
        }
        found.sort_by_key(|e| e.seq);
        Ok(found)
    }

    async fn read_cursors(
        &self,
        conversation_id: &str,
        after_user_id: &str,
        limit: u32,
    ) -> StoreResult<Vec<(String, u64)>> {
        if limit == 0 {
            return Err(StoreError::Invalid("limit is 0".into()));
        }
        let mut conn = self.conn().await?;
        let rows: Vec<(String, i64)> = read_cursors::table
            .filter(read_cursors::conversation_id.eq(conversation_id))
            .filter(read_cursors::user_id.gt(after_user_id))
            .order(read_cursors::user_id.asc())
            .limit(i64::from(limit))
            .select((read_cursors::user_id, read_cursors::read_seq))
            .load(&mut conn)
            .await?;
        Ok(rows
            .into_iter()
            .map(|(user, seq)| (user, seq as u64))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use diesel_async::SimpleAsyncConnection;

    use super::*;
    use crate::store::suite;

    fn postgres_url() -> Option<String> {
        im_common::testing::service_url("IM_TEST_POSTGRES_URL", "the PostgreSQL store suite")
    }

    /// A store on a database of its own.
    async fn fresh(url: &str) -> PgMessageStore {
        let name = format!("im_suite_{}", uuid::Uuid::new_v4().simple());
        let mut admin = AsyncPgConnection::establish(url).await.expect("connects");
        admin
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .expect("creates a database");
        let base = url.rsplit_once('/').map_or(url, |(base, _)| base);
        PgMessageStore::connect(&format!("{base}/{name}"), 4)
            .await
            .expect("opens")
    }

    #[tokio::test]
    async fn the_postgres_store_passes_the_message_store_suite() {
        let Some(url) = postgres_url() else { return };
        suite::sequences_are_gap_free_per_conversation(Arc::new(fresh(&url).await)).await;
        suite::resends_return_the_first_entry(Arc::new(fresh(&url).await)).await;
        suite::a_bad_batch_writes_nothing(Arc::new(fresh(&url).await)).await;
        suite::pages_forward_and_backward(Arc::new(fresh(&url).await)).await;
        suite::read_cursors_only_move_forward(Arc::new(fresh(&url).await)).await;
        suite::concurrent_appends_get_every_seq_once(Arc::new(fresh(&url).await)).await;
        suite::views_of_a_conversation(Arc::new(fresh(&url).await)).await;
    }
}
