//! History and pull: pages of a conversation's entries, backward from a seq or forward from
//! one, each entry with its state as of the page's last seq, cut to fit the client's frames.

use std::collections::HashSet;

use im_proto::{
    UserId,
    v1::{
        ConversationAction, HistoryQuery, HistoryRequest, HistoryResult, Message, MessagePage,
        PullRequest, history_query, history_result,
    },
};
use prost::Message as _;

use super::{
    Conversation, Messaging, MessagingError, MessagingResult, Visible, aggregate::Aggregations, cap,
};
use crate::{
    store::{EntryKind, StoredEntry},
    wire::Page,
};

/// Room a frame needs beyond its entries (ids, cursors, tags).
pub(super) const FRAME_OVERHEAD: usize = 1024;

/// Room one entry needs in a page beyond its bytes (its tag and length).
const ENTRY_OVERHEAD: usize = 6;

/// Which entries a page holds.
#[derive(Debug, Clone, Copy)]
enum Window {
    /// Below this seq (0: from the newest).
    Before(u64),
    /// Above this seq.
    After(u64),
}

impl Messaging {
    /// A backward page: entries below `before_seq`, newest last.
    pub async fn history(
        &self,
        user: &UserId,
        request: &HistoryRequest,
        max_frame_bytes: usize,
    ) -> MessagingResult<Page> {
        let window = Window::Before(request.before_seq);
        let (conversation, last_seq, floor, mut page) = self
            .window(user, &request.conversation_id, request.limit, window)
            .await?;
        let from = fit_backward(&page, max_frame_bytes);
        let has_more = page.get(from).is_some_and(|(seq, _)| *seq > floor);
        let messages = page.drain(from..).map(|(_, m)| m).collect();
        Ok(page_of(conversation, has_more, last_seq, floor, messages))
    }

    /// A forward page: entries above `after_seq`.
    pub async fn pull(
        &self,
        user: &UserId,
        request: &PullRequest,
        max_frame_bytes: usize,
    ) -> MessagingResult<Page> {
        let window = Window::After(request.after_seq);
        let (conversation, last_seq, floor, mut page) = self
            .window(user, &request.conversation_id, request.limit, window)
            .await?;
        page.truncate(fit_forward(&page, max_frame_bytes));
        let reached = page.last().map_or(request.after_seq, |(seq, _)| *seq);
        let messages = page.into_iter().map(|(_, m)| m).collect();
        Ok(page_of(
            conversation,
            reached < last_seq,
            last_seq,
            floor,
            messages,
        ))
    }

    /// A history or pull page asked over the bus for `query.user_id`, with the same checks
    /// as the user's own request on a connection.
    pub async fn answer_history(
        &self,
        query: HistoryQuery,
        max_frame_bytes: usize,
    ) -> HistoryResult {
        let refused = |error: MessagingError| HistoryResult {
            result: Some(history_result::Result::Error(error.to_error())),
        };
        let user = match UserId::new(&query.user_id) {
            Ok(user) => user,
            Err(e) => return refused(MessagingError::Invalid(e.to_string())),
        };
        let page = match &query.query {
            Some(history_query::Query::History(request)) => {
                self.history(&user, request, max_frame_bytes).await
            }
            Some(history_query::Query::Pull(request)) => {
                self.pull(&user, request, max_frame_bytes).await
            }
            None => Err(MessagingError::Invalid("a history query names none".into())),
        };
        match page {
            Ok(Page { mut page, messages }) => {
                page.messages = messages
                    .iter()
                    .filter_map(|bytes| Message::decode(bytes.as_slice()).ok())
                    .collect();
                HistoryResult {
                    result: Some(history_result::Result::Page(page)),
                }
            }
            Err(error) => refused(error),
        }
    }

