//! The WebSocket gateway: the accept loop, the upgrade with version negotiation
//! ([`upgrade`]), the Hello ([`handshake`]), and one task per connection ([`connection`]) that
//! reads requests and answers them ([`dispatch`]), writes pushes, keeps the heartbeat,
//! enforces the limits and resends unacknowledged pushes, over one WebSocket ([`link`]).
//! [`echo`] serves the same WebSocket layer to compliance suites.
//!
//! Memory per idle connection is kept small on purpose: tungstenite's read buffer is 1 KiB by
//! default (its own default is 128 KiB) and its writes are not buffered, the outbound queue
//! holds shared frames, the resend buffer is empty while everything is acknowledged, and each
//! phase of a connection's task is boxed so the task is only as large as its idle state.

mod admission;
mod connection;
mod dispatch;
mod echo;
mod handshake;
mod limits;
mod link;
mod upgrade;

pub use echo::echo;
pub use limits::Limits;

use std::{sync::Arc, time::Duration};

use im_common::{auth::TokenVerifier, bus::Bus, settings::Live};
use im_proto::v1::ErrorCode;
use tokio::{net::TcpListener, sync::Semaphore};
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use crate::{messaging, presence, sessions::Sessions};

/// The server's name and version, in `Welcome.server_version`.
pub const SERVER_VERSION: &str = concat!("im-server/", env!("CARGO_PKG_VERSION"));

/// The path WebSocket upgrades are accepted on.
pub const WS_PATH: &str = "/ws";

/// Room a frame needs around one entry's body: ids, times, tags (ids are at most 64 bytes).
pub const ENTRY_FRAMING_BYTES: u32 = 1024;

/// The WebSocket close code for a protocol error code (docs/PROTOCOL.md, "Closing").
pub fn close_code(code: ErrorCode) -> u16 {
    use ErrorCode as C;
    match code {
        // The server gives up on the connection; the client reconnects.
        C::ShuttingDown | C::HeartbeatTimeout => 1001,
        C::MalformedFrame
        | C::UnsupportedVersion
        | C::UnsupportedFrame
        | C::HandshakeRequired
        | C::AlreadyAuthenticated
        | C::InvalidArgument => 1002,
        C::Unauthenticated
        | C::TokenExpired
        | C::TokenRevoked
        | C::UserDisabled
        | C::SessionReplaced
        | C::RateLimited => 1008,
        C::FrameTooLarge => 1009,
        C::Internal => 1011,
        C::TooManyConnections | C::Unavailable | C::SlowConsumer => 1013,
        _ => 1000,
    }
}

/// A uniform pick in `after ..= 4 * after` milliseconds: the wait of what a node tells all
/// its sessions at once (a GoAway UNAVAILABLE, a Resync), so that they do not all come back
/// in the same instant (docs/PROTOCOL.md, "GoAway").
pub fn spread(after: u64) -> u64 {
    after + (uuid::Uuid::new_v4().as_u128() % u128::from(3 * after + 1)) as u64
}

/// The settings a gateway reads: its own limits, and what it announces of the others'.
#[derive(Debug, Clone)]
pub struct Config {
    /// The node's id, in `Welcome.node_id`.
    pub node_id: String,
    /// The gateway's limits (each connection reads them as it opens).
    pub limits: Live<Limits>,
    /// Messaging's settings, for the limits a `Welcome` announces.
    pub messaging: Live<messaging::Settings>,
    /// Presence's limits, for the same.
    pub presence: Live<presence::Limits>,
    /// With it, every connection is TLS (`wss://`); the handshake counts against the
    /// handshake timeout, as the upgrade does.
    pub tls: Option<im_common::tls::Tls>,
}

/// What a connection needs from the node.
pub struct Gateway {
    config: Config,
    verifier: Arc<TokenVerifier>,
    sessions: Arc<Sessions>,
    messaging: Arc<messaging::Messaging>,
    presence: Arc<presence::PresenceService>,
    bus: Arc<dyn Bus>,
    slots: Arc<Semaphore>,
    admission: Arc<admission::Admission>,
    shutdown: CancellationToken,
    connections: TaskTracker,
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway")
            .field("sessions", &self.sessions)
            .finish_non_exhaustive()
    }
}

