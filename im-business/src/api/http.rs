//! The HTTP/JSON API, with its OpenAPI description generated from this code
//! (`GET /openapi.json`).
//!
//! Every `/v1` call carries `authorization: Bearer <app secret>`; `x-im-actor: <user id>`
//! makes the app act on behalf of that user, whose rights then apply. Failures answer with an
//! [`ErrorBody`] and the HTTP status of its code.

use std::sync::{
    Arc,
    atomic::{AtomicBool, Ordering},
};

use axum::{
    Json, Router,
    extract::{
        DefaultBodyLimit, FromRequest, FromRequestParts, Path, Query, Request, State,
        rejection::{JsonRejection, PathRejection, QueryRejection},
    },
    http::{HeaderMap, StatusCode},
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::{get, post, put},
};
use im_common::{
    api::{ACTOR_HEADER, ErrorBody, bearer, http_status, secret_matches},
    auth::TokenVerifier,
};
use im_proto::v1::{ConversationType, ErrorCode, GroupRole, JoinPolicy};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, OpenApi, ToSchema};

use crate::{
    Actor, Business, BusinessError, GroupUpdate, NewGroup, UserImport,
    store::{GroupRecord, MemberRecord, UserRecord},
};

/// What the handlers share.
#[derive(Clone)]
pub struct ApiState {
    business: Arc<Business>,
    secret: Arc<[u8]>,
    ready: Arc<AtomicBool>,
    /// Checks users' own tokens, when users may call the API themselves.
    users: Option<Arc<TokenVerifier>>,
}

impl ApiState {
    /// State for a service checking `secret`; `ready` says whether it takes traffic.
    pub fn new(business: Arc<Business>, secret: &[u8], ready: Arc<AtomicBool>) -> Self {
        Self {
            business,
            secret: secret.into(),
            ready,
            users: None,
        }
    }

    /// Users may also call the API with their own access tokens, acting for themselves (the
    /// client SDK does, for groups and membership); `verifier` checks the tokens.
    pub fn with_user_tokens(mut self, verifier: Arc<TokenVerifier>) -> Self {
        self.users = Some(verifier);
        self
    }
}

/// A failed call.
#[derive(Debug)]
pub struct ApiError(ErrorBody);

impl ApiError {
    fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self(ErrorBody::new(code, message))
    }
}

impl From<BusinessError> for ApiError {
    fn from(error: BusinessError) -> Self {
        Self::new(error.code(), error.to_string())
    }
}

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> Self {
        let code = if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ErrorCode::FrameTooLarge
        } else {
            ErrorCode::InvalidArgument
        };
        Self::new(code, rejection.body_text())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status =
            ErrorCode::try_from(self.0.code).map_or(StatusCode::INTERNAL_SERVER_ERROR, http_status);
        (status, Json(self.0)).into_response()
    }
}

type ApiResult<T> = Result<Json<T>, ApiError>;

/// Path parameters whose rejections are protocol errors (`INVALID_ARGUMENT`).
#[derive(Debug, FromRequestParts)]
#[from_request(via(Path), rejection(ApiError))]
pub struct PathArg<T>(T);

/// Query parameters whose rejections are protocol errors (`INVALID_ARGUMENT`).
#[derive(Debug, FromRequestParts)]
#[from_request(via(Query), rejection(ApiError))]
pub struct QueryArg<T>(T);

impl From<PathRejection> for ApiError {
    fn from(rejection: PathRejection) -> Self {
        Self::new(ErrorCode::InvalidArgument, rejection.body_text())
    }
}

impl From<QueryRejection> for ApiError {
    fn from(rejection: QueryRejection) -> Self {
        Self::new(ErrorCode::InvalidArgument, rejection.body_text())
    }
}

/// The largest request body, in bytes (an import of the largest batch with full profiles fits).
pub const MAX_BODY_BYTES: usize = 8 << 20;

