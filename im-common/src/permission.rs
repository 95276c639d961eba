//! Permission checks as the core asks them: over the bus (`im.auth`) to the business service,
//! behind a local cache that the business service's events invalidate (`im.member`,
//! `im.group`, `im.ban`). A decision's TTL is only a safety net.
//!
//! No stale allow: once an invalidating event has been applied, the next check asks afresh,
//! and an answer fetched before the event is never cached after it (an epoch guards inserts).

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use im_proto::{
    ConversationId, bus,
    v1::{
        BanEvent, BanKind, ConversationAction, GroupEvent, MemberEvent, PermissionCheck,
        PermissionDecision,
    },
};
use moka::{Expiry, sync::Cache};
use prost::Message;

use crate::bus::{Bus, BusError, encode};

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    user_id: String,
    conversation_id: String,
    action: i32,
}

/// Each decision lives as long as its `ttl_ms` says, at most the configured maximum.
struct DecisionExpiry {
    max: Duration,
}

impl Expiry<Key, PermissionDecision> for DecisionExpiry {
    fn expire_after_create(
        &self,
        _: &Key,
        decision: &PermissionDecision,
        _: Instant,
    ) -> Option<Duration> {
        Some(Duration::from_millis(decision.ttl_ms).min(self.max))
    }
}

/// Asks for permission decisions and caches them.
pub struct PermissionClient {
    bus: Arc<dyn Bus>,
    cache: Cache<Key, PermissionDecision>,
    /// Bumped by every invalidation; held while inserting so no insert slips past one.
    epoch: Mutex<u64>,
    applied: AtomicU64,
    /// Decisions are cached only while events can invalidate them.
    following: std::sync::atomic::AtomicBool,
    timeout: Duration,
}

impl std::fmt::Debug for PermissionClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PermissionClient")
            .field("entries", &self.cache.entry_count())
            .finish()
    }
}

impl PermissionClient {
    /// A client caching up to `capacity` decisions for at most `max_ttl` each, asking with
    /// `timeout`.
    pub fn new(bus: Arc<dyn Bus>, capacity: u64, max_ttl: Duration, timeout: Duration) -> Self {
        let cache = Cache::builder()
            .max_capacity(capacity)
            .expire_after(DecisionExpiry { max: max_ttl })
            .support_invalidation_closures()
            .build();
        Self {
            bus,
            cache,
            epoch: Mutex::new(0),
            applied: AtomicU64::new(0),
            following: std::sync::atomic::AtomicBool::new(false),
            timeout,
        }
    }

    /// May `user_id` do `action` in `conversation_id`?
    pub async fn check(
        &self,
        user_id: &str,
        conversation_id: &str,
        action: ConversationAction,
    ) -> Result<PermissionDecision, BusError> {
        let key = Key {
            user_id: user_id.to_owned(),
            conversation_id: conversation_id.to_owned(),
            action: action as i32,
        };
        let epoch = *self.lock();
        if let Some(decision) = self.cache.get(&key) {
            return Ok(decision);
        }
        let request = PermissionCheck {
            user_id: key.user_id.clone(),
            conversation_id: key.conversation_id.clone(),
            action: key.action,
        };
        let answer = self
            .bus
            .request(bus::AUTH, encode(&request), self.timeout)
            .await?;
        let decision = PermissionDecision::decode(answer)
            .map_err(|e| BusError::Malformed(format!("permission decision: {e}")))?;
        let current = self.lock();
        if *current == epoch && decision.ttl_ms > 0 && self.following.load(Ordering::SeqCst) {
            self.cache.insert(key, decision.clone());
        }
        Ok(decision)
    }

    /// Drops the cached decisions an event on `subject` may have changed. Returns whether the
    /// event was one of ours.
    pub fn apply(&self, subject: &str, payload: &[u8]) -> bool {
        let matches: Box<dyn Fn(&Key) -> bool + Send + Sync> = match subject {
            // A membership change concerns only the users it lists.
            bus::MEMBER => match MemberEvent::decode(payload) {
                Ok(event) => {
                    let conversation = format!("g:{}", event.group_id);
                    let users = event.user_ids;
                    Box::new(move |k: &Key| {
                        k.conversation_id == conversation && users.contains(&k.user_id)
                    })
                }
                Err(_) => return false,
            },
            bus::GROUP => match GroupEvent::decode(payload) {
                Ok(event) => in_group(event.group_id),
                Err(_) => return false,
            },
            bus::BAN => match BanEvent::decode(payload) {
                Ok(event) => match event.kind() {
                    BanKind::MemberMuted | BanKind::MemberUnmuted => in_group(event.group_id),
                    BanKind::UserBlocked
                    | BanKind::UserUnblocked
                    | BanKind::ContactAdded
                    | BanKind::ContactRemoved => {
                        let direct = direct_id(&event.user_id, &event.target_user_id);
                        Box::new(move |k: &Key| Some(&k.conversation_id) == direct.as_ref())
                    }
                    BanKind::UserDeactivated => {
                        let user = event.user_id;
                        Box::new(move |k: &Key| {
                            k.user_id == user || involves(&k.conversation_id, &user)
                        })
                    }
                    BanKind::TokensRevoked | BanKind::Unspecified => return true,
                },
                Err(_) => return false,
            },
            _ => return false,
        };
        let mut epoch = self.lock();
        *epoch += 1;
        // Fails only without support_invalidation_closures, which `new` always sets.
        if self
            .cache
            .invalidate_entries_if(move |key, _| matches(key))
            .is_err()
        {
            self.cache.invalidate_all();
        }
        drop(epoch);
        self.applied.fetch_add(1, Ordering::SeqCst);
        true
    }

