//! The client and the task behind it.
//!
//! Every call is a command to one task that owns the connection (an actor), answered through a
//! oneshot channel: the futures the public API returns need no particular runtime, so they can
//! be awaited from a foreign executor. The task connects, authenticates, syncs, resends the
//! outbox, keeps the heartbeat, orders entries per conversation (dropping repeats, pulling to
//! fill gaps), batches delivery acknowledgements, and reconnects with jittered backoff.

use std::{
    collections::{BTreeMap, HashMap, HashSet, VecDeque},
    sync::{Arc, Mutex},
    time::Duration,
};

use async_trait::async_trait;
use futures::{SinkExt, StreamExt};
use im_proto::{
    ErrorCode, FrameCodec,
    v1::{
        self, ClientFrame, DeliveryAck, Hello, HistoryRequest, MarkRead, MessageBody, Ping,
        Platform, PresenceStatus, PresenceSubscribe, PresenceUnsubscribe, PullRequest, SendRequest,
        SeqCursor, ServerFrame, SetPresence, SyncRequest, Typing, Welcome, client_frame,
        server_frame,
    },
    version::{BARE_SUBPROTOCOL, SUPPORTED_VERSIONS, subprotocol},
};
use prost::Message as _;
use tokio::{
    net::TcpStream,
    runtime::Handle,
    sync::{mpsc, oneshot, watch},
    time::Instant,
};
use tokio_tungstenite::{
    WebSocketStream,
    tungstenite::{self, Message as WsMessage, client::IntoClientRequest, http::HeaderValue},
};

use crate::{
    error::{Error, Result},
    groups::{Group, GroupsApi, Member},
    store::{LocalStore, MemoryStore, Outgoing},
    types::{Body, ConnectionState, Conversation, Event, Message},
};

/// Supplies access tokens; asked before every connection, with `refresh` set when the server
/// said the last one had expired.
#[async_trait]
pub trait TokenProvider: Send + Sync + 'static {
    /// A token for the next connection.
    async fn token(&self, refresh: bool) -> Result<String>;
}

/// A token that never changes (tests, tools, short sessions).
#[derive(Debug, Clone)]
pub struct StaticToken(pub String);

#[async_trait]
impl TokenProvider for StaticToken {
    async fn token(&self, _refresh: bool) -> Result<String> {
        Ok(self.0.clone())
    }
}

/// The acknowledgement of a send: the entry is durable and has its place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sent {
    /// The conversation.
    pub conversation_id: String,
    /// The send's idempotency key.
    pub client_msg_id: String,
    /// The entry's seq.
    pub seq: u64,
    /// The server's id for the entry.
    pub server_msg_id: String,
    /// When the server accepted it.
    pub server_time_ms: i64,
    /// The server had accepted this id before (a resend).
    pub duplicate: bool,
}

/// A page of history.
#[derive(Debug, Clone, PartialEq)]
pub struct Page {
    /// The conversation.
    pub conversation_id: String,
    /// Entries in ascending seq order, with their state as of `last_seq`.
    pub messages: Vec<Message>,
    /// More entries exist beyond the page.
    pub has_more: bool,
    /// The conversation's newest seq.
    pub last_seq: u64,
}

/// The user's read state in a conversation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadState {
    /// The read cursor.
    pub read_seq: u64,
    /// Messages from others above it.
    pub unread_count: u64,
}

/// Timeouts, limits and backoff of a client.
#[derive(Debug, Clone)]
pub struct Config {
    /// Opening a connection (TCP, upgrade, Hello) may take this long.
    pub connect_timeout: Duration,
    /// A request (other than a send) may wait this long for its answer, connection or not.
    pub request_timeout: Duration,
    /// The first reconnect delay; it doubles per failed attempt, with jitter.
    pub backoff_min: Duration,
    /// The longest reconnect delay.
    pub backoff_max: Duration,
    /// Delivery acknowledgements are sent this long after the entries they cover.
    pub ack_delay: Duration,
    /// Events waiting for the app; the client slows down rather than dropping any.
    pub event_buffer: usize,
    /// The largest frame this client accepts (announced in the Hello; 0: 1 MiB).
    pub max_frame_bytes: u32,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(30),
            backoff_min: Duration::from_millis(250),
            backoff_max: Duration::from_secs(30),
            ack_delay: Duration::from_millis(100),
            event_buffer: 1024,
            max_frame_bytes: 0,
        }
    }
}

