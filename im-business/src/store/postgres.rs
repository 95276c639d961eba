//! The business store on PostgreSQL (feature `postgres`), through diesel-async and
//! tokio-postgres: the distributed mode's store, shared by every business node.
//!
//! The same writes as the SQLite store, each in one transaction; where SQLite has a single
//! writer, here the group row is locked (`SELECT ... FOR UPDATE`) before its preconditions are
//! checked, so concurrent changes of one group take their turns.

use async_trait::async_trait;
use diesel::{prelude::*, upsert::excluded};
use diesel_async::{
    AsyncConnection, AsyncPgConnection, RunQueryDsl, SimpleAsyncConnection,
    pooled_connection::{
        AsyncDieselConnectionManager,
        deadpool::{Object, Pool},
    },
};
use im_proto::v1::GroupRole;

use super::{
    BusinessStore, GroupChanges, GroupRecord, MemberRecord, Missing, Revocation, StoreError,
    StoreResult, UserRecord,
    schema::{blocks, contacts, groups, members, token_revocations, users},
};

type Conn = AsyncPgConnection;

/// The advisory lock every store's schema is applied under (any constant shared by them).
const SCHEMA_LOCK: i64 = 0x696d_7363_6865_6d61;

/// The schema, applied at open (idempotent); the same tables as the SQLite migrations.
const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS users (
    user_id TEXT PRIMARY KEY, display_name TEXT NOT NULL, avatar_url TEXT NOT NULL,
    extra_json TEXT NOT NULL, active BOOLEAN NOT NULL, created_at_ms BIGINT NOT NULL,
    updated_at_ms BIGINT NOT NULL);
CREATE TABLE IF NOT EXISTS groups (
    group_id TEXT PRIMARY KEY, name TEXT NOT NULL, avatar_url TEXT NOT NULL,
    owner_user_id TEXT NOT NULL, kind INTEGER NOT NULL, join_policy INTEGER NOT NULL,
    max_members INTEGER NOT NULL, mute_all BOOLEAN NOT NULL, extra_json TEXT NOT NULL,
    member_count BIGINT NOT NULL, dismissed BOOLEAN NOT NULL, version BIGINT NOT NULL,
    created_at_ms BIGINT NOT NULL);
CREATE TABLE IF NOT EXISTS members (
    group_id TEXT NOT NULL, user_id TEXT NOT NULL, role INTEGER NOT NULL,
    joined_at_ms BIGINT NOT NULL, muted_until_ms BIGINT NOT NULL,
    PRIMARY KEY (group_id, user_id));
CREATE INDEX IF NOT EXISTS members_by_user ON members (user_id, group_id);
CREATE TABLE IF NOT EXISTS blocks (
    user_id TEXT NOT NULL, blocked_user_id TEXT NOT NULL, created_at_ms BIGINT NOT NULL,
    PRIMARY KEY (user_id, blocked_user_id));
CREATE TABLE IF NOT EXISTS contacts (
    user_id TEXT NOT NULL, contact_user_id TEXT NOT NULL, created_at_ms BIGINT NOT NULL,
    PRIMARY KEY (user_id, contact_user_id));
CREATE TABLE IF NOT EXISTS token_revocations (
    user_id TEXT NOT NULL, device_id TEXT NOT NULL, revoked_before_ms BIGINT NOT NULL,
    PRIMARY KEY (user_id, device_id));
";

/// Rows per statement, well under PostgreSQL's bound-parameter limit.
const INSERT_CHUNK: usize = 1000;

fn backend(error: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(error.to_string())
}

/// The business store on a PostgreSQL database.
pub struct PgStore {
    pool: Pool<Conn>,
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStore").finish_non_exhaustive()
    }
}

