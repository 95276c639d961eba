//! The `groups` handlers: a group's lifecycle and its membership (members, invitations, roles,
//! mutes and ownership).

use axum::{Json, extract::State, http::HeaderMap};
use im_proto::v1::{ConversationType, GroupRole, HistoryVisibility, JoinPolicy};

use super::{
    ApiState,
    auth::actor,
    error::{ApiResult, Body, PathArg, QueryArg},
    shapes::{
        AddedMembersJson, CreateGroupBody, GroupJson, GroupKind, GroupPath, InvitationListJson,
        MemberPageJson, MemberPath, MuteBody, NewRole, OkJson, PageQuery, RoleBody,
        UpdateGroupBody, UserIdBody, UserIdsBody, UserPath,
    },
};
use crate::{GroupUpdate, NewGroup};

/// Create a group.
#[utoipa::path(post, path = "/v1/groups", request_body = CreateGroupBody, responses((status = 200, body = GroupJson)), tag = "groups")]
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
        history_visibility: b
            .history_visibility
            .map_or(HistoryVisibility::Unspecified, Into::into),
    };
    Ok(Json(
        s.business
            .create_group(&actor(&headers)?, new)
            .await?
            .into(),
    ))
}

/// A group.
#[utoipa::path(get, path = "/v1/groups/{group_id}", params(GroupPath), responses((status = 200, body = GroupJson)), tag = "groups")]
pub(super) async fn get_group(
    State(s): State<ApiState>,
    headers: HeaderMap,
    PathArg(GroupPath { group_id }): PathArg<GroupPath>,
) -> ApiResult<GroupJson> {
    Ok(Json(
        s.business
            .get_group(&actor(&headers)?, &group_id)
            .await?
            .into(),
    ))
}

/// Change a group's profile or mute everyone.
#[utoipa::path(patch, path = "/v1/groups/{group_id}", params(GroupPath), request_body = UpdateGroupBody, responses((status = 200, body = GroupJson)), tag = "groups")]
pub(super) async fn update_group(
    State(s): State<ApiState>,
    headers: HeaderMap,
    PathArg(GroupPath { group_id }): PathArg<GroupPath>,
    Body(b): Body<UpdateGroupBody>,
) -> ApiResult<GroupJson> {
    let update = GroupUpdate {
        name: b.name,
        avatar_url: b.avatar_url,
        join_policy: b.join_policy.map(Into::into),
        mute_all: b.mute_all,
        extra_json: b.extra_json,
        history_visibility: b.history_visibility.map(Into::into),
    };
    Ok(Json(
        s.business
            .update_group(&actor(&headers)?, &group_id, update)
            .await?
            .into(),
    ))
}

/// Dismiss a group.
#[utoipa::path(delete, path = "/v1/groups/{group_id}", params(GroupPath), responses((status = 200, body = OkJson)), tag = "groups")]
pub(super) async fn dismiss_group(
    State(s): State<ApiState>,
    headers: HeaderMap,
    PathArg(GroupPath { group_id }): PathArg<GroupPath>,
) -> ApiResult<OkJson> {
    s.business
        .dismiss_group(&actor(&headers)?, &group_id)
        .await?;
    Ok(Json(OkJson {}))
}

