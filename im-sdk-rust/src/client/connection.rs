//! The connection task: the one task that owns the connection, serving the [`Client`]'s
//! commands (see [`Command`]).
//!
//! It connects to each gateway in turn, authenticates, syncs after every connect, resends the
//! sends not yet acknowledged ([`PendingSend`], same client message ids), sends the calls made
//! while offline, keeps the heartbeat, batches delivery acknowledgements and reconnects with
//! jittered backoff. What arrives for a conversation goes through the [`Timeline`], whose
//! [`Action`]s this task carries out: the store writes, the events, the pulls.
//!
//! [`Client`]: super::Client

use std::{
    collections::{HashMap, HashSet, VecDeque},
    sync::Arc,
    time::Duration,
};

use futures::{SinkExt, StreamExt};
use im_proto::{
    ErrorCode, FrameCodec,
    v1::{
        self, ClientFrame, DeliveryAck, Hello, MessageBody, Ping, Platform, PullRequest,
        SendRequest, SeqCursor, ServerFrame, SyncRequest, Welcome, client_frame, server_frame,
    },
    version::{BARE_SUBPROTOCOL, SUPPORTED_VERSIONS, subprotocol},
};
use prost::Message as _;
use tokio::{
    net::TcpStream,
    sync::{mpsc, oneshot, watch},
    time::Instant,
};
use tokio_tungstenite::{
    WebSocketStream,
    tungstenite::{self, Message as WsMessage, client::IntoClientRequest, http::HeaderValue},
};

use super::{
    Sent,
    builder::{Config, Endpoint, TokenProvider},
    timeline::{Action, Timeline},
};
use crate::{
    error::{Error, Result},
    store::{LocalStore, Outgoing},
    types::{Body, ConnectionState, Conversation, Event, Message},
};

/// What the [`Client`](super::Client) asks of the task.
pub(super) enum Command {
    /// Send an entry; answered with its ack (or why it was refused for good).
    Send {
        /// The send, as the store keeps it.
        outgoing: Outgoing,
        /// Where the ack goes.
        done: oneshot::Sender<Result<Sent>>,
    },
    /// A request with an answer (history, mark read, presence), queued while offline.
    Call {
        /// The request.
        body: client_frame::Body,
        /// Where the answer goes.
        done: oneshot::Sender<Result<server_frame::Body>>,
    },
    /// A frame with no answer (typing), dropped while offline.
    Notify {
        /// The frame.
        body: client_frame::Body,
    },
    /// Close the connection and stop.
    Close {
        /// Told once closed.
        done: oneshot::Sender<()>,
    },
}

/// The [`Client`](super::Client)'s ends of the task's channels.
pub(super) struct Handles {
    /// Commands to the task.
    pub(super) commands: mpsc::Sender<Command>,
    /// The app's events.
    pub(super) events: mpsc::Receiver<Event>,
    /// The connection's state.
    pub(super) state: watch::Receiver<ConnectionState>,
}

/// A send not yet acknowledged (the store's outbox, with who waits for it).
struct PendingSend {
    outgoing: Outgoing,
    waiters: Vec<oneshot::Sender<Result<Sent>>>,
    /// The request id of the copy on the wire, if any.
    in_flight: Option<u64>,
    /// Not to be sent again before this (after a retryable refusal).
    not_before: Option<Instant>,
}

/// A call waiting for the connection or its answer.
struct Call {
    body: client_frame::Body,
    done: oneshot::Sender<Result<server_frame::Body>>,
    deadline: Instant,
    /// After a retryable refusal: not to be sent again before this.
    not_before: Option<Instant>,
}

/// What a request on the wire was, so that its answer finds its way.
enum Request {
    /// A send, by client message id.
    Send(String),
    Call(Box<Call>),
    Sync,
    /// A pull, by conversation.
    Pull(String),
    Ping,
}

/// Why a session ended.
enum Ended {
    /// The app closed the client.
    Closed,
    /// The token expired: reconnect with a fresh one.
    TokenExpired,
    /// Lost; reconnect (after at least this long).
    Lost(String, Duration),
    /// Refused for good.
    Fatal(Error),
}

type Ws = WebSocketStream<TcpStream>;

/// The task behind a [`Client`](super::Client).
pub(super) struct Connection {
    /// The gateways, tried in turn.
    endpoints: Vec<Endpoint>,
    /// Which one the next connection goes to.
    next_endpoint: usize,
    device_id: String,
    platform: Platform,
    token: Arc<dyn TokenProvider>,
    store: Arc<dyn LocalStore>,
    config: Config,
    commands: mpsc::Receiver<Command>,
    events: mpsc::Sender<Event>,
    state: watch::Sender<ConnectionState>,
    user_id: String,
    /// The order of each conversation's entries.
    timeline: Timeline,
    read: HashMap<String, u64>,
    /// Conversations whose progress the server has not been told.
    unacked: HashSet<String>,
    /// Sends not yet acknowledged, oldest first.
    sends: Vec<PendingSend>,
    /// Events the app's stream could not take yet, oldest first.
    backlog: VecDeque<Event>,
    /// Calls made while disconnected.
    queued: VecDeque<Call>,
    /// Requests on the wire, by request id.
    requests: HashMap<u64, Request>,
    next_id: u64,
    server_codec: FrameCodec,
    rng: u64,
}

