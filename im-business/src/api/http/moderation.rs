//! The `moderation` handlers: a user's blocks and contacts.

use axum::{
    Json,
    extract::{Path, State},
    http::HeaderMap,
};
use im_common::api::ErrorBody;

use super::{
    ApiState,
    auth::actor,
    error::{ApiResult, PathArg, QueryArg},
    shapes::{PageQuery, UserIdPageJson},
};

/// Block a user.
#[utoipa::path(put, path = "/v1/users/{user_id}/blocks/{blocked}", responses((status = 200), (status = "4XX", body = ErrorBody)), tag = "moderation")]
pub(super) async fn block_user(
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
pub(super) async fn unblock_user(
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
pub(super) async fn list_blocked(
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
pub(super) async fn add_contact(
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
pub(super) async fn remove_contact(
    State(s): State<ApiState>,
    headers: HeaderMap,
    Path((user_id, contact)): Path<(String, String)>,
) -> ApiResult<()> {
    s.business
        .set_contact(&actor(&headers)?, &user_id, &contact, false)
        .await?;
    Ok(Json(()))
}
