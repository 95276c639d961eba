//! The business rules: who may do what to users, tokens, groups and members, and the
//! permission decisions the core asks for. Every change is stored first, then announced on the
//! bus (`im.member`, `im.group`, `im.ban`) and recorded in the audit trail (`im.audit`),
//! denied and failed attempts included.
//!
//! One [`Business`] holds them all; its methods are spread by concern:
//!
//! - `validation`: the checks every operation starts with (names, URLs, JSON, pages, who the
//!   actor is and where it stands in a group);
//! - `audit`: the audit trail wrapped around each change, and the bus events announcing it;
//! - `users`: users and their tokens;
//! - `groups`: a group itself (create, read, change, dismiss);
//! - `members`: a group's membership (add, remove, leave, list, roles, ownership, mutes);
//! - `notices`: the system notices of membership changes, appended by core nodes;
//! - `relations`: blocks and contacts between two users;
//! - `directory`: what core nodes ask without an actor (member ids, revocations, a user's
//!   groups);
//! - `permission`: the permission decisions core nodes cache.
//!
//! This module holds what they share: the service, its configuration, [`Actor`], [`Page`] and
//! the small error helpers.

use std::sync::Arc;

use im_common::{
    auth::TokenIssuer,
    bus::{AUDIT_KEPT, AUDIT_STREAM, Bus, BusError, Outbox},
};
use im_proto::{UserId, bus, v1::GroupRole};

use crate::{error::BusinessError, store::BusinessStore};

mod audit;
mod directory;
mod groups;
mod invitations;
mod members;
mod notices;
mod permission;
mod relations;
mod users;
mod validation;

pub use groups::{GroupUpdate, NewGroup};
pub use invitations::AddedMembers;
// The clock the service stamps with, for callers that compute times against it.
pub use im_common::now_ms;
pub use users::UserImport;

/// Limits and policies of the business service.
#[derive(Debug, Clone)]
pub struct BusinessConfig {
    /// The largest group allowed, and the default limit of new groups.
    pub max_group_members: i32,
    /// The longest display or group name, in bytes.
    pub max_name_bytes: usize,
    /// The longest avatar URL, in bytes.
    pub max_url_bytes: usize,
    /// The longest app-defined JSON, in bytes.
    pub max_extra_json_bytes: usize,
    /// Token lifetime when the request names none.
    pub default_token_ttl_ms: i64,
    /// The longest token lifetime a request may ask for.
    pub max_token_ttl_ms: i64,
    /// Only contacts may start or continue a 1:1 conversation with a user.
    pub direct_requires_contact: bool,
    /// Who may see a user's presence and status text.
    pub presence_visible_to: PresenceAudience,
    /// Whom a user may put in a group without asking them.
    pub group_adds: GroupAdds,
    /// How long a core node may cache a permission decision (events invalidate it sooner).
    pub decision_ttl_ms: u64,
    /// The largest page of members or blocked users.
    pub max_page: u32,
    /// The most users one import may carry.
    pub max_import_batch: usize,
}

impl Default for BusinessConfig {
    fn default() -> Self {
        Self {
            max_group_members: 200_000,
            max_name_bytes: 128,
            max_url_bytes: 1_024,
            max_extra_json_bytes: 4_096,
            default_token_ttl_ms: 7 * 24 * 3_600_000,
            max_token_ttl_ms: 90 * 24 * 3_600_000,
            direct_requires_contact: false,
            presence_visible_to: PresenceAudience::Related,
            group_adds: GroupAdds::Contacts,
            decision_ttl_ms: 60_000,
            max_page: 1_000,
            max_import_batch: 1_000,
        }
    }
}

/// Who may see a user's presence (online, status, status text).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PresenceAudience {
    /// The user's contacts (those it added) and the members of the groups it is in.
    #[default]
    Related,
    /// Every active user who has not been blocked by it.
    Everyone,
}

/// Whom a user may put in a group (creating it, or adding members) without asking them; the
/// others are invited and join once they accept. The app adds anyone at once, and a user who
/// adds itself (an open group) joins.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GroupAdds {
    /// Anyone who has not blocked them.
    Direct,
    /// The users who have them as a contact; the others are invited.
    #[default]
    Contacts,
    /// No one: every user is invited.
    Invitation,
}