/// Events held back while the app's stream is full, before the connection stops reading.
const BACKLOG_LIMIT: usize = 4096;

/// How long one write to the server may take.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// A delay the server asked for, within reason (and never an overflow).
fn delay_ms(ms: u64) -> Duration {
    Duration::from_millis(ms.min(3_600_000))
}

fn seed() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| d.as_nanos() as u64);
    nanos | 1
}

/// Whether a refusal ends the client for good (a retry cannot fix it).
fn is_fatal(code: i32) -> bool {
    matches!(
        ErrorCode::try_from(code),
        Ok(ErrorCode::SessionReplaced
            | ErrorCode::TokenRevoked
            | ErrorCode::UserDisabled
            | ErrorCode::Unauthenticated
            | ErrorCode::UnsupportedVersion
            | ErrorCode::InvalidArgument)
    )
}

impl Connection {
    /// The task for these gateways, not yet started, and the client's ends of its channels.
    pub(super) fn new(
        endpoints: Vec<Endpoint>,
        device_id: String,
        platform: Platform,
        token: Arc<dyn TokenProvider>,
        store: Arc<dyn LocalStore>,
        config: Config,
    ) -> (Self, Handles) {
        let (commands, inbox) = mpsc::channel(256);
        let (events, events_rx) = mpsc::channel(config.event_buffer.max(1));
        let (state, state_rx) = watch::channel(ConnectionState::Connecting);
        let connection = Self {
            endpoints,
            next_endpoint: 0,
            device_id,
            platform,
            token,
            store,
            config,
            commands: inbox,
            events,
            state,
            user_id: String::new(),
            timeline: Timeline::default(),
            read: HashMap::new(),
            unacked: HashSet::new(),
            sends: Vec::new(),
            backlog: VecDeque::new(),
            queued: VecDeque::new(),
            requests: HashMap::new(),
            next_id: 0,
            server_codec: FrameCodec::default(),
            rng: seed(),
        };
        let handles = Handles {
            commands,
            events: events_rx,
            state: state_rx,
        };
        (connection, handles)
    }

    /// Connects, serves and reconnects until the client is closed or refused for good.
    pub(super) async fn run(mut self) {
        match self.store.load().await {
            Ok(snapshot) => {
                self.timeline = Timeline::new(snapshot.held);
                self.read = snapshot.read;
                self.sends = snapshot
                    .outbox
                    .into_iter()
                    .map(|outgoing| PendingSend {
                        outgoing,
                        waiters: Vec::new(),
                        in_flight: None,
                        not_before: None,
                    })
                    .collect();
            }
            Err(error) => {
                self.stop(error).await;
                return;
            }
        }
        let mut attempt: u32 = 0;
        let mut refresh = false;
        loop {
            self.set_state(ConnectionState::Connecting);
            let opened =
                tokio::time::timeout(self.config.connect_timeout, self.open(refresh)).await;
            let (reason, at_least) = match opened {
                Ok(Ok((ws, welcome))) => {
                    attempt = 0;
                    refresh = false;
                    match self.session(ws, welcome).await {
                        Ended::Closed => return self.closed().await,
                        Ended::TokenExpired => {
                            refresh = true;
                            ("the token expired".to_owned(), Duration::ZERO)
                        }
                        Ended::Fatal(error) => return self.stop(error).await,
                        Ended::Lost(reason, after) => (reason, after),
                    }
                }
                Ok(Err(error)) if error.error_code() == Some(ErrorCode::TokenExpired) => {
                    refresh = true;
                    (error.to_string(), Duration::ZERO)
                }
                // A refusal a retry cannot fix ends the client (a bad token, a version gap).
                Ok(Err(error)) if !error.is_retryable() => return self.stop(error).await,
                Ok(Err(error)) => (error.to_string(), delay_ms(error.retry_after_ms)),
                Err(_) => ("connecting timed out".to_owned(), Duration::ZERO),
            };
            let delay = self.backoff(attempt).max(at_least);
            attempt = attempt.saturating_add(1);
            self.set_state(ConnectionState::Reconnecting {
                reason,
                retry_in_ms: delay.as_millis() as u64,
            });
            if let Ended::Closed = self.wait_offline(delay).await {
                return self.closed().await;
            }
        }
    }

