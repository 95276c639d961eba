//! The core service's settings: section `[core]` of the config file, overridden by
//! `IM_CORE__<KEY>` environment variables. Every limit the gateway enforces is here.

use std::{net::SocketAddr, time::Duration};

use im_common::settings::{Secret, SettingsError};
use im_proto::{v1::ServerLimits, version::DEFAULT_MAX_FRAME_BYTES};
use serde::{Deserialize, Serialize};

/// Everything the core service needs to run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CoreSettings {
    /// This node's name in logs, `Welcome.node_id` and bus subjects.
    pub node_id: String,
    /// Where the WebSocket gateway listens (`ws://<listen>/ws`).
    pub listen: SocketAddr,
    /// Where `/healthz`, `/readyz` and `/metrics` are served over HTTP.
    pub http_listen: SocketAddr,
    /// The message database: a SQLite file (created with its directory if missing), or a
    /// `postgres://` or `mysql://` URL shared by every core node.
    pub database: String,
    /// Connections to the database.
    pub max_connections: usize,
    /// The cluster's token-signing secret, shared with the business service; at least 32 bytes.
    pub token_secret: Secret,
    /// The Redis every core node shares (`redis://host:port`) for presence, user -> node
    /// routes and message rates. Empty: all of it in this node's memory (one node only).
    pub redis_url: String,
    /// In Redis, a session this node stops renewing is gone after this long, in milliseconds:
    /// how long a dead node's users still look online and routed to it. Renewed every third.
    pub presence_lease_ms: u64,

    /// Connections this node holds at most; more are refused with TOO_MANY_CONNECTIONS.
    pub max_sessions: usize,
    /// Connections one user holds at most on this node (one per device).
    pub max_sessions_per_user: usize,
    /// The largest frame accepted from a client, in bytes.
    pub max_frame_bytes: u32,
    /// The largest message body (`MessageBody` encoded), in bytes.
    pub max_content_bytes: u32,
    /// Frames one connection may send per second (sustained; a burst of twice as many).
    pub frames_per_second: u32,
    /// Messages one user may send per second over all its devices (sustained; a burst of twice
    /// as many).
    pub messages_per_second: u32,
    /// Rate-limited frames in a row after which a connection counts as abusive and is closed.
    pub abuse_threshold: u32,
    /// Requests in flight per connection; the gateway reads no more frames until one is done.
    pub max_inflight_requests: u32,
    /// The socket read buffer per connection, in bytes: idle memory against read calls for
    /// large frames (a frame larger than the buffer takes several reads).
    pub read_buffer_bytes: usize,
    /// Frames waiting to be written to one connection; a client that reads slower is
    /// disconnected with SLOW_CONSUMER (it reconnects and syncs).
    pub outbound_queue: usize,
    /// Pushed entries a connection may leave unacknowledged before it counts as a slow consumer.
    pub max_unacked: usize,
    /// An unacknowledged push is resent after this long, in milliseconds.
    pub resend_after_ms: u64,
    /// The client pings at least this often, in milliseconds.
    pub heartbeat_interval_ms: u32,
    /// A connection silent this long is closed, in milliseconds.
    pub idle_timeout_ms: u32,
    /// A connection must complete its Hello within this long, in milliseconds.
    pub handshake_timeout_ms: u64,
    /// On shutdown, connections get this long to finish what is in flight, in milliseconds.
    pub drain_timeout_ms: u64,
    /// A write to a connection that cannot finish in this long ends the connection (the peer
    /// stopped reading), in milliseconds.
    pub write_timeout_ms: u64,
    /// Clients should wait this long before reconnecting after a GoAway, in milliseconds.
    pub reconnect_after_ms: u64,

    /// Conversations per sync page at most (and the default).
    pub max_sync_page: u32,
    /// Entries per history or pull page at most (and the default).
    pub max_history_page: u32,
    /// Users one connection may watch the presence of.
    pub max_presence_subscriptions: u32,
    /// Entries appended in one transaction at most (group commit).
    pub max_batch: usize,
    /// Sends waiting for the committer at most; more wait for room.
    pub commit_queue: usize,
    /// A sender may edit a message for this long, in milliseconds.
    pub edit_window_ms: i64,
    /// A sender may recall or delete a message for this long, in milliseconds (group admins
    /// always may).
    pub recall_window_ms: i64,
    /// Different reaction keys one message may carry.
    pub max_reaction_keys: usize,
    /// The longest presence status text, in bytes.
    pub max_status_text_bytes: usize,
    /// Groups larger than this get no typing or read-receipt pushes (clients ask with
    /// read_cursors).
    pub receipts_max_group: usize,
    /// Groups whose member lists are cached.
    pub member_cache_groups: u64,
    /// Permission decisions cached.
    pub decision_cache: u64,
    /// How long a request to another service may take, in milliseconds.
    pub bus_timeout_ms: u64,
    /// How long a starting node waits for the business service (the revocations on record)
    /// before it gives up, in milliseconds.
    pub business_wait_ms: u64,
    /// How long this node keeps the batches it published to other nodes, to publish them again
    /// when its bus connection comes back (what went into a broken connection may be lost), in
    /// milliseconds.
    pub bus_replay_ms: u64,
    /// At most this many bytes of those batches are kept (the oldest go first); 0 turns the
    /// replay off.
    pub bus_replay_bytes: usize,
}

