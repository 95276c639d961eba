//! Running the core service: its store, the messaging and presence modules, the gateway, and
//! the bus subscriptions that keep them current, with a graceful shutdown. The all-in-one
//! binary composes it with the business service on one in-process bus; in the distributed
//! mode several core nodes share NATS, Redis and a database.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use im_common::{
    auth::TokenVerifier,
    bus::{Bus, BusError, LinkState, MEDIA_REFS_KEPT, MEDIA_REFS_STREAM, PUSH_KEPT, PUSH_STREAM},
    process::StartError,
    settings::{ClusterSettings, Database, Live, Reload, live, without_password},
};
use im_proto::{
    bus::{self, BusReply},
    v1::{self, Resync, server_frame},
};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::{
    business::{Directory, Permissions, revocations},
    events::Subscriptions,
    gateway::{self, Gateway},
    intake::{Intake, NodeSessions},
    media_refs::MediaRefs,
    messaging::{self, AfterCommit, Messaging, MessagingTasks},
    presence::{self, MemoryPresence, PresenceService, PresenceStore},
    push::{OutboxPush, PushHook},
    rate::{LocalSendRate, SendRate},
    router::Router,
    sessions::Sessions,
    settings::CoreSettings,
    store::{MessageStore, SqliteMessageStore},
};

/// The queue group core nodes answer shared requests in: each goes to one node.
pub const CORE_QUEUE_GROUP: &str = "im-core";

/// How many notices one node appends at once; more wait their turn.
const CONCURRENT_NOTICES: usize = 64;

/// The settings of a running core node that may change while it runs: a reload applies to
/// what comes after it (the next request, the next connection); one that changes a setting
/// only a restart applies is refused.
#[derive(Debug)]
pub struct CoreReload {
    /// `[core.gateway]`.
    pub gateway: Reload<gateway::Limits>,
    /// `[core.presence]`.
    pub presence: Reload<presence::Limits>,
    /// `[core.messaging]`.
    pub messaging: Reload<messaging::Settings>,
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
    /// Its settings that may change while it runs.
    pub reload: CoreReload,
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
    /// The embedded parts around `store`: presence and rates in memory, offline pushes into
    /// the bus's push outbox (in memory on the in-process bus).
    pub async fn embedded(
        store: Arc<dyn MessageStore>,
        cluster: &ClusterSettings,
        settings: &CoreSettings,
        bus: &dyn Bus,
    ) -> Result<Self, BusError> {
        let pushes = bus.outbox(PUSH_STREAM, bus::PUSH, PUSH_KEPT).await?;
        Ok(Self {
            store,
            presence: Arc::new(MemoryPresence::default()),
            send_rate: Arc::new(LocalSendRate::new(settings.messaging.messages_per_second)),
            push: Arc::new(OutboxPush::new(pushes, &cluster.node_id)),
        })
    }
}

/// The message store the `database` setting names.
async fn open_store(settings: &CoreSettings) -> Result<Arc<dyn MessageStore>, StartError> {
    let database = |source: Box<dyn std::error::Error + Send + Sync>| StartError::Database {
        database: without_password(&settings.database),
        source,
    };
    match Database::parse(&settings.database) {
        Database::Sqlite(path) => {
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir).map_err(|e| database(Box::new(e)))?;
            }
            let store = SqliteMessageStore::open(path, settings.max_connections)
                .await
                .map_err(|e| database(Box::new(e)))?;
            Ok(Arc::new(store))
        }
        #[cfg(feature = "postgres")]
        Database::Postgres(url) => {
            let store =
                crate::store::postgres::PgMessageStore::connect(url, settings.max_connections)
                    .await
                    .map_err(|e| database(Box::new(e)))?;
            Ok(Arc::new(store))
        }
        #[cfg(feature = "mysql")]
        Database::Mysql(url) => {
            let store =
                crate::store::mysql::MysqlMessageStore::connect(url, settings.max_connections)
                    .await
                    .map_err(|e| database(Box::new(e)))?;
            Ok(Arc::new(store))
        }
        #[allow(unreachable_patterns)]
        _ => Err(database(
            "this build has no support for that database (features postgres, mysql)".into(),
        )),
    }
}

/// Starts the core service on the parts its settings name (see [`parts`]).
pub async fn start(
    cluster: &ClusterSettings,
    settings: &CoreSettings,
    bus: Arc<dyn Bus>,
    verifier: Arc<TokenVerifier>,
    shutdown: CancellationToken,
) -> Result<RunningCore, StartError> {
    let parts = parts(cluster, settings, bus.as_ref()).await?;
    start_with(cluster, settings, bus, verifier, parts, shutdown).await
}

