//! The business store on MySQL / MariaDB (feature `mysql`), through diesel-async and
//! mysql_async: the distributed mode's store, shared by every business node.
//!
//! The same writes as the SQLite store, each in one transaction; where SQLite has a single
//! writer, here the group row is locked (`SELECT ... FOR UPDATE`) before its preconditions are
//! checked, so concurrent changes of one group take their turns.

use diesel::sql_types::{BigInt, Bool, Text};
use diesel_async::{AsyncMysqlConnection, RunQueryDsl};

use super::{
    MemberRecord, StoreResult, UserRecord, media_catalog,
    schema::members,
    sql::{ServerDb, business_store},
};

type Conn = AsyncMysqlConnection;

/// The schema, applied at open (idempotent); the same tables as the SQLite migrations.
/// Ids are at most 64 bytes of ASCII; names and JSON are UTF-8 (utf8mb4: emoji included).
/// Columns added since a table was first created are added to a database that lacks them at
/// the end ([`ADDED_COLUMNS`]).
const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS users (
    user_id VARCHAR(64) CHARACTER SET ascii COLLATE ascii_bin PRIMARY KEY, display_name TEXT CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL, avatar_url TEXT CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
    extra_json TEXT CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL, active BOOLEAN NOT NULL, created_at_ms BIGINT NOT NULL,
    updated_at_ms BIGINT NOT NULL) ENGINE = InnoDB;
CREATE TABLE IF NOT EXISTS `groups` (
    group_id VARCHAR(64) CHARACTER SET ascii COLLATE ascii_bin PRIMARY KEY, name TEXT CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL, avatar_url TEXT CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
    owner_user_id VARCHAR(64) CHARACTER SET ascii COLLATE ascii_bin NOT NULL, kind INTEGER NOT NULL, join_policy INTEGER NOT NULL,
    max_members INTEGER NOT NULL, mute_all BOOLEAN NOT NULL, extra_json TEXT CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
    member_count BIGINT NOT NULL, dismissed BOOLEAN NOT NULL, version BIGINT NOT NULL,
    created_at_ms BIGINT NOT NULL, history_visibility INTEGER NOT NULL DEFAULT 2) ENGINE = InnoDB;
CREATE TABLE IF NOT EXISTS members (
    group_id VARCHAR(64) CHARACTER SET ascii COLLATE ascii_bin NOT NULL, user_id VARCHAR(64) CHARACTER SET ascii COLLATE ascii_bin NOT NULL, role INTEGER NOT NULL,
    joined_at_ms BIGINT NOT NULL, muted_until_ms BIGINT NOT NULL,
    visible_from_seq BIGINT NOT NULL DEFAULT 1,
    PRIMARY KEY (group_id, user_id), KEY members_by_user (user_id, group_id)) ENGINE = InnoDB;
CREATE TABLE IF NOT EXISTS notices (
    group_id VARCHAR(64) CHARACTER SET ascii COLLATE ascii_bin NOT NULL, version BIGINT NOT NULL,
    body BLOB NOT NULL, created_at_ms BIGINT NOT NULL, PRIMARY KEY (group_id, version)) ENGINE = InnoDB;
CREATE TABLE IF NOT EXISTS invitations (
    group_id VARCHAR(64) CHARACTER SET ascii COLLATE ascii_bin NOT NULL, user_id VARCHAR(64) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    inviter_user_id VARCHAR(64) CHARACTER SET ascii COLLATE ascii_bin NOT NULL, created_at_ms BIGINT NOT NULL,
    PRIMARY KEY (group_id, user_id), KEY invitations_by_user (user_id, created_at_ms)) ENGINE = InnoDB;
CREATE TABLE IF NOT EXISTS blocks (
    user_id VARCHAR(64) CHARACTER SET ascii COLLATE ascii_bin NOT NULL, blocked_user_id VARCHAR(64) CHARACTER SET ascii COLLATE ascii_bin NOT NULL, created_at_ms BIGINT NOT NULL,
    PRIMARY KEY (user_id, blocked_user_id)) ENGINE = InnoDB;
CREATE TABLE IF NOT EXISTS contacts (
    user_id VARCHAR(64) CHARACTER SET ascii COLLATE ascii_bin NOT NULL, contact_user_id VARCHAR(64) CHARACTER SET ascii COLLATE ascii_bin NOT NULL, created_at_ms BIGINT NOT NULL,
    PRIMARY KEY (user_id, contact_user_id)) ENGINE = InnoDB;
CREATE TABLE IF NOT EXISTS token_revocations (
    user_id VARCHAR(64) CHARACTER SET ascii COLLATE ascii_bin NOT NULL, device_id VARCHAR(64) CHARACTER SET ascii COLLATE ascii_bin NOT NULL, revoked_before_ms BIGINT NOT NULL,
    PRIMARY KEY (user_id, device_id)) ENGINE = InnoDB;
