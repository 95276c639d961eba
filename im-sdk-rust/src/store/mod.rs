//! The client's local state behind [`LocalStore`]: how far it holds each conversation, the
//! conversations, recent messages and the outbox of sends not yet acknowledged. With a
//! persistent store an app opens with its last state before the network answers, and sends
//! made before a restart are resent with their ids, so each still results in one message.

use std::{
    collections::{BTreeMap, HashMap, VecDeque},
    sync::Mutex,
};

use async_trait::async_trait;

#[cfg(feature = "sqlite")]
pub mod sqlite;

use crate::{
    error::Result,
    types::{Conversation, Message},
};

/// A send waiting for its acknowledgement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outgoing {
    /// Its idempotency key: resends carry the same one.
    pub client_msg_id: String,
    /// The conversation.
    pub conversation_id: String,
    /// The encoded `im.v1.MessageBody`.
    pub body: Vec<u8>,
}

/// What the client resumes from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// The highest contiguous seq held per conversation.
    pub held: HashMap<String, u64>,
    /// The read cursor known per conversation.
    pub read: HashMap<String, u64>,
    /// Sends not yet acknowledged, oldest first.
    pub outbox: Vec<Outgoing>,
}

/// Where the client keeps its state. Every method is atomic.
#[async_trait]
pub trait LocalStore: Send + Sync + 'static {
    /// Everything needed to resume.
    async fn load(&self) -> Result<Snapshot>;
    /// The conversation's entries up to `seq` are held (seqs only move forward).
    async fn set_held(&self, conversation_id: &str, seq: u64) -> Result<()>;
    /// A conversation's state (read cursor and unread count included).
    async fn put_conversation(&self, conversation: &Conversation) -> Result<()>;
    /// Every known conversation, by id.
    async fn conversations(&self) -> Result<Vec<Conversation>>;
    /// Keeps a message among the conversation's recent ones.
    async fn put_message(&self, message: &Message) -> Result<()>;
    /// Up to `limit` most recent messages of a conversation, oldest first.
    async fn recent(&self, conversation_id: &str, limit: usize) -> Result<Vec<Message>>;
    /// Adds a send to the outbox (before it is first sent).
    async fn push_outgoing(&self, outgoing: &Outgoing) -> Result<()>;
    /// Removes an acknowledged (or finally refused) send.
    async fn remove_outgoing(&self, client_msg_id: &str) -> Result<()>;
}

#[derive(Default)]
struct Memory {
    held: HashMap<String, u64>,
    conversations: BTreeMap<String, Conversation>,
    messages: HashMap<String, VecDeque<Message>>,
    outbox: Vec<Outgoing>,
}

/// The default store: in memory, gone when the process ends; keeps the `recent_limit` newest
/// messages per conversation.
pub struct MemoryStore {
    inner: Mutex<Memory>,
    recent_limit: usize,
}

impl std::fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryStore")
            .field("recent_limit", &self.recent_limit)
            .finish_non_exhaustive()
    }
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new(200)
    }
}