/// A JSON body whose rejections are protocol errors (`INVALID_ARGUMENT`), not plain text.
#[derive(Debug, FromRequest)]
#[from_request(via(Json), rejection(ApiError))]
pub struct Body<T>(T);

fn actor(headers: &HeaderMap) -> Result<Actor, ApiError> {
    match headers.get(ACTOR_HEADER).map(|v| v.to_str()) {
        None => Ok(Actor::App),
        Some(Ok("")) => Ok(Actor::App),
        Some(Ok(user)) => Ok(Actor::User(user.to_owned())),
        Some(Err(_)) => Err(ApiError::new(
            ErrorCode::InvalidArgument,
            "x-im-actor is not text",
        )),
    }
}

async fn authenticate(State(state): State<ApiState>, mut request: Request, next: Next) -> Response {
    let presented = request
        .headers()
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(bearer)
        .map(str::to_owned);
    match presented {
        Some(secret) if secret_matches(secret.as_bytes(), &state.secret) => next.run(request).await,
        // A user's own token: the user acts for itself, and only for itself.
        Some(token) if state.users.is_some() && token.matches('.').count() == 2 => {
            let Some(verifier) = &state.users else {
                return ApiError::new(ErrorCode::Unauthenticated, "wrong app secret")
                    .into_response();
            };
            let user = match verifier.verify_any_device(&token) {
                Ok(verified) => verified.user_id,
                Err(error) => {
                    return ApiError::new(error.code(), error.to_string()).into_response();
                }
            };
            let claimed = request
                .headers()
                .get(ACTOR_HEADER)
                .and_then(|v| v.to_str().ok());
            if claimed.is_some_and(|c| !c.is_empty() && c != user) {
                return ApiError::new(ErrorCode::Forbidden, "a user acts only for itself")
                    .into_response();
            }
            let Ok(user_header) = http::HeaderValue::from_str(&user) else {
                return ApiError::new(ErrorCode::Unauthenticated, "the token's user id")
                    .into_response();
            };
            request.headers_mut().insert(ACTOR_HEADER, user_header);
            next.run(request).await
        }
        Some(_) => ApiError::new(ErrorCode::Unauthenticated, "wrong app secret").into_response(),
        None => ApiError::new(
            ErrorCode::Unauthenticated,
            "authorization: Bearer <app secret> is missing",
        )
        .into_response(),
    }
}

// ---- JSON shapes ---------------------------------------------------------------------------

/// A user.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct UserJson {
    user_id: String,
    display_name: String,
    avatar_url: String,
    extra_json: String,
    active: bool,
    created_at_ms: i64,
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
    user_id: String,
    #[serde(default)]
    display_name: String,
    #[serde(default)]
    avatar_url: String,
    #[serde(default)]
    extra_json: String,
}

/// Ask for a token.
#[derive(Debug, Deserialize, ToSchema)]
pub struct IssueTokenBody {
    device_id: String,
    /// 0 or absent: the configured default.
    #[serde(default)]
    ttl_seconds: u64,
}

/// A token and its expiry.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct TokenJson {
    token: String,
    expires_at_ms: i64,
}

/// Which device to log out (absent: every device).
#[derive(Debug, Deserialize, ToSchema)]
pub struct RevokeBody {
    #[serde(default)]
    device_id: String,
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
    group_id: String,
    name: String,
    avatar_url: String,
    owner_user_id: String,
    kind: GroupKind,
    join_policy: Joining,
    member_count: i64,
    max_members: i32,
    mute_all: bool,
    extra_json: String,
    created_at_ms: i64,
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
    group_id: String,
    name: String,
    /// Required when the app acts for itself; a user creates groups it owns.
    #[serde(default)]
    owner_user_id: String,
    #[serde(default)]
    member_user_ids: Vec<String>,
    kind: Option<GroupKind>,
    join_policy: Option<Joining>,
    #[serde(default)]
    avatar_url: String,
    #[serde(default)]
    extra_json: String,
}

