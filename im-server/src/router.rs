//! Delivery to every node: frames go to this node's sessions directly, and to the sessions of
//! other nodes over the bus, one [`DeliveryBatch`] per node on `im.deliver.<node>`.
//!
//! Which node holds which user comes from the presence store's routes (Redis in the
//! distributed mode, renewed with the presence leases). A store of one node has no routes and
//! everything stays local. When the routes cannot be read (Redis unreachable), the batch goes
//! to every node on the bare `im.deliver` and each node keeps what its sessions need: slower,
//! but nothing that would have been pushed is dropped.
//!
//! A batch written to a bus connection that then breaks may never reach the server, and the
//! recipients on healthy nodes would not know it. So the router keeps the entries it published
//! in the last [`Replay::window`] and publishes them again when the connection comes back,
//! marked `replayed`; receiving nodes queue a replayed frame only where a session's queue has
//! room (most of it arrived the first time: a burst of it must not end busy sessions as slow
//! consumers), and clients drop what they already have by seq and pull what is still
//! missing. Other frames (typing, read state) are not kept: replayed late, they would move a
//! client's view backwards.

use std::{
    collections::{HashMap, VecDeque},
    sync::{Arc, Mutex},
    time::Duration,
};

use bytes::Bytes;
use im_common::bus::{Bus, BusError};
use im_proto::{
    bus,
    v1::{Delivery, DeliveryBatch},
};
use prost::Message;
use tokio::time::Instant;

use crate::{
    outage::Outage,
    presence::PresenceStore,
    sessions::{Outbound, Sessions},
};

/// A batch published to one node is cut at about this size (NATS refuses payloads over 1 MiB
/// by default).
const MAX_BATCH_BYTES: usize = 256 * 1024;
/// Recipients one `Delivery` names at most, so a large group's frame is split across several
/// deliveries (and batches) rather than exceeding the bus's payload limit.
const MAX_DELIVERY_USERS: usize = 4096;
/// How long a route lookup or a publish may take before the router gives up on it: a stalled
/// Redis or bus must not stall local delivery.
const REMOTE_TIMEOUT: Duration = Duration::from_secs(1);

/// How much of what was published the router keeps to publish again after the bus connection
/// comes back (what went into a broken connection may be lost): table `[core.replay]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Replay {
    /// Batches published longer ago are not kept.
    #[serde(with = "humantime_serde")]
    pub window: Duration,
    /// At most this many bytes of batches are kept (the oldest go first); 0 keeps none.
    pub max_bytes: usize,
}

impl Default for Replay {
    fn default() -> Self {
        Self {
            window: Duration::from_secs(60),
            max_bytes: 32 * 1024 * 1024,
        }
    }
}

/// A batch kept for replay.
struct Published {
    at: Instant,
    subject: String,
    payload: Bytes,
    deliveries: u64,
}

/// The batches published within the replay window, oldest first.
#[derive(Default)]
struct Kept {
    batches: VecDeque<Published>,
    bytes: usize,
}

impl Kept {
    /// Forgets batches older than the window or beyond the byte limit.
    fn trim(&mut self, replay: Replay, now: Instant) {
        while let Some(oldest) = self.batches.front() {
            let expired = now.saturating_duration_since(oldest.at) > replay.window;
            if !expired && self.bytes <= replay.max_bytes {
                break;
            }
            if !expired {
                // The byte limit, not the window, decides: a broken link would lose these.
                metrics::counter!("im_replay_evicted_total").increment(oldest.deliveries);
            }
            self.bytes -= oldest.payload.len();
            self.batches.pop_front();
        }
    }
}

/// One frame for every session of some users, on whichever nodes they are.
#[derive(Debug, Clone)]
pub struct Routed {
    /// The recipients.
    pub users: Arc<[String]>,
    /// The frame.
    pub outbound: Outbound,
    /// The session that caused it, which does not get it again.
    pub exclude: Option<Arc<str>>,
}

/// Delivers frames to the sessions of this node and of the others.
pub struct Router {
    node_id: String,
    sessions: Arc<Sessions>,
    presence: Arc<dyn PresenceStore>,
    bus: Arc<dyn Bus>,
    replay: Replay,
    kept: Mutex<Kept>,
    /// Route lookups and publishes while Redis or the bus is down are logged once each.
    routes_outage: Outage,
    bus_outage: Outage,
}

