//! Failures and the extractors that answer with them: [`ApiError`] carries an [`ErrorBody`]
//! with the HTTP status of its protocol code; [`PathArg`], [`QueryArg`] and [`Body`] turn
//! axum's plain-text rejections into such errors (`INVALID_ARGUMENT`, or `FRAME_TOO_LARGE`
//! for a body over the limit), and the router's fallbacks answer an unknown path (404) or a
//! method a path does not serve (405) with one too, so that no answer is ever plain text.

use axum::{
    Json,
    extract::{
        FromRequest, FromRequestParts, Path, Query,
        rejection::{JsonRejection, PathRejection, QueryRejection},
    },
    http::StatusCode,
    response::{IntoResponse, Response},
};
use im_common::api::{ErrorBody, http_status};
use im_proto::v1::ErrorCode;

use crate::BusinessError;

/// A failed call.
#[derive(Debug)]
pub struct ApiError(ErrorBody);

impl ApiError {
    pub(super) fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self(ErrorBody::new(code, message))
    }
}

impl From<BusinessError> for ApiError {
    fn from(error: BusinessError) -> Self {
        let mut body = ErrorBody::new(error.code(), error.to_string());
        body.limit = error.limit();
        body.retry_after_ms = error.retry_after_ms();
        Self(body)
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
        // RFC 9110 `Retry-After` in whole seconds (rounded up) beside the body's milliseconds.
        let retry_after =
            (self.0.retry_after_ms > 0).then(|| self.0.retry_after_ms.div_ceil(1000).to_string());
        let mut response = (status, Json(self.0)).into_response();
        if let Some(seconds) = retry_after.and_then(|s| axum::http::HeaderValue::from_str(&s).ok())
        {
            response
                .headers_mut()
                .insert(axum::http::header::RETRY_AFTER, seconds);
        }
        response
    }
}

/// A path the API does not serve: 404, with `INVALID_ARGUMENT` (the request, not a resource,
/// is wrong).
pub(super) async fn no_such_path() -> Response {
    let body = ErrorBody::new(ErrorCode::InvalidArgument, "no such path in this API");
    (StatusCode::NOT_FOUND, Json(body)).into_response()
}

/// A method the path does not serve: 405, with `INVALID_ARGUMENT` (axum adds `allow`).
pub(super) async fn no_such_method() -> Response {
    let body = ErrorBody::new(
        ErrorCode::InvalidArgument,
        "the path does not take this method",
    );
    (StatusCode::METHOD_NOT_ALLOWED, Json(body)).into_response()
}

/// What a handler answers: JSON, or a failure.
pub(super) type ApiResult<T> = Result<Json<T>, ApiError>;

/// Path parameters whose rejections are protocol errors (`INVALID_ARGUMENT`).
#[derive(Debug, FromRequestParts)]
#[from_request(via(Path), rejection(ApiError))]
pub struct PathArg<T>(pub(super) T);

/// Query parameters whose rejections are protocol errors (`INVALID_ARGUMENT`).
#[derive(Debug, FromRequestParts)]
#[from_request(via(Query), rejection(ApiError))]
pub struct QueryArg<T>(pub(super) T);

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

/// A JSON body whose rejections are protocol errors (`INVALID_ARGUMENT`), not plain text.
#[derive(Debug, FromRequest)]
#[from_request(via(Json), rejection(ApiError))]
pub struct Body<T>(pub(super) T);
