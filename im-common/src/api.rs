//! What every service API shares: how protocol error codes map onto HTTP statuses and gRPC
//! codes, the JSON error body, and the app-secret check.

use http::StatusCode;
use im_proto::v1::ErrorCode;
use serde::Serialize;
use subtle::ConstantTimeEq;

/// The gRPC metadata (trailer) key carrying the protocol error code, as a decimal number.
pub const ERROR_CODE_METADATA: &str = "im-error-code";

/// The HTTP header naming the user on whose behalf the app acts (empty: the app itself).
pub const ACTOR_HEADER: &str = "x-im-actor";

/// The JSON body of every failed HTTP call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ErrorBody {
    /// The protocol error code (docs/PROTOCOL.md).
    pub code: i32,
    /// Its stable name, e.g. `NOT_A_MEMBER`.
    pub name: String,
    /// For developers; never parsed.
    pub message: String,
    /// The limit that was reached (QUOTA_EXCEEDED, ...), when there is one.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub limit: u64,
    /// Retry no sooner than this (RATE_LIMITED, UNAVAILABLE, ...), when the server knows.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub retry_after_ms: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl ErrorBody {
    /// The body for a code and a message.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code: code as i32,
            name: code.name().to_owned(),
            message: message.into(),
            limit: 0,
            retry_after_ms: 0,
        }
    }
}

/// The HTTP status of a protocol error code.
pub fn http_status(code: ErrorCode) -> StatusCode {
    use ErrorCode as E;
    match code {
        E::InvalidArgument
        | E::MalformedFrame
        | E::ContentTooLarge
        | E::UnsupportedVersion
        | E::MediaRejected => StatusCode::BAD_REQUEST,
        E::Unauthenticated | E::TokenExpired | E::TokenRevoked => StatusCode::UNAUTHORIZED,
        E::Forbidden
        | E::NotAMember
        | E::Muted
        | E::Blocked
        | E::NotAContact
        | E::UserDisabled
        | E::EditWindowClosed
        | E::MediaQuarantined => StatusCode::FORBIDDEN,
        E::ConversationNotFound
        | E::UserNotFound
        | E::GroupNotFound
        | E::MessageNotFound
        | E::InvitationNotFound
        | E::MediaNotFound => StatusCode::NOT_FOUND,
        E::AlreadyExists | E::Conflict | E::GroupFull => StatusCode::CONFLICT,
        E::FrameTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        E::RateLimited | E::QuotaExceeded | E::TooManyConnections => StatusCode::TOO_MANY_REQUESTS,
        E::Unavailable | E::ShuttingDown => StatusCode::SERVICE_UNAVAILABLE,
        E::Timeout => StatusCode::GATEWAY_TIMEOUT,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// The gRPC status code of a protocol error code (the exact code travels in the
/// [`ERROR_CODE_METADATA`] trailer).
pub fn grpc_code(code: ErrorCode) -> tonic::Code {
    use tonic::Code;
    match http_status(code) {
        StatusCode::BAD_REQUEST => Code::InvalidArgument,
        StatusCode::UNAUTHORIZED => Code::Unauthenticated,
        StatusCode::FORBIDDEN => Code::PermissionDenied,
        StatusCode::NOT_FOUND => Code::NotFound,
        StatusCode::CONFLICT if code == ErrorCode::AlreadyExists => Code::AlreadyExists,
        StatusCode::CONFLICT if code == ErrorCode::GroupFull => Code::ResourceExhausted,
        StatusCode::CONFLICT => Code::FailedPrecondition,
        StatusCode::PAYLOAD_TOO_LARGE | StatusCode::TOO_MANY_REQUESTS => Code::ResourceExhausted,
        StatusCode::SERVICE_UNAVAILABLE => Code::Unavailable,
        StatusCode::GATEWAY_TIMEOUT => Code::DeadlineExceeded,
        _ => Code::Internal,
    }
}

/// Whether `presented` is the configured secret, compared in constant time.
pub fn secret_matches(presented: &[u8], secret: &[u8]) -> bool {
    !secret.is_empty() && presented.ct_eq(secret).into()
}

/// The secret in an `authorization: Bearer <secret>` value.
pub fn bearer(value: &str) -> Option<&str> {
    value.strip_prefix("Bearer ").map(str::trim)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_and_statuses() {
        assert!(secret_matches(b"s3cret", b"s3cret"));
        assert!(!secret_matches(b"s3cre", b"s3cret"));
        assert!(
            !secret_matches(b"", b""),
            "an empty secret never authenticates"
        );
        assert_eq!(bearer("Bearer abc"), Some("abc"));
        assert_eq!(bearer("Basic abc"), None);
        assert_eq!(http_status(ErrorCode::NotAMember), StatusCode::FORBIDDEN);
        assert_eq!(
            http_status(ErrorCode::Internal),
            StatusCode::INTERNAL_SERVER_ERROR
        );
        let body = ErrorBody::new(ErrorCode::GroupFull, "full");
        assert_eq!((body.code, body.name.as_str()), (5004, "GROUP_FULL"));
    }
}
