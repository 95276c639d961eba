//! The messaging module: sends (checked, then persisted in group-committed batches, then
//! acknowledged), fan-out to every online device of every member, sync, history and pull pages,
//! read state and receipts, typing.
//!
//! A send's life: the gateway hands it to [`Messaging::submit`] in the order the connection
//! received it; it is checked (shape, size, rate, permission, the target of an edit, recall,
//! delete or reaction) and queued for the committer, which appends whole batches in one
//! transaction each. The committed entries go, in commit order, to the fan-out task, which
//! hands each to this node's sessions and to the other nodes holding a recipient, and only then
//! answers the sender: an acknowledged entry is durable and on its way to every online device.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    sync::Arc,
};

use base64::Engine;
use bytes::Bytes;
use im_common::{bus::BusError, now_ms};
use im_proto::{
    ConversationId, ConversationKind, UserId,
    v1::{
        ConversationAction, ConversationState, ConversationType, Error, ErrorCode, HistoryRequest,
        MarkRead, Message, MessageBody, MessagePage, MessageState, PullRequest, ReactionCount,
        ReadCursor, ReadCursorsPage, ReadCursorsRequest, ReadReceipt, ReadState, SendAck,
        SendRequest, SyncRequest, SyncResponse, TypingEvent, message_body, server_frame,
    },
};
use prost::Message as _;
use tokio::sync::{mpsc, oneshot};

use crate::{
    business::{Directory, Permissions},
    limits::SendRate,
    push::PushHook,
    router::{Item, Router},
    sessions::{Outbound, SessionHandle},
    settings::CoreSettings,
    store::{Appended, EntryKind, MessageStore, NewEntry, StoredEntry},
    wire,
};

/// Field numbers used when frames are assembled around raw bodies.
mod fields {
    /// `ServerFrame.message`.
    pub(super) const FRAME_MESSAGE: u32 = 6;
    /// `ServerFrame.messages`.
    pub(super) const FRAME_MESSAGES: u32 = 8;
    /// `Message.body`.
    pub(super) const MESSAGE_BODY: u32 = 8;
    /// `MessagePage.messages`.
    pub(super) const PAGE_MESSAGES: u32 = 2;
    /// `MessageBody.content`, and `Edit.content`.
    pub(super) const BODY_CONTENT: u32 = 1;
    /// `MessageBody.edit`.
    pub(super) const BODY_EDIT: u32 = 2;
    /// `Edit.content`.
    pub(super) const EDIT_CONTENT: u32 = 2;
}

/// The longest client message id and reaction key, in bytes.
const MAX_CLIENT_MSG_ID: usize = 64;
const MAX_REACTION_KEY: usize = 32;
/// Room a frame needs beyond its entries (ids, cursors, tags).
const FRAME_OVERHEAD: usize = 1024;

fn fail(code: ErrorCode, message: impl Into<String>) -> Error {
    Error::new(code, message)
}

fn invalid(message: impl Into<String>) -> Error {
    fail(ErrorCode::InvalidArgument, message)
}

fn bus_error(error: BusError) -> Error {
    fail(error.code(), error.to_string())
}

fn internal(error: impl std::fmt::Display) -> Error {
    tracing::error!(%error, "storage failed");
    fail(ErrorCode::Internal, "storage failed")
}

/// A send waiting for the committer.
struct Pending {
    entry: NewEntry,
    /// The session that sent it: it has the ack and gets no push.
    session_id: Option<Arc<str>>,
    done: oneshot::Sender<Result<Appended, String>>,
}

/// A committed entry on its way to the members' devices; its sender is answered once it is
/// on its way.
struct Committed {
    appended: Appended,
    session_id: Option<Arc<str>>,
    done: oneshot::Sender<Result<Appended, String>>,
}

/// The acknowledgement of a queued send: resolves once the batch holding it is durable and
/// its entries have been handed to every node with a recipient online.
pub struct PendingAck {
    conversation_id: String,
    client_msg_id: String,
    done: oneshot::Receiver<Result<Appended, String>>,
}

impl PendingAck {
    /// An ack known already (a resend of a stored entry, not pushed again).
    fn resolved(first: StoredEntry) -> Self {
        let (ack, done) = Self::waiting(&first.conversation_id, &first.client_msg_id);
        let _ = done.send(Ok(Appended::Duplicate(first)));
        ack
    }

    /// An ack of the send `client_msg_id` in `conversation_id`, and where its outcome goes.
    fn waiting(
        conversation_id: &str,
        client_msg_id: &str,
    ) -> (Self, oneshot::Sender<Result<Appended, String>>) {
        let (done, waiting) = oneshot::channel();
        let ack = Self {
            conversation_id: conversation_id.to_owned(),
            client_msg_id: client_msg_id.to_owned(),
            done: waiting,
        };
        (ack, done)
    }

    /// Waits for the commit; the `SendAck`, or the error to answer with.
    pub async fn wait(self) -> Result<server_frame::Body, Error> {
        match self.done.await {
            Ok(Ok(appended)) => {
                let entry = appended.entry();
                Ok(server_frame::Body::SendAck(SendAck {
                    conversation_id: self.conversation_id,
                    client_msg_id: self.client_msg_id,
                    server_msg_id: entry.server_msg_id.clone(),
                    seq: entry.seq as u64,
                    server_time_ms: entry.server_time_ms,
                    duplicate: matches!(appended, Appended::Duplicate(_)),
                }))
            }
            Ok(Err(error)) => Err(internal(error)),
            Err(_) => Err(fail(ErrorCode::ShuttingDown, "the server is stopping")),
        }
    }
}

/// The messaging module of one core node.
pub struct Messaging {
    store: Arc<dyn MessageStore>,
    permissions: Arc<Permissions>,
    directory: Arc<Directory>,
    router: Arc<Router>,
    commits: mpsc::Sender<Pending>,
    /// Stored entries pushed again (resends refused by a check made since): the fan-out's
    /// queue, beside the committer's.
    refan: mpsc::Sender<Committed>,
    sends: Arc<dyn SendRate>,
    settings: CoreSettings,
}

