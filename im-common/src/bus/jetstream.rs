//! Outboxes on JetStream streams (feature `nats`): what is put is on disk before `put`
//! returns, and durable pull consumers share it, each item until acknowledged.

use std::time::Duration;

use async_nats::jetstream::{self, AckKind, consumer::pull, stream};
use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use tokio::sync::mpsc;

use super::{
    error::BusError,
    outbox::{Outbox, OutboxItem, OutboxReader, Settle},
};

/// An outbox on a JetStream stream of one subject, kept on disk.
#[derive(Debug, Clone)]
pub struct JetStreamOutbox {
    context: jetstream::Context,
    stream: String,
    subject: String,
}

impl JetStreamOutbox {
    /// The stream `stream` capturing `subject` (created if missing; items older than `max_age`
    /// are dropped).
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
            .map_err(BusError::unavailable)?;
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
        self.0.ack().await.map_err(BusError::unavailable)
    }

    async fn retry(&self, delay: Duration) -> Result<(), BusError> {
        self.0
            .ack_with(AckKind::Nak(Some(delay)))
            .await
            .map_err(BusError::unavailable)
    }
}

#[async_trait]
impl Outbox for JetStreamOutbox {
    async fn put(&self, payload: Bytes) -> Result<(), BusError> {
        let ack = self
            .context
            .publish(self.subject.clone(), payload)
            .await
            .map_err(BusError::unavailable)?;
        // The server's acknowledgement: the item is stored.
        ack.await.map(drop).map_err(BusError::unavailable)
    }

    async fn put_once(&self, id: &str, payload: Bytes) -> Result<(), BusError> {
        let publish = jetstream::context::Publish::build()
            .payload(payload)
            .message_id(id);
        let ack = self
            .context
            .send_publish(self.subject.clone(), publish)
            .await
            .map_err(BusError::unavailable)?;
        // Stored now, or found stored under the same id (the ack says `duplicate`).
        ack.await.map(drop).map_err(BusError::unavailable)
    }

    async fn take(&self, consumer: &str, ack_wait: Duration) -> Result<OutboxReader, BusError> {
        let stream = self
            .context
            .get_stream(&self.stream)
            .await
            .map_err(BusError::unavailable)?;
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
            .map_err(BusError::unavailable)?;
        let mut messages = consumer.messages().await.map_err(BusError::unavailable)?;
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
