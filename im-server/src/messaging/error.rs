//! Why messaging refused or failed a request, in its own terms; [`MessagingError::code`] is
//! the protocol code the gateway answers with, [`MessagingError::to_error`] the whole answer.

use std::{sync::Arc, time::Duration};

use im_common::bus::BusError;
use im_proto::{ErrorCode, v1};

use crate::store::StoreError;

/// Why messaging refused or failed a request.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MessagingError {
    /// A field is missing, malformed or out of range.
    #[error("{0}")]
    Invalid(String),
    /// A body or content kind this server does not know (from a newer client).
    #[error("{0}")]
    Unsupported(&'static str),
    /// The body is larger than the limit.
    #[error("the body is {size} bytes, more than {limit}")]
    ContentTooLarge {
        /// The body's size.
        size: usize,
        /// The limit.
        limit: u32,
    },
    /// The user sends too fast.
    #[error("too many messages")]
    RateLimited {
        /// When the next one is allowed.
        retry_after: Duration,
    },
    /// The business service's permission decision: not allowed.
    #[error("{reason}")]
    Denied {
        /// Why (NOT_A_MEMBER, MUTED, BLOCKED, ...).
        code: ErrorCode,
        /// The business service's words.
        reason: String,
    },
    /// The user may not do this to this entry.
    #[error("{0}")]
    Forbidden(&'static str),
    /// The entry an edit, recall, delete or reaction names does not exist.
    #[error("no entry {seq} in {conversation}")]
    TargetNotFound {
        /// The conversation.
        conversation: String,
        /// The seq named.
        seq: u64,
    },
    /// The entry an edit or reaction names was recalled or deleted: to its viewers it is gone.
    #[error("entry {seq} was recalled or deleted")]
    Withdrawn {
        /// The seq named.
        seq: u64,
    },
    /// The window to edit, recall or delete the entry has passed.
    #[error("{0}")]
    WindowClosed(&'static str),
    /// A message carries the most different reactions allowed.
    #[error("a message carries at most {limit} different reactions")]
    TooManyReactions {
        /// The limit.
        limit: usize,
    },
    /// The business service could not be asked.
    #[error("{what}: {source}")]
    Bus {
        /// What was asked.
        what: &'static str,
        /// Why it failed.
        source: BusError,
    },
    /// The message store failed.
    #[error("storage failed")]
    Store(#[from] StoreError),
    /// The batch holding the send could not be stored (none of it was).
    #[error("storage failed")]
    Commit(Arc<StoreError>),
    /// The node is stopping.
    #[error("the server is stopping")]
    ShuttingDown,
}

impl MessagingError {
    /// The business service could not be asked `what`.
    pub(crate) fn bus(what: &'static str) -> impl FnOnce(BusError) -> Self {
        move |source| Self::Bus { what, source }
    }

    /// The protocol code of this refusal.
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::Invalid(_) => ErrorCode::InvalidArgument,
            Self::Unsupported(_) => ErrorCode::UnsupportedFrame,
            Self::ContentTooLarge { .. } => ErrorCode::ContentTooLarge,
            Self::RateLimited { .. } => ErrorCode::RateLimited,
            Self::Denied { code, .. } => *code,
            Self::Forbidden(_) => ErrorCode::Forbidden,
            Self::TargetNotFound { .. } | Self::Withdrawn { .. } => ErrorCode::MessageNotFound,
            Self::WindowClosed(_) => ErrorCode::EditWindowClosed,
            Self::TooManyReactions { .. } => ErrorCode::QuotaExceeded,
            // A refusal from the business service keeps its code (GROUP_NOT_FOUND); a bus
            // that cannot be reached is UNAVAILABLE, which clients retry.
            Self::Bus { source, .. } => match source {
                BusError::Refused { .. } => source.code(),
                _ => ErrorCode::Unavailable,
            },
            Self::Store(_) | Self::Commit(_) => ErrorCode::Internal,
            Self::ShuttingDown => ErrorCode::ShuttingDown,
        }
    }

    /// The `Error` to answer with, its limit or retry time set where it has one. A store
    /// failure is logged here and answered without its details.
    pub fn to_error(&self) -> v1::Error {
        if let Self::Store(error) = self {
            tracing::error!(%error, "storage failed");
        }
        let mut error = v1::Error::new(self.code(), self.to_string());
        match self {
            Self::ContentTooLarge { limit, .. } => error.limit = u64::from(*limit),
            Self::TooManyReactions { limit } => error.limit = *limit as u64,
            Self::RateLimited { retry_after } => {
                error.retry_after_ms = retry_after.as_millis().max(1) as u64;
            }
            _ => {}
        }
        error
    }
}

/// The result of a messaging operation.
pub type MessagingResult<T> = Result<T, MessagingError>;
