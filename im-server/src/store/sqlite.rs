//! The embedded backend: conversations' entries in one SQLite file, through diesel-async.

use std::path::Path;

use async_trait::async_trait;
use diesel::prelude::*;
use diesel_async::{AsyncConnection, RunQueryDsl};
use diesel_migrations::{EmbeddedMigrations, embed_migrations};
use im_common::sqlite::{SqliteDb, SqliteError};

use super::{
    Appended, EntryKind, MessageStore, NewEntry, StoreError, StoreResult, StoredEntry,
    schema::{conversations, direct_members, entries, read_cursors},
};

const MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/sqlite");

/// Ids asked for per statement, well under SQLite's bound-parameter limit.
const CHUNK: usize = 500;

impl From<SqliteError> for StoreError {
    fn from(error: SqliteError) -> Self {
        Self::Backend(error.to_string())
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

fn check_limit(limit: u32) -> StoreResult<i64> {
    if limit == 0 {
        return Err(StoreError::Invalid("limit is 0".into()));
    }
    Ok(i64::from(limit))
}

fn seq(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// The synchronous half: appends run on diesel's synchronous connection, where multi-statement
/// batches cost one thread hop.
mod sync {
    use diesel::prelude::*;

    use im_proto::{ConversationId, ConversationKind};

    use super::super::{
        Appended, NewEntry, StoredEntry,
        schema::{conversations, direct_members, entries},
    };
    use super::seq;

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

#[async_trait]
impl MessageStore for SqliteMessageStore {
    async fn append(&self, batch: &[NewEntry]) -> StoreResult<Vec<Appended>> {
        if let Some(bad) = batch.iter().find(|e| e.client_msg_id.is_empty()) {
            return Err(StoreError::Invalid(format!(
                "an entry of {} has no client message id",
                bad.conversation_id
            )));
        }
        let (_turn, mut conn) = self.db.writer().await?;
        let batch = batch.to_vec();
        // The whole batch in one transaction on the synchronous connection: one thread hop and
        // one fsync for all of it (group commit).
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

    async fn entries_after(
        &self,
        conversation_id: &str,
        after_seq: u64,
        limit: u32,
    ) -> StoreResult<Vec<StoredEntry>> {
        let limit = check_limit(limit)?;
        let mut conn = self.db.conn().await?;
        let query = entries::table
            .filter(entries::conversation_id.eq(conversation_id))
            .filter(entries::seq.gt(seq(after_seq)))
            .order(entries::seq.asc())
            .limit(limit)
            .select(StoredEntry::as_select());
        Ok(query.load(&mut conn).await?)
    }

    async fn entries_before(
        &self,
        conversation_id: &str,
        before_seq: u64,
        limit: u32,
    ) -> StoreResult<Vec<StoredEntry>> {
        let limit = check_limit(limit)?;
        let before = if before_seq == 0 {
            i64::MAX
        } else {
            seq(before_seq)
        };
        let mut conn = self.db.conn().await?;
        let query = entries::table
            .filter(entries::conversation_id.eq(conversation_id))
            .filter(entries::seq.lt(before))
            .order(entries::seq.desc())
            .limit(limit)
            .select(StoredEntry::as_select());
        let mut page: Vec<StoredEntry> = query.load(&mut conn).await?;
        page.reverse();
        Ok(page)
    }

    async fn entry(&self, conversation_id: &str, at: u64) -> StoreResult<Option<StoredEntry>> {
        let mut conn = self.db.conn().await?;
        let query = entries::table
            .find((conversation_id, seq(at)))
            .select(StoredEntry::as_select());
        Ok(query.first(&mut conn).await.optional()?)
    }

    async fn entry_by_client_id(
        &self,
        conversation_id: &str,
        sender_user_id: &str,
        client_msg_id: &str,
    ) -> StoreResult<Option<StoredEntry>> {
        let mut conn = self.db.conn().await?;
        let query = entries::table
            .filter(entries::conversation_id.eq(conversation_id))
            .filter(entries::sender_user_id.eq(sender_user_id))
            .filter(entries::client_msg_id.eq(client_msg_id))
            .select(StoredEntry::as_select());
        Ok(query.first(&mut conn).await.optional()?)
    }

    async fn last_seqs(&self, conversation_ids: &[String]) -> StoreResult<Vec<u64>> {
        let mut conn = self.db.conn().await?;
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
        let (_turn, mut conn) = self.db.writer().await?;
        conn.transaction(async |conn| {
            let last: i64 = conversations::table
                .find(conversation_id)
                .select(conversations::last_seq)
                .first(conn)
                .await
                .optional()?
                .unwrap_or(0);
            let target = seq(to).min(last);
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
        })
        .await
    }

    async fn direct_conversations(&self, user_id: &str) -> StoreResult<Vec<String>> {
        let mut conn = self.db.conn().await?;
        Ok(direct_members::table
            .filter(direct_members::user_id.eq(user_id))
            .order(direct_members::conversation_id.asc())
            .select(direct_members::conversation_id)
            .load(&mut conn)
            .await?)
    }

    async fn read_seqs(&self, user_id: &str, conversation_ids: &[String]) -> StoreResult<Vec<u64>> {
        let mut conn = self.db.conn().await?;
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
            #[diesel(sql_type = diesel::sql_types::BigInt)]
            n: i64,
        }
        let mut conn = self.db.conn().await?;
        let count: Count = diesel::sql_query(
            "SELECT COUNT(*) AS n FROM entries e \
             WHERE e.conversation_id = ? AND e.seq > ? AND e.kind = ? AND e.sender_user_id <> ? \
             AND NOT EXISTS (SELECT 1 FROM entries t WHERE t.conversation_id = e.conversation_id \
                             AND t.target_seq = e.seq AND t.kind IN (?, ?))",
        )
        .bind::<diesel::sql_types::Text, _>(conversation_id)
        .bind::<diesel::sql_types::BigInt, _>(seq(after_seq))
        .bind::<diesel::sql_types::Integer, _>(EntryKind::Content as i32)
        .bind::<diesel::sql_types::Text, _>(user_id)
        .bind::<diesel::sql_types::Integer, _>(EntryKind::Recall as i32)
        .bind::<diesel::sql_types::Integer, _>(EntryKind::Delete as i32)
        .get_result(&mut conn)
        .await?;
        Ok(count.n.max(0) as u64)
    }

    async fn last_content(&self, conversation_id: &str) -> StoreResult<Option<StoredEntry>> {
        let mut conn = self.db.conn().await?;
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
        let mut conn = self.db.conn().await?;
        let mut found = Vec::new();
        let targets: Vec<i64> = targets.iter().map(|t| seq(*t)).collect();
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
        let limit = check_limit(limit)?;
        let mut conn = self.db.conn().await?;
        let rows: Vec<(String, i64)> = read_cursors::table
            .filter(read_cursors::conversation_id.eq(conversation_id))
            .filter(read_cursors::user_id.gt(after_user_id))
            .order(read_cursors::user_id.asc())
            .limit(limit)
            .select((read_cursors::user_id, read_cursors::read_seq))
            .load(&mut conn)
            .await?;
        Ok(rows
            .into_iter()
            .map(|(user, seq)| (user, seq as u64))
            .collect())
    }
}