impl PgStore {
    /// Connects to `url` (`postgres://user@host:port/db`) and applies the schema.
    pub async fn connect(url: &str, max_connections: usize) -> StoreResult<Self> {
        let manager = AsyncDieselConnectionManager::<Conn>::new(url);
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

    async fn conn(&self) -> StoreResult<Object<Conn>> {
        self.pool.get().await.map_err(backend)
    }

    /// A connection for one write transaction (row locks, not a writer's turn, order them).
    async fn writer(&self) -> StoreResult<((), Object<Conn>)> {
        Ok(((), self.conn().await?))
    }
}

async fn load_group(conn: &mut Conn, group_id: &str) -> StoreResult<GroupRecord> {
    // Locked until the transaction ends: the group's preconditions hold while it is changed.
    groups::table
        .find(group_id)
        .filter(groups::dismissed.eq(false))
        .select(GroupRecord::as_select())
        .for_update()
        .first(conn)
        .await
        .optional()?
        .ok_or_else(|| StoreError::NotFound(Missing::Group(group_id.to_owned())))
}

/// Records a revocation; a later cut-off replaces an earlier one, never the reverse.
async fn revoke(conn: &mut Conn, revocation: &Revocation) -> StoreResult<()> {
    let key = (&revocation.user_id, &revocation.device_id);
    let current: Option<i64> = token_revocations::table
        .find(key)
        .select(token_revocations::revoked_before_ms)
        .first(conn)
        .await
        .optional()?;
    match current {
        None => {
            diesel::insert_into(token_revocations::table)
                .values(revocation)
                .execute(conn)
                .await?;
        }
        Some(before) if before < revocation.revoked_before_ms => {
            diesel::update(token_revocations::table.find(key))
                .set(token_revocations::revoked_before_ms.eq(revocation.revoked_before_ms))
                .execute(conn)
                .await?;
        }
        Some(_) => {}
    }
    Ok(())
}

async fn insert_members(conn: &mut Conn, rows: &[MemberRecord]) -> StoreResult<()> {
    for chunk in rows.chunks(INSERT_CHUNK) {
        diesel::insert_into(members::table)
            .values(chunk)
            .execute(conn)
            .await?;
    }
    Ok(())
}

/// Records a change of the group: its member count moves by `delta`, its version by one.
async fn touch_group(conn: &mut Conn, group_id: &str, delta: i64) -> StoreResult<GroupRecord> {
    diesel::update(groups::table.find(group_id))
        .set((
            groups::member_count.eq(groups::member_count + delta),
            groups::version.eq(groups::version + 1),
        ))
        .execute(conn)
        .await?;
    groups::table
        .find(group_id)
        .select(GroupRecord::as_select())
        .first(conn)
        .await
        .map_err(Into::into)
}

#[async_trait]
impl BusinessStore for PgStore {
    async fn upsert_user(&self, user: &UserRecord) -> StoreResult<UserRecord> {
        let (_turn, mut conn) = self.writer().await?;
        conn.transaction(async |conn| {
            diesel::insert_into(users::table)
                .values(user)
                .on_conflict(users::user_id)
                .do_update()
                .set((
                    users::display_name.eq(excluded(users::display_name)),
                    users::avatar_url.eq(excluded(users::avatar_url)),
                    users::extra_json.eq(excluded(users::extra_json)),
                    users::updated_at_ms.eq(excluded(users::updated_at_ms)),
                ))
                .execute(conn)
                .await?;
            let stored = users::table
                .find(&user.user_id)
                .select(UserRecord::as_select());
            Ok(stored.first(conn).await?)
        })
        .await
    }

    async fn upsert_users(&self, batch: &[UserRecord]) -> StoreResult<()> {
        let (_turn, mut conn) = self.writer().await?;
        let batch = batch.to_vec();
        conn.transaction(async |conn| {
            for chunk in batch.chunks(INSERT_CHUNK) {
                diesel::insert_into(users::table)
                    .values(chunk)
                    .on_conflict(users::user_id)
                    .do_update()
                    .set((
                        users::display_name.eq(excluded(users::display_name)),
                        users::avatar_url.eq(excluded(users::avatar_url)),
                        users::extra_json.eq(excluded(users::extra_json)),
                        users::updated_at_ms.eq(excluded(users::updated_at_ms)),
                    ))
                    .execute(conn)
                    .await?;
            }
            Ok(())
        })
        .await
    }

