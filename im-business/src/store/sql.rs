//! What the SQL stores share: the [`BusinessStore`](super::BusinessStore) methods whose queries
//! read the same on SQLite, PostgreSQL and MySQL, and the connection pool of the database
//! servers.

#[cfg(any(feature = "postgres", feature = "mysql"))]
pub(super) use im_common::server_db::ServerDb;

#[cfg(any(feature = "postgres", feature = "mysql"))]
impl From<im_common::server_db::ServerDbError> for super::StoreError {
    fn from(error: im_common::server_db::ServerDbError) -> Self {
        Self::Backend(Box::new(error))
    }
}

/// Implements [`BusinessStore`](super::BusinessStore) for `store` with the queries that are the
/// same on every database, on the invoking module's `Conn`.
///
/// A macro rather than generic code: diesel checks each query against one connection type
/// (`LoadQuery<'_, Conn, _>`, `ExecuteDsl<Conn>`, `QueryFragment<Pg>`), so a function generic
/// over the connection would need such a bound for every query it runs.
///
/// The invoking module provides what differs per database:
/// - `Conn`, the connection type, and `INSERT_CHUNK`, the rows (or ids) per statement;
/// - `store`, with a field `db` whose `conn()` gives a connection for reading and `writer()` one
///   for a write transaction, with the turn to write where writers take turns;
/// - `upsert_users(conn, users)`: creates the users or updates their profiles (not `active`,
///   not `created_at_ms`);
/// - `insert_members(conn, rows)`: inserts the rows, many per statement where it can.
///
/// and names, in the invocation:
/// - `lock_group: for_update` where writers run concurrently: a group's first read in a
///   transaction (`SELECT ... FOR UPDATE`) locks its row until the transaction ends;
/// - `insert_new`: the form of an insert that skips existing keys (see [`im_common::insert_new!`]).
///
/// The rules starting with `@` are its own: the queries of blocks and contacts, written once
/// for both tables (see `Relation`).
macro_rules! business_store {
    (
        store: $store:ident,
        $(lock_group: $lock:ident,)?
        insert_new: $insert_new:ident $(,)?
    ) => {
        mod shared {
            use async_trait::async_trait;
            use diesel::prelude::*;
            use diesel_async::{AsyncConnection, RunQueryDsl};
            use im_common::{auth::CutOffs, insert_new};
            use im_proto::v1::GroupRole;

            use super::{$store, Conn, INSERT_CHUNK, insert_members, upsert_users};
            use $crate::store::{
                BusinessStore, GroupChanges, GroupRecord, InvitationRecord, JOINING, MemberRecord,
                Missing, NoticeRecord, Relation, Revocation, StoreError, StoreResult, UserRecord,
                schema::{
                    blocks, contacts, groups, invitations, members, notices, token_revocations,
                    users,
                },
            };

            /// The group, unless dismissed; with `lock_group`, its row stays locked until the
            /// transaction ends, so its preconditions hold while it is changed.
            async fn load_group(conn: &mut Conn, group_id: &str) -> StoreResult<GroupRecord> {
                groups::table
                    .find(group_id)
                    .filter(groups::dismissed.eq(false))
                    .select(GroupRecord::as_select())
                    $(.$lock())?
                    .first(conn)
                    .await
                    .optional()?
                    .ok_or_else(|| StoreError::NotFound(Missing::Group(group_id.to_owned())))
            }

            /// Records a revocation at `revoked_before_ms`, or just past the cut-off on record
            /// if that is not earlier: each revocation moves the cut-off forward, so tokens
            /// issued under the one before stop working. Returns the cut-off recorded.
            async fn revoke(conn: &mut Conn, revocation: &Revocation) -> StoreResult<i64> {
                let key = (&revocation.user_id, &revocation.device_id);
                let current: Option<i64> = token_revocations::table
                    .find(key)
                    .select(token_revocations::revoked_before_ms)
                    .first(conn)
                    .await
                    .optional()?;
                let Some(before) = current else {
                    diesel::insert_into(token_revocations::table)
                        .values(revocation)
                        .execute(conn)
                        .await?;
                    return Ok(revocation.revoked_before_ms);
                };
                let cut_off = revocation.revoked_before_ms.max(before + 1);
                diesel::update(token_revocations::table.find(key))
                    .set(token_revocations::revoked_before_ms.eq(cut_off))
                    .execute(conn)
                    .await?;
                Ok(cut_off)
            }

            /// Records a change of the group: its member count moves by `delta`, its version by
            /// one.
            async fn touch_group(
                conn: &mut Conn,
                group_id: &str,
                delta: i64,
            ) -> StoreResult<GroupRecord> {
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

            /// Records the notice of the change that brought `group` to its version.
            async fn record_notice(
                conn: &mut Conn,
                group: &GroupRecord,
                body: &[u8],
            ) -> StoreResult<()> {
                let notice = NoticeRecord {
                    group_id: group.group_id.clone(),
                    version: group.version,
                    body: body.to_vec(),
                    created_at_ms: im_common::now_ms(),
                };
                diesel::insert_into(notices::table)
                    .values(&notice)
                    .execute(conn)
                    .await?;
                Ok(())
            }

            /// Adds (`on`) or lifts the `relation` of `user_id` to `other`, a row in the
            /// relation's table; whether anything changed.
            async fn set_relation(
                store: &$store,
                relation: Relation,
                user_id: &str,
                other: &str,
                on: bool,
                now_ms: i64,
            ) -> StoreResult<bool> {
                let (_turn, mut conn) = store.db.writer().await?;
                conn.transaction(async |conn| {
                    let changed = match relation {
                        Relation::Block => $crate::store::sql::business_store!(
                            @set_row $insert_new, conn, blocks.blocked_user_id,
                            user_id, other, on, now_ms
                        ),
                        Relation::Contact => $crate::store::sql::business_store!(
                            @set_row $insert_new, conn, contacts.contact_user_id,
                            user_id, other, on, now_ms
                        ),
                    };
                    Ok(changed > 0)
                })
                .await
            }

            /// Whether `user_id` has the `relation` to `other`.
            async fn has_relation(
                store: &$store,
                relation: Relation,
                user_id: &str,
                other: &str,
            ) -> StoreResult<bool> {
                let mut conn = store.db.conn().await?;
                let found = match relation {
                    Relation::Block => $crate::store::sql::business_store!(
                        @find_row &mut conn, blocks, user_id, other
                    ),
                    Relation::Contact => $crate::store::sql::business_store!(
                        @find_row &mut conn, contacts, user_id, other
                    ),
                };
                Ok(found.is_some())
            }

            #[async_trait]
            impl BusinessStore for $store {
                async fn upsert_user(&self, user: &UserRecord) -> StoreResult<UserRecord> {
                    let (_turn, mut conn) = self.db.writer().await?;
                    conn.transaction(async |conn| {
                        upsert_users(conn, std::slice::from_ref(user)).await?;
                        let stored = users::table
                            .find(&user.user_id)
                            .select(UserRecord::as_select());
                        Ok(stored.first(conn).await?)
                    })
                    .await
                }

                async fn upsert_users(&self, batch: &[UserRecord]) -> StoreResult<()> {
                    let (_turn, mut conn) = self.db.writer().await?;
                    conn.transaction(async |conn| upsert_users(conn, batch).await)
                        .await
                }

                async fn first_unusable(
                    &self,
                    user_ids: &[String],
                ) -> StoreResult<Option<(String, bool)>> {
                    let mut conn = self.db.conn().await?;
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
                    let mut conn = self.db.conn().await?;
                    let query = users::table.find(user_id).select(UserRecord::as_select());
                    Ok(query.first(&mut conn).await.optional()?)
                }

                async fn deactivate_user(
                    &self,
                    user_id: &str,
                    now_ms: i64,
                ) -> StoreResult<UserRecord> {
                    let (_turn, mut conn) = self.db.writer().await?;
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

                async fn revoke_tokens(&self, revocation: &Revocation) -> StoreResult<i64> {
                    let (_turn, mut conn) = self.db.writer().await?;
                    conn.transaction(async |conn| revoke(conn, revocation).await)
                        .await
                }

                async fn cut_offs(&self, user_id: &str, device_id: &str) -> StoreResult<CutOffs> {
                    let mut conn = self.db.conn().await?;
                    let rows: Vec<(String, i64)> = token_revocations::table
                        .filter(token_revocations::user_id.eq(user_id))
                        .filter(token_revocations::device_id.eq_any(["", device_id]))
                        .select((token_revocations::device_id, token_revocations::revoked_before_ms))
                        .load(&mut conn)
                        .await?;
                    let of = |device: &str| {
                        rows.iter().find(|(d, _)| d == device).map_or(0, |(_, at)| *at)
                    };
                    Ok(CutOffs {
                        user_ms: of(""),
                        device_ms: if device_id.is_empty() { 0 } else { of(device_id) },
                    })
                }

                async fn revocations(
                    &self,
                    after_user_id: &str,
                    after_device_id: &str,
                    limit: u32,
                ) -> StoreResult<Vec<Revocation>> {
                    use token_revocations::{device_id, user_id};
                    let mut conn = self.db.conn().await?;
                    let query = token_revocations::table
                        .filter(
                            user_id.gt(after_user_id).or(user_id
                                .eq(after_user_id)
                                .and(device_id.gt(after_device_id))),
                        )
                        .order((user_id.asc(), device_id.asc()))
                        .limit(i64::from(limit))
                        .select(Revocation::as_select());
                    Ok(query.load(&mut conn).await?)
                }

                async fn create_group(
                    &self,
                    group: &GroupRecord,
                    first_members: &[MemberRecord],
                    notice: &[u8],
                ) -> StoreResult<GroupRecord> {
                    let (_turn, mut conn) = self.db.writer().await?;
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
                        record_notice(conn, &group, notice).await?;
                        Ok(group)
                    })
                    .await
                }

                async fn get_group(&self, group_id: &str) -> StoreResult<Option<GroupRecord>> {
                    let mut conn = self.db.conn().await?;
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
                    let (_turn, mut conn) = self.db.writer().await?;
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
                    let (_turn, mut conn) = self.db.writer().await?;
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
                    notice: &[u8],
                ) -> StoreResult<GroupRecord> {
                    let (_turn, mut conn) = self.db.writer().await?;
                    conn.transaction(async |conn| {
                        let group = load_group(conn, group_id).await?;
                        let ids: Vec<&str> =
                            new_members.iter().map(|m| m.user_id.as_str()).collect();
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
                        let group =
                            touch_group(conn, group_id, new_members.len() as i64).await?;
                        record_notice(conn, &group, notice).await?;
                        Ok(group)
                    })
                    .await
                }

                async fn remove_members(
                    &self,
                    group_id: &str,
                    user_ids: &[String],
                    notice: &[u8],
                ) -> StoreResult<GroupRecord> {
                    let (_turn, mut conn) = self.db.writer().await?;
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
                        let group = touch_group(conn, group_id, -removed).await?;
                        record_notice(conn, &group, notice).await?;
                        Ok(group)
                    })
                    .await
                }

                async fn pending_notices(
                    &self,
                    before_ms: i64,
                    limit: u32,
                ) -> StoreResult<Vec<NoticeRecord>> {
                    let mut conn = self.db.conn().await?;
                    let query = notices::table
                        .filter(notices::created_at_ms.le(before_ms))
                        .order((
                            notices::created_at_ms.asc(),
                            notices::group_id.asc(),
                            notices::version.asc(),
                        ))
                        .limit(i64::from(limit))
                        .select(NoticeRecord::as_select());
                    Ok(query.load(&mut conn).await?)
                }

                async fn notice_appended(
                    &self,
                    group_id: &str,
                    version: i64,
                    seq: i64,
                    joined: &[String],
                ) -> StoreResult<bool> {
                    let (_turn, mut conn) = self.db.writer().await?;
                    conn.transaction(async |conn| {
                        let deleted = diesel::delete(notices::table.find((group_id, version)))
                            .execute(conn)
                            .await?;
                        for chunk in joined.chunks(INSERT_CHUNK) {
                            diesel::update(
                                members::table
                                    .filter(members::group_id.eq(group_id))
                                    .filter(members::user_id.eq_any(chunk))
                                    .filter(members::visible_from_seq.eq(JOINING)),
                            )
                            .set(members::visible_from_seq.eq(seq))
                            .execute(conn)
                            .await?;
                        }
                        Ok(deleted > 0)
                    })
                    .await
                }

                async fn get_member(
                    &self,
                    group_id: &str,
                    user_id: &str,
                ) -> StoreResult<Option<MemberRecord>> {
                    let mut conn = self.db.conn().await?;
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
                    let mut conn = self.db.conn().await?;
                    let query = members::table
                        .filter(members::group_id.eq(group_id))
                        .filter(members::user_id.gt(after_user_id))
                        .order(members::user_id.asc())
                        .limit(i64::from(limit))
                        .select(MemberRecord::as_select());
                    Ok(query.load(&mut conn).await?)
                }

                async fn groups_of(
                    &self,
                    user_id: &str,
                ) -> StoreResult<Vec<(GroupRecord, MemberRecord)>> {
                    let mut conn = self.db.conn().await?;
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
                    let (_turn, mut conn) = self.db.writer().await?;
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
                    let (_turn, mut conn) = self.db.writer().await?;
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
                    let (_turn, mut conn) = self.db.writer().await?;
                    conn.transaction(async |conn| {
                        let group = load_group(conn, group_id).await?;
                        if group.owner_user_id != from || from == to {
                            return Err(StoreError::Conflict(format!(
                                "{from} does not own group {group_id} \
                                 (or already hands it to itself)"
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
                    set_relation(self, Relation::Block, user_id, blocked, on, now_ms).await
                }

                async fn is_blocked(&self, user_id: &str, blocked: &str) -> StoreResult<bool> {
                    has_relation(self, Relation::Block, user_id, blocked).await
                }

                async fn list_blocked(
                    &self,
                    user_id: &str,
                    after: &str,
                    limit: u32,
                ) -> StoreResult<Vec<String>> {
                    let mut conn = self.db.conn().await?;
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
                    set_relation(self, Relation::Contact, user_id, contact, on, now_ms).await
                }

                async fn is_contact(&self, user_id: &str, contact: &str) -> StoreResult<bool> {
                    has_relation(self, Relation::Contact, user_id, contact).await
                }

                async fn invite(&self, invited: &[InvitationRecord]) -> StoreResult<()> {
                    let (_turn, mut conn) = self.db.writer().await?;
                    conn.transaction(async |conn| {
                        // A row each: SQLite takes no batch of inserts that skip existing keys.
                        for invitation in invited {
                            insert_new!($insert_new, invitations::table, invitation)
                                .execute(conn)
                                .await?;
                        }
                        Ok(())
                    })
                    .await
                }

                async fn invitations_of(
                    &self,
                    user_id: &str,
                    limit: u32,
                ) -> StoreResult<Vec<InvitationRecord>> {
                    let mut conn = self.db.conn().await?;
                    let query = invitations::table
                        .filter(invitations::user_id.eq(user_id))
                        .order((invitations::created_at_ms.asc(), invitations::group_id.asc()))
                        .limit(i64::from(limit))
                        .select(InvitationRecord::as_select());
                    Ok(query.load(&mut conn).await?)
                }

                async fn get_invitation(
                    &self,
                    group_id: &str,
                    user_id: &str,
                ) -> StoreResult<Option<InvitationRecord>> {
                    let mut conn = self.db.conn().await?;
                    let query = invitations::table
                        .find((group_id, user_id))
                        .select(InvitationRecord::as_select());
                    Ok(query.first(&mut conn).await.optional()?)
                }

                async fn delete_invitation(
                    &self,
                    group_id: &str,
                    user_id: &str,
                ) -> StoreResult<bool> {
                    let (_turn, mut conn) = self.db.writer().await?;
                    let deleted = diesel::delete(invitations::table.find((group_id, user_id)))
                        .execute(&mut conn)
                        .await?;
                    Ok(deleted > 0)
                }
            }
        }
    };

    // The queries of one relation (see `Relation`) on its table. `blocks` and `contacts` have
    // the same shape (the user, the other user, since when) but diesel types each table and
    // column apart, so the queries are written once here and expanded per table.

    // Inserts (`on`) or deletes the row of `user_id` and `other`; the rows changed.
    (
        @set_row $insert_new:ident, $conn:expr, $table:ident . $other_column:ident,
        $user_id:expr, $other:expr, $on:expr, $now_ms:expr $(,)?
    ) => {
        if $on {
            insert_new!(
                $insert_new,
                $table::table,
                (
                    $table::user_id.eq(&$user_id),
                    $table::$other_column.eq(&$other),
                    $table::created_at_ms.eq($now_ms),
                )
            )
            .execute($conn)
            .await?
        } else {
            diesel::delete($table::table.find((&$user_id, &$other)))
                .execute($conn)
                .await?
        }
    };

    // The row of `user_id` and `other`, if any.
    (@find_row $conn:expr, $table:ident, $user_id:expr, $other:expr $(,)?) => {
        $table::table
            .find(($user_id, $other))
            .select($table::user_id)
            .first::<String>($conn)
            .await
            .optional()?
    };
}
pub(super) use business_store;
