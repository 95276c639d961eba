//! Outboxes: queues for what must not be lost between services (pushes for offline users, the
//! audit trail). A `put` returns once the item is stored; consumers take items under a durable
//! name, acknowledge each, and get again what they did not acknowledge in time.
//!
//! On NATS an outbox is a JetStream stream (module `jetstream`, on disk); the in-process bus
//! keeps a bounded one in memory ([`MemoryOutbox`](super::memory_outbox::MemoryOutbox)).

use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use tokio::sync::mpsc;

use super::error::BusError;

/// The stream of offline pushes (`im.push`), and how long a push waits for its consumer.
pub const PUSH_STREAM: &str = "IM_PUSH";
/// A week.
pub const PUSH_KEPT: Duration = Duration::from_secs(7 * 24 * 3600);
/// The stream of media references (`im.mediaref`) from the core to the business service,
/// and how long a reference waits for its consumer.
pub const MEDIA_REFS_STREAM: &str = "IM_MEDIA_REFS";
/// A week.
pub const MEDIA_REFS_KEPT: Duration = Duration::from_secs(7 * 24 * 3600);
/// The stream of the audit trail (`im.audit`), and how long it is kept.
pub const AUDIT_STREAM: &str = "IM_AUDIT";
/// Ninety days.
pub const AUDIT_KEPT: Duration = Duration::from_secs(90 * 24 * 3600);

/// A durable queue.
#[async_trait]
pub trait Outbox: Send + Sync + 'static {
    /// Stores `payload`; `Ok` once it is durable.
    async fn put(&self, payload: Bytes) -> Result<(), BusError>;

    /// Stores `payload` unless an item put with the same `id` is stored already (within the
    /// outbox's duplicate window: two minutes on JetStream); `Ok` once one of them is durable.
    /// For what a retry or a resend may put again, so that it is handed out once.
    async fn put_once(&self, id: &str, payload: Bytes) -> Result<(), BusError>;

    /// Takes items as the durable consumer `consumer`: the processes that use one name share
    /// its items, each item going to one of them, in order, until acknowledged. An item not
    /// acknowledged within `ack_wait` comes again.
    async fn take(&self, consumer: &str, ack_wait: Duration) -> Result<OutboxReader, BusError>;
}

/// How an item is settled.
#[async_trait]
pub trait Settle: Send + Sync {
    /// Done with it: it never comes again.
    async fn ack(&self) -> Result<(), BusError>;
    /// Not done: it comes again after `delay`.
    async fn retry(&self, delay: Duration) -> Result<(), BusError>;
}

/// One item taken from an outbox.
pub struct OutboxItem {
    /// What was put.
    pub payload: Bytes,
    /// How many times it has been handed out, this time included.
    pub attempt: u64,
    settle: Box<dyn Settle>,
}

impl std::fmt::Debug for OutboxItem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OutboxItem")
            .field("bytes", &self.payload.len())
            .field("attempt", &self.attempt)
            .finish_non_exhaustive()
    }
}

impl OutboxItem {
    /// An item settled through `settle`.
    pub fn new(payload: Bytes, attempt: u64, settle: Box<dyn Settle>) -> Self {
        Self {
            payload,
            attempt,
            settle,
        }
    }

    /// Done with it.
    pub async fn ack(self) -> Result<(), BusError> {
        self.settle.ack().await
    }

    /// Not done: it comes again after `delay`.
    pub async fn retry(self, delay: Duration) -> Result<(), BusError> {
        self.settle.retry(delay).await
    }
}

/// Items as a consumer takes them.
#[derive(Debug)]
pub struct OutboxReader {
    items: mpsc::Receiver<OutboxItem>,
}

impl OutboxReader {
    /// A reader of the items sent into `items`.
    pub fn from_receiver(items: mpsc::Receiver<OutboxItem>) -> Self {
        Self { items }
    }

    /// The next item; `None` once the outbox is gone.
    pub async fn next(&mut self) -> Option<OutboxItem> {
        self.items.recv().await
    }
}