impl std::fmt::Debug for Router {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Router")
            .field("node_id", &self.node_id)
            .finish_non_exhaustive()
    }
}

impl Router {
    /// The router of node `node_id`.
    pub fn new(
        node_id: &str,
        sessions: Arc<Sessions>,
        presence: Arc<dyn PresenceStore>,
        bus: Arc<dyn Bus>,
        replay: Replay,
    ) -> Self {
        Self {
            node_id: node_id.to_owned(),
            sessions,
            presence,
            bus,
            replay,
            kept: Mutex::default(),
            routes_outage: Outage::new("routes"),
            bus_outage: Outage::new("bus"),
        }
    }

    /// Delivers one frame; see [`Router::deliver_all`].
    pub async fn deliver(&self, users: Arc<[String]>, outbound: Outbound, exclude: Option<&str>) {
        let item = Routed {
            users,
            outbound,
            exclude: exclude.map(Into::into),
        };
        self.deliver_all(std::slice::from_ref(&item), false).await;
    }

    /// Delivers each item to every session of its users, here and on the other nodes, in
    /// order. With `want_offline`, returns per item the users who have no session anywhere
    /// (for offline pushes; when the routes cannot be read, only users known offline
    /// everywhere are listed: none); without, empty lists, and nobody is collected.
    pub async fn deliver_all(&self, items: &[Routed], want_offline: bool) -> Vec<Vec<String>> {
        if items.iter().all(|item| item.users.is_empty()) {
            return vec![Vec::new(); items.len()];
        }
        let mut offline: Vec<Vec<String>> = items
            .iter()
            .map(|item| {
                let mut missing = Vec::new();
                self.sessions.deliver(
                    item.users.iter().map(String::as_str),
                    item.outbound.clone(),
                    item.exclude.as_deref(),
                    want_offline.then_some(&mut missing),
                );
                missing
            })
            .collect();
        if !self.presence.shared() {
            // One node: everyone online is here.
            return offline;
        }
        let mut users: Vec<String> = items.iter().flat_map(|i| i.users.iter().cloned()).collect();
        users.sort_unstable();
        users.dedup();
        let looked_up = tokio::time::timeout(
            REMOTE_TIMEOUT,
            self.presence.routes(&users, im_common::now_ms()),
        )
        .await
        .unwrap_or_else(|_| Err("timed out".into()));
        let routes = match looked_up {
            Ok(routes) => {
                self.routes_outage.succeeded();
                routes
            }
            Err(error) => {
                self.routes_outage
                    .failed("route lookup, delivering to every node", &error);
                metrics::counter!("im_deliveries_broadcast_total").increment(items.len() as u64);
                let deliveries: Vec<Delivery> = items
                    .iter()
                    .flat_map(|item| deliveries(item, item.users.to_vec()))
                    .collect();
                if self.publish(bus::DELIVER, deliveries).await {
                    self.flush().await;
                }
                offline.iter_mut().for_each(Vec::clear);
                return offline;
            }
        };
        let mut per_node: HashMap<String, Vec<Delivery>> = HashMap::new();
        for (item, missing) in items.iter().zip(&mut offline) {
            let mut by_node: HashMap<&str, Vec<String>> = HashMap::new();
            for user in item.users.iter() {
                for node in routes.get(user).into_iter().flatten() {
                    if *node != self.node_id {
                        by_node.entry(node).or_default().push(user.clone());
                    }
                }
            }
            missing.retain(|user| !routes.contains_key(user));
            for (node, users) in by_node {
                per_node
                    .entry(node.to_owned())
                    .or_default()
                    .extend(deliveries(item, users));
            }
        }
        let mut entries_published = false;
        for (node, deliveries) in per_node {
            entries_published |= self.publish(&bus::deliver_subject(&node), deliveries).await;
        }
        if entries_published {
            self.flush().await;
        }
        offline
    }

