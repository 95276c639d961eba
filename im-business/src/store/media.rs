//! The media catalogue: one row per upload (its media), and each user's usage, kept in the
//! same transaction as every change of state so that quotas can never be passed by
//! concurrent uploads and a rejected or abandoned upload gives its reservation back.

use async_trait::async_trait;
use diesel::prelude::*;
use im_proto::v1::MediaState;

use super::{StoreResult, schema};

/// One upload and the media it becomes.
#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable, Insertable)]
#[diesel(table_name = schema::media)]
pub struct MediaRecord {
    /// The media id (also the upload's).
    pub media_id: String,
    /// The uploader.
    pub owner_user_id: String,
    /// The client's id of the upload, unique per owner (the media id when it gave none).
    pub client_upload_id: String,
    /// `im.v1.MediaKind`.
    pub kind: i32,
    /// `im.v1.MediaState`.
    pub state: i32,
    /// The declared type until completed, then the type sniffed from the bytes.
    pub mime_type: String,
    /// The exact size in bytes (declared, then checked).
    pub size_bytes: i64,
    /// The declared digest (or empty) until completed, then the digest of the bytes.
    pub sha256_hex: String,
    /// The file name the client gave.
    pub file_name: String,
    /// Why it was rejected or quarantined.
    pub detail: String,
    /// When the upload was created.
    pub created_at_ms: i64,
    /// When a pending upload expires.
    pub expires_at_ms: i64,
    /// When its state last changed.
    pub updated_at_ms: i64,
    /// What processing learned (`media::facts::MediaFacts` as JSON; empty before).
    pub facts: String,
    /// The object store's id of an upload in parts (empty for a single PUT).
    pub multipart_id: String,
    /// The size of each part but the last (0 for a single PUT).
    pub part_bytes: i64,
}

impl MediaRecord {
    /// Its state (UNSPECIFIED for a number this build does not know).
    pub fn state(&self) -> MediaState {
        MediaState::try_from(self.state).unwrap_or(MediaState::Unspecified)
    }
}

/// Changes to a media row; `None` leaves a field as it is.
#[derive(Debug, Clone, Default, PartialEq, Eq, AsChangeset)]
#[diesel(table_name = schema::media)]
pub struct MediaChange {
    /// The sniffed type.
    pub mime_type: Option<String>,
    /// The digest of the bytes.
    pub sha256_hex: Option<String>,
    /// Why it was rejected or quarantined.
    pub detail: Option<String>,
    /// What processing learned.
    pub facts: Option<String>,
}

/// The limits a new upload is checked against, in the same transaction as it is recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UploadLimits {
    /// Bytes the user may keep, pending uploads included.
    pub stored_bytes: u64,
    /// Bytes the user may upload in the window.
    pub window_bytes: u64,
    /// Where the window starts: uploads created at or after count.
    pub window_start_ms: i64,
    /// Uploads the user may have pending at once.
    pub pending_uploads: u32,
}

/// What a user has used of its quotas.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MediaUsage {
    /// Bytes kept: pending, processing, ready and quarantined media.
    pub stored_bytes: u64,
    /// Bytes of the uploads created in the window and not released.
    pub window_bytes: u64,
    /// Uploads pending.
    pub pending_uploads: u32,
}

/// An operator's or a scanner's verdict on bytes, by their digest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(i32)]
pub enum HashVerdict {
    /// Quarantined wherever they are uploaded.
    Blocked = 1,
    /// Released by an operator: never scanned or quarantined automatically again.
    Allowed = 2,
}

/// The verdict kept on one digest.
#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable, Insertable)]
#[diesel(table_name = schema::media_hashes)]
pub struct HashRecord {
    /// The digest of the bytes.
    pub sha256_hex: String,
    /// [`HashVerdict`].
    pub verdict: i32,
    /// Why (a scanner's finding, an operator's reason).
    pub reason: String,
    /// Who decided: `clamd`, `webhook`, or the operator.
    pub actor: String,
    /// When.
    pub updated_at_ms: i64,
}

impl HashRecord {
    /// Whether the bytes are blocked.
    pub fn blocked(&self) -> bool {
        self.verdict == HashVerdict::Blocked as i32
    }

    /// Whether the bytes are allowed.
    pub fn allowed(&self) -> bool {
        self.verdict == HashVerdict::Allowed as i32
    }
}