/// Change a group; absent fields stay as they are.
#[derive(Debug, Default, Deserialize, ToSchema)]
pub struct UpdateGroupBody {
    name: Option<String>,
    avatar_url: Option<String>,
    join_policy: Option<Joining>,
    mute_all: Option<bool>,
    extra_json: Option<String>,
}

/// Users to add or remove.
#[derive(Debug, Deserialize, ToSchema)]
pub struct UserIdsBody {
    user_ids: Vec<String>,
}

/// A user.
#[derive(Debug, Deserialize, ToSchema)]
pub struct UserIdBody {
    user_id: String,
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
    role: Role,
}

/// Mute until a time (0 lifts the mute).
#[derive(Debug, Deserialize, ToSchema)]
pub struct MuteBody {
    until_ms: i64,
}

/// A member.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct MemberJson {
    user_id: String,
    role: Role,
    joined_at_ms: i64,
    muted_until_ms: i64,
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
    members: Vec<MemberJson>,
    /// Pass as `page_token` for the next page; empty on the last.
    next_page_token: String,
}

/// A page of user ids.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct UserIdPageJson {
    user_ids: Vec<String>,
    /// Pass as `page_token` for the next page; empty on the last.
    next_page_token: String,
}

/// Paging.
#[derive(Debug, Deserialize, IntoParams)]
pub struct PageQuery {
    /// The previous page's next_page_token.
    #[serde(default)]
    page_token: String,
    /// 0 or absent: 100.
    #[serde(default)]
    limit: u32,
}

// ---- handlers ------------------------------------------------------------------------------

/// Create the user, or update its profile.
#[utoipa::path(post, path = "/v1/users", request_body = UpsertUserBody, responses((status = 200, body = UserJson), (status = "4XX", body = ErrorBody)), tag = "users")]
async fn upsert_user(
    State(s): State<ApiState>,
    headers: HeaderMap,
    Body(b): Body<UpsertUserBody>,
) -> ApiResult<UserJson> {
    let user = s
        .business
        .upsert_user(
            &actor(&headers)?,
            &b.user_id,
            &b.display_name,
            &b.avatar_url,
            &b.extra_json,
        )
        .await?;
    Ok(Json(user.into()))
}

/// Users to create or update at once.
#[derive(Debug, Deserialize, ToSchema)]
pub struct ImportUsersBody {
    users: Vec<UpsertUserBody>,
}

/// How many users were imported.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ImportedJson {
    imported: usize,
}

/// Create or update many users at once.
#[utoipa::path(post, path = "/v1/users/import", request_body = ImportUsersBody, responses((status = 200, body = ImportedJson), (status = "4XX", body = ErrorBody)), tag = "users")]
async fn import_users(
    State(s): State<ApiState>,
    headers: HeaderMap,
    Body(b): Body<ImportUsersBody>,
) -> ApiResult<ImportedJson> {
    let users: Vec<UserImport> = b
        .users
        .into_iter()
        .map(|u| UserImport {
            user_id: u.user_id,
            display_name: u.display_name,
            avatar_url: u.avatar_url,
            extra_json: u.extra_json,
        })
        .collect();
    let imported = s.business.import_users(&actor(&headers)?, &users).await?;
    Ok(Json(ImportedJson { imported }))
}

/// A user.
#[utoipa::path(get, path = "/v1/users/{user_id}", responses((status = 200, body = UserJson), (status = "4XX", body = ErrorBody)), tag = "users")]
async fn get_user(
    State(s): State<ApiState>,
    headers: HeaderMap,
    PathArg(user_id): PathArg<String>,
) -> ApiResult<UserJson> {
    Ok(Json(
        s.business
            .get_user(&actor(&headers)?, &user_id)
            .await?
            .into(),
    ))
}