    fn backoff(&mut self, attempt: u32) -> Duration {
        let base = self.config.backoff_min.as_millis() as u64;
        let max = self.config.backoff_max.as_millis() as u64;
        let full = base.saturating_mul(1 << attempt.min(16)).min(max);
        // xorshift: jitter between half and the whole delay, so clients do not come back in step.
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        Duration::from_millis(full / 2 + self.rng % (full / 2 + 1))
    }

    fn set_state(&mut self, state: ConnectionState) {
        let _ = self.state.send(state.clone());
        self.emit(Event::Connection(state));
    }

    /// Hands an event to the app. The task never waits for the app (which may be waiting
    /// for the task): what the stream cannot take now waits in the backlog, and while the
    /// backlog is long the connection reads no more frames.
    fn emit(&mut self, event: Event) {
        if self.backlog.is_empty() {
            match self.events.try_send(event) {
                Ok(()) | Err(mpsc::error::TrySendError::Closed(_)) => {}
                Err(mpsc::error::TrySendError::Full(event)) => self.backlog.push_back(event),
            }
        } else {
            self.backlog.push_back(event);
        }
    }

    /// Moves backlogged events into the stream as it takes them.
    fn drain_backlog(&mut self) {
        while let Some(event) = self.backlog.pop_front() {
            match self.events.try_send(event) {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Closed(_)) => self.backlog.clear(),
                Err(mpsc::error::TrySendError::Full(event)) => {
                    self.backlog.push_front(event);
                    return;
                }
            }
        }
    }

    /// Every waiter learns the client is gone; the outbox stays in the store.
    async fn stop(&mut self, error: Error) {
        for pending_send in self.sends.drain(..) {
            for waiter in pending_send.waiters {
                let _ = waiter.send(Err(error.clone()));
            }
        }
        for call in self.queued.drain(..) {
            let _ = call.done.send(Err(error.clone()));
        }
        self.set_state(ConnectionState::Stopped {
            reason: error.to_string(),
        });
    }

    async fn closed(&mut self) {
        self.stop(Error::new(ErrorCode::Unavailable, "the client was closed"))
            .await;
    }

    /// Opens a connection: TCP, the upgrade offering our versions, the Hello.
    async fn open(&mut self, refresh: bool) -> Result<(Ws, Welcome)> {
        let unavailable =
            |e: &dyn std::fmt::Display| Error::new(ErrorCode::Unavailable, e.to_string());
        let token = self.token.token(refresh).await?;
        // Each attempt goes to the next gateway; a lost connection moves on too.
        let endpoint = self.endpoints[self.next_endpoint % self.endpoints.len()].clone();
        self.next_endpoint = (self.next_endpoint + 1) % self.endpoints.len();
        let tcp = TcpStream::connect(&endpoint.host_port)
            .await
            .map_err(|e| unavailable(&e))?;
        let _ = tcp.set_nodelay(true);
        let mut request = endpoint
            .url
            .as_str()
            .into_client_request()
            .map_err(|e| unavailable(&e))?;
        let mut offered: Vec<String> = SUPPORTED_VERSIONS.iter().map(|v| subprotocol(*v)).collect();
        offered.push(BARE_SUBPROTOCOL.to_owned());
        let offered = HeaderValue::from_str(&offered.join(", ")).map_err(|e| unavailable(&e))?;
        request
            .headers_mut()
            .insert("sec-websocket-protocol", offered);
        let (mut ws, _) = tokio_tungstenite::client_async(request, tcp)
            .await
            .map_err(|e| match e {
                tungstenite::Error::Http(response) if response.status() == 400 => Error::new(
                    ErrorCode::UnsupportedVersion,
                    "no protocol version in common",
                ),
                other => unavailable(&other),
            })?;
        let hello = ClientFrame {
            request_id: 1,
            body: Some(client_frame::Body::Hello(Hello {
                protocol_versions: SUPPORTED_VERSIONS.to_vec(),
                token,
                device_id: self.device_id.clone(),
                platform: self.platform as i32,
                client_version: concat!("im-sdk-rust/", env!("CARGO_PKG_VERSION")).into(),
                max_frame_bytes: self.config.max_frame_bytes,
            })),
        };
        ws.send(WsMessage::Binary(hello.encode_to_vec().into()))
            .await
            .map_err(|e| unavailable(&e))?;
        loop {
            let frame = match ws.next().await {
                Some(Ok(WsMessage::Binary(bytes))) => ServerFrame::decode(bytes)
                    .map_err(|e| Error::new(ErrorCode::MalformedFrame, e.to_string()))?,
                Some(Ok(_)) => continue,
                Some(Err(e)) => return Err(unavailable(&e)),
                None => {
                    return Err(Error::new(
                        ErrorCode::Unavailable,
                        "closed during the Hello",
                    ));
                }
            };
            match frame.body {
                Some(server_frame::Body::Welcome(welcome)) => return Ok((ws, welcome)),
                Some(server_frame::Body::Error(error)) => return Err(error.into()),
                _ => continue,
            }
        }
    }

    /// Serves commands while disconnected, for `delay`.
    async fn wait_offline(&mut self, delay: Duration) -> Ended {
        let until = Instant::now() + delay;
        let mut expiry = tokio::time::interval(Duration::from_millis(250));
        loop {
            tokio::select! {
                () = tokio::time::sleep_until(until) => return Ended::Lost(String::new(), Duration::ZERO),
                command = self.commands.recv() => match command {
                    None | Some(Command::Close { .. }) => {
                        if let Some(Command::Close { done }) = command {
                            let _ = done.send(());
                        }
                        return Ended::Closed;
                    }
                    Some(Command::Send { outgoing, done }) => self.enqueue_send(outgoing, done).await,
                    Some(Command::Call { body, done }) => {
                        let deadline = Instant::now() + self.config.request_timeout;
                        self.queued.push_back(Call {
                                body,
                                done,
                                deadline,
                                not_before: None,
                            });
                    }
                    // Typing while offline means nothing by the time the connection is back.
                    Some(Command::Notify { .. }) => {}
                },
                _ = expiry.tick() => {
                    self.expire_calls();
                    self.drain_backlog();
                }
            }
        }
    }

    /// Adds a send to the pending ones (and the store's outbox); a repeat of a pending id just
    /// waits for the same ack.
    async fn enqueue_send(&mut self, outgoing: Outgoing, done: oneshot::Sender<Result<Sent>>) {
        if let Some(existing) = self
            .sends
            .iter_mut()
            .find(|o| o.outgoing.client_msg_id == outgoing.client_msg_id)
        {
            existing.waiters.push(done);
            return;
        }
        if let Err(error) = self.store.push_outgoing(&outgoing).await {
            let _ = done.send(Err(error));
            return;
        }
        self.sends.push(PendingSend {
            outgoing,
            waiters: vec![done],
            in_flight: None,
            not_before: None,
        });
    }

    fn expire_calls(&mut self) {
        let now = Instant::now();
        let (expired, kept): (Vec<Call>, Vec<Call>) =
            self.queued.drain(..).partition(|c| c.deadline <= now);
        self.queued = kept.into();
        for call in expired {
            let _ = call.done.send(Err(Error::new(
                ErrorCode::Unavailable,
                "not connected before the request timeout",
            )));
        }
        let late: Vec<u64> = self
            .requests
            .iter()
            .filter(|(_, p)| matches!(p, Request::Call(c) if c.deadline <= now))
            .map(|(id, _)| *id)
            .collect();
        for id in late {
            if let Some(Request::Call(call)) = self.requests.remove(&id) {
                let _ = call
                    .done
                    .send(Err(Error::new(ErrorCode::Timeout, "no answer in time")));
            }
        }
    }

    fn next_id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    /// One authenticated connection, until it ends.
    async fn session(&mut self, mut ws: Ws, welcome: Welcome) -> Ended {
        self.user_id = welcome.user_id.clone();
        self.timeline.set_user(&welcome.user_id);
        self.server_codec = FrameCodec::announced(
            welcome
                .limits
                .as_ref()
                .map_or(0, |limits| limits.max_frame_bytes),
        );
        self.next_id = 1;
        self.set_state(ConnectionState::Connected {
            user_id: welcome.user_id.clone(),
            session_id: welcome.session_id.clone(),
        });
        let ended = self.serve(&mut ws, &welcome).await;
        // What was on the wire is resent or asked again on the next connection.
        for (_, request) in self.requests.drain() {
            if let Request::Call(call) = request {
                self.queued.push_back(*call);
            }
        }
        for pending_send in &mut self.sends {
            pending_send.in_flight = None;
        }
        self.timeline.connection_lost();
        let _ = tokio::time::timeout(WRITE_TIMEOUT, ws.close(None)).await;
        ended
    }

    async fn serve(&mut self, ws: &mut Ws, welcome: &Welcome) -> Ended {
        let lost = |e: &dyn std::fmt::Display| Ended::Lost(e.to_string(), Duration::ZERO);
        // Catch up: sync, resend the pending sends, send the calls made while offline.
        let sync = SyncRequest {
            held: cursors(self.timeline.held()),
            read: cursors(&self.read),
            ..Default::default()
        };
        if let Err(e) = self
            .transmit(ws, Request::Sync, client_frame::Body::Sync(sync))
            .await
        {
            return lost(&e);
        }
        if let Err(e) = self.flush_sends(ws).await {
            return lost(&e);
        }
        while let Some(call) = self.queued.pop_front() {
            if let Err(e) = self.send_call(ws, call).await {
                return lost(&e);
            }
        }
        let heartbeat = Duration::from_millis(u64::from(welcome.heartbeat_interval_ms.max(1_000)));
        let idle = Duration::from_millis(u64::from(welcome.idle_timeout_ms.max(3_000)));
        let mut ping = tokio::time::interval_at(Instant::now() + heartbeat, heartbeat);
        let mut housekeeping = tokio::time::interval(Duration::from_millis(100));
        let mut last_heard = Instant::now();
        let mut ack_due: Option<Instant> = None;
        // A handle of its own, so that waiting for room in the stream borrows nothing of self.
        let events = self.events.clone();
        loop {
            tokio::select! {
                command = self.commands.recv() => {
                    let result = match command {
                        None => return Ended::Closed,
                        Some(Command::Close { done }) => {
                            let _ = tokio::time::timeout(WRITE_TIMEOUT, ws.close(None)).await;
                            let _ = done.send(());
                            return Ended::Closed;
                        }
                        Some(Command::Send { outgoing, done }) => {
                            self.enqueue_send(outgoing, done).await;
                            self.flush_sends(ws).await
                        }
                        Some(Command::Call { body, done }) => {
                            let deadline = Instant::now() + self.config.request_timeout;
                            self.send_call(ws, Call {
                                body,
                                done,
                                deadline,
                                not_before: None,
                            }).await
                        }
                        Some(Command::Notify { body }) => self.write(ws, 0, body).await,
                    };
                    if let Err(e) = result {
                        return lost(&e);
                    }
                }
                permit = events.reserve(), if !self.backlog.is_empty() => {
                    if let (Ok(permit), Some(event)) = (permit, self.backlog.pop_front()) {
                        permit.send(event);
                    }
                    self.drain_backlog();
                }
                // While the app lags behind, read nothing more: the server holds what is next.
                message = ws.next(), if self.backlog.len() < BACKLOG_LIMIT => {
                    let frame = match message {
                        Some(Ok(WsMessage::Binary(bytes))) => match ServerFrame::decode(bytes) {
                            Ok(frame) => frame,
                            Err(e) => return lost(&e),
                        },
                        Some(Ok(WsMessage::Close(close))) => {
                            let reason = close.map(|c| c.reason.to_string()).unwrap_or_default();
                            return Ended::Lost(format!("closed by the server: {reason}"), Duration::ZERO);
                        }
                        Some(Ok(_)) => continue,
                        Some(Err(e)) => return lost(&e),
                        None => return Ended::Lost("connection lost".into(), Duration::ZERO),
                    };
                    last_heard = Instant::now();
                    match self.on_frame(ws, frame).await {
                        Ok(None) => {}
                        Ok(Some(ended)) => return ended,
                        Err(e) => return lost(&e),
                    }
                    if !self.unacked.is_empty() && ack_due.is_none() {
                        ack_due = Some(Instant::now() + self.config.ack_delay);
                    }
                }
                _ = ping.tick() => {
                    if last_heard.elapsed() > idle {
                        return Ended::Lost("the server stopped answering".into(), Duration::ZERO);
                    }
                    let body = client_frame::Body::Ping(Ping { client_time_ms: 0 });
                    if let Err(e) = self.transmit(ws, Request::Ping, body).await {
                        return lost(&e);
                    }
                }
                _ = housekeeping.tick() => {
                    self.expire_calls();
                    self.drain_backlog();
                    let result = match ack_due {
                        Some(due) if due <= Instant::now() => {
                            ack_due = None;
                            self.flush_acks(ws).await
                        }
                        _ => Ok(()),
                    };
                    let result = match result {
                        Ok(()) => self.flush_sends(ws).await,
                        failed => failed,
                    };
                    let result = match result {
                        Ok(()) => self.send_due_calls(ws).await,
                        failed => failed,
                    };
                    if let Err(e) = result {
                        return lost(&e);
                    }
                }
            }
        }
    }

    async fn write(
        &mut self,
        ws: &mut Ws,
        request_id: u64,
        body: client_frame::Body,
    ) -> std::result::Result<(), Error> {
        let frame = ClientFrame {
            request_id,
            body: Some(body),
        };
        let bytes = self
            .server_codec
            .encode(&frame)
            .map_err(|e| Error::from(e.to_error()))?;
        // A server that stops reading must not hold the task (and the app) forever.
        tokio::time::timeout(WRITE_TIMEOUT, ws.send(WsMessage::Binary(bytes)))
            .await
            .map_err(|_| Error::new(ErrorCode::Unavailable, "the server stopped reading"))?
            .map_err(|e| Error::new(ErrorCode::Unavailable, e.to_string()))
    }

    async fn transmit(
        &mut self,
        ws: &mut Ws,
        request: Request,
        body: client_frame::Body,
    ) -> std::result::Result<(), Error> {
        let id = self.next_id();
        self.requests.insert(id, request);
        self.write(ws, id, body).await
    }

    async fn send_call(&mut self, ws: &mut Ws, call: Call) -> std::result::Result<(), Error> {
        let id = self.next_id();
        let body = call.body.clone();
        self.requests.insert(id, Request::Call(Box::new(call)));
        match self.write(ws, id, body).await {
            // Too large to send at all: only this call fails.
            Err(error) if error.error_code() == Some(ErrorCode::FrameTooLarge) => {
                if let Some(Request::Call(call)) = self.requests.remove(&id) {
                    let _ = call.done.send(Err(error));
                }
                Ok(())
            }
            other => other,
        }
    }

    /// Sends the queued calls whose retry time has come.
    async fn send_due_calls(&mut self, ws: &mut Ws) -> std::result::Result<(), Error> {
        let now = Instant::now();
        let (due, waiting): (Vec<Call>, Vec<Call>) = self
            .queued
            .drain(..)
            .partition(|c| c.not_before.is_none_or(|t| t <= now));
        self.queued = waiting.into();
        for call in due {
            self.send_call(ws, call).await?;
        }
        Ok(())
    }

    /// Puts every send that is not on the wire (and not waiting out a refusal) on it, in order.
    async fn flush_sends(&mut self, ws: &mut Ws) -> std::result::Result<(), Error> {
        let now = Instant::now();
        for at in 0..self.sends.len() {
            let pending_send = &self.sends[at];
            if pending_send.in_flight.is_some() || pending_send.not_before.is_some_and(|t| t > now)
            {
                continue;
            }
            let body = MessageBody::decode(pending_send.outgoing.body.as_slice()).ok();
            let send = SendRequest {
                client_msg_id: pending_send.outgoing.client_msg_id.clone(),
                conversation_id: pending_send.outgoing.conversation_id.clone(),
                body,
            };
            let id = self.next_id();
            self.sends[at].in_flight = Some(id);
            self.sends[at].not_before = None;
            self.requests
                .insert(id, Request::Send(send.client_msg_id.clone()));
            let client_msg_id = send.client_msg_id.clone();
            match self.write(ws, id, client_frame::Body::Send(send)).await {
                // Too large for any frame: only this send fails, for good.
                Err(error) if error.error_code() == Some(ErrorCode::FrameTooLarge) => {
                    self.requests.remove(&id);
                    self.fail_send(&client_msg_id, error).await?;
                    return Box::pin(self.flush_sends(ws)).await;
                }
                other => other?,
            }
        }
        Ok(())
    }

    /// Drops a send refused for good: its waiters learn why, the store forgets it.
    async fn fail_send(
        &mut self,
        client_msg_id: &str,
        error: Error,
    ) -> std::result::Result<(), Error> {
        if let Some(at) = self
            .sends
            .iter()
            .position(|o| o.outgoing.client_msg_id == client_msg_id)
        {
            let pending_send = self.sends.remove(at);
            for waiter in pending_send.waiters {
                let _ = waiter.send(Err(error.clone()));
            }
        }
        self.store.remove_outgoing(client_msg_id).await
    }

    async fn flush_acks(&mut self, ws: &mut Ws) -> std::result::Result<(), Error> {
        let acks: Vec<SeqCursor> = self
            .unacked
            .drain()
            .filter_map(|id| {
                let seq = *self.timeline.held().get(&id)?;
                Some(SeqCursor {
                    conversation_id: id,
                    seq,
                })
            })
            .collect();
        if acks.is_empty() {
            return Ok(());
        }
        self.write(ws, 0, client_frame::Body::DeliveryAck(DeliveryAck { acks }))
            .await
    }

    /// Handles a frame from the server; `Some` when the session must end.
    async fn on_frame(
        &mut self,
        ws: &mut Ws,
        frame: ServerFrame,
    ) -> std::result::Result<Option<Ended>, Error> {
        let Some(body) = frame.body else {
            return Ok(None);
        };
        if frame.request_id != 0 {
            match self.requests.remove(&frame.request_id) {
                Some(Request::Send(client_msg_id)) => {
                    self.on_send_answer(ws, &client_msg_id, body).await?
                }
                Some(Request::Call(mut call)) => match body {
                    server_frame::Body::Error(error) => {
                        let error = Error::from(error);
                        let retry_at = Instant::now() + delay_ms(error.retry_after_ms.max(100));
                        if error.is_retryable() && retry_at < call.deadline {
                            // Retried on this connection when due, or on the next one.
                            call.not_before = Some(retry_at);
                            self.queued.push_back(*call);
                        } else {
                            let _ = call.done.send(Err(error));
                        }
                    }
                    other => {
                        // The device's own mark_read moves its conversation list too.
                        if let server_frame::Body::ReadState(state) = &other {
                            self.read
                                .insert(state.conversation_id.clone(), state.read_seq);
                            let (read_seq, unread_count) = (state.read_seq, state.unread_count);
                            self.touch(&state.conversation_id, |c| {
                                c.read_seq = read_seq;
                                c.unread_count = unread_count;
                            })
                            .await?;
                        }
                        let _ = call.done.send(Ok(other));
                    }
                },
                Some(Request::Sync) => self.on_sync(ws, body).await?,
                Some(Request::Pull(conversation)) => self.on_pull(ws, &conversation, body).await?,
                Some(Request::Ping) | None => {}
            }
            return Ok(None);
        }
        match body {
            server_frame::Body::Message(message) => {
                let actions = self.timeline.on_entry(Message::from(&message));
                self.act(ws, actions).await?;
            }
            server_frame::Body::ReadState(state) => {
                self.read
                    .insert(state.conversation_id.clone(), state.read_seq);
                self.touch(&state.conversation_id, |c| {
                    c.read_seq = state.read_seq;
                    c.unread_count = state.unread_count;
                })
                .await?;
                self.emit(Event::ReadState {
                    conversation_id: state.conversation_id,
                    read_seq: state.read_seq,
                    unread_count: state.unread_count,
                });
            }
            server_frame::Body::ReadReceipt(receipt) => {
                self.emit(Event::Receipt {
                    conversation_id: receipt.conversation_id,
                    user_id: receipt.user_id,
                    read_seq: receipt.read_seq,
                });
            }
            server_frame::Body::Typing(typing) => {
                self.emit(Event::Typing {
                    conversation_id: typing.conversation_id,
                    user_id: typing.user_id,
                    active: typing.active,
                });
            }
            server_frame::Body::Presence(presence) => self.emit(Event::Presence(presence)),
            server_frame::Body::Conversation(state) => self.on_conversation(ws, &state).await?,
            server_frame::Body::GoAway(go_away) => {
                let error = Error {
                    code: go_away.code,
                    message: go_away.message,
                    retry_after_ms: 0,
                };
                return Ok(Some(if go_away.code == ErrorCode::TokenExpired as i32 {
                    Ended::TokenExpired
                } else if is_fatal(go_away.code) {
                    Ended::Fatal(error)
                } else {
                    Ended::Lost(error.to_string(), delay_ms(go_away.reconnect_after_ms))
                }));
            }
            server_frame::Body::Error(error) if error.code == ErrorCode::TokenExpired as i32 => {
                return Ok(Some(Ended::TokenExpired));
            }
            server_frame::Body::Error(error) if is_fatal(error.code) => {
                return Ok(Some(Ended::Fatal(error.into())));
            }
            // Other pushes (and unknown ones, from a newer server) are ignored.
            _ => {}
        }
        Ok(None)
    }

    async fn on_send_answer(
        &mut self,
        ws: &mut Ws,
        client_msg_id: &str,
        body: server_frame::Body,
    ) -> std::result::Result<(), Error> {
        let Some(at) = self
            .sends
            .iter()
            .position(|o| o.outgoing.client_msg_id == client_msg_id)
        else {
            return Ok(());
        };
        match body {
            server_frame::Body::SendAck(ack) => {
                let pending_send = self.sends.remove(at);
                let sent = Sent {
                    conversation_id: ack.conversation_id.clone(),
                    client_msg_id: ack.client_msg_id.clone(),
                    seq: ack.seq,
                    server_msg_id: ack.server_msg_id.clone(),
                    server_time_ms: ack.server_time_ms,
                    duplicate: ack.duplicate,
                };
                for waiter in pending_send.waiters {
                    let _ = waiter.send(Ok(sent.clone()));
                }
                self.store.remove_outgoing(client_msg_id).await?;
                // The sender's own entry, in its place in the conversation.
                let body = MessageBody::decode(pending_send.outgoing.body.as_slice()).ok();
                let own = Message {
                    conversation_id: ack.conversation_id,
                    seq: ack.seq,
                    server_msg_id: ack.server_msg_id,
                    sender_user_id: self.user_id.clone(),
                    sender_device_id: self.device_id.clone(),
                    client_msg_id: ack.client_msg_id,
                    server_time_ms: ack.server_time_ms,
                    body: Body::from(body.as_ref()),
                    state: None,
                };
                let actions = self.timeline.on_entry(own);
                self.act(ws, actions).await?;
            }
            server_frame::Body::Error(error) => {
                let error = Error::from(error);
                if error.is_retryable() {
                    let wait = delay_ms(error.retry_after_ms.max(200));
                    self.sends[at].in_flight = None;
                    self.sends[at].not_before = Some(Instant::now() + wait);
                } else {
                    self.fail_send(client_msg_id, error).await?;
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// Carries out the timeline's actions in order; the first failure ends them (and the
    /// session: the sync after the reconnect starts again from what was stored).
    async fn act(&mut self, ws: &mut Ws, actions: Vec<Action>) -> std::result::Result<(), Error> {
        for action in actions {
            match action {
                Action::Store(message) => self.store.put_message(&message).await?,
                Action::SetHeld { conversation, seq } => {
                    self.store.set_held(&conversation, seq).await?;
                    self.timeline.held_stored(&conversation, seq);
                }
                Action::Advance {
                    conversation,
                    held,
                    from_others,
                } => {
                    // Messages from others newer than what the conversation's state already
                    // counts.
                    self.touch(&conversation, |c| {
                        let fresh = from_others
                            .iter()
                            .filter(|seq| **seq > c.last_seq && **seq > c.read_seq)
                            .count() as u64;
                        c.unread_count += fresh;
                        c.last_seq = c.last_seq.max(held);
                    })
                    .await?;
                    self.unacked.insert(conversation);
                }
                Action::Show(message) => {
                    let event = match message.body {
                        Body::Content(_) => Event::Message(message),
                        _ => Event::Change(message),
                    };
                    self.emit(event);
                }
                Action::Pull {
                    conversation,
                    after_seq,
                } => {
                    let body = client_frame::Body::Pull(PullRequest {
                        conversation_id: conversation.clone(),
                        after_seq,
                        limit: 0,
                    });
                    self.transmit(ws, Request::Pull(conversation), body).await?;
                }
            }
        }
        Ok(())
    }

    async fn on_pull(
        &mut self,
        ws: &mut Ws,
        conversation: &str,
        body: server_frame::Body,
    ) -> std::result::Result<(), Error> {
        match body {
            server_frame::Body::Messages(page) => {
                let actions = self.timeline.on_page(conversation, &page);
                self.act(ws, actions).await
            }
            // A passing refusal: reconnect, sync and pull again (the connection's end forgets
            // the pull).
            server_frame::Body::Error(error) if Error::from(error.clone()).is_retryable() => {
                Err(error.into())
            }
            // Refused for good (the user left, say).
            _ => {
                self.timeline.on_pull_refused(conversation);
                Ok(())
            }
        }
    }

    async fn on_sync(
        &mut self,
        ws: &mut Ws,
        body: server_frame::Body,
    ) -> std::result::Result<(), Error> {
        let sync = match body {
            server_frame::Body::Sync(sync) => sync,
            // Without a sync the client would miss what moved: reconnect and sync again.
            server_frame::Body::Error(error) => return Err(error.into()),
            _ => return Ok(()),
        };
        for state in &sync.conversations {
            self.on_conversation(ws, state).await?;
        }
        if !sync.next_page_token.is_empty() {
            let next = SyncRequest {
                page_token: sync.next_page_token,
                ..Default::default()
            };
            self.transmit(ws, Request::Sync, client_frame::Body::Sync(next))
                .await?;
        }
        Ok(())
    }

    /// Updates the stored state of a conversation (created if the client did not know it yet:
    /// a 1:1 conversation starts with its first message).
    async fn touch(
        &mut self,
        conversation: &str,
        change: impl FnOnce(&mut Conversation),
    ) -> std::result::Result<(), Error> {
        let mut state = self
            .store
            .conversations()
            .await?
            .into_iter()
            .find(|c| c.conversation_id == conversation)
            .unwrap_or_else(|| Conversation {
                conversation_id: conversation.to_owned(),
                kind: if conversation.starts_with("d:") {
                    v1::ConversationType::Direct as i32
                } else {
                    v1::ConversationType::Group as i32
                },
                last_seq: 0,
                read_seq: 0,
                unread_count: 0,
                active: true,
            });
        change(&mut state);
        self.store.put_conversation(&state).await
    }

    async fn on_conversation(
        &mut self,
        ws: &mut Ws,
        state: &v1::ConversationState,
    ) -> std::result::Result<(), Error> {
        if !state.active {
            // Out of the conversation: what the client knew of it stays, marked inactive.
            let known = self
                .store
                .conversations()
                .await?
                .into_iter()
                .find(|c| c.conversation_id == state.conversation_id);
            let conversation = match known {
                Some(known) => Conversation {
                    active: false,
                    ..known
                },
                None => Conversation::from(state),
            };
            self.store.put_conversation(&conversation).await?;
            self.emit(Event::Conversation(conversation));
            return Ok(());
        }
        let floor = self
            .timeline
            .on_visible_from(&state.conversation_id, state.visible_from_seq);
        self.act(ws, floor).await?;
        let conversation = Conversation::from(state);
        self.read
            .insert(conversation.conversation_id.clone(), conversation.read_seq);
        self.store.put_conversation(&conversation).await?;
        self.emit(Event::Conversation(conversation));
        let catch_up = self
            .timeline
            .on_last_seq(&state.conversation_id, state.last_seq);
        self.act(ws, catch_up).await
    }
}

fn cursors(map: &HashMap<String, u64>) -> Vec<SeqCursor> {
    map.iter()
        .map(|(id, seq)| SeqCursor {
            conversation_id: id.clone(),
            seq: *seq,
        })
        .collect()
}
