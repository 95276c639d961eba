//! The whole system in the test's process, as the `im-server` binary composes it
//! ([`im_all::System`]): the business service and the core service on one in-process bus,
//! their SQLite files in a directory (a temporary one, or one of the test's that outlives a
//! restart), every listener on an ephemeral port, the secrets [`TOKEN_SECRET`] and
//! [`APP_SECRET`].

use std::{net::SocketAddr, path::PathBuf, sync::Arc};

use im_all::{Services, Settings, System};
use im_business::{Actor, Business, NewGroup, settings::BusinessSettings};
use im_common::{
    bus::{Bus, LocalBus},
    settings::ClusterSettings,
};
use im_server::{
    server::{CoreReload, Parts},
    settings::CoreSettings,
};

use crate::{APP_SECRET, TOKEN_SECRET, client::Client};

type Tune<T> = Box<dyn FnOnce(&mut T) + Send>;

/// How to start an [`Embedded`] system.
#[must_use]
pub struct Builder {
    dir: Option<PathBuf>,
    core: Vec<Tune<CoreSettings>>,
    business: Vec<Tune<BusinessSettings>>,
    parts: Option<Box<dyn FnOnce(Parts) -> Parts + Send>>,
}

impl Builder {
    /// The system keeps its data in `dir` (which outlives it: start another on the same
    /// directory to restart), instead of a temporary directory of its own.
    pub fn dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.dir = Some(dir.into());
        self
    }

    /// `tune` adjusts the core's settings.
    pub fn core(mut self, tune: impl FnOnce(&mut CoreSettings) + Send + 'static) -> Self {
        self.core.push(Box::new(tune));
        self
    }

    /// `tune` adjusts the business service's settings.
    pub fn business(mut self, tune: impl FnOnce(&mut BusinessSettings) + Send + 'static) -> Self {
        self.business.push(Box::new(tune));
        self
    }

    /// `parts` replaces the core's parts (to wrap its store, to hook its offline pushes).
    pub fn parts(mut self, parts: impl FnOnce(Parts) -> Parts + Send + 'static) -> Self {
        self.parts = Some(Box::new(parts));
        self
    }

    /// Starts it; panics if it does not start.
    pub async fn start(self) -> Embedded {
        let (temporary, dir) = match self.dir {
            Some(dir) => (None, dir),
            None => {
                let temporary = tempfile::tempdir().unwrap_or_else(|e| panic!("a directory: {e}"));
                let dir = temporary.path().to_owned();
                (Some(temporary), dir)
            }
        };
        let any: SocketAddr = ([127, 0, 0, 1], 0).into();
        let mut settings = Settings {
            cluster: ClusterSettings {
                token_secret: TOKEN_SECRET.into(),
                ..ClusterSettings::default()
            },
            core: CoreSettings {
                listen: any,
                http_listen: any,
                database: dir.join("messages.db").display().to_string(),
                ..CoreSettings::default()
            },
            business: BusinessSettings {
                http_listen: any,
                grpc_listen: any,
                ops_listen: any,
                database: dir.join("business.db").display().to_string(),
                media_dir: dir.join("media"),
                app_secret: APP_SECRET.into(),
                ..BusinessSettings::default()
            },
        };
        for tune in self.core {
            tune(&mut settings.core);
        }
        for tune in self.business {
            tune(&mut settings.business);
        }
        let bus: Arc<dyn Bus> = Arc::new(LocalBus::default());
        let parts = self.parts;
        let system =
            System::start_with(
                &settings,
                Services::ALL,
                bus.clone(),
                move |made| match parts {
                    Some(replace) => replace(made),
                    None => made,
                },
            )
            .await
            .unwrap_or_else(|e| panic!("the embedded system starts: {e}"));
        let (Some(core), Some(business)) = (&system.core, &system.business) else {
            panic!("both services run");
        };
        Embedded {
            addr: core.addr,
            url: format!("ws://{}/ws", core.addr),
            http_addr: core.http_addr,
            api: business.http_addr,
            grpc: business.grpc_addr,
            business: business.business.clone(),
            media: business.media.clone(),
            bus,
            settings,
            dir,
            system: Some(system),
            _temporary: temporary,
        }
    }
}

