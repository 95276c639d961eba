//! Storage of the business data, behind [`BusinessStore`] so that every backend (SQLite in the
//! embedded mode; MySQL/MariaDB and PostgreSQL in the distributed one) plugs in and runs the
//! same suite ([`suite`]).
//!
//! The store keeps data consistent (each method is one transaction: all or nothing) and leaves
//! the rules of who may do what to the service.

mod media;
#[cfg(feature = "mysql")]
pub mod mysql;
#[cfg(feature = "postgres")]
pub mod postgres;
pub(crate) mod schema;
mod sql;
pub mod sqlite;
#[cfg(any(test, feature = "testing"))]
pub mod suite;

use async_trait::async_trait;
use diesel::prelude::*;
use im_common::auth::CutOffs;

pub(crate) use media::media_catalog;
pub use media::{
    HashRecord, HashVerdict, MediaCatalog, MediaChange, MediaRecord, MediaUsage, UploadLimits,
};
pub use sqlite::SqliteBusinessStore;

/// A user, as the app imported it.
#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable, Insertable)]
#[diesel(table_name = schema::users)]
pub struct UserRecord {
    /// The user id.
    pub user_id: String,
    /// Shown name.
    pub display_name: String,
    /// Avatar URL.
    pub avatar_url: String,
    /// App-defined JSON.
    pub extra_json: String,
    /// False once deactivated.
    pub active: bool,
    /// When created.
    pub created_at_ms: i64,
    /// When last changed.
    pub updated_at_ms: i64,
}

/// A group or channel.
#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable, Insertable)]
#[diesel(table_name = schema::groups)]
pub struct GroupRecord {
    /// The group id.
    pub group_id: String,
    /// Shown name.
    pub name: String,
    /// Avatar URL.
    pub avatar_url: String,
    /// The one owner.
    pub owner_user_id: String,
    /// `im.v1.ConversationType`: GROUP or CHANNEL.
    pub kind: i32,
    /// `im.v1.JoinPolicy`.
    pub join_policy: i32,
    /// The most members the group may have.
    pub max_members: i32,
    /// Only owner and admins may post.
    pub mute_all: bool,
    /// App-defined JSON.
    pub extra_json: String,
    /// Members now; maintained by the store.
    pub member_count: i64,
    /// Dismissed groups keep their row; they have no members.
    pub dismissed: bool,
    /// Bumped by every change of the group or its membership; maintained by the store.
    pub version: i64,
    /// When created.
    pub created_at_ms: i64,
    /// `im.v1.HistoryVisibility`: what members added later see.
    pub history_visibility: i32,
}

/// Changes to a group's profile; `None` leaves a field as it is.
#[derive(Debug, Clone, Default, PartialEq, Eq, AsChangeset)]
#[diesel(table_name = schema::groups)]
pub struct GroupChanges {
    /// New name.
    pub name: Option<String>,
    /// New avatar URL.
    pub avatar_url: Option<String>,
    /// New `im.v1.JoinPolicy`.
    pub join_policy: Option<i32>,
    /// Mute everyone but owner and admins.
    pub mute_all: Option<bool>,
    /// New app-defined JSON.
    pub extra_json: Option<String>,
    /// New `im.v1.HistoryVisibility`.
    pub history_visibility: Option<i32>,
}

/// One member of a group.
#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable, Insertable)]
#[diesel(table_name = schema::members)]
pub struct MemberRecord {
    /// The group.
    pub group_id: String,
    /// The member.
    pub user_id: String,
    /// `im.v1.GroupRole`.
    pub role: i32,
    /// When the user joined.
    pub joined_at_ms: i64,
    /// Muted until this time; 0 when not muted.
    pub muted_until_ms: i64,
    /// The first seq of the group's conversation the member may see: 1 for the whole
    /// history; [`JOINING`] until the notice of the add is appended, then its seq.
    pub visible_from_seq: i64,
}

/// [`MemberRecord::visible_from_seq`] of a member added to a group that shows history from
/// the join, until the notice of the add has its seq.
pub const JOINING: i64 = 0;

impl GroupRecord {
    /// The `visible_from_seq` a member added now starts with: 1 where the group shows its whole
    /// history, else [`JOINING`] until the notice of the add has its seq.
    pub fn first_seq_of_added(&self) -> i64 {
        if self.history_visibility == im_proto::v1::HistoryVisibility::Full as i32 {
            1
        } else {
            JOINING
        }
    }
}

/// A system notice of a stored change, kept until a core node has appended it to the group's
/// conversation (`im.notice`): written in the change's own transaction, so a change is never
/// stored without its notice.
#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable, Insertable)]
#[diesel(table_name = schema::notices)]
pub struct NoticeRecord {
    /// The group.
    pub group_id: String,
    /// The group's version after the change: the notice's key.
    pub version: i64,
    /// The encoded `im.v1.SystemNotice`.
    pub body: Vec<u8>,
    /// When the change was stored.
    pub created_at_ms: i64,
}

