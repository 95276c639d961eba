//! The connection task: the one task that owns the connection, serving the [`Client`]'s
//! commands (see [`Command`]).
//!
//! This file holds its run loop: it connects to each gateway in turn, authenticates,
//! serves a session (the commands, the frames, the heartbeat, the timers) until it ends, serves
//! the commands while offline, and reconnects with jittered backoff, until the app closes the
//! client or the server refuses it for good. What the loop works with has files of its own:
//!
//! - [`sends`](super::sends): the sends not yet acknowledged ([`Sends`]), resent with the same
//!   client message ids on every connection;
//! - [`calls`](super::calls): the calls made while offline or on the wire, and every request
//!   on the wire by id ([`Requests`]);
//! - [`inbound`](super::inbound): what the server sends (answers, pushes, sync pages, pulls),
//!   carried out through the [`Timeline`]: store writes, events, pulls, delivery
//!   acknowledgements;
//! - [`link`](super::link): the socket of one connection, and the frames on it.
//!
//! [`Client`]: super::Client

use std::{
    collections::{HashMap, HashSet, VecDeque},
    sync::Arc,
    time::Duration,
};

use im_proto::{
    ErrorCode,
    v1::{ClientFeature, Hello, Ping, Platform, Welcome, client_frame, server_frame},
    version::SUPPORTED_VERSIONS,
};
use tokio::{
    sync::{mpsc, oneshot, watch},
    time::Instant,
};

