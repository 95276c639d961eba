//! Storage of conversations' entries and read cursors, behind [`MessageStore`] so that every
//! backend (SQLite in the embedded mode; PostgreSQL, MariaDB, MongoDB in the distributed one)
//! plugs in and runs the same suite ([`suite`]).
//!
//! The invariants live here, where entries are written:
//! - sequence numbers are allocated in the same transaction that stores the entry, so a
//!   conversation's seqs are gap-free and strictly increasing, and a higher seq is never
//!   visible before a lower one;
//! - one entry per (conversation, sender, client message id): a resend returns the first entry;
//! - a batch (group commit) is one transaction: all of it is durable when `append` returns.

#[cfg(feature = "mysql")]
pub mod mysql;
#[cfg(feature = "postgres")]
pub mod postgres;
pub(crate) mod schema;
mod sql;
pub mod sqlite;
#[cfg(any(test, feature = "testing"))]
pub mod suite;

use async_trait::async_trait;
use diesel::prelude::*;

pub use sqlite::SqliteMessageStore;

/// What an entry does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(i32)]
pub enum EntryKind {
    /// A message (text, media, custom).
    Content = 1,
    /// Replaces an earlier entry's content.
    Edit = 2,
    /// Withdraws an earlier entry.
    Recall = 3,
    /// Erases an earlier entry.
    Delete = 4,
    /// Adds or removes a reaction to an earlier entry.
    Reaction = 5,
    /// Written by the server (member joined, group renamed, ...).
    Notice = 6,
}

impl EntryKind {
    /// The kind stored as `value`, if known.
    pub fn from_i32(value: i32) -> Option<Self> {
        [
            Self::Content,
            Self::Edit,
            Self::Recall,
            Self::Delete,
            Self::Reaction,
            Self::Notice,
        ]
        .into_iter()
        .find(|k| *k as i32 == value)
    }
}

/// An entry to append.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewEntry {
    /// Canonical conversation id.
    pub conversation_id: String,
    /// Who sent it (the server's own id for notices).
    pub sender_user_id: String,
    /// From which device.
    pub sender_device_id: String,
    /// The sender's idempotency key; never empty.
    pub client_msg_id: String,
    /// What it does.
    pub kind: EntryKind,
    /// The entry it acts on, for edits, recalls, deletes and reactions; 0 otherwise.
    pub target_seq: u64,
    /// The encoded `im.v1.MessageBody`, exactly as received.
    pub body: Vec<u8>,
    /// When the server accepted it.
    pub server_time_ms: i64,
}

/// A stored entry.
#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable, Insertable)]
#[diesel(table_name = schema::entries)]
pub struct StoredEntry {
    /// Canonical conversation id.
    pub conversation_id: String,
    /// Its place in the conversation.
    pub seq: i64,
    /// The server's id for it.
    pub server_msg_id: String,
    /// Who sent it.
    pub sender_user_id: String,
    /// From which device.
    pub sender_device_id: String,
    /// The sender's idempotency key.
    pub client_msg_id: String,
    /// [`EntryKind`] as stored.
    pub kind: i32,
    /// The entry it acts on, or 0.
    pub target_seq: i64,
    /// The encoded `im.v1.MessageBody`.
    pub body: Vec<u8>,
    /// When the server accepted it.
    pub server_time_ms: i64,
}

/// The outcome of appending one entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Appended {
    /// Stored now, with its seq.
    New(StoredEntry),
    /// Its (conversation, sender, client message id) was stored before: the first entry.
    Duplicate(StoredEntry),
}

impl Appended {
    /// The stored entry, new or first.
    pub fn entry(&self) -> &StoredEntry {
        match self {
            Self::New(entry) | Self::Duplicate(entry) => entry,
        }
    }
}

/// Why a store operation failed. Nothing was written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The request is malformed (an empty client message id, a zero limit).
    #[error("invalid: {0}")]
    Invalid(String),
    /// The database failed.
    #[error("storage: {0}")]
    Backend(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl From<diesel::result::Error> for StoreError {
    fn from(error: diesel::result::Error) -> Self {
        Self::Backend(Box::new(error))
    }
}

/// The result of a store operation.
pub type StoreResult<T> = Result<T, StoreError>;

/// Conversations' entries and read cursors. Every method is atomic.
#[async_trait]
pub trait MessageStore: Send + Sync + 'static {
    /// Appends a batch in one transaction; each entry gets its conversation's next seq, in
    /// batch order, or is found to be a resend. The results are in batch order.
    async fn append(&self, batch: &[NewEntry]) -> StoreResult<Vec<Appended>>;

    /// Up to `limit` entries above `after_seq`, ascending.
    async fn entries_after(
        &self,
        conversation_id: &str,
        after_seq: u64,
        limit: u32,
    ) -> StoreResult<Vec<StoredEntry>>;

    /// Up to `limit` entries below `before_seq` (0: from the newest), ascending.
    async fn entries_before(
        &self,
        conversation_id: &str,
        before_seq: u64,
        limit: u32,
    ) -> StoreResult<Vec<StoredEntry>>;

    /// The entry at `seq`, if any.
    async fn entry(&self, conversation_id: &str, seq: u64) -> StoreResult<Option<StoredEntry>>;

    /// The entry a sender stored with `client_msg_id` in a conversation, if any.
    async fn entry_by_client_id(
        &self,
        conversation_id: &str,
        sender_user_id: &str,
        client_msg_id: &str,
    ) -> StoreResult<Option<StoredEntry>>;

    /// The highest seq of each conversation asked for (0 for one with no entries), in order.
    async fn last_seqs(&self, conversation_ids: &[String]) -> StoreResult<Vec<u64>>;

    /// Moves `user_id`'s read cursor forward to `seq` (never back, never past the last seq);
    /// returns the cursor after the move.
    async fn advance_read(
        &self,
        conversation_id: &str,
        user_id: &str,
        seq: u64,
        now_ms: i64,
    ) -> StoreResult<u64>;

    /// The 1:1 conversations `user_id` takes part in (those with at least one entry).
    async fn direct_conversations(&self, user_id: &str) -> StoreResult<Vec<String>>;

    /// `user_id`'s read cursor in each conversation asked for (0 where none), in order.
    async fn read_seqs(&self, user_id: &str, conversation_ids: &[String]) -> StoreResult<Vec<u64>>;

    /// Content entries above `after_seq` not sent by `user_id` and not recalled or deleted.
    async fn unread_count(
        &self,
        conversation_id: &str,
        user_id: &str,
        after_seq: u64,
    ) -> StoreResult<u64>;

    /// The newest content entry, if any.
    async fn last_content(&self, conversation_id: &str) -> StoreResult<Option<StoredEntry>>;

    /// The entries at or below `up_to` that act on one of `targets` (edits, recalls, deletes,
    /// reactions), ascending.
    async fn effects(
        &self,
        conversation_id: &str,
        targets: &[u64],
        up_to: u64,
    ) -> StoreResult<Vec<StoredEntry>>;

    /// Read cursors of a conversation in user id order, after `after_user_id`.
    async fn read_cursors(
        &self,
        conversation_id: &str,
        after_user_id: &str,
        limit: u32,
    ) -> StoreResult<Vec<(String, u64)>>;
}