    async fn first_unusable(&self, user_ids: &[String]) -> StoreResult<Option<(String, bool)>> {
        let mut conn = self.conn().await?;
        for chunk in user_ids.chunks(INSERT_CHUNK) {
            let found: std::collections::HashMap<String, bool> = users::table
                .filter(users::user_id.eq_any(chunk))
                .select((users::user_id, users::active))
                .load(&mut conn)
                .await?
                .into_iter()
                .collect();
            for user_id in chunk {
                match found.get(user_id) {
                    Some(true) => {}
                    Some(false) => return Ok(Some((user_id.clone(), true))),
                    None => return Ok(Some((user_id.clone(), false))),
                }
            }
        }
        Ok(None)
    }

    async fn get_user(&self, user_id: &str) -> StoreResult<Option<UserRecord>> {
        let mut conn = self.conn().await?;
        let query = users::table.find(user_id).select(UserRecord::as_select());
        Ok(query.first(&mut conn).await.optional()?)
    }

    async fn deactivate_user(&self, user_id: &str, now_ms: i64) -> StoreResult<UserRecord> {
        let (_turn, mut conn) = self.writer().await?;
        conn.transaction(async |conn| {
            let changed = diesel::update(users::table.find(user_id))
                .set((users::active.eq(false), users::updated_at_ms.eq(now_ms)))
                .execute(conn)
                .await?;
            if changed == 0 {
                return Err(StoreError::NotFound(Missing::User(user_id.to_owned())));
            }
            let revocation = Revocation {
                user_id: user_id.into(),
                device_id: String::new(),
                revoked_before_ms: now_ms,
            };
            revoke(conn, &revocation).await?;
            let stored = users::table.find(user_id).select(UserRecord::as_select());
            Ok(stored.first(conn).await?)
        })
        .await
    }

    async fn revoke_tokens(&self, revocation: &Revocation) -> StoreResult<()> {
        let (_turn, mut conn) = self.writer().await?;
        conn.transaction(async |conn| revoke(conn, revocation).await)
            .await
    }

    async fn revocations(&self) -> StoreResult<Vec<Revocation>> {
        let mut conn = self.conn().await?;
        let query = token_revocations::table.select(Revocation::as_select());
        Ok(query.load(&mut conn).await?)
    }

    async fn create_group(
        &self,
        group: &GroupRecord,
        first_members: &[MemberRecord],
    ) -> StoreResult<GroupRecord> {
        let (_turn, mut conn) = self.writer().await?;
        conn.transaction(async |conn| {
            let exists: Option<String> = groups::table
                .find(&group.group_id)
                .select(groups::group_id)
                .first(conn)
                .await
                .optional()?;
            if exists.is_some() {
                return Err(StoreError::AlreadyExists(format!(
                    "group {}",
                    group.group_id
                )));
            }
            let count = first_members.len() as i64;
            if count > i64::from(group.max_members) {
                return Err(StoreError::GroupFull {
                    group_id: group.group_id.clone(),
                    would_have: count,
                    max: group.max_members,
                });
            }
            let group = GroupRecord {
                member_count: count,
                version: 1,
                ..group.clone()
            };
            diesel::insert_into(groups::table)
                .values(&group)
                .execute(conn)
                .await?;
            insert_members(conn, first_members).await?;
            Ok(group)
        })
        .await
    }

    async fn get_group(&self, group_id: &str) -> StoreResult<Option<GroupRecord>> {
        let mut conn = self.conn().await?;
        let query = groups::table
            .find(group_id)
            .select(GroupRecord::as_select());
        Ok(query.first(&mut conn).await.optional()?)
    }

