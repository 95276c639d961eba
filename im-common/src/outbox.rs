//! Outboxes: durable queues for what must not be lost between services (pushes for offline
//! users, the audit trail). A `put` returns once the item is stored; consumers take items under
//! a durable name, acknowledge each, and get again what they did not acknowledge in time.
//!
//! On NATS an outbox is a JetStream stream ([`Bus::outbox`](crate::bus::Bus::outbox)); the
//! in-process bus has none, and callers fall back to what the embedded mode does.

use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use tokio::sync::mpsc;

use crate::bus::BusError;

/// The stream of offline pushes (`im.push`), and how long a push waits for its consumer.
pub const PUSH_STREAM: &str = "IM_PUSH";
/// A week.
pub const PUSH_KEPT: Duration = Duration::from_secs(7 * 24 * 3600);
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

/// JetStream outboxes (feature `nats`).
#[cfg(feature = "nats")]
pub mod jetstream {
    use std::time::Duration;

    use async_nats::jetstream::{self, AckKind, consumer::pull, stream};
    use async_trait::async_trait;
    use bytes::Bytes;
    use futures::StreamExt;
    use tokio::sync::mpsc;

    use super::{Outbox, OutboxItem, OutboxReader, Settle};
    use crate::bus::BusError;

    fn unavailable(error: impl std::fmt::Display) -> BusError {
        BusError::Unavailable(error.to_string())
    }

    /// An outbox on a JetStream stream of one subject, kept on disk.
    #[derive(Debug, Clone)]
    pub struct JetStreamOutbox {
        context: jetstream::Context,
        stream: String,
        subject: String,
    }

    impl JetStreamOutbox {
        /// The stream `stream` capturing `subject` (created if missing; items older than
        /// `max_age` are dropped).
        pub async fn open(
            client: async_nats::Client,
            stream: &str,
            subject: &str,
            max_age: Duration,
        ) -> Result<Self, BusError> {
            let context = jetstream::new(client);
            context
                .get_or_create_stream(stream::Config {
                    name: stream.to_owned(),
                    subjects: vec![subject.to_owned()],
                    max_age,
                    storage: stream::StorageType::File,
                    ..Default::default()
                })
                .await
                .map_err(unavailable)?;
            Ok(Self {
                context,
                stream: stream.to_owned(),
                subject: subject.to_owned(),
            })
        }
    }

    struct Acker(jetstream::Message);

    #[async_trait]
    impl Settle for Acker {
        async fn ack(&self) -> Result<(), BusError> {
            self.0.ack().await.map_err(unavailable)
        }

        async fn retry(&self, delay: Duration) -> Result<(), BusError> {
            self.0
                .ack_with(AckKind::Nak(Some(delay)))
                .await
                .map_err(unavailable)
        }
    }

    #[async_trait]
    impl Outbox for JetStreamOutbox {
        async fn put(&self, payload: Bytes) -> Result<(), BusError> {
            let ack = self
                .context
                .publish(self.subject.clone(), payload)
                .await
                .map_err(unavailable)?;
            // The server's acknowledgement: the item is stored.
            ack.await.map(drop).map_err(unavailable)
        }

        async fn put_once(&self, id: &str, payload: Bytes) -> Result<(), BusError> {
            let publish = jetstream::context::Publish::build()
                .payload(payload)
                .message_id(id);
            let ack = self
                .context
                .send_publish(self.subject.clone(), publish)
                .await
                .map_err(unavailable)?;
            // Stored now, or found stored under the same id (the ack says `duplicate`).
            ack.await.map(drop).map_err(unavailable)
        }

        async fn take(&self, consumer: &str, ack_wait: Duration) -> Result<OutboxReader, BusError> {
            let stream = self
                .context
                .get_stream(&self.stream)
                .await
                .map_err(unavailable)?;
            let consumer: jetstream::consumer::Consumer<pull::Config> = stream
                .get_or_create_consumer(
                    consumer,
                    pull::Config {
                        durable_name: Some(consumer.to_owned()),
                        ack_wait,
                        ..Default::default()
                    },
                )
                .await
                .map_err(unavailable)?;
            let mut messages = consumer.messages().await.map_err(unavailable)?;
            let (items, receiver) = mpsc::channel(64);
            tokio::spawn(async move {
                while let Some(message) = messages.next().await {
                    let message = match message {
                        Ok(message) => message,
                        Err(error) => {
                            // The stream reconnects by itself; a heartbeat missed is not fatal.
                            tracing::warn!(%error, "outbox consumer");
                            continue;
                        }
                    };
                    let attempt = message.info().map(|i| i.delivered as u64).unwrap_or(1);
                    let payload = message.payload.clone();
                    let item = OutboxItem::new(payload, attempt, Box::new(Acker(message)));
                    if items.send(item).await.is_err() {
                        break;
                    }
                }
            });
            Ok(OutboxReader::from_receiver(receiver))
        }
    }
}

/// What every outbox must do; run against JetStream.
#[cfg(test)]
pub(crate) async fn behaves_as_outbox(outbox: std::sync::Arc<dyn Outbox>, consumer: &str) {
    let quick = Duration::from_secs(30);
    for n in 1..=3u8 {
        outbox.put(Bytes::from(vec![n])).await.expect("stored");
    }
    let mut reader = outbox.take(consumer, quick).await.expect("taken");
    let next = async |reader: &mut OutboxReader| {
        tokio::time::timeout(Duration::from_secs(10), reader.next())
            .await
            .expect("an item in time")
            .expect("the outbox lives")
    };
    let first = next(&mut reader).await;
    assert_eq!((first.payload.as_ref(), first.attempt), (&[1u8][..], 1));
    first.retry(Duration::ZERO).await.expect("settled");
    // A retried item comes again (after the ones already on their way, at the latest).
    let mut seen = Vec::new();
    while seen.len() < 3 {
        let item = next(&mut reader).await;
        seen.push((item.payload[0], item.attempt));
        item.ack().await.expect("settled");
    }
    seen.sort_unstable();
    assert_eq!(seen, [(1, 2), (2, 1), (3, 1)]);
    // Acknowledged items never come again; new ones do.
    let quiet = tokio::time::timeout(Duration::from_millis(500), reader.next()).await;
    assert!(quiet.is_err(), "nothing but new items");
    outbox.put(Bytes::from_static(&[4])).await.expect("stored");
    let item = next(&mut reader).await;
    assert_eq!((item.payload.as_ref(), item.attempt), (&[4u8][..], 1));
    item.ack().await.expect("settled");
    // An item put twice under one id is handed out once.
    for _ in 0..2 {
        outbox
            .put_once("five", Bytes::from_static(&[5]))
            .await
            .expect("stored");
    }
    outbox.put(Bytes::from_static(&[6])).await.expect("stored");
    let mut after = Vec::new();
    for _ in 0..2 {
        let item = next(&mut reader).await;
        after.push(item.payload[0]);
        item.ack().await.expect("settled");
    }
    assert_eq!(after, [5, 6], "the second put of 'five' stored nothing");
}