/// On whose behalf an operation runs: the principal whose rights the rules check and whom
/// the audit trail names (`app` or `user:<id>`). The APIs take it from the `x-im-actor` header
/// (or a request's `actor_user_id`); without one the app acts for itself.
///
/// An authorization principal only, not a concurrent "actor" (a task owning state and
/// answering messages).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Actor {
    /// The app's backend itself (authenticated with the app secret): every right.
    App,
    /// A user, whose rights apply.
    User(String),
}

impl Actor {
    fn label(&self) -> String {
        match self {
            Self::App => "app".into(),
            Self::User(user) => format!("user:{user}"),
        }
    }

    fn is(&self, user_id: &str) -> bool {
        matches!(self, Self::User(u) if u == user_id)
    }
}

/// Where an actor stands in a group, from most to least rights.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Standing {
    Member,
    Admin,
    Owner,
    App,
}

impl Standing {
    fn of(role: i32) -> Self {
        match GroupRole::try_from(role) {
            Ok(GroupRole::Owner) => Self::Owner,
            Ok(GroupRole::Admin) => Self::Admin,
            _ => Self::Member,
        }
    }
}

/// The page size when a request names none.
pub const DEFAULT_PAGE: u32 = 100;

/// Revocations per `im.revocations` answer at most: each is under about 200 bytes encoded, so a
/// page stays well under NATS's default 1 MiB payload limit.
pub const MAX_REVOCATIONS_PAGE: u32 = 1_000;

/// One page of a listing in id order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page<T> {
    /// The items.
    pub items: Vec<T>,
    /// The id to continue after; empty on the last page.
    pub next_page_token: String,
}

impl<T> Page<T> {
    /// A page of `items` asked with `limit`: a full page may have more after it.
    fn of(items: Vec<T>, limit: u32, id: impl Fn(&T) -> &str) -> Self {
        let full = items.len() >= limit as usize;
        let next_page_token = items
            .last()
            .filter(|_| full)
            .map(|last| id(last).to_owned())
            .unwrap_or_default();
        Self {
            items,
            next_page_token,
        }
    }
}

/// The business service.
pub struct Business {
    store: Arc<dyn BusinessStore>,
    bus: Arc<dyn Bus>,
    /// The audit trail: a stream on NATS, which also publishes each event on `im.audit`.
    audit: Arc<dyn Outbox>,
    issuer: TokenIssuer,
    config: BusinessConfig,
    node_id: String,
}

impl std::fmt::Debug for Business {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Business")
            .field("node_id", &self.node_id)
            .field("config", &self.config)
            .finish()
    }
}

/// An `INVALID_ARGUMENT` refusal.
fn invalid(message: impl Into<String>) -> BusinessError {
    BusinessError::InvalidArgument(message.into())
}

/// A `FORBIDDEN` refusal.
fn forbidden(message: impl Into<String>) -> BusinessError {
    BusinessError::Forbidden(message.into())
}

/// A user id in its checked form, or an `INVALID_ARGUMENT` refusal.
fn parse_user(id: &str) -> Result<UserId, BusinessError> {
    id.parse()
        .map_err(|e: im_proto::IdError| invalid(e.to_string()))
}

impl Business {
    /// A service over `store`, announcing on `bus`, signing tokens with `issuer`; its audit
    /// events go into the bus's audit outbox (stored before the change is answered), which
    /// also publishes them on `im.audit`.
    pub async fn new(
        store: Arc<dyn BusinessStore>,
        bus: Arc<dyn Bus>,
        issuer: TokenIssuer,
        config: BusinessConfig,
        node_id: impl Into<String>,
    ) -> Result<Self, BusError> {
        let audit = bus.outbox(AUDIT_STREAM, bus::AUDIT, AUDIT_KEPT).await?;
        Ok(Self {
            store,
            bus,
            audit,
            issuer,
            config,
            node_id: node_id.into(),
        })
    }

    /// The configuration in force.
    pub fn config(&self) -> &BusinessConfig {
        &self.config
    }

    /// The store, for the services that share it (media).
    pub fn store(&self) -> Arc<dyn BusinessStore> {
        self.store.clone()
    }
}