/// Whether media in `state` holds its bytes in the owner's stored quota.
pub(crate) fn holds_quota(state: i32) -> bool {
    [
        MediaState::Pending,
        MediaState::Processing,
        MediaState::Ready,
        MediaState::Quarantined,
    ]
    .iter()
    .any(|s| *s as i32 == state)
}

/// Whether an upload in `state` still counts in the window (released ones do not).
pub(crate) fn counts_in_window(state: i32) -> bool {
    state != MediaState::Rejected as i32 && state != MediaState::Aborted as i32
}

/// How the owner's usage (stored bytes, pending uploads) moves when media of `size` bytes goes
/// from state `from` to state `to`.
pub(crate) fn usage_delta(from: i32, to: i32, size: i64) -> (i64, i64) {
    let stored = i64::from(holds_quota(to)) - i64::from(holds_quota(from));
    let pending =
        i64::from(to == MediaState::Pending as i32) - i64::from(from == MediaState::Pending as i32);
    (stored * size, pending)
}

/// The media catalogue. Every method is atomic.
#[async_trait]
pub trait MediaCatalog: Send + Sync + 'static {
    /// Records a pending upload after checking the owner's quotas against `limits`, in one
    /// transaction (concurrent creates of one user take their turns). An upload of the same
    /// owner and client id answers as it is, unchecked.
    async fn create_upload(
        &self,
        upload: &MediaRecord,
        limits: &UploadLimits,
    ) -> StoreResult<MediaRecord>;
    /// The media, in whatever state.
    async fn get_media(&self, media_id: &str) -> StoreResult<Option<MediaRecord>>;
    /// Moves the media to state `to` with `change` if its state is one of `from`, adjusting the
    /// owner's usage; answers whether it moved, and the row as it now is.
    async fn transition_media(
        &self,
        media_id: &str,
        from: &[MediaState],
        to: MediaState,
        change: &MediaChange,
        now_ms: i64,
    ) -> StoreResult<(bool, MediaRecord)>;
    /// What `user_id` uses, counting the window from `window_start_ms`.
    async fn media_usage(&self, user_id: &str, window_start_ms: i64) -> StoreResult<MediaUsage>;
    /// Up to `limit` pending uploads that expired at or before `now_ms`, oldest first.
    async fn expired_uploads(&self, now_ms: i64, limit: u32) -> StoreResult<Vec<MediaRecord>>;
    /// Up to `limit` media in processing since `before_ms` or earlier, oldest first: what a
    /// node that stopped mid-way left (processing is idempotent, so any node resumes it).
    async fn stalled_processing(&self, before_ms: i64, limit: u32)
    -> StoreResult<Vec<MediaRecord>>;
    /// How many media other than `except_media_id` hold the bytes of `sha256_hex` (any state
    /// that keeps them: processing, ready or quarantined).
    async fn holders_of(&self, sha256_hex: &str, except_media_id: &str) -> StoreResult<u64>;
    /// The verdict kept on the bytes of `sha256_hex`, if any.
    async fn hash_verdict(&self, sha256_hex: &str) -> StoreResult<Option<HashRecord>>;
    /// Keeps `record` as the verdict on its digest, in place of any before.
    async fn set_hash_verdict(&self, record: &HashRecord) -> StoreResult<()>;
    /// Up to `limit` media holding the bytes of `sha256_hex` in one of `states`, oldest first.
    async fn media_of_hash(
        &self,
        sha256_hex: &str,
        states: &[MediaState],
        limit: u32,
    ) -> StoreResult<Vec<MediaRecord>>;
    /// Records a reference of each media by a send allowed in `conversation_id` and not
    /// committed yet (seq 0), if the media is still ready or processing: checked under its
    /// row's lock, so that the collection of unreferenced media cannot delete it meanwhile.
    /// Answers whether every one was.
    async fn hold_references(
        &self,
        media_ids: &[String],
        conversation_id: &str,
        now_ms: i64,
    ) -> StoreResult<bool>;
    /// Records that the committed entry `seq` of `conversation_id` references the media, in
    /// place of the reference held for its send.
    async fn add_references(
        &self,
        media_ids: &[String],
        conversation_id: &str,
        seq: u64,
        now_ms: i64,
    ) -> StoreResult<()>;
    /// Drops the references of the entry `seq` of `conversation_id` (recalled or deleted).
    async fn drop_references(&self, conversation_id: &str, seq: u64) -> StoreResult<()>;
    /// The references of a media: (conversation, seq), seq 0 for one held for a send.
    async fn references(&self, media_id: &str) -> StoreResult<Vec<(String, i64)>>;
    /// Up to `limit` ready media that nothing references, unchanged since `before_ms`, oldest
    /// first.
    async fn unreferenced_media(&self, before_ms: i64, limit: u32)
    -> StoreResult<Vec<MediaRecord>>;
    /// Moves ready media that nothing references to DELETED, releasing its usage, under its
    /// row's lock; answers whether it did (a reference held meanwhile keeps it).
    async fn delete_if_unreferenced(&self, media_id: &str, now_ms: i64) -> StoreResult<bool>;
}