    /// Publishes deliveries in batches of at most about [`MAX_BATCH_BYTES`], those of entries
    /// apart from the others, which are not kept for replay. Returns whether it published
    /// entries (which the ack then waits on).
    async fn publish(&self, subject: &str, deliveries: Vec<Delivery>) -> bool {
        let (entries, others): (Vec<Delivery>, Vec<Delivery>) = deliveries
            .into_iter()
            .partition(|d| !d.conversation_id.is_empty());
        let published_entries = !entries.is_empty();
        for (deliveries, keep) in [(entries, true), (others, false)] {
            let mut batch = self.batch();
            let mut size = 0;
            for delivery in deliveries {
                size += delivery.encoded_len();
                batch.deliveries.push(delivery);
                if size >= MAX_BATCH_BYTES {
                    let full = std::mem::replace(&mut batch, self.batch());
                    self.send(subject, full, keep).await;
                    size = 0;
                }
            }
            if !batch.deliveries.is_empty() {
                self.send(subject, batch, keep).await;
            }
        }
        published_entries
    }

    fn batch(&self) -> DeliveryBatch {
        DeliveryBatch {
            source_node_id: self.node_id.clone(),
            deliveries: Vec::new(),
            replayed: false,
        }
    }

    async fn send(&self, subject: &str, batch: DeliveryBatch, keep: bool) {
        let published = Published {
            at: Instant::now(),
            subject: subject.to_owned(),
            payload: Bytes::from(batch.encode_to_vec()),
            deliveries: batch.deliveries.len() as u64,
        };
        self.publish_batch(published, keep).await;
    }

    /// Publishes a batch and, with `keep`, keeps it for replay (a failed publish too: it is
    /// the first to need one).
    async fn publish_batch(&self, published: Published, keep: bool) {
        let (subject, payload, count) = (
            published.subject.clone(),
            published.payload.clone(),
            published.deliveries,
        );
        if keep && self.replay.max_bytes > 0 {
            let mut kept = self.kept.lock().unwrap_or_else(|e| e.into_inner());
            kept.bytes += published.payload.len();
            kept.batches.push_back(published);
            kept.trim(self.replay, Instant::now());
        }
        // While the link is down, a publish would wait in the bus client's buffer and arrive,
        // once the link is back, as fresh deliveries beside the replay: a burst that could end
        // busy sessions as slow consumers. Kept, the replay publishes it then, marked.
        if keep && self.replay.max_bytes > 0 && !self.bus.link().borrow().connected {
            self.bus_outage.failed(
                "deliveries kept for the replay",
                &BusError::unavailable("the bus link is down"),
            );
            metrics::counter!("im_deliveries_unforwarded_total").increment(count);
            return;
        }
        let published = tokio::time::timeout(REMOTE_TIMEOUT, self.bus.publish(&subject, payload))
            .await
            .unwrap_or_else(|_| Err(BusError::unavailable("timed out")));
        match published {
            Ok(()) => {
                self.bus_outage.succeeded();
                metrics::counter!("im_deliveries_forwarded_total").increment(count);
            }
            Err(error) => {
                // The recipients see the entries at their next gap or sync.
                self.bus_outage.failed("deliveries not forwarded", &error);
                metrics::counter!("im_deliveries_unforwarded_total").increment(count);
            }
        }
    }

    /// Waits (bounded) until the batches published so far have left this process, so a push
    /// acknowledged to its sender is not lost with a node that dies right after.
    async fn flush(&self) {
        let flushed = tokio::time::timeout(REMOTE_TIMEOUT, self.bus.flush())
            .await
            .unwrap_or_else(|_| Err(BusError::unavailable("timed out")));
        if let Err(error) = flushed {
            // Kept for replay: published again when the connection is back.
            self.bus_outage
                .failed("deliveries not flushed to the bus", &error);
        }
    }

    /// Publishes again, in their order, the batches of the replay window: called when the bus
    /// connection comes back, since what was written to the broken one may be lost. Returns
    /// how many batches were published again.
    pub async fn replay(&self) -> usize {
        let batches = {
            let mut kept = self.kept.lock().unwrap_or_else(|e| e.into_inner());
            kept.trim(self.replay, Instant::now());
            kept.bytes = 0;
            std::mem::take(&mut kept.batches)
        };
        let count = batches.len();
        for mut published in batches {
            // Marked, so receivers queue it only where there is room.
            if let Ok(mut batch) = DeliveryBatch::decode(published.payload.clone())
                && !batch.replayed
            {
                batch.replayed = true;
                published.payload = Bytes::from(batch.encode_to_vec());
            }
            // Kept again, until the window of its first publish ends: a link that breaks
            // during the replay gets it once more, a link that keeps breaking not forever.
            metrics::counter!("im_deliveries_replayed_total").increment(published.deliveries);
            self.publish_batch(published, true).await;
        }
        self.flush().await;
        count
    }