impl Gateway {
    /// A gateway over the node's modules; it stops accepting when `shutdown` fires.
    pub fn new(
        config: Config,
        verifier: Arc<TokenVerifier>,
        sessions: Arc<Sessions>,
        messaging: Arc<messaging::Messaging>,
        presence: Arc<presence::PresenceService>,
        bus: Arc<dyn Bus>,
        shutdown: CancellationToken,
    ) -> Self {
        let limits = config.limits.get();
        let fds = im_common::process::fd_limit();
        let max_connections = usize::try_from(fds)
            .unwrap_or(usize::MAX)
            .saturating_sub(limits.reserved_fds)
            .max(1);
        tracing::info!(
            fd_limit = fds,
            reserved_fds = limits.reserved_fds,
            max_connections,
            max_sessions = limits.max_sessions,
            "connection budget"
        );
        let admission = admission::Admission::new(admission::Caps {
            max_pending: limits.max_pending_connections,
            max_pending_per_ip: limits.max_pending_per_ip,
            max_connections,
        });
        Self {
            slots: Arc::new(Semaphore::new(limits.max_sessions)),
            admission,
            config,
            verifier,
            sessions,
            messaging,
            presence,
            bus,
            shutdown,
            connections: TaskTracker::new(),
        }
    }

    /// Accepts connections until shutdown, then waits for every connection to close.
    pub async fn serve(self: Arc<Self>, listener: TcpListener) {
        loop {
            let accepted = tokio::select! {
                () = self.shutdown.cancelled() => break,
                accepted = listener.accept() => accepted,
            };
            match accepted {
                Ok((stream, peer)) => {
                    let place = match self.admission.admit(peer.ip()) {
                        Ok(place) => place,
                        Err(refused) => {
                            // Closed before a byte is read: nothing of it is held.
                            metrics::counter!("im_connections_refused_total", "reason" => refused.label())
                                .increment(1);
                            drop(stream);
                            continue;
                        }
                    };
                    let _ = stream.set_nodelay(true);
                    let gateway = self.clone();
                    self.connections.spawn(async move {
                        if let Err(error) = gateway.connection(stream, place).await {
                            tracing::debug!(%peer, %error, "connection ended with an error");
                        }
                    });
                }
                Err(error) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
        drop(listener);
        self.sessions.end_all(ErrorCode::ShuttingDown);
        self.connections.close();
        self.connections.wait().await;
    }

    async fn connection(
        self: Arc<Self>,
        stream: tokio::net::TcpStream,
        place: admission::Pending,
    ) -> Result<(), tokio_tungstenite::tungstenite::Error> {
        // One deadline for everything before the Welcome: TLS, the upgrade and the Hello.
        let deadline = tokio::time::Instant::now() + self.config.limits.get().handshake_timeout;
        let Some(tls) = self.config.tls.clone() else {
            return self.serve_connection(stream, place, deadline).await;
        };
        let accepted = tokio::select! {
            accepted = tokio::time::timeout_at(deadline, tls.accept(stream)) => accepted,
            () = place.evicted.cancelled() => return Ok(()),
        };
        match accepted {
            Ok(Ok(stream)) => self.serve_connection(stream, place, deadline).await,
            Ok(Err(error)) => Err(error.into()),
            Err(_) => Err(link::timed_out()),
        }
    }

    /// One connection, from its upgrade (due by `deadline`, with its Hello) to its end.
    async fn serve_connection<S>(
        self: Arc<Self>,
        stream: S,
        mut place: admission::Pending,
        deadline: tokio::time::Instant,
    ) -> Result<(), tokio_tungstenite::tungstenite::Error>
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        // Each phase is boxed: a task is as large as its largest state, and an idle session
        // should carry neither the handshake's nor a request's.
        let opened = Box::pin(self.clone().open(stream, &place.evicted, deadline)).await?;
        let Some(connection) = opened else {
            return Ok(());
        };
        place.establish();
        let session = connection.session().clone();
        let result = Box::pin(connection.run()).await;
        Box::pin(self.closed(&session)).await;
        result
    }
}
