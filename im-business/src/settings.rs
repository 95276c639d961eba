//! The business service's settings: section `[business]` of the config file, overridden by
//! `IM_BUSINESS__<KEY>` environment variables. What every node shares (node id, token secret,
//! the bus) is in `[cluster]`. Keys renamed in this release are listed in [`RENAMES`]; their
//! old names are still read, with a warning, for one release.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use im_common::settings::{Rename, Secret, SettingsError, without_password};
use serde::{Deserialize, Serialize};

use crate::{
    BusinessConfig, GroupAdds, PresenceAudience,
    media::{MediaConfig, S3Config, ScanConfig},
};

/// Everything the business service needs to run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BusinessSettings {
    /// Where the HTTP/JSON API listens.
    pub http_listen: SocketAddr,
    /// Where the gRPC API listens.
    pub grpc_listen: SocketAddr,
    /// Where `/healthz`, `/readyz` and `/metrics` are served: an operations listener, apart
    /// from the APIs apps reach.
    pub ops_listen: SocketAddr,
    /// The database: a SQLite file (created with its directory if missing), or a
    /// `postgres://` or `mysql://` URL shared by every business node.
    pub database: String,
    /// Connections to the database.
    pub max_connections: usize,
    /// The app backend's secret for both APIs. Required.
    pub app_secret: Secret,
    /// The largest group, and the limit of new groups.
    pub max_group_members: i32,
    /// The longest display or group name, in bytes.
    pub max_name_bytes: usize,
    /// The longest avatar URL, in bytes.
    pub max_url_bytes: usize,
    /// The longest app-defined JSON, in bytes.
    pub max_extra_json_bytes: usize,
    /// Token lifetime when a request names none.
    #[serde(with = "humantime_serde")]
    pub default_token_ttl: Duration,
    /// The longest token lifetime a request may ask for.
    #[serde(with = "humantime_serde")]
    pub max_token_ttl: Duration,
    /// The HTTP and gRPC APIs' certificate and key: with them both serve TLS only (`https://`;
    /// gRPC over TLS). The operations listener stays plain, for local probes.
    pub tls: Option<im_common::tls::TlsFiles>,
    /// Only contacts may talk 1:1 with a user.
    pub direct_requires_contact: bool,
    /// Who sees a user's presence and status text: `related` (its contacts and the members of
    /// its groups) or `everyone` (every user it has not blocked).
    pub presence_visible_to: PresenceAudience,
    /// Whom a user may put in a group without asking: `direct` (anyone who has not blocked
    /// them), `contacts` (those who have them as a contact) or `invitation` (no one); the
    /// others are invited. The app adds anyone at once.
    pub group_adds: GroupAdds,
    /// How long core nodes may cache a permission decision.
    #[serde(with = "humantime_serde")]
    pub decision_ttl: Duration,
    /// The largest page of members or blocked users.
    pub max_page: u32,
    /// The most users one import may carry.
    pub max_import_batch: usize,
    /// Where offline pushes are POSTed as JSON (`http://…`); empty: no webhook. Needs NATS
    /// (`[bus] nats_url`): the pushes wait in its durable outbox until the webhook takes them.
    pub push_webhook_url: String,
    /// Sent to the webhook as `Authorization: Bearer <secret>`, when set.
    pub push_webhook_secret: Secret,
    /// How long the webhook may take to answer before the push is tried again.
    #[serde(with = "humantime_serde")]
    pub push_webhook_timeout: Duration,
    /// Where the embedded object store keeps media files (created if missing).
    pub media_dir: PathBuf,
    /// The URL clients reach this node's HTTP listener at, which signed media URLs start with;
    /// empty: `http://` (or `https://`) and the bound `http_listen` address, right only where
    /// clients reach that address.
    pub media_public_url: String,
    /// Media limits and lifetimes (`[business.media]`).
    pub media: MediaConfig,
    /// The S3 or MinIO bucket media live in (`[business.media_s3]`); none: `media_dir`.
    pub media_s3: Option<S3Config>,
}

/// The `[business]` keys renamed in this release, old name first.
pub const RENAMES: &[Rename] = &[
    Rename::seconds(
        "business.default_token_ttl_secs",
        "business.default_token_ttl",
    ),
    Rename::seconds("business.max_token_ttl_secs", "business.max_token_ttl"),
    Rename::millis("business.decision_ttl_ms", "business.decision_ttl"),
    Rename::millis(
        "business.push_webhook_timeout_ms",
        "business.push_webhook_timeout",
    ),
];

