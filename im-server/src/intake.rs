//! The node's one event intake: a single task takes every followed event (see
//! [`crate::events`]) and applies it to the node's parts in a fixed order:
//!
//! 1. the token verifier (a revocation or deactivation refuses tokens from then on);
//! 2. the permission cache (decisions the event may have changed are dropped);
//! 3. the member directory (the group's member list is dropped);
//! 4. the sessions (conversation pushes to members added or removed, sessions ended, devices
//!    replaced, presence pushed to watchers).
//!
//! So by the time a session hears of a change, nothing this node caches still contradicts it:
//! a member told it was added finds its first send allowed, a revoked device cannot log in
//! again with the old token while its session ends.
//!
//! The caches follow the bus link too: while it is down, events may be lost, so they cache
//! nothing; when it is back they start from scratch.

use std::sync::Arc;

use async_trait::async_trait;
use im_common::{auth::TokenVerifier, bus::LinkState};
use im_proto::{
    ConversationId, GroupId, UserId,
    v1::{BanKind, ConversationState, ErrorCode, GroupChange, MemberChange, server_frame},
};
use tokio::sync::watch;

use crate::{
    business::{Directory, Permissions},
    events::{Event, Subscriptions},
    messaging::{Messaging, left},
    sessions::{Outbound, Sessions},
    wire,
};

/// What an event does to this node's sessions: the last stage of the intake.
#[async_trait]
pub trait SessionEffects: Send + Sync + 'static {
    /// Applies `event`; `known_members` is the member list of the event's group that the
    /// directory dropped, if it had one (whom to tell of a dismissed group).
    async fn apply(&self, event: &Event, known_members: Option<Arc<[String]>>);
}

/// The stages of the intake, applied in their order.
pub struct Intake {
    verifier: Arc<TokenVerifier>,
    permissions: Arc<Permissions>,
    directory: Arc<Directory>,
    sessions: Arc<dyn SessionEffects>,
}

impl std::fmt::Debug for Intake {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Intake").finish_non_exhaustive()
    }
}

impl Intake {
    /// An intake over the node's parts.
    pub fn new(
        verifier: Arc<TokenVerifier>,
        permissions: Arc<Permissions>,
        directory: Arc<Directory>,
        sessions: Arc<dyn SessionEffects>,
    ) -> Self {
        Self {
            verifier,
            permissions,
            directory,
            sessions,
        }
    }

    /// Applies one event, stage by stage.
    pub async fn apply(&self, event: &Event) {
        if let Event::Ban(ban) = event {
            self.verifier.apply(ban);
        }
        self.permissions.apply(event);
        let known_members = self.directory.apply(event);
        self.sessions.apply(event, known_members).await;
    }

    fn follow(&self, following: bool) {
        if following {
            self.permissions.resume();
            self.directory.resume();
        } else {
            self.permissions.pause();
            self.directory.pause();
        }
    }

    /// Applies every event of `subscriptions` until the bus is gone, and follows `link`: the
    /// caches cache only while it is up. Subscribe before starting this, so nothing published
    /// after the subscriptions were made is missed.
    pub async fn run(self, mut subscriptions: Subscriptions, mut link: watch::Receiver<LinkState>) {
        self.follow(link.borrow_and_update().connected);
        loop {
            tokio::select! {
                event = subscriptions.next() => match event {
                    Some(event) => self.apply(&event).await,
                    None => break,
                },
                changed = link.changed() => {
                    if changed.is_err() {
                        break;
                    }
                    let state = *link.borrow_and_update();
                    if !state.connected {
                        tracing::warn!("bus link down: nothing is cached until it is back");
                    }
                    self.follow(state.connected);
                }
            }
        }
        // Without events nothing may be served from the caches any more.
        self.follow(false);
    }
}

/// The sessions of a core node, as events change them.
pub struct NodeSessions {
    messaging: Arc<Messaging>,
    sessions: Arc<Sessions>,
    node_id: String,
}

impl std::fmt::Debug for NodeSessions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeSessions")
            .field("node_id", &self.node_id)
            .finish_non_exhaustive()
    }
}

impl NodeSessions {
    /// The sessions of node `node_id`.
    pub fn new(messaging: Arc<Messaging>, sessions: Arc<Sessions>, node_id: &str) -> Self {
        Self {
            messaging,
            sessions,
            node_id: node_id.to_owned(),
        }
    }

    fn push_state(&self, user: &str, state: ConversationState) {
        let frame = Outbound {
            frame: wire::frame(0, server_frame::Body::Conversation(state)),
            entry: None,
        };
        self.sessions.deliver([user], frame, None, None);
    }
}

/// The state of a group its members are no longer in.
fn inactive(group: &GroupId) -> ConversationState {
    left(&ConversationId::group(group.clone()).to_string())
}

