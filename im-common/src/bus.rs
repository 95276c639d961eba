//! The bus services and nodes talk over: publish/subscribe, queue groups and request/reply on
//! the subjects of [`im_proto::bus`].
//!
//! The trait has the shape of NATS (subjects, reply inboxes, queue groups), so the in-process
//! implementation of the embedded mode and the NATS one of the distributed mode are
//! interchangeable. Payloads are encoded protobuf.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use async_trait::async_trait;
use bytes::Bytes;
use tokio::sync::mpsc;

/// The bus the `[bus]` settings name: NATS when `nats_url` is set (feature `nats`), else a new
/// in-process bus.
pub async fn connect(settings: &crate::settings::BusSettings) -> Result<Arc<dyn Bus>, BusError> {
    if settings.nats_url.is_empty() {
        return Ok(Arc::new(LocalBus::default()));
    }
    #[cfg(feature = "nats")]
    {
        Ok(Arc::new(
            crate::nats::NatsBus::connect(&settings.nats_url).await?,
        ))
    }
    #[cfg(not(feature = "nats"))]
    Err(BusError::Unavailable(
        "bus.nats_url is set but this build has no NATS support (feature `nats`)".into(),
    ))
}

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

/// What can go wrong on the bus.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BusError {
    /// Nobody answered a request in time.
    #[error("no answer on {subject} within {timeout:?}")]
    Timeout {
        /// The request's subject.
        subject: String,
        /// How long we waited.
        timeout: Duration,
    },
    /// Nobody listens on the subject of a request.
    #[error("no responder on {0}")]
    NoResponders(String),
    /// The bus is gone (shut down, connection lost for good).
    #[error("bus closed")]
    Closed,
    /// The bus cannot be reached now (a lost connection; it reconnects by itself).
    #[error("bus unavailable: {0}")]
    Unavailable(String),
    /// An answer that does not decode.
    #[error("malformed answer: {0}")]
    Malformed(String),
}

/// A stream of messages on one subscription; dropping it unsubscribes.
#[derive(Debug)]
pub struct Subscription {
    receiver: mpsc::Receiver<BusMessage>,
}

impl Subscription {
    /// A subscription fed by `receiver` (for bus implementations).
    #[cfg_attr(not(feature = "nats"), allow(dead_code))]
    pub(crate) fn from_receiver(receiver: mpsc::Receiver<BusMessage>) -> Self {
        Self { receiver }
    }

    /// The next message, or `None` once the bus is gone.
    pub async fn next(&mut self) -> Option<BusMessage> {
        self.receiver.recv().await
    }
}

/// Publish/subscribe and request/reply.
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

    /// A durable queue named `name` of the items published on `subject` (kept `max_age`), for
    /// what must survive a crash. `None` on a bus without one (the in-process bus).
    async fn outbox(
        &self,
        _name: &str,
        _subject: &str,
        _max_age: Duration,
    ) -> Result<Option<Arc<dyn crate::outbox::Outbox>>, BusError> {
        Ok(None)
    }

    /// A count of the times the connection came back after it was lost, for those who must
    /// catch up on what was published meanwhile (events to them may have been dropped). `None`
    /// for a bus that cannot lose its connection (the in-process one).
    fn reconnections(&self) -> Option<tokio::sync::watch::Receiver<u64>> {
        None
    }
}

/// Answers a request received in `message`.
pub async fn respond(bus: &dyn Bus, message: &BusMessage, payload: Bytes) -> Result<(), BusError> {
    match &message.reply {
        Some(reply) => bus.publish(reply, payload).await,
        None => Ok(()),
    }
}

/// Encodes a protobuf payload.
pub fn encode(message: &impl prost::Message) -> Bytes {
    Bytes::from(message.encode_to_vec())
}

/// The subscribers of one subject, and whose turn it is in its queue groups.
#[derive(Default)]
struct Topic {
    subscribers: Vec<Subscriber>,
    turn: u64,
}

struct Subscriber {
    group: Option<String>,
    sender: mpsc::Sender<BusMessage>,
}

/// The in-process bus of the embedded mode: subjects are matched exactly, queue groups take
/// turns, and a full subscriber slows the publisher down rather than losing a message.
#[derive(Clone)]
pub struct LocalBus {
    inner: Arc<LocalInner>,
}

