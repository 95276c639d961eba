//! Delivery to every node: frames go to this node's sessions directly, and to the sessions of
//! other nodes over the bus, one [`DeliveryBatch`] per node on `im.deliver.<node>`.
//!
//! Which node holds which user comes from the presence store's routes (Redis in the
//! distributed mode, renewed with the presence leases). A store of one node has no routes and
//! everything stays local. When the routes cannot be read (Redis unreachable), the batch goes
//! to every node on the bare `im.deliver` and each node keeps what its sessions need: slower,
//! but nothing that would have been pushed is dropped.

use std::{collections::HashMap, sync::Arc};

use bytes::Bytes;
use im_common::bus::{Bus, Subscription};
use im_proto::{
    bus,
    v1::{Delivery, DeliveryBatch},
};
use prost::Message;

use crate::{
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
const REMOTE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(1);

/// One frame for every session of some users, on whichever nodes they are.
#[derive(Debug, Clone)]
pub struct Item {
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
    ) -> Self {
        Self {
            node_id: node_id.to_owned(),
            sessions,
            presence,
            bus,
        }
    }

    /// Delivers one frame; see [`Router::deliver_all`].
    pub async fn deliver(&self, users: Arc<[String]>, outbound: Outbound, exclude: Option<&str>) {
        let item = Item {
            users,
            outbound,
            exclude: exclude.map(Into::into),
        };
        self.deliver_all(std::slice::from_ref(&item)).await;
    }

    /// Delivers each item to every session of its users, here and on the other nodes, in
    /// order. Returns, per item, the users who have no session anywhere (for offline pushes);
    /// when the routes cannot be read, only users known offline everywhere are listed: none.
    pub async fn deliver_all(&self, items: &[Item]) -> Vec<Vec<String>> {
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
                    Some(&mut missing),
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
            Ok(routes) => routes,
            Err(error) => {
                tracing::warn!(%error, "routes unreadable: delivering to every node");
                metrics::counter!("im_deliveries_broadcast_total").increment(items.len() as u64);
                let deliveries: Vec<Delivery> = items
                    .iter()
                    .flat_map(|item| deliveries(item, item.users.to_vec()))
                    .collect();
                self.publish(bus::DELIVER, deliveries).await;
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
        for (node, deliveries) in per_node {
            self.publish(&bus::deliver_subject(&node), deliveries).await;
        }
        offline
    }

    /// Publishes deliveries in batches of at most about [`MAX_BATCH_BYTES`].
    async fn publish(&self, subject: &str, deliveries: Vec<Delivery>) {
        let mut batch = self.batch();
        let mut size = 0;
        for delivery in deliveries {
            size += delivery.encoded_len();
            batch.deliveries.push(delivery);
            if size >= MAX_BATCH_BYTES {
                self.send(subject, std::mem::replace(&mut batch, self.batch()))
                    .await;
                size = 0;
            }
        }
        if !batch.deliveries.is_empty() {
            self.send(subject, batch).await;
        }
    }

    fn batch(&self) -> DeliveryBatch {
        DeliveryBatch {
            source_node_id: self.node_id.clone(),
            deliveries: Vec::new(),
        }
    }

    async fn send(&self, subject: &str, batch: DeliveryBatch) {
        let count = batch.deliveries.len() as u64;
        let published = tokio::time::timeout(
            REMOTE_TIMEOUT,
            self.bus
                .publish(subject, Bytes::from(batch.encode_to_vec())),
        )
        .await
        .unwrap_or_else(|_| Err(im_common::bus::BusError::Unavailable("timed out".into())));
        match published {
            Ok(()) => metrics::counter!("im_deliveries_forwarded_total").increment(count),
            Err(error) => {
                // The recipients see the entries at their next gap or sync.
                tracing::warn!(%error, subject, count, "deliveries not forwarded");
                metrics::counter!("im_deliveries_unforwarded_total").increment(count);
            }
        }
    }

    /// Subscribes to what other nodes deliver to this one: its own subject and the broadcast.
    pub async fn subscribe(
        &self,
    ) -> Result<(Subscription, Subscription), im_common::bus::BusError> {
        let own = self
            .bus
            .subscribe(&bus::deliver_subject(&self.node_id))
            .await?;
        let everyone = self.bus.subscribe(bus::DELIVER).await?;
        Ok((own, everyone))
    }

    /// Hands a batch from another node to this node's sessions.
    pub fn receive(&self, payload: Bytes) {
        let Ok(batch) = DeliveryBatch::decode(payload) else {
            tracing::warn!("undecodable delivery batch dropped");
            return;
        };
        if batch.source_node_id == self.node_id {
            // This node's own broadcast: delivered locally already.
            return;
        }
        for delivery in batch.deliveries {
            let entry = (!delivery.conversation_id.is_empty())
                .then(|| (Arc::from(delivery.conversation_id.as_str()), delivery.seq));
            let outbound = Outbound {
                frame: Bytes::from(delivery.frame),
                entry,
            };
            let exclude =
                (!delivery.exclude_session_id.is_empty()).then_some(&*delivery.exclude_session_id);
            self.sessions.deliver(
                delivery.user_ids.iter().map(String::as_str),
                outbound,
                exclude,
                None,
            );
        }
    }
}

/// The deliveries of `item` to `users`, at most [`MAX_DELIVERY_USERS`] users each.
fn deliveries(item: &Item, users: Vec<String>) -> Vec<Delivery> {
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
