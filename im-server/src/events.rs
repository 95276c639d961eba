//! The events a core node follows, decoded once: what the business service announces
//! (membership, groups, bans) and what the other nodes do (devices connecting, presence).
//! [`crate::intake`] applies each to the node's parts in a fixed order.

use im_common::bus::{Bus, BusError, Events};
use im_proto::v1::{BanEvent, GroupEvent, MemberEvent, PresenceChanged, RouteChanged};

/// One event, decoded.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// `im.member`: a group's membership changed.
    Member(MemberEvent),
    /// `im.group`: a group itself changed (dismissed, muted, ...).
    Group(GroupEvent),
    /// `im.ban`: a mute, block, contact, revocation or deactivation.
    Ban(BanEvent),
    /// `im.route`: a device connected to a node.
    Route(RouteChanged),
    /// `im.presence`: a user's presence changed.
    Presence(PresenceChanged),
}

/// The node's subscriptions to every event it follows, one per subject.
#[derive(Debug)]
pub struct Subscriptions {
    members: Events<MemberEvent>,
    groups: Events<GroupEvent>,
    bans: Events<BanEvent>,
    routes: Events<RouteChanged>,
    presence: Events<PresenceChanged>,
}

impl Subscriptions {
    /// Subscribes to every subject; events published after this returns are not missed.
    pub async fn subscribe(bus: &dyn Bus) -> Result<Self, BusError> {
        Ok(Self {
            members: bus.events().await?,
            groups: bus.events().await?,
            bans: bus.events().await?,
            routes: bus.events().await?,
            presence: bus.events().await?,
        })
    }

    /// The next event on any subject; `None` once the bus is gone. (Subjects are not ordered
    /// with respect to each other, on NATS neither.)
    pub async fn next(&mut self) -> Option<Event> {
        tokio::select! {
            Some(event) = self.members.next() => Some(Event::Member(event)),
            Some(event) = self.groups.next() => Some(Event::Group(event)),
            Some(event) = self.bans.next() => Some(Event::Ban(event)),
            Some(event) = self.routes.next() => Some(Event::Route(event)),
            Some(event) = self.presence.next() => Some(Event::Presence(event)),
            else => None,
        }
    }
}
