//! The in-process bus of the embedded mode: subjects are matched exactly, queue groups take
//! turns, a full subscriber slows the publisher down rather than losing a message, and outboxes
//! are [`MemoryOutbox`]es shared by name, so the services of one process meet on them.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex, Weak,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use async_trait::async_trait;
use bytes::Bytes;
use tokio::sync::{mpsc, watch};

use super::{
    error::BusError,
    memory_outbox::{DEFAULT_CAPACITY, MemoryOutbox, Publisher},
    outbox::Outbox,
    transport::{Bus, BusMessage, LinkState, Subscription},
};

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
    outboxes: Mutex<HashMap<String, Arc<MemoryOutbox>>>,
    outbox_capacity: usize,
    /// Always up: nothing stands between the services of one process.
    link: watch::Sender<LinkState>,
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
        Self::with_outbox_capacity(capacity, DEFAULT_CAPACITY)
    }

    /// A bus whose subscriptions each buffer up to `capacity` messages and whose outboxes
    /// each hold up to `outbox_capacity` items.
    pub fn with_outbox_capacity(capacity: usize, outbox_capacity: usize) -> Self {
        Self {
            inner: Arc::new(LocalInner {
                subjects: Mutex::new(HashMap::new()),
                next_id: AtomicU64::new(1),
                capacity,
                outboxes: Mutex::new(HashMap::new()),
                outbox_capacity,
                link: watch::Sender::new(LinkState::UP),
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
        Subscription::from_receiver(receiver)
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

    async fn outbox(
        &self,
        name: &str,
        subject: &str,
        max_age: Duration,
    ) -> Result<Arc<dyn Outbox>, BusError> {
        let mut outboxes = self
            .inner
            .outboxes
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        let outbox = outboxes.entry(name.to_owned()).or_insert_with(|| {
            let publisher = OnSubject {
                bus: Arc::downgrade(&self.inner),
                subject: subject.to_owned(),
            };
            Arc::new(MemoryOutbox::new(
                name,
                max_age,
                self.inner.outbox_capacity,
                Some(Box::new(publisher)),
            ))
        });
        Ok(outbox.clone())
    }

    fn link(&self) -> watch::Receiver<LinkState> {
        self.inner.link.subscribe()
    }
}

/// Publishes what an outbox stores on its subject, while the bus lives.
struct OnSubject {
    bus: Weak<LocalInner>,
    subject: String,
}

impl Publisher for OnSubject {
    fn publish(
        &self,
        payload: Bytes,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + '_>> {
        Box::pin(async move {
            if let Some(inner) = self.bus.upgrade() {
                LocalBus { inner }
                    .deliver(&self.subject, None, payload)
                    .await;
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bus::typed::respond;

    crate::bus_suite!(async {
        Some((
            Arc::new(LocalBus::default()) as Arc<dyn Bus>,
            "im".to_owned(),
        ))
    });
    crate::outbox_suite!(async {
        let bus = LocalBus::default();
        Some(
            bus.outbox("TEST", "test.outbox", Duration::from_secs(60))
                .await
                .expect("an outbox"),
        )
    });

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
            .map(|m| std::iter::from_fn(|| m.try_next()).count())
            .collect();
        assert_eq!(
            counts,
            vec![10, 10, 10],
            "each message goes to one member, in turn"
        );
        let other = std::iter::from_fn(|| other_group.try_next()).count();
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