impl Default for CoreSettings {
    fn default() -> Self {
        Self {
            node_id: "core-1".into(),
            listen: SocketAddr::from(([127, 0, 0, 1], 7100)),
            http_listen: SocketAddr::from(([127, 0, 0, 1], 7103)),
            database: "data/messages.db".into(),
            max_connections: 4,
            token_secret: Secret::default(),
            redis_url: String::new(),
            presence_lease_ms: 30_000,
            max_sessions: 200_000,
            max_sessions_per_user: 16,
            max_frame_bytes: DEFAULT_MAX_FRAME_BYTES as u32,
            max_content_bytes: 64 * 1024,
            frames_per_second: 50,
            messages_per_second: 20,
            abuse_threshold: 100,
            max_inflight_requests: 64,
            read_buffer_bytes: 1024,
            outbound_queue: 256,
            max_unacked: 1024,
            resend_after_ms: 5_000,
            heartbeat_interval_ms: 30_000,
            idle_timeout_ms: 90_000,
            handshake_timeout_ms: 10_000,
            drain_timeout_ms: 5_000,
            write_timeout_ms: 10_000,
            reconnect_after_ms: 1_000,
            max_sync_page: 200,
            max_history_page: 100,
            max_presence_subscriptions: 1_000,
            max_batch: 512,
            commit_queue: 8_192,
            edit_window_ms: 48 * 3600 * 1000,
            recall_window_ms: 24 * 3600 * 1000,
            max_reaction_keys: 64,
            max_status_text_bytes: 256,
            receipts_max_group: 200,
            member_cache_groups: 10_000,
            decision_cache: 100_000,
            bus_timeout_ms: 5_000,
            business_wait_ms: 30_000,
            bus_replay_ms: 60_000,
            bus_replay_bytes: 32 * 1024 * 1024,
        }
    }
}

/// The shortest token secret accepted, in bytes.
pub const MIN_TOKEN_SECRET_BYTES: usize = 32;

impl CoreSettings {
    /// Refuses settings the service cannot run with, naming the setting.
    pub fn validate(&self) -> Result<(), SettingsError> {
        if self.token_secret.expose().len() < MIN_TOKEN_SECRET_BYTES {
            return Err(SettingsError::new(format!(
                "core.token_secret must be at least {MIN_TOKEN_SECRET_BYTES} bytes (IM_CORE__TOKEN_SECRET)"
            )));
        }
        let node_id_ok = !self.node_id.is_empty()
            && self
                .node_id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !node_id_ok {
            return Err(SettingsError::new(
                "core.node_id must be letters, digits, '-' and '_' (it names the node's bus subject), and unique in the cluster",
            ));
        }
        let positive = [
            ("max_sessions", self.max_sessions as u64),
            ("max_sessions_per_user", self.max_sessions_per_user as u64),
            ("max_connections", self.max_connections as u64),
            ("frames_per_second", u64::from(self.frames_per_second)),
            ("messages_per_second", u64::from(self.messages_per_second)),
            (
                "max_inflight_requests",
                u64::from(self.max_inflight_requests),
            ),
            ("outbound_queue", self.outbound_queue as u64),
            ("read_buffer_bytes", self.read_buffer_bytes as u64),
            ("max_unacked", self.max_unacked as u64),
            ("max_sync_page", u64::from(self.max_sync_page)),
            ("max_history_page", u64::from(self.max_history_page)),
            ("max_batch", self.max_batch as u64),
            ("commit_queue", self.commit_queue as u64),
            ("idle_timeout_ms", u64::from(self.idle_timeout_ms)),
            ("write_timeout_ms", self.write_timeout_ms),
            ("presence_lease_ms", self.presence_lease_ms),
        ];
        if let Some((name, _)) = positive.iter().find(|(_, v)| *v == 0) {
            return Err(SettingsError::new(format!(
                "core.{name} must be at least 1"
            )));
        }
        if self.max_content_bytes + 1024 > self.max_frame_bytes {
            return Err(SettingsError::new(
                "core.max_content_bytes must stay at least 1 KiB below core.max_frame_bytes, so every entry fits a frame",
            ));
        }
        Ok(())
    }

    /// The limits announced in `Welcome`.
    pub fn limits(&self) -> ServerLimits {
        ServerLimits {
            max_frame_bytes: self.max_frame_bytes,
            max_content_bytes: self.max_content_bytes,
            max_messages_per_second: self.messages_per_second,
            max_inflight_requests: self.max_inflight_requests,
            max_sync_page: self.max_sync_page,
            max_history_page: self.max_history_page,
            max_presence_subscriptions: self.max_presence_subscriptions,
        }
    }

    /// How often this node renews its sessions' presence leases.
    pub fn lease_renewal(&self) -> Duration {
        Duration::from_millis((self.presence_lease_ms / 3).max(1))
    }

    /// What the router keeps to publish again after a bus reconnection.
    pub fn replay(&self) -> crate::router::Replay {
        crate::router::Replay {
            window: Duration::from_millis(self.bus_replay_ms),
            max_bytes: self.bus_replay_bytes,
        }
    }

    /// [`Self::bus_timeout_ms`] as a duration.
    pub fn bus_timeout(&self) -> Duration {
        Duration::from_millis(self.bus_timeout_ms)
    }
}
