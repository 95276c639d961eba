//! Read state, receipts and typing: the read cursor moves forward and the user's other devices
//! and the other members are told; who has read how far, paged; typing relayed, never stored.

use std::sync::Arc;

use base64::Engine;
use im_proto::{
    ConversationKind, UserId,
    v1::{
        ConversationAction, MarkRead, ReadCursor, ReadCursorsPage, ReadCursorsRequest, ReadReceipt,
        ReadState, TypingEvent, server_frame,
    },
};

use super::{Conversation, Messaging, MessagingError, MessagingResult, cap};
use crate::{
    sessions::{Outbound, SessionHandle},
    wire,
};

const TOKEN: base64::engine::GeneralPurpose = base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// A frame that is no entry: pushed once, never resent.
fn signal(body: server_frame::Body) -> Outbound {
    Outbound {
        frame: wire::frame(0, body),
        entry: None,
    }
}

impl Messaging {
    /// Moves the user's read cursor forward; tells the user's other devices and the other
    /// members.
    pub async fn mark_read(
        &self,
        session: &SessionHandle,
        request: &MarkRead,
    ) -> MessagingResult<ReadState> {
        let user = &session.user;
        let (conversation, visible) = self.readable(user, &request.conversation_id).await?;
        let key = &conversation.key;
        let floor = self.floor(key, visible).await?;
        let before = self
            .store
            .read_seqs(user.as_str(), std::slice::from_ref(key))
            .await?
            .first()
            .copied()
            .unwrap_or(0);
        let now = im_common::now_ms();
        let stored = self
            .store
            .advance_read(key, user.as_str(), request.seq, now)
            .await?;
        // What lies below the user's floor counts as read.
        let read_seq = stored.max(floor - 1);
        let unread_count = self
            .store
            .unread_count(key, user.as_str(), read_seq)
            .await?;
        let state = ReadState {
            conversation_id: key.clone(),
            read_seq,
            unread_count,
        };
        if stored > before {
            let mine = signal(server_frame::Body::ReadState(state.clone()));
            self.router
                .deliver(
                    Arc::new([user.to_string()]),
                    mine,
                    Some(&session.session_id),
                )
                .await;
            let receipt = signal(server_frame::Body::ReadReceipt(ReadReceipt {
                conversation_id: key.clone(),
                user_id: user.to_string(),
                read_seq,
                read_at_ms: now,
            }));
            let others = self.others(&conversation, user).await;
            self.router.deliver(others.into(), receipt, None).await;
        }
        Ok(state)
    }

    /// The members of a conversation other than `user`, for typing and receipts: none in
    /// groups larger than `receipts_max_group` (or when the list cannot be had).
    async fn others(&self, conversation: &Conversation, user: &UserId) -> Vec<String> {
        match conversation.id.kind() {
            ConversationKind::Direct(..) => conversation
                .id
                .peer_of(user)
                .filter(|peer| *peer != user)
                .map(|peer| vec![peer.to_string()])
                .unwrap_or_default(),
            ConversationKind::Group(group) => match self.directory.members(group).await {
                Ok(members) if members.len() <= self.settings.get().receipts_max_group => members
                    .iter()
                    .filter(|m| m.as_str() != user.as_str())
                    .cloned()
                    .collect(),
                _ => Vec::new(),
            },
        }
    }

    /// Who has read how far, paged by user id.
    pub async fn read_cursors(
        &self,
        user: &UserId,
        request: &ReadCursorsRequest,
    ) -> MessagingResult<ReadCursorsPage> {
        let (conversation, _) = self.readable(user, &request.conversation_id).await?;
        let limit = cap(request.limit, self.settings.get().max_sync_page);
        let after = if request.page_token.is_empty() {
            String::new()
        } else {
            let bad_token = || MessagingError::Invalid("bad page_token".into());
            let bytes = TOKEN.decode(&request.page_token).map_err(|_| bad_token())?;
            String::from_utf8(bytes).map_err(|_| bad_token())?
        };
        let rows = self
            .store
            .read_cursors(&conversation.key, &after, limit)
            .await?;
        let next_page_token = match rows.last() {
            Some((last, _)) if rows.len() == limit as usize => TOKEN.encode(last),
            _ => String::new(),
        };
        Ok(ReadCursorsPage {
            conversation_id: conversation.key,
            cursors: rows
                .into_iter()
                .map(|(user_id, read_seq)| ReadCursor { user_id, read_seq })
                .collect(),
            next_page_token,
        })
    }

    /// Relays a typing signal to the other members (dropped when not allowed).
    pub async fn typing(&self, session: &SessionHandle, conversation_id: &str, active: bool) {
        let user = &session.user;
        let Ok(conversation) = Conversation::parse(conversation_id) else {
            return;
        };
        if self
            .permit(user, &conversation, ConversationAction::Send)
            .await
            .is_err()
        {
            return;
        }
        let event = signal(server_frame::Body::Typing(TypingEvent {
            conversation_id: conversation.key.clone(),
            user_id: user.to_string(),
            active,
        }));
        let others = self.others(&conversation, user).await;
        self.router.deliver(others.into(), event, None).await;
    }
}
