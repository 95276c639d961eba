//! The WebSocket gateway: the upgrade with version negotiation, the Hello, and one task per
//! connection that reads requests, writes answers and pushes, keeps the heartbeat, enforces the
//! limits and resends unacknowledged pushes.
//!
//! Memory per idle connection is kept small on purpose: tungstenite's read buffer is 1 KiB by
//! default (its own default is 128 KiB) and its writes are not buffered, the outbound queue
//! holds shared frames, the resend buffer is empty while everything is acknowledged, and each
//! phase of a connection's task is boxed so the task is only as large as its idle state.

use std::{
    collections::{HashMap, VecDeque},
    pin::Pin,
    sync::Arc,
    time::Duration,
};

use bytes::Bytes;
use futures::{SinkExt, StreamExt, stream::FuturesOrdered};
use governor::{DefaultDirectRateLimiter, RateLimiter, clock::Clock};
use im_common::{auth::TokenVerifier, bus::Bus, now_ms};
use im_proto::{
    DeviceId, FrameCodec, FrameError, UserId,
    v1::{
        ClientFrame, DeliveryAck, Error, ErrorCode, GoAway, Hello, Ok as OkBody, Pong, Presence,
        PresenceChanged, PresenceList, PresenceStatus, RouteChanged, Welcome, client_frame,
        server_frame,
    },
    version::{BARE_SUBPROTOCOL, SUPPORTED_VERSIONS, negotiate_subprotocol, subprotocol},
};
use tokio::{
    io::{AsyncRead, AsyncWrite},
    net::{TcpListener, TcpStream},
    sync::{OwnedSemaphorePermit, Semaphore, mpsc},
    time::{Instant, Sleep},
};
use tokio_tungstenite::{
    WebSocketStream,
    tungstenite::{
        self, Message as WsMessage,
        handshake::server::{ErrorResponse, Request, Response},
        http::{HeaderValue, StatusCode},
        protocol::{CloseFrame, WebSocketConfig, frame::coding::CloseCode},
    },
};
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use crate::{
    limits::quota,
    messaging::{Messaging, with_request_id},
    presence::PresenceStore,
    sessions::{Outbound, RegisterError, SessionHandle, Sessions},
    settings::CoreSettings,
    wire::{self, error_frame, frame},
};

/// Pushes written with one flush at most.
const PUSH_BATCH: usize = 64;
/// The write buffer pushes are gathered in before a flush; an idle connection never allocates
/// it, a busy one keeps up to this much (plus a frame) after its first burst.
const PUSH_WRITE_BUFFER: usize = 8 * 1024;

/// The server's name and version, in `Welcome.server_version`.
pub const SERVER_VERSION: &str = concat!("im-server/", env!("CARGO_PKG_VERSION"));

/// The path WebSocket upgrades are accepted on.
pub const WS_PATH: &str = "/ws";

/// `ClientFrame.send` and `SendRequest.body`: the raw body is taken from the frame's bytes.
const FRAME_SEND: u32 = 4;
const SEND_BODY: u32 = 3;

/// Room a frame needs around one entry's body: ids, times, tags (ids are at most 64 bytes).
pub const ENTRY_FRAMING_BYTES: u32 = 1024;