impl Default for BusinessSettings {
    fn default() -> Self {
        let rules = BusinessConfig::default();
        let ms = |ms: i64| Duration::from_millis(u64::try_from(ms).unwrap_or(0));
        Self {
            http_listen: SocketAddr::from(([127, 0, 0, 1], 7101)),
            grpc_listen: SocketAddr::from(([127, 0, 0, 1], 7102)),
            ops_listen: SocketAddr::from(([127, 0, 0, 1], 7104)),
            database: "data/business.db".into(),
            max_connections: 4,
            app_secret: Secret::default(),
            max_group_members: rules.max_group_members,
            max_name_bytes: rules.max_name_bytes,
            max_url_bytes: rules.max_url_bytes,
            max_extra_json_bytes: rules.max_extra_json_bytes,
            default_token_ttl: ms(rules.default_token_ttl_ms),
            max_token_ttl: ms(rules.max_token_ttl_ms),
            tls: None,
            direct_requires_contact: rules.direct_requires_contact,
            presence_visible_to: rules.presence_visible_to,
            group_adds: rules.group_adds,
            decision_ttl: Duration::from_millis(rules.decision_ttl_ms),
            max_page: rules.max_page,
            max_import_batch: rules.max_import_batch,
            push_webhook_url: String::new(),
            push_webhook_secret: Secret::default(),
            push_webhook_timeout: Duration::from_secs(10),
            media_dir: PathBuf::from("data/media"),
            media_public_url: String::new(),
            media: MediaConfig::default(),
            media_s3: None,
        }
    }
}

impl BusinessSettings {
    /// Refuses settings the service cannot run with, naming the setting.
    pub fn validate(&self) -> Result<(), SettingsError> {
        if self.app_secret.expose().is_empty() {
            return Err(SettingsError::new(
                "business.app_secret is required (IM_BUSINESS__APP_SECRET)",
            ));
        }
        if self.max_group_members < 2 || self.max_page == 0 || self.max_connections == 0 {
            return Err(SettingsError::new(
                "business.max_group_members >= 2, max_page >= 1 and max_connections >= 1",
            ));
        }
        let media = &self.media;
        if media.upload_url_ttl.is_zero()
            || media.download_url_ttl.is_zero()
            || media.pending_ttl < media.upload_url_ttl
            || media.upload_window.is_zero()
        {
            return Err(SettingsError::new(
                "business.media: upload_url_ttl, download_url_ttl and upload_window above zero, pending_ttl at least upload_url_ttl",
            ));
        }
        if media.part_bytes < 5 << 20 {
            return Err(SettingsError::new(
                "business.media: part_bytes at least 5 MiB (S3's smallest part)",
            ));
        }
        let scan = &media.scan;
        if scan.timeout.is_zero()
            || !(scan.webhook_url.is_empty()
                || scan.webhook_url.starts_with("http://")
                || scan.webhook_url.starts_with("https://"))
        {
            return Err(SettingsError::new(
                "business.media.scan: timeout above zero, webhook_url empty or an http(s) URL",
            ));
        }
        if let Some(s3) = &self.media_s3 {
            if !cfg!(feature = "s3") {
                return Err(SettingsError::new(
                    "business.media_s3: this build has no S3 support (feature s3)",
                ));
            }
            if !(s3.endpoint.starts_with("http://") || s3.endpoint.starts_with("https://"))
                || s3.bucket.is_empty()
                || s3.access_key.is_empty()
                || s3.secret_key.is_empty()
            {
                return Err(SettingsError::new(
                    "business.media_s3: an http(s):// endpoint, a bucket, access_key and secret_key",
                ));
            }
        }
        let url = &self.media_public_url;
        if !(url.is_empty() || url.starts_with("http://") || url.starts_with("https://")) {
            return Err(SettingsError::new(
                "business.media_public_url: an http:// or https:// URL",
            ));
        }
        Ok(())
    }

    /// The rules the service applies.
    pub fn rules(&self) -> BusinessConfig {
        let ms = |d: Duration| i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
        BusinessConfig {
            max_group_members: self.max_group_members,
            max_name_bytes: self.max_name_bytes,
            max_url_bytes: self.max_url_bytes,
            max_extra_json_bytes: self.max_extra_json_bytes,
            default_token_ttl_ms: ms(self.default_token_ttl),
            max_token_ttl_ms: ms(self.max_token_ttl),
            direct_requires_contact: self.direct_requires_contact,
            presence_visible_to: self.presence_visible_to,
            group_adds: self.group_adds,
            decision_ttl_ms: u64::try_from(self.decision_ttl.as_millis()).unwrap_or(u64::MAX),
            max_page: self.max_page,
            max_import_batch: self.max_import_batch,
        }
    }
}

impl BusinessSettings {
    /// What `print-settings` shows: secrets hidden, passwords in URLs masked.
    pub fn shown(&self) -> Self {
        Self {
            app_secret: self.app_secret.hidden(),
            push_webhook_secret: self.push_webhook_secret.hidden(),
            database: without_password(&self.database),
            media: MediaConfig {
                scan: ScanConfig {
                    webhook_secret: self.media.scan.webhook_secret.hidden(),
                    ..self.media.scan.clone()
                },
                ..self.media.clone()
            },
            media_s3: self.media_s3.as_ref().map(|s3| S3Config {
                secret_key: s3.secret_key.hidden(),
                ..s3.clone()
            }),
            ..self.clone()
        }
    }
}
