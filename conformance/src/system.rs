//! The system under test: where its WebSocket gateway and business API are, the admin calls
//! scenarios need (through the business HTTP API with the app secret), and the embedded system
//! the runner starts by itself.

use std::{net::SocketAddr, path::Path, sync::Arc};

use im_business::settings::BusinessSettings;
use im_common::{
    auth::TokenVerifier,
    bus::{Bus, LocalBus},
};
use im_server::settings::CoreSettings;
use reqwest::Method;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

/// Where the system under test listens.
#[derive(Debug, Clone)]
pub struct Target {
    /// The gateway: `ws://host:port/ws`.
    pub url: String,
    /// The business HTTP API: `http://host:port`.
    pub api: String,
    /// The app secret of the business API.
    pub app_secret: String,
}

/// The business API as the app: users, tokens, groups, moderation.
#[derive(Debug, Clone)]
pub struct Admin {
    target: Target,
    http: reqwest::Client,
}

impl Admin {
    /// An admin of `target`.
    pub fn new(target: &Target) -> Self {
        Self {
            target: target.clone(),
            http: reqwest::Client::new(),
        }
    }

    /// Calls the API; the JSON answer, or the error body as the error.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, String> {
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.target.api))
            .bearer_auth(&self.target.app_secret);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.map_err(|e| e.to_string())?;
        let ok = response.status().is_success();
        let value: Value = response.json().await.unwrap_or(Value::Null);
        if ok {
            Ok(value)
        } else {
            Err(value.to_string())
        }
    }

    /// Creates (or updates) a user.
    pub async fn user(&self, id: &str) -> Result<(), String> {
        self.call(Method::POST, "/v1/users", Some(json!({ "user_id": id })))
            .await
            .map(drop)
    }

    /// A token for `user` on `device`.
    pub async fn token(&self, user: &str, device: &str) -> Result<String, String> {
        let answer = self
            .call(
                Method::POST,
                &format!("/v1/users/{user}/tokens"),
                Some(json!({ "device_id": device })),
            )
            .await?;
        answer["token"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| format!("no token in {answer}"))
    }

    /// A group owned by `owner` with `members`.
    pub async fn group(
        &self,
        id: &str,
        owner: &str,
        members: &[String],
        channel: bool,
    ) -> Result<(), String> {
        let kind = if channel { "channel" } else { "group" };
        let body = json!({
            "group_id": id, "name": id, "owner_user_id": owner, "member_user_ids": members,
            "kind": kind,
        });
        self.call(Method::POST, "/v1/groups", Some(body))
            .await
            .map(drop)
    }
}

/// The whole system in this process, as `im-server` runs it, on ephemeral ports.
pub struct Embedded {
    /// Where it listens.
    pub target: Target,
    shutdown: CancellationToken,
    core: Option<im_server::server::RunningCore>,
    business: Option<im_business::server::RunningBusiness>,
}

impl std::fmt::Debug for Embedded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Embedded")
            .field("target", &self.target)
            .finish()
    }
}

/// The app secret of the embedded system.
pub const APP_SECRET: &str = "conformance-app-secret";
const TOKEN_SECRET: &str = "conformance-token-secret-of-at-least-32-bytes";

impl Embedded {
    /// Starts the system with its data under `dir`; `tune` adjusts the core's settings.
    pub async fn start(dir: &Path, tune: impl FnOnce(&mut CoreSettings)) -> Result<Self, String> {
        let any: SocketAddr = ([127, 0, 0, 1], 0).into();
        let business_settings = BusinessSettings {
            http_listen: any,
            grpc_listen: any,
            database: dir.join("business.db").display().to_string(),
            app_secret: APP_SECRET.into(),
            token_secret: TOKEN_SECRET.into(),
            ..BusinessSettings::default()
        };
        let mut core_settings = CoreSettings {
            listen: any,
            http_listen: any,
            database: dir.join("messages.db").display().to_string(),
            token_secret: TOKEN_SECRET.into(),
            ..CoreSettings::default()
        };
        tune(&mut core_settings);
        let shutdown = CancellationToken::new();
        let bus: Arc<dyn Bus> = Arc::new(LocalBus::default());
        let business =
            im_business::server::start(&business_settings, bus.clone(), shutdown.clone())
                .await
                .map_err(|e| e.to_string())?;
        let verifier =
            Arc::new(TokenVerifier::new(TOKEN_SECRET.as_bytes(), None).map_err(|e| e.to_string())?);
        let core = im_server::server::start(&core_settings, bus, verifier, shutdown.clone())
            .await
            .map_err(|e| e.to_string())?;
        Ok(Self {
            target: Target {
                url: format!("ws://{}/ws", core.addr),
                api: format!("http://{}", business.http_addr),
                app_secret: APP_SECRET.into(),
            },
            shutdown,
            core: Some(core),
            business: Some(business),
        })
    }

    /// Stops it gracefully.
    pub async fn stop(mut self) {
        self.shutdown.cancel();
        if let Some(core) = self.core.take() {
            core.stopped().await;
        }
        if let Some(business) = self.business.take() {
            business.stopped().await;
        }
    }
}