/// A user invited to a group, who joins it on accepting.
#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable, Insertable)]
#[diesel(table_name = schema::invitations)]
pub struct InvitationRecord {
    /// The group.
    pub group_id: String,
    /// Who is invited.
    pub user_id: String,
    /// Who invited them.
    pub inviter_user_id: String,
    /// When (the first invitation, if they were invited again).
    pub created_at_ms: i64,
}

/// Tokens of a user (on one device, or on every device when `device_id` is empty) issued
/// before `revoked_before_ms` are invalid.
#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable, Insertable)]
#[diesel(table_name = schema::token_revocations)]
pub struct Revocation {
    /// The user.
    pub user_id: String,
    /// The device, or empty for all.
    pub device_id: String,
    /// The cut-off.
    pub revoked_before_ms: i64,
}

/// Why a store operation failed. Nothing was written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The row to change does not exist.
    #[error("{0} not found")]
    NotFound(Missing),
    /// The row to create exists already.
    #[error("{0} already exists")]
    AlreadyExists(String),
    /// The change contradicts the current state (it moved since it was read).
    #[error("conflict: {0}")]
    Conflict(String),
    /// Adding the members would pass the group's limit.
    #[error("group {group_id} would have {would_have} members, more than {max}")]
    GroupFull {
        /// The group.
        group_id: String,
        /// Its size after the change.
        would_have: i64,
        /// Its limit.
        max: i32,
    },
    /// A new upload would pass one of the uploader's media quotas.
    #[error("the {what} quota of {limit} is used up")]
    QuotaExceeded {
        /// Which quota: "stored bytes", "uploaded bytes per window" or "pending uploads".
        what: &'static str,
        /// Its limit.
        limit: u64,
    },
    /// The database failed.
    #[error("storage: {0}")]
    Backend(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl From<diesel::result::Error> for StoreError {
    fn from(error: diesel::result::Error) -> Self {
        Self::Backend(Box::new(error))
    }
}

/// What was not found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Missing {
    /// A user.
    User(String),
    /// A group (or it was dismissed).
    Group(String),
    /// A member of a group.
    Member {
        /// The group.
        group_id: String,
        /// The user who is not a member.
        user_id: String,
    },
    /// Media (or an upload).
    Media(String),
}

impl std::fmt::Display for Missing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::User(user) => write!(f, "user {user}"),
            Self::Group(group) => write!(f, "group {group}"),
            Self::Member { group_id, user_id } => write!(f, "member {user_id} of group {group_id}"),
            Self::Media(media_id) => write!(f, "media {media_id}"),
        }
    }
}

/// A directed relation of one user to another. Each kind is kept in its own table of the same
/// shape (the user, the other user, since when), so one function writes or reads either.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Relation {
    /// The user blocks the other, who cannot send to it (table `blocks`).
    Block,
    /// The other user is a contact of the user (table `contacts`).
    Contact,
}

/// The result of a store operation.
pub type StoreResult<T> = Result<T, StoreError>;

