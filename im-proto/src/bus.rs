//! The subjects services and nodes talk on, and the payload each carries.
//!
//! Inside a service, modules call each other directly; between services (and between core
//! nodes) everything goes over the bus: NATS in the distributed mode, an in-process bus in the
//! embedded mode. Payloads are the protobuf messages of `bus.proto`, encoded as is.
//!
//! [`SUBJECTS`] is the catalogue; `docs/ARCHITECTURE.md` prints the same table.

use prost::Name;

use crate::v1;

/// Messaging: a send forwarded to the conversation's owner (request/reply).
pub const MESSAGE: &str = "im.message";
/// Messaging: frames for one node's sessions; the node id follows (`im.deliver.<node>`).
pub const DELIVER: &str = "im.deliver";
/// Messaging: delivery acknowledgements, for resend tracking.
pub const ACK: &str = "im.ack";
/// Messaging: entries for users with no connected device (a durable outbox on NATS).
pub const PUSH: &str = "im.push";
/// Messaging: a starting core node's claim of its id; the node id follows (`im.node.<node>`),
/// and a running node with that id answers (request/reply).
pub const NODE: &str = "im.node";
/// Messaging: history and pull queries forwarded to the data's owner (request/reply).
pub const HISTORY: &str = "im.history";
/// Presence: a user's presence changed.
pub const PRESENCE: &str = "im.presence";
/// Presence: a device connected to or left a node.
pub const ROUTE: &str = "im.route";
/// Presence: node heartbeats with leases.
pub const STATUS: &str = "im.status";
/// Presence: which users' presence a node wants to hear about.
pub const SUBSCRIBE: &str = "im.subscribe";
/// Business: permission checks (request/reply).
pub const AUTH: &str = "im.auth";
/// Business: a page of a group's members, for fan-out (request/reply).
pub const MEMBERS: &str = "im.members";
/// Business: the groups a user belongs to, for sync (request/reply).
pub const GROUPS: &str = "im.groups";
/// Business: every token revocation on record, for a core node starting (request/reply).
pub const REVOCATIONS: &str = "im.revocations";
/// Business: group membership changes.
pub const MEMBER: &str = "im.member";
/// Business: group changes.
pub const GROUP: &str = "im.group";
/// Business: mutes, blocks, token revocations, deactivations.
pub const BAN: &str = "im.ban";
/// Media: objects deleted or otherwise managed.
pub const MEDIA: &str = "im.media";
/// Media: uploads signed and arrived.
pub const UPLOAD: &str = "im.upload";
/// Media: thumbnails and transcodes done.
pub const PROCESS: &str = "im.process";
/// Media: content scans passed or quarantined.
pub const SCAN: &str = "im.scan";
/// Admin: operators' commands to nodes.
pub const ADMIN: &str = "im.admin";
/// Admin: dynamic configuration changes.
pub const CONFIG: &str = "im.config";
/// Admin: alerts.
pub const MONITOR: &str = "im.monitor";
/// Admin: the audit trail.
pub const AUDIT: &str = "im.audit";

/// The delivery subject of one node: `im.deliver.<node_id>`.
pub fn deliver_subject(node_id: &str) -> String {
    format!("{DELIVER}.{node_id}")
}

/// The claim subject of one node id: `im.node.<node_id>`.
pub fn node_subject(node_id: &str) -> String {
    format!("{NODE}.{node_id}")
}

/// How a subject is used.
#[derive(Debug, Clone, Copy)]
pub enum Pattern {
    /// Published to every subscriber; no answer.
    Event,
    /// Sent to one responder, which answers with the reply payload.
    Request {
        /// The full protobuf name of the reply.
        reply: fn() -> String,
    },
}

/// One row of the catalogue.
#[derive(Debug, Clone, Copy)]
pub struct Subject {
    /// The subject (for `im.deliver`, the prefix of the per-node subjects).
    pub name: &'static str,
    /// Event or request/reply.
    pub pattern: Pattern,
    /// The full protobuf name of the payload, e.g. `im.v1.DeliveryBatch`.
    pub payload: fn() -> String,
}

const fn event(name: &'static str, payload: fn() -> String) -> Subject {
    Subject {
        name,
        pattern: Pattern::Event,
        payload,
    }
}

const fn request(name: &'static str, payload: fn() -> String, reply: fn() -> String) -> Subject {
    Subject {
        name,
        pattern: Pattern::Request { reply },
        payload,
    }
}

/// Every subject, with its pattern and payload.
pub const SUBJECTS: &[Subject] = &[
    request(
        MESSAGE,
        v1::SubmitMessage::full_name,
        v1::SubmitResult::full_name,
    ),
    event(DELIVER, v1::DeliveryBatch::full_name),
    event(ACK, v1::DeliveryAcked::full_name),
    event(PUSH, v1::OfflinePush::full_name),
    request(NODE, v1::NodeStatus::full_name, v1::NodeStatus::full_name),
    request(
        HISTORY,
        v1::HistoryQuery::full_name,
        v1::HistoryResult::full_name,
    ),
    event(PRESENCE, v1::PresenceChanged::full_name),
    event(ROUTE, v1::RouteChanged::full_name),
    event(STATUS, v1::NodeStatus::full_name),
    event(SUBSCRIBE, v1::PresenceInterest::full_name),
    request(
        AUTH,
        v1::PermissionCheck::full_name,
        v1::PermissionDecision::full_name,
    ),
    request(
        MEMBERS,
        v1::MembersQuery::full_name,
        v1::MemberList::full_name,
    ),
    request(
        GROUPS,
        v1::UserGroupsQuery::full_name,
        v1::UserGroups::full_name,
    ),
    request(
        REVOCATIONS,
        v1::RevocationsQuery::full_name,
        v1::RevocationList::full_name,
    ),
    event(MEMBER, v1::MemberEvent::full_name),
    event(GROUP, v1::GroupEvent::full_name),
    event(BAN, v1::BanEvent::full_name),
    event(MEDIA, v1::MediaEvent::full_name),
    event(UPLOAD, v1::MediaEvent::full_name),
    event(PROCESS, v1::MediaEvent::full_name),
    event(SCAN, v1::MediaEvent::full_name),
    event(ADMIN, v1::AdminCommand::full_name),
    event(CONFIG, v1::ConfigChanged::full_name),
    event(MONITOR, v1::MonitorAlert::full_name),
    event(AUDIT, v1::AuditEvent::full_name),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_are_unique_and_under_im() {
        let mut names: Vec<_> = SUBJECTS.iter().map(|s| s.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), SUBJECTS.len());
        assert!(
            names
                .iter()
                .all(|n| n.starts_with("im.") && !n[3..].contains('.'))
        );
        assert_eq!(deliver_subject("core-1"), "im.deliver.core-1");
    }

    #[test]
    fn payload_names_are_protobuf_names() {
        assert_eq!((SUBJECTS[1].payload)(), "im.v1.DeliveryBatch");
    }
}
