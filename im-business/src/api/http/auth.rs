//! Who calls: the middleware that lets a `/v1` call through with the app secret or a user's
//! own token, and the [`Actor`] a handler reads from the `x-im-actor` header.

use axum::{
    extract::{Request, State},
    http::HeaderMap,
    middleware::Next,
    response::{IntoResponse, Response},
};
use im_common::api::{ACTOR_HEADER, bearer, secret_matches};
use im_proto::v1::ErrorCode;

use super::{ApiError, ApiState};
use crate::Actor;

/// The actor a call runs for: the user the `x-im-actor` header names, else the app.
pub(super) fn actor(headers: &HeaderMap) -> Result<Actor, ApiError> {
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

/// Lets a call through with the app secret, or with a user's own token (when the API takes
/// them) after pinning `x-im-actor` to that user; refuses it otherwise.
pub(super) async fn authenticate(
    State(state): State<ApiState>,
    mut request: Request,
    next: Next,
) -> Response {
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