    /// Subscribes to what other nodes deliver to this one (its own subject and the
    /// broadcast); the returned future hands every batch to this node's sessions until the
    /// bus is gone.
    pub async fn receive_deliveries(
        self: Arc<Self>,
    ) -> Result<impl std::future::Future<Output = ()> + Send + 'static, BusError> {
        let mut own = self
            .bus
            .events_on::<DeliveryBatch>(&bus::deliver_subject(&self.node_id))
            .await?;
        let mut everyone = self.bus.events::<DeliveryBatch>().await?;
        Ok(async move {
            loop {
                let batch = tokio::select! {
                    Some(batch) = own.next() => batch,
                    Some(batch) = everyone.next() => batch,
                    else => break,
                };
                self.receive(batch);
            }
        })
    }

    /// Hands a batch from another node to this node's sessions.
    pub fn receive(&self, batch: DeliveryBatch) {
        if batch.source_node_id == self.node_id {
            // This node's own broadcast: delivered locally already.
            return;
        }
        let replayed = batch.replayed;
        for delivery in batch.deliveries {
            let entry = (!delivery.conversation_id.is_empty())
                .then(|| (Arc::from(delivery.conversation_id.as_str()), delivery.seq));
            let outbound = Outbound {
                frame: Bytes::from(delivery.frame),
                entry,
            };
            let exclude =
                (!delivery.exclude_session_id.is_empty()).then_some(&*delivery.exclude_session_id);
            let users = delivery.user_ids.iter().map(String::as_str);
            if replayed {
                self.sessions.deliver_if_room(users, outbound, exclude);
            } else {
                self.sessions.deliver(users, outbound, exclude, None);
            }
        }
    }
}

