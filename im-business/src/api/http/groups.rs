//! The `groups` handlers: a group's lifecycle and its membership (members, roles, mutes and
//! ownership).

use axum::{
    Json,
    extract::{Path, State},
    http::HeaderMap,
};
use im_common::api::ErrorBody;
use im_proto::v1::{ConversationType, GroupRole, JoinPolicy};

use super::{
    ApiState,
    auth::actor,
    error::{ApiResult, Body, PathArg, QueryArg},
    shapes::{
        CreateGroupBody, GroupJson, GroupKind, MemberPageJson, MuteBody, PageQuery, Role, RoleBody,
        UpdateGroupBody, UserIdBody, UserIdsBody,
    },
};
use crate::{GroupUpdate, NewGroup};

/// Create a group.
#[utoipa::path(post, path = "/v1/groups", request_body = CreateGroupBody, responses((status = 200, body = GroupJson), (status = "4XX", body = ErrorBody)), tag = "groups")]
pub(super) async fn create_group(
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
pub(super) async fn get_group(
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
pub(super) async fn update_group(
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
pub(super) async fn dismiss_group(
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
pub(super) async fn list_members(
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
pub(super) async fn add_members(
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
pub(super) async fn remove_members(
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
pub(super) async fn leave_group(
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
pub(super) async fn set_member_role(
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
pub(super) async fn mute_member(
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
pub(super) async fn transfer_ownership(
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