/// Implements [`MediaCatalog`] for `store` with queries that read the same on every database,
/// on the invoking module's `Conn` (see `business_store!` for why a macro), locking the
/// owner's usage row with `lock` where writers run concurrently.
macro_rules! media_catalog {
    (
        store: $store:ident,
        $(lock: $lock:ident,)?
        insert_new: $insert_new:ident $(,)?
    ) => {
        mod media_catalog {
            use async_trait::async_trait;
            use diesel::prelude::*;
            use diesel_async::{AsyncConnection, RunQueryDsl};
            use im_common::insert_new;
            use im_proto::v1::MediaState;

            use super::{$store, Conn};
            use $crate::store::{
                HashRecord, MediaCatalog, MediaChange, MediaRecord, MediaUsage, Missing,
                StoreError, StoreResult, UploadLimits,
                media::{counts_in_window, usage_delta},
                schema::{media, media_hashes, media_refs, media_usage},
            };

            /// Creates the owner's usage row at zero if it is missing. Run before the
            /// transaction that locks it: inside, MySQL's insert that skips an existing row takes
            /// a shared lock, and two writers that both hold one deadlock on the upgrade.
            async fn ensure_usage_row(conn: &mut Conn, user_id: &str) -> StoreResult<()> {
                insert_new!(
                    $insert_new,
                    media_usage::table,
                    (
                        media_usage::user_id.eq(user_id),
                        media_usage::stored_bytes.eq(0_i64),
                        media_usage::pending_uploads.eq(0_i64),
                    )
                )
                .execute(conn)
                .await?;
                Ok(())
            }

            /// The owner's usage row, locked with `lock` until the transaction ends.
            async fn usage_row(conn: &mut Conn, user_id: &str) -> StoreResult<(i64, i64)> {
                Ok(media_usage::table
                    .find(user_id)
                    .select((media_usage::stored_bytes, media_usage::pending_uploads))
                    $(.$lock())?
                    .first(conn)
                    .await?)
            }

            /// Moves `user_id`'s usage as media of `size` bytes goes from state `from` to `to`.
            async fn move_usage(
                conn: &mut Conn,
                user_id: &str,
                from: i32,
                to: i32,
                size: i64,
            ) -> StoreResult<()> {
                let (stored_delta, pending_delta) = usage_delta(from, to, size);
                diesel::update(media_usage::table.find(user_id))
                    .set((
                        media_usage::stored_bytes.eq(media_usage::stored_bytes + stored_delta),
                        media_usage::pending_uploads.eq(media_usage::pending_uploads + pending_delta),
                    ))
                    .execute(conn)
                    .await?;
                Ok(())
            }

            /// Bytes of `user_id`'s uploads created at or after `start_ms` and not released.
            async fn window_bytes(conn: &mut Conn, user_id: &str, start_ms: i64) -> StoreResult<u64> {
                let rows: Vec<(i32, i64)> = media::table
                    .filter(media::owner_user_id.eq(user_id))
                    .filter(media::created_at_ms.ge(start_ms))
                    .select((media::state, media::size_bytes))
                    .load(conn)
                    .await?;
                Ok(rows
                    .into_iter()
                    .filter(|(state, _)| counts_in_window(*state))
                    .map(|(_, size)| u64::try_from(size).unwrap_or(0))
                    .sum())
            }

            async fn find(conn: &mut Conn, media_id: &str) -> StoreResult<Option<MediaRecord>> {
                Ok(media::table
                    .find(media_id)
                    .select(MediaRecord::as_select())
                    .first(conn)
                    .await
                    .optional()?)
            }

            #[async_trait]
            impl MediaCatalog for $store {
                async fn create_upload(
                    &self,
                    upload: &MediaRecord,
                    limits: &UploadLimits,
                ) -> StoreResult<MediaRecord> {
                    let (_turn, mut conn) = self.db.writer().await?;
                    ensure_usage_row(&mut conn, &upload.owner_user_id).await?;
                    conn.transaction(async |conn| {
                        let (stored, pending) = usage_row(conn, &upload.owner_user_id).await?;
                        let again: Option<MediaRecord> = media::table
                            .filter(media::owner_user_id.eq(&upload.owner_user_id))
                            .filter(media::client_upload_id.eq(&upload.client_upload_id))
                            .select(MediaRecord::as_select())
                            .first(conn)
                            .await
                            .optional()?;
                        if let Some(again) = again {
                            return Ok(again);
                        }
                        let size = u64::try_from(upload.size_bytes).unwrap_or(u64::MAX);
                        let refuse = |what, limit| Err(StoreError::QuotaExceeded { what, limit });
                        if pending >= i64::from(limits.pending_uploads) {
                            return refuse("pending uploads", u64::from(limits.pending_uploads));
                        }
                        if u64::try_from(stored).unwrap_or(0).saturating_add(size)
                            > limits.stored_bytes
                        {
                            return refuse("stored bytes", limits.stored_bytes);
                        }
                        let window = window_bytes(conn, &upload.owner_user_id, limits.window_start_ms)
                            .await?;
                        if window.saturating_add(size) > limits.window_bytes {
                            return refuse("uploaded bytes per window", limits.window_bytes);
                        }
                        diesel::insert_into(media::table)
                            .values(upload)
                            .execute(conn)
                            .await?;
                        move_usage(
                            conn,
                            &upload.owner_user_id,
                            MediaState::Unspecified as i32,
                            upload.state,
                            upload.size_bytes,
                        )
                        .await?;
                        Ok(upload.clone())
                    })
                    .await
                }

                async fn get_media(&self, media_id: &str) -> StoreResult<Option<MediaRecord>> {
                    let mut conn = self.db.conn().await?;
                    find(&mut conn, media_id).await
                }

                async fn transition_media(
                    &self,
                    media_id: &str,
                    from: &[MediaState],
                    to: MediaState,
                    change: &MediaChange,
                    now_ms: i64,
                ) -> StoreResult<(bool, MediaRecord)> {
                    let (_turn, mut conn) = self.db.writer().await?;
                    conn.transaction(async |conn| {
                        let owner = find(conn, media_id)
                            .await?
                            .ok_or_else(|| StoreError::NotFound(Missing::Media(media_id.to_owned())))?
                            .owner_user_id;
                        // The owner's row first, then the media's: every writer of one user's
                        // usage locks them in the same order, and the state read under the
                        // lock is the one the update moves from.
                        usage_row(conn, &owner).await?;
                        let current: MediaRecord = media::table
                            .find(media_id)
                            .select(MediaRecord::as_select())
                            $(.$lock())?
                            .first(conn)
                            .await?;
                        let from: Vec<i32> = from.iter().map(|s| *s as i32).collect();
                        let moved = diesel::update(
                            media::table
                                .find(media_id)
                                .filter(media::state.eq_any(&from)),
                        )
                        .set((
                            change,
                            media::state.eq(to as i32),
                            media::updated_at_ms.eq(now_ms),
                        ))
                        .execute(conn)
                        .await?
                            > 0;
                        if moved {
                            move_usage(
                                conn,
                                &current.owner_user_id,
                                current.state,
                                to as i32,
                                current.size_bytes,
                            )
                            .await?;
                        }
                        // A locking read: MySQL's plain reads would answer the transaction's
                        // first snapshot, from before the winner committed.
                        let now: MediaRecord = media::table
                            .find(media_id)
                            .select(MediaRecord::as_select())
                            $(.$lock())?
                            .first(conn)
                            .await?;
                        Ok((moved, now))
                    })
                    .await
                }

                async fn media_usage(
                    &self,
                    user_id: &str,
                    window_start_ms: i64,
                ) -> StoreResult<MediaUsage> {
                    let mut conn = self.db.conn().await?;
                    let row: Option<(i64, i64)> = media_usage::table
                        .find(user_id)
                        .select((media_usage::stored_bytes, media_usage::pending_uploads))
                        .first(&mut conn)
                        .await
                        .optional()?;
                    let (stored, pending) = row.unwrap_or((0, 0));
                    Ok(MediaUsage {
                        stored_bytes: u64::try_from(stored).unwrap_or(0),
                        window_bytes: window_bytes(&mut conn, user_id, window_start_ms).await?,
                        pending_uploads: u32::try_from(pending).unwrap_or(0),
                    })
                }

                async fn expired_uploads(
                    &self,
                    now_ms: i64,
                    limit: u32,
                ) -> StoreResult<Vec<MediaRecord>> {
                    let mut conn = self.db.conn().await?;
                    Ok(media::table
                        .filter(media::state.eq(MediaState::Pending as i32))
                        .filter(media::expires_at_ms.le(now_ms))
                        .order(media::expires_at_ms.asc())
                        .limit(i64::from(limit))
                        .select(MediaRecord::as_select())
                        .load(&mut conn)
                        .await?)
                }

                async fn stalled_processing(
                    &self,
                    before_ms: i64,
                    limit: u32,
                ) -> StoreResult<Vec<MediaRecord>> {
                    let mut conn = self.db.conn().await?;
                    Ok(media::table
                        .filter(media::state.eq(MediaState::Processing as i32))
                        .filter(media::updated_at_ms.le(before_ms))
                        .order(media::updated_at_ms.asc())
                        .limit(i64::from(limit))
                        .select(MediaRecord::as_select())
                        .load(&mut conn)
                        .await?)
                }

                async fn holders_of(
                    &self,
                    sha256_hex: &str,
                    except_media_id: &str,
                ) -> StoreResult<u64> {
                    let mut conn = self.db.conn().await?;
                    let keeping = [
                        MediaState::Processing as i32,
                        MediaState::Ready as i32,
                        MediaState::Quarantined as i32,
                    ];
                    let count: i64 = media::table
                        .filter(media::sha256_hex.eq(sha256_hex))
                        .filter(media::media_id.ne(except_media_id))
                        .filter(media::state.eq_any(keeping))
                        .count()
                        .get_result(&mut conn)
                        .await?;
                    Ok(u64::try_from(count).unwrap_or(0))
                }

                async fn hash_verdict(&self, sha256_hex: &str) -> StoreResult<Option<HashRecord>> {
                    let mut conn = self.db.conn().await?;
                    Ok(media_hashes::table
                        .find(sha256_hex)
                        .select(HashRecord::as_select())
                        .first(&mut conn)
                        .await
                        .optional()?)
                }

                async fn set_hash_verdict(&self, record: &HashRecord) -> StoreResult<()> {
                    // Delete and insert in one transaction: an upsert that reads the same on
                    // every database.
                    let (_turn, mut conn) = self.db.writer().await?;
                    conn.transaction(async |conn| {
                        diesel::delete(media_hashes::table.find(&record.sha256_hex))
                            .execute(conn)
                            .await?;
                        diesel::insert_into(media_hashes::table)
                            .values(record)
                            .execute(conn)
                            .await?;
                        Ok(())
                    })
                    .await
                }

                async fn media_of_hash(
                    &self,
                    sha256_hex: &str,
                    states: &[MediaState],
                    limit: u32,
                ) -> StoreResult<Vec<MediaRecord>> {
                    let mut conn = self.db.conn().await?;
                    let states: Vec<i32> = states.iter().map(|s| *s as i32).collect();
                    Ok(media::table
                        .filter(media::sha256_hex.eq(sha256_hex))
                        .filter(media::state.eq_any(states))
                        .order((media::created_at_ms.asc(), media::media_id.asc()))
                        .limit(i64::from(limit))
                        .select(MediaRecord::as_select())
                        .load(&mut conn)
                        .await?)
                }

                async fn hold_references(
                    &self,
                    media_ids: &[String],
                    conversation_id: &str,
                    now_ms: i64,
                ) -> StoreResult<bool> {
                    let (_turn, mut conn) = self.db.writer().await?;
                    conn.transaction(async |conn| {
                        for media_id in media_ids {
                            let state: Option<i32> = media::table
                                .find(media_id)
                                .select(media::state)
                                $(.$lock())?
                                .first(conn)
                                .await
                                .optional()?;
                            let attachable = [MediaState::Ready as i32, MediaState::Processing as i32];
                            if !state.is_some_and(|s| attachable.contains(&s)) {
                                return Ok(false);
                            }
                            insert_new!(
                                $insert_new,
                                media_refs::table,
                                (
                                    media_refs::media_id.eq(media_id),
                                    media_refs::conversation_id.eq(conversation_id),
                                    media_refs::seq.eq(0_i64),
                                    media_refs::created_at_ms.eq(now_ms),
                                )
                            )
                            .execute(conn)
                            .await?;
                        }
                        Ok(true)
                    })
                    .await
                }

                async fn add_references(
                    &self,
                    media_ids: &[String],
                    conversation_id: &str,
                    seq: u64,
                    now_ms: i64,
                ) -> StoreResult<()> {
                    let seq = i64::try_from(seq).unwrap_or(i64::MAX);
                    let (_turn, mut conn) = self.db.writer().await?;
                    conn.transaction(async |conn| {
                        for media_id in media_ids {
                            insert_new!(
                                $insert_new,
                                media_refs::table,
                                (
                                    media_refs::media_id.eq(media_id),
                                    media_refs::conversation_id.eq(conversation_id),
                                    media_refs::seq.eq(seq),
                                    media_refs::created_at_ms.eq(now_ms),
                                )
                            )
                            .execute(conn)
                            .await?;
                            diesel::delete(
                                media_refs::table
                                    .filter(media_refs::media_id.eq(media_id))
                                    .filter(media_refs::conversation_id.eq(conversation_id))
                                    .filter(media_refs::seq.eq(0_i64)),
                            )
                            .execute(conn)
                            .await?;
                        }
                        Ok(())
                    })
                    .await
                }

                async fn drop_references(&self, conversation_id: &str, seq: u64) -> StoreResult<()> {
                    let seq = i64::try_from(seq).unwrap_or(i64::MAX);
                    let (_turn, mut conn) = self.db.writer().await?;
                    diesel::delete(
                        media_refs::table
                            .filter(media_refs::conversation_id.eq(conversation_id))
                            .filter(media_refs::seq.eq(seq)),
                    )
                    .execute(&mut conn)
                    .await?;
                    Ok(())
                }

                async fn references(&self, media_id: &str) -> StoreResult<Vec<(String, i64)>> {
                    let mut conn = self.db.conn().await?;
                    Ok(media_refs::table
                        .filter(media_refs::media_id.eq(media_id))
                        .order((media_refs::conversation_id.asc(), media_refs::seq.asc()))
                        .select((media_refs::conversation_id, media_refs::seq))
                        .load(&mut conn)
                        .await?)
                }

                async fn unreferenced_media(
                    &self,
                    before_ms: i64,
                    limit: u32,
                ) -> StoreResult<Vec<MediaRecord>> {
                    let mut conn = self.db.conn().await?;
                    let referenced = media_refs::table
                        .filter(media_refs::media_id.eq(media::media_id));
                    Ok(media::table
                        .filter(media::state.eq(MediaState::Ready as i32))
                        .filter(media::updated_at_ms.le(before_ms))
                        .filter(diesel::dsl::not(diesel::dsl::exists(referenced)))
                        .order(media::updated_at_ms.asc())
                        .limit(i64::from(limit))
                        .select(MediaRecord::as_select())
                        .load(&mut conn)
                        .await?)
                }

                async fn delete_if_unreferenced(&self, media_id: &str, now_ms: i64) -> StoreResult<bool> {
                    let (_turn, mut conn) = self.db.writer().await?;
                    conn.transaction(async |conn| {
                        let Some(found) = find(conn, media_id).await? else {
                            return Ok(false);
                        };
                        // The owner's usage row first, then the media's, as every writer does.
                        usage_row(conn, &found.owner_user_id).await?;
                        let current: MediaRecord = media::table
                            .find(media_id)
                            .select(MediaRecord::as_select())
                            $(.$lock())?
                            .first(conn)
                            .await?;
                        let references: i64 = media_refs::table
                            .filter(media_refs::media_id.eq(media_id))
                            .count()
                            .get_result(conn)
                            .await?;
                        if current.state != MediaState::Ready as i32 || references > 0 {
                            return Ok(false);
                        }
                        diesel::update(media::table.find(media_id))
                            .set((
                                media::state.eq(MediaState::Deleted as i32),
                                media::updated_at_ms.eq(now_ms),
                            ))
                            .execute(conn)
                            .await?;
                        move_usage(
                            conn,
                            &current.owner_user_id,
                            current.state,
                            MediaState::Deleted as i32,
                            current.size_bytes,
                        )
                        .await?;
                        Ok(true)
                    })
                    .await
                }
            }
        }
    };
}

pub(crate) use media_catalog;