/// The deliveries of `item` to `users`, at most [`MAX_DELIVERY_USERS`] users each.
fn deliveries(item: &Routed, users: Vec<String>) -> Vec<Delivery> {
    let (conversation_id, seq) = match &item.outbound.entry {
        Some((conversation, seq)) => (conversation.to_string(), *seq),
        None => (String::new(), 0),
    };
    users
        .chunks(MAX_DELIVERY_USERS)
        .map(|users| Delivery {
            user_ids: users.to_vec(),
            exclude_session_id: item.exclude.as_deref().unwrap_or_default().to_owned(),
            frame: item.outbound.frame.to_vec(),
            conversation_id: conversation_id.clone(),
            seq,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use im_common::bus::LocalBus;

    use super::*;
    use crate::presence::MemoryPresence;

    fn router(bus: Arc<dyn Bus>, replay: Replay) -> Router {
        Router::new(
            "here",
            Arc::new(Sessions::new(4)),
            Arc::new(MemoryPresence::default()),
            bus,
            replay,
        )
    }

    /// A delivery of entry `seq` to `user`.
    fn entry(user: &str, seq: u64) -> Delivery {
        Delivery {
            user_ids: vec![user.into()],
            frame: vec![1, 2, 3],
            conversation_id: "d:ann:bob".into(),
            seq,
            ..Delivery::default()
        }
    }

    /// A delivery of a frame that is no entry (typing, read state).
    fn typing(user: &str) -> Delivery {
        Delivery {
            user_ids: vec![user.into()],
            frame: vec![4],
            ..Delivery::default()
        }
    }

    #[tokio::test]
    async fn batches_are_published_again_after_a_reconnection_in_their_order() {
        let bus: Arc<dyn Bus> = Arc::new(LocalBus::new(64));
        let mut there = bus.subscribe("im.deliver.there").await.unwrap();
        let replay = Replay {
            window: Duration::from_secs(60),
            max_bytes: 1 << 20,
        };
        let router = router(bus, replay);
        assert!(
            router
                .publish("im.deliver.there", vec![entry("ann", 1), typing("ann")])
                .await
        );
        assert!(
            router
                .publish("im.deliver.there", vec![entry("bob", 2)])
                .await
        );
        assert!(
            !router
                .publish("im.deliver.there", vec![typing("bob")])
                .await
        );
        // Entries only, in their order: a typing frame replayed late would be wrong.
        assert_eq!(router.replay().await, 2);
        let mut published = Vec::new();
        let mut replayed = Vec::new();
        for _ in 0..6 {
            let message = there.next().await.unwrap();
            let batch = DeliveryBatch::decode(message.payload).unwrap();
            let delivery = &batch.deliveries[0];
            published.push((delivery.user_ids[0].clone(), delivery.seq));
            replayed.push(batch.replayed);
        }
        assert_eq!(replayed, [false, false, false, false, true, true]);
        let expected = [
            ("ann", 1),
            ("ann", 0),
            ("bob", 2),
            ("bob", 0),
            ("ann", 1),
            ("bob", 2),
        ];
        assert_eq!(published, expected.map(|(u, s)| (u.to_owned(), s)));
        // The replayed batches say so (the first publishes do not): receivers queue them only
        // where there is room.
        // Kept again: a connection that breaks during the replay gets it once more.
        assert_eq!(router.replay().await, 2);
    }

    #[test]
    fn a_replayed_burst_fills_a_queue_without_ending_its_session_and_a_fresh_one_ends_it() {
        use im_common::auth::Standing;
        use im_proto::{
            DeviceId, UserId,
            v1::{ErrorCode, Platform},
        };

        let router = router(Arc::new(LocalBus::new(4)), Replay::default());
        let (ann, mut inbox) = crate::sessions::SessionHandle::new(
            UserId::new("ann").unwrap(),
            &DeviceId::new("phone").unwrap(),
            Platform::Web,
            Standing::IssuedAt(0),
            4,
        );
        router.sessions.register(ann.clone()).unwrap();
        let burst = |replayed| DeliveryBatch {
            source_node_id: "there".into(),
            deliveries: (1..=10).map(|seq| entry("ann", seq)).collect(),
            replayed,
        };
        router.receive(burst(true));
        assert_eq!(ann.ending().reason.get(), None, "a replay costs no session");
        let mut queued = Vec::new();
        while let Ok(outbound) = inbox.try_recv() {
            queued.push(outbound.entry.as_ref().unwrap().1);
        }
        assert_eq!(queued, [1, 2, 3, 4], "what fit, in order");
        router.receive(burst(false));
        assert_eq!(
            ann.ending().reason.get(),
            Some(&ErrorCode::SlowConsumer),
            "fresh deliveries are never dropped quietly"
        );
    }

    #[tokio::test]
    async fn a_zero_byte_limit_keeps_nothing() {
        let bus: Arc<dyn Bus> = Arc::new(LocalBus::new(64));
        let replay = Replay {
            window: Duration::from_secs(60),
            max_bytes: 0,
        };
        let router = router(bus, replay);
        router
            .publish("im.deliver.there", vec![entry("ann", 1)])
            .await;
        assert_eq!(router.replay().await, 0);
    }

    #[test]
    fn the_replay_keeps_its_window_and_its_byte_limit() {
        let replay = Replay {
            window: Duration::from_secs(10),
            max_bytes: 100,
        };
        let start = Instant::now();
        let mut kept = Kept::default();
        for second in 0..5 {
            let at = start + Duration::from_secs(second);
            kept.bytes += 30;
            kept.batches.push_back(Published {
                at,
                subject: "im.deliver.there".into(),
                payload: Bytes::from(vec![0; 30]),
                deliveries: 1,
            });
            kept.trim(replay, at);
        }
        // 100 bytes hold the three newest.
        assert_eq!(kept.batches.len(), 3);
        assert_eq!(kept.bytes, 90);
        // Ten seconds and a bit after the fourth batch, only the fifth is young enough.
        kept.trim(replay, start + Duration::from_millis(13_001));
        assert_eq!(kept.batches.len(), 1);
        assert_eq!(kept.bytes, 30);
    }
}