/// The WebSocket close code for a protocol error code (docs/PROTOCOL.md, "Closing").
pub fn close_code(code: ErrorCode) -> u16 {
    use ErrorCode as C;
    match code {
        C::ShuttingDown => 1001,
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

/// What a connection needs from the node.
pub struct Gateway {
    settings: CoreSettings,
    verifier: Arc<TokenVerifier>,
    sessions: Arc<Sessions>,
    messaging: Arc<Messaging>,
    presence: Arc<dyn PresenceStore>,
    bus: Arc<dyn Bus>,
    slots: Arc<Semaphore>,
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
        settings: CoreSettings,
        verifier: Arc<TokenVerifier>,
        sessions: Arc<Sessions>,
        messaging: Arc<Messaging>,
        presence: Arc<dyn PresenceStore>,
        bus: Arc<dyn Bus>,
        shutdown: CancellationToken,
    ) -> Self {
        Self {
            slots: Arc::new(Semaphore::new(settings.max_sessions)),
            settings,
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
                    let _ = stream.set_nodelay(true);
                    let gateway = self.clone();
                    self.connections.spawn(async move {
                        if let Err(error) = gateway.connection(stream).await {
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

    fn ws_config(&self) -> WebSocketConfig {
        let max = self.settings.max_frame_bytes as usize + 1;
        WebSocketConfig::default()
            .read_buffer_size(self.settings.read_buffer_bytes)
            // Single frames are written at once (send = feed + flush); pushes queued together
            // are fed into this buffer and written with one flush, one system call for many.
            .write_buffer_size(PUSH_WRITE_BUFFER)
            .max_write_buffer_size(PUSH_WRITE_BUFFER + 4 * max)
            .max_message_size(Some(max))
            .max_frame_size(Some(max))
    }

    async fn connection(self: Arc<Self>, stream: TcpStream) -> Result<(), tungstenite::Error> {
        // Each phase is boxed: a task is as large as its largest state, and an idle session
        // should carry neither the handshake's nor a request's.
        let Some(connection) = Box::pin(self.clone().open(stream)).await? else {
            return Ok(());
        };
        let session = connection.session.clone();
        let result = Box::pin(connection.run()).await;
        Box::pin(self.closed(&session)).await;
        result
    }

    /// The upgrade, the Hello and the Welcome: a registered session, or `None` when the
    /// connection was refused (the refusal has been sent).
    async fn open(
        self: Arc<Self>,
        stream: TcpStream,
    ) -> Result<Option<Connection<TcpStream>>, tungstenite::Error> {
        let mut negotiated = None;
        #[allow(clippy::result_large_err)] // The error type is tungstenite's callback contract.
        let callback =
            |request: &Request, response: Response| upgrade(request, response, &mut negotiated);
        let handshake = Instant::now() + Duration::from_millis(self.settings.handshake_timeout_ms);
        // A peer that never completes the upgrade holds nothing for long.
        let upgrade = tokio_tungstenite::accept_hdr_async_with_config(
            stream,
            callback,
            Some(self.ws_config()),
        );
        // Boxed, like the other large steps below: a task is as large as its largest state, and
        // an idle connection should not carry the handshake's.
        let ws = tokio::time::timeout_at(handshake, Box::pin(upgrade))
            .await
            .map_err(|_| timed_out())??;
        let mut link = Link {
            ws,
            write_timeout: Duration::from_millis(self.settings.write_timeout_ms),
        };
        let Some(slot) = self.slots.clone().try_acquire_owned().ok() else {
            let mut error = Error::new(ErrorCode::TooManyConnections, "the node is full");
            error.retry_after_ms = self.settings.reconnect_after_ms;
            return Box::pin(link.close_with_error(0, error))
                .await
                .map(|()| None);
        };
        let codec = FrameCodec::new(self.settings.max_frame_bytes as usize);
        let hello = loop {
            let message = match tokio::time::timeout_at(handshake, link.ws.next()).await {
                Err(_) => {
                    let error = Error::new(ErrorCode::HandshakeRequired, "no Hello in time");
                    return Box::pin(link.close_with_error(0, error))
                        .await
                        .map(|()| None);
                }
                Ok(None) => return Ok(None),
                Ok(Some(message)) => message,
            };
            match Box::pin(link.read_frame(message, &codec, false)).await? {
                Read::Frame(frame, _) => break *frame,
                // WebSocket pings and pongs may come first.
                Read::Ignored => {}
                Read::Closed => return Ok(None),
            }
        };
        let request_id = hello.request_id;
        let hello = match hello.body {
            Some(client_frame::Body::Hello(hello)) if request_id != 0 => hello,
            Some(client_frame::Body::Hello(_)) => {
                let error = Error::new(ErrorCode::InvalidArgument, "the Hello needs a request_id");
                return Box::pin(link.close_with_error(0, error))
                    .await
                    .map(|()| None);
            }
            _ => {
                let error = Error::new(ErrorCode::HandshakeRequired, "the first frame is a Hello");
                return Box::pin(link.close_with_error(request_id, error))
                    .await
                    .map(|()| None);
            }
        };
        let (session, inbox) = match self.authenticate(negotiated, &hello) {
            Ok(accepted) => accepted,
            Err(error) => {
                metrics::counter!("im_handshakes_refused_total", "code" => error.code().as_str_name())
                    .increment(1);
                return Box::pin(link.close_with_error(request_id, error))
                    .await
                    .map(|()| None);
            }
        };
        match self.sessions.register(session.clone()) {
            Ok(_) => {
                metrics::counter!("im_sessions_opened_total").increment(1);
                metrics::gauge!("im_sessions").increment(1.0);
            }
            Err(RegisterError::TooManyForUser) => {
                let mut error = Error::new(
                    ErrorCode::TooManyConnections,
                    "the user has the most connections allowed",
                );
                error.retry_after_ms = self.settings.reconnect_after_ms;
                return Box::pin(link.close_with_error(request_id, error))
                    .await
                    .map(|()| None);
            }
        }
        tracing::debug!(session = %session.session_id, user = %session.user_id, device = %session.device_id, "session opened");
        self.device_connected(&session);
        let welcome = Welcome {
            protocol_version: negotiated.unwrap_or_default(),
            user_id: session.user_id.to_string(),
            device_id: session.device_id.to_string(),
            session_id: session.session_id.to_string(),
            heartbeat_interval_ms: self.settings.heartbeat_interval_ms,
            idle_timeout_ms: self.settings.idle_timeout_ms,
            limits: Some(self.settings.limits()),
            server_time_ms: now_ms(),
            server_version: SERVER_VERSION.into(),
            node_id: self.settings.node_id.clone(),
        };
        let welcomed = Box::pin(link.send(frame(request_id, server_frame::Body::Welcome(welcome))));
        if let Err(error) = welcomed.await {
            Box::pin(self.closed(&session)).await;
            return Err(error);
        }
        let online = self
            .presence
            .connected(
                &session.user_id,
                &session.session_id,
                session.platform,
                now_ms(),
            )
            .await;
        Box::pin(self.presence_changed(online)).await;
        Ok(Some(Connection {
            gateway: self.clone(),
            link,
            session,
            inbox,
            codec,
            client_frame_limit: FrameCodec::announced(hello.max_frame_bytes).max_frame_bytes(),
            limiter: RateLimiter::direct(quota(self.settings.frames_per_second)),
            strikes: 0,
            unacked: VecDeque::new(),
            acked: HashMap::new(),
            inflight: FuturesOrdered::new(),
            _slot: slot,
        }))
    }

    /// A session has ended: it leaves the registry and, maybe, the user goes offline.
    async fn closed(&self, session: &SessionHandle) {
        self.sessions.unregister(session);
        metrics::gauge!("im_sessions").decrement(1.0);
        let left = self
            .presence
            .disconnected(&session.user_id, &session.session_id, now_ms())
            .await;
        self.presence_changed(left).await;
        tracing::debug!(session = %session.session_id, "session closed");
    }

    /// Checks the Hello: version, device id, token.
    fn authenticate(
        &self,
        negotiated: Option<u32>,
        hello: &Hello,
    ) -> Result<(SessionHandle, mpsc::Receiver<Arc<Outbound>>), Error> {
        let unsupported = || {
            let mut error = Error::new(
                ErrorCode::UnsupportedVersion,
                format!("this server speaks {SUPPORTED_VERSIONS:?}"),
            );
            error.supported_versions = SUPPORTED_VERSIONS.to_vec();
            error
        };
        let version = negotiated.ok_or_else(unsupported)?;
        if !hello.protocol_versions.contains(&version) {
            return Err(unsupported());
        }
        DeviceId::new(hello.device_id.clone())
            .map_err(|e| Error::new(ErrorCode::InvalidArgument, format!("device_id: {e}")))?;
        // Every entry must fit the client's frames: pushes carry one entry each.
        let smallest = self.settings.max_content_bytes + ENTRY_FRAMING_BYTES;
        if hello.max_frame_bytes != 0 && hello.max_frame_bytes < smallest {
            let mut error = Error::new(
                ErrorCode::InvalidArgument,
                format!("max_frame_bytes must be 0 or at least {smallest}"),
            );
            error.limit = u64::from(smallest);
            return Err(error);
        }
        let token = self
            .verifier
            .verify(&hello.token, &hello.device_id)
            .map_err(|e| Error::new(e.code(), e.to_string()))?;
        UserId::new(token.user_id.clone()).map_err(|e| {
            Error::new(
                ErrorCode::Unauthenticated,
                format!("the token's user id: {e}"),
            )
        })?;
        Ok(SessionHandle::new(
            &token.user_id,
            &hello.device_id,
            hello.platform(),
            token.issued_at_ms,
            self.settings.outbound_queue,
        ))
    }

    /// Tells the other nodes, which end an older session of the same device. Published aside,
    /// bounded: a bus that is reconnecting must not hold up the handshake.
    fn device_connected(&self, session: &SessionHandle) {
        if !self.bus.shared() {
            return;
        }
        let event = RouteChanged {
            user_id: session.user_id.to_string(),
            device_id: session.device_id.to_string(),
            session_id: session.session_id.to_string(),
            node_id: self.settings.node_id.clone(),
            platform: session.platform.into(),
            online: true,
            connected_at_ms: session.connected_at_ms,
            ..RouteChanged::default()
        };
        let bus = self.bus.clone();
        tokio::spawn(async move {
            let published = tokio::time::timeout(Duration::from_secs(1), bus.emit(&event)).await;
            if !matches!(published, Ok(Ok(()))) {
                tracing::warn!("device connection not published: older sessions elsewhere stay");
            }
        });
    }

    async fn presence_changed(&self, presence: Option<Presence>) {
        let Some(presence) = presence else { return };
        let event = PresenceChanged {
            presence: Some(presence),
            node_id: self.settings.node_id.clone(),
            time_ms: now_ms(),
        };
        if let Err(error) = self.bus.emit(&event).await {
            tracing::warn!(%error, "presence change not published");
        }
    }
}

/// Chooses the subprotocol of an upgrade (docs/PROTOCOL.md, "Version names and negotiation").
#[allow(clippy::result_large_err)] // The error type is tungstenite's callback contract.
fn upgrade(
    request: &Request,
    mut response: Response,
    negotiated: &mut Option<u32>,
) -> Result<Response, ErrorResponse> {
    let refuse = |status: StatusCode, body: String| {
        let mut refusal = ErrorResponse::new(Some(body));
        *refusal.status_mut() = status;
        refusal
    };
    if request.uri().path() != WS_PATH {
        return Err(refuse(
            StatusCode::NOT_FOUND,
            format!("upgrade at {WS_PATH}"),
        ));
    }
    let offered: Vec<&str> = request
        .headers()
        .get_all("sec-websocket-protocol")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect();
    let selected = match negotiate_subprotocol(offered.iter().copied(), SUPPORTED_VERSIONS) {
        Some(version) => {
            *negotiated = Some(version);
            subprotocol(version)
        }
        None if offered.contains(&BARE_SUBPROTOCOL) => BARE_SUBPROTOCOL.to_owned(),
        None => {
            let supported: Vec<String> = SUPPORTED_VERSIONS.iter().map(u32::to_string).collect();
            return Err(refuse(
                StatusCode::BAD_REQUEST,
                format!("UNSUPPORTED_VERSION supported={}", supported.join(",")),
            ));
        }
    };
    if let Ok(value) = HeaderValue::from_str(&selected) {
        response
            .headers_mut()
            .insert("sec-websocket-protocol", value);
    }
    Ok(response)
}

/// What reading one WebSocket message gave.
enum Read {
    /// A decoded frame, with its bytes.
    Frame(Box<ClientFrame>, Bytes),
    /// A control frame, or an unknown variant already answered.
    Ignored,
    /// The connection is over (closed by either side, or closed here after an error).
    Closed,
}

/// The WebSocket of one connection.
struct Link<S> {
    ws: WebSocketStream<S>,
    /// A write that cannot finish in this long (a peer that stopped reading) ends the
    /// connection, so no task waits forever on a dead peer.
    write_timeout: Duration,
}

fn timed_out() -> tungstenite::Error {
    tungstenite::Error::Io(std::io::Error::new(
        std::io::ErrorKind::TimedOut,
        "the peer took too long",
    ))
}

impl<S: AsyncRead + AsyncWrite + Unpin> Link<S> {
    async fn send(&mut self, frame: Bytes) -> Result<(), tungstenite::Error> {
        tokio::time::timeout(self.write_timeout, self.ws.send(WsMessage::Binary(frame)))
            .await
            .map_err(|_| timed_out())?
    }

    /// Buffers a frame; it reaches the socket once the buffer fills or at the next flush.
    async fn feed(&mut self, frame: Bytes) -> Result<(), tungstenite::Error> {
        tokio::time::timeout(self.write_timeout, self.ws.feed(WsMessage::Binary(frame)))
            .await
            .map_err(|_| timed_out())?
    }

    async fn flush(&mut self) -> Result<(), tungstenite::Error> {
        tokio::time::timeout(self.write_timeout, self.ws.flush())
            .await
            .map_err(|_| timed_out())?
    }

    /// Sends `error`, then closes with the matching close code and the error's name.
    async fn close_with_error(
        &mut self,
        request_id: u64,
        error: Error,
    ) -> Result<(), tungstenite::Error> {
        let code = error.code();
        self.send(error_frame(request_id, error)).await?;
        self.close(code).await
    }

    /// Sends a GoAway, then closes.
    async fn go_away(
        &mut self,
        code: ErrorCode,
        reconnect_after_ms: u64,
    ) -> Result<(), tungstenite::Error> {
        let go_away = GoAway {
            code: code as i32,
            message: code.name().to_owned(),
            reconnect_after_ms,
        };
        self.send(frame(0, server_frame::Body::GoAway(go_away)))
            .await?;
        self.close(code).await
    }

    async fn close(&mut self, code: ErrorCode) -> Result<(), tungstenite::Error> {
        let close = CloseFrame {
            code: CloseCode::from(close_code(code)),
            reason: code.name().into(),
        };
        tokio::time::timeout(self.write_timeout, self.ws.close(Some(close)))
            .await
            .map_err(|_| timed_out())??;
        // Let the peer answer the close, briefly; a peer that does not is dropped.
        let _ = tokio::time::timeout(Duration::from_secs(1), async {
            while let Some(Ok(_)) = self.ws.next().await {}
        })
        .await;
        Ok(())
    }

    /// Decodes a WebSocket message; answers and closes where the protocol says so.
    async fn read_frame(
        &mut self,
        message: Result<WsMessage, tungstenite::Error>,
        codec: &FrameCodec,
        authenticated: bool,
    ) -> Result<Read, tungstenite::Error> {
        let bytes = match message {
            Ok(WsMessage::Binary(bytes)) => bytes,
            Ok(WsMessage::Text(_)) => {
                let error = Error::new(ErrorCode::MalformedFrame, "text messages are not frames");
                self.close_with_error(0, error).await?;
                return Ok(Read::Closed);
            }
            Ok(WsMessage::Close(_)) => return Ok(Read::Closed),
            Ok(_) => return Ok(Read::Ignored),
            Err(tungstenite::Error::Capacity(_)) => {
                let limit = codec.max_frame_bytes();
                let error = FrameError::TooLarge {
                    size: limit + 1,
                    limit,
                }
                .to_error();
                self.close_with_error(0, error).await?;
                return Ok(Read::Closed);
            }
            Err(error) => return Err(error),
        };
        match codec.decode_client(&bytes) {
            Ok(frame) => Ok(Read::Frame(Box::new(frame), bytes)),
            Err(error @ FrameError::UnknownBody { .. }) if authenticated => {
                // After the Welcome the connection lives on.
                self.send(error_frame(error.request_id(), error.to_error()))
                    .await?;
                Ok(Read::Ignored)
            }
            Err(error) => {
                self.close_with_error(error.request_id(), error.to_error())
                    .await?;
                Ok(Read::Closed)
            }
        }
    }
}

/// A pushed entry not yet acknowledged.
struct Unacked {
    conversation_id: Arc<str>,
    seq: u64,
    frame: Bytes,
    sent_at: Instant,
}

type Answer = Pin<Box<dyn std::future::Future<Output = Bytes> + Send>>;

/// One authenticated connection.
struct Connection<S> {
    gateway: Arc<Gateway>,
    link: Link<S>,
    session: SessionHandle,
    inbox: mpsc::Receiver<Arc<Outbound>>,
    codec: FrameCodec,
    client_frame_limit: usize,
    limiter: DefaultDirectRateLimiter,
    /// Rate-limited frames in a row.
    strikes: u32,
    unacked: VecDeque<Unacked>,
    acked: HashMap<Arc<str>, u64>,
    /// Answers still being worked on (sends waiting for their commit), in request order.
    inflight: FuturesOrdered<Answer>,
    _slot: OwnedSemaphorePermit,
}

/// Whether the connection goes on.
enum Flow {
    Continue,
    Close,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Connection<S> {
    async fn run(mut self) -> Result<(), tungstenite::Error> {
        let settings = &self.gateway.settings;
        let idle = Duration::from_millis(u64::from(settings.idle_timeout_ms));
        let resend_after = Duration::from_millis(settings.resend_after_ms.max(1));
        let max_inflight = settings.max_inflight_requests as usize;
        let ending = self.session.ending().clone();
        let shutdown = self.gateway.shutdown.clone();
        let mut deadline: Pin<Box<Sleep>> = Box::pin(tokio::time::sleep(idle));
        let mut resend = Box::pin(tokio::time::sleep(resend_after));
        loop {
            // Unbiased: neither a stream of pushes nor a chatty client starves the other side.
            tokio::select! {
                () = ending.token.cancelled() => {
                    let reason = ending.reason.get().copied().unwrap_or(ErrorCode::ShuttingDown);
                    return Box::pin(self.finish(reason)).await;
                }
                () = shutdown.cancelled() => return Box::pin(self.finish(ErrorCode::ShuttingDown)).await,
                Some(answer) = self.inflight.next(), if !self.inflight.is_empty() => {
                    Box::pin(self.link.send(answer)).await?;
                }
                Some(outbound) = self.inbox.recv() => {
                    if !Box::pin(self.push_queued(outbound)).await? {
                        return Box::pin(self.finish(ErrorCode::SlowConsumer)).await;
                    }
                }
                message = self.link.ws.next(), if self.inflight.len() < max_inflight => {
                    let Some(message) = message else { return Ok(()) };
                    deadline.as_mut().reset(Instant::now() + idle);
                    match Box::pin(self.link.read_frame(message, &self.codec, true)).await? {
                        Read::Frame(frame, bytes) => {
                            if let Flow::Close = Box::pin(self.request(*frame, &bytes)).await? {
                                return Ok(());
                            }
                        }
                        Read::Ignored => {}
                        Read::Closed => return Ok(()),
                    }
                }
                () = deadline.as_mut() => {
                    return Box::pin(self.link.go_away(ErrorCode::HeartbeatTimeout, 0)).await;
                }
                () = resend.as_mut(), if !self.unacked.is_empty() => {
                    Box::pin(self.resend(resend_after)).await?;
                    resend.as_mut().reset(Instant::now() + resend_after);
                }
            }
        }
    }

    /// Ends the session: finishes what is in flight (up to the drain timeout), then says why.
    async fn finish(mut self, reason: ErrorCode) -> Result<(), tungstenite::Error> {
        let drain = Duration::from_millis(self.gateway.settings.drain_timeout_ms);
        let deadline = Instant::now() + drain;
        while !self.inflight.is_empty() {
            match tokio::time::timeout_at(deadline, self.inflight.next()).await {
                Ok(Some(answer)) => self.link.send(answer).await?,
                Ok(None) | Err(_) => break,
            }
        }
        let after = self.gateway.settings.reconnect_after_ms;
        let wait = match reason {
            ErrorCode::SessionReplaced | ErrorCode::TokenRevoked | ErrorCode::UserDisabled => 0,
            // Every session of the node is told at once: spread them over four times the wait
            // so they do not all come back in the same instant.
            ErrorCode::Unavailable => {
                after + (uuid::Uuid::new_v4().as_u128() % u128::from(3 * after + 1)) as u64
            }
            _ => after,
        };
        self.link.go_away(reason, wait).await
    }

    /// Writes `first` and whatever else is queued now (up to [`PUSH_BATCH`] frames) with one
    /// flush. Returns false when too many pushes wait for their acknowledgement.
    async fn push_queued(&mut self, first: Arc<Outbound>) -> Result<bool, tungstenite::Error> {
        let mut next = Some(first);
        let mut written = 0;
        while let Some(outbound) = next.take() {
            if !self.push(outbound).await? {
                return Ok(false);
            }
            written += 1;
            if written < PUSH_BATCH {
                next = self.inbox.try_recv().ok();
            }
        }
        self.link.flush().await?;
        Ok(true)
    }

    /// Feeds a frame from the outbound queue to the socket's buffer; entries are kept until
    /// acknowledged. Returns false when too many pushes wait for their acknowledgement.
    async fn push(&mut self, outbound: Arc<Outbound>) -> Result<bool, tungstenite::Error> {
        if let Some((conversation_id, seq)) = outbound.entry.clone() {
            if self.acked.get(&conversation_id).is_some_and(|a| *a >= seq) {
                return Ok(true);
            }
            if self.unacked.len() >= self.gateway.settings.max_unacked {
                metrics::counter!("im_slow_consumers_total", "cause" => "unacknowledged")
                    .increment(1);
                return Ok(false);
            }
            self.unacked.push_back(Unacked {
                conversation_id,
                seq,
                frame: outbound.frame.clone(),
                sent_at: Instant::now(),
            });
        }
        self.link.feed(outbound.frame.clone()).await?;
        Ok(true)
    }

    async fn resend(&mut self, after: Duration) -> Result<(), tungstenite::Error> {
        let now = Instant::now();
        let write_timeout = self.link.write_timeout;
        let (unacked, ws) = (&mut self.unacked, &mut self.link.ws);
        let resent = async move {
            for unacked in unacked.iter_mut() {
                if now.duration_since(unacked.sent_at) >= after {
                    unacked.sent_at = now;
                    metrics::counter!("im_pushes_resent_total").increment(1);
                    ws.feed(WsMessage::Binary(unacked.frame.clone())).await?;
                }
            }
            ws.flush().await
        };
        tokio::time::timeout(write_timeout, resent)
            .await
            .map_err(|_| timed_out())?
    }

    fn delivery_ack(&mut self, ack: &DeliveryAck) {
        for cursor in &ack.acks {
            // Only conversations with pushes waiting: a client cannot grow this map at will.
            if !self
                .unacked
                .iter()
                .any(|u| *u.conversation_id == *cursor.conversation_id)
            {
                continue;
            }
            let conversation: Arc<str> = cursor.conversation_id.as_str().into();
            let held = self.acked.entry(conversation.clone()).or_insert(0);
            *held = (*held).max(cursor.seq);
            let held = *held;
            self.unacked
                .retain(|u| !(u.conversation_id == conversation && u.seq <= held));
        }
        if self.unacked.is_empty() {
            // Nothing to track: give the memory back (idle connections stay small).
            self.unacked.shrink_to_fit();
        }
    }

    /// Applies the per-connection rate limit. `None`: go on.
    fn rate_limited(&mut self) -> Option<Error> {
        match self.limiter.check() {
            Ok(()) => {
                self.strikes = 0;
                None
            }
            Err(not_until) => {
                self.strikes += 1;
                metrics::counter!("im_rate_limited_total", "scope" => "connection").increment(1);
                let wait = not_until.wait_time_from(self.limiter.clock().now());
                let mut error = Error::new(ErrorCode::RateLimited, "too many frames");
                error.retry_after_ms = wait.as_millis().max(1) as u64;
                Some(error)
            }
        }
    }

    async fn answer(
        &mut self,
        request_id: u64,
        result: Result<server_frame::Body, Error>,
    ) -> Result<(), tungstenite::Error> {
        let framed = match result {
            Ok(body) => frame(request_id, body),
            Err(error) => error_frame(request_id, error),
        };
        self.link.send(framed).await
    }

    async fn request(
        &mut self,
        request: ClientFrame,
        bytes: &Bytes,
    ) -> Result<Flow, tungstenite::Error> {
        let request_id = request.request_id;
        let Some(body) = request.body else {
            return Ok(Flow::Continue);
        };
        let unanswered = matches!(
            body,
            client_frame::Body::DeliveryAck(_) | client_frame::Body::Typing(_)
        );
        if !unanswered && request_id == 0 {
            let error = Error::new(
                ErrorCode::InvalidArgument,
                "a request that expects an answer needs a request_id",
            );
            self.link.close_with_error(0, error).await?;
            return Ok(Flow::Close);
        }
        if let Some(error) = self.rate_limited() {
            if self.strikes > self.gateway.settings.abuse_threshold {
                let mut error = error;
                error.message = "rate limit exceeded repeatedly".into();
                self.link.close_with_error(0, error).await?;
                return Ok(Flow::Close);
            }
            if !unanswered {
                self.link.send(error_frame(request_id, error)).await?;
            }
            return Ok(Flow::Continue);
        }
        let gateway = self.gateway.clone();
        let messaging = &gateway.messaging;
        let user = self.session.user_id.clone();
        match body {
            client_frame::Body::Hello(_) => {
                let error = Error::new(ErrorCode::AlreadyAuthenticated, "already authenticated");
                self.link.close_with_error(request_id, error).await?;
                return Ok(Flow::Close);
            }
            client_frame::Body::Ping(ping) => {
                let pong = Pong {
                    client_time_ms: ping.client_time_ms,
                    server_time_ms: now_ms(),
                };
                self.answer(request_id, Ok(server_frame::Body::Pong(pong)))
                    .await?;
            }
            client_frame::Body::Send(send) => {
                let raw = wire::field(bytes, FRAME_SEND).and_then(|s| wire::field(s, SEND_BODY));
                match messaging.submit(&self.session, send, raw).await {
                    Ok(pending) => self.inflight.push_back(Box::pin(async move {
                        match pending.wait().await {
                            Ok(body) => frame(request_id, body),
                            Err(error) => error_frame(request_id, error),
                        }
                    })),
                    Err(error) => self.link.send(error_frame(request_id, error)).await?,
                }
            }
            client_frame::Body::DeliveryAck(ack) => self.delivery_ack(&ack),
            client_frame::Body::Sync(sync) => {
                let result = messaging.sync(&user, sync, self.client_frame_limit).await;
                self.answer(request_id, result.map(server_frame::Body::Sync))
                    .await?;
            }
            client_frame::Body::History(history) => {
                let framed = match messaging
                    .history(&user, &history, self.client_frame_limit)
                    .await
                {
                    Ok(page) => with_request_id(page, request_id),
                    Err(error) => error_frame(request_id, error),
                };
                self.link.send(framed).await?;
            }
            client_frame::Body::Pull(pull) => {
                let framed = match messaging.pull(&user, &pull, self.client_frame_limit).await {
                    Ok(page) => with_request_id(page, request_id),
                    Err(error) => error_frame(request_id, error),
                };
                self.link.send(framed).await?;
            }
            client_frame::Body::MarkRead(mark) => {
                let result = messaging.mark_read(&self.session, &mark).await;
                self.answer(request_id, result.map(server_frame::Body::ReadState))
                    .await?;
            }
            client_frame::Body::ReadCursors(request) => {
                let result = messaging.read_cursors(&user, &request).await;
                self.answer(request_id, result.map(server_frame::Body::ReadCursors))
                    .await?;
            }
            client_frame::Body::Typing(typing) => {
                messaging
                    .typing(&self.session, &typing.conversation_id, typing.active)
                    .await;
            }
            client_frame::Body::PresenceSubscribe(subscribe) => {
                let result = self.subscribe(&subscribe.user_ids).await;
                self.answer(request_id, result).await?;
            }
            client_frame::Body::PresenceUnsubscribe(unsubscribe) => {
                gateway
                    .sessions
                    .unwatch(&self.session.session_id, &unsubscribe.user_ids);
                self.answer(request_id, Ok(server_frame::Body::Ok(OkBody {})))
                    .await?;
            }
            client_frame::Body::SetPresence(set)
                if set.status_text.len() > gateway.settings.max_status_text_bytes =>
            {
                let mut error = Error::new(
                    ErrorCode::InvalidArgument,
                    format!(
                        "status_text is at most {} bytes",
                        gateway.settings.max_status_text_bytes
                    ),
                );
                error.limit = gateway.settings.max_status_text_bytes as u64;
                self.answer(request_id, Err(error)).await?;
            }
            client_frame::Body::SetPresence(set) => {
                let status = match set.status() {
                    PresenceStatus::Unspecified | PresenceStatus::Offline => PresenceStatus::Online,
                    chosen => chosen,
                };
                let changed = gateway
                    .presence
                    .set_status(&user, status, &set.status_text, now_ms())
                    .await;
                gateway.presence_changed(changed).await;
                self.answer(request_id, Ok(server_frame::Body::Ok(OkBody {})))
                    .await?;
            }
        }
        Ok(Flow::Continue)
    }

    async fn subscribe(&mut self, user_ids: &[String]) -> Result<server_frame::Body, Error> {
        let mut unique: Vec<String> = user_ids.to_vec();
        unique.sort_unstable();
        unique.dedup();
        let user_ids = unique.as_slice();
        if let Some(bad) = user_ids.iter().find(|u| UserId::new(u.as_str()).is_err()) {
            return Err(Error::new(
                ErrorCode::InvalidArgument,
                format!("not a user id: {bad:?}"),
            ));
        }
        let max = self.gateway.settings.max_presence_subscriptions as usize;
        if !self
            .gateway
            .sessions
            .watch(&self.session.session_id, user_ids, max)
        {
            return Err(Error::new(
                ErrorCode::QuotaExceeded,
                format!("a connection watches at most {max} users"),
            ));
        }
        let presences = self.gateway.presence.get(user_ids).await;
        Ok(server_frame::Body::Presences(PresenceList { presences }))
    }
}
