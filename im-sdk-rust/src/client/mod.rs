//! The client: the public [`Client`] API, and the modules behind it.
//!
//! Every call is a command to one task that owns the connection ([`connection`]), answered
//! through a oneshot channel: the futures the public API returns need no particular runtime,
//! so they can be awaited from a foreign executor.
//!
//! - [`builder`]: [`ClientBuilder`], [`Config`], [`TokenProvider`], the gateway URLs.
//! - [`connection`]: the task's run loop: connect, authenticate, serve a session (commands,
//!   frames, heartbeats, timers), serve commands while offline, reconnect with jittered backoff.
//! - [`link`]: the socket of one connection: the upgrade and the Hello, frames to and from it.
//! - [`inbound`]: what the server sends: answers taken to what asked, pushes, the sync, pulls,
//!   the timeline's actions carried out, delivery acknowledgements.
//! - [`sends`]: the sends not yet acknowledged (the outbox), resent with their ids.
//! - [`calls`]: the calls queued while offline or on the wire, and the requests on the wire by
//!   id.
//! - [`timeline`]: the ordering of each conversation's entries (repeats dropped, gaps filled by
//!   pulling).
//!
//! [`sends`], [`calls`] and [`timeline`] never touch the socket (the task writes the frames),
//! so that their rules are tested without one.

mod builder;
mod calls;
mod connection;
mod inbound;
mod link;
mod sends;
mod timeline;

use std::sync::{Arc, Mutex};

use im_proto::{
    ErrorCode,
    v1::{
        self, HistoryRequest, MarkRead, PresenceStatus, PresenceSubscribe, PresenceUnsubscribe,
        SetPresence, Typing, client_frame, server_frame,
    },
};
use prost::Message as _;
use tokio::{
    runtime::Handle,
    sync::{mpsc, oneshot, watch},
};

pub use builder::{ClientBuilder, Config, StaticToken, TokenProvider};
use connection::Command;

use crate::{
    error::{Error, Result},
    groups::{Added, BusinessApi, Group, Invitation, Member},
    media::{Media, NewUpload},
    store::{LocalStore, Outgoing},
    types::{Body, ConnectionState, Content, ContentKind, Conversation, Event, Message},
};

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
    /// The first seq the user may see (a member added later sees the history from their join).
    pub visible_from_seq: u64,
}

/// The user's read state in a conversation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadState {
    /// The read cursor.
    pub read_seq: u64,
    /// Messages from others above it.
    pub unread_count: u64,
}