/// The business data. Every method is atomic.
#[async_trait]
pub trait BusinessStore: MediaCatalog + Send + Sync + 'static {
    /// Creates the user, or updates its profile (not `active`, not `created_at_ms`).
    async fn upsert_user(&self, user: &UserRecord) -> StoreResult<UserRecord>;
    /// Creates or updates many users in one transaction (as [`Self::upsert_user`] each).
    async fn upsert_users(&self, users: &[UserRecord]) -> StoreResult<()>;
    /// The first of `user_ids` (in their order) that does not exist (`false`) or is
    /// deactivated (`true`), if any.
    async fn first_unusable(&self, user_ids: &[String]) -> StoreResult<Option<(String, bool)>>;
    /// The user, if it exists.
    async fn get_user(&self, user_id: &str) -> StoreResult<Option<UserRecord>>;
    /// Deactivates a user and revokes every token issued to it until `now_ms`, in one step.
    async fn deactivate_user(&self, user_id: &str, now_ms: i64) -> StoreResult<UserRecord>;

    /// Records a revocation at its cut-off, or just past the one on record if that is not
    /// earlier (each revocation moves it forward); returns the cut-off recorded.
    async fn revoke_tokens(&self, revocation: &Revocation) -> StoreResult<i64>;
    /// The cut-offs in force for `device_id` of `user_id` (0 where none), read before a token
    /// is issued under them.
    async fn cut_offs(&self, user_id: &str, device_id: &str) -> StoreResult<CutOffs>;
    /// Up to `limit` revocations after the key (`after_user_id`, `after_device_id`), in key
    /// order, for verifiers starting up; ("", "") starts from the first.
    async fn revocations(
        &self,
        after_user_id: &str,
        after_device_id: &str,
        limit: u32,
    ) -> StoreResult<Vec<Revocation>>;

    /// Creates a group with its first members (`member_count` and `version` are set here),
    /// and records `notice` (its body; stored at the group's new version).
    async fn create_group(
        &self,
        group: &GroupRecord,
        members: &[MemberRecord],
        notice: &[u8],
    ) -> StoreResult<GroupRecord>;
    /// The group, dismissed or not.
    async fn get_group(&self, group_id: &str) -> StoreResult<Option<GroupRecord>>;
    /// Changes the profile fields that are set; the others stay as they are.
    async fn update_group(
        &self,
        group_id: &str,
        changes: &GroupChanges,
    ) -> StoreResult<GroupRecord>;
    /// Marks the group dismissed and removes every member.
    async fn dismiss_group(&self, group_id: &str) -> StoreResult<GroupRecord>;
    /// Adds members: all of them or, if one is a member already or the group would pass its
    /// limit, none; with `notice` recorded at the group's new version.
    async fn add_members(
        &self,
        group_id: &str,
        members: &[MemberRecord],
        notice: &[u8],
    ) -> StoreResult<GroupRecord>;
    /// Removes members: all of them or, if one is not a member or is the owner, none; with
    /// `notice` recorded at the group's new version.
    async fn remove_members(
        &self,
        group_id: &str,
        user_ids: &[String],
        notice: &[u8],
    ) -> StoreResult<GroupRecord>;
    /// Up to `limit` notices not yet appended, recorded at or before `before_ms`, oldest first.
    async fn pending_notices(&self, before_ms: i64, limit: u32) -> StoreResult<Vec<NoticeRecord>>;
    /// The notice of `group_id` at `version` was appended at `seq`: it is forgotten, and the
    /// members among `joined` still [`JOINING`] see the group from `seq` on. Whether the
    /// notice was still pending.
    async fn notice_appended(
        &self,
        group_id: &str,
        version: i64,
        seq: i64,
        joined: &[String],
    ) -> StoreResult<bool>;
    /// One member.
    async fn get_member(&self, group_id: &str, user_id: &str) -> StoreResult<Option<MemberRecord>>;
    /// Members in user id order, after `after_user_id` (empty: from the start), the
    /// [`JOINING`] ones included.
    async fn list_members(
        &self,
        group_id: &str,
        after_user_id: &str,
        limit: u32,
    ) -> StoreResult<Vec<MemberRecord>>;
    /// The groups `user_id` is a member of, with the membership, in group id order (dismissed
    /// groups have no members).
    async fn groups_of(&self, user_id: &str) -> StoreResult<Vec<(GroupRecord, MemberRecord)>>;
    /// Makes a member an admin or a plain member; the owner's role moves only by a transfer.
    async fn set_member_role(
        &self,
        group_id: &str,
        user_id: &str,
        role: i32,
    ) -> StoreResult<GroupRecord>;
    /// Mutes a member until `until_ms` (0: not muted).
    async fn set_member_mute(
        &self,
        group_id: &str,
        user_id: &str,
        until_ms: i64,
    ) -> StoreResult<GroupRecord>;
    /// Makes `to` (a member) the owner and `from` an admin, in one step, if `from` still owns
    /// the group.
    async fn transfer_ownership(
        &self,
        group_id: &str,
        from: &str,
        to: &str,
    ) -> StoreResult<GroupRecord>;

    /// Adds or lifts a block of `blocked` by `user_id`; whether anything changed.
    async fn set_block(
        &self,
        user_id: &str,
        blocked: &str,
        on: bool,
        now_ms: i64,
    ) -> StoreResult<bool>;
    /// Whether `user_id` blocks `blocked`.
    async fn is_blocked(&self, user_id: &str, blocked: &str) -> StoreResult<bool>;
    /// The users `user_id` blocks, in id order, after `after` (empty: from the start).
    async fn list_blocked(
        &self,
        user_id: &str,
        after: &str,
        limit: u32,
    ) -> StoreResult<Vec<String>>;
    /// Adds or removes `contact` as a contact of `user_id`; whether anything changed.
    async fn set_contact(
        &self,
        user_id: &str,
        contact: &str,
        on: bool,
        now_ms: i64,
    ) -> StoreResult<bool>;
    /// Whether `contact` is a contact of `user_id`.
    async fn is_contact(&self, user_id: &str, contact: &str) -> StoreResult<bool>;

    /// Records the invitations; one already pending for a group and user stays as it was.
    async fn invite(&self, invitations: &[InvitationRecord]) -> StoreResult<()>;
    /// The invitations pending for `user_id`, oldest first, at most `limit`.
    async fn invitations_of(&self, user_id: &str, limit: u32)
    -> StoreResult<Vec<InvitationRecord>>;
    /// The invitation pending for `user_id` to `group_id`.
    async fn get_invitation(
        &self,
        group_id: &str,
        user_id: &str,
    ) -> StoreResult<Option<InvitationRecord>>;
    /// Forgets the invitation of `user_id` to `group_id`; whether there was one.
    async fn delete_invitation(&self, group_id: &str, user_id: &str) -> StoreResult<bool>;
}
