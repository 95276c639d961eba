//! Permission decisions as the core asks them: over the bus (`im.auth`) to the business
//! service, behind a cache that the business service's events invalidate (`im.member`,
//! `im.group`, `im.ban`; applied by the node's event intake). A decision's TTL is only a
//! safety net.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use im_common::{
    bus::{Bus, BusError},
    cache::InvalidatedCache,
};
use im_proto::{
    ConversationId, GroupId, UserId,
    v1::{AttachCheck, BanKind, ConversationAction, PermissionCheck, PermissionDecision},
};
use moka::{Expiry, sync::Cache};

use crate::events::Event;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    user_id: UserId,
    conversation: ConversationId,
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
pub struct Permissions {
    bus: Arc<dyn Bus>,
    cache: InvalidatedCache<Key, PermissionDecision>,
    applied: AtomicU64,
    timeout: Duration,
}

impl std::fmt::Debug for Permissions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Permissions")
            .field("cache", &self.cache)
            .finish_non_exhaustive()
    }
}

impl Permissions {
    /// Decisions asked with `timeout`, up to `capacity` of them cached for at most `max_ttl`
    /// each, once the event intake follows the events that invalidate them.
    pub fn new(bus: Arc<dyn Bus>, capacity: u64, max_ttl: Duration, timeout: Duration) -> Self {
        let cache = Cache::builder()
            .max_capacity(capacity)
            .expire_after(DecisionExpiry { max: max_ttl })
            .support_invalidation_closures()
            .build();
        Self {
            bus,
            cache: InvalidatedCache::new(cache),
            applied: AtomicU64::new(0),
            timeout,
        }
    }

    /// May `user_id` do `action` in `conversation`?
    pub async fn check(
        &self,
        user_id: &UserId,
        conversation: &ConversationId,
        action: ConversationAction,
    ) -> Result<PermissionDecision, BusError> {
        let key = Key {
            user_id: user_id.clone(),
            conversation: conversation.clone(),
            action: action as i32,
        };
        let ticket = self.cache.ticket();
        if let Some(decision) = self.cache.get(&key) {
            return Ok(decision);
        }
        let request = PermissionCheck {
            user_id: user_id.to_string(),
            conversation_id: conversation.to_string(),
            action: key.action,
        };
        let decision = self.bus.call(&request, self.timeout).await?;
        if decision.ttl_ms > 0 {
            self.cache.insert(ticket, key, decision.clone());
        }
        Ok(decision)
    }

    /// May `user_id` reference `media_ids` in a message to `conversation`? Asked every time:
    /// media change state (completed, quarantined) without events the core follows.
    pub async fn attach(
        &self,
        user_id: &UserId,
        conversation: &ConversationId,
        media_ids: Vec<String>,
    ) -> Result<PermissionDecision, BusError> {
        let request = AttachCheck {
            user_id: user_id.to_string(),
            conversation_id: conversation.to_string(),
            media_ids,
        };
        self.bus.call(&request, self.timeout).await
    }

    /// Events stopped arriving: nothing is cached until [`Self::resume`].
    pub fn pause(&self) {
        self.cache.pause();
    }

    /// Events flow: decisions are cached (from scratch) until [`Self::pause`].
    pub fn resume(&self) {
        self.cache.resume();
    }

    /// Drops the cached decisions `event` may have changed.
    pub fn apply(&self, event: &Event) {
        let matches: Box<dyn Fn(&Key) -> bool + Send + Sync> = match event {
            // A membership change concerns only the users it lists.
            Event::Member(event) => {
                let Some(conversation) = group(&event.group_id) else {
                    return;
                };
                let users = event.user_ids.clone();
                Box::new(move |k: &Key| {
                    k.conversation == conversation && users.iter().any(|u| u == k.user_id.as_str())
                })
            }
            Event::Group(event) => match group(&event.group_id) {
                Some(conversation) => Box::new(move |k: &Key| k.conversation == conversation),
                None => return,
            },
            Event::Ban(event) => match event.kind() {
                BanKind::MemberMuted | BanKind::MemberUnmuted => match group(&event.group_id) {
                    Some(conversation) => Box::new(move |k: &Key| k.conversation == conversation),
                    None => return,
                },
                BanKind::UserBlocked
                | BanKind::UserUnblocked
                | BanKind::ContactAdded
                | BanKind::ContactRemoved => {
                    let (Ok(a), Ok(b)) = (
                        UserId::new(event.user_id.as_str()),
                        UserId::new(event.target_user_id.as_str()),
                    ) else {
                        return;
                    };
                    let direct = ConversationId::direct(a, b);
                    Box::new(move |k: &Key| k.conversation == direct)
                }
                BanKind::UserDeactivated => {
                    let Ok(user) = UserId::new(event.user_id.as_str()) else {
                        return;
                    };
                    Box::new(move |k: &Key| {
                        k.user_id == user || k.conversation.peer_of(&user).is_some()
                    })
                }
                BanKind::TokensRevoked | BanKind::Unspecified => return,
            },
            Event::Route(_) | Event::Presence(_) => return,
        };
        self.cache.invalidate_if(matches);
        self.applied.fetch_add(1, Ordering::SeqCst);
    }

