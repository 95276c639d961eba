//! The `users` handlers: creating, importing, reading and deactivating users, and their tokens.

use axum::{Json, extract::State, http::HeaderMap};

use super::{
    ApiState,
    auth::actor,
    error::{ApiResult, Body, PathArg},
    shapes::{
        ImportUsersBody, ImportedJson, IssueTokenBody, OkJson, RevokeBody, TokenJson,
        UpsertUserBody, UserJson, UserPath,
    },
};
use crate::{UserImport, api::convert};

/// Create the user, or update its profile.
#[utoipa::path(post, path = "/v1/users", request_body = UpsertUserBody, responses((status = 200, body = UserJson)), tag = "users")]
pub(super) async fn upsert_user(
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

/// Create or update many users at once.
#[utoipa::path(post, path = "/v1/users/import", request_body = ImportUsersBody, responses((status = 200, body = ImportedJson)), tag = "users")]
pub(super) async fn import_users(
    State(s): State<ApiState>,
    headers: HeaderMap,
    Body(b): Body<ImportUsersBody>,
) -> ApiResult<ImportedJson> {
    let users: Vec<UserImport> = b.users.into_iter().map(UserImport::from).collect();
    let imported = s.business.import_users(&actor(&headers)?, &users).await?;
    Ok(Json(ImportedJson { imported }))
}

/// A user.
#[utoipa::path(get, path = "/v1/users/{user_id}", params(UserPath), responses((status = 200, body = UserJson)), tag = "users")]
pub(super) async fn get_user(
    State(s): State<ApiState>,
    headers: HeaderMap,
    PathArg(UserPath { user_id }): PathArg<UserPath>,
) -> ApiResult<UserJson> {
    Ok(Json(
        s.business
            .get_user(&actor(&headers)?, &user_id)
            .await?
            .into(),
    ))
}

/// Deactivate a user: its tokens stop working.
#[utoipa::path(post, path = "/v1/users/{user_id}/deactivate", params(UserPath), responses((status = 200, body = UserJson)), tag = "users")]
pub(super) async fn deactivate_user(
    State(s): State<ApiState>,
    headers: HeaderMap,
    PathArg(UserPath { user_id }): PathArg<UserPath>,
) -> ApiResult<UserJson> {
    Ok(Json(
        s.business
            .deactivate_user(&actor(&headers)?, &user_id)
            .await?
            .into(),
    ))
}

/// A token for the user on a device.
#[utoipa::path(post, path = "/v1/users/{user_id}/tokens", params(UserPath), request_body = IssueTokenBody, responses((status = 200, body = TokenJson)), tag = "users")]
pub(super) async fn issue_token(
    State(s): State<ApiState>,
    headers: HeaderMap,
    PathArg(UserPath { user_id }): PathArg<UserPath>,
    Body(b): Body<IssueTokenBody>,
) -> ApiResult<TokenJson> {
    let ttl_ms = convert::ttl_ms(b.ttl_seconds);
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
#[utoipa::path(post, path = "/v1/users/{user_id}/tokens/revoke", params(UserPath), request_body = RevokeBody, responses((status = 200, body = OkJson)), tag = "users")]
pub(super) async fn revoke_tokens(
    State(s): State<ApiState>,
    headers: HeaderMap,
    PathArg(UserPath { user_id }): PathArg<UserPath>,
    Body(b): Body<RevokeBody>,
) -> ApiResult<OkJson> {
    s.business
        .revoke_tokens(&actor(&headers)?, &user_id, &b.device_id)
        .await?;
    Ok(Json(OkJson {}))
}
