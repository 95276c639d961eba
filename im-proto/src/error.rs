//! The stable error-code table: every [`ErrorCode`] with its name, meaning and whether the same
//! request may succeed if sent again unchanged.
//!
//! Numbers live in `errors.proto`; this table adds what the numbers mean. A test keeps the two,
//! `docs/PROTOCOL.md` and `conformance/vectors/error_codes.json` in step.

use crate::v1::{Error, ErrorCode};

/// What an error code means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ErrorInfo {
    /// The code.
    pub code: ErrorCode,
    /// The stable name, e.g. `RATE_LIMITED`.
    pub name: &'static str,
    /// Whether the same request may succeed if sent again unchanged (after `retry_after_ms`,
    /// with backoff, or on a new connection). Not retryable means: change something first.
    pub retryable: bool,
    /// One line for developers.
    pub meaning: &'static str,
}

macro_rules! table {
    ($($code:ident $name:literal $retryable:literal $meaning:literal;)*) => {
        /// Every error code, in numeric order.
        pub const ERROR_CODES: &[ErrorInfo] = &[
            $(ErrorInfo { code: ErrorCode::$code, name: $name, retryable: $retryable, meaning: $meaning },)*
        ];
    };
}

table! {
    MalformedFrame "MALFORMED_FRAME" false "The bytes are not a valid frame, or a frame carries no body.";
    FrameTooLarge "FRAME_TOO_LARGE" false "The frame is larger than the receiver's max_frame_bytes.";
    UnsupportedVersion "UNSUPPORTED_VERSION" false "No protocol version in common; supported_versions lists the server's.";
    UnsupportedFrame "UNSUPPORTED_FRAME" false "The frame's body is a variant the receiver does not know.";
    HandshakeRequired "HANDSHAKE_REQUIRED" false "A frame other than Hello arrived before the Welcome.";
    AlreadyAuthenticated "ALREADY_AUTHENTICATED" false "A second Hello on a connection that already has a Welcome.";
    HeartbeatTimeout "HEARTBEAT_TIMEOUT" true "Nothing was heard within idle_timeout_ms; reconnect.";
    Unauthenticated "UNAUTHENTICATED" false "The token is missing, malformed or its signature is wrong.";
    TokenExpired "TOKEN_EXPIRED" false "The token has expired; get a new one and reconnect.";
    TokenRevoked "TOKEN_REVOKED" false "The token was revoked (logout, device kicked).";
    UserDisabled "USER_DISABLED" false "The user was deactivated.";
    SessionReplaced "SESSION_REPLACED" false "A newer connection of the same device took over; do not reconnect automatically.";
    Forbidden "FORBIDDEN" false "The user may not do this (role too low, channel where only admins post).";
    NotAMember "NOT_A_MEMBER" false "The user is not a member of the conversation.";
    Muted "MUTED" false "The user is muted in this conversation, or the group is muted for all.";
    Blocked "BLOCKED" false "The recipient has blocked the sender.";
    NotAContact "NOT_A_CONTACT" false "Only contacts may start a 1:1 conversation with this user.";
    EditWindowClosed "EDIT_WINDOW_CLOSED" false "The window to edit, recall or delete this entry has passed.";
    MediaQuarantined "MEDIA_QUARANTINED" false "The media was held by content safety and may not be fetched.";
    InvalidArgument "INVALID_ARGUMENT" false "A field is missing, malformed or out of range.";
    ConversationNotFound "CONVERSATION_NOT_FOUND" false "No such conversation.";
    UserNotFound "USER_NOT_FOUND" false "No such user.";
    GroupNotFound "GROUP_NOT_FOUND" false "No such group, or it was dismissed.";
    MessageNotFound "MESSAGE_NOT_FOUND" false "No entry with that seq in the conversation.";
    AlreadyExists "ALREADY_EXISTS" false "The thing to create exists already.";
    Conflict "CONFLICT" false "The change conflicts with the current state (stale version, last owner).";
    ContentTooLarge "CONTENT_TOO_LARGE" false "The message content is larger than max_content_bytes.";
    InvitationNotFound "INVITATION_NOT_FOUND" false "No pending invitation of that user to that group.";
    MediaNotFound "MEDIA_NOT_FOUND" false "No such media, or not the caller's to see, or it was aborted or deleted.";
    MediaRejected "MEDIA_REJECTED" false "The uploaded bytes are not what was declared (size, digest or type); nothing was kept.";
    RateLimited "RATE_LIMITED" true "Too many requests; retry after retry_after_ms.";
    TooManyConnections "TOO_MANY_CONNECTIONS" true "The server or the user has reached its connection limit; retry with backoff.";
    QuotaExceeded "QUOTA_EXCEEDED" false "A storage or usage quota is used up.";
    SlowConsumer "SLOW_CONSUMER" true "The client read too slowly and its outbound queue overflowed; reconnect and sync.";
    GroupFull "GROUP_FULL" false "The group has reached its member limit.";
    Internal "INTERNAL" true "An unexpected server fault; retry with backoff (sends are idempotent).";
    Unavailable "UNAVAILABLE" true "A dependency is down or overloaded; retry with backoff.";
    Timeout "TIMEOUT" true "The server gave up waiting on a dependency; retry with backoff.";
    ShuttingDown "SHUTTING_DOWN" true "The node is going away; reconnect (to another node).";
}

