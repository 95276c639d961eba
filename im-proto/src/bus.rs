//! The subjects services and nodes talk on, and the payload each carries.
//!
//! Inside a service, modules call each other directly; between services (and between core
//! nodes) everything goes over the bus: NATS in the distributed mode, an in-process bus in the
//! embedded mode. Payloads are the protobuf messages of `bus.proto`, encoded as is.
//!
//! Each payload names its subject through [`BusEvent`] or [`BusRequest`] (which also names the
//! reply), so a caller cannot put a payload on the wrong subject or decode an answer as the
//! wrong type. [`SUBJECTS`], the catalogue, is generated from the same declarations, and
//! `docs/ARCHITECTURE.md` prints the same table.

use prost::Name;

use crate::v1;

/// A payload published to every subscriber of its subject, with no answer.
pub trait BusEvent: prost::Message + Name + Default + Send + Sync + 'static {
    /// The subject it travels on (for `im.deliver`, the prefix of the per-node subjects).
    const SUBJECT: &'static str;
}

/// A payload sent to one responder of its subject, which answers with [`Self::Reply`].
pub trait BusRequest: prost::Message + Name + Default + Send + Sync + 'static {
    /// The subject it is asked on (for `im.node`, the prefix of the per-node subjects).
    const SUBJECT: &'static str;
    /// The answer.
    type Reply: BusReply;
}

/// The answer to a [`BusRequest`]: it may carry a refusal instead of a result.
pub trait BusReply: prost::Message + Name + Default + Send + Sync + 'static {
    /// The refusal the answer carries, if any (a permission denial is a result, not one).
    fn refusal(&self) -> Option<&v1::Error>;
    /// An answer refusing the request with `error` (a malformed request, a fault).
    fn refused(error: v1::Error) -> Self;
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
    /// The subject (for `im.deliver` and `im.node`, the prefix of the per-node subjects).
    pub name: &'static str,
    /// Event or request/reply.
    pub pattern: Pattern,
    /// The full protobuf name of the payload, e.g. `im.v1.DeliveryBatch`.
    pub payload: fn() -> String,
}