impl std::fmt::Debug for Messaging {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Messaging").finish_non_exhaustive()
    }
}

/// The tasks behind [`Messaging`]: they end once every handle to it is dropped and the queued
/// sends are committed and fanned out.
#[derive(Debug)]
pub struct MessagingTasks {
    committer: tokio::task::JoinHandle<()>,
    fanout: tokio::task::JoinHandle<()>,
}

impl MessagingTasks {
    /// Waits for both tasks to finish.
    pub async fn finished(self) {
        let _ = self.committer.await;
        let _ = self.fanout.await;
    }
}

impl Messaging {
    /// Starts the module: its committer and fan-out tasks.
    pub fn start(
        store: Arc<dyn MessageStore>,
        permissions: Arc<Permissions>,
        directory: Arc<Directory>,
        router: Arc<Router>,
        sends: Arc<dyn SendRate>,
        push: Arc<dyn PushHook>,
        settings: CoreSettings,
    ) -> (Arc<Self>, MessagingTasks) {
        let (commits, queue) = mpsc::channel(settings.commit_queue);
        let (committed, to_fan_out) = mpsc::channel(settings.commit_queue);
        let committer = tokio::spawn(commit_batches(
            store.clone(),
            queue,
            committed.clone(),
            settings.max_batch,
        ));
        let messaging = Arc::new(Self {
            store,
            permissions,
            directory,
            router,
            commits,
            refan: committed,
            sends,
            settings,
        });
        let fanout = tokio::spawn(fan_out(
            Fanout {
                directory: messaging.directory.clone(),
                router: messaging.router.clone(),
                push,
            },
            to_fan_out,
        ));
        (messaging, MessagingTasks { committer, fanout })
    }

    /// Forgets the send rate of users idle long enough to be back at a full burst.
    pub fn prune_rate_limits(&self) {
        self.sends.prune();
    }

    async fn permit(
        &self,
        user_id: &str,
        conversation_id: &str,
        action: ConversationAction,
    ) -> Result<(), Error> {
        let user = UserId::new(user_id).map_err(|e| invalid(e.to_string()))?;
        let conversation: ConversationId = conversation_id
            .parse()
            .map_err(|e: im_proto::IdError| invalid(e.to_string()))?;
        let decision = self
            .permissions
            .check(&user, &conversation, action)
            .await
            .map_err(|e| fail(ErrorCode::Unavailable, format!("permission check: {e}")))?;
        if decision.allowed {
            return Ok(());
        }
        let code = ErrorCode::try_from(decision.code).unwrap_or(ErrorCode::Forbidden);
        Err(fail(code, decision.reason))
    }

    /// Checks a send and queues it for the committer. Sends queued in order are appended in
    /// that order.
    pub async fn submit(
        &self,
        session: &SessionHandle,
        send: SendRequest,
        raw_body: Option<&[u8]>,
    ) -> Result<PendingAck, Error> {
        let user = &*session.user_id;
        if send.client_msg_id.is_empty() || send.client_msg_id.len() > MAX_CLIENT_MSG_ID {
            return Err(invalid(format!(
                "client_msg_id must be 1 to {MAX_CLIENT_MSG_ID} bytes"
            )));
        }
        let conversation: ConversationId = send
            .conversation_id
            .parse()
            .map_err(|e: im_proto::IdError| invalid(e.to_string()))?;
        let id = conversation.to_string();
        let client_msg_id = send.client_msg_id.clone();
        match self.checked(session, &id, send, raw_body).await {
            // A send that passes the checks is appended; the store returns the first entry if
            // it is a resend.
            Ok(entry) => self.enqueue(entry, Some(session.session_id.clone())).await,
            // A resend returns the first ack whatever changed since (a mute, a closed window):
            // the entry exists, and refusing it now would make the client send it again as
            // new. Looked up only on refusal, so accepted sends cost no extra read. It is
            // pushed again, as any resend is (the node that stored it may have died first),
            // unless its rate was refused: the rate is what bounds pushes made again.
            Err(refusal) => match self
                .store
                .entry_by_client_id(&id, user, &client_msg_id)
                .await
                .map_err(internal)?
            {
                Some(first) if refusal.code() == ErrorCode::RateLimited => {
                    metrics::counter!("im_sends_total", "outcome" => "duplicate").increment(1);
                    Ok(PendingAck::resolved(first))
                }
                Some(first) => {
                    self.push_again(first, Some(session.session_id.clone()))
                        .await
                }
                None => Err(refusal),
            },
        }
    }