/// Builds a [`Client`].
pub struct ClientBuilder {
    url: String,
    more_urls: Vec<String>,
    device_id: String,
    platform: Platform,
    token: Arc<dyn TokenProvider>,
    store: Arc<dyn LocalStore>,
    config: Config,
    runtime: Option<Handle>,
    business_api: Option<String>,
}

impl std::fmt::Debug for ClientBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientBuilder")
            .field("url", &self.url)
            .field("device_id", &self.device_id)
            .finish_non_exhaustive()
    }
}

impl ClientBuilder {
    /// A client of the server at `url` (`ws://host:port/ws`) on device `device_id`, with
    /// tokens from `token`.
    pub fn new(
        url: impl Into<String>,
        device_id: impl Into<String>,
        token: Arc<dyn TokenProvider>,
    ) -> Self {
        Self {
            url: url.into(),
            more_urls: Vec::new(),
            device_id: device_id.into(),
            platform: Platform::Unspecified,
            token,
            store: Arc::new(MemoryStore::default()),
            config: Config::default(),
            runtime: None,
            business_api: None,
        }
    }

    /// More gateways of the same deployment (other core nodes), tried in turn after the first:
    /// when a connection cannot be opened or is lost, the next attempt goes to the next URL.
    pub fn more_urls(mut self, urls: impl IntoIterator<Item = impl Into<String>>) -> Self {
        self.more_urls.extend(urls.into_iter().map(Into::into));
        self
    }

    /// The business service's HTTP API (`http://host:port`), for groups and membership.
    pub fn business_api(mut self, url: impl Into<String>) -> Self {
        self.business_api = Some(url.into());
        self
    }

    /// The device's platform, announced in the Hello.
    pub fn platform(mut self, platform: Platform) -> Self {
        self.platform = platform;
        self
    }

    /// Where the client keeps its state (default: in memory).
    pub fn store(mut self, store: Arc<dyn LocalStore>) -> Self {
        self.store = store;
        self
    }

    /// Timeouts, limits and backoff.
    pub fn config(mut self, config: Config) -> Self {
        self.config = config;
        self
    }

    /// The tokio runtime the connection task runs on (default: the current one).
    pub fn runtime(mut self, runtime: Handle) -> Self {
        self.runtime = Some(runtime);
        self
    }

    /// Starts the client: it connects in the background and keeps connecting until closed.
    pub fn build(self) -> Result<Client> {
        let runtime = match self.runtime {
            Some(runtime) => runtime,
            None => Handle::try_current().map_err(|_| {
                Error::new(
                    ErrorCode::InvalidArgument,
                    "no tokio runtime: build the client inside one or pass ClientBuilder::runtime",
                )
            })?,
        };
        let endpoints = std::iter::once(&self.url)
            .chain(&self.more_urls)
            .map(|url| Endpoint::parse(url))
            .collect::<Result<Vec<_>>>()?;
        let (commands, inbox) = mpsc::channel(256);
        let (events, events_rx) = mpsc::channel(self.config.event_buffer.max(1));
        let (state, state_rx) = watch::channel(ConnectionState::Connecting);
        let actor = Actor {
            endpoints,
            next_endpoint: 0,
            device_id: self.device_id,
            platform: self.platform,
            token: self.token.clone(),
            store: self.store.clone(),
            config: self.config,
            commands: inbox,
            events,
            state,
            user_id: String::new(),
            held: HashMap::new(),
            read: HashMap::new(),
            buffered: HashMap::new(),
            pulling: HashSet::new(),
            unacked: HashSet::new(),
            outbox: Vec::new(),
            backlog: VecDeque::new(),
            queued: VecDeque::new(),
            pending: HashMap::new(),
            next_id: 0,
            server_codec: FrameCodec::default(),
            rng: seed(),
        };
        let groups = self
            .business_api
            .map(|url| Arc::new(GroupsApi::new(&url, self.token.clone())));
        let task = runtime.spawn(actor.run());
        Ok(Client {
            groups,
            runtime,
            commands,
            events: Mutex::new(Some(events_rx)),
            state: state_rx,
            store: self.store,
            task: Mutex::new(Some(task)),
        })
    }
}