/// Declares each subject once: its constant, the trait tying its payload (and reply) to it,
/// and its row of [`SUBJECTS`], in this order.
macro_rules! subjects {
    ($(
        $(#[doc = $doc:literal])*
        $kind:ident $name:ident = $subject:literal : $payload:ident $(=> $reply:ident)?;
    )*) => {
        $(
            $(#[doc = $doc])*
            pub const $name: &str = $subject;
            subjects!(@impl $kind $name $payload $($reply)?);
        )*

        /// Every subject, with its pattern and payload.
        pub const SUBJECTS: &[Subject] = &[$(subjects!(@row $kind $name $payload $($reply)?)),*];
    };
    (@impl event $name:ident $payload:ident) => {
        impl BusEvent for v1::$payload {
            const SUBJECT: &'static str = $name;
        }
    };
    (@impl request $name:ident $payload:ident $reply:ident) => {
        impl BusRequest for v1::$payload {
            const SUBJECT: &'static str = $name;
            type Reply = v1::$reply;
        }
    };
    (@row event $name:ident $payload:ident) => {
        Subject { name: $name, pattern: Pattern::Event, payload: v1::$payload::full_name }
    };
    (@row request $name:ident $payload:ident $reply:ident) => {
        Subject {
            name: $name,
            pattern: Pattern::Request { reply: v1::$reply::full_name },
            payload: v1::$payload::full_name,
        }
    };
}

subjects! {
    /// Messaging: a send forwarded to the conversation's owner.
    request MESSAGE = "im.message": SubmitMessage => SubmitResult;
    /// Messaging: frames for one node's sessions; the node id follows (`im.deliver.<node>`).
    event DELIVER = "im.deliver": DeliveryBatch;
    /// Messaging: delivery acknowledgements, for resend tracking.
    event ACK = "im.ack": DeliveryAcked;
    /// Messaging: entries for users with no connected device (a durable outbox).
    event PUSH = "im.push": OfflinePush;
    /// Messaging: a starting core node's claim of its id; the node id follows
    /// (`im.node.<node>`), and a running node with that id answers.
    request NODE = "im.node": NodeStatus => NodeStatus;
    /// Messaging: history and pull queries forwarded to the data's owner.
    request HISTORY = "im.history": HistoryQuery => HistoryResult;
    /// Presence: a user's presence changed.
    event PRESENCE = "im.presence": PresenceChanged;
    /// Presence: a device connected to or left a node.
    event ROUTE = "im.route": RouteChanged;
    /// Presence: node heartbeats with leases.
    event STATUS = "im.status": NodeHeartbeat;
    /// Presence: which users' presence a node wants to hear about.
    event SUBSCRIBE = "im.subscribe": PresenceInterest;
    /// Business: permission checks.
    request AUTH = "im.auth": PermissionCheck => PermissionDecision;
    /// Business: may a sender reference these media in a message (a `MediaRef`)?
    request ATTACH = "im.attach": AttachCheck => PermissionDecision;
    /// Business: a page of a group's members, for fan-out.
    request MEMBERS = "im.members": MembersQuery => MemberList;
    /// Business: the groups a user belongs to, for sync.
    request GROUPS = "im.groups": UserGroupsQuery => UserGroups;
    /// Business: the token revocations on record, a page at a time, for a core node starting.
    request REVOCATIONS = "im.revocations": RevocationsQuery => RevocationList;
    /// Messaging: a system notice appended by any core node (group created, members added,
    /// removed, left).
    request NOTICE = "im.notice": NoticeWrite => SubmitResult;
    /// Business: group membership changes.
    event MEMBER = "im.member": MemberEvent;
    /// Business: group changes.
    event GROUP = "im.group": GroupEvent;
    /// Business: mutes, blocks, contacts, token revocations, deactivations.
    event BAN = "im.ban": BanEvent;
    /// Media: objects deleted or otherwise managed.
    event MEDIA = "im.media": MediaEvent;
    /// Media: uploads signed and arrived.
    event UPLOAD = "im.upload": UploadEvent;
    /// Media: thumbnails and transcodes done.
    event PROCESS = "im.process": ProcessEvent;
    /// Media: content scans passed or quarantined.
    event SCAN = "im.scan": ScanEvent;
    /// Media: the media a committed entry references, or references no more (an outbox).
    event MEDIA_REF = "im.mediaref": MediaReferences;
    /// Admin: operators' commands to nodes.
    event ADMIN = "im.admin": AdminCommand;
    /// Admin: dynamic configuration changes.
    event CONFIG = "im.config": ConfigChanged;
    /// Admin: alerts.
    event MONITOR = "im.monitor": MonitorAlert;
    /// Admin: the audit trail.
    event AUDIT = "im.audit": AuditEvent;
}

/// The delivery subject of one node: `im.deliver.<node_id>`.
pub fn deliver_subject(node_id: &str) -> String {
    format!("{DELIVER}.{node_id}")
}

/// The claim subject of one node id: `im.node.<node_id>`.
pub fn node_subject(node_id: &str) -> String {
    format!("{NODE}.{node_id}")
}

/// Whether `subject` is `base` or one of its per-node subjects (`base.<node>`).
pub fn is_under(subject: &str, base: &str) -> bool {
    subject
        .strip_prefix(base)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('.'))
}

impl BusReply for v1::SubmitResult {
    fn refusal(&self) -> Option<&v1::Error> {
        match &self.result {
            Some(v1::submit_result::Result::Error(error)) => Some(error),
            _ => None,
        }
    }

    fn refused(error: v1::Error) -> Self {
        Self {
            result: Some(v1::submit_result::Result::Error(error)),
        }
    }
}

impl BusReply for v1::HistoryResult {
    fn refusal(&self) -> Option<&v1::Error> {
        match &self.result {
            Some(v1::history_result::Result::Error(error)) => Some(error),
            _ => None,
        }
    }

    fn refused(error: v1::Error) -> Self {
        Self {
            result: Some(v1::history_result::Result::Error(error)),
        }
    }
}

impl BusReply for v1::NodeStatus {
    fn refusal(&self) -> Option<&v1::Error> {
        None
    }

    /// A status says nothing of a refusal: an empty one.
    fn refused(_: v1::Error) -> Self {
        Self::default()
    }
}

impl BusReply for v1::PermissionDecision {
    /// A denial is the answer asked for, not a refusal to answer.
    fn refusal(&self) -> Option<&v1::Error> {
        None
    }

    /// A denial that must not be cached.
    fn refused(error: v1::Error) -> Self {
        Self {
            allowed: false,
            code: error.code,
            reason: error.message,
            ttl_ms: 0,
            ..Default::default()
        }
    }
}

/// Replies whose refusal is their `error` field.
macro_rules! error_field_replies {
    ($($reply:ident),*) => {$(
        impl BusReply for v1::$reply {
            fn refusal(&self) -> Option<&v1::Error> {
                self.error.as_ref()
            }

            fn refused(error: v1::Error) -> Self {
                Self {
                    error: Some(error),
                    ..Self::default()
                }
            }
        }
    )*};
}

error_field_replies!(MemberList, UserGroups, RevocationList);

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
        assert!(is_under("im.deliver.core-1", DELIVER));
        assert!(is_under(DELIVER, DELIVER));
        assert!(!is_under("im.deliverx", DELIVER));
    }

    #[test]
    fn payloads_name_their_subjects_and_replies() {
        assert_eq!(
            <v1::DeliveryBatch as BusEvent>::SUBJECT,
            "im.deliver",
            "an event's subject"
        );
        assert_eq!(<v1::PermissionCheck as BusRequest>::SUBJECT, AUTH);
        let row = SUBJECTS.iter().find(|s| s.name == AUTH).expect("listed");
        assert_eq!((row.payload)(), "im.v1.PermissionCheck");
        assert!(
            matches!(row.pattern, Pattern::Request { reply } if reply() == "im.v1.PermissionDecision")
        );
    }

    #[test]
    fn refusals_round_trip_through_each_reply() {
        let error = v1::Error::new(v1::ErrorCode::GroupNotFound, "gone");
        let members = v1::MemberList::refused(error.clone());
        assert_eq!(members.refusal(), Some(&error));
        let result = v1::SubmitResult::refused(error.clone());
        assert_eq!(result.refusal(), Some(&error));
        let denied = v1::PermissionDecision::refused(error);
        assert!(!denied.allowed && denied.ttl_ms == 0, "never cached");
        assert_eq!(denied.refusal(), None, "a denial is an answer");
    }
}