impl MemoryStore {
    /// A store keeping `recent_limit` messages per conversation.
    pub fn new(recent_limit: usize) -> Self {
        Self {
            inner: Mutex::default(),
            recent_limit,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Memory> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[async_trait]
impl LocalStore for MemoryStore {
    async fn load(&self) -> Result<Snapshot> {
        let inner = self.lock();
        Ok(Snapshot {
            held: inner.held.clone(),
            read: inner
                .conversations
                .values()
                .map(|c| (c.conversation_id.clone(), c.read_seq))
                .collect(),
            outbox: inner.outbox.clone(),
        })
    }

    async fn set_held(&self, conversation_id: &str, seq: u64) -> Result<()> {
        let mut inner = self.lock();
        let held = inner.held.entry(conversation_id.to_owned()).or_default();
        *held = (*held).max(seq);
        Ok(())
    }

    async fn put_conversation(&self, conversation: &Conversation) -> Result<()> {
        self.lock()
            .conversations
            .insert(conversation.conversation_id.clone(), conversation.clone());
        Ok(())
    }

    async fn conversations(&self) -> Result<Vec<Conversation>> {
        Ok(self.lock().conversations.values().cloned().collect())
    }

    async fn put_message(&self, message: &Message) -> Result<()> {
        let limit = self.recent_limit;
        let mut inner = self.lock();
        let recent = inner
            .messages
            .entry(message.conversation_id.clone())
            .or_default();
        if recent.iter().any(|m| m.seq == message.seq) {
            return Ok(());
        }
        let at = recent.partition_point(|m| m.seq < message.seq);
        recent.insert(at, message.clone());
        while recent.len() > limit {
            recent.pop_front();
        }
        Ok(())
    }

    async fn recent(&self, conversation_id: &str, limit: usize) -> Result<Vec<Message>> {
        let inner = self.lock();
        let recent = inner.messages.get(conversation_id);
        Ok(recent
            .map(|r| {
                r.iter()
                    .skip(r.len().saturating_sub(limit))
                    .cloned()
                    .collect()
            })
            .unwrap_or_default())
    }

    async fn push_outgoing(&self, outgoing: &Outgoing) -> Result<()> {
        let mut inner = self.lock();
        if !inner
            .outbox
            .iter()
            .any(|o| o.client_msg_id == outgoing.client_msg_id)
        {
            inner.outbox.push(outgoing.clone());
        }
        Ok(())
    }

    async fn remove_outgoing(&self, client_msg_id: &str) -> Result<()> {
        self.lock()
            .outbox
            .retain(|o| o.client_msg_id != client_msg_id);
        Ok(())
    }
}

/// What every [`LocalStore`] must do, for each backend's tests.
#[cfg(test)]
pub(crate) async fn behaves_as_a_store(store: &dyn LocalStore) {
    use crate::types::Body;
    let message = |seq: u64| Message {
        conversation_id: "d:a:b".into(),
        seq,
        server_msg_id: format!("s{seq}"),
        sender_user_id: "a".into(),
        sender_device_id: "d".into(),
        client_msg_id: format!("{seq}"),
        server_time_ms: 7,
        body: Body::Content(crate::types::Content::text(format!("#{seq}"))),
        state: None,
    };
    for seq in [2, 1, 4, 3, 5, 3] {
        store.put_message(&message(seq)).await.unwrap();
    }
    let recent = store.recent("d:a:b", 10).await.unwrap();
    let seqs: Vec<u64> = recent.iter().map(|m| m.seq).collect();
    assert_eq!(
        seqs,
        [3, 4, 5],
        "ordered, newest kept (3 per conversation), no repeats"
    );
    assert_eq!(recent[0], message(3), "a message comes back as it went in");
    store.set_held("d:a:b", 5).await.unwrap();
    store.set_held("d:a:b", 4).await.unwrap();
    let conversation = Conversation {
        conversation_id: "d:a:b".into(),
        kind: 1,
        last_seq: 5,
        read_seq: 2,
        unread_count: 3,
        active: true,
    };
    store.put_conversation(&conversation).await.unwrap();
    let out = |id: &str| Outgoing {
        client_msg_id: id.into(),
        conversation_id: "d:a:b".into(),
        body: vec![1, 2],
    };
    for id in ["x", "y", "x"] {
        store.push_outgoing(&out(id)).await.unwrap();
    }
    let snapshot = store.load().await.unwrap();
    assert_eq!(snapshot.held["d:a:b"], 5, "held never moves back");
    assert_eq!(snapshot.read["d:a:b"], 2);
    assert_eq!(
        snapshot.outbox,
        vec![out("x"), out("y")],
        "in order, once each"
    );
    assert_eq!(store.conversations().await.unwrap(), vec![conversation]);
    store.remove_outgoing("x").await.unwrap();
    assert_eq!(store.load().await.unwrap().outbox, vec![out("y")]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_memory_store_behaves_as_a_store() {
        behaves_as_a_store(&MemoryStore::new(3)).await;
    }

    #[cfg(feature = "sqlite")]
    #[tokio::test]
    async fn the_sqlite_store_behaves_as_a_store_and_keeps_it_across_opens() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("client.db");
        behaves_as_a_store(&sqlite::SqliteStore::open(&path, 3).unwrap()).await;
        let reopened = sqlite::SqliteStore::open(&path, 3).unwrap();
        let snapshot = reopened.load().await.unwrap();
        assert_eq!(snapshot.held["d:a:b"], 5);
        assert_eq!(snapshot.outbox.len(), 1);
        assert_eq!(reopened.recent("d:a:b", 10).await.unwrap().len(), 3);
    }
}