struct LocalInner {
    subjects: Mutex<HashMap<String, Topic>>,
    next_id: AtomicU64,
    capacity: usize,
}

impl std::fmt::Debug for LocalBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalBus")
            .field("capacity", &self.inner.capacity)
            .finish()
    }
}

impl Default for LocalBus {
    fn default() -> Self {
        Self::new(1024)
    }
}

impl LocalBus {
    /// A bus whose subscriptions each buffer up to `capacity` messages.
    pub fn new(capacity: usize) -> Self {
        Self {
            inner: Arc::new(LocalInner {
                subjects: Mutex::new(HashMap::new()),
                next_id: AtomicU64::new(1),
                capacity,
            }),
        }
    }

    fn add(&self, subject: &str, group: Option<&str>) -> Subscription {
        let (sender, receiver) = mpsc::channel(self.inner.capacity);
        let subscriber = Subscriber {
            group: group.map(str::to_owned),
            sender,
        };
        self.lock()
            .entry(subject.to_owned())
            .or_default()
            .subscribers
            .push(subscriber);
        Subscription { receiver }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Topic>> {
        // A panic while holding the lock cannot leave the map half-updated.
        self.inner
            .subjects
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    /// The senders a message on `subject` goes to: every plain subscriber and one member per
    /// queue group (rotating). Closed subscriptions are dropped on the way.
    fn targets(&self, subject: &str) -> Vec<mpsc::Sender<BusMessage>> {
        let mut subjects = self.lock();
        let Some(topic) = subjects.get_mut(subject) else {
            return Vec::new();
        };
        topic.subscribers.retain(|s| !s.sender.is_closed());
        if topic.subscribers.is_empty() {
            subjects.remove(subject);
            return Vec::new();
        }
        topic.turn = topic.turn.wrapping_add(1);
        let (subscribers, turn) = (&topic.subscribers, topic.turn);
        let mut targets = Vec::new();
        let mut groups_done: Vec<&str> = Vec::new();
        for subscriber in subscribers {
            match &subscriber.group {
                None => targets.push(subscriber.sender.clone()),
                Some(group) if !groups_done.contains(&group.as_str()) => {
                    let members: Vec<_> = subscribers
                        .iter()
                        .filter(|s| s.group.as_ref() == Some(group))
                        .collect();
                    let chosen = members[(turn % members.len() as u64) as usize];
                    targets.push(chosen.sender.clone());
                    groups_done.push(group);
                }
                Some(_) => {}
            }
        }
        targets
    }

    async fn deliver(&self, subject: &str, reply: Option<&str>, payload: Bytes) -> usize {
        let targets = self.targets(subject);
        let message = BusMessage {
            subject: subject.to_owned(),
            payload,
            reply: reply.map(str::to_owned),
        };
        let mut delivered = 0;
        for target in targets {
            if target.send(message.clone()).await.is_ok() {
                delivered += 1;
            }
        }
        delivered
    }
}

#[async_trait]
impl Bus for LocalBus {
    async fn publish(&self, subject: &str, payload: Bytes) -> Result<(), BusError> {
        self.deliver(subject, None, payload).await;
        Ok(())
    }

    async fn publish_with_reply(
        &self,
        subject: &str,
        reply: &str,
        payload: Bytes,
    ) -> Result<(), BusError> {
        self.deliver(subject, Some(reply), payload).await;
        Ok(())
    }

    async fn subscribe(&self, subject: &str) -> Result<Subscription, BusError> {
        Ok(self.add(subject, None))
    }

    async fn queue_subscribe(&self, subject: &str, group: &str) -> Result<Subscription, BusError> {
        Ok(self.add(subject, Some(group)))
    }

    async fn request(
        &self,
        subject: &str,
        payload: Bytes,
        timeout: Duration,
    ) -> Result<Bytes, BusError> {
        let inbox = format!(
            "_INBOX.{}",
            self.inner.next_id.fetch_add(1, Ordering::Relaxed)
        );
        let mut answers = self.add(&inbox, None);
        // The whole request, delivery to a busy responder included, is bounded by `timeout`.
        let asked = tokio::time::timeout(timeout, async {
            if self.deliver(subject, Some(&inbox), payload).await == 0 {
                return Err(BusError::NoResponders(subject.to_owned()));
            }
            answers
                .next()
                .await
                .map(|answer| answer.payload)
                .ok_or(BusError::Closed)
        })
        .await;
        self.lock().remove(&inbox);
        asked.unwrap_or_else(|_| {
            Err(BusError::Timeout {
                subject: subject.to_owned(),
                timeout,
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn every_subscriber_gets_a_published_message() {
        let bus = LocalBus::default();
        let mut a = bus.subscribe("im.member").await.unwrap();
        let mut b = bus.subscribe("im.member").await.unwrap();
        let mut other = bus.subscribe("im.group").await.unwrap();
        bus.publish("im.member", Bytes::from_static(b"x"))
            .await
            .unwrap();
        assert_eq!(a.next().await.unwrap().payload, "x");
        assert_eq!(b.next().await.unwrap().payload, "x");
        bus.publish("im.group", Bytes::from_static(b"y"))
            .await
            .unwrap();
        assert_eq!(
            other.next().await.unwrap().payload,
            "y",
            "subjects are separate"
        );
    }

    #[tokio::test]
    async fn a_queue_group_shares_the_load() {
        let bus = LocalBus::default();
        let mut members = Vec::new();
        for _ in 0..3 {
            members.push(bus.queue_subscribe("im.auth", "business").await.unwrap());
        }
        let mut other_group = bus.queue_subscribe("im.auth", "audit").await.unwrap();
        // Requests in between publish on inboxes: they must not skew the turns.
        let _ = bus
            .request("im.none", Bytes::new(), Duration::from_millis(1))
            .await;
        for _ in 0..30 {
            bus.publish("im.auth", Bytes::new()).await.unwrap();
            let _ = bus
                .request("im.none", Bytes::new(), Duration::from_millis(1))
                .await;
        }
        let counts: Vec<usize> = members
            .iter_mut()
            .map(|m| std::iter::from_fn(|| m.receiver.try_recv().ok()).count())
            .collect();
        assert_eq!(
            counts,
            vec![10, 10, 10],
            "each message goes to one member, in turn"
        );
        let other = std::iter::from_fn(|| other_group.receiver.try_recv().ok()).count();
        assert_eq!(other, 30, "every group gets every message");
    }

    #[tokio::test]
    async fn request_reply_and_its_failures() {
        let bus = LocalBus::default();
        let err = bus
            .request("im.auth", Bytes::new(), Duration::from_millis(50))
            .await;
        assert!(matches!(err, Err(BusError::NoResponders(_))));

        let mut responder = bus.queue_subscribe("im.auth", "business").await.unwrap();
        let server = bus.clone();
        tokio::spawn(async move {
            while let Some(message) = responder.next().await {
                let answer = [b"re:".as_slice(), &message.payload].concat();
                respond(&server, &message, Bytes::from(answer))
                    .await
                    .unwrap();
            }
        });
        let answer = bus
            .request("im.auth", Bytes::from_static(b"q"), Duration::from_secs(5))
            .await;
        assert_eq!(answer.unwrap(), "re:q");

        let _silent = bus.subscribe("im.history").await.unwrap();
        let err = bus
            .request("im.history", Bytes::new(), Duration::from_millis(20))
            .await;
        assert!(matches!(err, Err(BusError::Timeout { .. })));
        assert!(
            !bus.lock().keys().any(|k| k.starts_with("_INBOX.")),
            "request inboxes are removed"
        );
    }

    #[tokio::test]
    async fn the_local_bus_passes_the_bus_suite() {
        let bus: Arc<dyn Bus> = Arc::new(LocalBus::default());
        super::suite::fan_out(bus.as_ref(), "im").await;
        super::suite::queue_groups(bus.as_ref(), "im").await;
        super::suite::request_reply(bus.clone(), "im").await;
        super::suite::unsubscribe_on_drop(bus.as_ref(), "im").await;
    }

    #[tokio::test]
    async fn dropping_a_subscription_unsubscribes() {
        let bus = LocalBus::default();
        let sub = bus.subscribe("im.ban").await.unwrap();
        drop(sub);
        bus.publish("im.ban", Bytes::new()).await.unwrap();
        assert!(
            bus.lock().get("im.ban").is_none(),
            "the subject is forgotten"
        );
    }
}

/// What every [`Bus`] implementation must do; run by the in-process bus's tests and by the NATS
/// bus's against a real server.
#[cfg(test)]
pub(crate) mod suite {
    #![allow(clippy::unwrap_used)]

    use super::*;

    async fn next(subscription: &mut Subscription) -> BusMessage {
        tokio::time::timeout(Duration::from_secs(5), subscription.next())
            .await
            .expect("a message in time")
            .expect("the subscription is open")
    }

    /// Every subscriber of a subject gets each message; subjects are separate.
    pub(crate) async fn fan_out(bus: &dyn Bus, prefix: &str) {
        let (member, group) = (format!("{prefix}.member"), format!("{prefix}.group"));
        let mut a = bus.subscribe(&member).await.unwrap();
        let mut b = bus.subscribe(&member).await.unwrap();
        let mut other = bus.subscribe(&group).await.unwrap();
        bus.publish(&member, Bytes::from_static(b"x"))
            .await
            .unwrap();
        bus.publish(&group, Bytes::from_static(b"y")).await.unwrap();
        assert_eq!(next(&mut a).await.payload, "x");
        assert_eq!(next(&mut b).await.payload, "x");
        assert_eq!(next(&mut other).await.payload, "y", "subjects are separate");
    }

    /// A queue group gets each message once, shared among its members; another group gets
    /// every message too.
    pub(crate) async fn queue_groups(bus: &dyn Bus, prefix: &str) {
        let subject = format!("{prefix}.auth");
        let mut members = Vec::new();
        for _ in 0..3 {
            members.push(bus.queue_subscribe(&subject, "business").await.unwrap());
        }
        let mut other = bus.queue_subscribe(&subject, "audit").await.unwrap();
        for n in 0..30u8 {
            bus.publish(&subject, Bytes::from(vec![n])).await.unwrap();
        }
        let mut seen = Vec::new();
        for _ in 0..30 {
            seen.push(next(&mut other).await.payload[0]);
        }
        assert_eq!(
            seen,
            (0..30).collect::<Vec<u8>>(),
            "the other group gets all, in order"
        );
        let mut shared = Vec::new();
        while shared.len() < 30 {
            for member in &mut members {
                if let Ok(Some(m)) =
                    tokio::time::timeout(Duration::from_millis(20), member.next()).await
                {
                    shared.push(m.payload[0]);
                }
            }
        }
        shared.sort_unstable();
        assert_eq!(
            shared,
            (0..30).collect::<Vec<u8>>(),
            "each message to one member"
        );
    }

    /// Requests find their responder; without one, or without an answer, they fail fast.
    pub(crate) async fn request_reply(bus: Arc<dyn Bus>, prefix: &str) {
        let subject = format!("{prefix}.req");
        let err = bus
            .request(&subject, Bytes::new(), Duration::from_millis(500))
            .await;
        assert!(matches!(err, Err(BusError::NoResponders(_))), "{err:?}");
        let mut responder = bus.queue_subscribe(&subject, "business").await.unwrap();
        let server = bus.clone();
        tokio::spawn(async move {
            while let Some(message) = responder.next().await {
                let answer = [b"re:".as_slice(), &message.payload].concat();
                respond(server.as_ref(), &message, Bytes::from(answer))
                    .await
                    .unwrap();
            }
        });
        let answer = bus
            .request(&subject, Bytes::from_static(b"q"), Duration::from_secs(5))
            .await;
        assert_eq!(answer.unwrap(), "re:q");
        let silent_subject = format!("{prefix}.silent");
        let _silent = bus.subscribe(&silent_subject).await.unwrap();
        let err = bus
            .request(&silent_subject, Bytes::new(), Duration::from_millis(50))
            .await;
        assert!(matches!(err, Err(BusError::Timeout { .. })), "{err:?}");
    }

    /// A dropped subscription receives nothing more, and the others go on.
    pub(crate) async fn unsubscribe_on_drop(bus: &dyn Bus, prefix: &str) {
        let subject = format!("{prefix}.ban");
        let dropped = bus.subscribe(&subject).await.unwrap();
        let mut kept = bus.subscribe(&subject).await.unwrap();
        drop(dropped);
        tokio::time::sleep(Duration::from_millis(50)).await;
        bus.publish(&subject, Bytes::from_static(b"after"))
            .await
            .unwrap();
        assert_eq!(next(&mut kept).await.payload, "after");
    }
}