/// Deactivate a user: its tokens stop working.
#[utoipa::path(post, path = "/v1/users/{user_id}/deactivate", responses((status = 200, body = UserJson), (status = "4XX", body = ErrorBody)), tag = "users")]
async fn deactivate_user(
    State(s): State<ApiState>,
    headers: HeaderMap,
    PathArg(user_id): PathArg<String>,
) -> ApiResult<UserJson> {
    Ok(Json(
        s.business
            .deactivate_user(&actor(&headers)?, &user_id)
            .await?
            .into(),
    ))
}

/// A token for the user on a device.
#[utoipa::path(post, path = "/v1/users/{user_id}/tokens", request_body = IssueTokenBody, responses((status = 200, body = TokenJson), (status = "4XX", body = ErrorBody)), tag = "users")]
async fn issue_token(
    State(s): State<ApiState>,
    headers: HeaderMap,
    PathArg(user_id): PathArg<String>,
    Body(b): Body<IssueTokenBody>,
) -> ApiResult<TokenJson> {
    let ttl_ms = i64::try_from(b.ttl_seconds.saturating_mul(1000)).unwrap_or(i64::MAX);
    let (token, expires_at_ms) = s
        .business
        .issue_token(&actor(&headers)?, &user_id, &b.device_id, ttl_ms)
        .await?;
    Ok(Json(TokenJson {
        token,
        expires_at_ms,
    }))
}

/// Log out a device, or every device.
#[utoipa::path(post, path = "/v1/users/{user_id}/tokens/revoke", request_body = RevokeBody, responses((status = 200), (status = "4XX", body = ErrorBody)), tag = "users")]
async fn revoke_tokens(
    State(s): State<ApiState>,
    headers: HeaderMap,
    PathArg(user_id): PathArg<String>,
    Body(b): Body<RevokeBody>,
) -> ApiResult<()> {
    s.business
        .revoke_tokens(&actor(&headers)?, &user_id, &b.device_id)
        .await?;
    Ok(Json(()))
}

/// Create a group.
#[utoipa::path(post, path = "/v1/groups", request_body = CreateGroupBody, responses((status = 200, body = GroupJson), (status = "4XX", body = ErrorBody)), tag = "groups")]
async fn create_group(
    State(s): State<ApiState>,
    headers: HeaderMap,
    Body(b): Body<CreateGroupBody>,
) -> ApiResult<GroupJson> {
    let new = NewGroup {
        group_id: b.group_id,
        name: b.name,
        owner_user_id: b.owner_user_id,
        member_user_ids: b.member_user_ids,
        kind: match b.kind {
            Some(GroupKind::Channel) => ConversationType::Channel,
            _ => ConversationType::Group,
        },
        join_policy: b.join_policy.map_or(JoinPolicy::Unspecified, Into::into),
        avatar_url: b.avatar_url,
        extra_json: b.extra_json,
    };
    Ok(Json(
        s.business
            .create_group(&actor(&headers)?, new)
            .await?
            .into(),
    ))
}

/// A group.
#[utoipa::path(get, path = "/v1/groups/{group_id}", responses((status = 200, body = GroupJson), (status = "4XX", body = ErrorBody)), tag = "groups")]
async fn get_group(
    State(s): State<ApiState>,
    headers: HeaderMap,
    PathArg(group_id): PathArg<String>,
) -> ApiResult<GroupJson> {
    Ok(Json(
        s.business
            .get_group(&actor(&headers)?, &group_id)
            .await?
            .into(),
    ))
}

/// Change a group's profile or mute everyone.
#[utoipa::path(patch, path = "/v1/groups/{group_id}", request_body = UpdateGroupBody, responses((status = 200, body = GroupJson), (status = "4XX", body = ErrorBody)), tag = "groups")]
async fn update_group(
    State(s): State<ApiState>,
    headers: HeaderMap,
    PathArg(group_id): PathArg<String>,
    Body(b): Body<UpdateGroupBody>,
) -> ApiResult<GroupJson> {
    let update = GroupUpdate {
        name: b.name,
        avatar_url: b.avatar_url,
        join_policy: b.join_policy.map(Into::into),
        mute_all: b.mute_all,
        extra_json: b.extra_json,
    };
    Ok(Json(
        s.business
            .update_group(&actor(&headers)?, &group_id, update)
            .await?
            .into(),
    ))
}

