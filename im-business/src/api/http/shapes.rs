//! The JSON requests and answers of the API, mirroring `business.proto`'s messages, with the
//! conversions from the store's records. Their doc comments are the schemas' descriptions in
//! the OpenAPI document.

use im_proto::{
    ids::MAX_ID_BYTES,
    v1::{ConversationType, GroupRole, HistoryVisibility, JoinPolicy},
};
use serde::{Deserialize, Deserializer, Serialize, de::Error as _};
use utoipa::{
    IntoParams, PartialSchema, ToSchema,
    openapi::{ArrayBuilder, ObjectBuilder, RefOr, Schema, Type},
};

use crate::store::{GroupRecord, InvitationRecord, MemberRecord, UserRecord};

/// The alphabet of user, device and group ids (docs/PROTOCOL.md, "Identifiers"; checked by
/// `im_proto::ids`), 1 to [`MAX_ID_BYTES`] of them.
pub const ID_PATTERN: &str = "^[A-Za-z0-9_.@-]+$";

/// The same alphabet where an empty string means "none" (the server picks, or every one).
pub const ID_OR_EMPTY_PATTERN: &str = "^[A-Za-z0-9_.@-]*$";

/// The schema of a user, device or group id, so that the document states the rules the
/// service checks.
pub struct Id;

impl PartialSchema for Id {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .pattern(Some(ID_PATTERN))
            .min_length(Some(1))
            .max_length(Some(MAX_ID_BYTES))
            .into()
    }
}

impl ToSchema for Id {}

/// An id, or empty for none.
pub struct IdOrEmpty;

impl PartialSchema for IdOrEmpty {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .pattern(Some(ID_OR_EMPTY_PATTERN))
            .max_length(Some(MAX_ID_BYTES))
            .into()
    }
}

impl ToSchema for IdOrEmpty {}

/// A JSON integer, also when written with a zero fraction (`236.0`): JSON Schema's `integer`
/// counts it as one, so the document promises it.
pub(super) fn integer<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: TryFrom<i128>,
{
    let number = serde_json::Number::deserialize(deserializer)?;
    let whole = if let Some(n) = number.as_i64() {
        Some(i128::from(n))
    } else if let Some(n) = number.as_u64() {
        Some(i128::from(n))
    } else {
        // Beyond 2^63 a float is not exact anyway: such numbers are refused as out of range.
        number
            .as_f64()
            .filter(|f| f.fract() == 0.0 && f.abs() < 9.2e18)
            .map(|f| f as i128)
    };
    whole
        .and_then(|n| T::try_from(n).ok())
        .ok_or_else(|| D::Error::custom(format!("{number} is not an integer in range")))
}

/// Ids, each at most once (a repeated one is `INVALID_ARGUMENT`).
fn distinct_ids() -> ArrayBuilder {
    ArrayBuilder::new().items(Id::schema()).unique_items(true)
}

/// Distinct ids, at least one (an empty list is `INVALID_ARGUMENT`).
fn some_distinct_ids() -> ArrayBuilder {
    distinct_ids().min_items(Some(1))
}

/// `/v1/users/{user_id}/...`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct UserPath {
    /// The user.
    #[param(value_type = Id, inline)]
    pub(super) user_id: String,
}

/// `/v1/groups/{group_id}/...`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct GroupPath {
    /// The group.
    #[param(value_type = Id, inline)]
    pub(super) group_id: String,
}

/// `/v1/groups/{group_id}/members/{user_id}/...`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct MemberPath {
    /// The group.
    #[param(value_type = Id, inline)]
    pub(super) group_id: String,
    /// The member.
    #[param(value_type = Id, inline)]
    pub(super) user_id: String,
}

/// `/v1/users/{user_id}/blocks/{blocked}`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct BlockPath {
    /// The user who blocks.
    #[param(value_type = Id, inline)]
    pub(super) user_id: String,
    /// The user blocked (another user).
    #[param(value_type = Id, inline)]
    pub(super) blocked: String,
}

/// `/v1/users/{user_id}/contacts/{contact}`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct ContactPath {
    /// The user whose contact it is.
    #[param(value_type = Id, inline)]
    pub(super) user_id: String,
    /// The contact (another user).
    #[param(value_type = Id, inline)]
    pub(super) contact: String,
}

/// The answer of an operation that answers `Ok` in `business.proto`: an empty object.
#[derive(Debug, Default, Serialize, Deserialize, ToSchema)]
pub struct OkJson {}

/// A user.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct UserJson {
    #[schema(value_type = Id, inline)]
    pub(super) user_id: String,
    pub(super) display_name: String,
    pub(super) avatar_url: String,
    #[schema(content_media_type = "application/json")]
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
    #[schema(value_type = Id, inline)]
    pub(in crate::api) user_id: String,
    #[serde(default)]
    pub(in crate::api) display_name: String,
    #[serde(default)]
    pub(in crate::api) avatar_url: String,
    #[serde(default)]
    #[schema(content_media_type = "application/json")]
    pub(in crate::api) extra_json: String,
}

/// Ask for a token.
#[derive(Debug, Deserialize, ToSchema)]
pub struct IssueTokenBody {
    #[schema(value_type = Id, inline)]
    pub(super) device_id: String,
    /// 0 or absent: the configured default.
    #[serde(default, deserialize_with = "integer")]
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
    #[schema(value_type = IdOrEmpty, inline)]
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

/// What members added after the group was created see of its earlier entries.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum History {
    /// From the notice of their add on.
    FromJoin,
    /// Everything, from seq 1.
    Full,
}

