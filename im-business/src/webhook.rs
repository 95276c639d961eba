//! Offline pushes to the app's webhook: the worker takes each [`OfflinePush`] from the durable
//! `im.push` outbox (as the consumer `im-push-webhook`, shared by every business node) and
//! POSTs it as JSON to `push_webhook_url`. A 2xx answer settles it; anything else, or no
//! answer within `push_webhook_timeout_ms`, sends it back to the outbox to come again after a
//! growing delay (1 s doubling to 1 min), so a webhook that is down loses nothing.
//!
//! The body: `conversation_id`, `seq`, `server_msg_id`, `sender_user_id`, `server_time_ms`,
//! `user_ids` (the users with no connected device), `text` (for plain-text messages, else
//! null), `node_id`; with `Authorization: Bearer <push_webhook_secret>` when one is set.

use std::time::Duration;

use im_common::bus::OutboxReader;
use im_proto::v1::{OfflinePush, content, message_body};
use prost::Message as _;

/// Where and how pushes are posted.
#[derive(Debug, Clone)]
pub struct Webhook {
    url: String,
    secret: String,
    http: reqwest::Client,
}

impl Webhook {
    /// Posts to `url`, with `secret` as a bearer token when not empty, giving up on an answer
    /// after `timeout`.
    pub fn new(url: &str, secret: &str, timeout: Duration) -> Result<Self, String> {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .build()
            .map_err(|e| e.to_string())?;
        Ok(Self {
            url: url.to_owned(),
            secret: secret.to_owned(),
            http,
        })
    }

    async fn post(&self, push: &OfflinePush) -> Result<(), String> {
        let message = push.message.clone().unwrap_or_default();
        let text = match message.body.and_then(|b| b.kind) {
            Some(message_body::Kind::Content(c)) => match c.kind {
                Some(content::Kind::Text(t)) => Some(t.text),
                _ => None,
            },
            _ => None,
        };
        let body = serde_json::json!({
            "conversation_id": message.conversation_id,
            "seq": message.seq,
            "server_msg_id": message.server_msg_id,
            "sender_user_id": message.sender_user_id,
            "server_time_ms": message.server_time_ms,
            "user_ids": push.user_ids,
            "text": text,
            "node_id": push.node_id,
        });
        let mut request = self.http.post(&self.url).json(&body);
        if !self.secret.is_empty() {
            request = request.bearer_auth(&self.secret);
        }
        let response = request.send().await.map_err(|e| e.to_string())?;
        if response.status().is_success() {
            Ok(())
        } else {
            Err(format!("the webhook answered {}", response.status()))
        }
    }
}

/// The consumer name every business node shares: each push goes to one of them.
pub const CONSUMER: &str = "im-push-webhook";

/// The delay before the `attempt`-th try comes again: 1 s, doubling, at most a minute.
fn backoff(attempt: u64) -> Duration {
    Duration::from_secs(1u64 << attempt.saturating_sub(1).min(6)).min(Duration::from_secs(60))
}

/// Posts every push `reader` hands out until the outbox goes away.
pub async fn run(mut reader: OutboxReader, webhook: Webhook) {
    while let Some(item) = reader.next().await {
        let Ok(push) = OfflinePush::decode(item.payload.clone()) else {
            tracing::warn!("undecodable offline push dropped");
            let _ = item.ack().await;
            continue;
        };
        let settled = match webhook.post(&push).await {
            Ok(()) => {
                metrics::counter!("im_webhook_pushes_total", "outcome" => "delivered").increment(1);
                item.ack().await
            }
            Err(error) => {
                let delay = backoff(item.attempt);
                tracing::warn!(%error, attempt = item.attempt, retry_in = ?delay, "webhook push failed");
                metrics::counter!("im_webhook_pushes_total", "outcome" => "retried").increment(1);
                item.retry(delay).await
            }
        };
        if let Err(error) = settled {
            // Unsettled, it comes again after the consumer's ack wait.
            tracing::warn!(%error, "webhook push not settled");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_back_off_to_a_minute() {
        let delays: Vec<u64> = (1..=9).map(|a| backoff(a).as_secs()).collect();
        assert_eq!(delays, [1, 2, 4, 8, 16, 32, 60, 60, 60]);
    }
}
