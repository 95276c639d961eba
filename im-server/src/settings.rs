//! The core service's settings: section `[core]` of the config file (overridden by
//! `IM_CORE__<KEY>` environment variables), made of the parts each module owns:
//! `[core.gateway]` ([`gateway::Limits`]), `[core.presence]` ([`presence::Limits`]),
//! `[core.messaging]` ([`messaging::Settings`]) and `[core.replay]` ([`router::Replay`]). What
//! every node of a cluster shares (node id, token secret, Redis) is in `[cluster]`.
//!
//! Keys renamed in this release are listed in [`RENAMES`]; their old names are still read, with
//! a warning, for one release.

use std::{net::SocketAddr, time::Duration};

use im_common::settings::{Rename, SettingsError};
use im_proto::v1::ServerLimits;
use serde::{Deserialize, Serialize};

use crate::{gateway, messaging, presence, router};

/// Everything the core service needs to run, besides `[cluster]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CoreSettings {
    /// Where the WebSocket gateway listens (`ws://<listen>/ws`, or `wss://` with `tls`).
    pub listen: SocketAddr,
    /// The gateway's certificate and key: with them it serves `wss://` only.
    pub tls: Option<im_common::tls::TlsFiles>,
    /// Where `/healthz`, `/readyz` and `/metrics` are served over HTTP.
    pub http_listen: SocketAddr,
    /// The message database: a SQLite file (created with its directory if missing), or a
    /// `postgres://` or `mysql://` URL shared by every core node.
    pub database: String,
    /// Connections to the database.
    pub max_connections: usize,
    /// In Redis, a session this node stops renewing is gone after this long: how long a dead
    /// node's users still look online and routed to it. Renewed every third.
    #[serde(with = "humantime_serde")]
    pub presence_lease: Duration,
    /// How long a request to another service may take.
    #[serde(with = "humantime_serde")]
    pub bus_timeout: Duration,
    /// How long a starting node waits for the business service (the revocations on record)
    /// before it gives up.
    #[serde(with = "humantime_serde")]
    pub business_wait: Duration,
    /// Groups whose member lists are cached.
    pub member_cache_groups: u64,
    /// Permission decisions cached.
    pub decision_cache: u64,
    /// The gateway's limits.
    pub gateway: gateway::Limits,
    /// What presence requests may ask.
    pub presence: presence::Limits,
    /// How messaging checks, stores and pages.
    pub messaging: messaging::Settings,
    /// What this node keeps to publish again after its bus connection comes back.
    pub replay: router::Replay,
}

impl Default for CoreSettings {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 7100)),
            http_listen: SocketAddr::from(([127, 0, 0, 1], 7103)),
            tls: None,
            database: "data/messages.db".into(),
            max_connections: 4,
            presence_lease: Duration::from_secs(30),
            bus_timeout: Duration::from_secs(5),
            business_wait: Duration::from_secs(30),
            member_cache_groups: 10_000,
            decision_cache: 100_000,
            gateway: gateway::Limits::default(),
            presence: presence::Limits::default(),
            messaging: messaging::Settings::default(),
            replay: router::Replay::default(),
        }
    }
}

