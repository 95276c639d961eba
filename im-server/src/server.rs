//! Running the core service: its store, the messaging and presence modules, the gateway, and
//! the bus subscriptions that keep them current, with a graceful shutdown. The all-in-one
//! binary composes it with the business service on one in-process bus; in the distributed
//! mode several core nodes share NATS, Redis and a database.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use im_common::{
    auth::TokenVerifier,
    bus::{Bus, BusError, Subscription, encode},
    outbox::{PUSH_KEPT, PUSH_STREAM},
    permission::PermissionClient,
    settings::{Database, SettingsError, without_password},
};
use im_proto::{
    bus,
    v1::{
        BanEvent, BanKind, ConversationState, ConversationType, ErrorCode, GroupChange, GroupEvent,
        MemberChange, MemberEvent, PresenceChanged, RevocationList, RevocationsQuery, RouteChanged,
        server_frame,
    },
};
use prost::Message;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::{
    directory::Directory,
    gateway::Gateway,
    limits::{LocalSendRate, SendRate},
    messaging::{Messaging, MessagingTasks},
    presence::{MemoryPresence, PresenceStore},
    push::{LogPush, OutboxPush, PushHook},
    router::Router,
    sessions::{Outbound, Sessions},
    settings::CoreSettings,
    store::{MessageStore, SqliteMessageStore},
    wire,
};

