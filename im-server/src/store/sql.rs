//! What the SQL stores share: the [`MessageStore`](super::MessageStore) methods whose queries
//! read the same on SQLite, PostgreSQL and MySQL, the appends of the database servers, and
//! their connection pool.

use super::{NewEntry, StoreError, StoreResult, StoredEntry};

#[cfg(any(feature = "postgres", feature = "mysql"))]
pub(super) use im_common::server_db::ServerDb;

#[cfg(any(feature = "postgres", feature = "mysql"))]
impl From<im_common::server_db::ServerDbError> for StoreError {
    fn from(error: im_common::server_db::ServerDbError) -> Self {
        Self::Backend(Box::new(error))
    }
}

/// A seq as stored (`BIGINT`); past `i64::MAX`, the highest.
pub(super) fn seq(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// `new` as stored at seq `at`, under a fresh server message id.
pub(super) fn stored_entry(new: &NewEntry, at: i64) -> StoredEntry {
    StoredEntry {
        conversation_id: new.conversation_id.clone(),
        seq: at,
        server_msg_id: uuid::Uuid::new_v4().simple().to_string(),
        sender_user_id: new.sender_user_id.clone(),
        sender_device_id: new.sender_device_id.clone(),
        client_msg_id: new.client_msg_id.clone(),
        kind: new.kind as i32,
        target_seq: seq(new.target_seq),
        body: new.body.clone(),
        server_time_ms: new.server_time_ms,
    }
}

/// A page size as bound to `LIMIT`; 0 is refused.
pub(super) fn check_limit(limit: u32) -> StoreResult<i64> {
    if limit == 0 {
        return Err(StoreError::Invalid("limit is 0".into()));
    }
    Ok(i64::from(limit))
}

/// The appends of a database server (PostgreSQL, MySQL): `append_batch(conn, batch)` appends the
/// batch in one transaction, entry by entry, on the invoking module's `Conn`.
///
/// A macro for the same reason as [`message_store!`]. The invoking module provides
/// `next_seq(conn, conversation_id)`, the conversation's next seq, which locks the
/// conversation's row until the transaction ends (appends from any number of nodes take their
/// turns, seqs stay gap-free, and a batch that fails rolls its seqs back too); and names, in
/// `insert_new`, the form of an insert that skips existing keys (see [`im_common::insert_new!`]).
#[cfg(any(feature = "postgres", feature = "mysql"))]
macro_rules! server_appends {
    (insert_new: $insert_new:ident $(,)?) => {
        use appends::append_batch;

        mod appends {
            use diesel::prelude::*;
            use diesel_async::{AsyncConnection, RunQueryDsl};
            use im_common::insert_new;
            use im_proto::{ConversationId, ConversationKind};

            use super::{Conn, next_seq};
            use $crate::store::{
                Appended, NewEntry, StoreResult, StoredEntry,
                schema::{direct_members, entries},
                sql::stored_entry,
            };

            /// Appends the batch in one transaction, entry by entry.
            pub(super) async fn append_batch(
                conn: &mut Conn,
                batch: &[NewEntry],
            ) -> StoreResult<Vec<Appended>> {
                conn.transaction(async |conn| {
                    let mut appended = Vec::with_capacity(batch.len());
                    for new in batch {
                        appended.push(append_one(conn, new).await?);
                    }
                    Ok::<_, diesel::result::Error>(appended)
                })
                .await
                .map_err(Into::into)
            }

            async fn append_one(conn: &mut Conn, new: &NewEntry) -> QueryResult<Appended> {
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
                let last = next_seq(conn, &new.conversation_id).await?;
                let stored = stored_entry(new, last);
                diesel::insert_into(entries::table)
                    .values(&stored)
                    .execute(conn)
                    .await?;
                // A 1:1 conversation starts with its first entry: both users now have it.
                if last == 1
                    && let Ok(id) = new.conversation_id.parse::<ConversationId>()
                    && let ConversationKind::Direct(a, b) = id.kind()
                {
                    for user in [a, b] {
                        insert_new!(
                            $insert_new,
                            direct_members::table,
                            (
                                direct_members::user_id.eq(user.as_str()),
                                direct_members::conversation_id.eq(&new.conversation_id),
                            )
                        )
                        .execute(conn)
                        .await?;
                    }
                }
                Ok(Appended::New(stored))
            }
        }
    };
}
#[cfg(any(feature = "postgres", feature = "mysql"))]
pub(super) use server_appends;

/// Implements [`MessageStore`](super::MessageStore) for `store` with the queries that are the
/// same on every database.
///
/// A macro rather than generic code: diesel checks each query against one connection type
/// (`LoadQuery<'_, Conn, _>`, `ExecuteDsl<Conn>`, `QueryFragment<Pg>`), so a function generic
/// over the connection would need such a bound for every query it runs.
///
/// The invoking module provides what differs per database:
/// - `CHUNK`, the ids asked for per statement;
/// - `store`, with a field `db` whose `conn()` gives a connection for reading and `writer()` one
///   for a write transaction, with the turn to write where writers take turns;
/// - `append_batch(conn, batch)`: appends the batch (checked: every entry has a client message
///   id) in one transaction (`server_appends!` writes it for the database servers);
/// - `advance_cursor(conn, conversation_id, user_id, target, now_ms)`: inside the caller's
///   transaction, moves the read cursor forward to `target` (never back) and returns it;
/// - `UNREAD_COUNT`, the statement `unread_count` runs, in the database's placeholders.
macro_rules! message_store {
    (store: $store:ident $(,)?) => {
        mod shared {
            use async_trait::async_trait;
            use diesel::prelude::*;
            use diesel_async::{AsyncConnection, RunQueryDsl};

            use super::{CHUNK, UNREAD_COUNT, advance_cursor, append_batch, $store};
            use $crate::store::{
                Appended, EntryKind, MessageStore, NewEntry, StoreError, StoreResult, StoredEntry,
                schema::{conversations, direct_members, entries, read_cursors},
                sql::{check_limit, seq},
            };

            #[async_trait]
            impl MessageStore for $store {
                async fn append(&self, batch: &[NewEntry]) -> StoreResult<Vec<Appended>> {
                    if let Some(bad) = batch.iter().find(|e| e.client_msg_id.is_empty()) {
                        return Err(StoreError::Invalid(format!(
                            "an entry of {} has no client message id",
                            bad.conversation_id
                        )));
                    }
                    let (_turn, mut conn) = self.db.writer().await?;
                    append_batch(&mut conn, batch).await
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

                async fn entry(
                    &self,
                    conversation_id: &str,
                    at: u64,
                ) -> StoreResult<Option<StoredEntry>> {
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
                        Ok(advance_cursor(conn, conversation_id, user_id, target, now_ms).await?)
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

                async fn read_seqs(
                    &self,
                    user_id: &str,
                    conversation_ids: &[String],
                ) -> StoreResult<Vec<u64>> {
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
                    let count: Count = diesel::sql_query(UNREAD_COUNT)
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

                async fn last_content(
                    &self,
                    conversation_id: &str,
                ) -> StoreResult<Option<StoredEntry>> {
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
        }
    };
}
pub(super) use message_store;