/// Dismiss a group.
#[utoipa::path(delete, path = "/v1/groups/{group_id}", responses((status = 200), (status = "4XX", body = ErrorBody)), tag = "groups")]
async fn dismiss_group(
    State(s): State<ApiState>,
    headers: HeaderMap,
    PathArg(group_id): PathArg<String>,
) -> ApiResult<()> {
    s.business
        .dismiss_group(&actor(&headers)?, &group_id)
        .await?;
    Ok(Json(()))
}

/// Members, a page in user id order.
#[utoipa::path(get, path = "/v1/groups/{group_id}/members", params(PageQuery), responses((status = 200, body = MemberPageJson), (status = "4XX", body = ErrorBody)), tag = "groups")]
async fn list_members(
    State(s): State<ApiState>,
    headers: HeaderMap,
    PathArg(group_id): PathArg<String>,
    QueryArg(q): QueryArg<PageQuery>,
) -> ApiResult<MemberPageJson> {
    let page = s
        .business
        .list_members(&actor(&headers)?, &group_id, &q.page_token, q.limit)
        .await?;
    let members = page.items.into_iter().map(Into::into).collect();
    Ok(Json(MemberPageJson {
        members,
        next_page_token: page.next_page_token,
    }))
}

/// Add members.
#[utoipa::path(post, path = "/v1/groups/{group_id}/members", request_body = UserIdsBody, responses((status = 200, body = GroupJson), (status = "4XX", body = ErrorBody)), tag = "groups")]
async fn add_members(
    State(s): State<ApiState>,
    headers: HeaderMap,
    PathArg(group_id): PathArg<String>,
    Body(b): Body<UserIdsBody>,
) -> ApiResult<GroupJson> {
    Ok(Json(
        s.business
            .add_members(&actor(&headers)?, &group_id, &b.user_ids)
            .await?
            .into(),
    ))
}

/// Remove members.
#[utoipa::path(post, path = "/v1/groups/{group_id}/members/remove", request_body = UserIdsBody, responses((status = 200, body = GroupJson), (status = "4XX", body = ErrorBody)), tag = "groups")]
async fn remove_members(
    State(s): State<ApiState>,
    headers: HeaderMap,
    PathArg(group_id): PathArg<String>,
    Body(b): Body<UserIdsBody>,
) -> ApiResult<GroupJson> {
    Ok(Json(
        s.business
            .remove_members(&actor(&headers)?, &group_id, &b.user_ids)
            .await?
            .into(),
    ))
}

/// A member leaves.
#[utoipa::path(post, path = "/v1/groups/{group_id}/leave", request_body = UserIdBody, responses((status = 200), (status = "4XX", body = ErrorBody)), tag = "groups")]
async fn leave_group(
    State(s): State<ApiState>,
    headers: HeaderMap,
    PathArg(group_id): PathArg<String>,
    Body(b): Body<UserIdBody>,
) -> ApiResult<()> {
    s.business
        .leave_group(&actor(&headers)?, &group_id, &b.user_id)
        .await?;
    Ok(Json(()))
}

/// Make a member an admin, or a plain member again.
#[utoipa::path(put, path = "/v1/groups/{group_id}/members/{user_id}/role", request_body = RoleBody, responses((status = 200), (status = "4XX", body = ErrorBody)), tag = "groups")]
async fn set_member_role(
    State(s): State<ApiState>,
    headers: HeaderMap,
    Path((group_id, user_id)): Path<(String, String)>,
    Body(b): Body<RoleBody>,
) -> ApiResult<()> {
    let role = match b.role {
        Role::Owner => GroupRole::Owner,
        Role::Admin => GroupRole::Admin,
        Role::Member => GroupRole::Member,
    };
    s.business
        .set_member_role(&actor(&headers)?, &group_id, &user_id, role)
        .await?;
    Ok(Json(()))
}

