//! The hook for entries that reach users with no connected device: mobile push, webhooks. The
//! embedded mode logs them; the distributed mode puts them in a durable outbox.

use async_trait::async_trait;
use im_proto::v1::Message;

/// Told about every entry for users who have no session to deliver it to.
#[async_trait]
pub trait PushHook: Send + Sync + 'static {
    /// `entry` was appended and `offline_user_ids` have no connected device for it.
    async fn offline(&self, entry: &Message, offline_user_ids: &[String]);

    /// Whether [`Self::offline`] should be called at all (collecting the offline members of a
    /// large group costs time on every entry).
    fn wants_offline_users(&self) -> bool {
        true
    }
}

/// The default hook: a debug log line per entry.
#[derive(Debug, Default)]
pub struct LogPush;

#[async_trait]
impl PushHook for LogPush {
    async fn offline(&self, entry: &Message, offline_user_ids: &[String]) {
        tracing::debug!(
            conversation = %entry.conversation_id,
            seq = entry.seq,
            offline = offline_user_ids.len(),
            "entry for offline users"
        );
    }

    fn wants_offline_users(&self) -> bool {
        tracing::enabled!(tracing::Level::DEBUG)
    }
}
