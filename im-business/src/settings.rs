//! The business service's settings: section `[business]` of the config file, overridden by
//! `IM_BUSINESS__<KEY>` environment variables.

use std::net::SocketAddr;

use im_common::settings::{Secret, SettingsError};
use serde::{Deserialize, Serialize};

use crate::BusinessConfig;

/// Everything the business service needs to run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BusinessSettings {
    /// This node's name in logs, audit events and the bus.
    pub node_id: String,
    /// Where the HTTP/JSON API listens.
    pub http_listen: SocketAddr,
    /// Where the gRPC API listens.
    pub grpc_listen: SocketAddr,
    /// The database: a SQLite file (created with its directory if missing), or a
    /// `postgres://` or `mysql://` URL shared by every business node.
    pub database: String,
    /// Connections to the database.
    pub max_connections: usize,
    /// The app backend's secret for both APIs. Required.
    pub app_secret: Secret,
    /// The cluster's token-signing secret, shared with the core nodes; at least 32 bytes.
    pub token_secret: Secret,
    /// The largest group, and the limit of new groups.
    pub max_group_members: i32,
    /// The longest display or group name, in bytes.
    pub max_name_bytes: usize,
    /// The longest avatar URL, in bytes.
    pub max_url_bytes: usize,
    /// The longest app-defined JSON, in bytes.
    pub max_extra_json_bytes: usize,
    /// Token lifetime when a request names none, in seconds.
    pub default_token_ttl_secs: u64,
    /// The longest token lifetime a request may ask for, in seconds.
    pub max_token_ttl_secs: u64,
    /// Only contacts may talk 1:1 with a user.
    pub direct_requires_contact: bool,
    /// How long core nodes may cache a permission decision, in milliseconds.
    pub decision_ttl_ms: u64,
    /// The largest page of members or blocked users.
    pub max_page: u32,
    /// The most users one import may carry.
    pub max_import_batch: usize,
    /// Where offline pushes are POSTed as JSON (`http://…`); empty: no webhook. Needs NATS
    /// (`[bus] nats_url`): the pushes wait in its durable outbox until the webhook takes them.
    pub push_webhook_url: String,
    /// Sent to the webhook as `Authorization: Bearer <secret>`, when set.
    pub push_webhook_secret: Secret,
    /// How long the webhook may take to answer before the push is tried again, in milliseconds.
    pub push_webhook_timeout_ms: u64,
}

impl Default for BusinessSettings {
    fn default() -> Self {
        let rules = BusinessConfig::default();
        Self {
            node_id: "business-1".into(),
            http_listen: SocketAddr::from(([127, 0, 0, 1], 7101)),
            grpc_listen: SocketAddr::from(([127, 0, 0, 1], 7102)),
            database: "data/business.db".into(),
            max_connections: 4,
            app_secret: Secret::default(),
            token_secret: Secret::default(),
            max_group_members: rules.max_group_members,
            max_name_bytes: rules.max_name_bytes,
            max_url_bytes: rules.max_url_bytes,
            max_extra_json_bytes: rules.max_extra_json_bytes,
            default_token_ttl_secs: (rules.default_token_ttl_ms / 1000) as u64,
            max_token_ttl_secs: (rules.max_token_ttl_ms / 1000) as u64,
            direct_requires_contact: rules.direct_requires_contact,
            decision_ttl_ms: rules.decision_ttl_ms,
            max_page: rules.max_page,
            max_import_batch: rules.max_import_batch,
            push_webhook_url: String::new(),
            push_webhook_secret: Secret::default(),
            push_webhook_timeout_ms: 10_000,
        }
    }
}

/// The shortest token secret accepted, in bytes.
pub const MIN_TOKEN_SECRET_BYTES: usize = 32;

impl BusinessSettings {
    /// Refuses settings the service cannot run with, naming the setting.
    pub fn validate(&self) -> Result<(), SettingsError> {
        if self.app_secret.expose().is_empty() {
            return Err(SettingsError::new(
                "business.app_secret is required (IM_BUSINESS__APP_SECRET)",
            ));
        }
        if self.token_secret.expose().len() < MIN_TOKEN_SECRET_BYTES {
            return Err(SettingsError::new(format!(
                "business.token_secret must be at least {MIN_TOKEN_SECRET_BYTES} bytes (IM_BUSINESS__TOKEN_SECRET)"
            )));
        }
        if self.max_group_members < 2 || self.max_page == 0 || self.max_connections == 0 {
            return Err(SettingsError::new(
                "business.max_group_members >= 2, max_page >= 1 and max_connections >= 1",
            ));
        }
        Ok(())
    }

    /// The rules the service applies.
    pub fn rules(&self) -> BusinessConfig {
        let ms = |secs: u64| i64::try_from(secs.saturating_mul(1000)).unwrap_or(i64::MAX);
        BusinessConfig {
            max_group_members: self.max_group_members,
            max_name_bytes: self.max_name_bytes,
            max_url_bytes: self.max_url_bytes,
            max_extra_json_bytes: self.max_extra_json_bytes,
            default_token_ttl_ms: ms(self.default_token_ttl_secs),
            max_token_ttl_ms: ms(self.max_token_ttl_secs),
            direct_requires_contact: self.direct_requires_contact,
            decision_ttl_ms: self.decision_ttl_ms,
            max_page: self.max_page,
            max_import_batch: self.max_import_batch,
        }
    }
}