/// The server's address, taken from the URL.
#[derive(Debug, Clone)]
struct Endpoint {
    url: String,
    host_port: String,
}

impl Endpoint {
    fn parse(url: &str) -> Result<Self> {
        let invalid = |why: &str| Error::new(ErrorCode::InvalidArgument, format!("{url}: {why}"));
        let request = url
            .into_client_request()
            .map_err(|e| invalid(&e.to_string()))?;
        let uri = request.uri();
        if uri.scheme_str() != Some("ws") {
            return Err(invalid("only ws:// URLs are supported by this build"));
        }
        let host = uri.host().ok_or_else(|| invalid("no host"))?;
        let port = uri.port_u16().unwrap_or(80);
        Ok(Self {
            url: url.to_owned(),
            host_port: format!("{host}:{port}"),
        })
    }
}

/// An app's handle on the IM service. Cheap to share behind an `Arc`; every method may be
/// called from any task or thread.
pub struct Client {
    groups: Option<Arc<GroupsApi>>,
    runtime: Handle,
    commands: mpsc::Sender<Command>,
    events: Mutex<Option<mpsc::Receiver<Event>>>,
    state: watch::Receiver<ConnectionState>,
    store: Arc<dyn LocalStore>,
    task: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("state", &*self.state.borrow())
            .finish_non_exhaustive()
    }
}

/// The app's stream of [`Event`]s.
#[derive(Debug)]
pub struct Events(mpsc::Receiver<Event>);

impl Events {
    /// The next event; `None` once the client is closed.
    pub async fn next(&mut self) -> Option<Event> {
        self.0.recv().await
    }
}

fn closed() -> Error {
    Error::new(ErrorCode::Unavailable, "the client is closed")
}

impl Client {
    /// The event stream. There is one: the second call returns `None`.
    pub fn events(&self) -> Option<Events> {
        self.events
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
            .map(Events)
    }

    /// The connection's state now.
    pub fn connection_state(&self) -> ConnectionState {
        self.state.borrow().clone()
    }

    /// Waits until the client is connected (or has stopped for good); the user the server
    /// authenticated.
    pub async fn wait_connected(&self) -> Result<String> {
        let mut state = self.state.clone();
        loop {
            match &*state.borrow_and_update() {
                ConnectionState::Connected { user_id, .. } => return Ok(user_id.clone()),
                ConnectionState::Stopped { reason } => {
                    return Err(Error::new(ErrorCode::Unavailable, reason.clone()));
                }
                _ => {}
            }
            state.changed().await.map_err(|_| closed())?;
        }
    }

    /// Sends `body` to a conversation with a fresh client message id; resolves with the
    /// server's ack. Until then the send is in the outbox: it survives reconnects (and, with
    /// a persistent store, restarts) and is resent with the same id, so exactly one entry
    /// results.
    pub async fn send(&self, conversation_id: &str, body: Body) -> Result<Sent> {
        let id = uuid::Uuid::new_v4().to_string();
        self.send_with_id(conversation_id, &id, body).await
    }

    /// Sends text.
    pub async fn send_text(&self, conversation_id: &str, text: &str) -> Result<Sent> {
        self.send(
            conversation_id,
            Body::Content(crate::types::Content::text(text)),
        )
        .await
    }