impl From<History> for HistoryVisibility {
    fn from(h: History) -> Self {
        match h {
            History::FromJoin => Self::FromJoin,
            History::Full => Self::Full,
        }
    }
}

fn history(visibility: i32) -> History {
    match HistoryVisibility::try_from(visibility) {
        Ok(HistoryVisibility::Full) => History::Full,
        _ => History::FromJoin,
    }
}

/// A group.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct GroupJson {
    #[schema(value_type = Id, inline)]
    pub(super) group_id: String,
    pub(super) name: String,
    pub(super) avatar_url: String,
    #[schema(value_type = Id, inline)]
    pub(super) owner_user_id: String,
    pub(super) kind: GroupKind,
    pub(super) join_policy: Joining,
    pub(super) member_count: i64,
    pub(super) max_members: i32,
    pub(super) mute_all: bool,
    #[schema(content_media_type = "application/json")]
    pub(super) extra_json: String,
    pub(super) created_at_ms: i64,
    pub(super) history_visibility: History,
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
            history_visibility: history(g.history_visibility),
        }
    }
}

/// Create a group. `group_id` absent or empty: the server assigns one. `owner_user_id` is
/// required when the app acts for itself (a user creates groups it owns). `member_user_ids`:
/// the other members, each once, not the owner.
// (Field doc comments would wrap the ids' schemas in a `oneOf`: the text is here instead.)
#[derive(Debug, Deserialize, ToSchema)]
pub struct CreateGroupBody {
    #[serde(default)]
    #[schema(value_type = IdOrEmpty, inline)]
    pub(super) group_id: String,
    /// Not blank.
    #[schema(pattern = "\\S")]
    pub(super) name: String,
    #[serde(default)]
    #[schema(value_type = IdOrEmpty, inline)]
    pub(super) owner_user_id: String,
    #[serde(default)]
    #[schema(schema_with = distinct_ids)]
    pub(super) member_user_ids: Vec<String>,
    pub(super) kind: Option<GroupKind>,
    pub(super) join_policy: Option<Joining>,
    #[serde(default)]
    pub(super) avatar_url: String,
    #[serde(default)]
    #[schema(content_media_type = "application/json")]
    pub(super) extra_json: String,
    /// Absent: `from_join`.
    pub(super) history_visibility: Option<History>,
}

/// Change a group; absent fields stay as they are.
#[derive(Debug, Default, Deserialize, ToSchema)]
pub struct UpdateGroupBody {
    #[schema(pattern = "\\S")]
    pub(super) name: Option<String>,
    pub(super) avatar_url: Option<String>,
    pub(super) join_policy: Option<Joining>,
    pub(super) mute_all: Option<bool>,
    #[schema(content_media_type = "application/json")]
    pub(super) extra_json: Option<String>,
    /// Applies to members added from then on.
    pub(super) history_visibility: Option<History>,
}

/// Users to add or remove: at least one, each once.
#[derive(Debug, Deserialize, ToSchema)]
pub struct UserIdsBody {
    #[schema(schema_with = some_distinct_ids)]
    pub(super) user_ids: Vec<String>,
}

/// A user.
#[derive(Debug, Deserialize, ToSchema)]
pub struct UserIdBody {
    #[schema(value_type = Id, inline)]
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

/// The roles a member can be given (the owner's moves only with a transfer).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum NewRole {
    /// Manages members.
    Admin,
    /// A plain member.
    Member,
}

/// A new role.
#[derive(Debug, Deserialize, ToSchema)]
pub struct RoleBody {
    pub(super) role: NewRole,
}

/// Mute until a time (0 lifts the mute).
#[derive(Debug, Deserialize, ToSchema)]
pub struct MuteBody {
    #[schema(minimum = 0)]
    #[serde(deserialize_with = "integer")]
    pub(super) until_ms: i64,
}

/// A member.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct MemberJson {
    #[schema(value_type = Id, inline)]
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

/// What adding members did.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct AddedMembersJson {
    /// Members now.
    #[schema(value_type = Vec<Id>, inline)]
    pub(super) added_user_ids: Vec<String>,
    /// Invited: they join once they accept.
    #[schema(value_type = Vec<Id>, inline)]
    pub(super) invited_user_ids: Vec<String>,
}

/// An invitation of a user to a group, waiting for the user's answer.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct InvitationJson {
    #[schema(value_type = Id, inline)]
    pub(super) group_id: String,
    #[schema(value_type = Id, inline)]
    pub(super) user_id: String,
    #[schema(value_type = Id, inline)]
    pub(super) inviter_user_id: String,
    pub(super) created_at_ms: i64,
}

impl From<InvitationRecord> for InvitationJson {
    fn from(i: InvitationRecord) -> Self {
        Self {
            group_id: i.group_id,
            user_id: i.user_id,
            inviter_user_id: i.inviter_user_id,
            created_at_ms: i.created_at_ms,
        }
    }
}

/// A user's pending invitations, oldest first.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct InvitationListJson {
    pub(super) invitations: Vec<InvitationJson>,
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
    #[schema(value_type = Vec<Id>, inline)]
    pub(super) user_ids: Vec<String>,
    /// Pass as `page_token` for the next page; empty on the last.
    pub(super) next_page_token: String,
}

/// Paging.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
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
    /// At least one, each user once.
    #[schema(min_items = 1)]
    pub(super) users: Vec<UpsertUserBody>,
}

/// How many users were imported.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ImportedJson {
    pub(super) imported: usize,
}