    /// The entry a send asks for, if it passes every check: shape, size, rate, permission, and
    /// the target and window of an edit, recall, delete or reaction.
    async fn checked(
        &self,
        session: &SessionHandle,
        id: &str,
        send: SendRequest,
        raw_body: Option<&[u8]>,
    ) -> Result<NewEntry, Error> {
        let user = &*session.user_id;
        let id = id.to_owned();
        let Some(body) = send.body else {
            return Err(invalid("send has no body"));
        };
        // The body's bytes as sent; prost read them, so only a frame this parser cannot walk
        // (one holding a deprecated group field) lacks them.
        let Some(raw_body) = raw_body else {
            return Err(invalid("the send's body could not be read as sent"));
        };
        let Some(kind) = body.kind else {
            return Err(if raw_body.is_empty() {
                invalid("the body has no kind")
            } else {
                fail(
                    ErrorCode::UnsupportedFrame,
                    "a body kind this server does not know",
                )
            });
        };
        if raw_body.len() > self.settings.max_content_bytes as usize {
            let mut error = fail(
                ErrorCode::ContentTooLarge,
                format!(
                    "the body is {} bytes, more than {}",
                    raw_body.len(),
                    self.settings.max_content_bytes
                ),
            );
            error.limit = u64::from(self.settings.max_content_bytes);
            return Err(error);
        }
        if let Err(wait) = self.sends.check(&session.user_id).await {
            metrics::counter!("im_rate_limited_total", "scope" => "user").increment(1);
            let mut error = fail(ErrorCode::RateLimited, "too many messages");
            error.retry_after_ms = wait.as_millis().max(1) as u64;
            return Err(error);
        }
        let (kind, target_seq) = match kind {
            message_body::Kind::Content(content) => {
                check_content(&content, wire::field(raw_body, fields::BODY_CONTENT))?;
                self.permit(user, &id, ConversationAction::Send).await?;
                (EntryKind::Content, 0)
            }
            message_body::Kind::Edit(edit) => {
                let Some(content) = &edit.content else {
                    return Err(invalid("an edit needs content"));
                };
                let raw_edit = wire::field(raw_body, fields::BODY_EDIT);
                check_content(
                    content,
                    raw_edit.and_then(|e| wire::field(e, fields::EDIT_CONTENT)),
                )?;
                self.permit(user, &id, ConversationAction::Send).await?;
                let target = self.target(&id, edit.target_seq).await?;
                if target.sender_user_id != user {
                    return Err(fail(
                        ErrorCode::Forbidden,
                        "only the sender edits a message",
                    ));
                }
                if now_ms() - target.server_time_ms > self.settings.edit_window_ms {
                    return Err(fail(
                        ErrorCode::EditWindowClosed,
                        "the edit window has passed",
                    ));
                }
                (EntryKind::Edit, edit.target_seq)
            }
            message_body::Kind::Recall(recall) => {
                self.withdraw(user, &id, recall.target_seq).await?;
                (EntryKind::Recall, recall.target_seq)
            }
            message_body::Kind::Delete(delete) => {
                self.withdraw(user, &id, delete.target_seq).await?;
                (EntryKind::Delete, delete.target_seq)
            }
            message_body::Kind::Reaction(reaction) => {
                if reaction.key.is_empty() || reaction.key.len() > MAX_REACTION_KEY {
                    return Err(invalid(format!(
                        "a reaction key is 1 to {MAX_REACTION_KEY} bytes"
                    )));
                }
                // Any member reacts, in channels and while muted too.
                self.permit(user, &id, ConversationAction::Read).await?;
                self.target(&id, reaction.target_seq).await?;
                if !reaction.remove {
                    self.check_reaction_keys(&id, reaction.target_seq, &reaction.key)
                        .await?;
                }
                (EntryKind::Reaction, reaction.target_seq)
            }
            message_body::Kind::Notice(_) => {
                return Err(fail(
                    ErrorCode::Forbidden,
                    "system notices are written by the server only",
                ));
            }
        };
        Ok(NewEntry {
            conversation_id: id,
            sender_user_id: user.to_owned(),
            sender_device_id: session.device_id.to_string(),
            client_msg_id: send.client_msg_id,
            kind,
            target_seq,
            body: raw_body.to_vec(),
            server_time_ms: now_ms(),
        })
    }

    /// Hands a stored entry to the fan-out again; its ack (a duplicate) resolves once it is on
    /// its way.
    async fn push_again(
        &self,
        first: StoredEntry,
        session_id: Option<Arc<str>>,
    ) -> Result<PendingAck, Error> {
        metrics::counter!("im_sends_total", "outcome" => "duplicate").increment(1);
        let (ack, done) = PendingAck::waiting(&first.conversation_id, &first.client_msg_id);
        self.refan
            .send(Committed {
                appended: Appended::Duplicate(first),
                session_id,
                done,
            })
            .await
            .map_err(|_| fail(ErrorCode::ShuttingDown, "the server is stopping"))?;
        Ok(ack)
    }

    /// Queues an entry (a checked send, or a notice written by the server).
    pub async fn enqueue(
        &self,
        entry: NewEntry,
        session_id: Option<Arc<str>>,
    ) -> Result<PendingAck, Error> {
        let (ack, done) = PendingAck::waiting(&entry.conversation_id, &entry.client_msg_id);
        self.commits
            .send(Pending {
                entry,
                session_id,
                done,
            })
            .await
            .map_err(|_| fail(ErrorCode::ShuttingDown, "the server is stopping"))?;
        Ok(ack)
    }

    /// A message carries at most `max_reaction_keys` distinct keys, so its state always fits a
    /// frame.
    async fn check_reaction_keys(&self, id: &str, target: u64, key: &str) -> Result<(), Error> {
        let effects = self
            .store
            .effects(id, &[target], u64::MAX >> 1)
            .await
            .map_err(internal)?;
        let states = States::fold("", &effects);
        let keys = states.reactions.get(&target);
        let present = keys.is_some_and(|k| k.get(key).is_some_and(|who| !who.is_empty()));
        let distinct = keys.map_or(0, |k| k.values().filter(|who| !who.is_empty()).count());
        if !present && distinct >= self.settings.max_reaction_keys {
            let mut error = fail(
                ErrorCode::QuotaExceeded,
                format!(
                    "a message carries at most {} different reactions",
                    self.settings.max_reaction_keys
                ),
            );
            error.limit = self.settings.max_reaction_keys as u64;
            return Err(error);
        }
        Ok(())
    }

    /// The content entry an edit, recall, delete or reaction acts on.
    async fn target(&self, conversation_id: &str, seq: u64) -> Result<StoredEntry, Error> {
        if seq == 0 {
            return Err(invalid("target_seq is 0"));
        }
        let target = self
            .store
            .entry(conversation_id, seq)
            .await
            .map_err(internal)?
            .ok_or_else(|| {
                fail(
                    ErrorCode::MessageNotFound,
                    format!("no entry {seq} in {conversation_id}"),
                )
            })?;
        if target.kind != EntryKind::Content as i32 {
            return Err(invalid(format!("entry {seq} is not a message")));
        }
        Ok(target)
    }

