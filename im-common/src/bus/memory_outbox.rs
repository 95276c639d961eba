//! The in-process bus's outbox: the same contract as a JetStream stream (items in order, each
//! handed to one reader of a consumer until acknowledged, handed out again when not
//! acknowledged in time, `put_once` ids remembered for two minutes), kept in this process's
//! memory. It survives a consumer that stops or fails, not a crash of the process.
//!
//! Nothing may grow without bound: an item lives at most `max_age` and the outbox holds at most
//! `capacity` items (the oldest go first, counted in `im_outbox_dropped_total`): an outbox that
//! nobody consumes, such as the offline pushes of a process without a webhook, stays small.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    future::Future,
    pin::Pin,
    sync::{Arc, Mutex},
    time::Duration,
};

use async_trait::async_trait;
use bytes::Bytes;
use tokio::{
    sync::{Notify, mpsc},
    time::Instant,
};

use super::{
    error::BusError,
    outbox::{Outbox, OutboxItem, OutboxReader, Settle},
};

/// How long a `put_once` id is remembered (JetStream's default duplicate window).
pub const DUPLICATE_WINDOW: Duration = Duration::from_secs(120);

/// Items an in-memory outbox holds at most, unless configured otherwise.
pub const DEFAULT_CAPACITY: usize = 10_000;

/// Publishes what is put on the outbox's subject too, as a JetStream stream's subject does.
pub trait Publisher: Send + Sync + 'static {
    /// Publishes `payload` on the outbox's subject.
    fn publish(&self, payload: Bytes) -> Pin<Box<dyn Future<Output = ()> + Send + '_>>;
}

/// An outbox in this process's memory.
pub struct MemoryOutbox {
    inner: Arc<Inner>,
}

struct Inner {
    name: String,
    max_age: Duration,
    capacity: usize,
    publisher: Option<Box<dyn Publisher>>,
    state: Mutex<State>,
    /// Woken by every put and settle: readers look again.
    changed: Notify,
}

#[derive(Default)]
struct State {
    next_seq: u64,
    items: BTreeMap<u64, Stored>,
    /// `put_once` ids and when they were put.
    ids: HashMap<String, Instant>,
    consumers: HashMap<String, Consumer>,
}

struct Stored {
    payload: Bytes,
    at: Instant,
}

#[derive(Default)]
struct Consumer {
    /// Every item below this is acknowledged (where a scan for the next item starts).
    start: u64,
    /// Acknowledged items at or above `start`.
    acked: BTreeSet<u64>,
    /// Items handed out: not to be handed out again before this.
    due: HashMap<u64, Instant>,
    attempts: HashMap<u64, u64>,
}

impl std::fmt::Debug for MemoryOutbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryOutbox")
            .field("name", &self.inner.name)
            .field("items", &self.inner.lock().items.len())
            .finish_non_exhaustive()
    }
}

impl MemoryOutbox {
    /// An outbox named `name` keeping up to `capacity` items for at most `max_age` each;
    /// what is put is also handed to `publisher`, when given.
    pub fn new(
        name: &str,
        max_age: Duration,
        capacity: usize,
        publisher: Option<Box<dyn Publisher>>,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                name: name.to_owned(),
                max_age,
                capacity: capacity.max(1),
                publisher,
                state: Mutex::default(),
                changed: Notify::new(),
            }),
        }
    }
}

impl Inner {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Drops what is too old or beyond the capacity, and what every consumer has settled.
    fn trim(&self, state: &mut State, now: Instant) {
        while let Some((&seq, oldest)) = state.items.first_key_value() {
            let expired = now.saturating_duration_since(oldest.at) > self.max_age;
            let over = state.items.len() > self.capacity;
            if !expired && !over {
                break;
            }
            if over && !expired {
                tracing::warn!(outbox = %self.name, "outbox full: its oldest item was dropped");
                metrics::counter!("im_outbox_dropped_total", "outbox" => self.name.clone())
                    .increment(1);
            }
            state.items.remove(&seq);
        }
        let floor = state
            .items
            .first_key_value()
            .map_or(state.next_seq, |(s, _)| *s);
        for consumer in state.consumers.values_mut() {
            consumer.start = consumer.start.max(floor);
            consumer.acked = consumer.acked.split_off(&consumer.start);
            consumer.due.retain(|seq, _| *seq >= floor);
            consumer.attempts.retain(|seq, _| *seq >= floor);
        }
        state
            .ids
            .retain(|_, at| now.saturating_duration_since(*at) <= DUPLICATE_WINDOW);
    }

    fn store(&self, payload: Bytes) {
        let now = Instant::now();
        {
            let mut state = self.lock();
            state.next_seq += 1;
            let seq = state.next_seq;
            state.items.insert(seq, Stored { payload, at: now });
            self.trim(&mut state, now);
        }
        self.changed.notify_waiters();
    }

