//! Sync: which of the user's conversations moved past what the client holds (its last seq, or
//! its read cursor), paged, with no server state between pages: the page token carries the
//! first page's snapshot. And the state pushed to a user who joins a group.

use std::collections::{BTreeMap, HashMap};

use base64::Engine;
use im_proto::{
    ConversationId, GroupId, UserId,
    v1::{ConversationState, ConversationType, Message, SyncRequest, SyncResponse},
};
use prost::Message as _;

use super::{Messaging, MessagingError, MessagingResult, Visible, cap, pages::FRAME_OVERHEAD};

const TOKEN: base64::engine::GeneralPurpose = base64::engine::general_purpose::URL_SAFE_NO_PAD;

impl Messaging {
    /// Which of the user's conversations moved past what the client holds (paged).
    pub async fn sync(
        &self,
        user: &UserId,
        request: SyncRequest,
        max_frame_bytes: usize,
    ) -> MessagingResult<SyncResponse> {
        let bad_token = || MessagingError::Invalid("bad page_token".into());
        let limit = cap(request.limit, self.settings.get().max_sync_page) as usize;
        let (snapshot, after) = if request.page_token.is_empty() {
            (request, String::new())
        } else {
            let bytes = TOKEN.decode(&request.page_token).map_err(|_| bad_token())?;
            let snapshot = SyncRequest::decode(bytes.as_slice()).map_err(|_| bad_token())?;
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
        let mut mine: BTreeMap<String, (ConversationType, Visible)> = BTreeMap::new();
        for id in self.store.direct_conversations(user.as_str()).await? {
            mine.insert(id, (ConversationType::Direct, Visible::ALL));
        }
        let groups = self
            .directory
            .groups_of(user)
            .await
            .map_err(MessagingError::bus("the user's groups"))?;
        for group in groups {
            let kind = ConversationType::try_from(group.r#type).unwrap_or(ConversationType::Group);
            let visible = Visible::of_group(&group);
            if let Ok(group) = GroupId::new(group.group_id) {
                mine.insert(ConversationId::group(group).to_string(), (kind, visible));
            }
        }
        let ids: Vec<String> = mine
            .range(after.clone()..)
            .map(|(id, _)| id.clone())
            .filter(|id| *id > after)
            .collect();
        let last_seqs = self.store.last_seqs(&ids).await?;
        let read_seqs = self.store.read_seqs(user.as_str(), &ids).await?;

        // Held groups the user is no longer in (left, removed or dismissed).
        let gone: Vec<&str> = held
            .keys()
            .copied()
            .filter(|id| *id > after.as_str() && !mine.contains_key(*id))
            .filter(|id| {
                id.parse::<ConversationId>()
                    .is_ok_and(|c| c.group_id().is_some())
            })
            .collect();
        let mut changed: BTreeMap<String, Option<Seen>> = BTreeMap::new();
        for ((id, last), read) in ids.iter().zip(last_seqs).zip(read_seqs) {
            let (kind, visible) = mine[id];
            let floor = visible.floor(last);
            // What lies below the user's floor counts as read.
            let read = read.max(floor - 1);
            let moved = last > held.get(id.as_str()).copied().unwrap_or(0);
            // Read cursors are compared only where the client sent one: a client that never
            // sends `read` is told of new entries, not of every conversation it has read.
            let read_moved = read_sent.get(id.as_str()).is_some_and(|sent| read != *sent);
            if moved || read_moved {
                changed.insert(
                    id.clone(),
                    Some(Seen {
                        kind,
                        last,
                        read,
                        floor,
                    }),
                );
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
                Some(seen) => self.state(user, id, seen).await?,
                None => left(id),
            };
            used += state.encoded_len() + 8;
            if conversations.len() == limit || (used > budget && !conversations.is_empty()) {
                let last = conversations
                    .last()
                    .map(|c| c.conversation_id.clone())
                    .unwrap_or_default();
                next_page_token = TOKEN.encode(rest(&last).encode_to_vec());
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
        user: &UserId,
        key: &str,
        seen: &Seen,
    ) -> MessagingResult<ConversationState> {
        let Seen {
            kind,
            last: last_seq,
            read: read_seq,
            floor,
        } = *seen;
        let unread_count = self
            .store
            .unread_count(key, user.as_str(), read_seq)
            .await?;
        let last_message = match self.store.last_content(key).await? {
            Some(entry) if entry.seq as u64 >= floor => {
                let page = self.page(user, key, vec![entry], last_seq).await?;
                page.into_iter()
                    .next()
                    .and_then(|(_, bytes)| Message::decode(bytes.as_slice()).ok())
            }
            _ => None,
        };
        Ok(ConversationState {
            conversation_id: key.to_owned(),
            r#type: kind as i32,
            last_seq,
            read_seq,
            unread_count,
            visible_from_seq: floor,
            last_message,
            active: true,
        })
    }

    /// The state pushed when a user joins a conversation (a group they were added to).
    pub async fn joined(
        &self,
        user: &UserId,
        group: &GroupId,
    ) -> MessagingResult<ConversationState> {
        let key = ConversationId::group(group.clone()).to_string();
        let listed = self
            .directory
            .groups_of(user)
            .await
            .map_err(MessagingError::bus("the user's groups"))?
            .into_iter()
            .find(|g| g.group_id == group.as_str());
        let kind = listed
            .as_ref()
            .and_then(|g| ConversationType::try_from(g.r#type).ok())
            .unwrap_or(ConversationType::Group);
        let visible = listed.as_ref().map_or(Visible::ALL, Visible::of_group);
        let last = self.last_seq(&key).await?;
        let read = self
            .store
            .read_seqs(user.as_str(), std::slice::from_ref(&key))
            .await?;
        let floor = visible.floor(last);
        let seen = Seen {
            kind,
            last,
            read: read.first().copied().unwrap_or(0).max(floor - 1),
            floor,
        };
        self.state(user, &key, &seen).await
    }
}

/// A conversation as the user sees it: its kind, its last seq, how far they read (everything
/// below their floor counts as read), and their floor, the first seq they may see.
#[derive(Debug, Clone, Copy)]
struct Seen {
    kind: ConversationType,
    last: u64,
    read: u64,
    floor: u64,
}

/// A group the user is no longer in: its progress is none of their business (no seqs at all).
pub(crate) fn left(key: &str) -> ConversationState {
    ConversationState {
        conversation_id: key.to_owned(),
        r#type: ConversationType::Group as i32,
        active: false,
        ..Default::default()
    }
}
