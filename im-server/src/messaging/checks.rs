//! What a send must pass before it is queued: its shape, its size, the sender's rate, the
//! business service's permission, and for an edit, recall, delete or reaction its target and
//! window. The body checked is decoded from the bytes that will be stored.

use im_common::now_ms;
use im_proto::{
    UserId,
    v1::{Content, ConversationAction, ErrorCode, SendRequest, content, message_body},
};

use super::{
    Conversation, Messaging, MessagingError, MessagingResult, Visible, aggregate::Aggregations,
};
use crate::{
    sessions::SessionHandle,
    store::{EntryKind, NewEntry, StoredEntry},
    wire::{self, RawBody, fields},
};

/// The longest reaction key, in bytes.
const MAX_REACTION_KEY: usize = 32;

impl Messaging {
    /// The entry a send asks for, if it passes every check.
    pub(super) async fn checked(
        &self,
        session: &SessionHandle,
        conversation: &Conversation,
        send: &SendRequest,
        raw: Option<RawBody>,
    ) -> MessagingResult<NewEntry> {
        let user = &session.user;
        let settings = self.settings.get();
        if send.body.is_none() {
            return Err(MessagingError::Invalid("send has no body".into()));
        }
        // Only a frame that is not valid protobuf lacks the body's bytes (and such a frame does
        // not decode in the first place).
        let Some(raw) = raw else {
            return Err(MessagingError::Invalid(
                "the send's body could not be read as sent".into(),
            ));
        };
        let body = raw
            .decode()
            .map_err(|e| MessagingError::Invalid(e.to_string()))?;
        let Some(kind) = body.kind else {
            return Err(
                if wire::has_unknown_fields(raw.as_bytes(), "im.v1.MessageBody") {
                    MessagingError::Unsupported("a body kind this server does not know")
                } else {
                    MessagingError::Invalid("the body has no kind".into())
                },
            );
        };
        let limit = settings.max_content_bytes;
        if raw.len() > limit as usize {
            return Err(MessagingError::ContentTooLarge {
                size: raw.len(),
                limit,
            });
        }
        let rate = settings.messages_per_second;
        if let Err(retry_after) = self.sends.check(&session.user_id, rate).await {
            metrics::counter!("im_rate_limited_total", "scope" => "user").increment(1);
            return Err(MessagingError::RateLimited { retry_after });
        }
        let (kind, target_seq) = match kind {
            message_body::Kind::Content(content) => {
                check_content(&content, raw.field(fields::BODY_CONTENT).as_deref())?;
                self.permit(user, conversation, ConversationAction::Send)
                    .await?;
                self.attachable(user, conversation, &content).await?;
                (EntryKind::Content, 0)
            }
            message_body::Kind::Edit(edit) => {
                let Some(content) = &edit.content else {
                    return Err(MessagingError::Invalid("an edit needs content".into()));
                };
                let raw_edit = raw.field(fields::BODY_EDIT);
                let raw_content = raw_edit
                    .as_deref()
                    .and_then(|e| wire::field(e, fields::EDIT_CONTENT));
                check_content(content, raw_content.as_deref())?;
                self.permit(user, conversation, ConversationAction::Send)
                    .await?;
                self.attachable(user, conversation, content).await?;
                let target = self.target(conversation, edit.target_seq).await?;
                if target.sender_user_id != user.as_str() {
                    return Err(MessagingError::Forbidden("only the sender edits a message"));
                }
                if now_ms() - target.server_time_ms > settings.edit_window_ms() {
                    return Err(MessagingError::WindowClosed("the edit window has passed"));
                }
                self.not_withdrawn(conversation, edit.target_seq).await?;
                (EntryKind::Edit, edit.target_seq)
            }
            message_body::Kind::Recall(recall) => {
                self.withdraw(user, conversation, recall.target_seq).await?;
                (EntryKind::Recall, recall.target_seq)
            }
            message_body::Kind::Delete(delete) => {
                self.withdraw(user, conversation, delete.target_seq).await?;
                (EntryKind::Delete, delete.target_seq)
            }
            message_body::Kind::Reaction(reaction) => {
                if reaction.key.is_empty() || reaction.key.len() > MAX_REACTION_KEY {
                    return Err(MessagingError::Invalid(format!(
                        "a reaction key is 1 to {MAX_REACTION_KEY} bytes"
                    )));
                }
                // Any member reacts, in channels and while muted too, to what they can see
                // (a target exists up to now, so a joining member sees none).
                let decision = self
                    .permit(user, conversation, ConversationAction::Read)
                    .await?;
                let visible = Visible::of_decision(conversation, &decision);
                if reaction.target_seq < visible.floor(reaction.target_seq) {
                    return Err(MessagingError::TargetNotFound {
                        conversation: conversation.key.clone(),
                        seq: reaction.target_seq,
                    });
                }
                self.target(conversation, reaction.target_seq).await?;
                self.not_withdrawn(conversation, reaction.target_seq)
                    .await?;
                if !reaction.remove {
                    self.check_reaction_keys(conversation, reaction.target_seq, &reaction.key)
                        .await?;
                }
                (EntryKind::Reaction, reaction.target_seq)
            }
            message_body::Kind::Notice(_) => {
                return Err(MessagingError::Forbidden(
                    "system notices are written by the server only",
                ));
            }
        };
        Ok(NewEntry {
            conversation_id: conversation.key.clone(),
            sender_user_id: user.to_string(),
            sender_device_id: session.device_id.to_string(),
            client_msg_id: send.client_msg_id.clone(),
            kind,
            target_seq,
            body: raw.as_bytes().to_vec(),
            server_time_ms: now_ms(),
        })
    }

