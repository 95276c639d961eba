//! The business store on PostgreSQL (feature `postgres`), through diesel-async and
//! tokio-postgres: the distributed mode's store, shared by every business node.
//!
//! The same writes as the SQLite store, each in one transaction; where SQLite has a single
//! writer, here the group row is locked (`SELECT ... FOR UPDATE`) before its preconditions are
//! checked, so concurrent changes of one group take their turns.

use diesel::{prelude::*, upsert::excluded};
use diesel_async::{AsyncPgConnection, RunQueryDsl};

use super::{
    MemberRecord, StoreResult, UserRecord, media_catalog,
    schema::{members, users},
    sql::{ServerDb, business_store},
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
    created_at_ms BIGINT NOT NULL, history_visibility INTEGER NOT NULL DEFAULT 2);
ALTER TABLE groups ADD COLUMN IF NOT EXISTS history_visibility INTEGER NOT NULL DEFAULT 2;
CREATE TABLE IF NOT EXISTS members (
    group_id TEXT NOT NULL, user_id TEXT NOT NULL, role INTEGER NOT NULL,
    joined_at_ms BIGINT NOT NULL, muted_until_ms BIGINT NOT NULL,
    visible_from_seq BIGINT NOT NULL DEFAULT 1,
    PRIMARY KEY (group_id, user_id));
ALTER TABLE members ADD COLUMN IF NOT EXISTS visible_from_seq BIGINT NOT NULL DEFAULT 1;
CREATE TABLE IF NOT EXISTS notices (
    group_id TEXT NOT NULL, version BIGINT NOT NULL, body BYTEA NOT NULL,
    created_at_ms BIGINT NOT NULL, PRIMARY KEY (group_id, version));
CREATE INDEX IF NOT EXISTS members_by_user ON members (user_id, group_id);
CREATE TABLE IF NOT EXISTS invitations (
    group_id TEXT NOT NULL, user_id TEXT NOT NULL, inviter_user_id TEXT NOT NULL,
    created_at_ms BIGINT NOT NULL, PRIMARY KEY (group_id, user_id));
CREATE INDEX IF NOT EXISTS invitations_by_user ON invitations (user_id, created_at_ms);
CREATE TABLE IF NOT EXISTS blocks (
    user_id TEXT NOT NULL, blocked_user_id TEXT NOT NULL, created_at_ms BIGINT NOT NULL,
    PRIMARY KEY (user_id, blocked_user_id));
CREATE TABLE IF NOT EXISTS contacts (
    user_id TEXT NOT NULL, contact_user_id TEXT NOT NULL, created_at_ms BIGINT NOT NULL,
    PRIMARY KEY (user_id, contact_user_id));
CREATE TABLE IF NOT EXISTS token_revocations (
    user_id TEXT NOT NULL, device_id TEXT NOT NULL, revoked_before_ms BIGINT NOT NULL,
    PRIMARY KEY (user_id, device_id));
CREATE TABLE IF NOT EXISTS media (
    media_id TEXT PRIMARY KEY, owner_user_id TEXT NOT NULL, client_upload_id TEXT NOT NULL,
    kind INTEGER NOT NULL, state INTEGER NOT NULL, mime_type TEXT NOT NULL,
    size_bytes BIGINT NOT NULL, sha256_hex TEXT NOT NULL, file_name TEXT NOT NULL,
    detail TEXT NOT NULL, created_at_ms BIGINT NOT NULL, expires_at_ms BIGINT NOT NULL,
    updated_at_ms BIGINT NOT NULL, facts TEXT NOT NULL DEFAULT '');
CREATE UNIQUE INDEX IF NOT EXISTS media_by_client_id ON media (owner_user_id, client_upload_id);
CREATE INDEX IF NOT EXISTS media_by_owner ON media (owner_user_id, created_at_ms);
CREATE INDEX IF NOT EXISTS media_by_sha256 ON media (sha256_hex);
CREATE INDEX IF NOT EXISTS media_by_expiry ON media (state, expires_at_ms);
CREATE TABLE IF NOT EXISTS media_usage (
    user_id TEXT PRIMARY KEY, stored_bytes BIGINT NOT NULL, pending_uploads BIGINT NOT NULL);
ALTER TABLE media ADD COLUMN IF NOT EXISTS facts TEXT NOT NULL DEFAULT '';
ALTER TABLE media ADD COLUMN IF NOT EXISTS multipart_id TEXT NOT NULL DEFAULT '';
ALTER TABLE media ADD COLUMN IF NOT EXISTS part_bytes BIGINT NOT NULL DEFAULT 0;
DO $$ BEGIN
    IF to_regclass('media_refs') IS NULL THEN
        CREATE TABLE media_refs (
            media_id TEXT NOT NULL, conversation_id TEXT NOT NULL, seq BIGINT NOT NULL,
            created_at_ms BIGINT NOT NULL, PRIMARY KEY (media_id, conversation_id, seq));
        CREATE INDEX media_refs_by_entry ON media_refs (conversation_id, seq);
        -- Media completed before references were counted is kept as referenced.
        INSERT INTO media_refs SELECT media_id, '', 0, updated_at_ms FROM media WHERE state IN (2, 3);
    END IF;
END $$;
CREATE TABLE IF NOT EXISTS media_hashes (
    sha256_hex TEXT PRIMARY KEY, verdict INTEGER NOT NULL, reason TEXT NOT NULL,
    actor TEXT NOT NULL, updated_at_ms BIGINT NOT NULL);
";

/// Rows per statement, well under PostgreSQL's bound-parameter limit.
const INSERT_CHUNK: usize = 1000;

/// The business store on a PostgreSQL database.
pub struct PgBusinessStore {
    db: ServerDb<Conn>,
}

impl std::fmt::Debug for PgBusinessStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgBusinessStore").finish_non_exhaustive()
    }
}

impl PgBusinessStore {
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

/// Creates the users, or updates their profiles (their activity and creation time stay).
async fn upsert_users(conn: &mut Conn, batch: &[UserRecord]) -> StoreResult<()> {
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
}

/// Inserts the members, many rows per statement.
async fn insert_members(conn: &mut Conn, rows: &[MemberRecord]) -> StoreResult<()> {
    for chunk in rows.chunks(INSERT_CHUNK) {
        diesel::insert_into(members::table)
            .values(chunk)
            .execute(conn)
            .await?;
    }
    Ok(())
}

media_catalog! {
    store: PgBusinessStore,
    lock: for_update,
    insert_new: on_conflict_do_nothing,
}

business_store! {
    store: PgBusinessStore,
    // Many nodes write: a group's row stays locked until the transaction ends, so its
    // preconditions hold while it is changed and concurrent changes take their turns.
    lock_group: for_update,
    insert_new: on_conflict_do_nothing,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A store on a database of its own, on the server the tests' services run.
    async fn fresh() -> Option<PgBusinessStore> {
        let server = im_testkit::service_url(
            "IM_TEST_POSTGRES_URL",
            "the PostgreSQL business store suite",
        )?;
        let url = im_testkit::db::fresh_postgres(&server, "im_business").await;
        Some(PgBusinessStore::connect(&url, 4).await.expect("opens"))
    }

    crate::business_store_suite!(async { Some((fresh().await?, ())) });
}