/// Mute a member until a time (0 lifts the mute).
#[utoipa::path(put, path = "/v1/groups/{group_id}/members/{user_id}/mute", request_body = MuteBody, responses((status = 200), (status = "4XX", body = ErrorBody)), tag = "groups")]
async fn mute_member(
    State(s): State<ApiState>,
    headers: HeaderMap,
    Path((group_id, user_id)): Path<(String, String)>,
    Body(b): Body<MuteBody>,
) -> ApiResult<()> {
    s.business
        .mute_member(&actor(&headers)?, &group_id, &user_id, b.until_ms)
        .await?;
    Ok(Json(()))
}

/// Hand the group to another member.
#[utoipa::path(post, path = "/v1/groups/{group_id}/owner", request_body = UserIdBody, responses((status = 200), (status = "4XX", body = ErrorBody)), tag = "groups")]
async fn transfer_ownership(
    State(s): State<ApiState>,
    headers: HeaderMap,
    PathArg(group_id): PathArg<String>,
    Body(b): Body<UserIdBody>,
) -> ApiResult<()> {
    s.business
        .transfer_ownership(&actor(&headers)?, &group_id, &b.user_id)
        .await?;
    Ok(Json(()))
}

/// Block a user.
#[utoipa::path(put, path = "/v1/users/{user_id}/blocks/{blocked}", responses((status = 200), (status = "4XX", body = ErrorBody)), tag = "moderation")]
async fn block_user(
    State(s): State<ApiState>,
    headers: HeaderMap,
    Path((user_id, blocked)): Path<(String, String)>,
) -> ApiResult<()> {
    s.business
        .set_block(&actor(&headers)?, &user_id, &blocked, true)
        .await?;
    Ok(Json(()))
}

/// Lift a block.
#[utoipa::path(delete, path = "/v1/users/{user_id}/blocks/{blocked}", responses((status = 200), (status = "4XX", body = ErrorBody)), tag = "moderation")]
async fn unblock_user(
    State(s): State<ApiState>,
    headers: HeaderMap,
    Path((user_id, blocked)): Path<(String, String)>,
) -> ApiResult<()> {
    s.business
        .set_block(&actor(&headers)?, &user_id, &blocked, false)
        .await?;
    Ok(Json(()))
}

/// The users a user blocks, a page in id order.
#[utoipa::path(get, path = "/v1/users/{user_id}/blocks", params(PageQuery), responses((status = 200, body = UserIdPageJson), (status = "4XX", body = ErrorBody)), tag = "moderation")]
async fn list_blocked(
    State(s): State<ApiState>,
    headers: HeaderMap,
    PathArg(user_id): PathArg<String>,
    QueryArg(q): QueryArg<PageQuery>,
) -> ApiResult<UserIdPageJson> {
    let page = s
        .business
        .list_blocked(&actor(&headers)?, &user_id, &q.page_token, q.limit)
        .await?;
    Ok(Json(UserIdPageJson {
        user_ids: page.items,
        next_page_token: page.next_page_token,
    }))
}

/// Add a contact.
#[utoipa::path(put, path = "/v1/users/{user_id}/contacts/{contact}", responses((status = 200), (status = "4XX", body = ErrorBody)), tag = "moderation")]
async fn add_contact(
    State(s): State<ApiState>,
    headers: HeaderMap,
    Path((user_id, contact)): Path<(String, String)>,
) -> ApiResult<()> {
    s.business
        .set_contact(&actor(&headers)?, &user_id, &contact, true)
        .await?;
    Ok(Json(()))
}

