//! The bus of the distributed mode, on NATS (feature `nats`): the same [`Bus`] trait as the
//! in-process bus, so services run unchanged on either.

use std::{sync::Arc, time::Duration};

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use tokio::sync::{mpsc, watch};

use super::{
    error::BusError,
    jetstream::JetStreamOutbox,
    outbox::Outbox,
    transport::{Bus, BusMessage, LinkState, Subscription},
};

/// Messages a subscription holds before the forwarding task waits for the reader.
const SUBSCRIPTION_BUFFER: usize = 1024;

/// A bus on a NATS connection (which reconnects by itself).
#[derive(Debug, Clone)]
pub struct NatsBus {
    client: async_nats::Client,
    link: watch::Receiver<LinkState>,
}

impl NatsBus {
    /// Connects to the NATS server(s) at `url` (`nats://host:port`, comma-separated for several).
    pub async fn connect(url: &str) -> Result<Self, BusError> {
        let (state, link) = watch::channel(LinkState::UP);
        let state = Arc::new(state);
        let client = async_nats::ConnectOptions::new()
            .name("im")
            .event_callback(move |event| {
                let state = state.clone();
                async move {
                    match event {
                        async_nats::Event::Disconnected => {
                            tracing::warn!("bus connection lost: reconnecting");
                            state.send_modify(|link| link.connected = false);
                        }
                        async_nats::Event::Connected if !state.borrow().connected => {
                            tracing::info!("bus connection back");
                            state.send_modify(|link| {
                                link.connected = true;
                                link.reconnections += 1;
                            });
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
            .map_err(BusError::unavailable)?;
        Ok(Self { client, link })
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

fn closed(error: impl std::error::Error + Send + Sync + 'static) -> BusError {
    BusError::unavailable(error)
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
    ) -> Result<Arc<dyn Outbox>, BusError> {
        let outbox = JetStreamOutbox::open(self.client.clone(), name, subject, max_age).await?;
        Ok(Arc::new(outbox))
    }

    fn link(&self) -> watch::Receiver<LinkState> {
        self.link.clone()
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
    use super::*;

    fn nats_url() -> Option<String> {
        im_testkit::service_url("IM_TEST_NATS_URL", "the NATS bus suite")
    }

    async fn nats() -> Option<NatsBus> {
        Some(NatsBus::connect(&nats_url()?).await.expect("connects"))
    }

    // Subjects and streams of a run of their own: the server may be shared.
    crate::bus_suite!(async {
        let bus: Arc<dyn Bus> = Arc::new(nats().await?);
        Some((bus, format!("test{}", std::process::id())))
    });
    crate::outbox_suite!(async {
        let run = format!("t{}{}", std::process::id(), crate::now_ms());
        let outbox = nats()
            .await?
            .outbox(
                &format!("TEST_{run}"),
                &format!("test.outbox.{run}"),
                Duration::from_secs(60),
            )
            .await
            .expect("a stream");
        Some(outbox)
    });
}