/// Why the service could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// Bad settings.
    #[error(transparent)]
    Settings(#[from] SettingsError),
    /// The database could not be opened.
    #[error("database {path}: {reason}")]
    Database {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
    /// The listener could not be bound.
    #[error("listen on {addr}: {source}")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The bus refused a subscription.
    #[error("bus: {0}")]
    Bus(#[from] BusError),
    /// Redis could not be used.
    #[error("redis: {0}")]
    Redis(String),
    /// The node id is taken, or could not be claimed.
    #[error(transparent)]
    Claim(#[from] crate::claim::ClaimError),
}

/// A running core service.
#[derive(Debug)]
pub struct RunningCore {
    /// Where the gateway listens (`ws://<addr>/ws`).
    pub addr: SocketAddr,
    /// Where `/healthz`, `/readyz` and `/metrics` are served.
    pub http_addr: SocketAddr,
    /// The node's sessions.
    pub sessions: Arc<Sessions>,
    gateway: JoinHandle<()>,
    ops: (CancellationToken, JoinHandle<()>),
    background: Background,
    messaging: MessagingTasks,
}

impl RunningCore {
    /// Waits until the gateway has closed every connection (after the shutdown token fired)
    /// and every acknowledged send is stored.
    pub async fn stopped(mut self) {
        let _ = self.gateway.await;
        self.ops.0.cancel();
        let _ = self.ops.1.await;
        let background = std::mem::take(&mut self.background.0);
        for task in &background {
            task.abort();
        }
        for task in background {
            let _ = task.await;
        }
        self.messaging.finished().await;
    }
}

/// The node's background tasks, aborted when dropped.
#[derive(Debug, Default)]
struct Background(Vec<JoinHandle<()>>);

impl Background {
    fn push(&mut self, task: JoinHandle<()>) {
        self.0.push(task);
    }

    fn extend(&mut self, tasks: impl IntoIterator<Item = JoinHandle<()>>) {
        self.0.extend(tasks);
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        for task in &self.0 {
            task.abort();
        }
    }
}

/// What the core service is built from; [`start`] fills them in from the settings.
pub struct Parts {
    /// Where messages are stored.
    pub store: Arc<dyn MessageStore>,
    /// Where presence (and, across nodes, routes) are kept.
    pub presence: Arc<dyn PresenceStore>,
    /// Each user's message rate.
    pub send_rate: Arc<dyn SendRate>,
    /// Told about entries for offline users.
    pub push: Arc<dyn PushHook>,
}

impl Parts {
    /// The embedded parts around `store`: presence and rates in memory, offline pushes logged.
    pub fn embedded(store: Arc<dyn MessageStore>, settings: &CoreSettings) -> Self {
        Self {
            store,
            presence: Arc::new(MemoryPresence::default()),
            send_rate: Arc::new(LocalSendRate::new(settings.messages_per_second)),
            push: Arc::new(LogPush),
        }
    }
}

/// The message store the `database` setting names.
async fn open_store(settings: &CoreSettings) -> Result<Arc<dyn MessageStore>, StartError> {
    let database = |reason: String| StartError::Database {
        path: without_password(&settings.database),
        reason,
    };
    match Database::parse(&settings.database) {
        Database::Sqlite(path) => {
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir).map_err(|e| database(e.to_string()))?;
            }
            let store = SqliteMessageStore::open(path, settings.max_connections)
                .await
                .map_err(|e| database(e.to_string()))?;
            Ok(Arc::new(store))
        }
        #[cfg(feature = "postgres")]
        Database::Postgres(url) => {
            let store =
                crate::store::postgres::PgMessageStore::connect(url, settings.max_connections)
                    .await
                    .map_err(|e| database(e.to_string()))?;
            Ok(Arc::new(store))
        }
        #[cfg(feature = "mysql")]
        Database::Mysql(url) => {
            let store =
                crate::store::mysql::MysqlMessageStore::connect(url, settings.max_connections)
                    .await
                    .map_err(|e| database(e.to_string()))?;
            Ok(Arc::new(store))
        }
        #[allow(unreachable_patterns)]
        _ => Err(database(
            "this build has no support for that database (features postgres, mysql)".into(),
        )),
    }
}

/// Starts the core service on the parts its settings name: the message store of `database`;
/// presence, routes and rates in Redis when `redis_url` is set, else in memory; offline pushes
/// into the `IM_PUSH` outbox on NATS, else logged.
pub async fn start(
    settings: &CoreSettings,
    bus: Arc<dyn Bus>,
    verifier: Arc<TokenVerifier>,
    shutdown: CancellationToken,
) -> Result<RunningCore, StartError> {
    settings.validate()?;
    #[allow(unused_mut)]
    let mut parts = Parts::embedded(open_store(settings).await?, settings);
    if !settings.redis_url.is_empty() {
        #[cfg(feature = "redis")]
        {
            // One pool for presence, routes and rates.
            let pool =
                crate::presence::redis::pool(&settings.redis_url).map_err(StartError::Redis)?;
            let lease = i64::try_from(settings.presence_lease_ms).unwrap_or(i64::MAX);
            parts.presence = Arc::new(crate::presence::redis::RedisPresence::new(
                pool.clone(),
                lease,
                &settings.node_id,
            ));
            parts.send_rate = Arc::new(crate::limits::redis::RedisSendRate::new(
                pool,
                settings.messages_per_second,
            ));
        }
        #[cfg(not(feature = "redis"))]
        return Err(StartError::Redis(
            "core.redis_url is set but this build has no Redis support (feature `redis`)".into(),
        ));
    }
    // On NATS, pushes for offline users go through a durable outbox.
    if let Some(outbox) = bus.outbox(PUSH_STREAM, bus::PUSH, PUSH_KEPT).await? {
        parts.push = Arc::new(OutboxPush::new(outbox, &settings.node_id));
    }
    start_with(settings, bus, verifier, parts, shutdown).await
}

/// Starts the core service on the given parts.
pub async fn start_with(
    settings: &CoreSettings,
    bus: Arc<dyn Bus>,
    verifier: Arc<TokenVerifier>,
    parts: Parts,
    shutdown: CancellationToken,
) -> Result<RunningCore, StartError> {
    settings.validate()?;
    // Stopped if the start fails half-way: a node id claim left answering would refuse the
    // next start in this process.
    let mut background = Background(vec![verifier.clone().follow(bus.as_ref()).await?]);
    background.extend(crate::claim::claim(bus.clone(), &settings.node_id).await?);
    load_revocations(bus.as_ref(), &verifier, settings).await?;
    let permissions = Arc::new(PermissionClient::new(
        bus.clone(),
        settings.decision_cache,
        Duration::from_secs(300),
        settings.bus_timeout(),
    ));
    background.push(permissions.clone().follow().await?);
    let directory = Arc::new(Directory::new(
        bus.clone(),
        settings.member_cache_groups,
        settings.bus_timeout(),
    ));
    let sessions = Arc::new(Sessions::new(settings.max_sessions_per_user));
    let router = Arc::new(Router::new(
        &settings.node_id,
        sessions.clone(),
        parts.presence.clone(),
        bus.clone(),
        settings.replay(),
    ));
    let (mut own, mut everyone) = router.subscribe().await?;
    let receiving = router.clone();
    background.push(tokio::spawn(async move {
        loop {
            let message = tokio::select! {
                Some(message) = own.next() => message,
                Some(message) = everyone.next() => message,
                else => break,
            };
            receiving.receive(message.payload);
        }
    }));
    if let Some(reconnections) = bus.reconnections() {
        background.push(tokio::spawn(resync_after_bus_loss(
            reconnections,
            router.clone(),
            sessions.clone(),
        )));
    }
    if parts.presence.shared() {
        background.push(tokio::spawn(renew_leases(
            parts.presence.clone(),
            sessions.clone(),
            settings.lease_renewal(),
        )));
    }
    let (messaging, messaging_tasks) = Messaging::start(
        parts.store,
        permissions,
        directory.clone(),
        router,
        parts.send_rate,
        parts.push,
        settings.clone(),
    );
    let events = Events {
        members: bus.subscribe(bus::MEMBER).await?,
        groups: bus.subscribe(bus::GROUP).await?,
        bans: bus.subscribe(bus::BAN).await?,
        presence: bus.subscribe(bus::PRESENCE).await?,
        routes: bus.subscribe(bus::ROUTE).await?,
    };
    background.push(tokio::spawn(follow_events(
        events,
        messaging.clone(),
        directory,
        sessions.clone(),
        settings.node_id.clone(),
    )));
    let pruned = messaging.clone();
    background.push(tokio::spawn(async move {
        let mut every = tokio::time::interval(Duration::from_secs(60));
        loop {
            every.tick().await;
            pruned.prune_rate_limits();
        }
    }));

    let listener = tokio::net::TcpListener::bind(settings.listen)
        .await
        .map_err(|source| StartError::Listen {
            addr: settings.listen,
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| StartError::Listen {
        addr: settings.listen,
        source,
    })?;
    let bind_error = |addr: SocketAddr| move |source| StartError::Listen { addr, source };
    let http = tokio::net::TcpListener::bind(settings.http_listen)
        .await
        .map_err(bind_error(settings.http_listen))?;
    let http_addr = http
        .local_addr()
        .map_err(bind_error(settings.http_listen))?;
    im_common::metrics::prometheus();
    // Ready until the shutdown begins; the endpoint itself serves until the node has stopped.
    let ready = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let draining = ready.clone();
    let stop = shutdown.clone();
    background.push(tokio::spawn(async move {
        stop.cancelled().await;
        draining.store(false, std::sync::atomic::Ordering::SeqCst);
    }));
    let ops_stop = CancellationToken::new();
    let ops_stopped = ops_stop.clone();
    let ops = tokio::spawn(async move {
        let served = axum::serve(http, crate::ops::router(ready))
            .with_graceful_shutdown(async move { ops_stopped.cancelled().await });
        if let Err(error) = served.await {
            tracing::error!(%error, "operations endpoint failed");
        }
    });
    let gateway = Arc::new(Gateway::new(
        settings.clone(),
        verifier,
        sessions.clone(),
        messaging,
        parts.presence,
        bus,
        shutdown,
    ));
    let gateway = tokio::spawn(gateway.serve(listener));
    tracing::info!(%addr, %http_addr, node = %settings.node_id, "core service listening");
    Ok(RunningCore {
        addr,
        http_addr,
        sessions,
        gateway,
        ops: (ops_stop, ops),
        background,
        messaging: messaging_tasks,
    })
}

/// Revocations asked for per `im.revocations` request.
const REVOCATIONS_PAGE: u32 = 1_000;

/// Applies the token revocations made before this node started, asked of the business service
/// a page at a time (later ones arrive on `im.ban`, followed before this is called). A node
/// that cannot learn them within `business_wait_ms` does not start: it would accept revoked
/// tokens.
async fn load_revocations(
    bus: &dyn Bus,
    verifier: &TokenVerifier,
    settings: &CoreSettings,
) -> Result<(), StartError> {
    let deadline = tokio::time::Instant::now() + Duration::from_millis(settings.business_wait_ms);
    let mut query = RevocationsQuery {
        limit: REVOCATIONS_PAGE,
        ..RevocationsQuery::default()
    };
    let mut loaded = 0;
    loop {
        let asked = bus
            .request(bus::REVOCATIONS, encode(&query), settings.bus_timeout())
            .await
            .and_then(|payload| {
                RevocationList::decode(payload).map_err(|e| BusError::Unavailable(e.to_string()))
            });
        let error = match asked {
            Ok(list) if list.error.is_none() => {
                for revocation in &list.revocations {
                    verifier.apply(revocation);
                }
                loaded += list.revocations.len();
                match list.revocations.last() {
                    // A page that does not move on would be asked forever. (Only the database
                    // orders keys: its collation need not be this process's byte order.)
                    Some(last)
                        if list.more
                            && (&last.user_id, &last.device_id)
                                != (&query.after_user_id, &query.after_device_id) =>
                    {
                        query.after_user_id.clone_from(&last.user_id);
                        query.after_device_id.clone_from(&last.device_id);
                        if tokio::time::Instant::now() < deadline {
                            continue;
                        }
                        BusError::Unavailable("the revocations took too long to load".into())
                    }
                    Some(_) if list.more => {
                        BusError::Unavailable("a page of revocations did not move on".into())
                    }
                    _ => {
                        tracing::info!(revocations = loaded, "token revocations loaded");
                        return Ok(());
                    }
                }
            }
            Ok(list) => BusError::Unavailable(list.error.map(|e| e.message).unwrap_or_default()),
            Err(error) => error,
        };
        if tokio::time::Instant::now() >= deadline {
            return Err(StartError::Bus(error));
        }
        tracing::warn!(%error, "waiting for the business service's revocations");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// While the bus was away, frames other nodes sent to this node's sessions may have been
/// dropped, and so may the batches this node wrote to the broken connection. When it is back,
/// the router publishes its recent batches again, and every session is asked to reconnect
/// (GoAway UNAVAILABLE, after `reconnect_after_ms`): a reconnecting client syncs, so nothing
/// it missed stays missing.
async fn resync_after_bus_loss(
    mut reconnections: tokio::sync::watch::Receiver<u64>,
    router: Arc<Router>,
    sessions: Arc<Sessions>,
) {
    while reconnections.changed().await.is_ok() {
        let replayed = router.replay().await;
        tracing::warn!(
            batches = replayed,
            "the bus came back: recent deliveries published again"
        );
        let count = sessions.count();
        tracing::warn!(
            sessions = count,
            "the bus came back: sessions reconnect to resync"
        );
        metrics::counter!("im_resyncs_after_bus_loss_total").increment(1);
        sessions.end_all(ErrorCode::Unavailable);
    }
}

/// Renews the presence leases of this node's sessions in a shared presence store.
async fn renew_leases(presence: Arc<dyn PresenceStore>, sessions: Arc<Sessions>, every: Duration) {
    let mut ticks = tokio::time::interval(every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let live = sessions.live();
        let renewed = tokio::time::timeout(every, presence.renew(&live, im_common::now_ms()))
            .await
            .unwrap_or_else(|_| Err("timed out".into()));
        match renewed {
            Ok(()) => {
                // A session that closed while the renewal ran was written back: take it out.
                let still: std::collections::HashSet<Arc<str>> =
                    sessions.live().into_iter().map(|s| s.session_id).collect();
                for gone in live.iter().filter(|s| !still.contains(&s.session_id)) {
                    presence
                        .disconnected(&gone.user_id, &gone.session_id, im_common::now_ms())
                        .await;
                }
            }
            Err(error) => {
                // Soon again: a Redis that came back empty knows no routes until then.
                tracing::warn!(%error, sessions = live.len(), "presence leases not renewed");
                ticks.reset_after(Duration::from_millis(200).min(every));
            }
        }
    }
}

struct Events {
    members: Subscription,
    groups: Subscription,
    bans: Subscription,
    presence: Subscription,
    routes: Subscription,
}

/// Applies what other services and nodes announce: membership (member lists, `conversation`
/// pushes), revocations (sessions ended), devices connected on other nodes (their older
/// sessions here replaced), presence changes (pushed to watchers).
async fn follow_events(
    mut events: Events,
    messaging: Arc<Messaging>,
    directory: Arc<Directory>,
    sessions: Arc<Sessions>,
    node_id: String,
) {
    let push_state = |user: &str, state: ConversationState| {
        let frame = Outbound {
            frame: wire::frame(0, server_frame::Body::Conversation(state)),
            entry: None,
        };
        sessions.deliver([user], frame, None, None);
    };
    let inactive = |group_id: &str| ConversationState {
        conversation_id: format!("g:{group_id}"),
        r#type: ConversationType::Group as i32,
        visible_from_seq: 1,
        active: false,
        ..Default::default()
    };
    loop {
        tokio::select! {
            Some(message) = events.members.next() => {
                let Ok(event) = MemberEvent::decode(message.payload) else { continue };
                directory.forget(&event.group_id);
                match event.change() {
                    MemberChange::Added => {
                        for user in event.user_ids.iter().filter(|u| sessions.is_online(u)) {
                            match messaging.joined(user, &event.group_id).await {
                                Ok(state) => push_state(user, state),
                                Err(error) => tracing::warn!(code = error.code, "joined state not pushed"),
                            }
                        }
                    }
                    MemberChange::Removed | MemberChange::Left => {
                        for user in &event.user_ids {
                            push_state(user, inactive(&event.group_id));
                        }
                    }
                    _ => {}
                }
            }
            Some(message) = events.groups.next() => {
                let Ok(event) = GroupEvent::decode(message.payload) else { continue };
                if event.change() == GroupChange::Dismissed {
                    // The member list, if this node still has it, says whom to tell now; the
                    // others learn it from their next sync.
                    if let Some(members) = directory.cached(&event.group_id) {
                        for user in members.iter() {
                            push_state(user, inactive(&event.group_id));
                        }
                    }
                }
                directory.forget(&event.group_id);
            }
            Some(message) = events.bans.next() => {
                let Ok(event) = BanEvent::decode(message.payload) else { continue };
                match event.kind() {
                    BanKind::TokensRevoked => {
                        let device = (!event.device_id.is_empty()).then_some(event.device_id.as_str());
                        sessions.end_sessions(&event.user_id, device, event.until_ms, ErrorCode::TokenRevoked);
                    }
                    BanKind::UserDeactivated => {
                        sessions.end_sessions(&event.user_id, None, i64::MAX, ErrorCode::UserDisabled);
                    }
                    _ => {}
                }
            }
            Some(message) = events.routes.next() => {
                let Ok(event) = RouteChanged::decode(message.payload) else { continue };
                if event.online && event.node_id != node_id {
                    sessions.replaced_elsewhere(&event.user_id, &event.device_id, event.connected_at_ms);
                }
            }
            Some(message) = events.presence.next() => {
                let Ok(event) = PresenceChanged::decode(message.payload) else { continue };
                if let Some(presence) = event.presence {
                    let user = presence.user_id.clone();
                    let frame = Outbound {
                        frame: wire::frame(0, server_frame::Body::Presence(presence)),
                        entry: None,
                    };
                    sessions.deliver_to_watchers(&user, frame);
                }
            }
            else => break,
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use im_common::{
        auth::TokenIssuer,
        bus::{LocalBus, respond},
    };

    use super::*;

    const SECRET: &[u8] = b"a-test-secret-of-at-least-32-bytes!";

    /// A responder serving `revoked` users' revocations in pages of `page`, as the business
    /// service does; returns how many queries it answered.
    async fn serve_pages(
        bus: Arc<dyn Bus>,
        revoked: Vec<String>,
        page: usize,
    ) -> JoinHandle<usize> {
        let mut queries = bus.subscribe(bus::REVOCATIONS).await.unwrap();
        tokio::spawn(async move {
            let mut answered = 0;
            while let Some(message) = queries.next().await {
                let query = RevocationsQuery::decode(message.payload.clone()).unwrap();
                let rest: Vec<&String> = revoked
                    .iter()
                    .filter(|user| user.as_str() > query.after_user_id.as_str())
                    .collect();
                let list = RevocationList {
                    revocations: rest
                        .iter()
                        .take(page)
                        .map(|user| BanEvent {
                            kind: BanKind::TokensRevoked.into(),
                            user_id: (*user).clone(),
                            until_ms: i64::MAX,
                            ..BanEvent::default()
                        })
                        .collect(),
                    more: rest.len() > page,
                    error: None,
                };
                respond(bus.as_ref(), &message, encode(&list))
                    .await
                    .unwrap();
                answered += 1;
                if !list.more {
                    return answered;
                }
            }
            answered
        })
    }

    #[tokio::test]
    async fn a_starting_node_loads_every_page_of_revocations() {
        let bus: Arc<dyn Bus> = Arc::new(LocalBus::default());
        let revoked: Vec<String> = (0..2_500).map(|i| format!("user{i:05}")).collect();
        let responder = serve_pages(bus.clone(), revoked, 1_000).await;
        let verifier = TokenVerifier::new(SECRET, None).unwrap();
        let settings = CoreSettings::default();
        load_revocations(bus.as_ref(), &verifier, &settings)
            .await
            .unwrap();
        assert_eq!(responder.await.unwrap(), 3, "three pages asked for");
        let issuer = TokenIssuer::new(SECRET);
        let token = |user: &str| {
            issuer
                .issue(user, "d", im_common::now_ms(), 60_000)
                .unwrap()
        };
        for user in ["user00000", "user01999", "user02499"] {
            assert!(
                verifier.verify(&token(user), "d").is_err(),
                "{user}'s token is revoked"
            );
        }
        assert!(verifier.verify(&token("someone"), "d").is_ok());
    }
}
