//! The one error type of the SDK, carrying the protocol's error codes.

use im_proto::v1::ErrorCode;

/// Why a call failed: a protocol error code (the server's, or the code the SDK uses for a local
/// failure: UNAVAILABLE while the client cannot reach the server, TIMEOUT when an answer did not
/// come in time), the server's message, and when to retry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{} ({code}): {message}", self.name())]
pub struct Error {
    /// The protocol error code (`im.v1.ErrorCode`); unknown codes are kept as numbers.
    pub code: i32,
    /// For people and logs; never parsed.
    pub message: String,
    /// Wait at least this long before retrying, when set.
    pub retry_after_ms: u64,
}

impl Error {
    /// An error with `code`.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code: code as i32,
            message: message.into(),
            retry_after_ms: 0,
        }
    }

    /// The code's name (`NOT_A_MEMBER`), or `UNKNOWN` for a code this SDK does not know.
    pub fn name(&self) -> &'static str {
        ErrorCode::try_from(self.code).map_or("UNKNOWN", |c| c.name())
    }

    /// The code, if this SDK knows it.
    pub fn error_code(&self) -> Option<ErrorCode> {
        ErrorCode::try_from(self.code).ok()
    }

    /// Whether the same request may succeed if sent again unchanged (docs/PROTOCOL.md).
    pub fn is_retryable(&self) -> bool {
        ErrorCode::is_retryable_code(self.code, self.retry_after_ms)
    }
}

impl From<im_proto::v1::Error> for Error {
    fn from(error: im_proto::v1::Error) -> Self {
        Self {
            code: error.code,
            message: error.message,
            retry_after_ms: error.retry_after_ms,
        }
    }
}

/// The result of an SDK call.
pub type Result<T> = std::result::Result<T, Error>;