#[async_trait]
impl SessionEffects for NodeSessions {
    async fn apply(&self, event: &Event, known_members: Option<Arc<[String]>>) {
        match event {
            Event::Member(event) => {
                let Ok(group) = GroupId::new(event.group_id.as_str()) else {
                    return;
                };
                match event.change() {
                    MemberChange::Added => {
                        let online = event.user_ids.iter().filter(|u| self.sessions.is_online(u));
                        for user in online.filter_map(|u| UserId::new(u.as_str()).ok()) {
                            match self.messaging.joined(&user, &group).await {
                                Ok(state) => self.push_state(user.as_str(), state),
                                Err(error) => {
                                    tracing::warn!(code = ?error.code(), "joined state not pushed");
                                }
                            }
                        }
                    }
                    MemberChange::Removed | MemberChange::Left => {
                        for user in &event.user_ids {
                            self.push_state(user, inactive(&group));
                        }
                    }
                    _ => {}
                }
            }
            // The member list this node had says whom to tell now; the others learn it from
            // their next sync.
            Event::Group(event) if event.change() == GroupChange::Dismissed => {
                let Ok(group) = GroupId::new(event.group_id.as_str()) else {
                    return;
                };
                for user in known_members.iter().flat_map(|m| m.iter()) {
                    self.push_state(user, inactive(&group));
                }
            }
            Event::Group(_) => {}
            Event::Ban(event) => match event.kind() {
                BanKind::TokensRevoked => {
                    let device = (!event.device_id.is_empty()).then_some(event.device_id.as_str());
                    self.sessions.end_sessions(
                        &event.user_id,
                        device,
                        event.until_ms,
                        ErrorCode::TokenRevoked,
                    );
                }
                BanKind::UserDeactivated => {
                    self.sessions.end_sessions(
                        &event.user_id,
                        None,
                        i64::MAX,
                        ErrorCode::UserDisabled,
                    );
                }
                _ => {}
            },
            Event::Route(event) => {
                if event.online && event.node_id != self.node_id {
                    self.sessions.replaced_elsewhere(
                        &event.user_id,
                        &event.device_id,
                        event.connected_at_ms,
                    );
                }
            }
            Event::Presence(event) => {
                if let Some(presence) = &event.presence {
                    let frame = Outbound {
                        frame: wire::frame(0, server_frame::Body::Presence(presence.clone())),
                        entry: None,
                    };
                    self.sessions.deliver_to_watchers(&presence.user_id, frame);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::{
        sync::{
            Mutex,
            atomic::{AtomicU64, Ordering},
        },
        time::Duration,
    };

    use im_common::{
        auth::TokenIssuer,
        bus::{Bus, LocalBus, encode, respond},
    };
    use im_proto::{
        ConversationId, GroupId, UserId, bus,
        v1::{BanEvent, ConversationAction, MemberEvent, MemberList, PermissionDecision},
    };

    use super::*;

    const SECRET: &[u8] = b"a-test-secret-of-at-least-32-bytes!";

    /// What the earlier stages held when the sessions stage ran.
    #[derive(Default)]
    struct Seen {
        events: Vec<(bool, bool, bool)>,
    }

    /// A sessions stage that records, when it runs, whether the verifier refuses amy's old
    /// token, whether bob's decision is still cached, and whether team's list is.
    struct Recorder {
        seen: Mutex<Seen>,
        verifier: Arc<TokenVerifier>,
        token: String,
        permissions: Arc<Permissions>,
        directory: Arc<Directory>,
        asked: Arc<AtomicU64>,
    }

    #[async_trait]
    impl SessionEffects for Recorder {
        async fn apply(&self, _event: &Event, _known: Option<Arc<[String]>>) {
            let refused = self.verifier.verify(&self.token, "phone").is_err();
            let before = self.asked.load(Ordering::SeqCst);
            self.permissions
                .check(
                    &UserId::new("bob").unwrap(),
                    &"g:team".parse::<ConversationId>().unwrap(),
                    ConversationAction::Send,
                )
                .await
                .unwrap();
            let decision_cached = self.asked.load(Ordering::SeqCst) == before;
            let members_before = self.asked.load(Ordering::SeqCst);
            self.directory
                .members(&GroupId::new("team").unwrap())
                .await
                .unwrap();
            let list_cached = self.asked.load(Ordering::SeqCst) == members_before;
            self.seen
                .lock()
                .unwrap()
                .events
                .push((refused, decision_cached, list_cached));
        }
    }

    /// Business responders for `im.auth` and `im.members` that count every question.
    async fn business(bus: &LocalBus, asked: Arc<AtomicU64>) {
        let mut checks = bus.queue_subscribe(bus::AUTH, "business").await.unwrap();
        let mut lists = bus.queue_subscribe(bus::MEMBERS, "business").await.unwrap();
        let answering = bus.clone();
        tokio::spawn(async move {
            loop {
                let (message, answer) = tokio::select! {
                    Some(m) = checks.next() => {
                        let allow = PermissionDecision { allowed: true, ttl_ms: 60_000, ..Default::default() };
                        (m, encode(&allow))
                    }
                    Some(m) = lists.next() => {
                        let list = MemberList { user_ids: vec!["amy".into(), "bob".into()], ..Default::default() };
                        (m, encode(&list))
                    }
                    else => break,
                };
                asked.fetch_add(1, Ordering::SeqCst);
                respond(&answering, &message, answer).await.unwrap();
            }
        });
    }

    #[tokio::test(start_paused = true)]
    async fn every_stage_has_applied_an_event_before_the_sessions_hear_of_it() {
        let bus = LocalBus::default();
        let asked = Arc::new(AtomicU64::new(0));
        business(&bus, asked.clone()).await;
        let shared: Arc<dyn Bus> = Arc::new(bus.clone());
        let verifier = Arc::new(TokenVerifier::new(SECRET, None).unwrap());
        let now = im_common::now_ms();
        let token = TokenIssuer::new(SECRET)
            .issue("amy", "phone", now, 60_000)
            .unwrap();
        let permissions = Arc::new(Permissions::new(
            shared.clone(),
            100,
            Duration::from_secs(60),
            Duration::from_secs(5),
        ));
        let directory = Arc::new(Directory::new(shared.clone(), 100, Duration::from_secs(5)));
        let recorder = Arc::new(Recorder {
            seen: Mutex::default(),
            verifier: verifier.clone(),
            token,
            permissions: permissions.clone(),
            directory: directory.clone(),
            asked: asked.clone(),
        });
        let intake = Intake::new(
            verifier,
            permissions.clone(),
            directory.clone(),
            recorder.clone(),
        );
        let subscriptions = Subscriptions::subscribe(shared.as_ref()).await.unwrap();
        let (_link, link) = watch::channel(LinkState::UP);
        tokio::spawn(intake.run(subscriptions, link));

        // The first event fills both caches through the recorder; the second finds them full
        // unless the stages before the sessions dropped what it changed. (Subjects are not
        // ordered with respect to each other: each event is awaited before the next.)
        let added = MemberEvent {
            group_id: "team".into(),
            change: MemberChange::Added.into(),
            user_ids: vec!["bob".into()],
            ..Default::default()
        };
        let revoked = BanEvent {
            kind: BanKind::TokensRevoked.into(),
            user_id: "amy".into(),
            until_ms: now + 1,
            ..Default::default()
        };
        let applied = async |count: usize| {
            for _ in 0..500 {
                if recorder.seen.lock().unwrap().events.len() == count {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            panic!("event {count} was never applied");
        };
        shared.emit(&added).await.unwrap();
        applied(1).await;
        shared.emit(&added).await.unwrap();
        applied(2).await;
        shared.emit(&revoked).await.unwrap();
        applied(3).await;
        let seen = std::mem::take(&mut recorder.seen.lock().unwrap().events);
        assert_eq!(
            seen,
            [
                (false, false, false),
                // The membership change had dropped bob's decision and team's list.
                (false, false, false),
                // The revocation reached the verifier first; it changes no cached answer.
                (true, true, true),
            ]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn the_caches_cache_nothing_while_the_link_is_down() {
        let bus = LocalBus::default();
        let asked = Arc::new(AtomicU64::new(0));
        business(&bus, asked.clone()).await;
        let shared: Arc<dyn Bus> = Arc::new(bus.clone());
        let permissions = Arc::new(Permissions::new(
            shared.clone(),
            100,
            Duration::from_secs(60),
            Duration::from_secs(5),
        ));
        let directory = Arc::new(Directory::new(shared.clone(), 100, Duration::from_secs(5)));
        struct Nothing;
        #[async_trait]
        impl SessionEffects for Nothing {
            async fn apply(&self, _: &Event, _: Option<Arc<[String]>>) {}
        }
        let intake = Intake::new(
            Arc::new(TokenVerifier::new(SECRET, None).unwrap()),
            permissions.clone(),
            directory.clone(),
            Arc::new(Nothing),
        );
        let subscriptions = Subscriptions::subscribe(shared.as_ref()).await.unwrap();
        let (link_state, link) = watch::channel(LinkState::UP);
        tokio::spawn(intake.run(subscriptions, link));
        let (bob, team) = (UserId::new("bob").unwrap(), "g:team".parse().unwrap());
        let check = || permissions.check(&bob, &team, ConversationAction::Send);
        let asks = || asked.load(Ordering::SeqCst);
        // Checks until one is served from the cache (the intake follows from its start).
        let until_cached = async || {
            for _ in 0..500 {
                let before = asks();
                check().await.unwrap();
                if asks() == before {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            panic!("never cached");
        };

        until_cached().await;
        let cached = asks();
        check().await.unwrap();
        assert_eq!(asks(), cached, "cached while the link is up");

        link_state.send_replace(LinkState {
            connected: false,
            reconnections: 0,
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        check().await.unwrap();
        check().await.unwrap();
        assert_eq!(
            asks(),
            cached + 2,
            "asked every time while the link is down"
        );
        directory
            .members(&GroupId::new("team").unwrap())
            .await
            .unwrap();
        directory
            .members(&GroupId::new("team").unwrap())
            .await
            .unwrap();
        assert_eq!(asks(), cached + 4, "member lists too");

        link_state.send_replace(LinkState {
            connected: true,
            reconnections: 1,
        });
        until_cached().await;
    }
}
