//! The hook for entries that reach users with no connected device: mobile push, webhooks.
//! Each goes into the bus's push outbox (a JetStream stream on NATS, a bounded queue in memory
//! in process), which the business service's webhook worker takes them from.

use std::{sync::Arc, time::Duration};

use async_trait::async_trait;
use im_common::bus::Outbox;
use im_proto::v1::{Message, OfflinePush};
use prost::Message as _;

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

/// The hook: each entry for offline users goes into the push outbox (`im.push`, the stream
/// IM_PUSH) as an [`OfflinePush`], for the business service's webhook worker or any other
/// consumer. A put the outbox does not confirm is tried three
/// times, then counted in `im_offline_pushes_failed_total` (the entry itself is stored: only
/// the notification is missed).
pub struct OutboxPush {
    outbox: Arc<dyn Outbox>,
    node_id: String,
}

impl std::fmt::Debug for OutboxPush {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OutboxPush")
            .field("node_id", &self.node_id)
            .finish_non_exhaustive()
    }
}

impl OutboxPush {
    /// Offline pushes of node `node_id` into `outbox`.
    pub fn new(outbox: Arc<dyn Outbox>, node_id: &str) -> Self {
        Self {
            outbox,
            node_id: node_id.to_owned(),
        }
    }
}

#[async_trait]
impl PushHook for OutboxPush {
    async fn offline(&self, entry: &Message, offline_user_ids: &[String]) {
        let push = OfflinePush {
            message: Some(entry.clone()),
            user_ids: offline_user_ids.to_vec(),
            node_id: self.node_id.clone(),
        };
        let payload = bytes::Bytes::from(push.encode_to_vec());
        // One push per entry and user set: a resend fanned out again, or a put retried after
        // an unconfirmed one, does not notify its users twice.
        let id = push_id(entry, offline_user_ids);
        for wait_ms in [0, 100, 500] {
            tokio::time::sleep(Duration::from_millis(wait_ms)).await;
            match self.outbox.put_once(&id, payload.clone()).await {
                Ok(()) => {
                    metrics::counter!("im_offline_pushes_total").increment(1);
                    return;
                }
                Err(error) => tracing::warn!(%error, "offline push not stored yet"),
            }
        }
        tracing::error!(
            conversation = %entry.conversation_id,
            seq = entry.seq,
            "offline push dropped: the outbox refused it three times"
        );
        metrics::counter!("im_offline_pushes_failed_total").increment(1);
    }
}

/// The outbox id of an entry's push to some users: the entry, and a hash of the users (a
/// resend fanned out again may find other users offline, who must not be skipped). FNV-1a:
/// the same users give the same id on every node and in every release.
fn push_id(entry: &Message, user_ids: &[String]) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in user_ids.iter().flat_map(|user| user.bytes().chain([0])) {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{}:{}:{hash:016x}", entry.conversation_id, entry.seq)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn push_ids_name_the_entry_and_the_users() {
        let entry = Message {
            conversation_id: "g:team".into(),
            seq: 7,
            ..Message::default()
        };
        let users = |ids: &[&str]| ids.iter().map(|&u| u.to_owned()).collect::<Vec<_>>();
        let id = push_id(&entry, &users(&["amy", "bob"]));
        assert!(id.starts_with("g:team:7:"), "{id}");
        assert_eq!(id, push_id(&entry, &users(&["amy", "bob"])), "stable");
        assert_ne!(id, push_id(&entry, &users(&["amy"])));
        assert_ne!(
            id,
            push_id(&entry, &users(&["amyb", "ob"])),
            "users are delimited"
        );
    }
}
