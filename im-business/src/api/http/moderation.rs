//! The `moderation` handlers: a user's blocks and contacts.

use axum::{Json, extract::State, http::HeaderMap};

use super::{
    ApiState,
    auth::actor,
    error::{ApiResult, PathArg, QueryArg},
    shapes::{BlockPath, ContactPath, OkJson, PageQuery, UserIdPageJson, UserPath},
};

/// Block a user.
#[utoipa::path(put, path = "/v1/users/{user_id}/blocks/{blocked}", params(BlockPath), responses((status = 200, body = OkJson)), tag = "moderation")]
pub(super) async fn block_user(
    State(s): State<ApiState>,
    headers: HeaderMap,
    PathArg(BlockPath { user_id, blocked }): PathArg<BlockPath>,
) -> ApiResult<OkJson> {
    s.business
        .set_block(&actor(&headers)?, &user_id, &blocked, true)
        .await?;
    Ok(Json(OkJson {}))
}

/// Lift a block.
#[utoipa::path(delete, path = "/v1/users/{user_id}/blocks/{blocked}", params(BlockPath), responses((status = 200, body = OkJson)), tag = "moderation")]
pub(super) async fn unblock_user(
    State(s): State<ApiState>,
    headers: HeaderMap,
    PathArg(BlockPath { user_id, blocked }): PathArg<BlockPath>,
) -> ApiResult<OkJson> {
    s.business
        .set_block(&actor(&headers)?, &user_id, &blocked, false)
        .await?;
    Ok(Json(OkJson {}))
}

/// The users a user blocks, a page in id order.
#[utoipa::path(get, path = "/v1/users/{user_id}/blocks", params(UserPath, PageQuery), responses((status = 200, body = UserIdPageJson)), tag = "moderation")]
pub(super) async fn list_blocked(
    State(s): State<ApiState>,
    headers: HeaderMap,
    PathArg(UserPath { user_id }): PathArg<UserPath>,
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
#[utoipa::path(put, path = "/v1/users/{user_id}/contacts/{contact}", params(ContactPath), responses((status = 200, body = OkJson)), tag = "moderation")]
pub(super) async fn add_contact(
    State(s): State<ApiState>,
    headers: HeaderMap,
    PathArg(ContactPath { user_id, contact }): PathArg<ContactPath>,
) -> ApiResult<OkJson> {
    s.business
        .set_contact(&actor(&headers)?, &user_id, &contact, true)
        .await?;
    Ok(Json(OkJson {}))
}

/// Remove a contact.
#[utoipa::path(delete, path = "/v1/users/{user_id}/contacts/{contact}", params(ContactPath), responses((status = 200, body = OkJson)), tag = "moderation")]
pub(super) async fn remove_contact(
    State(s): State<ApiState>,
    headers: HeaderMap,
    PathArg(ContactPath { user_id, contact }): PathArg<ContactPath>,
) -> ApiResult<OkJson> {
    s.business
        .set_contact(&actor(&headers)?, &user_id, &contact, false)
        .await?;
    Ok(Json(OkJson {}))
}