    /// May `user` recall or delete entry `seq`? Its sender within the window; managers always.
    async fn withdraw(&self, user: &str, conversation_id: &str, seq: u64) -> Result<(), Error> {
        self.permit(user, conversation_id, ConversationAction::Read)
            .await?;
        let target = self.target(conversation_id, seq).await?;
        let own = target.sender_user_id == user;
        if own && now_ms() - target.server_time_ms <= self.settings.recall_window_ms {
            return Ok(());
        }
        let managed = conversation_id.starts_with("g:")
            && self
                .permit(user, conversation_id, ConversationAction::Manage)
                .await
                .is_ok();
        match (managed, own) {
            (true, _) => Ok(()),
            (false, true) => Err(fail(
                ErrorCode::EditWindowClosed,
                "the recall window has passed",
            )),
            (false, false) => Err(fail(
                ErrorCode::Forbidden,
                "only the sender or a group admin withdraws a message",
            )),
        }
    }

    // ---- reading ---------------------------------------------------------------------------

    /// A backward page: entries below `before_seq`, newest last.
    pub async fn history(
        &self,
        user: &str,
        request: &HistoryRequest,
        max_frame_bytes: usize,
    ) -> Result<Bytes, Error> {
        let id = self.readable(user, &request.conversation_id).await?;
        let limit = cap(request.limit, self.settings.max_history_page);
        let last_seq = self.last_seq(&id).await?;
        let mut entries = self
            .store
            .entries_before(&id, request.before_seq, limit)
            .await
            .map_err(internal)?;
        entries.retain(|e| e.seq as u64 <= last_seq);
        let page = self.page(user, &id, entries, last_seq).await?;
        let (encoded, kept_from) = fit_backward(&page, max_frame_bytes);
        let first = page.get(kept_from).map(|(seq, _)| *seq);
        let has_more = first.is_some_and(|s| s > 1);
        Ok(page_frame(
            &MessagePage {
                conversation_id: id,
                messages: Vec::new(),
                has_more,
                last_seq,
                visible_from_seq: 1,
            },
            &encoded,
        ))
    }

    /// A forward page: entries above `after_seq`.
    pub async fn pull(
        &self,
        user: &str,
        request: &PullRequest,
        max_frame_bytes: usize,
    ) -> Result<Bytes, Error> {
        let id = self.readable(user, &request.conversation_id).await?;
        let limit = cap(request.limit, self.settings.max_history_page);
        let last_seq = self.last_seq(&id).await?;
        let mut entries = self
            .store
            .entries_after(&id, request.after_seq, limit)
            .await
            .map_err(internal)?;
        entries.retain(|e| e.seq as u64 <= last_seq);
        let page = self.page(user, &id, entries, last_seq).await?;
        let encoded = fit_forward(&page, max_frame_bytes);
        let reached = page
            .get(encoded.len().wrapping_sub(1))
            .map_or(request.after_seq, |(seq, _)| *seq);
        Ok(page_frame(
            &MessagePage {
                conversation_id: id,
                messages: Vec::new(),
                has_more: reached < last_seq,
                last_seq,
                visible_from_seq: 1,
            },
            &encoded,
        ))
    }

    async fn readable(&self, user: &str, conversation_id: &str) -> Result<String, Error> {
        let id: ConversationId = conversation_id
            .parse()
            .map_err(|e: im_proto::IdError| invalid(e.to_string()))?;
        let id = id.to_string();
        self.permit(user, &id, ConversationAction::Read).await?;
        Ok(id)
    }

    async fn last_seq(&self, id: &str) -> Result<u64, Error> {
        let seqs = self
            .store
            .last_seqs(&[id.to_owned()])
            .await
            .map_err(internal)?;
        Ok(seqs.first().copied().unwrap_or(0))
    }

    /// Entries as encoded `Message`s with their state as of `last_seq`, ascending.
    async fn page(
        &self,
        user: &str,
        id: &str,
        entries: Vec<StoredEntry>,
        last_seq: u64,
    ) -> Result<Vec<(u64, Vec<u8>)>, Error> {
        let targets: Vec<u64> = entries
            .iter()
            .map(|e| {
                if e.kind == EntryKind::Edit as i32 {
                    e.target_seq as u64
                } else {
                    e.seq as u64
                }
            })
            .collect::<HashSet<_>>()
            .into_iter()
            .collect();
        let effects = self
            .store
            .effects(id, &targets, last_seq)
            .await
            .map_err(internal)?;
        let states = States::fold(user, &effects);
        Ok(entries
            .iter()
            .map(|entry| (entry.seq as u64, states.encode(entry)))
            .collect())
    }

    // ---- sync ------------------------------------------------------------------------------

