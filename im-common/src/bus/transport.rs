//! The [`Bus`] trait: what every transport offers (the in-process bus of the embedded mode,
//! NATS in the distributed one), in the shape of NATS: subjects, reply inboxes, queue groups,
//! raw payloads. Services use it through the typed layer (`call`, `emit`, `serve`).

use std::{sync::Arc, time::Duration};

use async_trait::async_trait;
use bytes::Bytes;
use tokio::sync::{mpsc, watch};

use super::{error::BusError, outbox::Outbox};

/// One message received from the bus.
#[derive(Debug, Clone)]
pub struct BusMessage {
    /// The subject it was published on.
    pub subject: String,
    /// The encoded payload.
    pub payload: Bytes,
    /// Where an answer goes, for requests.
    pub reply: Option<String>,
}

/// A stream of messages on one subscription; dropping it unsubscribes.
#[derive(Debug)]
pub struct Subscription {
    receiver: mpsc::Receiver<BusMessage>,
}

impl Subscription {
    /// A subscription fed by `receiver` (for bus implementations).
    pub(crate) fn from_receiver(receiver: mpsc::Receiver<BusMessage>) -> Self {
        Self { receiver }
    }

    /// The next message, or `None` once the bus is gone.
    pub async fn next(&mut self) -> Option<BusMessage> {
        self.receiver.recv().await
    }

    /// The next message if one is waiting now.
    pub fn try_next(&mut self) -> Option<BusMessage> {
        self.receiver.try_recv().ok()
    }
}

/// The state of a process's link to the bus: events published while it is down may never
/// reach this process, so whoever acts on events must know.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinkState {
    /// The link is up.
    pub connected: bool,
    /// How many times it came back after it was lost.
    pub reconnections: u64,
}

impl LinkState {
    /// A link that is up and was never lost.
    pub const UP: Self = Self {
        connected: true,
        reconnections: 0,
    };
}

/// Publish/subscribe and request/reply on raw payloads.
#[async_trait]
pub trait Bus: Send + Sync + 'static {
    /// Sends a payload to every subscriber of `subject` (one per queue group).
    async fn publish(&self, subject: &str, payload: Bytes) -> Result<(), BusError>;

    /// Sends a payload with a reply subject.
    async fn publish_with_reply(
        &self,
        subject: &str,
        reply: &str,
        payload: Bytes,
    ) -> Result<(), BusError>;

    /// Every message on `subject`.
    async fn subscribe(&self, subject: &str) -> Result<Subscription, BusError>;

    /// Messages on `subject`, each given to one member of `group` only (for responders and
    /// workers that share a load).
    async fn queue_subscribe(&self, subject: &str, group: &str) -> Result<Subscription, BusError>;

    /// Sends a request and waits for the first answer.
    async fn request(
        &self,
        subject: &str,
        payload: Bytes,
        timeout: Duration,
    ) -> Result<Bytes, BusError>;

    /// Whether other processes may use this bus too (NATS), so that names on it can clash.
    fn shared(&self) -> bool {
        false
    }

    /// Returns once everything published so far has left this process (written to the
    /// connection), so a crash right after loses none of it. Nothing to do in process.
    async fn flush(&self) -> Result<(), BusError> {
        Ok(())
    }

    /// The durable queue named `name` of the items put on `subject` (kept `max_age`), for
    /// what must survive a crash: a JetStream stream on NATS, a bounded queue in memory in
    /// process (which survives nothing but the loss of a consumer).
    async fn outbox(
        &self,
        name: &str,
        subject: &str,
        max_age: Duration,
    ) -> Result<Arc<dyn Outbox>, BusError>;

    /// The link's state, for those who act on events (events published while it was down
    /// may have been dropped). The in-process bus is always up.
    fn link(&self) -> watch::Receiver<LinkState>;
}
