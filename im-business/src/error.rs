//! The business service's error, one variant per protocol error code it can produce.

use im_proto::v1::ErrorCode;

use crate::store::{Missing, StoreError};

/// Why a business operation failed. Nothing was written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BusinessError {
    /// A field is missing, malformed or out of range.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// The caller may not do this.
    #[error("forbidden: {0}")]
    Forbidden(String),
    /// The user is not a member of the group.
    #[error("{user_id} is not a member of group {group_id}")]
    NotAMember {
        /// The group.
        group_id: String,
        /// The user.
        user_id: String,
    },
    /// The recipient blocks the sender.
    #[error("{by} blocks {user_id}")]
    Blocked {
        /// The blocked sender.
        user_id: String,
        /// The blocker.
        by: String,
    },
    /// Only contacts may talk 1:1 with this user.
    #[error("{user_id} is not a contact of {of}")]
    NotAContact {
        /// The sender.
        user_id: String,
        /// The recipient.
        of: String,
    },
    /// The member is muted (until `until_ms`; 0 while the whole group is muted).
    #[error("muted in group {group_id}")]
    Muted {
        /// The group.
        group_id: String,
        /// When the mute ends; 0 for mute-all, which lasts until lifted.
        until_ms: i64,
    },
    /// No such user.
    #[error("user {0} not found")]
    UserNotFound(String),
    /// The user was deactivated.
    #[error("user {0} is deactivated")]
    UserDisabled(String),
    /// No such group, or it was dismissed.
    #[error("group {0} not found")]
    GroupNotFound(String),
    /// No pending invitation of the user to the group.
    #[error("no invitation of {user_id} to group {group_id}")]
    InvitationNotFound {
        /// The group.
        group_id: String,
        /// The user.
        user_id: String,
    },
    /// The thing to create exists already.
    #[error("{0} already exists")]
    AlreadyExists(String),
    /// The change conflicts with the current state.
    #[error("conflict: {0}")]
    Conflict(String),
    /// The group would pass its member limit.
    #[error("group {group_id} is full: at most {max} members")]
    GroupFull {
        /// The group.
        group_id: String,
        /// Its limit.
        max: i32,
    },
    /// No such media or upload, or none the caller may read.
    #[error("media {0} not found")]
    MediaNotFound(String),
    /// The uploaded object was not what was declared; the upload is rejected.
    #[error("media rejected: {0}")]
    MediaRejected(String),
    /// The media was quarantined by a content scan.
    #[error("media {0} is quarantined")]
    MediaQuarantined(String),
    /// One of the user's quotas is used up.
    #[error("the {what} quota of {limit} is used up")]
    QuotaExceeded {
        /// Which quota.
        what: &'static str,
        /// Its limit.
        limit: u64,
    },
    /// Too many requests of this kind; retry after the delay.
    #[error("rate limited: {what}")]
    RateLimited {
        /// What was limited.
        what: &'static str,
        /// When to retry.
        retry_after_ms: u64,
    },
    /// Not ready yet, or a dependency is down; retry after the delay.
    #[error("unavailable: {what}")]
    Unavailable {
        /// What is not available.
        what: String,
        /// When to retry.
        retry_after_ms: u64,
    },
    /// The storage failed.
    #[error("internal: {0}")]
    Internal(String),
}

impl BusinessError {
    /// The protocol error code.
    pub const fn code(&self) -> ErrorCode {
        match self {
            Self::InvalidArgument(_) => ErrorCode::InvalidArgument,
            Self::Forbidden(_) => ErrorCode::Forbidden,
            Self::NotAMember { .. } => ErrorCode::NotAMember,
            Self::Blocked { .. } => ErrorCode::Blocked,
            Self::NotAContact { .. } => ErrorCode::NotAContact,
            Self::Muted { .. } => ErrorCode::Muted,
            Self::UserNotFound(_) => ErrorCode::UserNotFound,
            Self::UserDisabled(_) => ErrorCode::UserDisabled,
            Self::GroupNotFound(_) => ErrorCode::GroupNotFound,
            Self::InvitationNotFound { .. } => ErrorCode::InvitationNotFound,
            Self::AlreadyExists(_) => ErrorCode::AlreadyExists,
            Self::Conflict(_) => ErrorCode::Conflict,
            Self::GroupFull { .. } => ErrorCode::GroupFull,
            Self::MediaNotFound(_) => ErrorCode::MediaNotFound,
            Self::MediaRejected(_) => ErrorCode::MediaRejected,
            Self::MediaQuarantined(_) => ErrorCode::MediaQuarantined,
            Self::QuotaExceeded { .. } => ErrorCode::QuotaExceeded,
            Self::RateLimited { .. } => ErrorCode::RateLimited,
            Self::Unavailable { .. } => ErrorCode::Unavailable,
            Self::Internal(_) => ErrorCode::Internal,
        }
    }

    /// The limit reached, for QUOTA_EXCEEDED and GROUP_FULL; 0 otherwise.
    pub fn limit(&self) -> u64 {
        match self {
            Self::QuotaExceeded { limit, .. } => *limit,
            Self::GroupFull { max, .. } => u64::try_from(*max).unwrap_or(0),
            _ => 0,
        }
    }

    /// When to retry, for RATE_LIMITED and UNAVAILABLE; 0 otherwise.
    pub fn retry_after_ms(&self) -> u64 {
        match self {
            Self::RateLimited { retry_after_ms, .. } | Self::Unavailable { retry_after_ms, .. } => {
                *retry_after_ms
            }
            _ => 0,
        }
    }
}

impl From<StoreError> for BusinessError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::NotFound(Missing::User(user)) => Self::UserNotFound(user),
            StoreError::NotFound(Missing::Group(group)) => Self::GroupNotFound(group),
            StoreError::NotFound(Missing::Member { group_id, user_id }) => {
                Self::NotAMember { group_id, user_id }
            }
            StoreError::AlreadyExists(what) => Self::AlreadyExists(what),
            StoreError::Conflict(what) => Self::Conflict(what),
            StoreError::GroupFull { group_id, max, .. } => Self::GroupFull { group_id, max },
            StoreError::NotFound(Missing::Media(media_id)) => Self::MediaNotFound(media_id),
            StoreError::QuotaExceeded { what, limit } => Self::QuotaExceeded { what, limit },
            other => Self::Internal(other.to_string()),
        }
    }
}