/// Members, a page in user id order.
#[utoipa::path(get, path = "/v1/groups/{group_id}/members", params(GroupPath, PageQuery), responses((status = 200, body = MemberPageJson)), tag = "groups")]
pub(super) async fn list_members(
    State(s): State<ApiState>,
    headers: HeaderMap,
    PathArg(GroupPath { group_id }): PathArg<GroupPath>,
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

/// Add members: those the actor may add without asking join, the others are invited.
#[utoipa::path(post, path = "/v1/groups/{group_id}/members", params(GroupPath), request_body = UserIdsBody, responses((status = 200, body = AddedMembersJson)), tag = "groups")]
pub(super) async fn add_members(
    State(s): State<ApiState>,
    headers: HeaderMap,
    PathArg(GroupPath { group_id }): PathArg<GroupPath>,
    Body(b): Body<UserIdsBody>,
) -> ApiResult<AddedMembersJson> {
    let outcome = s
        .business
        .add_members(&actor(&headers)?, &group_id, &b.user_ids)
        .await?;
    Ok(Json(AddedMembersJson {
        added_user_ids: outcome.added,
        invited_user_ids: outcome.invited,
    }))
}

/// A user's pending invitations to groups, oldest first (the user, or the app).
#[utoipa::path(get, path = "/v1/users/{user_id}/invitations", params(UserPath), responses((status = 200, body = InvitationListJson)), tag = "groups")]
pub(super) async fn list_invitations(
    State(s): State<ApiState>,
    headers: HeaderMap,
    PathArg(UserPath { user_id }): PathArg<UserPath>,
) -> ApiResult<InvitationListJson> {
    let invitations = s
        .business
        .list_invitations(&actor(&headers)?, &user_id)
        .await?;
    Ok(Json(InvitationListJson {
        invitations: invitations.into_iter().map(Into::into).collect(),
    }))
}

/// Accept an invitation: the invited user joins the group (the user, or the app).
#[utoipa::path(post, path = "/v1/groups/{group_id}/invitations/{user_id}/accept", params(MemberPath), responses((status = 200, body = GroupJson)), tag = "groups")]
pub(super) async fn accept_invitation(
    State(s): State<ApiState>,
    headers: HeaderMap,
    PathArg(MemberPath { group_id, user_id }): PathArg<MemberPath>,
) -> ApiResult<GroupJson> {
    let group = s
        .business
        .accept_invitation(&actor(&headers)?, &group_id, &user_id)
        .await?;
    Ok(Json(group.into()))
}

/// Decline an invitation (the invited user), or withdraw it (the inviter, the group's owner
/// and admins, the app).
#[utoipa::path(delete, path = "/v1/groups/{group_id}/invitations/{user_id}", params(MemberPath), responses((status = 200, body = OkJson)), tag = "groups")]
pub(super) async fn decline_invitation(
    State(s): State<ApiState>,
    headers: HeaderMap,
    PathArg(MemberPath { group_id, user_id }): PathArg<MemberPath>,
) -> ApiResult<OkJson> {
    s.business
        .decline_invitation(&actor(&headers)?, &group_id, &user_id)
        .await?;
    Ok(Json(OkJson {}))
}

/// Remove members.
#[utoipa::path(post, path = "/v1/groups/{group_id}/members/remove", params(GroupPath), request_body = UserIdsBody, responses((status = 200, body = OkJson)), tag = "groups")]
pub(super) async fn remove_members(
    State(s): State<ApiState>,
    headers: HeaderMap,
    PathArg(GroupPath { group_id }): PathArg<GroupPath>,
    Body(b): Body<UserIdsBody>,
) -> ApiResult<OkJson> {
    // The answer is `Ok`, as in business.proto; the group is one GET away.
    s.business
        .remove_members(&actor(&headers)?, &group_id, &b.user_ids)
        .await?;
    Ok(Json(OkJson {}))
}

/// A member leaves.
#[utoipa::path(post, path = "/v1/groups/{group_id}/leave", params(GroupPath), request_body = UserIdBody, responses((status = 200, body = OkJson)), tag = "groups")]
pub(super) async fn leave_group(
    State(s): State<ApiState>,
    headers: HeaderMap,
    PathArg(GroupPath { group_id }): PathArg<GroupPath>,
    Body(b): Body<UserIdBody>,
) -> ApiResult<OkJson> {
    s.business
        .leave_group(&actor(&headers)?, &group_id, &b.user_id)
        .await?;
    Ok(Json(OkJson {}))
}

/// Make a member an admin, or a plain member again.
#[utoipa::path(put, path = "/v1/groups/{group_id}/members/{user_id}/role", params(MemberPath), request_body = RoleBody, responses((status = 200, body = OkJson)), tag = "groups")]
pub(super) async fn set_member_role(
    State(s): State<ApiState>,
    headers: HeaderMap,
    PathArg(MemberPath { group_id, user_id }): PathArg<MemberPath>,
    Body(b): Body<RoleBody>,
) -> ApiResult<OkJson> {
    let role = match b.role {
        NewRole::Admin => GroupRole::Admin,
        NewRole::Member => GroupRole::Member,
    };
    s.business
        .set_member_role(&actor(&headers)?, &group_id, &user_id, role)
        .await?;
    Ok(Json(OkJson {}))
}

/// Mute a member until a time (0 lifts the mute).
#[utoipa::path(put, path = "/v1/groups/{group_id}/members/{user_id}/mute", params(MemberPath), request_body = MuteBody, responses((status = 200, body = OkJson)), tag = "groups")]
pub(super) async fn mute_member(
    State(s): State<ApiState>,
    headers: HeaderMap,
    PathArg(MemberPath { group_id, user_id }): PathArg<MemberPath>,
    Body(b): Body<MuteBody>,
) -> ApiResult<OkJson> {
    s.business
        .mute_member(&actor(&headers)?, &group_id, &user_id, b.until_ms)
        .await?;
    Ok(Json(OkJson {}))
}

/// Hand the group to another member.
#[utoipa::path(post, path = "/v1/groups/{group_id}/owner", params(GroupPath), request_body = UserIdBody, responses((status = 200, body = OkJson)), tag = "groups")]
pub(super) async fn transfer_ownership(
    State(s): State<ApiState>,
    headers: HeaderMap,
    PathArg(GroupPath { group_id }): PathArg<GroupPath>,
    Body(b): Body<UserIdBody>,
) -> ApiResult<OkJson> {
    s.business
        .transfer_ownership(&actor(&headers)?, &group_id, &b.user_id)
        .await?;
    Ok(Json(OkJson {}))
}