    /// How many invalidating events have been applied (for tests and metrics).
    pub fn applied(&self) -> u64 {
        self.applied.load(Ordering::SeqCst)
    }

    /// Subscribes to `im.member`, `im.group` and `im.ban`, then applies every event in a task
    /// of its own until the bus closes. Events published after this returns are not missed.
    pub async fn follow(self: Arc<Self>) -> Result<tokio::task::JoinHandle<()>, BusError> {
        let mut members = self.bus.subscribe(bus::MEMBER).await?;
        let mut groups = self.bus.subscribe(bus::GROUP).await?;
        let mut bans = self.bus.subscribe(bus::BAN).await?;
        self.following.store(true, Ordering::SeqCst);
        Ok(tokio::spawn(async move {
            loop {
                let message = tokio::select! {
                    Some(m) = members.next() => m,
                    Some(m) = groups.next() => m,
                    Some(m) = bans.next() => m,
                    else => break,
                };
                self.apply(&message.subject, &message.payload);
            }
            // Without events nothing may be served from the cache any more.
            self.following.store(false, Ordering::SeqCst);
            self.cache.invalidate_all();
        }))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, u64> {
        self.epoch
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }
}

fn in_group(group_id: String) -> Box<dyn Fn(&Key) -> bool + Send + Sync> {
    let conversation = format!("g:{group_id}");
    Box::new(move |k: &Key| k.conversation_id == conversation)
}

fn direct_id(a: &str, b: &str) -> Option<String> {
    Some(ConversationId::direct(a.parse().ok()?, b.parse().ok()?).to_string())
}

fn involves(conversation_id: &str, user_id: &str) -> bool {
    match (conversation_id.parse::<ConversationId>(), user_id.parse()) {
        (Ok(conversation), Ok(user)) => conversation.peer_of(&user).is_some(),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicBool;

    use bytes::Bytes;
    use im_proto::v1::{ErrorCode, MemberChange};

    use super::*;
    use crate::bus::{LocalBus, respond};

    /// A responder that allows while `allow` is set and counts the questions.
    async fn responder(bus: &LocalBus, allow: Arc<AtomicBool>, asked: Arc<AtomicU64>) {
        let mut requests = bus.queue_subscribe(bus::AUTH, "business").await.unwrap();
        let bus = bus.clone();
        tokio::spawn(async move {
            while let Some(message) = requests.next().await {
                asked.fetch_add(1, Ordering::SeqCst);
                let allowed = allow.load(Ordering::SeqCst);
                let decision = PermissionDecision {
                    allowed,
                    code: if allowed {
                        0
                    } else {
                        ErrorCode::NotAMember as i32
                    },
                    ttl_ms: 60_000,
                    ..Default::default()
                };
                respond(&bus, &message, encode(&decision)).await.unwrap();
            }
        });
    }

    fn removal(group_id: &str) -> Bytes {
        encode(&MemberEvent {
            group_id: group_id.into(),
            change: MemberChange::Removed.into(),
            user_ids: vec!["amy".into()],
            ..Default::default()
        })
    }

    #[tokio::test]
    async fn decisions_are_cached_until_an_event_invalidates_them() {
        let bus = LocalBus::default();
        let (allow, asked) = (Arc::new(AtomicBool::new(true)), Arc::new(AtomicU64::new(0)));
        responder(&bus, allow.clone(), asked.clone()).await;
        let client = Arc::new(PermissionClient::new(
            Arc::new(bus.clone()),
            1_000,
            Duration::from_secs(60),
            Duration::from_secs(5),
        ));
        client.clone().follow().await.unwrap();
        let send = ConversationAction::Send;

        assert!(client.check("amy", "g:team", send).await.unwrap().allowed);
        assert!(client.check("amy", "g:team", send).await.unwrap().allowed);
        assert_eq!(
            asked.load(Ordering::SeqCst),
            1,
            "the second check came from the cache"
        );

        allow.store(false, Ordering::SeqCst);
        assert!(
            !client.apply(bus::MEMBER, b"\xff"),
            "a malformed event is not applied"
        );
        assert!(client.apply(bus::MEMBER, &removal("other")));
        assert!(
            client.check("amy", "g:team", send).await.unwrap().allowed,
            "another group's event"
        );
        assert!(client.apply(bus::MEMBER, &removal("team")));
        let decision = client.check("amy", "g:team", send).await.unwrap();
        assert!(
            !decision.allowed,
            "the very next check after the event asks afresh"
        );
        assert_eq!(decision.code, ErrorCode::NotAMember as i32);
        assert_eq!(client.applied(), 2);
    }

    #[tokio::test]
    async fn an_answer_fetched_before_an_event_is_not_cached_after_it() {
        let bus = LocalBus::default();
        let mut requests = bus.queue_subscribe(bus::AUTH, "business").await.unwrap();
        let client = Arc::new(PermissionClient::new(
            Arc::new(bus.clone()),
            1_000,
            Duration::from_secs(60),
            Duration::from_secs(5),
        ));
        client.clone().follow().await.unwrap();
        let asking = tokio::spawn({
            let client = client.clone();
            async move {
                client
                    .check("amy", "g:team", ConversationAction::Send)
                    .await
            }
        });
        // The question is out; the removal lands before the (stale) allow comes back.
        let question = requests.next().await.unwrap();
        client.apply(bus::MEMBER, &removal("team"));
        let stale = PermissionDecision {
            allowed: true,
            ttl_ms: 60_000,
            ..Default::default()
        };
        respond(&bus, &question, encode(&stale)).await.unwrap();
        assert!(
            asking.await.unwrap().unwrap().allowed,
            "the caller gets the answer it asked for"
        );

        let again = tokio::spawn({
            let client = client.clone();
            async move {
                client
                    .check("amy", "g:team", ConversationAction::Send)
                    .await
            }
        });
        let question = requests
            .next()
            .await
            .expect("asked again: the stale allow was not cached");
        let deny = PermissionDecision {
            allowed: false,
            ttl_ms: 60_000,
            ..Default::default()
        };
        respond(&bus, &question, encode(&deny)).await.unwrap();
        assert!(!again.await.unwrap().unwrap().allowed);
    }

    #[tokio::test]
    async fn blocks_and_deactivations_reach_direct_conversations() {
        let bus = LocalBus::default();
        let (allow, asked) = (Arc::new(AtomicBool::new(true)), Arc::new(AtomicU64::new(0)));
        responder(&bus, allow, asked.clone()).await;
        let client = Arc::new(PermissionClient::new(
            Arc::new(bus.clone()),
            1_000,
            Duration::from_secs(60),
            Duration::from_secs(5),
        ));
        client.clone().follow().await.unwrap();
        let send = ConversationAction::Send;
        client.check("bob", "d:amy:bob", send).await.unwrap();
        let block = BanEvent {
            kind: BanKind::UserBlocked.into(),
            user_id: "amy".into(),
            target_user_id: "bob".into(),
            ..Default::default()
        };
        client.apply(bus::BAN, &encode(&block));
        client.check("bob", "d:amy:bob", send).await.unwrap();
        assert_eq!(
            asked.load(Ordering::SeqCst),
            2,
            "the block dropped the cached decision"
        );
        let gone = BanEvent {
            kind: BanKind::UserDeactivated.into(),
            user_id: "amy".into(),
            ..Default::default()
        };
        client.apply(bus::BAN, &encode(&gone));
        client.check("bob", "d:amy:bob", send).await.unwrap();
        assert_eq!(
            asked.load(Ordering::SeqCst),
            3,
            "so did the peer's deactivation"
        );
    }
}

#[cfg(test)]
mod unfollowed {

    use super::*;
    use crate::bus::{LocalBus, respond};

    #[tokio::test]
    async fn without_events_nothing_is_cached() {
        let bus = LocalBus::default();
        let mut requests = bus.queue_subscribe(bus::AUTH, "business").await.unwrap();
        let asked = Arc::new(AtomicU64::new(0));
        let answering = bus.clone();
        let count = asked.clone();
        tokio::spawn(async move {
            while let Some(message) = requests.next().await {
                count.fetch_add(1, Ordering::SeqCst);
                let allow = PermissionDecision {
                    allowed: true,
                    ttl_ms: 60_000,
                    ..Default::default()
                };
                respond(&answering, &message, encode(&allow)).await.unwrap();
            }
        });
        let client = PermissionClient::new(
            Arc::new(bus),
            100,
            Duration::from_secs(60),
            Duration::from_secs(5),
        );
        client
            .check("amy", "g:team", ConversationAction::Send)
            .await
            .unwrap();
        client
            .check("amy", "g:team", ConversationAction::Send)
            .await
            .unwrap();
        assert_eq!(
            asked.load(Ordering::SeqCst),
            2,
            "a client that follows no events asks every time"
        );
    }
}