    /// Sends with an id of the caller's choosing (1 to 64 bytes, never reused for another
    /// message): sending the same id again returns the first ack.
    pub async fn send_with_id(
        &self,
        conversation_id: &str,
        client_msg_id: &str,
        body: Body,
    ) -> Result<Sent> {
        let wire = body.to_wire().ok_or_else(|| {
            Error::new(
                ErrorCode::InvalidArgument,
                "this body cannot be sent by a client",
            )
        })?;
        let outgoing = Outgoing {
            client_msg_id: client_msg_id.to_owned(),
            conversation_id: conversation_id.to_owned(),
            body: wire.encode_to_vec(),
        };
        let (done, answer) = oneshot::channel();
        self.commands
            .send(Command::Send { outgoing, done })
            .await
            .map_err(|_| closed())?;
        answer.await.map_err(|_| closed())?
    }

    async fn call(&self, body: client_frame::Body) -> Result<server_frame::Body> {
        let (done, answer) = oneshot::channel();
        self.commands
            .send(Command::Call { body, done })
            .await
            .map_err(|_| closed())?;
        answer.await.map_err(|_| closed())?
    }

    /// Entries below `before_seq` (0: the newest), at most `limit` (0: the server's default).
    pub async fn history(
        &self,
        conversation_id: &str,
        before_seq: u64,
        limit: u32,
    ) -> Result<Page> {
        let answer = self
            .call(client_frame::Body::History(HistoryRequest {
                conversation_id: conversation_id.to_owned(),
                before_seq,
                limit,
            }))
            .await?;
        page_of(answer)
    }

    /// Moves the read cursor forward to `seq`; the user's other devices and the other members
    /// are told.
    pub async fn mark_read(&self, conversation_id: &str, seq: u64) -> Result<ReadState> {
        let answer = self
            .call(client_frame::Body::MarkRead(MarkRead {
                conversation_id: conversation_id.to_owned(),
                seq,
            }))
            .await?;
        match answer {
            server_frame::Body::ReadState(s) => Ok(ReadState {
                read_seq: s.read_seq,
                unread_count: s.unread_count,
            }),
            other => Err(unexpected(&other)),
        }
    }

    /// The conversations known so far (from the local store, updated by every sync), with
    /// their unread counts.
    pub async fn conversations(&self) -> Result<Vec<Conversation>> {
        let store = self.store.clone();
        self.on_runtime(async move { store.conversations().await })
            .await
    }

    /// The most recent messages of a conversation held locally, oldest first.
    pub async fn recent(&self, conversation_id: &str, limit: usize) -> Result<Vec<Message>> {
        let (store, id) = (self.store.clone(), conversation_id.to_owned());
        self.on_runtime(async move { store.recent(&id, limit).await })
            .await
    }

    /// Tells the other members the user is typing (repeat every few seconds) or stopped.
    /// Dropped while disconnected.
    pub async fn typing(&self, conversation_id: &str, active: bool) -> Result<()> {
        let body = client_frame::Body::Typing(Typing {
            conversation_id: conversation_id.to_owned(),
            active,
        });
        self.commands
            .send(Command::Notify { body })
            .await
            .map_err(|_| closed())
    }

    /// Watches users' presence: their current presence now, changes as events.
    pub async fn subscribe_presence(&self, user_ids: &[String]) -> Result<Vec<v1::Presence>> {
        let answer = self
            .call(client_frame::Body::PresenceSubscribe(PresenceSubscribe {
                user_ids: user_ids.to_vec(),
            }))
            .await?;
        match answer {
            server_frame::Body::Presences(list) => Ok(list.presences),
            other => Err(unexpected(&other)),
        }
    }

    /// Stops watching users' presence.
    pub async fn unsubscribe_presence(&self, user_ids: &[String]) -> Result<()> {
        self.call(client_frame::Body::PresenceUnsubscribe(
            PresenceUnsubscribe {
                user_ids: user_ids.to_vec(),
            },
        ))
        .await
        .map(drop)
    }

    /// Sets the user's chosen status.
    pub async fn set_presence(&self, status: PresenceStatus, text: &str) -> Result<()> {
        self.call(client_frame::Body::SetPresence(SetPresence {
            status: status as i32,
            status_text: text.to_owned(),
        }))
        .await
        .map(drop)
    }