    /// How many invalidating events have been applied (for tests and metrics).
    pub fn applied(&self) -> u64 {
        self.applied.load(Ordering::SeqCst)
    }
}

fn group(group_id: &str) -> Option<ConversationId> {
    GroupId::new(group_id).ok().map(ConversationId::group)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::sync::atomic::AtomicBool;

    use im_common::bus::{LocalBus, encode, respond};
    use im_proto::{
        bus,
        v1::{BanEvent, ErrorCode, MemberChange, MemberEvent},
    };

    use super::*;

    fn user(id: &str) -> UserId {
        UserId::new(id).unwrap()
    }

    fn conversation(id: &str) -> ConversationId {
        id.parse().unwrap()
    }

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

    fn removal(group_id: &str) -> Event {
        Event::Member(MemberEvent {
            group_id: group_id.into(),
            change: MemberChange::Removed.into(),
            user_ids: vec!["amy".into()],
            ..Default::default()
        })
    }

    fn followed(bus: &LocalBus) -> Arc<Permissions> {
        let permissions = Arc::new(Permissions::new(
            Arc::new(bus.clone()),
            1_000,
            Duration::from_secs(60),
            Duration::from_secs(5),
        ));
        permissions.resume();
        permissions
    }

    #[tokio::test]
    async fn decisions_are_cached_until_an_event_invalidates_them() {
        let bus = LocalBus::default();
        let (allow, asked) = (Arc::new(AtomicBool::new(true)), Arc::new(AtomicU64::new(0)));
        responder(&bus, allow.clone(), asked.clone()).await;
        let client = followed(&bus);
        let send = ConversationAction::Send;
        let (amy, team) = (user("amy"), conversation("g:team"));

        assert!(client.check(&amy, &team, send).await.unwrap().allowed);
        assert!(client.check(&amy, &team, send).await.unwrap().allowed);
        assert_eq!(
            asked.load(Ordering::SeqCst),
            1,
            "the second check came from the cache"
        );

        allow.store(false, Ordering::SeqCst);
        client.apply(&removal("other"));
        assert!(
            client.check(&amy, &team, send).await.unwrap().allowed,
            "another group's event"
        );
        client.apply(&removal("team"));
        let decision = client.check(&amy, &team, send).await.unwrap();
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
        let client = followed(&bus);
        let asking = tokio::spawn({
            let client = client.clone();
            async move {
                client
                    .check(
                        &user("amy"),
                        &conversation("g:team"),
                        ConversationAction::Send,
                    )
                    .await
            }
        });
        // The question is out; the removal lands before the (stale) allow comes back.
        let question = requests.next().await.unwrap();
        client.apply(&removal("team"));
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
                    .check(
                        &user("amy"),
                        &conversation("g:team"),
                        ConversationAction::Send,
                    )
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
        let client = followed(&bus);
        let send = ConversationAction::Send;
        let (bob, direct) = (user("bob"), conversation("d:amy:bob"));
        client.check(&bob, &direct, send).await.unwrap();
        client.apply(&Event::Ban(BanEvent {
            kind: BanKind::UserBlocked.into(),
            user_id: "amy".into(),
            target_user_id: "bob".into(),
            ..Default::default()
        }));
        client.check(&bob, &direct, send).await.unwrap();
        assert_eq!(
            asked.load(Ordering::SeqCst),
            2,
            "the block dropped the cached decision"
        );
        client.apply(&Event::Ban(BanEvent {
            kind: BanKind::UserDeactivated.into(),
            user_id: "amy".into(),
            ..Default::default()
        }));
        client.check(&bob, &direct, send).await.unwrap();
        assert_eq!(
            asked.load(Ordering::SeqCst),
            3,
            "so did the peer's deactivation"
        );
    }

    #[tokio::test]
    async fn without_events_nothing_is_cached() {
        let bus = LocalBus::default();
        let (allow, asked) = (Arc::new(AtomicBool::new(true)), Arc::new(AtomicU64::new(0)));
        responder(&bus, allow, asked.clone()).await;
        let client = Permissions::new(
            Arc::new(bus),
            100,
            Duration::from_secs(60),
            Duration::from_secs(5),
        );
        let (amy, team) = (user("amy"), conversation("g:team"));
        client
            .check(&amy, &team, ConversationAction::Send)
            .await
            .unwrap();
        client
            .check(&amy, &team, ConversationAction::Send)
            .await
            .unwrap();
        assert_eq!(
            asked.load(Ordering::SeqCst),
            2,
            "a client that follows no events asks every time"
        );
    }
}
