//! The messaging module: sends (checked, then persisted in group-committed batches, then
//! acknowledged), fan-out to every online device of every member, sync, history and pull pages,
//! read state and receipts, typing.
//!
//! A send's life: the gateway hands it to [`Messaging::submit`] in the order the connection
//! received it; it is checked ([`checks`]: shape, size, rate, permission, the target of an
//! edit, recall, delete or reaction) and queued for the committer ([`commit`]), which appends
//! whole batches in one transaction each. The committed entries go, in commit order, to the
//! fan-out task ([`fanout`]), which hands each to this node's sessions and to the other nodes
//! holding a recipient, and only then answers the sender: an acknowledged entry is durable and
//! on its way to every online device.
//!
//! System notices ([`notices`]) take the same path from the committer on, with no sender.
//!
//! Reading: [`pages`] (history and pull, each entry with its state folded by [`aggregate`]),
//! [`sync`] (which conversations moved), [`receipts`] (read state, receipts, typing).
//!
//! Every operation answers with domain values or a [`MessagingError`]; the gateway frames
//! them.

mod aggregate;
mod checks;
mod commit;
mod error;
mod fanout;
mod notices;
mod pages;
mod receipts;
pub mod settings;
mod sync;

use std::sync::Arc;

use im_common::settings::Live;
use im_proto::{
    ConversationId, GroupId, UserId,
    v1::{ConversationAction, ErrorCode, PermissionDecision, SendRequest, UserGroup},
};
use tokio::sync::mpsc;

pub use commit::PendingAck;
pub use error::{MessagingError, MessagingResult};
pub use fanout::push_frame;
pub use settings::Settings;
pub(crate) use sync::left;

use crate::{
    business::{Directory, Permissions},
    push::PushHook,
    rate::SendRate,
    router::Router,
    sessions::SessionHandle,
    store::{Appended, MessageStore, NewEntry, StoredEntry},
    wire::RawBody,
};

/// The longest client message id, in bytes.
const MAX_CLIENT_MSG_ID: usize = 64;

/// A conversation a request names: its id, and its canonical string, the store's key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Conversation {
    pub(crate) id: ConversationId,
    pub(crate) key: String,
}

impl Conversation {
    /// The conversation `id` names, if it is a valid, canonical id.
    pub(crate) fn parse(id: &str) -> MessagingResult<Self> {
        let id: ConversationId = id
            .parse()
            .map_err(|e: im_proto::IdError| MessagingError::Invalid(e.to_string()))?;
        Ok(Self::from(id))
    }

    /// The group, for a group conversation.
    pub(crate) fn group(&self) -> Option<&GroupId> {
        self.id.group_id()
    }
}

impl From<ConversationId> for Conversation {
    fn from(id: ConversationId) -> Self {
        Self {
            key: id.to_string(),
            id,
        }
    }
}

/// Where a reader's view of a conversation starts: a group member added to a group that shows
/// history from the join sees it from the notice of their add on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Visible {
    /// The first seq the reader may see (0 or 1: all of it).
    from_seq: u64,
    /// Just added, the seq of the notice of the add not known yet: nothing up to now is theirs.
    joining: bool,
}

impl Visible {
    /// The whole history (1:1 conversations, members from the start, groups that show it all).
    pub(crate) const ALL: Self = Self {
        from_seq: 1,
        joining: false,
    };

    /// As a READ decision in `conversation` gives it (a 1:1 is all visible).
    fn of_decision(conversation: &Conversation, decision: &PermissionDecision) -> Self {
        match conversation.group() {
            Some(_) => Self {
                from_seq: decision.visible_from_seq,
                joining: decision.joining,
            },
            None => Self::ALL,
        }
    }

    /// As the directory lists it for one of the user's groups.
    pub(crate) fn of_group(group: &UserGroup) -> Self {
        Self {
            from_seq: group.visible_from_seq,
            joining: group.joining,
        }
    }

    /// The first seq the reader may see in a conversation whose last seq is `last_seq`.
    pub(crate) fn floor(self, last_seq: u64) -> u64 {
        if self.joining {
            last_seq + 1
        } else {
            self.from_seq.max(1)
        }
    }
}