    fn groups(&self) -> Result<Arc<GroupsApi>> {
        self.groups.clone().ok_or_else(|| {
            Error::new(
                ErrorCode::InvalidArgument,
                "no business API: set ClientBuilder::business_api",
            )
        })
    }

    /// Runs a business API call on the client's runtime (so any executor may await it).
    async fn on_runtime<T: Send + 'static>(
        &self,
        call: impl std::future::Future<Output = Result<T>> + Send + 'static,
    ) -> Result<T> {
        self.runtime
            .spawn(call)
            .await
            .map_err(|e| Error::new(ErrorCode::Internal, e.to_string()))?
    }

    /// Creates a group the user owns, with `members` besides the user.
    pub async fn create_group(&self, name: &str, members: &[String]) -> Result<Group> {
        let (api, name, members) = (self.groups()?, name.to_owned(), members.to_vec());
        self.on_runtime(async move { api.create(&name, &members).await })
            .await
    }

    /// A group the user is a member of.
    pub async fn group(&self, group_id: &str) -> Result<Group> {
        let (api, id) = (self.groups()?, group_id.to_owned());
        self.on_runtime(async move { api.get(&id).await }).await
    }

    /// Every member of a group the user is in.
    pub async fn members(&self, group_id: &str) -> Result<Vec<Member>> {
        let (api, id) = (self.groups()?, group_id.to_owned());
        self.on_runtime(async move { api.members(&id).await }).await
    }

    /// Adds members (as the user's role in the group allows).
    pub async fn add_members(&self, group_id: &str, user_ids: &[String]) -> Result<()> {
        let (api, id, users) = (self.groups()?, group_id.to_owned(), user_ids.to_vec());
        self.on_runtime(async move { api.add(&id, &users).await })
            .await
    }

    /// Removes members (as the user's role in the group allows).
    pub async fn remove_members(&self, group_id: &str, user_ids: &[String]) -> Result<()> {
        let (api, id, users) = (self.groups()?, group_id.to_owned(), user_ids.to_vec());
        self.on_runtime(async move { api.remove(&id, &users).await })
            .await
    }

    /// Leaves a group.
    pub async fn leave_group(&self, group_id: &str) -> Result<()> {
        let me = self.wait_connected().await?;
        let (api, id) = (self.groups()?, group_id.to_owned());
        self.on_runtime(async move { api.leave(&id, &me).await })
            .await
    }

    /// Closes the connection and stops the client; unacknowledged sends stay in the store's
    /// outbox.
    pub async fn close(&self) {
        let (done, closed) = oneshot::channel();
        if self.commands.send(Command::Close { done }).await.is_ok() {
            let _ = closed.await;
        }
        let task = self.task.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(task) = task {
            let _ = task.await;
        }
    }
}

fn unexpected(body: &server_frame::Body) -> Error {
    Error::new(
        ErrorCode::Internal,
        format!("unexpected answer from the server: {body:?}"),
    )
}

fn page_of(answer: server_frame::Body) -> Result<Page> {
    match answer {
        server_frame::Body::Messages(page) => Ok(Page {
            messages: page
                .messages
                .iter()
                .map(|m| with_as_of(Message::from(m), page.last_seq))
                .collect(),
            conversation_id: page.conversation_id,
            has_more: page.has_more,
            last_seq: page.last_seq,
        }),
        other => Err(unexpected(&other)),
    }
}

fn with_as_of(mut message: Message, as_of: u64) -> Message {
    if let Some(state) = &mut message.state {
        state.as_of_seq = as_of;
    }
    message
}

// ---- the connection task -------------------------------------------------------------------

enum Command {
    Send {
        outgoing: Outgoing,
        done: oneshot::Sender<Result<Sent>>,
    },
    Call {
        body: client_frame::Body,
        done: oneshot::Sender<Result<server_frame::Body>>,
    },
    Notify {
        body: client_frame::Body,
    },
    Close {
        done: oneshot::Sender<()>,
    },
}