    /// A message carries at most `max_reaction_keys` distinct keys, so its state always fits a
    /// frame.
    async fn check_reaction_keys(
        &self,
        conversation: &Conversation,
        target: u64,
        key: &str,
    ) -> MessagingResult<()> {
        let effects = self
            .store
            .effects(&conversation.key, &[target], u64::MAX >> 1)
            .await?;
        let aggregations = Aggregations::fold("", &effects);
        let keys = aggregations.reactions.get(&target);
        let present = keys.is_some_and(|k| k.get(key).is_some_and(|who| !who.is_empty()));
        let distinct = keys.map_or(0, |k| k.values().filter(|who| !who.is_empty()).count());
        let limit = self.settings.get().max_reaction_keys;
        if !present && distinct >= limit {
            return Err(MessagingError::TooManyReactions { limit });
        }
        Ok(())
    }

    /// Refuses an edit or reaction of an entry recalled or deleted: it would change what no one
    /// sees any more (and an edit would bring its text back to a client that shows edits).
    async fn not_withdrawn(&self, conversation: &Conversation, seq: u64) -> MessagingResult<()> {
        let effects = self
            .store
            .effects(&conversation.key, &[seq], u64::MAX >> 1)
            .await?;
        if Aggregations::fold("", &effects).withdrawn(seq) {
            return Err(MessagingError::Withdrawn { seq });
        }
        Ok(())
    }

    /// The content entry an edit, recall, delete or reaction acts on.
    async fn target(&self, conversation: &Conversation, seq: u64) -> MessagingResult<StoredEntry> {
        if seq == 0 {
            return Err(MessagingError::Invalid("target_seq is 0".into()));
        }
        let target = self
            .store
            .entry(&conversation.key, seq)
            .await?
            .ok_or_else(|| MessagingError::TargetNotFound {
                conversation: conversation.key.clone(),
                seq,
            })?;
        if target.kind != EntryKind::Content as i32 {
            return Err(MessagingError::Invalid(format!(
                "entry {seq} is not a message"
            )));
        }
        Ok(target)
    }

    /// May `user` recall or delete entry `seq`? Its sender within the window; managers always.
    async fn withdraw(
        &self,
        user: &UserId,
        conversation: &Conversation,
        seq: u64,
    ) -> MessagingResult<()> {
        self.permit(user, conversation, ConversationAction::Read)
            .await?;
        let target = self.target(conversation, seq).await?;
        let own = target.sender_user_id == user.as_str();
        if own && now_ms() - target.server_time_ms <= self.settings.get().recall_window_ms() {
            return Ok(());
        }
        let managed = conversation.group().is_some()
            && self
                .permit(user, conversation, ConversationAction::Manage)
                .await
                .is_ok();
        match (managed, own) {
            (true, _) => Ok(()),
            (false, true) => Err(MessagingError::WindowClosed("the recall window has passed")),
            (false, false) => Err(MessagingError::Forbidden(
                "only the sender or a group admin withdraws a message",
            )),
        }
    }
}

/// A content's kind must be known: absent is invalid, unknown (from a newer client) is
/// unsupported. `raw` is the content as sent.
impl Messaging {
    /// The media a content references (and its thumbnail) must be the sender's and ready:
    /// otherwise a message could hand anyone who reads it someone else's media.
    async fn attachable(
        &self,
        user: &UserId,
        conversation: &Conversation,
        content: &Content,
    ) -> MessagingResult<()> {
        let Some(content::Kind::Media(media)) = &content.kind else {
            return Ok(());
        };
        if media.media_id.is_empty() {
            return Err(MessagingError::Invalid(
                "a media reference needs its media_id".into(),
            ));
        }
        let ids: Vec<String> = [&media.media_id, &media.thumbnail_media_id]
            .into_iter()
            .filter(|id| !id.is_empty())
            .cloned()
            .collect();
        let decision = self
            .permissions
            .attach(user, &conversation.id, ids)
            .await
            .map_err(MessagingError::bus("media check"))?;
        if decision.allowed {
            return Ok(());
        }
        Err(MessagingError::Denied {
            code: ErrorCode::try_from(decision.code).unwrap_or(ErrorCode::Forbidden),
            reason: decision.reason,
        })
    }
}

fn check_content(content: &Content, raw: Option<&[u8]>) -> MessagingResult<()> {
    if content.kind.is_some() {
        return Ok(());
    }
    match raw {
        Some(raw) if wire::has_unknown_fields(raw, "im.v1.Content") => Err(
            MessagingError::Unsupported("a content kind this server does not know"),
        ),
        _ => Err(MessagingError::Invalid("the content has no kind".into())),
    }
}