CREATE TABLE IF NOT EXISTS media (
    media_id VARCHAR(64) CHARACTER SET ascii COLLATE ascii_bin PRIMARY KEY, owner_user_id VARCHAR(64) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    client_upload_id VARCHAR(64) CHARACTER SET ascii COLLATE ascii_bin NOT NULL, kind INTEGER NOT NULL, state INTEGER NOT NULL,
    mime_type VARCHAR(255) CHARACTER SET ascii COLLATE ascii_bin NOT NULL, size_bytes BIGINT NOT NULL,
    sha256_hex CHAR(64) CHARACTER SET ascii COLLATE ascii_bin NOT NULL, file_name TEXT CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
    detail TEXT CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL, created_at_ms BIGINT NOT NULL, expires_at_ms BIGINT NOT NULL,
    updated_at_ms BIGINT NOT NULL, facts VARCHAR(8192) CHARACTER SET ascii COLLATE ascii_bin NOT NULL DEFAULT '',
    multipart_id VARCHAR(1024) CHARACTER SET ascii COLLATE ascii_bin NOT NULL DEFAULT '',
    part_bytes BIGINT NOT NULL DEFAULT 0,
    UNIQUE KEY media_by_client_id (owner_user_id, client_upload_id),
    KEY media_by_owner (owner_user_id, created_at_ms), KEY media_by_sha256 (sha256_hex),
    KEY media_by_expiry (state, expires_at_ms)) ENGINE = InnoDB;
CREATE TABLE IF NOT EXISTS media_usage (
    user_id VARCHAR(64) CHARACTER SET ascii COLLATE ascii_bin PRIMARY KEY, stored_bytes BIGINT NOT NULL,
    pending_uploads BIGINT NOT NULL) ENGINE = InnoDB;
SET @new_refs = (SELECT COUNT(*) = 0 FROM information_schema.tables
    WHERE table_schema = DATABASE() AND table_name = 'media_refs');
CREATE TABLE IF NOT EXISTS media_refs (
    media_id VARCHAR(64) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    conversation_id VARCHAR(200) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    seq BIGINT NOT NULL, created_at_ms BIGINT NOT NULL,
    PRIMARY KEY (media_id, conversation_id, seq), KEY media_refs_by_entry (conversation_id, seq)
    ) ENGINE = InnoDB;
