//! What the HTTP and gRPC APIs read alike from a request: the same field of `business.proto`
//! (JSON in one API, protobuf in the other) becomes the same service value here, so that both
//! APIs keep answering the same.

use im_proto::v1;

use super::http::UpsertUserBody;
use crate::UserImport;

/// A token lifetime asked in seconds, in milliseconds. It saturates rather than wraps: a
/// lifetime too long for `i64` milliseconds stays too long, and the service refuses it.
pub(super) fn ttl_ms(ttl_seconds: u64) -> i64 {
    i64::try_from(ttl_seconds.saturating_mul(1000)).unwrap_or(i64::MAX)
}

// One user of an import, from either API's `UpsertUserRequest`: the two request types differ,
// the profile they carry does not.

impl From<v1::UpsertUserRequest> for UserImport {
    fn from(u: v1::UpsertUserRequest) -> Self {
        Self {
            user_id: u.user_id,
            display_name: u.display_name,
            avatar_url: u.avatar_url,
            extra_json: u.extra_json,
        }
    }
}

impl From<UpsertUserBody> for UserImport {
    fn from(u: UpsertUserBody) -> Self {
        Self {
            user_id: u.user_id,
            display_name: u.display_name,
            avatar_url: u.avatar_url,
            extra_json: u.extra_json,
        }
    }
}
