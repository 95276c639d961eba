//! Section `[cluster]`: what every process of a deployment shares, whatever services it runs:
//! its node id, the token secrets and keys, the bus and Redis.

use serde::{Deserialize, Serialize};

use super::{Rename, Secret, SettingsError, without_password};
use crate::auth::{AppKey, TokenVerifier};

/// The shortest token secret accepted, in bytes.
pub const MIN_TOKEN_SECRET_BYTES: usize = 32;

/// What every process of a deployment shares.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterSettings {
    /// This process's node id: in logs, audit events, `Welcome.node_id` and a core node's bus
    /// subjects; letters, digits, `-` and `_`, unique in the cluster.
    pub node_id: String,
    /// The secret tokens are signed with, shared by every node; at least 32 bytes.
    pub token_secret: Secret,
    /// The NATS server(s), `nats://host:port` (comma-separated for several). Empty: the
    /// services of one process share an in-process bus.
    pub nats_url: String,
    /// The Redis every core node shares (`redis://host:port`) for presence, user -> node routes
    /// and message rates. Empty: all of it in this node's memory (one core node only).
    pub redis_url: String,
    /// Tokens the app's backend signs with its own key: table `[cluster.app_tokens]`.
    pub app_tokens: AppTokens,
}

/// The app's own token key (docs/PROTOCOL.md, "Access tokens"): with it, an app's backend
/// signs its users' tokens itself and no node asks anyone to verify them.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AppTokens {
    /// `EdDSA`, `ES256` or `RS256`; empty: only tokens the business service issues.
    pub algorithm: String,
    /// The PEM file of the public key the app's tokens are verified with.
    pub public_key_file: String,
    /// The `iss` every app token must carry; required with an algorithm.
    pub issuer: String,
    /// The `aud` every app token must carry; empty: not checked.
    pub audience: String,
}

impl AppTokens {
    /// The key, read from its file; `None` when app tokens are off.
    pub fn key(&self) -> Result<Option<AppKey>, SettingsError> {
        let algorithm = match self.algorithm.as_str() {
            "" => return Ok(None),
            "EdDSA" => jsonwebtoken::Algorithm::EdDSA,
            "ES256" => jsonwebtoken::Algorithm::ES256,
            "RS256" => jsonwebtoken::Algorithm::RS256,
            other => {
                return Err(SettingsError::new(format!(
                    "cluster.app_tokens.algorithm {other:?}: EdDSA, ES256 or RS256"
                )));
            }
        };
        if self.issuer.is_empty() {
            return Err(SettingsError::new(
                "cluster.app_tokens.issuer: the iss the app's tokens carry is required",
            ));
        }
        let public_key_pem = std::fs::read_to_string(&self.public_key_file).map_err(|e| {
            SettingsError::new(format!(
                "cluster.app_tokens.public_key_file {:?}: {e}",
                self.public_key_file
            ))
        })?;
        Ok(Some(AppKey {
            algorithm,
            public_key_pem,
            issuer: self.issuer.clone(),
            audience: (!self.audience.is_empty()).then(|| self.audience.clone()),
        }))
    }
}

impl Default for ClusterSettings {
    fn default() -> Self {
        Self {
            node_id: "node-1".into(),
            token_secret: Secret::default(),
            nats_url: String::new(),
            redis_url: String::new(),
            app_tokens: AppTokens::default(),
        }
    }
}

/// The keys that moved into `[cluster]`.
pub const RENAMES: &[Rename] = &[
    Rename::moved("bus.nats_url", "cluster.nats_url"),
    Rename::moved("core.node_id", "cluster.node_id"),
    Rename::moved("business.node_id", "cluster.node_id"),
    Rename::moved("core.token_secret", "cluster.token_secret"),
    Rename::moved("business.token_secret", "cluster.token_secret"),
    Rename::moved("core.redis_url", "cluster.redis_url"),
];

impl ClusterSettings {
    /// The verifier of every token this deployment accepts: the ones the business service
    /// issues with the token secret and, when configured, the app's own.
    pub fn token_verifier(&self) -> Result<TokenVerifier, SettingsError> {
        let key = self.app_tokens.key()?;
        TokenVerifier::new(self.token_secret.expose().as_bytes(), key.as_ref())
            .map_err(|e| SettingsError::new(format!("cluster.app_tokens: {e}")))
    }

    /// Whether the services are spread over processes (a bus other processes share).
    pub fn distributed(&self) -> bool {
        !self.nats_url.is_empty()
    }

    /// Refuses settings no node can run with, naming the setting.
    pub fn validate(&self) -> Result<(), SettingsError> {
        if self.token_secret.expose().len() < MIN_TOKEN_SECRET_BYTES {
            return Err(SettingsError::new(format!(
                "cluster.token_secret must be at least {MIN_TOKEN_SECRET_BYTES} bytes (IM_CLUSTER__TOKEN_SECRET)"
            )));
        }
        let node_id_ok = !self.node_id.is_empty()
            && self.node_id.len() <= 64
            && self
                .node_id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !node_id_ok {
            return Err(SettingsError::new(
                "cluster.node_id must be 1 to 64 letters, digits, '-' and '_' (it names the node's bus subject), and unique in the cluster",
            ));
        }
        Ok(())
    }

    /// What `print-settings` shows: the secret hidden, passwords in URLs masked.
    pub fn shown(&self) -> Self {
        Self {
            node_id: self.node_id.clone(),
            token_secret: self.token_secret.hidden(),
            nats_url: without_password(&self.nats_url),
            redis_url: without_password(&self.redis_url),
            app_tokens: self.app_tokens.clone(),
        }
    }
}