    /// The entries of `window` that `user` may read, at most `asked` (capped), with their state
    /// as of the conversation's last seq; that seq, and the first one the user may see.
    async fn window(
        &self,
        user: &UserId,
        id: &str,
        asked: u32,
        window: Window,
    ) -> MessagingResult<(Conversation, u64, u64, Vec<(u64, Vec<u8>)>)> {
        let (conversation, visible) = self.readable(user, id).await?;
        let limit = cap(asked, self.settings.get().max_history_page);
        let last_seq = self.last_seq(&conversation.key).await?;
        let floor = visible.floor(last_seq);
        let key = &conversation.key;
        let mut entries = match window {
            Window::Before(seq) => self.store.entries_before(key, seq, limit).await?,
            // Nothing below the floor: the page starts at it.
            Window::After(seq) => {
                let after = seq.max(floor - 1);
                self.store.entries_after(key, after, limit).await?
            }
        };
        // Entries appended while this ran belong to the next page; those below the floor are
        // not the user's to see.
        entries.retain(|e| (floor..=last_seq).contains(&(e.seq as u64)));
        let page = self.page(user, key, entries, last_seq).await?;
        Ok((conversation, last_seq, floor, page))
    }

    /// The conversation `id` names, if `user` may read it, and where their view of it starts.
    pub(super) async fn readable(
        &self,
        user: &UserId,
        id: &str,
    ) -> MessagingResult<(Conversation, Visible)> {
        let conversation = Conversation::parse(id)?;
        let decision = self
            .permit(user, &conversation, ConversationAction::Read)
            .await?;
        let visible = Visible::of_decision(&conversation, &decision);
        Ok((conversation, visible))
    }

    /// The first seq of conversation `key` that a reader with `visible` may see.
    pub(super) async fn floor(&self, key: &str, visible: Visible) -> MessagingResult<u64> {
        let last_seq = if visible.joining {
            self.last_seq(key).await?
        } else {
            0
        };
        Ok(visible.floor(last_seq))
    }

    /// The conversation's highest seq (0 when it has no entry).
    pub(super) async fn last_seq(&self, key: &str) -> MessagingResult<u64> {
        let seqs = self.store.last_seqs(&[key.to_owned()]).await?;
        Ok(seqs.first().copied().unwrap_or(0))
    }

    /// Entries as encoded `Message`s with their state as of `last_seq`, ascending.
    pub(super) async fn page(
        &self,
        user: &UserId,
        key: &str,
        entries: Vec<StoredEntry>,
        last_seq: u64,
    ) -> MessagingResult<Vec<(u64, Vec<u8>)>> {
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
        let effects = self.store.effects(key, &targets, last_seq).await?;
        let aggregations = Aggregations::fold(user.as_str(), &effects);
        Ok(entries
            .iter()
            .map(|entry| (entry.seq as u64, aggregations.encode(entry)))
            .collect())
    }
}

/// A page's answer around its entries.
fn page_of(
    conversation: Conversation,
    has_more: bool,
    last_seq: u64,
    visible_from_seq: u64,
    messages: Vec<Vec<u8>>,
) -> Page {
    Page {
        page: MessagePage {
            conversation_id: conversation.key,
            messages: Vec::new(),
            has_more,
            last_seq,
            visible_from_seq,
        },
        messages,
    }
}

/// How many entries of a forward page fit a frame, from the oldest (one always goes).
fn fit_forward(page: &[(u64, Vec<u8>)], max_frame_bytes: usize) -> usize {
    let budget = max_frame_bytes.saturating_sub(FRAME_OVERHEAD);
    let mut used = 0;
    for (kept, (_, message)) in page.iter().enumerate() {
        used += message.len() + ENTRY_OVERHEAD;
        if used > budget && kept > 0 {
            return kept;
        }
    }
    page.len()
}

/// Where the entries of a backward page that fit a frame start, from the newest (one always
/// goes).
fn fit_backward(page: &[(u64, Vec<u8>)], max_frame_bytes: usize) -> usize {
    let budget = max_frame_bytes.saturating_sub(FRAME_OVERHEAD);
    let mut used = 0;
    let mut from = page.len();
    while from > 0 {
        used += page[from - 1].1.len() + ENTRY_OVERHEAD;
        if used > budget && from < page.len() {
            break;
        }
        from -= 1;
    }
    from
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_fit_the_frame_limit() {
        let page: Vec<(u64, Vec<u8>)> = (1..=10).map(|s| (s, vec![0; 300])).collect();
        assert_eq!(fit_forward(&page, 1024 + 1000), 3);
        let from = fit_backward(&page, 1024 + 1000);
        assert_eq!((page.len() - from, from), (3, 7), "the newest are kept");
        assert_eq!(fit_forward(&page, 10), 1, "one entry always goes");
    }
}