    async fn update_group(
        &self,
        group_id: &str,
        changes: &GroupChanges,
    ) -> StoreResult<GroupRecord> {
        let (_turn, mut conn) = self.writer().await?;
        conn.transaction(async |conn| {
            load_group(conn, group_id).await?;
            if *changes != GroupChanges::default() {
                diesel::update(groups::table.find(group_id))
                    .set(changes)
                    .execute(conn)
                    .await?;
            }
            touch_group(conn, group_id, 0).await
        })
        .await
    }

    async fn dismiss_group(&self, group_id: &str) -> StoreResult<GroupRecord> {
        let (_turn, mut conn) = self.writer().await?;
        conn.transaction(async |conn| {
            let group = load_group(conn, group_id).await?;
            diesel::delete(members::table.filter(members::group_id.eq(&group_id)))
                .execute(conn)
                .await?;
            diesel::update(groups::table.find(&group_id))
                .set(groups::dismissed.eq(true))
                .execute(conn)
                .await?;
            touch_group(conn, group_id, -group.member_count).await
        })
        .await
    }

    async fn add_members(
        &self,
        group_id: &str,
        new_members: &[MemberRecord],
    ) -> StoreResult<GroupRecord> {
        let (_turn, mut conn) = self.writer().await?;
        conn.transaction(async |conn| {
            let group = load_group(conn, group_id).await?;
            let ids: Vec<&str> = new_members.iter().map(|m| m.user_id.as_str()).collect();
            for chunk in ids.chunks(INSERT_CHUNK) {
                let present: Option<String> = members::table
                    .filter(members::group_id.eq(&group_id))
                    .filter(members::user_id.eq_any(chunk))
                    .select(members::user_id)
                    .first(conn)
                    .await
                    .optional()?;
                if let Some(user) = present {
                    return Err(StoreError::AlreadyExists(format!(
                        "member {user} of group {group_id}"
                    )));
                }
            }
            let would_have = group.member_count + new_members.len() as i64;
            if would_have > i64::from(group.max_members) {
                return Err(StoreError::GroupFull {
                    group_id: group_id.to_owned(),
                    would_have,
                    max: group.max_members,
                });
            }
            insert_members(conn, new_members).await?;
            touch_group(conn, group_id, new_members.len() as i64).await
        })
        .await
    }

    async fn remove_members(
        &self,
        group_id: &str,
        user_ids: &[String],
    ) -> StoreResult<GroupRecord> {
        let (_turn, mut conn) = self.writer().await?;
        conn.transaction(async |conn| {
            let group = load_group(conn, group_id).await?;
            let mut removed = 0;
            for user_id in user_ids {
                if *user_id == group.owner_user_id {
                    // Returning an error rolls back the members removed so far.
                    return Err(StoreError::Conflict(
                        "the owner cannot be removed; transfer ownership first".into(),
                    ));
                }
                let deleted = diesel::delete(members::table.find((group_id, user_id)))
                    .execute(conn)
                    .await?;
                if deleted == 0 {
                    return Err(StoreError::NotFound(Missing::Member {
                        group_id: group_id.to_owned(),
                        user_id: user_id.to_owned(),
                    }));
                }
                removed += 1;
            }
            touch_group(conn, group_id, -removed).await
        })
        .await
    }

    async fn get_member(&self, group_id: &str, user_id: &str) -> StoreResult<Option<MemberRecord>> {
        let mut conn = self.conn().await?;
        let query = members::table
            .find((group_id, user_id))
            .select(MemberRecord::as_select());
        Ok(query.first(&mut conn).await.optional()?)
    }

    async fn list_members(
        &self,
        group_id: &str,
        after_user_id: &str,
        limit: u32,
    ) -> StoreResult<Vec<MemberRecord>> {
        let mut conn = self.conn().await?;
        let query = members::table
            .filter(members::group_id.eq(group_id))
            .filter(members::user_id.gt(after_user_id))
            .order(members::user_id.asc())
            .limit(i64::from(limit))
            .select(MemberRecord::as_select());
        Ok(query.load(&mut conn).await?)
    }