/// The parts the settings name: the message store of `database`; presence, routes and rates
/// in Redis when `[cluster] redis_url` is set, else in memory; offline pushes into the bus's
/// `IM_PUSH` outbox.
pub async fn parts(
    cluster: &ClusterSettings,
    settings: &CoreSettings,
    bus: &dyn Bus,
) -> Result<Parts, StartError> {
    cluster.validate()?;
    settings.validate()?;
    #[allow(unused_mut)]
    let mut parts = Parts::embedded(open_store(settings).await?, cluster, settings, bus).await?;
    if !cluster.redis_url.is_empty() {
        #[cfg(feature = "redis")]
        {
            // One pool for presence, routes and rates.
            let pool = crate::presence::redis::pool(&cluster.redis_url)
                .map_err(|e| StartError::Redis(e.into()))?;
            let lease = i64::try_from(settings.presence_lease.as_millis()).unwrap_or(i64::MAX);
            parts.presence = Arc::new(crate::presence::redis::RedisPresence::new(
                pool.clone(),
                lease,
                &cluster.node_id,
            ));
            parts.send_rate = Arc::new(crate::rate::redis::RedisSendRate::new(
                pool,
                settings.messaging.messages_per_second,
            ));
        }
        #[cfg(not(feature = "redis"))]
        return Err(StartError::Redis(
            "cluster.redis_url is set but this build has no Redis support (feature `redis`)".into(),
        ));
    }
    Ok(parts)
}

/// Starts the core service on the given parts.
pub async fn start_with(
    cluster: &ClusterSettings,
    settings: &CoreSettings,
    bus: Arc<dyn Bus>,
    verifier: Arc<TokenVerifier>,
    parts: Parts,
    shutdown: CancellationToken,
) -> Result<RunningCore, StartError> {
    settings.validate()?;
    let node_id = cluster.node_id.as_str();
    // The events this node follows, subscribed before anything that depends on them is asked,
    // so that nothing announced after an answer is missed.
    let subscriptions = Subscriptions::subscribe(bus.as_ref()).await?;
    // Stopped if the start fails half-way: a node id claim left answering would refuse the
    // next start in this process.
    let mut background = Background::default();
    let claimed = crate::claim::claim(bus.clone(), node_id)
        .await
        .map_err(|e| StartError::Node(Box::new(e)))?;
    background.extend(claimed);
    revocations::load(
        bus.as_ref(),
        &verifier,
        settings.business_wait,
        settings.bus_timeout,
    )
    .await?;
    let permissions = Arc::new(Permissions::new(
        bus.clone(),
        settings.decision_cache,
        Duration::from_secs(300),
        settings.bus_timeout,
    ));
    let directory = Arc::new(Directory::new(
        bus.clone(),
        settings.member_cache_groups,
        settings.bus_timeout,
    ));
    let (gateway_reload, gateway_limits) = live(settings.gateway.clone());
    let (presence_reload, presence_limits) = live(settings.presence.clone());
    let (messaging_reload, messaging_settings) = live(settings.messaging.clone());
    let sessions = Arc::new(Sessions::new(settings.gateway.max_sessions_per_user));
    let router = Arc::new(Router::new(
        node_id,
        sessions.clone(),
        parts.presence.clone(),
        bus.clone(),
        settings.replay,
    ));
    background.push(tokio::spawn(router.clone().receive_deliveries().await?));
    background.push(tokio::spawn(resync_after_bus_loss(
        bus.link(),
        router.clone(),
        sessions.clone(),
        gateway_limits.clone(),
    )));
    if parts.presence.shared() {
        background.push(tokio::spawn(renew_leases(
            parts.presence.clone(),
            sessions.clone(),
            settings.lease_renewal(),
        )));
    }
    let media_refs = bus
        .outbox(MEDIA_REFS_STREAM, bus::MEDIA_REF, MEDIA_REFS_KEPT)
        .await?;
    let after_commit = AfterCommit {
        push: parts.push,
        media_refs: Arc::new(MediaRefs::new(media_refs)),
    };
    let (messaging, messaging_tasks) = Messaging::start(
        parts.store,
        permissions.clone(),
        directory.clone(),
        router,
        parts.send_rate,
        after_commit,
        messaging_settings.clone(),
    );
    // Any one node appends a system notice the business service asks for.
    let notices = messaging.clone();
    background.push(tokio::spawn(
        im_common::bus::serve(
            bus.clone(),
            CORE_QUEUE_GROUP,
            CONCURRENT_NOTICES,
            move |write: v1::NoticeWrite| {
                let notices = notices.clone();
                async move {
                    match notices.write_notice(write).await {
                        Ok(ack) => v1::SubmitResult {
                            result: Some(v1::submit_result::Result::Ack(ack)),
                        },
                        Err(error) => v1::SubmitResult::refused(error.to_error()),
                    }
                }
            },
        )
        .await?,
    ));
    // Any one node answers a pull or history page for a user, checked as the user's own
    // (the business service asks before it signs a download of media a message references).
    let pages = messaging.clone();
    let max_page_bytes = settings.gateway.max_frame_bytes as usize;
    background.push(tokio::spawn(
        im_common::bus::serve(
            bus.clone(),
            CORE_QUEUE_GROUP,
            CONCURRENT_NOTICES,
            move |query: v1::HistoryQuery| {
                let pages = pages.clone();
                async move { pages.answer_history(query, max_page_bytes).await }
            },
        )
        .await?,
    ));
    let node_sessions = NodeSessions::new(messaging.clone(), sessions.clone(), node_id);
    let intake = Intake::new(
        verifier.clone(),
        permissions.clone(),
        directory,
        Arc::new(node_sessions),
    );
    background.push(tokio::spawn(intake.run(subscriptions, bus.link())));
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
        .map_err(StartError::listen(settings.listen))?;
    let addr = listener
        .local_addr()
        .map_err(StartError::listen(settings.listen))?;
    let http = tokio::net::TcpListener::bind(settings.http_listen)
        .await
        .map_err(StartError::listen(settings.http_listen))?;
    let http_addr = http
        .local_addr()
        .map_err(StartError::listen(settings.http_listen))?;
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
    let ops = tokio::spawn(im_common::ops::serve(
        http,
        ready,
        ops_stop.clone().cancelled_owned(),
    ));
    let presence = Arc::new(PresenceService::new(
        parts.presence,
        sessions.clone(),
        permissions,
        bus.clone(),
        node_id,
        presence_limits.clone(),
    ));
    // HTTP/1.1 is what a WebSocket upgrade speaks.
    let tls = match &settings.tls {
        Some(files) => Some(files.acceptor(&[b"http/1.1"])?),
        None => None,
    };
    let config = gateway::Config {
        node_id: node_id.to_owned(),
        limits: gateway_limits,
        messaging: messaging_settings,
        presence: presence_limits,
        tls,
    };
    let gateway = Arc::new(Gateway::new(
        config,
        verifier,
        sessions.clone(),
        messaging,
        presence,
        bus,
        shutdown,
    ));
    let gateway = tokio::spawn(gateway.serve(listener));
    tracing::info!(%addr, %http_addr, node = %node_id, "core service listening");
    Ok(RunningCore {
        addr,
        http_addr,
        sessions,
        reload: CoreReload {
            gateway: gateway_reload,
            presence: presence_reload,
            messaging: messaging_reload,
        },
        gateway,
        ops: (ops_stop, ops),
        background,
        messaging: messaging_tasks,
    })
}