/// An app's handle on the IM service. Cheap to share behind an `Arc`; every method may be
/// called from any task or thread.
pub struct Client {
    business: Option<Arc<BusinessApi>>,
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

/// A delay the server asked for, within reason (and never an overflow).
fn delay_ms(ms: u64) -> std::time::Duration {
    std::time::Duration::from_millis(ms.min(3_600_000))
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

    fn business(&self) -> Result<Arc<BusinessApi>> {
        self.business.clone().ok_or_else(|| {
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
        let (api, name, members) = (self.business()?, name.to_owned(), members.to_vec());
        self.on_runtime(async move { api.create(&name, &members).await })
            .await
    }

    /// A group the user is a member of.
    pub async fn group(&self, group_id: &str) -> Result<Group> {
        let (api, id) = (self.business()?, group_id.to_owned());
        self.on_runtime(async move { api.get(&id).await }).await
    }

    /// Every member of a group the user is in.
    pub async fn members(&self, group_id: &str) -> Result<Vec<Member>> {
        let (api, id) = (self.business()?, group_id.to_owned());
        self.on_runtime(async move { api.members(&id).await }).await
    }

    /// Adds members (as the user's role in the group allows): those who let the user add them
    /// join, the others are invited (the server's `group_adds` policy).
    pub async fn add_members(&self, group_id: &str, user_ids: &[String]) -> Result<Added> {
        let (api, id, users) = (self.business()?, group_id.to_owned(), user_ids.to_vec());
        self.on_runtime(async move { api.add(&id, &users).await })
            .await
    }

    /// The user's pending invitations to groups, oldest first.
    pub async fn invitations(&self) -> Result<Vec<Invitation>> {
        let me = self.wait_connected().await?;
        let api = self.business()?;
        self.on_runtime(async move { api.invitations(&me).await })
            .await
    }

    /// Accepts an invitation: the user joins the group.
    pub async fn accept_invitation(&self, group_id: &str) -> Result<Group> {
        let me = self.wait_connected().await?;
        let (api, id) = (self.business()?, group_id.to_owned());
        self.on_runtime(async move { api.accept(&id, &me).await })
            .await
    }

    /// Declines an invitation.
    pub async fn decline_invitation(&self, group_id: &str) -> Result<()> {
        let me = self.wait_connected().await?;
        let (api, id) = (self.business()?, group_id.to_owned());
        self.on_runtime(async move { api.decline(&id, &me).await })
            .await
    }

    /// Removes members (as the user's role in the group allows).
    pub async fn remove_members(&self, group_id: &str, user_ids: &[String]) -> Result<()> {
        let (api, id, users) = (self.business()?, group_id.to_owned(), user_ids.to_vec());
        self.on_runtime(async move { api.remove(&id, &users).await })
            .await
    }

    /// Leaves a group.
    pub async fn leave_group(&self, group_id: &str) -> Result<()> {
        let me = self.wait_connected().await?;
        let (api, id) = (self.business()?, group_id.to_owned());
        self.on_runtime(async move { api.leave(&id, &me).await })
            .await
    }

    /// Uploads media: the upload is created on the business API, its bytes go straight to the
    /// object store, and it resolves once the server has checked and kept them (a type the
    /// bytes contradict is MEDIA_REJECTED, a full quota QUOTA_EXCEEDED). Dropping the future
    /// cancels the upload; uploading again with the same [`NewUpload::client_upload_id`]
    /// resumes it (after an app restart too), and the server keeps one media for it.
    pub async fn upload(&self, upload: NewUpload) -> Result<Media> {
        let me = self.wait_connected().await?;
        let api = self.business()?;
        let mut task = AbortOnDrop(
            self.runtime
                .spawn(async move { api.upload(&me, &upload).await }),
        );
        (&mut task.0)
            .await
            .map_err(|e| Error::new(ErrorCode::Internal, e.to_string()))?
    }

    /// Gives up an upload not completed: its reservation is released and its bytes deleted.
    pub async fn abort_upload(&self, media_id: &str) -> Result<()> {
        let (api, id) = (self.business()?, media_id.to_owned());
        self.on_runtime(async move { api.abort_upload(&id).await })
            .await
    }

    /// The user's own media as the server has it now.
    pub async fn media(&self, media_id: &str) -> Result<Media> {
        let (api, id) = (self.business()?, media_id.to_owned());
        self.on_runtime(async move { api.media(&id).await }).await
    }

    /// Sends uploaded media (completed: ready, or still being processed) to a conversation,
    /// with a caption; its dimensions go in the message.
    pub async fn send_media(
        &self,
        conversation_id: &str,
        media: &Media,
        caption: &str,
    ) -> Result<Sent> {
        let mut reference = media.to_ref();
        reference.caption = caption.to_owned();
        let content = Content {
            kind: ContentKind::Media(reference),
            ..Content::text("")
        };
        self.send(conversation_id, Body::Content(content)).await
    }

    /// A short-lived URL of media, for players and image views. Media of others is named
    /// with the message that shows it (`conversation_id`, `seq`), which the user must be able
    /// to read now; the user's own media with `""` and 0.
    pub async fn download_url(
        &self,
        media_id: &str,
        conversation_id: &str,
        seq: u64,
    ) -> Result<String> {
        let (api, id, conversation) = (
            self.business()?,
            media_id.to_owned(),
            conversation_id.to_owned(),
        );
        self.on_runtime(async move { api.download_url(&id, "", &conversation, seq).await })
            .await
    }

    /// The bytes of media, authorized as [`Self::download_url`] says.
    pub async fn download(
        &self,
        media_id: &str,
        conversation_id: &str,
        seq: u64,
    ) -> Result<Vec<u8>> {
        let (api, id, conversation) = (
            self.business()?,
            media_id.to_owned(),
            conversation_id.to_owned(),
        );
        self.on_runtime(async move { api.download(&id, "", &conversation, seq).await })
            .await
    }

    /// The bytes of a rendition the server made of media (a name of [`Media::variants`],
    /// such as `thumb_320`), authorized as [`Self::download_url`] says.
    pub async fn download_variant(
        &self,
        media_id: &str,
        variant: &str,
        conversation_id: &str,
        seq: u64,
    ) -> Result<Vec<u8>> {
        let (api, id, variant, conversation) = (
            self.business()?,
            media_id.to_owned(),
            variant.to_owned(),
            conversation_id.to_owned(),
        );
        self.on_runtime(async move { api.download(&id, &variant, &conversation, seq).await })
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
            visible_from_seq: page.visible_from_seq,
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

/// A task that stops when its handle is dropped: the caller's cancellation reaches it.
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}