/// The `[core]` keys renamed in this release, old name first.
pub const RENAMES: &[Rename] = &[
    Rename::millis("core.presence_lease_ms", "core.presence_lease"),
    Rename::millis("core.bus_timeout_ms", "core.bus_timeout"),
    Rename::millis("core.business_wait_ms", "core.business_wait"),
    Rename::moved("core.max_sessions", "core.gateway.max_sessions"),
    Rename::moved(
        "core.max_sessions_per_user",
        "core.gateway.max_sessions_per_user",
    ),
    Rename::moved("core.max_frame_bytes", "core.gateway.max_frame_bytes"),
    Rename::moved("core.read_buffer_bytes", "core.gateway.read_buffer_bytes"),
    Rename::moved("core.outbound_queue", "core.gateway.outbound_queue"),
    Rename::millis("core.drain_timeout_ms", "core.gateway.drain_timeout"),
    Rename::millis("core.write_timeout_ms", "core.gateway.write_timeout"),
    Rename::moved("core.frames_per_second", "core.gateway.frames_per_second"),
    Rename::moved("core.abuse_threshold", "core.gateway.abuse_threshold"),
    Rename::moved(
        "core.max_inflight_requests",
        "core.gateway.max_inflight_requests",
    ),
    Rename::moved("core.max_unacked", "core.gateway.max_unacked"),
    Rename::millis("core.resend_after_ms", "core.gateway.resend_after"),
    Rename::millis(
        "core.heartbeat_interval_ms",
        "core.gateway.heartbeat_interval",
    ),
    Rename::millis("core.idle_timeout_ms", "core.gateway.idle_timeout"),
    Rename::millis(
        "core.handshake_timeout_ms",
        "core.gateway.handshake_timeout",
    ),
    Rename::millis("core.reconnect_after_ms", "core.gateway.reconnect_after"),
    Rename::moved(
        "core.max_presence_subscriptions",
        "core.presence.max_subscriptions",
    ),
    Rename::moved(
        "core.max_status_text_bytes",
        "core.presence.max_status_text_bytes",
    ),
    Rename::moved("core.max_content_bytes", "core.messaging.max_content_bytes"),
    Rename::moved("core.max_batch", "core.messaging.max_batch"),
    Rename::moved("core.commit_queue", "core.messaging.commit_queue"),
    Rename::moved(
        "core.messages_per_second",
        "core.messaging.messages_per_second",
    ),
    Rename::moved("core.max_sync_page", "core.messaging.max_sync_page"),
    Rename::moved("core.max_history_page", "core.messaging.max_history_page"),
    Rename::millis("core.edit_window_ms", "core.messaging.edit_window"),
    Rename::millis("core.recall_window_ms", "core.messaging.recall_window"),
    Rename::moved("core.max_reaction_keys", "core.messaging.max_reaction_keys"),
    Rename::moved(
        "core.receipts_max_group",
        "core.messaging.receipts_max_group",
    ),
    Rename::millis("core.bus_replay_ms", "core.replay.window"),
    Rename::moved("core.bus_replay_bytes", "core.replay.max_bytes"),
];

impl CoreSettings {
    /// Refuses settings the service cannot run with, naming the setting.
    pub fn validate(&self) -> Result<(), SettingsError> {
        self.gateway.validate()?;
        self.messaging.validate()?;
        let positive = [
            ("max_connections", self.max_connections as u64),
            ("presence_lease", self.presence_lease.as_millis() as u64),
        ];
        if let Some((name, _)) = positive.iter().find(|(_, v)| *v == 0) {
            return Err(SettingsError::new(format!(
                "core.{name} must be at least 1 (ms for a duration)"
            )));
        }
        if self.messaging.max_content_bytes + 1024 > self.gateway.max_frame_bytes {
            return Err(SettingsError::new(
                "core.messaging.max_content_bytes must stay at least 1 KiB below core.gateway.max_frame_bytes, so every entry fits a frame",
            ));
        }
        Ok(())
    }

    /// How often this node renews its sessions' presence leases.
    pub fn lease_renewal(&self) -> Duration {
        (self.presence_lease / 3).max(Duration::from_millis(1))
    }
}

/// The limits announced in `Welcome`: every one a client can reach, from the settings in force.
pub fn announced(
    gateway: &gateway::Limits,
    presence: &presence::Limits,
    messaging: &messaging::Settings,
) -> ServerLimits {
    ServerLimits {
        max_frame_bytes: gateway.max_frame_bytes,
        max_content_bytes: messaging.max_content_bytes,
        max_messages_per_second: messaging.messages_per_second,
        max_inflight_requests: gateway.max_inflight_requests,
        max_sync_page: messaging.max_sync_page,
        max_history_page: messaging.max_history_page,
        max_presence_subscriptions: presence.max_subscriptions,
        max_frames_per_second: gateway.frames_per_second,
        max_rate_limited_in_a_row: gateway.abuse_threshold,
    }
}