/// While the bus was away, frames other nodes sent to this node's sessions may have been
/// dropped, and so may the batches this node wrote to the broken connection. When it is back,
/// the router publishes its recent batches again, and every session is told to sync: by a
/// Resync push on its connection where the client handles one, else by GoAway UNAVAILABLE
/// (the client reconnects and syncs). Each waits its own pick in `reconnect_after ..= 4 *
/// reconnect_after`, so a node's clients do not all sync at once; nothing a client missed
/// stays missing.
async fn resync_after_bus_loss(
    mut link: tokio::sync::watch::Receiver<LinkState>,
    router: Arc<Router>,
    sessions: Arc<Sessions>,
    limits: Live<gateway::Limits>,
) {
    let mut seen = link.borrow_and_update().reconnections;
    while link.changed().await.is_ok() {
        let now = link.borrow_and_update().reconnections;
        if now == seen {
            continue;
        }
        seen = now;
        let replayed = router.replay().await;
        tracing::warn!(
            batches = replayed,
            "the bus came back: recent deliveries published again"
        );
        let after = u64::try_from(limits.get().reconnect_after.as_millis()).unwrap_or(u64::MAX);
        let (resynced, reconnecting) = sessions.resync_all(|| {
            let resync = Resync {
                sync_after_ms: gateway::spread(after),
            };
            crate::wire::frame(0, server_frame::Body::Resync(resync))
        });
        tracing::warn!(
            resynced,
            reconnecting,
            "the bus came back: sessions sync again"
        );
        metrics::counter!("im_resyncs_after_bus_loss_total").increment(1);
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