    async fn groups_of(&self, user_id: &str) -> StoreResult<Vec<(GroupRecord, MemberRecord)>> {
        let mut conn = self.conn().await?;
        let query = members::table
            .inner_join(groups::table.on(groups::group_id.eq(members::group_id)))
            .filter(members::user_id.eq(user_id))
            .filter(groups::dismissed.eq(false))
            .order(members::group_id.asc())
            .select((GroupRecord::as_select(), MemberRecord::as_select()));
        Ok(query.load(&mut conn).await?)
    }

    async fn set_member_role(
        &self,
        group_id: &str,
        user_id: &str,
        role: i32,
    ) -> StoreResult<GroupRecord> {
        let (_turn, mut conn) = self.writer().await?;
        conn.transaction(async |conn| {
            let group = load_group(conn, group_id).await?;
            if user_id == group.owner_user_id || role == GroupRole::Owner as i32 {
                return Err(StoreError::Conflict(
                    "the owner's role moves only by a transfer".into(),
                ));
            }
            let changed = diesel::update(members::table.find((group_id, user_id)))
                .set(members::role.eq(role))
                .execute(conn)
                .await?;
            if changed == 0 {
                return Err(StoreError::NotFound(Missing::Member {
                    group_id: group_id.to_owned(),
                    user_id: user_id.to_owned(),
                }));
            }
            touch_group(conn, group_id, 0).await
        })
        .await
    }

    async fn set_member_mute(
        &self,
        group_id: &str,
        user_id: &str,
        until_ms: i64,
    ) -> StoreResult<GroupRecord> {
        let (_turn, mut conn) = self.writer().await?;
        conn.transaction(async |conn| {
            load_group(conn, group_id).await?;
            let changed = diesel::update(members::table.find((group_id, user_id)))
                .set(members::muted_until_ms.eq(until_ms))
                .execute(conn)
                .await?;
            if changed == 0 {
                return Err(StoreError::NotFound(Missing::Member {
                    group_id: group_id.to_owned(),
                    user_id: user_id.to_owned(),
                }));
            }
            touch_group(conn, group_id, 0).await
        })
        .await
    }

    async fn transfer_ownership(
        &self,
        group_id: &str,
        from: &str,
        to: &str,
    ) -> StoreResult<GroupRecord> {
        let (_turn, mut conn) = self.writer().await?;
        conn.transaction(async |conn| {
            let group = load_group(conn, group_id).await?;
            if group.owner_user_id != from || from == to {
                return Err(StoreError::Conflict(format!(
                    "{from} does not own group {group_id} (or already hands it to itself)"
                )));
            }
            for (user, role) in [(to, GroupRole::Owner), (from, GroupRole::Admin)] {
                let changed = diesel::update(members::table.find((group_id, user)))
                    .set(members::role.eq(role as i32))
                    .execute(conn)
                    .await?;
                if changed == 0 {
                    return Err(StoreError::NotFound(Missing::Member {
                        group_id: group_id.to_owned(),
                        user_id: user.to_owned(),
                    }));
                }
            }
            diesel::update(groups::table.find(group_id))
                .set(groups::owner_user_id.eq(to))
                .execute(conn)
                .await?;
            touch_group(conn, group_id, 0).await
        })
        .await
    }

    async fn set_block(
        &self,
        user_id: &str,
        blocked: &str,
        on: bool,
        now_ms: i64,
    ) -> StoreResult<bool> {
        let (_turn, mut conn) = self.writer().await?;
        conn.transaction(async |conn| {
            let changed = if on {
                diesel::insert_into(blocks::table)
                    .values((
                        blocks::user_id.eq(&user_id),
                        blocks::blocked_user_id.eq(&blocked),
                        blocks::created_at_ms.eq(now_ms),
                    ))
                    .on_conflict_do_nothing()
                    .execute(conn)
                    .await?
            } else {
                diesel::delete(blocks::table.find((&user_id, &blocked)))
                    .execute(conn)
                    .await?
            };
            Ok(changed > 0)
        })
        .await
    }