use super::{
    Sent,
    builder::{Config, Endpoint, TokenProvider},
    calls::{Call, Request, Requests},
    delay_ms,
    link::Link,
    sends::Sends,
    timeline::Timeline,
};
use crate::{
    error::{Error, Result},
    store::{LocalStore, Outgoing},
    types::{ConnectionState, Event},
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

/// Why a session ended.
pub(super) enum Ended {
    /// The app closed the client.
    Closed,
    /// The token expired: reconnect with a fresh one.
    TokenExpired,
    /// Lost; reconnect (after at least this long).
    Lost(String, Duration),
    /// Refused for good.
    Fatal(Error),
}

/// The task behind a [`Client`](super::Client). Its fields are the client module's, so that
/// the frame handling in [`inbound`](super::inbound) works on the same state.
pub(super) struct Connection {
    /// The gateways, tried in turn.
    endpoints: Vec<Endpoint>,
    /// Which one the next connection goes to.
    next_endpoint: usize,
    pub(super) device_id: String,
    platform: Platform,
    token: Arc<dyn TokenProvider>,
    pub(super) store: Arc<dyn LocalStore>,
    config: Config,
    commands: mpsc::Receiver<Command>,
    events: mpsc::Sender<Event>,
    state: watch::Sender<ConnectionState>,
    /// The user the server authenticated on the last connection.
    pub(super) user_id: String,
    /// The order of each conversation's entries.
    pub(super) timeline: Timeline,
    /// The read cursor of each conversation, sent with every sync.
    pub(super) read: HashMap<String, u64>,
    /// Conversations whose progress the server has not been told.
    pub(super) unacked: HashSet<String>,
    /// When the server's Resync push asked for a sync on this connection.
    pub(super) resync_due: Option<Instant>,
    /// Sends not yet acknowledged.
    pub(super) sends: Sends,
    /// Events the app's stream could not take yet, oldest first.
    backlog: VecDeque<Event>,
    /// Calls not on the wire, and the requests that are.
    pub(super) requests: Requests,
    rng: u64,
}

/// Events held back while the app's stream is full, before the connection stops reading.
const BACKLOG_LIMIT: usize = 4096;

fn seed() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| d.as_nanos() as u64);
    nanos | 1
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
            resync_due: None,
            sends: Sends::default(),
            backlog: VecDeque::new(),
            requests: Requests::default(),
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
                self.sends = Sends::from_outbox(snapshot.outbox);
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
                Ok(Ok((link, welcome))) => {
                    attempt = 0;
                    refresh = false;
                    match self.session(link, welcome).await {
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
    pub(super) fn emit(&mut self, event: Event) {
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
        self.sends.stop(&error);
        self.requests.stop(&error);
        self.set_state(ConnectionState::Stopped {
            reason: error.to_string(),
        });
    }

    async fn closed(&mut self) {
        self.stop(Error::new(ErrorCode::Unavailable, "the client was closed"))
            .await;
    }

    /// Opens a connection to the next gateway, with a token (a fresh one after the last
    /// expired).
    async fn open(&mut self, refresh: bool) -> Result<(Link, Welcome)> {
        let token = self.token.token(refresh).await?;
        // Each attempt goes to the next gateway; a lost connection moves on too.
        let endpoint = self.endpoints[self.next_endpoint % self.endpoints.len()].clone();
        self.next_endpoint = (self.next_endpoint + 1) % self.endpoints.len();
        let hello = Hello {
            protocol_versions: SUPPORTED_VERSIONS.to_vec(),
            token,
            device_id: self.device_id.clone(),
            platform: self.platform as i32,
            client_version: concat!("im-sdk-rust/", env!("CARGO_PKG_VERSION")).into(),
            max_frame_bytes: self.config.max_frame_bytes,
            features: vec![ClientFeature::Resync.into()],
        };
        Link::open(&endpoint, hello).await
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
                    Some(Command::Send { outgoing, done }) => {
                        self.sends.enqueue(&*self.store, outgoing, done).await;
                    }
                    Some(Command::Call { body, done }) => {
                        let call = Call::new(body, done, self.config.request_timeout);
                        self.requests.queue(call);
                    }
                    // Typing while offline means nothing by the time the connection is back.
                    Some(Command::Notify { .. }) => {}
                },
                _ = expiry.tick() => {
                    self.requests.expire(Instant::now());
                    self.drain_backlog();
                }
            }
        }
    }

    /// One authenticated connection, until it ends.
    async fn session(&mut self, mut link: Link, welcome: Welcome) -> Ended {
        self.user_id = welcome.user_id.clone();
        self.timeline.set_user(&welcome.user_id);
        self.requests.connected();
        self.set_state(ConnectionState::Connected {
            user_id: welcome.user_id.clone(),
            session_id: welcome.session_id.clone(),
        });
        let ended = self.serve(&mut link, &welcome).await;
        // What was on the wire is resent or asked again on the next connection.
        self.requests.connection_lost();
        self.sends.connection_lost();
        self.timeline.connection_lost();
        // The next connection syncs anyway.
        self.resync_due = None;
        link.close().await;
        ended
    }

    async fn serve(&mut self, link: &mut Link, welcome: &Welcome) -> Ended {
        let lost = |e: &dyn std::fmt::Display| Ended::Lost(e.to_string(), Duration::ZERO);
        // Catch up: sync, resend the pending sends, send the calls made while offline.
        if let Err(e) = self.sync(link).await {
            return lost(&e);
        }
        if let Err(e) = self.flush_sends(link).await {
            return lost(&e);
        }
        while let Some(call) = self.requests.next_queued() {
            if let Err(e) = self.send_call(link, call).await {
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
                            link.close().await;
                            let _ = done.send(());
                            return Ended::Closed;
                        }
                        Some(Command::Send { outgoing, done }) => {
                            self.sends.enqueue(&*self.store, outgoing, done).await;
                            self.flush_sends(link).await
                        }
                        Some(Command::Call { body, done }) => {
                            let call = Call::new(body, done, self.config.request_timeout);
                            self.send_call(link, call).await
                        }
                        Some(Command::Notify { body }) => link.write(0, body).await,
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
                frame = link.read(), if self.backlog.len() < BACKLOG_LIMIT => {
                    let frame = match frame {
                        Ok(frame) => frame,
                        Err(reason) => return Ended::Lost(reason, Duration::ZERO),
                    };
                    last_heard = Instant::now();
                    match self.on_frame(link, frame).await {
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
                    if let Err(e) = self.transmit(link, Request::Ping, body).await {
                        return lost(&e);
                    }
                }
                _ = housekeeping.tick() => {
                    self.requests.expire(Instant::now());
                    self.drain_backlog();
                    if self.resync_due.is_some_and(|due| due <= Instant::now()) {
                        self.resync_due = None;
                        if let Err(e) = self.sync(link).await {
                            return lost(&e);
                        }
                    }
                    let result = match ack_due {
                        Some(due) if due <= Instant::now() => {
                            ack_due = None;
                            self.flush_acks(link).await
                        }
                        _ => Ok(()),
                    };
                    let result = match result {
                        Ok(()) => self.flush_sends(link).await,
                        failed => failed,
                    };
                    let result = match result {
                        Ok(()) => self.send_due_calls(link).await,
                        failed => failed,
                    };
                    if let Err(e) = result {
                        return lost(&e);
                    }
                }
            }
        }
    }

    /// Writes a request whose answer goes to `request`.
    pub(super) async fn transmit(
        &mut self,
        link: &mut Link,
        request: Request,
        body: client_frame::Body,
    ) -> Result<()> {
        let id = self.requests.register(request);
        link.write(id, body).await
    }

    async fn send_call(&mut self, link: &mut Link, call: Call) -> Result<()> {
        let body = call.body.clone();
        let id = self.requests.register(Request::Call(Box::new(call)));
        match link.write(id, body).await {
            // Too large to send at all: only this call fails.
            Err(error) if error.error_code() == Some(ErrorCode::FrameTooLarge) => {
                if let Some(Request::Call(call)) = self.requests.take(id) {
                    call.answer(Err(error));
                }
                Ok(())
            }
            other => other,
        }
    }

    /// Sends the queued calls whose retry time has come.
    async fn send_due_calls(&mut self, link: &mut Link) -> Result<()> {
        for call in self.requests.due(Instant::now()) {
            self.send_call(link, call).await?;
        }
        Ok(())
    }

    /// Puts every send that is not on the wire (and not waiting out a refusal) on it, in order.
    async fn flush_sends(&mut self, link: &mut Link) -> Result<()> {
        let mut now = Instant::now();
        while let Some(send) = self.sends.next_due(now) {
            let client_msg_id = send.client_msg_id.clone();
            let id = self.requests.register(Request::Send(client_msg_id.clone()));
            self.sends.on_wire(&client_msg_id, id);
            match link.write(id, client_frame::Body::Send(send)).await {
                // Too large for any frame: only this send fails, for good.
                Err(error) if error.error_code() == Some(ErrorCode::FrameTooLarge) => {
                    self.requests.take(id);
                    self.sends.fail(&*self.store, &client_msg_id, error).await?;
                    // The others, as a flush starting now would find them.
                    now = Instant::now();
                }
                other => other?,
            }
        }
        Ok(())
    }
}