/// The messaging module of one core node.
pub struct Messaging {
    store: Arc<dyn MessageStore>,
    permissions: Arc<Permissions>,
    directory: Arc<Directory>,
    router: Arc<Router>,
    commits: mpsc::Sender<commit::Pending>,
    /// Stored entries to push again (a resend that a check made since refuses): they skip the
    /// committer and go to the fan-out's queue directly.
    refan: mpsc::Sender<commit::Committed>,
    sends: Arc<dyn SendRate>,
    settings: Live<Settings>,
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

/// What is told about committed entries besides their recipients.
pub struct AfterCommit {
    /// Entries for users with no connected device.
    pub push: Arc<dyn PushHook>,
    /// The media entries reference, for the business service's counts.
    pub media_refs: Arc<crate::media_refs::MediaRefs>,
}

impl Messaging {
    /// Starts the module: its committer and fan-out tasks.
    pub fn start(
        store: Arc<dyn MessageStore>,
        permissions: Arc<Permissions>,
        directory: Arc<Directory>,
        router: Arc<Router>,
        sends: Arc<dyn SendRate>,
        after_commit: AfterCommit,
        settings: Live<Settings>,
    ) -> (Arc<Self>, MessagingTasks) {
        let fixed = settings.get();
        let (commits, queue) = mpsc::channel(fixed.commit_queue);
        let (committed, to_fan_out) = mpsc::channel(fixed.commit_queue);
        let committer = tokio::spawn(commit::commit_batches(
            store.clone(),
            queue,
            committed.clone(),
            fixed.max_batch,
        ));
        let fanout = tokio::spawn(fanout::fan_out(
            fanout::FanOut {
                directory: directory.clone(),
                router: router.clone(),
                push: after_commit.push,
                media_refs: after_commit.media_refs,
            },
            to_fan_out,
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
        (messaging, MessagingTasks { committer, fanout })
    }

    /// Forgets the send rate of users idle long enough to be back at a full burst.
    pub fn prune_rate_limits(&self) {
        self.sends.prune();
    }

    /// Checks a send and queues it for the committer; `body` is the send's body as the client
    /// encoded it, which is what is checked and stored. Sends queued in order are appended in
    /// that order.
    pub async fn submit(
        &self,
        session: &SessionHandle,
        send: &SendRequest,
        body: Option<RawBody>,
    ) -> MessagingResult<PendingAck> {
        if send.client_msg_id.is_empty() || send.client_msg_id.len() > MAX_CLIENT_MSG_ID {
            return Err(MessagingError::Invalid(format!(
                "client_msg_id must be 1 to {MAX_CLIENT_MSG_ID} bytes"
            )));
        }
        let conversation = Conversation::parse(&send.conversation_id)?;
        let checked = self.checked(session, &conversation, send, body).await;
        match checked {
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
                .entry_by_client_id(&conversation.key, &session.user_id, &send.client_msg_id)
                .await?
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

    /// Hands a stored entry to the fan-out again; its ack (a duplicate) resolves once it is on
    /// its way.
    async fn push_again(
        &self,
        first: StoredEntry,
        session_id: Option<Arc<str>>,
    ) -> MessagingResult<PendingAck> {
        metrics::counter!("im_sends_total", "outcome" => "duplicate").increment(1);
        let (ack, done) = PendingAck::waiting(&first.conversation_id, &first.client_msg_id);
        self.refan
            .send(commit::Committed {
                appended: Appended::Duplicate(first),
                session_id,
                done,
            })
            .await
            .map_err(|_| MessagingError::ShuttingDown)?;
        Ok(ack)
    }

    /// Queues an entry (a checked send, or a notice written by the server).
    pub async fn enqueue(
        &self,
        entry: NewEntry,
        session_id: Option<Arc<str>>,
    ) -> MessagingResult<PendingAck> {
        let (ack, done) = PendingAck::waiting(&entry.conversation_id, &entry.client_msg_id);
        self.commits
            .send(commit::Pending {
                entry,
                session_id,
                done,
            })
            .await
            .map_err(|_| MessagingError::ShuttingDown)?;
        Ok(ack)
    }

    /// Whether the business service allows `user` to do `action` in `conversation`: its
    /// decision if it does.
    async fn permit(
        &self,
        user: &UserId,
        conversation: &Conversation,
        action: ConversationAction,
    ) -> MessagingResult<PermissionDecision> {
        let decision = self
            .permissions
            .check(user, &conversation.id, action)
            .await
            .map_err(MessagingError::bus("permission check"))?;
        if decision.allowed {
            return Ok(decision);
        }
        Err(MessagingError::Denied {
            code: ErrorCode::try_from(decision.code).unwrap_or(ErrorCode::Forbidden),
            reason: decision.reason,
        })
    }
}

/// A limit asked for, capped: 0 means the maximum.
fn cap(asked: u32, max: u32) -> u32 {
    if asked == 0 { max } else { asked.min(max) }
}