    async fn is_blocked(&self, user_id: &str, blocked: &str) -> StoreResult<bool> {
        let mut conn = self.conn().await?;
        let query = blocks::table
            .find((user_id, blocked))
            .select(blocks::user_id);
        Ok(query.first::<String>(&mut conn).await.optional()?.is_some())
    }

    async fn list_blocked(
        &self,
        user_id: &str,
        after: &str,
        limit: u32,
    ) -> StoreResult<Vec<String>> {
        let mut conn = self.conn().await?;
        let query = blocks::table
            .filter(blocks::user_id.eq(user_id))
            .filter(blocks::blocked_user_id.gt(after))
            .order(blocks::blocked_user_id.asc())
            .limit(i64::from(limit))
            .select(blocks::blocked_user_id);
        Ok(query.load(&mut conn).await?)
    }

    async fn set_contact(
        &self,
        user_id: &str,
        contact: &str,
        on: bool,
        now_ms: i64,
    ) -> StoreResult<bool> {
        let (_turn, mut conn) = self.writer().await?;
        conn.transaction(async |conn| {
            let changed = if on {
                diesel::insert_into(contacts::table)
                    .values((
                        contacts::user_id.eq(&user_id),
                        contacts::contact_user_id.eq(&contact),
                        contacts::created_at_ms.eq(now_ms),
                    ))
                    .on_conflict_do_nothing()
                    .execute(conn)
                    .await?
            } else {
                diesel::delete(contacts::table.find((&user_id, &contact)))
                    .execute(conn)
                    .await?
            };
            Ok(changed > 0)
        })
        .await
    }

    async fn is_contact(&self, user_id: &str, contact: &str) -> StoreResult<bool> {
        let mut conn = self.conn().await?;
        let query = contacts::table
            .find((user_id, contact))
            .select(contacts::user_id);
        Ok(query.first::<String>(&mut conn).await.optional()?.is_some())
    }
}

#[cfg(test)]
mod tests {
    use diesel_async::SimpleAsyncConnection;

    use super::*;

    fn postgres_url() -> Option<String> {
        im_common::testing::service_url(
            "IM_TEST_POSTGRES_URL",
            "the PostgreSQL business store suite",
        )
    }

    /// A store on a database of its own.
    async fn fresh(url: &str) -> PgStore {
        let name = format!("im_business_{}", uuid::Uuid::new_v4().simple());
        let mut admin = AsyncPgConnection::establish(url).await.expect("connects");
        admin
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .expect("creates a database");
        let base = url.rsplit_once('/').map_or(url, |(base, _)| base);
        PgStore::connect(&format!("{base}/{name}"), 4)
            .await
            .expect("opens")
    }

    #[tokio::test]
    async fn the_postgres_store_passes_the_business_store_suite() {
        let Some(url) = postgres_url() else { return };
        use crate::store::suite;
        suite::users_upsert_keeps_creation_and_activity(&fresh(&url).await).await;
        suite::deactivation_and_unknown_users(&fresh(&url).await).await;
        suite::users_in_bulk(&fresh(&url).await).await;
        suite::revocations_only_move_forward(&fresh(&url).await).await;
        suite::groups_are_created_with_their_members(&fresh(&url).await).await;
        suite::adding_members_is_all_or_nothing(&fresh(&url).await).await;
        suite::removing_members_is_all_or_nothing(&fresh(&url).await).await;
        suite::members_page_in_id_order(&fresh(&url).await).await;
        suite::roles_mutes_and_ownership(&fresh(&url).await).await;
        suite::group_changes_touch_only_their_fields(&fresh(&url).await).await;
        suite::dismissed_groups_have_no_members(&fresh(&url).await).await;
        suite::groups_of_a_user(&fresh(&url).await).await;
        suite::blocks_and_contacts(&fresh(&url).await).await;
    }
}