    /// Which of the user's conversations moved past what the client holds (paged).
    pub async fn sync(
        &self,
        user: &str,
        request: SyncRequest,
        max_frame_bytes: usize,
    ) -> Result<SyncResponse, Error> {
        let limit = cap(request.limit, self.settings.max_sync_page) as usize;
        let (snapshot, after) = if request.page_token.is_empty() {
            (request, String::new())
        } else {
            let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(&request.page_token)
                .map_err(|_| invalid("bad page_token"))?;
            let snapshot =
                SyncRequest::decode(bytes.as_slice()).map_err(|_| invalid("bad page_token"))?;
            let after = snapshot.page_token.clone();
            (snapshot, after)
        };
        let held: HashMap<&str, u64> = snapshot
            .held
            .iter()
            .map(|c| (c.conversation_id.as_str(), c.seq))
            .collect();
        let read_sent: HashMap<&str, u64> = snapshot
            .read
            .iter()
            .map(|c| (c.conversation_id.as_str(), c.seq))
            .collect();

        // The user's conversations, in id order.
        let mut mine: BTreeMap<String, ConversationType> = BTreeMap::new();
        for id in self
            .store
            .direct_conversations(user)
            .await
            .map_err(internal)?
        {
            mine.insert(id, ConversationType::Direct);
        }
        let me = UserId::new(user).map_err(|e| invalid(e.to_string()))?;
        for group in self.directory.groups_of(&me).await.map_err(bus_error)? {
            let kind = ConversationType::try_from(group.r#type).unwrap_or(ConversationType::Group);
            mine.insert(format!("g:{}", group.group_id), kind);
        }
        let ids: Vec<String> = mine
            .range(after.clone()..)
            .map(|(id, _)| id.clone())
            .collect();
        let ids: Vec<String> = ids.into_iter().filter(|id| *id > after).collect();
        let last_seqs = self.store.last_seqs(&ids).await.map_err(internal)?;
        let read_seqs = self.store.read_seqs(user, &ids).await.map_err(internal)?;

        // Held conversations the user is no longer in (groups left, removed or dismissed).
        let gone: Vec<&str> = held
            .keys()
            .copied()
            .filter(|id| id.starts_with("g:") && *id > after.as_str() && !mine.contains_key(*id))
            .collect();
        let mut changed: BTreeMap<String, Option<(u64, u64, ConversationType)>> = BTreeMap::new();
        for ((id, last), read) in ids.iter().zip(last_seqs).zip(read_seqs) {
            let moved = last > held.get(id.as_str()).copied().unwrap_or(0);
            let read_moved = read != read_sent.get(id.as_str()).copied().unwrap_or(0);
            if moved || read_moved {
                changed.insert(id.clone(), Some((last, read, mine[id])));
            }
        }
        for id in gone {
            changed.insert(id.to_owned(), None);
        }

        // The page token carries the snapshot of what is still to come, so later pages need no
        // server state; the page is cut to fit the client's frames, token included.
        let rest = |after: &str| SyncRequest {
            held: snapshot
                .held
                .iter()
                .filter(|c| c.conversation_id.as_str() > after)
                .cloned()
                .collect(),
            read: snapshot
                .read
                .iter()
                .filter(|c| c.conversation_id.as_str() > after)
                .cloned()
                .collect(),
            page_token: after.to_owned(),
            limit: 0,
        };
        let token_room = rest(&after).encoded_len() * 4 / 3 + 64;
        let budget = max_frame_bytes.saturating_sub(FRAME_OVERHEAD + token_room);
        let mut conversations: Vec<ConversationState> = Vec::new();
        let mut used = 0;
        let mut next_page_token = String::new();
        for (id, change) in &changed {
            let state = match change {
                Some((last, read, kind)) => self.state(user, id, *kind, *last, *read).await?,
                // The user is no longer in it: its progress is none of their business.
                None => ConversationState {
                    conversation_id: id.clone(),
                    r#type: ConversationType::Group as i32,
                    visible_from_seq: 1,
                    active: false,
                    ..Default::default()
                },
            };
            used += state.encoded_len() + 8;
            if conversations.len() == limit || (used > budget && !conversations.is_empty()) {
                let last = conversations
                    .last()
                    .map(|c| c.conversation_id.clone())
                    .unwrap_or_default();
                next_page_token = base64::engine::general_purpose::URL_SAFE_NO_PAD
                    .encode(rest(&last).encode_to_vec());
                break;
            }
            conversations.push(state);
        }
        Ok(SyncResponse {
            conversations,
            next_page_token,
        })
    }

    /// One conversation as `user` sees it.
    async fn state(
        &self,
        user: &str,
        id: &str,
        kind: ConversationType,
        last_seq: u64,
        read_seq: u64,
    ) -> Result<ConversationState, Error> {
        let unread_count = self
            .store
            .unread_count(id, user, read_seq)
            .await
            .map_err(internal)?;
        let newest = self.store.last_content(id).await.map_err(internal)?;
        let last_message = match newest {
            Some(entry) => {
                let page = self.page(user, id, vec![entry], last_seq).await?;
                page.into_iter()
                    .next()
                    .and_then(|(_, bytes)| Message::decode(bytes.as_slice()).ok())
            }
            None => None,
        };
        Ok(ConversationState {
            conversation_id: id.to_owned(),
            r#type: kind as i32,
            last_seq,
            read_seq,
            unread_count,
            visible_from_seq: 1,
            last_message,
            active: true,
        })
    }

    /// The state pushed when a user joins a conversation (a group they were added to).
    pub async fn joined(&self, user: &str, group_id: &str) -> Result<ConversationState, Error> {
        let id = format!("g:{group_id}");
        let me = UserId::new(user).map_err(|e| invalid(e.to_string()))?;
        let kind = self
            .directory
            .groups_of(&me)
            .await
            .map_err(bus_error)?
            .into_iter()
            .find(|g| g.group_id == group_id)
            .and_then(|g| ConversationType::try_from(g.r#type).ok())
            .unwrap_or(ConversationType::Group);
        let last = self.last_seq(&id).await?;
        let read = self
            .store
            .read_seqs(user, std::slice::from_ref(&id))
            .await
            .map_err(internal)?;
        self.state(user, &id, kind, last, read.first().copied().unwrap_or(0))
            .await
    }

    // ---- read state ------------------------------------------------------------------------

    /// Moves the user's read cursor forward; tells the user's other devices and the other
    /// members.
    pub async fn mark_read(
        &self,
        session: &SessionHandle,
        request: &MarkRead,
    ) -> Result<ReadState, Error> {
        let user = &*session.user_id;
        let id = self.readable(user, &request.conversation_id).await?;
        let before = self
            .store
            .read_seqs(user, std::slice::from_ref(&id))
            .await
            .map_err(internal)?
            .first()
            .copied()
            .unwrap_or(0);
        let now = now_ms();
        let read_seq = self
            .store
            .advance_read(&id, user, request.seq, now)
            .await
            .map_err(internal)?;
        let unread_count = self
            .store
            .unread_count(&id, user, read_seq)
            .await
            .map_err(internal)?;
        let state = ReadState {
            conversation_id: id.clone(),
            read_seq,
            unread_count,
        };
        if read_seq > before {
            let mine = Outbound {
                frame: wire::frame(0, server_frame::Body::ReadState(state.clone())),
                entry: None,
            };
            self.router
                .deliver(Arc::new([user.to_owned()]), mine, Some(&session.session_id))
                .await;
            let receipt = Outbound {
                frame: wire::frame(
                    0,
                    server_frame::Body::ReadReceipt(ReadReceipt {
                        conversation_id: id.clone(),
                        user_id: user.to_owned(),
                        read_seq,
                        read_at_ms: now,
                    }),
                ),
                entry: None,
            };
            let others = self.others(&id, user).await;
            self.router.deliver(others.into(), receipt, None).await;
        }
        Ok(state)
    }

    /// The members of a conversation other than `user`, for typing and receipts: none in
    /// groups larger than `receipts_max_group` (or when the list cannot be had).
    async fn others(&self, id: &str, user: &str) -> Vec<String> {
        let Ok(conversation) = id.parse::<ConversationId>() else {
            return Vec::new();
        };
        match conversation.kind() {
            ConversationKind::Direct(..) => UserId::new(user)
                .ok()
                .and_then(|me| conversation.peer_of(&me).cloned())
                .filter(|peer| peer.as_str() != user)
                .map(|peer| vec![peer.to_string()])
                .unwrap_or_default(),
            ConversationKind::Group(group) => match self.directory.members(group).await {
                Ok(members) if members.len() <= self.settings.receipts_max_group => members
                    .iter()
                    .filter(|m| m.as_str() != user)
                    .cloned()
                    .collect(),
                _ => Vec::new(),
            },
        }
    }

    /// Who has read how far, paged by user id.
    pub async fn read_cursors(
        &self,
        user: &str,
        request: &ReadCursorsRequest,
    ) -> Result<ReadCursorsPage, Error> {
        let id = self.readable(user, &request.conversation_id).await?;
        let limit = cap(request.limit, self.settings.max_sync_page);
        let after = if request.page_token.is_empty() {
            String::new()
        } else {
            let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(&request.page_token)
                .map_err(|_| invalid("bad page_token"))?;
            String::from_utf8(bytes).map_err(|_| invalid("bad page_token"))?
        };
        let rows = self
            .store
            .read_cursors(&id, &after, limit)
            .await
            .map_err(internal)?;
        let next_page_token = match rows.last() {
            Some((last, _)) if rows.len() == limit as usize => {
                base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(last)
            }
            _ => String::new(),
        };
        Ok(ReadCursorsPage {
            conversation_id: id,
            cursors: rows
                .into_iter()
                .map(|(user_id, read_seq)| ReadCursor { user_id, read_seq })
                .collect(),
            next_page_token,
        })
    }

    /// Relays a typing signal to the other members (dropped when not allowed).
    pub async fn typing(&self, session: &SessionHandle, conversation_id: &str, active: bool) {
        let user = &*session.user_id;
        let Ok(id) = conversation_id.parse::<ConversationId>() else {
            return;
        };
        let id = id.to_string();
        if self
            .permit(user, &id, ConversationAction::Send)
            .await
            .is_err()
        {
            return;
        }
        let event = Outbound {
            frame: wire::frame(
                0,
                server_frame::Body::Typing(TypingEvent {
                    conversation_id: id.clone(),
                    user_id: user.to_owned(),
                    active,
                }),
            ),
            entry: None,
        };
        let others = self.others(&id, user).await;
        self.router.deliver(others.into(), event, None).await;
    }
}

fn cap(asked: u32, max: u32) -> u32 {
    if asked == 0 { max } else { asked.min(max) }
}

/// A content's kind must be known: absent is invalid, unknown (from a newer client) is
/// unsupported.
fn check_content(content: &im_proto::v1::Content, raw: Option<&[u8]>) -> Result<(), Error> {
    if content.kind.is_some() {
        return Ok(());
    }
    match raw {
        Some(raw) if wire::has_unknown_fields(content, raw) => Err(fail(
            ErrorCode::UnsupportedFrame,
            "a content kind this server does not know",
        )),
        _ => Err(invalid("the content has no kind")),
    }
}

/// What later entries did to the entries of a page.
#[derive(Default)]
struct States<'a> {
    /// target -> the latest edit's raw body.
    edits: HashMap<u64, (u64, &'a [u8])>,
    recalled: HashMap<u64, u64>,
    deleted: HashMap<u64, u64>,
    /// target -> key -> reactors.
    reactions: HashMap<u64, BTreeMap<String, HashSet<&'a str>>>,
    user: &'a str,
}

impl<'a> States<'a> {
    fn fold(user: &'a str, effects: &'a [StoredEntry]) -> Self {
        let mut states = States {
            user,
            ..Default::default()
        };
        for effect in effects {
            let (seq, target) = (effect.seq as u64, effect.target_seq as u64);
            match EntryKind::from_i32(effect.kind) {
                Some(EntryKind::Edit) => {
                    states.edits.insert(target, (seq, effect.body.as_slice()));
                }
                Some(EntryKind::Recall) => {
                    states.recalled.entry(target).or_insert(seq);
                }
                Some(EntryKind::Delete) => {
                    states.deleted.entry(target).or_insert(seq);
                }
                Some(EntryKind::Reaction) => {
                    let Ok(body) = MessageBody::decode(effect.body.as_slice()) else {
                        continue;
                    };
                    let Some(message_body::Kind::Reaction(reaction)) = body.kind else {
                        continue;
                    };
                    let reactors = states
                        .reactions
                        .entry(target)
                        .or_default()
                        .entry(reaction.key)
                        .or_default();
                    if reaction.remove {
                        reactors.remove(effect.sender_user_id.as_str());
                    } else {
                        reactors.insert(effect.sender_user_id.as_str());
                    }
                }
                _ => {}
            }
        }
        states
    }

    fn withdrawn(&self, seq: u64) -> bool {
        self.recalled.contains_key(&seq) || self.deleted.contains_key(&seq)
    }

    /// The entry as an encoded `Message`, its body as stored or as changed by later entries.
    fn encode(&self, entry: &StoredEntry) -> Vec<u8> {
        let seq = entry.seq as u64;
        let mut state = MessageState {
            edited_seq: self.edits.get(&seq).map_or(0, |(s, _)| *s),
            recalled_seq: self.recalled.get(&seq).copied().unwrap_or(0),
            deleted_seq: self.deleted.get(&seq).copied().unwrap_or(0),
            reactions: Vec::new(),
        };
        if let Some(keys) = self.reactions.get(&seq) {
            state.reactions = keys
                .iter()
                .filter(|(_, who)| !who.is_empty())
                .map(|(key, who)| ReactionCount {
                    key: key.clone(),
                    count: who.len() as u32,
                    mine: who.contains(self.user),
                })
                .collect();
        }
        let body: Vec<u8> = if self.withdrawn(seq)
            || (entry.kind == EntryKind::Edit as i32 && self.withdrawn(entry.target_seq as u64))
        {
            Vec::new()
        } else if let Some((_, edit)) = self.edits.get(&seq) {
            let content = wire::field(edit, fields::BODY_EDIT)
                .and_then(|e| wire::field(e, fields::EDIT_CONTENT))
                .unwrap_or_default();
            let mut body = Vec::new();
            wire::put_field(&mut body, fields::BODY_CONTENT, content);
            body
        } else {
            entry.body.clone()
        };
        let has_state = state != MessageState::default();
        let mut out = message_of(entry, has_state.then_some(state)).encode_to_vec();
        wire::put_field(&mut out, fields::MESSAGE_BODY, &body);
        out
    }
}

/// An entry's `Message` without its body (which is appended raw).
fn message_of(entry: &StoredEntry, state: Option<MessageState>) -> Message {
    Message {
        conversation_id: entry.conversation_id.clone(),
        seq: entry.seq as u64,
        server_msg_id: entry.server_msg_id.clone(),
        sender_user_id: entry.sender_user_id.clone(),
        sender_device_id: entry.sender_device_id.clone(),
        client_msg_id: entry.client_msg_id.clone(),
        server_time_ms: entry.server_time_ms,
        body: None,
        state,
    }
}

/// The push of a new entry, its body as received.
pub fn push_frame(entry: &StoredEntry) -> Bytes {
    let mut message = message_of(entry, None).encode_to_vec();
    wire::put_field(&mut message, fields::MESSAGE_BODY, &entry.body);
    wire::raw_frame(0, fields::FRAME_MESSAGE, &message)
}

fn page_frame(page: &MessagePage, messages: &[&[u8]]) -> Bytes {
    let mut out = page.encode_to_vec();
    for message in messages {
        wire::put_field(&mut out, fields::PAGE_MESSAGES, message);
    }
    // request_id is filled in by the caller through `with_request_id`.
    wire::raw_frame(0, fields::FRAME_MESSAGES, &out)
}

/// Sets the request id of an encoded `ServerFrame` that carries none.
pub fn with_request_id(frame: Bytes, request_id: u64) -> Bytes {
    if request_id == 0 {
        return frame;
    }
    let mut out = Vec::with_capacity(frame.len() + 10);
    prost::encoding::encode_key(1, prost::encoding::WireType::Varint, &mut out);
    prost::encoding::encode_varint(request_id, &mut out);
    out.extend_from_slice(&frame);
    out.into()
}

/// The entries of a forward page that fit a frame, from the oldest.
fn fit_forward(page: &[(u64, Vec<u8>)], max_frame_bytes: usize) -> Vec<&[u8]> {
    let budget = max_frame_bytes.saturating_sub(FRAME_OVERHEAD);
    let mut used = 0;
    let mut kept = Vec::new();
    for (_, message) in page {
        used += message.len() + 6;
        if used > budget && !kept.is_empty() {
            break;
        }
        kept.push(message.as_slice());
    }
    kept
}

/// The entries of a backward page that fit a frame, from the newest; and the index of the
/// oldest kept.
fn fit_backward(page: &[(u64, Vec<u8>)], max_frame_bytes: usize) -> (Vec<&[u8]>, usize) {
    let budget = max_frame_bytes.saturating_sub(FRAME_OVERHEAD);
    let mut used = 0;
    let mut from = page.len();
    while from > 0 {
        used += page[from - 1].1.len() + 6;
        if used > budget && from < page.len() {
            break;
        }
        from -= 1;
    }
    (
        page[from..].iter().map(|(_, m)| m.as_slice()).collect(),
        from,
    )
}

/// The committer: takes queued sends in order, appends them in batches (one transaction, one
/// fsync per batch), and passes the entries on in commit order to the fan-out, which answers
/// their senders; a batch that fails is answered at once.
async fn commit_batches(
    store: Arc<dyn MessageStore>,
    mut queue: mpsc::Receiver<Pending>,
    committed: mpsc::Sender<Committed>,
    max_batch: usize,
) {
    let mut batch = Vec::with_capacity(max_batch);
    while queue.recv_many(&mut batch, max_batch).await > 0 {
        let entries: Vec<NewEntry> = batch.iter().map(|p| p.entry.clone()).collect();
        let started = std::time::Instant::now();
        let stored = store.append(&entries).await;
        metrics::histogram!("im_commit_seconds").record(started.elapsed().as_secs_f64());
        metrics::histogram!("im_commit_batch_entries").record(entries.len() as f64);
        match stored {
            Ok(results) => {
                let duplicates = results
                    .iter()
                    .filter(|a| matches!(a, Appended::Duplicate(_)))
                    .count() as u64;
                metrics::counter!("im_sends_total", "outcome" => "stored")
                    .increment(results.len() as u64 - duplicates);
                metrics::counter!("im_sends_total", "outcome" => "duplicate").increment(duplicates);
                // Every entry goes to the fan-out, which answers its sender after pushing it:
                // an acknowledged entry is on its way to every online recipient, wherever the
                // node holding them. A resend is pushed again too: its first push may have died
                // with the node that stored it before answering. Clients drop repeats by seq.
                for (pending, appended) in batch.drain(..).zip(results) {
                    let entry = Committed {
                        appended,
                        session_id: pending.session_id,
                        done: pending.done,
                    };
                    if committed.send(entry).await.is_err() {
                        return;
                    }
                }
            }
            Err(error) => {
                tracing::error!(%error, entries = batch.len(), "a batch was not stored");
                metrics::counter!("im_sends_total", "outcome" => "failed")
                    .increment(batch.len() as u64);
                for pending in batch.drain(..) {
                    let _ = pending.done.send(Err(error.to_string()));
                }
            }
        }
    }
}

/// A group's members, asked up to three times (a business node restarting, say).
async fn members_with_retries(
    directory: &Directory,
    group_id: &im_proto::GroupId,
) -> Option<Arc<[String]>> {
    for wait_ms in [0, 100, 500] {
        tokio::time::sleep(std::time::Duration::from_millis(wait_ms)).await;
        match directory.members(group_id).await {
            Ok(members) => return Some(members),
            // A group that is gone stays gone.
            Err(error) if error.code() == ErrorCode::GroupNotFound => return None,
            Err(_) => {}
        }
    }
    None
}

struct Fanout {
    directory: Arc<Directory>,
    router: Arc<Router>,
    push: Arc<dyn PushHook>,
}

/// Committed entries fanned out together, at most.
const FAN_OUT_BATCH: usize = 256;

/// Pushes committed entries, in commit order, to every online device of every member (the
/// sending session excepted) on every node, and hands the rest to the push hook. Entries
/// committed together go out together: one route lookup and one bus message per node.
async fn fan_out(fanout: Fanout, mut committed: mpsc::Receiver<Committed>) {
    let mut batch = Vec::with_capacity(FAN_OUT_BATCH);
    while committed.recv_many(&mut batch, FAN_OUT_BATCH).await > 0 {
        let mut items = Vec::with_capacity(batch.len());
        // Per item, which answer holds its entry.
        let mut pushed = Vec::with_capacity(batch.len());
        let mut answers = Vec::with_capacity(batch.len());
        for Committed {
            appended,
            session_id,
            done,
        } in batch.drain(..)
        {
            let entry = appended.entry();
            if let Some(recipients) = recipients(&fanout.directory, entry).await {
                items.push(Item {
                    users: recipients,
                    outbound: Outbound {
                        frame: push_frame(entry),
                        entry: Some((entry.conversation_id.as_str().into(), entry.seq as u64)),
                    },
                    exclude: session_id,
                });
                pushed.push(answers.len());
            }
            answers.push((done, appended));
        }
        let offline = fanout
            .router
            .deliver_all(&items, fanout.push.wants_offline_users())
            .await;
        // Push services want the content (a preview): the body decoded, unlike pushes to
        // clients, which relay its bytes.
        let notices: Vec<(Message, Vec<String>)> = if fanout.push.wants_offline_users() {
            pushed
                .iter()
                .zip(offline)
                .filter(|(_, users)| !users.is_empty())
                .map(|(&i, users)| {
                    let entry = answers[i].1.entry();
                    let mut message = message_of(entry, None);
                    message.body = MessageBody::decode(entry.body.as_slice()).ok();
                    (message, users)
                })
                .collect()
        } else {
            Vec::new()
        };
        for (done, appended) in answers {
            let _ = done.send(Ok(appended));
        }
        for (message, users) in notices {
            fanout.push.offline(&message, &users).await;
        }
    }
}

/// Who gets an entry: both sides of a 1:1, or a group's members.
async fn recipients(directory: &Directory, entry: &StoredEntry) -> Option<Arc<[String]>> {
    let id = entry.conversation_id.parse::<ConversationId>().ok()?;
    match id.kind() {
        ConversationKind::Direct(a, b) if a == b => Some(Arc::new([a.to_string()])),
        ConversationKind::Direct(a, b) => Some(Arc::new([a.to_string(), b.to_string()])),
        ConversationKind::Group(group) => {
            let members = members_with_retries(directory, group).await;
            if members.is_none() {
                // Members catch up at their next sync or gap; nothing is lost, the push is.
                tracing::warn!(
                    conversation = %entry.conversation_id,
                    seq = entry.seq,
                    "no member list: entry not pushed"
                );
                metrics::counter!("im_pushes_skipped_total").increment(1);
            }
            members
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_are_prepended_to_assembled_frames() {
        let frame = page_frame(&MessagePage::default(), &[]);
        let framed = with_request_id(frame, 42);
        let decoded = im_proto::v1::ServerFrame::decode(framed).expect("decodes");
        assert_eq!(decoded.request_id, 42);
        assert!(matches!(
            decoded.body,
            Some(server_frame::Body::Messages(_))
        ));
    }

    #[test]
    fn pages_fit_the_frame_limit() {
        let page: Vec<(u64, Vec<u8>)> = (1..=10).map(|s| (s, vec![0; 300])).collect();
        assert_eq!(fit_forward(&page, 1024 + 1000).len(), 3);
        let (kept, from) = fit_backward(&page, 1024 + 1000);
        assert_eq!((kept.len(), from), (3, 7), "the newest are kept");
        assert_eq!(fit_forward(&page, 10).len(), 1, "one entry always goes");
    }
}
