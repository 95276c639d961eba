//! Opening a connection: the upgrade, the Hello (version, device id, frame limit, token), a
//! session slot and the Welcome, within the handshake timeout; and what ending one undoes.
//! Until its Hello has arrived, a connection gives way to a newer one when the gateway's
//! admission says so (`evicted`).

use std::{sync::Arc, time::Duration};

use futures::StreamExt;
use im_common::now_ms;
use im_proto::{
    DeviceId, FrameCodec, UserId,
    v1::{
        ClientFeature, Error, ErrorCode, Hello, RouteChanged, Welcome, client_frame, server_frame,
    },
    version::SUPPORTED_VERSIONS,
};
use tokio::{
    io::{AsyncRead, AsyncWrite},
    sync::mpsc,
    time::Instant,
};
use tokio_tungstenite::tungstenite::{
    self,
    handshake::server::{Request, Response},
};
use tokio_util::sync::CancellationToken;

use super::{
    ENTRY_FRAMING_BYTES, Gateway, Limits, SERVER_VERSION,
    connection::Connection,
    link::{Link, Read, timed_out},
    upgrade::upgrade,
};
use crate::{
    sessions::{Outbound, RegisterError, SessionHandle},
    settings::announced,
    wire::frame,
};

/// A duration in whole milliseconds, as the protocol states them.
pub(super) fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

impl Gateway {
    /// The upgrade, the Hello and the Welcome, all by `handshake`: a registered session, or
    /// `None` when the connection was refused (the refusal has been sent).
    pub(super) async fn open<S>(
        self: Arc<Self>,
        stream: S,
        evicted: &CancellationToken,
        handshake: Instant,
    ) -> Result<Option<Connection<S>>, tungstenite::Error>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let limits = self.config.limits.get();
        let mut negotiated = None;
        #[allow(clippy::result_large_err)] // The error type is tungstenite's callback contract.
        let callback =
            |request: &Request, response: Response| upgrade(request, response, &mut negotiated);
        // A peer that never completes the upgrade holds nothing for long.
        let upgrade = tokio_tungstenite::accept_hdr_async_with_config(
            stream,
            callback,
            Some(limits.ws_config()),
        );
        // Boxed, like the other large steps below: a task is as large as its largest state, and
        // an idle connection should not carry the handshake's.
        let ws = tokio::select! {
            upgraded = tokio::time::timeout_at(handshake, Box::pin(upgrade)) => {
                upgraded.map_err(|_| timed_out())??
            }
            () = evicted.cancelled() => return Ok(None),
        };
        let mut link = Link {
            ws,
            write_timeout: limits.write_timeout,
        };
        let codec = FrameCodec::new(limits.max_frame_bytes as usize);
        let hello = loop {
            let next = tokio::select! {
                next = tokio::time::timeout_at(handshake, link.ws.next()) => next,
                // Dropped without a word: a close could wait on a peer that does not read.
                () = evicted.cancelled() => return Ok(None),
            };
            let message = match next {
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
        let (session, inbox) = match self.authenticate(negotiated, &hello, &limits) {
            Ok(accepted) => accepted,
            Err(error) => {
                metrics::counter!("im_handshakes_refused_total", "code" => error.code().as_str_name())
                    .increment(1);
                return Box::pin(link.close_with_error(request_id, error))
                    .await
                    .map(|()| None);
            }
        };
        // Only an authenticated session takes one of the node's slots.
        let Some(slot) = self.slots.clone().try_acquire_owned().ok() else {
            let mut error = Error::new(ErrorCode::TooManyConnections, "the node is full");
            error.retry_after_ms = millis(limits.reconnect_after);
            return Box::pin(link.close_with_error(request_id, error))
                .await
                .map(|()| None);
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
                error.retry_after_ms = millis(limits.reconnect_after);
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
            heartbeat_interval_ms: u32::try_from(millis(limits.heartbeat_interval))
                .unwrap_or(u32::MAX),
            idle_timeout_ms: u32::try_from(millis(limits.idle_timeout)).unwrap_or(u32::MAX),
            limits: Some(announced(
                &limits,
                &self.config.presence.get(),
                &self.config.messaging.get(),
            )),
            server_time_ms: now_ms(),
            server_version: SERVER_VERSION.into(),
            node_id: self.config.node_id.clone(),
        };
        let welcomed = Box::pin(link.send(frame(request_id, server_frame::Body::Welcome(welcome))));
        if let Err(error) = welcomed.await {
            Box::pin(self.closed(&session)).await;
            return Err(error);
        }
        Box::pin(self.presence.connected(&session)).await;
        let client_frame_limit = FrameCodec::announced(hello.max_frame_bytes).max_frame_bytes();
        Ok(Some(Connection::new(
            self.clone(),
            limits,
            link,
            session,
            inbox,
            client_frame_limit,
            slot,
        )))
    }

    /// A session has ended: it leaves the registry and, maybe, the user goes offline.
    pub(super) async fn closed(&self, session: &SessionHandle) {
        self.sessions.unregister(session);
        metrics::gauge!("im_sessions").decrement(1.0);
        self.presence.disconnected(session).await;
        tracing::debug!(session = %session.session_id, "session closed");
    }

    /// Checks the Hello: version, device id, token.
    fn authenticate(
        &self,
        negotiated: Option<u32>,
        hello: &Hello,
        limits: &Limits,
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
        let device = DeviceId::new(hello.device_id.clone())
            .map_err(|e| Error::new(ErrorCode::InvalidArgument, format!("device_id: {e}")))?;
        // Every entry must fit the client's frames: pushes carry one entry each.
        let smallest = self.config.messaging.get().max_content_bytes + ENTRY_FRAMING_BYTES;
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
            .verify(&hello.token, device.as_str())
            .map_err(|e| Error::new(e.code(), e.to_string()))?;
        let user = UserId::new(token.user_id.clone()).map_err(|e| {
            Error::new(
                ErrorCode::Unauthenticated,
                format!("the token's user id: {e}"),
            )
        })?;
        let (mut session, outbox) = SessionHandle::new(
            user,
            &device,
            hello.platform(),
            token.standing,
            limits.outbound_queue,
        );
        session.resync = hello.features().any(|f| f == ClientFeature::Resync);
        Ok((session, outbox))
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
            node_id: self.config.node_id.clone(),
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
}
