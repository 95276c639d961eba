//! Section `[cluster]`: what every process of a deployment shares, whatever services it runs:
//! its node id, the token secret, the bus and Redis.

use serde::{Deserialize, Serialize};

use super::{Rename, Secret, SettingsError, without_password};

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
}

impl Default for ClusterSettings {
    fn default() -> Self {
        Self {
            node_id: "node-1".into(),
            token_secret: Secret::default(),
            nats_url: String::new(),
            redis_url: String::new(),
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
        }
    }
}