/// The whole system, running in the test's process.
pub struct Embedded {
    /// The gateway's address.
    pub addr: SocketAddr,
    /// The gateway: `ws://<addr>/ws`.
    pub url: String,
    /// The core's operations endpoint (`/healthz`, `/readyz`, `/metrics`).
    pub http_addr: SocketAddr,
    /// The business HTTP API.
    pub api: SocketAddr,
    /// The business gRPC API.
    pub grpc: SocketAddr,
    /// The business service itself, for setting up what a test needs.
    pub business: Arc<Business>,
    /// Its media.
    pub media: Arc<im_business::media::Media>,
    /// The bus both services are on.
    pub bus: Arc<dyn Bus>,
    /// The settings it runs with.
    pub settings: Settings,
    /// Where its data is.
    pub dir: PathBuf,
    system: Option<System>,
    _temporary: Option<tempfile::TempDir>,
}

impl std::fmt::Debug for Embedded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Embedded")
            .field("url", &self.url)
            .field("api", &self.api)
            .finish_non_exhaustive()
    }
}

impl Embedded {
    /// How to start one.
    pub fn builder() -> Builder {
        Builder {
            dir: None,
            core: Vec::new(),
            business: Vec::new(),
            parts: None,
        }
    }

    /// One with the default settings, in a temporary directory.
    pub async fn start() -> Self {
        Self::builder().start().await
    }

    /// The business HTTP API's base URL.
    pub fn api_url(&self) -> String {
        format!("http://{}", self.api)
    }

    /// A token for `user` on `device`.
    pub fn token(&self, user: &str, device: &str) -> String {
        crate::token(user, device)
    }

    /// Creates the users `ids` (each named after its id).
    pub async fn users(&self, ids: &[&str]) {
        for id in ids {
            self.business
                .upsert_user(&Actor::App, id, id, "", "{}")
                .await
                .unwrap_or_else(|e| panic!("user {id}: {e}"));
        }
    }

    /// `user` adds `contact` as a contact (which lets `contact` add `user` to groups at once).
    pub async fn contact(&self, user: &str, contact: &str) {
        self.business
            .set_contact(&Actor::App, user, contact, true)
            .await
            .unwrap_or_else(|e| panic!("contact {user} -> {contact}: {e}"));
    }

    /// A group `id` owned by `owner` with `members`.
    pub async fn group(&self, id: &str, owner: &str, members: &[&str]) {
        let group = NewGroup {
            group_id: id.into(),
            name: id.into(),
            owner_user_id: owner.into(),
            member_user_ids: members.iter().map(|m| (*m).to_owned()).collect(),
            ..Default::default()
        };
        self.business
            .create_group(&Actor::App, group)
            .await
            .unwrap_or_else(|e| panic!("group {id}: {e}"));
    }

    /// A raw client of `user` on `device`, welcomed.
    pub async fn connect(&self, user: &str, device: &str) -> Client {
        Client::connect(self.addr, &self.token(user, device), device).await
    }

    /// The core's settings that may change while it runs.
    pub fn reload(&self) -> &CoreReload {
        match self.system.as_ref().and_then(|s| s.core.as_ref()) {
            Some(core) => &core.reload,
            None => panic!("the system was stopped"),
        }
    }

    /// The running system.
    pub fn system(&self) -> Option<&System> {
        self.system.as_ref()
    }

    /// Stops it gracefully: connections get SHUTTING_DOWN, sends in flight are answered and
    /// every acknowledged one is stored.
    pub async fn stop(&mut self) {
        if let Some(system) = self.system.take() {
            system.stop().await;
        }
    }
}