/// Remove a contact.
#[utoipa::path(delete, path = "/v1/users/{user_id}/contacts/{contact}", responses((status = 200), (status = "4XX", body = ErrorBody)), tag = "moderation")]
async fn remove_contact(
    State(s): State<ApiState>,
    headers: HeaderMap,
    Path((user_id, contact)): Path<(String, String)>,
) -> ApiResult<()> {
    s.business
        .set_contact(&actor(&headers)?, &user_id, &contact, false)
        .await?;
    Ok(Json(()))
}

/// Alive.
async fn healthz() -> &'static str {
    "ok"
}

/// Ready to take traffic.
async fn readyz(State(s): State<ApiState>) -> Response {
    if s.ready.load(Ordering::SeqCst) {
        "ready".into_response()
    } else {
        ApiError::new(ErrorCode::Unavailable, "starting or draining").into_response()
    }
}

/// The process's metrics, in the Prometheus text format.
async fn metrics() -> String {
    im_common::metrics::render()
}

async fn openapi() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}

/// The OpenAPI description of this API.
#[derive(OpenApi)]
#[openapi(
    info(title = "im business API", description = "Users and tokens, groups, roles, mutes, blocks and contacts, for app backends. Authenticate with `authorization: Bearer <app secret>`; act for a user with `x-im-actor`."),
    paths(
        upsert_user, import_users, get_user, deactivate_user, issue_token, revoke_tokens,
        create_group, get_group, update_group, dismiss_group, list_members, add_members,
        remove_members, leave_group, set_member_role, mute_member, transfer_ownership,
        block_user, unblock_user, list_blocked, add_contact, remove_contact,
    ),
    components(schemas(ErrorBody)),
    modifiers(&SecurityAddon),
)]
pub struct ApiDoc;

struct SecurityAddon;

impl utoipa::Modify for SecurityAddon {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "app_secret",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
        openapi.security = Some(vec![utoipa::openapi::security::SecurityRequirement::new(
            "app_secret",
            Vec::<String>::new(),
        )]);
    }
}

/// The router: `/v1/...` behind the app secret; `/healthz`, `/readyz`, `/metrics` and
/// `/openapi.json` open.
pub fn router(state: ApiState) -> Router {
    let v1 = Router::new()
        .route("/v1/users", post(upsert_user))
        .route("/v1/users/import", post(import_users))
        .route("/v1/users/{user_id}", get(get_user))
        .route("/v1/users/{user_id}/deactivate", post(deactivate_user))
        .route("/v1/users/{user_id}/tokens", post(issue_token))
        .route("/v1/users/{user_id}/tokens/revoke", post(revoke_tokens))
        .route("/v1/users/{user_id}/blocks", get(list_blocked))
        .route(
            "/v1/users/{user_id}/blocks/{blocked}",
            put(block_user).delete(unblock_user),
        )
        .route(
            "/v1/users/{user_id}/contacts/{contact}",
            put(add_contact).delete(remove_contact),
        )
        .route("/v1/groups", post(create_group))
        .route(
            "/v1/groups/{group_id}",
            get(get_group).patch(update_group).delete(dismiss_group),
        )
        .route(
            "/v1/groups/{group_id}/members",
            get(list_members).post(add_members),
        )
        .route("/v1/groups/{group_id}/members/remove", post(remove_members))
        .route(
            "/v1/groups/{group_id}/members/{user_id}/role",
            put(set_member_role),
        )
        .route(
            "/v1/groups/{group_id}/members/{user_id}/mute",
            put(mute_member),
        )
        .route("/v1/groups/{group_id}/leave", post(leave_group))
        .route("/v1/groups/{group_id}/owner", post(transfer_ownership))
        .route_layer(middleware::from_fn_with_state(state.clone(), authenticate));
    Router::new()
        .merge(v1)
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/openapi.json", get(openapi))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state)
}
