//! A whole embedded system for tests: the business service (its real SQLite store and bus
//! responders) and the core service with its gateway on an ephemeral port, on one in-process
//! bus. Clients are real WebSocket connections.

#![allow(dead_code, unreachable_pub)]

pub mod client;

use std::{net::SocketAddr, sync::Arc};

use im_business::{
    Actor, Business, BusinessConfig, NewGroup, responder::serve_bus_requests, store::SqliteStore,
};
use im_common::{
    auth::{TokenIssuer, TokenVerifier},
    bus::{Bus, LocalBus},
};
use im_server::{
    push::PushHook,
    server::{Parts, RunningCore, start_with},
    settings::CoreSettings,
    store::{MessageStore, SqliteMessageStore},
};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

pub use client::*;

pub const SECRET: &str = "a-test-token-secret-of-at-least-32-bytes";

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_millis() as i64
}

pub struct World {
    pub addr: SocketAddr,
    pub http_addr: SocketAddr,
    pub business: Arc<Business>,
    pub bus: Arc<dyn Bus>,
    pub settings: CoreSettings,
    issuer: TokenIssuer,
    shutdown: CancellationToken,
    core: Option<RunningCore>,
    _responders: JoinSet<()>,
    pub dir: tempfile::TempDir,
}

/// A system with the default settings.
pub async fn world() -> World {
    world_with(|_| {}).await
}

/// A system whose core settings `tune` adjusts.
pub async fn world_with(tune: impl FnOnce(&mut CoreSettings)) -> World {
    world_with_store(tune, |store| store).await
}

/// A system whose message store `wrap` may wrap (to slow it down, say).
pub async fn world_with_store(
    tune: impl FnOnce(&mut CoreSettings),
    wrap: impl FnOnce(Arc<dyn MessageStore>) -> Arc<dyn MessageStore>,
) -> World {
    world_built(tune, wrap, None).await
}

/// A system whose offline entries go to `push`.
pub async fn world_with_push(push: Arc<dyn PushHook>) -> World {
    world_built(|_| {}, |store| store, Some(push)).await
}

async fn world_built(
    tune: impl FnOnce(&mut CoreSettings),
    wrap: impl FnOnce(Arc<dyn MessageStore>) -> Arc<dyn MessageStore>,
    push: Option<Arc<dyn PushHook>>,
) -> World {
    let dir = tempfile::tempdir().expect("temporary directory");
    let bus: Arc<dyn Bus> = Arc::new(LocalBus::default());
    let store = SqliteStore::open(&dir.path().join("business.db"), 4)
        .await
        .expect("business store");
    let business = Arc::new(
        Business::new(
            Arc::new(store),
            bus.clone(),
            TokenIssuer::new(SECRET.as_bytes()),
            BusinessConfig::default(),
            "business-test",
        )
        .await
        .expect("business"),
    );
    let responders = serve_bus_requests(business.clone(), bus.clone())
        .await
        .expect("responders");
    let mut settings = CoreSettings {
        listen: "127.0.0.1:0".parse().expect("address"),
        http_listen: "127.0.0.1:0".parse().expect("address"),
        database: dir.path().join("messages.db").display().to_string(),
        token_secret: SECRET.into(),
        ..CoreSettings::default()
    };
    tune(&mut settings);
    let shutdown = CancellationToken::new();
    let verifier = Arc::new(TokenVerifier::new(SECRET.as_bytes(), None).expect("verifier"));
    let store = SqliteMessageStore::open(
        std::path::Path::new(&settings.database),
        settings.max_connections,
    )
    .await
    .expect("message store");
    let mut parts = Parts::embedded(wrap(Arc::new(store)), &settings, bus.as_ref())
        .await
        .expect("parts");
    if let Some(push) = push {
        parts.push = push;
    }
    let core = start_with(&settings, bus.clone(), verifier, parts, shutdown.clone())
        .await
        .expect("core starts");
    World {
        addr: core.addr,
        http_addr: core.http_addr,
        business,
        bus,
        settings,
        issuer: TokenIssuer::new(SECRET.as_bytes()),
        shutdown,
        core: Some(core),
        _responders: responders,
        dir,
    }
}

impl World {
    pub async fn users(&self, ids: &[&str]) {
        for id in ids {
            self.business
                .upsert_user(&Actor::App, id, id, "", "{}")
                .await
                .expect("user");
        }
    }

    pub fn token(&self, user: &str, device: &str) -> String {
        self.issuer
            .issue(user, device, now_ms(), 3_600_000)
            .expect("token")
    }

    pub async fn connect(&self, user: &str, device: &str) -> Client {
        Client::connect(self.addr, &self.token(user, device), device).await
    }

    /// A group owned by `owner` with `members`.
    pub async fn group(&self, id: &str, owner: &str, members: &[&str]) {
        self.business
            .create_group(
                &Actor::App,
                NewGroup {
                    group_id: id.into(),
                    name: id.into(),
                    owner_user_id: owner.into(),
                    member_user_ids: members.iter().map(|m| m.to_string()).collect(),
                    ..Default::default()
                },
            )
            .await
            .expect("group");
    }

    /// Stops the core gracefully; returns when every connection is closed and every queued
    /// send is stored.
    pub async fn stop(&mut self) {
        self.shutdown.cancel();
        if let Some(core) = self.core.take() {
            core.stopped().await;
        }
    }
}
