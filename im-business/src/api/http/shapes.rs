//! The JSON requests and answers of the API, mirroring `business.proto`'s messages, with the
//! conversions from the store's records. Their doc comments are the schemas' descriptions in
//! the OpenAPI document.

use im_proto::v1::{ConversationType, GroupRole, JoinPolicy};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::store::{GroupRecord, MemberRecord, UserRecord};

/// A user.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct UserJson {
    pub(super) user_id: String,
    pub(super) display_name: String,
    pub(super) avatar_url: String,
    pub(super) extra_json: String,
    pub(super) active: bool,
    pub(super) created_at_ms: i64,
}

impl From<UserRecord> for UserJson {
    fn from(u: UserRecord) -> Self {
        Self {
            user_id: u.user_id,
            display_name: u.display_name,
            avatar_url: u.avatar_url,
            extra_json: u.extra_json,
            active: u.active,
            created_at_ms: u.created_at_ms,
        }
    }
}

/// Create or update a user.
#[derive(Debug, Deserialize, ToSchema)]
pub struct UpsertUserBody {
    pub(in crate::api) user_id: String,
    #[serde(default)]
    pub(in crate::api) display_name: String,
    #[serde(default)]
    pub(in crate::api) avatar_url: String,
    #[serde(default)]
    pub(in crate::api) extra_json: String,
}

/// Ask for a token.
#[derive(Debug, Deserialize, ToSchema)]
pub struct IssueTokenBody {
    pub(super) device_id: String,
    /// 0 or absent: the configured default.
    #[serde(default)]
    pub(super) ttl_seconds: u64,
}

/// A token and its expiry.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct TokenJson {
    pub(super) token: String,
    pub(super) expires_at_ms: i64,
}

/// Which device to log out (absent: every device).
#[derive(Debug, Deserialize, ToSchema)]
pub struct RevokeBody {
    #[serde(default)]
    pub(super) device_id: String,
}

/// A group's kind.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum GroupKind {
    /// Every member posts.
    Group,
    /// Only owner and admins post.
    Channel,
}

/// Who may join.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Joining {
    /// Any member adds anyone.
    Open,
    /// Admins approve.
    Approval,
    /// Admins add.
    InviteOnly,
}

impl From<Joining> for JoinPolicy {
    fn from(j: Joining) -> Self {
        match j {
            Joining::Open => Self::Open,
            Joining::Approval => Self::Approval,
            Joining::InviteOnly => Self::InviteOnly,
        }
    }
}

fn joining(policy: i32) -> Joining {
    match JoinPolicy::try_from(policy) {
        Ok(JoinPolicy::Open) => Joining::Open,
        Ok(JoinPolicy::Approval) => Joining::Approval,
        _ => Joining::InviteOnly,
    }
}

/// A group.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct GroupJson {
    pub(super) group_id: String,
    pub(super) name: String,
    pub(super) avatar_url: String,
    pub(super) owner_user_id: String,
    pub(super) kind: GroupKind,
    pub(super) join_policy: Joining,
    pub(super) member_count: i64,
    pub(super) max_members: i32,
    pub(super) mute_all: bool,
    pub(super) extra_json: String,
    pub(super) created_at_ms: i64,
}

impl From<GroupRecord> for GroupJson {
    fn from(g: GroupRecord) -> Self {
        let kind = if g.kind == ConversationType::Channel as i32 {
            GroupKind::Channel
        } else {
            GroupKind::Group
        };
        Self {
            group_id: g.group_id,
            name: g.name,
            avatar_url: g.avatar_url,
            owner_user_id: g.owner_user_id,
            kind,
            join_policy: joining(g.join_policy),
            member_count: g.member_count,
            max_members: g.max_members,
            mute_all: g.mute_all,
            extra_json: g.extra_json,
            created_at_ms: g.created_at_ms,
        }
    }
}

/// Create a group.
#[derive(Debug, Deserialize, ToSchema)]
pub struct CreateGroupBody {
    /// Absent: the server assigns one.
    #[serde(default)]
    pub(super) group_id: String,
    pub(super) name: String,
    /// Required when the app acts for itself; a user creates groups it owns.
    #[serde(default)]
    pub(super) owner_user_id: String,
    #[serde(default)]
    pub(super) member_user_ids: Vec<String>,
    pub(super) kind: Option<GroupKind>,
    pub(super) join_policy: Option<Joining>,
    #[serde(default)]
    pub(super) avatar_url: String,
    #[serde(default)]
    pub(super) extra_json: String,
}

/// Change a group; absent fields stay as they are.
#[derive(Debug, Default, Deserialize, ToSchema)]
pub struct UpdateGroupBody {
    pub(super) name: Option<String>,
    pub(super) avatar_url: Option<String>,
    pub(super) join_policy: Option<Joining>,
    pub(super) mute_all: Option<bool>,
    pub(super) extra_json: Option<String>,
}

/// Users to add or remove.
#[derive(Debug, Deserialize, ToSchema)]
pub struct UserIdsBody {
    pub(super) user_ids: Vec<String>,
}

/// A user.
#[derive(Debug, Deserialize, ToSchema)]
pub struct UserIdBody {
    pub(super) user_id: String,
}

/// A member's role.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// The one owner.
    Owner,
    /// Manages members.
    Admin,
    /// A plain member.
    Member,
}

fn role(value: i32) -> Role {
    match GroupRole::try_from(value) {
        Ok(GroupRole::Owner) => Role::Owner,
        Ok(GroupRole::Admin) => Role::Admin,
        _ => Role::Member,
    }
}

/// A new role.
#[derive(Debug, Deserialize, ToSchema)]
pub struct RoleBody {
    pub(super) role: Role,
}

/// Mute until a time (0 lifts the mute).
#[derive(Debug, Deserialize, ToSchema)]
pub struct MuteBody {
    pub(super) until_ms: i64,
}

/// A member.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct MemberJson {
    pub(super) user_id: String,
    pub(super) role: Role,
    pub(super) joined_at_ms: i64,
    pub(super) muted_until_ms: i64,
}

impl From<MemberRecord> for MemberJson {
    fn from(m: MemberRecord) -> Self {
        Self {
            user_id: m.user_id,
            role: role(m.role),
            joined_at_ms: m.joined_at_ms,
            muted_until_ms: m.muted_until_ms,
        }
    }
}

/// A page of members.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct MemberPageJson {
    pub(super) members: Vec<MemberJson>,
    /// Pass as `page_token` for the next page; empty on the last.
    pub(super) next_page_token: String,
}

/// A page of user ids.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct UserIdPageJson {
    pub(super) user_ids: Vec<String>,
    /// Pass as `page_token` for the next page; empty on the last.
    pub(super) next_page_token: String,
}

/// Paging.
#[derive(Debug, Deserialize, IntoParams)]
pub struct PageQuery {
    /// The previous page's next_page_token.
    #[serde(default)]
    pub(super) page_token: String,
    /// 0 or absent: 100.
    #[serde(default)]
    pub(super) limit: u32,
}

/// Users to create or update at once.
#[derive(Debug, Deserialize, ToSchema)]
pub struct ImportUsersBody {
    pub(super) users: Vec<UpsertUserBody>,
}

/// How many users were imported.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ImportedJson {
    pub(super) imported: usize,
}