SET @fill_refs = IF(@new_refs, 'INSERT INTO media_refs SELECT media_id, '''', 0, updated_at_ms FROM media WHERE state IN (2, 3)', 'DO 0');
PREPARE fill_refs FROM @fill_refs; EXECUTE fill_refs; DEALLOCATE PREPARE fill_refs;
CREATE TABLE IF NOT EXISTS media_hashes (
    sha256_hex VARCHAR(64) CHARACTER SET ascii COLLATE ascii_bin PRIMARY KEY, verdict INTEGER NOT NULL,
    reason TEXT CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
    actor VARCHAR(255) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
    updated_at_ms BIGINT NOT NULL) ENGINE = InnoDB;
";

/// Columns added after their tables: (table, column, definition). MySQL has no
/// `ADD COLUMN IF NOT EXISTS` (MariaDB has), so each is added when the information schema
/// lacks it; the defaults are what rows stored before meant (the whole history).
const ADDED_COLUMNS: &[(&str, &str, &str)] = &[
    ("groups", "history_visibility", "INTEGER NOT NULL DEFAULT 2"),
    ("members", "visible_from_seq", "BIGINT NOT NULL DEFAULT 1"),
    // JSON of ASCII only (names, types, base64); VARCHAR, since a TEXT column takes no default
    // on MySQL.
    (
        "media",
        "facts",
        "VARCHAR(8192) CHARACTER SET ascii COLLATE ascii_bin NOT NULL DEFAULT ''",
    ),
    (
        "media",
        "multipart_id",
        "VARCHAR(1024) CHARACTER SET ascii COLLATE ascii_bin NOT NULL DEFAULT ''",
    ),
    ("media", "part_bytes", "BIGINT NOT NULL DEFAULT 0"),
];

/// The statements that add `ADDED_COLUMNS` where missing, as one batch.
fn add_missing_columns() -> String {
    ADDED_COLUMNS
        .iter()
        .map(|(table, column, definition)| {
            // The statement is a string literal here: its own quotes doubled.
            let definition = definition.replace('\'', "''");
            format!(
                "SET @add = IF((SELECT COUNT(*) FROM information_schema.columns \
                 WHERE table_schema = DATABASE() AND table_name = '{table}' \
                 AND column_name = '{column}') = 0, \
                 'ALTER TABLE `{table}` ADD COLUMN {column} {definition}', 'DO 0'); \
                 PREPARE add_column FROM @add; EXECUTE add_column; DEALLOCATE PREPARE add_column;\n"
            )
        })
        .collect()
}

/// Rows per statement, well under MySQL's bound-parameter limit.
const INSERT_CHUNK: usize = 1000;

/// The business store on a MySQL or MariaDB database.
pub struct MysqlBusinessStore {
    db: ServerDb<Conn>,
}

impl std::fmt::Debug for MysqlBusinessStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MysqlBusinessStore").finish_non_exhaustive()
    }
}

impl MysqlBusinessStore {
    /// Connects to `url` (`mysql://user@host:port/db`) and applies the schema.
    pub async fn connect(url: &str, max_connections: usize) -> StoreResult<Self> {
        Ok(Self {
            db: ServerDb::connect(
                url,
                max_connections,
                &(SCHEMA.to_owned() + &add_missing_columns()),
            )
            .await?,
        })
    }
}

/// Creates the users, or updates their profiles (their activity and creation time stay), one
/// statement each.
async fn upsert_users(conn: &mut Conn, batch: &[UserRecord]) -> StoreResult<()> {
    for user in batch {
        diesel::sql_query(
            "INSERT INTO users (user_id, display_name, avatar_url, extra_json, active, \
             created_at_ms, updated_at_ms) VALUES (?, ?, ?, ?, ?, ?, ?) ON DUPLICATE KEY UPDATE \
             display_name = VALUES(display_name), avatar_url = VALUES(avatar_url), \
             extra_json = VALUES(extra_json), updated_at_ms = VALUES(updated_at_ms)",
        )
        .bind::<Text, _>(&user.user_id)
        .bind::<Text, _>(&user.display_name)
        .bind::<Text, _>(&user.avatar_url)
        .bind::<Text, _>(&user.extra_json)
        .bind::<Bool, _>(user.active)
        .bind::<BigInt, _>(user.created_at_ms)
        .bind::<BigInt, _>(user.updated_at_ms)
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
    store: MysqlBusinessStore,
    lock: for_update,
    insert_new: insert_or_ignore,
}

business_store! {
    store: MysqlBusinessStore,
    // Many nodes write: a group's row stays locked until the transaction ends, so its
    // preconditions hold while it is changed and concurrent changes take their turns.
    lock_group: for_update,
    insert_new: insert_or_ignore,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A store on a database of its own, on the server the tests' services run.
    async fn fresh() -> Option<MysqlBusinessStore> {
        let server =
            im_testkit::service_url("IM_TEST_MARIADB_URL", "the MariaDB business store suite")?;
        let url = im_testkit::db::fresh_mysql(&server, "im_business").await;
        Some(MysqlBusinessStore::connect(&url, 4).await.expect("opens"))
    }

    crate::business_store_suite!(async { Some((fresh().await?, ())) });

    /// A database made before a column was added gets it, its rows keeping their meaning.
    #[tokio::test]
    async fn a_database_from_before_gets_the_added_columns() {
        use diesel_async::{AsyncConnection, SimpleAsyncConnection};

        use crate::store::BusinessStore;
        let Some(server) =
            im_testkit::service_url("IM_TEST_MARIADB_URL", "the MariaDB upgrade test")
        else {
            return;
        };
        let url = im_testkit::db::fresh_mysql(&server, "im_business").await;
        let mut old = Conn::establish(&url).await.unwrap();
        old.batch_execute(SCHEMA).await.unwrap();
        for (table, column, _) in ADDED_COLUMNS {
            old.batch_execute(&format!("ALTER TABLE `{table}` DROP COLUMN {column}"))
                .await
                .unwrap();
        }
        old.batch_execute(
            "INSERT INTO `groups` VALUES ('g', 'g', '', 'o', 1, 1, 10, FALSE, '{}', 1, FALSE, 1, 0);
             INSERT INTO members VALUES ('g', 'o', 1, 0, 0);",
        )
        .await
        .unwrap();
        drop(old);
        let store = MysqlBusinessStore::connect(&url, 2).await.expect("opens");
        let group = store.get_group("g").await.unwrap().unwrap();
        let member = store.get_member("g", "o").await.unwrap().unwrap();
        assert_eq!(
            (group.history_visibility, member.visible_from_seq),
            (2, 1),
            "what was stored before shows the whole history, as it did"
        );
        drop(store);
        MysqlBusinessStore::connect(&url, 2)
            .await
            .expect("opens again, adding nothing");
    }
}