/// A send in the outbox.
struct Outbound {
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

enum Pending {
    Send(String),
    Call(Box<Call>),
    Sync,
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

struct Actor {
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
    /// The highest contiguous seq applied per conversation.
    held: HashMap<String, u64>,
    read: HashMap<String, u64>,
    /// Entries that arrived ahead of a gap.
    buffered: HashMap<String, BTreeMap<u64, Message>>,
    /// Conversations with a pull on the wire.
    pulling: HashSet<String>,
    /// Conversations whose progress the server has not been told.
    unacked: HashSet<String>,
    outbox: Vec<Outbound>,
    /// Events the app's stream could not take yet, oldest first.
    backlog: VecDeque<Event>,
    /// Calls made while disconnected.
    queued: VecDeque<Call>,
    pending: HashMap<u64, Pending>,
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

impl Actor {
    async fn run(mut self) {
        match self.store.load().await {
            Ok(snapshot) => {
                self.held = snapshot.held;
                self.read = snapshot.read;
                self.outbox = snapshot
                    .outbox
                    .into_iter()
                    .map(|outgoing| Outbound {
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

    /// Hands an event to the app. The actor never waits for the app (which may be waiting
    /// for the actor): what the stream cannot take now waits in the backlog, and while the
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
        for outbound in self.outbox.drain(..) {
            for waiter in outbound.waiters {
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

    /// Adds a send to the outbox (and the store); a repeat of an id in the outbox just waits
    /// for the same ack.
    async fn enqueue_send(&mut self, outgoing: Outgoing, done: oneshot::Sender<Result<Sent>>) {
        if let Some(existing) = self
            .outbox
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
        self.outbox.push(Outbound {
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
            .pending
            .iter()
            .filter(|(_, p)| matches!(p, Pending::Call(c) if c.deadline <= now))
            .map(|(id, _)| *id)
            .collect();
        for id in late {
            if let Some(Pending::Call(call)) = self.pending.remove(&id) {
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
        for (_, pending) in self.pending.drain() {
            if let Pending::Call(call) = pending {
                self.queued.push_back(*call);
            }
        }
        for outbound in &mut self.outbox {
            outbound.in_flight = None;
        }
        self.pulling.clear();
        let _ = tokio::time::timeout(WRITE_TIMEOUT, ws.close(None)).await;
        ended
    }

    async fn serve(&mut self, ws: &mut Ws, welcome: &Welcome) -> Ended {
        let lost = |e: &dyn std::fmt::Display| Ended::Lost(e.to_string(), Duration::ZERO);
        // Catch up: sync, resend the outbox, send the calls made while offline.
        let sync = SyncRequest {
            held: cursors(&self.held),
            read: cursors(&self.read),
            ..Default::default()
        };
        if let Err(e) = self
            .transmit(ws, Pending::Sync, client_frame::Body::Sync(sync))
            .await
        {
            return lost(&e);
        }
        if let Err(e) = self.flush_outbox(ws).await {
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
                            self.flush_outbox(ws).await
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
                    if let Err(e) = self.transmit(ws, Pending::Ping, body).await {
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
                        Ok(()) => self.flush_outbox(ws).await,
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
        pending: Pending,
        body: client_frame::Body,
    ) -> std::result::Result<(), Error> {
        let id = self.next_id();
        self.pending.insert(id, pending);
        self.write(ws, id, body).await
    }

    async fn send_call(&mut self, ws: &mut Ws, call: Call) -> std::result::Result<(), Error> {
        let id = self.next_id();
        let body = call.body.clone();
        self.pending.insert(id, Pending::Call(Box::new(call)));
        match self.write(ws, id, body).await {
            // Too large to send at all: only this call fails.
            Err(error) if error.error_code() == Some(ErrorCode::FrameTooLarge) => {
                if let Some(Pending::Call(call)) = self.pending.remove(&id) {
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
    async fn flush_outbox(&mut self, ws: &mut Ws) -> std::result::Result<(), Error> {
        let now = Instant::now();
        for at in 0..self.outbox.len() {
            let outbound = &self.outbox[at];
            if outbound.in_flight.is_some() || outbound.not_before.is_some_and(|t| t > now) {
                continue;
            }
            let body = MessageBody::decode(outbound.outgoing.body.as_slice()).ok();
            let send = SendRequest {
                client_msg_id: outbound.outgoing.client_msg_id.clone(),
                conversation_id: outbound.outgoing.conversation_id.clone(),
                body,
            };
            let id = self.next_id();
            self.outbox[at].in_flight = Some(id);
            self.outbox[at].not_before = None;
            self.pending
                .insert(id, Pending::Send(send.client_msg_id.clone()));
            let client_msg_id = send.client_msg_id.clone();
            match self.write(ws, id, client_frame::Body::Send(send)).await {
                // Too large for any frame: only this send fails, for good.
                Err(error) if error.error_code() == Some(ErrorCode::FrameTooLarge) => {
                    self.pending.remove(&id);
                    self.fail_send(&client_msg_id, error).await?;
                    return Box::pin(self.flush_outbox(ws)).await;
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
            .outbox
            .iter()
            .position(|o| o.outgoing.client_msg_id == client_msg_id)
        {
            let outbound = self.outbox.remove(at);
            for waiter in outbound.waiters {
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
                let seq = *self.held.get(&id)?;
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
            match self.pending.remove(&frame.request_id) {
                Some(Pending::Send(client_msg_id)) => {
                    self.on_send_answer(ws, &client_msg_id, body).await?
                }
                Some(Pending::Call(mut call)) => match body {
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
                Some(Pending::Sync) => self.on_sync(ws, body).await?,
                Some(Pending::Pull(conversation)) => self.on_pull(ws, &conversation, body).await?,
                Some(Pending::Ping) | None => {}
            }
            return Ok(None);
        }
        match body {
            server_frame::Body::Message(message) => {
                self.apply(ws, Message::from(&message)).await?;
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
            .outbox
            .iter()
            .position(|o| o.outgoing.client_msg_id == client_msg_id)
        else {
            return Ok(());
        };
        match body {
            server_frame::Body::SendAck(ack) => {
                let outbound = self.outbox.remove(at);
                let sent = Sent {
                    conversation_id: ack.conversation_id.clone(),
                    client_msg_id: ack.client_msg_id.clone(),
                    seq: ack.seq,
                    server_msg_id: ack.server_msg_id.clone(),
                    server_time_ms: ack.server_time_ms,
                    duplicate: ack.duplicate,
                };
                for waiter in outbound.waiters {
                    let _ = waiter.send(Ok(sent.clone()));
                }
                self.store.remove_outgoing(client_msg_id).await?;
                // The sender's own entry, in its place in the conversation.
                let body = MessageBody::decode(outbound.outgoing.body.as_slice()).ok();
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
                self.apply(ws, own).await?;
            }
            server_frame::Body::Error(error) => {
                let error = Error::from(error);
                if error.is_retryable() {
                    let wait = delay_ms(error.retry_after_ms.max(200));
                    self.outbox[at].in_flight = None;
                    self.outbox[at].not_before = Some(Instant::now() + wait);
                } else {
                    self.fail_send(client_msg_id, error).await?;
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// Applies an entry in its place: repeats are dropped, entries after a gap wait for the
    /// pull that fills it.
    async fn apply(&mut self, ws: &mut Ws, message: Message) -> std::result::Result<(), Error> {
        let conversation = message.conversation_id.clone();
        let held = self.held.get(&conversation).copied().unwrap_or(0);
        if message.seq <= held {
            return Ok(());
        }
        if message.seq > held + 1 {
            self.buffered
                .entry(conversation.clone())
                .or_default()
                .insert(message.seq, message);
            return self.pull(ws, &conversation).await;
        }
        // The run of entries this one completes: stored, and `held` moved past them, before any
        // is shown, so a failure part-way shows nothing twice.
        let mut run = vec![message];
        let mut held = held + 1;
        while let Some(next) = self
            .buffered
            .get_mut(&conversation)
            .and_then(|b| b.remove(&(held + 1)))
        {
            held = next.seq;
            run.push(next);
        }
        for message in &run {
            self.store.put_message(message).await?;
        }
        if let Some(buffer) = self.buffered.get_mut(&conversation) {
            buffer.retain(|seq, _| *seq > held);
            if buffer.is_empty() {
                self.buffered.remove(&conversation);
            }
        }
        self.store.set_held(&conversation, held).await?;
        self.held.insert(conversation.clone(), held);
        // Messages from others newer than what the conversation's state already counts.
        let me = self.user_id.clone();
        let from_others: Vec<u64> = run
            .iter()
            .filter(|m| matches!(m.body, Body::Content(_)) && m.sender_user_id != me)
            .map(|m| m.seq)
            .collect();
        self.touch(&conversation, |c| {
            let fresh = from_others
                .iter()
                .filter(|seq| **seq > c.last_seq && **seq > c.read_seq)
                .count() as u64;
            c.unread_count += fresh;
            c.last_seq = c.last_seq.max(held);
        })
        .await?;
        self.unacked.insert(conversation.clone());
        for message in run {
            let event = match message.body {
                Body::Content(_) => Event::Message(message),
                _ => Event::Change(message),
            };
            self.emit(event);
        }
        Ok(())
    }

    async fn pull(&mut self, ws: &mut Ws, conversation: &str) -> std::result::Result<(), Error> {
        if !self.pulling.insert(conversation.to_owned()) {
            return Ok(());
        }
        let after_seq = self.held.get(conversation).copied().unwrap_or(0);
        let body = client_frame::Body::Pull(PullRequest {
            conversation_id: conversation.to_owned(),
            after_seq,
            limit: 0,
        });
        self.transmit(ws, Pending::Pull(conversation.to_owned()), body)
            .await
    }

    async fn on_pull(
        &mut self,
        ws: &mut Ws,
        conversation: &str,
        body: server_frame::Body,
    ) -> std::result::Result<(), Error> {
        self.pulling.remove(conversation);
        let page = match body {
            server_frame::Body::Messages(page) => page,
            // A passing refusal: reconnect, sync and pull again.
            server_frame::Body::Error(error) if Error::from(error.clone()).is_retryable() => {
                return Err(error.into());
            }
            // Refused for good (the user left, say): nothing more comes for what is buffered.
            _ => {
                self.buffered.remove(conversation);
                return Ok(());
            }
        };
        self.skip_invisible(conversation, page.visible_from_seq)
            .await?;
        let progressed = !page.messages.is_empty();
        for message in &page.messages {
            self.apply(ws, with_as_of(Message::from(message), page.last_seq))
                .await?;
        }
        let held = self.held.get(conversation).copied().unwrap_or(0);
        if progressed && held < page.last_seq {
            self.pull(ws, conversation).await?;
        }
        Ok(())
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
            self.transmit(ws, Pending::Sync, client_frame::Body::Sync(next))
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

    /// Entries below `visible_from_seq` are not the user's to see: they count as held.
    async fn skip_invisible(
        &mut self,
        conversation: &str,
        visible_from_seq: u64,
    ) -> std::result::Result<(), Error> {
        let floor = visible_from_seq.saturating_sub(1);
        if floor > self.held.get(conversation).copied().unwrap_or(0) {
            self.store.set_held(conversation, floor).await?;
            self.held.insert(conversation.to_owned(), floor);
            if let Some(buffer) = self.buffered.get_mut(conversation) {
                buffer.retain(|seq, _| *seq > floor);
            }
        }
        Ok(())
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
        self.skip_invisible(&state.conversation_id, state.visible_from_seq)
            .await?;
        let conversation = Conversation::from(state);
        self.read
            .insert(conversation.conversation_id.clone(), conversation.read_seq);
        self.store.put_conversation(&conversation).await?;
        let behind = state.active
            && state.last_seq > self.held.get(&state.conversation_id).copied().unwrap_or(0);
        self.emit(Event::Conversation(conversation));
        if behind {
            self.pull(ws, &state.conversation_id).await?;
        }
        Ok(())
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
