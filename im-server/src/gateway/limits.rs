//! The gateway's limits: table `[core.gateway]`. The ones marked *live* may be reloaded while
//! the node runs; each connection reads them when it opens, so a reload applies to the
//! connections opened after it. The others take a restart.

use std::time::Duration;

use im_common::{
    settings::{Reloadable, SettingsError},
    unchanged,
};
use im_proto::version::DEFAULT_MAX_FRAME_BYTES;
use serde::{Deserialize, Serialize};

/// Every limit a connection is held to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Authenticated sessions this node holds at most; more are refused with
    /// TOO_MANY_CONNECTIONS after their Hello.
    pub max_sessions: usize,
    /// Connections not yet past their Hello this node holds at most; one more closes the
    /// oldest of them (a prompt client always gets in).
    pub max_pending_connections: usize,
    /// Connections not yet past their Hello from one address at most; one more is closed
    /// at once.
    pub max_pending_per_ip: usize,
    /// File descriptors kept free of connections, for the store, the bus and the accept: the
    /// connections of every kind together stay this far under the process's limit.
    pub reserved_fds: usize,
    /// Connections one user holds at most on this node (one per device).
    pub max_sessions_per_user: usize,
    /// The largest frame accepted from a client, in bytes.
    pub max_frame_bytes: u32,
    /// The socket read buffer per connection, in bytes: idle memory against read calls for
    /// large frames (a frame larger than the buffer takes several reads).
    pub read_buffer_bytes: usize,
    /// Frames waiting to be written to one connection; a client that reads slower is
    /// disconnected with SLOW_CONSUMER (it reconnects and syncs).
    pub outbound_queue: usize,
    /// On shutdown, connections get this long to finish what is in flight.
    #[serde(with = "humantime_serde")]
    pub drain_timeout: Duration,
    /// A write to a connection that cannot finish in this long ends the connection (the peer
    /// stopped reading).
    #[serde(with = "humantime_serde")]
    pub write_timeout: Duration,
    /// Live. Frames one connection may send per second (sustained; a burst of twice as many).
    pub frames_per_second: u32,
    /// Live. Rate-limited frames in a row after which a connection counts as abusive and is
    /// closed.
    pub abuse_threshold: u32,
    /// Live. Requests in flight per connection; the gateway reads no more frames until one is
    /// done.
    pub max_inflight_requests: u32,
    /// Live. Pushed entries a connection may leave unacknowledged before it counts as a slow
    /// consumer.
    pub max_unacked: usize,
    /// Live. An unacknowledged push is resent after this long.
    #[serde(with = "humantime_serde")]
    pub resend_after: Duration,
    /// Live. The client pings at least this often.
    #[serde(with = "humantime_serde")]
    pub heartbeat_interval: Duration,
    /// Live. A connection silent this long is closed.
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// Live. A connection must complete its Hello within this long.
    #[serde(with = "humantime_serde")]
    pub handshake_timeout: Duration,
    /// Live. Clients should wait this long before reconnecting after a GoAway.
    #[serde(with = "humantime_serde")]
    pub reconnect_after: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_sessions: 200_000,
            max_pending_connections: 10_000,
            max_pending_per_ip: 64,
            reserved_fds: 128,
            max_sessions_per_user: 16,
            max_frame_bytes: DEFAULT_MAX_FRAME_BYTES as u32,
            read_buffer_bytes: 1024,
            outbound_queue: 256,
            drain_timeout: Duration::from_secs(5),
            write_timeout: Duration::from_secs(10),
            frames_per_second: 50,
            abuse_threshold: 100,
            max_inflight_requests: 64,
            max_unacked: 1024,
            resend_after: Duration::from_secs(5),
            heartbeat_interval: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(90),
            handshake_timeout: Duration::from_secs(10),
            reconnect_after: Duration::from_secs(1),
        }
    }
}

impl Limits {
    /// Refuses limits a gateway cannot run with, naming the setting.
    pub fn validate(&self) -> Result<(), SettingsError> {
        let positive = [
            ("max_sessions", self.max_sessions as u64),
            (
                "max_pending_connections",
                self.max_pending_connections as u64,
            ),
            ("max_pending_per_ip", self.max_pending_per_ip as u64),
            ("max_sessions_per_user", self.max_sessions_per_user as u64),
            ("max_frame_bytes", u64::from(self.max_frame_bytes)),
            ("read_buffer_bytes", self.read_buffer_bytes as u64),
            ("outbound_queue", self.outbound_queue as u64),
            ("frames_per_second", u64::from(self.frames_per_second)),
            (
                "max_inflight_requests",
                u64::from(self.max_inflight_requests),
            ),
            ("max_unacked", self.max_unacked as u64),
            ("write_timeout", self.write_timeout.as_millis() as u64),
            ("idle_timeout", self.idle_timeout.as_millis() as u64),
        ];
        match positive.iter().find(|(_, v)| *v == 0) {
            Some((name, _)) => Err(SettingsError::new(format!(
                "core.gateway.{name} must be at least 1 (ms for a duration)"
            ))),
            None => Ok(()),
        }
    }
}

impl Reloadable for Limits {
    fn check_reload(&self, next: &Self) -> Result<(), SettingsError> {
        unchanged!(
            self,
            next,
            "core.gateway",
            max_sessions,
            max_pending_connections,
            max_pending_per_ip,
            reserved_fds,
            max_sessions_per_user,
            max_frame_bytes,
            read_buffer_bytes,
            outbound_queue,
            drain_timeout,
            write_timeout,
        );
        next.validate()
    }
}
