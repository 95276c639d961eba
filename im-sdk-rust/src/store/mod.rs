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
#[cfg(test)]
mod suite;

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

#[cfg(test)]
mod tests {
    use super::*;

    suite::local_store_suite!(async { (MemoryStore::new(3), ()) });
}
