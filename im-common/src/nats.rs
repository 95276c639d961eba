//! The bus of the distributed mode, on NATS (feature `nats`): the same [`Bus`] trait as the
//! in-process bus, so services run unchanged on either.

use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use tokio::sync::mpsc;

use crate::bus::{Bus, BusError, BusMessage, Subscription};

/// Messages a subscription holds before the forwarding task waits for the reader.
const SUBSCRIPTION_BUFFER: usize = 1024;

/// A bus on a NATS connection (which reconnects by itself).
#[derive(Debug, Clone)]
pub struct NatsBus {
    client: async_nats::Client,
    reconnections: tokio::sync::watch::Receiver<u64>,
}

impl NatsBus {
    /// Connects to the NATS server(s) at `url` (`nats://host:port`, comma-separated for several).
    pub async fn connect(url: &str) -> Result<Self, BusError> {
        let (count, reconnections) = tokio::sync::watch::channel(0u64);
        let lost = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let client = async_nats::ConnectOptions::new()
            .name("im")
            .event_callback(move |event| {
                let (count, lost) = (count.clone(), lost.clone());
                async move {
                    use std::sync::atomic::Ordering;
                    match event {
                        async_nats::Event::Disconnected => {
                            tracing::warn!("bus connection lost: reconnecting");
                            lost.store(true, Ordering::SeqCst);
                        }
                        async_nats::Event::Connected if lost.swap(false, Ordering::SeqCst) => {
                            tracing::info!("bus connection back");
                            count.send_modify(|n| *n += 1);
                        }
                        _ => {}
                    }
                }
            })
            // A link that broke silently is given up after the third ping left unanswered: 15
            // to 20 s at 5 s each (the default is a minute each), within the time a core node
            // keeps what it published for replay (`bus_replay_ms`, 60 s). The client pings
            // only when nothing else is sent, so a link that is busy when it breaks is noticed
            // when its writes fail instead.
            .ping_interval(Duration::from_secs(5))
            .retry_on_initial_connect()
            .connection_timeout(Duration::from_secs(5))
            .connect(url)
            .await
            .map_err(|e| BusError::Unavailable(e.to_string()))?;
        Ok(Self {
            client,
            reconnections,
        })
    }

    /// The underlying client (JetStream, flush, statistics).
    pub fn client(&self) -> &async_nats::Client {
        &self.client
    }

    fn forward(mut subscriber: async_nats::Subscriber) -> Subscription {
        let (sender, receiver) = mpsc::channel(SUBSCRIPTION_BUFFER);
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    // The reader dropped the subscription: unsubscribe.
                    () = sender.closed() => break,
                    message = subscriber.next() => {
                        let Some(message) = message else { break };
                        let message = BusMessage {
                            subject: message.subject.to_string(),
                            payload: message.payload,
                            reply: message.reply.map(|r| r.to_string()),
                        };
                        if sender.send(message).await.is_err() {
                            break;
                        }
                    }
                }
            }
            let _ = subscriber.unsubscribe().await;
        });
        Subscription::from_receiver(receiver)
    }
}

fn closed(error: impl std::fmt::Display) -> BusError {
    BusError::Unavailable(error.to_string())
}

#[async_trait]
impl Bus for NatsBus {
    async fn publish(&self, subject: &str, payload: Bytes) -> Result<(), BusError> {
        self.client
            .publish(subject.to_owned(), payload)
            .await
            .map_err(closed)
    }

    async fn publish_with_reply(
        &self,
        subject: &str,
        reply: &str,
        payload: Bytes,
    ) -> Result<(), BusError> {
        self.client
            .publish_with_reply(subject.to_owned(), reply.to_owned(), payload)
            .await
            .map_err(closed)
    }

    async fn subscribe(&self, subject: &str) -> Result<Subscription, BusError> {
        let subscriber = self
            .client
            .subscribe(subject.to_owned())
            .await
            .map_err(closed)?;
        // The subscription is registered on the server before the caller publishes anything.
        self.client.flush().await.map_err(closed)?;
        Ok(Self::forward(subscriber))
    }

    async fn queue_subscribe(&self, subject: &str, group: &str) -> Result<Subscription, BusError> {
        let subscriber = self
            .client
            .queue_subscribe(subject.to_owned(), group.to_owned())
            .await
            .map_err(closed)?;
        self.client.flush().await.map_err(closed)?;
        Ok(Self::forward(subscriber))
    }

    fn shared(&self) -> bool {
        true
    }

    async fn flush(&self) -> Result<(), BusError> {
        self.client.flush().await.map_err(closed)
    }

    async fn outbox(
        &self,
        name: &str,
        subject: &str,
        max_age: Duration,
    ) -> Result<Option<std::sync::Arc<dyn crate::outbox::Outbox>>, BusError> {
        let outbox = crate::outbox::jetstream::JetStreamOutbox::open(
            self.client.clone(),
            name,
            subject,
            max_age,
        )
        .await?;
        Ok(Some(std::sync::Arc::new(outbox)))
    }

    fn reconnections(&self) -> Option<tokio::sync::watch::Receiver<u64>> {
        Some(self.reconnections.clone())
    }

    async fn request(
        &self,
        subject: &str,
        payload: Bytes,
        timeout: Duration,
    ) -> Result<Bytes, BusError> {
        let request = async_nats::Request::new()
            .payload(payload)
            .timeout(Some(timeout));
        match self.client.send_request(subject.to_owned(), request).await {
            Ok(message) => Ok(message.payload),
            Err(error) => Err(match error.kind() {
                async_nats::RequestErrorKind::NoResponders => {
                    BusError::NoResponders(subject.to_owned())
                }
                async_nats::RequestErrorKind::TimedOut => BusError::Timeout {
                    subject: subject.to_owned(),
                    timeout,
                },
                async_nats::RequestErrorKind::Other => closed(error),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::bus::suite;

    fn nats_url() -> Option<String> {
        crate::testing::service_url("IM_TEST_NATS_URL", "the NATS bus suite")
    }

    #[tokio::test]
    async fn the_nats_bus_passes_the_bus_suite_on_a_real_server() {
        let Some(url) = nats_url() else { return };
        let bus: Arc<dyn Bus> = Arc::new(NatsBus::connect(&url).await.expect("connects"));
        // Subjects of a run of their own: the server may be shared.
        let prefix = format!("test{}", std::process::id());
        suite::fan_out(bus.as_ref(), &prefix).await;
        suite::queue_groups(bus.as_ref(), &prefix).await;
        suite::request_reply(bus.clone(), &prefix).await;
        suite::unsubscribe_on_drop(bus.as_ref(), &prefix).await;
    }

    #[tokio::test]
    async fn jetstream_outboxes_keep_items_until_acknowledged() {
        let Some(url) = nats_url() else { return };
        let bus = NatsBus::connect(&url).await.expect("connects");
        let run = format!("t{}{}", std::process::id(), crate::now_ms());
        let outbox = bus
            .outbox(
                &format!("TEST_{run}"),
                &format!("test.outbox.{run}"),
                Duration::from_secs(60),
            )
            .await
            .expect("a stream")
            .expect("NATS has outboxes");
        crate::outbox::behaves_as_outbox(outbox, "worker").await;
    }
}