    /// The next item `consumer` may be handed now, marked as handed out; or when to look
    /// again (`None`: at the next change).
    fn next_for(
        &self,
        consumer: &str,
        ack_wait: Duration,
    ) -> Result<OutboxItemParts, Option<Instant>> {
        let now = Instant::now();
        let mut state = self.lock();
        self.trim(&mut state, now);
        let State {
            items, consumers, ..
        } = &mut *state;
        let consumer = consumers.entry(consumer.to_owned()).or_default();
        while consumer.acked.remove(&consumer.start) {
            consumer.start += 1;
        }
        let mut wake: Option<Instant> = None;
        for (&seq, stored) in items.range(consumer.start..) {
            if consumer.acked.contains(&seq) {
                continue;
            }
            match consumer.due.get(&seq) {
                Some(&due) if due > now => {
                    wake = Some(wake.map_or(due, |w| w.min(due)));
                    continue;
                }
                _ => {}
            }
            consumer.due.insert(seq, now + ack_wait);
            let attempt = consumer.attempts.entry(seq).or_insert(0);
            *attempt += 1;
            return Ok(OutboxItemParts {
                seq,
                payload: stored.payload.clone(),
                attempt: *attempt,
            });
        }
        Err(wake)
    }

    fn settle(&self, consumer: &str, seq: u64, retry_after: Option<Duration>) {
        {
            let mut state = self.lock();
            let consumer = state.consumers.entry(consumer.to_owned()).or_default();
            match retry_after {
                None => {
                    consumer.acked.insert(seq);
                    consumer.due.remove(&seq);
                }
                Some(delay) => {
                    consumer.due.insert(seq, Instant::now() + delay);
                }
            }
        }
        self.changed.notify_waiters();
    }
}

struct OutboxItemParts {
    seq: u64,
    payload: Bytes,
    attempt: u64,
}

struct MemorySettle {
    inner: Arc<Inner>,
    consumer: String,
    seq: u64,
}

#[async_trait]
impl Settle for MemorySettle {
    async fn ack(&self) -> Result<(), BusError> {
        self.inner.settle(&self.consumer, self.seq, None);
        Ok(())
    }

    async fn retry(&self, delay: Duration) -> Result<(), BusError> {
        self.inner.settle(&self.consumer, self.seq, Some(delay));
        Ok(())
    }
}

#[async_trait]
impl Outbox for MemoryOutbox {
    async fn put(&self, payload: Bytes) -> Result<(), BusError> {
        self.inner.store(payload.clone());
        if let Some(publisher) = &self.inner.publisher {
            publisher.publish(payload).await;
        }
        Ok(())
    }

    async fn put_once(&self, id: &str, payload: Bytes) -> Result<(), BusError> {
        let now = Instant::now();
        let seen = {
            let mut state = self.inner.lock();
            state
                .ids
                .retain(|_, at| now.saturating_duration_since(*at) <= DUPLICATE_WINDOW);
            state.ids.insert(id.to_owned(), now).is_some()
        };
        if seen {
            return Ok(());
        }
        self.put(payload).await
    }

    async fn take(&self, consumer: &str, ack_wait: Duration) -> Result<OutboxReader, BusError> {
        let (items, receiver) = mpsc::channel(1);
        let (inner, consumer) = (self.inner.clone(), consumer.to_owned());
        tokio::spawn(async move {
            loop {
                // Registered before looking, so a change made meanwhile is not missed.
                let changed = inner.changed.notified();
                tokio::pin!(changed);
                changed.as_mut().enable();
                // Room in the reader first: an item is handed out only when it can be taken.
                let Ok(permit) = items.reserve().await else {
                    return;
                };
                match inner.next_for(&consumer, ack_wait) {
                    Ok(parts) => {
                        let settle = MemorySettle {
                            inner: inner.clone(),
                            consumer: consumer.clone(),
                            seq: parts.seq,
                        };
                        permit.send(OutboxItem::new(
                            parts.payload,
                            parts.attempt,
                            Box::new(settle),
                        ));
                    }
                    Err(wake) => {
                        drop(permit);
                        let wake =
                            wake.unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
                        tokio::select! {
                            () = &mut changed => {}
                            () = tokio::time::sleep_until(wake) => {}
                            () = items.closed() => return,
                        }
                    }
                }
            }
        });
        Ok(OutboxReader::from_receiver(receiver))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn the_memory_outbox_keeps_its_capacity_and_its_age() {
        let outbox = MemoryOutbox::new("TEST", Duration::from_secs(60), 2, None);
        for n in 1..=3u8 {
            outbox.put(Bytes::from(vec![n])).await.expect("stored");
        }
        let mut reader = outbox
            .take("worker", Duration::from_secs(30))
            .await
            .expect("taken");
        let first = reader.next().await.expect("an item");
        assert_eq!(first.payload[..], [2], "the oldest went first");
        first.ack().await.expect("settled");
        let second = reader.next().await.expect("an item");
        assert_eq!(second.payload[..], [3]);
        second.ack().await.expect("settled");

        let short = MemoryOutbox::new("SHORT", Duration::from_millis(10), 10, None);
        short.put(Bytes::from_static(b"old")).await.expect("stored");
        tokio::time::sleep(Duration::from_millis(30)).await;
        let mut reader = short
            .take("worker", Duration::from_secs(30))
            .await
            .expect("taken");
        let quiet = tokio::time::timeout(Duration::from_millis(100), reader.next()).await;
        assert!(quiet.is_err(), "an item older than max_age is gone");
    }
}