impl ErrorCode {
    /// The table row of this code; `None` only for `ERROR_CODE_UNSPECIFIED`.
    pub fn info(self) -> Option<&'static ErrorInfo> {
        ERROR_CODES.iter().find(|info| info.code == self)
    }

    /// The stable name (`RATE_LIMITED`), or `UNSPECIFIED`.
    pub fn name(self) -> &'static str {
        self.info().map_or("UNSPECIFIED", |info| info.name)
    }

    /// Whether the same request may succeed if sent again unchanged.
    pub fn is_retryable(self) -> bool {
        self.info().is_some_and(|info| info.retryable)
    }

    /// Whether a code received on the wire is retryable, including codes newer than this crate:
    /// an unknown code is retryable only in the 9xxx (server) range or when the error carries a
    /// `retry_after_ms`.
    pub fn is_retryable_code(code: i32, retry_after_ms: u64) -> bool {
        match ErrorCode::try_from(code) {
            Ok(known) if known != ErrorCode::Unspecified => known.is_retryable(),
            _ => (9000..10000).contains(&code) || retry_after_ms > 0,
        }
    }
}

impl Error {
    /// An error frame body with a code and a message for developers.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Error {
            code: code.into(),
            message: message.into(),
            ..Default::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_covers_every_code_once_in_order_with_its_proto_name() {
        let mut last = 0;
        for info in ERROR_CODES {
            let number = info.code as i32;
            assert!(number > last, "{} is out of order", info.name);
            last = number;
            assert_eq!(info.code.as_str_name(), format!("ERROR_CODE_{}", info.name));
        }
        // Every proto value but UNSPECIFIED has a row: walk the whole numeric space of the enum.
        let proto_values = (1..10_000)
            .filter(|n| ErrorCode::try_from(*n).is_ok())
            .count();
        assert_eq!(proto_values, ERROR_CODES.len());
        assert_eq!(ErrorCode::Unspecified.info(), None);
    }

    #[test]
    fn retry_rules_for_known_and_unknown_codes() {
        assert!(ErrorCode::RateLimited.is_retryable());
        assert!(!ErrorCode::NotAMember.is_retryable());
        assert!(ErrorCode::is_retryable_code(
            ErrorCode::Unavailable as i32,
            0
        ));
        assert!(!ErrorCode::is_retryable_code(
            ErrorCode::Forbidden as i32,
            0
        ));
        assert!(
            ErrorCode::is_retryable_code(9_999, 0),
            "unknown 9xxx codes are retryable"
        );
        assert!(
            !ErrorCode::is_retryable_code(3_999, 0),
            "unknown 3xxx codes are not"
        );
        assert!(
            ErrorCode::is_retryable_code(5_999, 250),
            "retry_after_ms makes any code retryable"
        );
    }
}
