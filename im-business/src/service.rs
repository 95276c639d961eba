//! The business rules: who may do what to users, tokens, groups and members, and the
//! permission decisions the core asks for. Every change is stored first, then announced on the
//! bus (`im.member`, `im.group`, `im.ban`) and recorded in the audit trail (`im.audit`),
//! denied and failed attempts included.

use std::{collections::BTreeSet, future::Future, sync::Arc};

use im_common::{
    auth::TokenIssuer,
    bus::{AUDIT_KEPT, AUDIT_STREAM, Bus, BusError, Outbox, encode},
};
use im_proto::{
    ConversationId, ConversationKind, GroupId, UserId,
    bus::{self, BusEvent},
    v1::{
        AuditEvent, AuditOutcome, BanEvent, BanKind, ConversationAction, ConversationType,
        ErrorCode, GroupChange, GroupEvent, GroupRole, JoinPolicy, MemberChange, MemberEvent,
        PermissionDecision, UserGroup,
    },
};

use crate::{
    error::BusinessError,
    store::{BusinessStore, GroupChanges, GroupRecord, MemberRecord, Revocation, UserRecord},
};

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
            decision_ttl_ms: 60_000,
            max_page: 1_000,
            max_import_batch: 1_000,
        }
    }
}

/// On whose behalf an operation runs.
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

/// A directed relation between two users.
#[derive(Debug, Clone, Copy)]
enum Relation {
    Block,
    Contact,
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

/// One user of an import.
#[derive(Debug, Clone, Default)]
pub struct UserImport {
    /// The user id.
    pub user_id: String,
    /// Shown name.
    pub display_name: String,
    /// Avatar URL.
    pub avatar_url: String,
    /// App-defined JSON.
    pub extra_json: String,
}

/// A new group, as asked for.
#[derive(Debug, Clone, Default)]
pub struct NewGroup {
    /// Empty: the server assigns one.
    pub group_id: String,
    /// Shown name; required.
    pub name: String,
    /// The owner; empty when a user creates the group for itself.
    pub owner_user_id: String,
    /// The first members besides the owner.
    pub member_user_ids: Vec<String>,
    /// GROUP (default) or CHANNEL.
    pub kind: ConversationType,
    /// Default: invite only.
    pub join_policy: JoinPolicy,
    /// Avatar URL.
    pub avatar_url: String,
    /// App-defined JSON.
    pub extra_json: String,
}

/// Changes to a group's profile; `None` leaves a field as it is.
#[derive(Debug, Clone, Default)]
pub struct GroupUpdate {
    /// New name.
    pub name: Option<String>,
    /// New avatar URL.
    pub avatar_url: Option<String>,
    /// New join policy.
    pub join_policy: Option<JoinPolicy>,
    /// Mute everyone but the owner and admins.
    pub mute_all: Option<bool>,
    /// New app-defined JSON.
    pub extra_json: Option<String>,
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

pub use im_common::now_ms;

fn invalid(message: impl Into<String>) -> BusinessError {
    BusinessError::InvalidArgument(message.into())
}

fn forbidden(message: impl Into<String>) -> BusinessError {
    BusinessError::Forbidden(message.into())
}

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

    // ---- validation ------------------------------------------------------------------------

    fn check_name(&self, what: &str, name: &str, required: bool) -> Result<(), BusinessError> {
        if required && name.trim().is_empty() {
            return Err(invalid(format!("{what} is empty")));
        }
        if name.len() > self.config.max_name_bytes {
            return Err(invalid(format!(
                "{what} is {} bytes, more than {}",
                name.len(),
                self.config.max_name_bytes
            )));
        }
        Ok(())
    }
    /// The page size to use: 100 when unset, at most `max_page`.
    fn page_limit(&self, limit: u32) -> u32 {
        if limit == 0 {
            DEFAULT_PAGE.min(self.config.max_page)
        } else {
            limit.min(self.config.max_page)
        }
    }

    fn check_url(&self, url: &str) -> Result<(), BusinessError> {
        if url.len() > self.config.max_url_bytes {
            return Err(invalid(format!(
                "URL is {} bytes, more than {}",
                url.len(),
                self.config.max_url_bytes
            )));
        }
        Ok(())
    }

    fn check_extra(&self, extra_json: &str) -> Result<(), BusinessError> {
        if extra_json.len() > self.config.max_extra_json_bytes {
            return Err(invalid(format!(
                "extra_json is {} bytes, more than {}",
                extra_json.len(),
                self.config.max_extra_json_bytes
            )));
        }
        if !extra_json.is_empty() {
            serde_json::from_str::<serde_json::Value>(extra_json)
                .map_err(|e| invalid(format!("extra_json is not JSON: {e}")))?;
        }
        Ok(())
    }

    /// The user, who must exist and be active.
    async fn active_user(&self, user_id: &str) -> Result<UserRecord, BusinessError> {
        parse_user(user_id)?;
        match self.store.get_user(user_id).await? {
            None => Err(BusinessError::UserNotFound(user_id.to_owned())),
            Some(user) if !user.active => Err(BusinessError::UserDisabled(user_id.to_owned())),
            Some(user) => Ok(user),
        }
    }

    /// The actor must be the app or `user_id` itself.
    fn app_or_self(actor: &Actor, user_id: &str) -> Result<(), BusinessError> {
        if *actor == Actor::App || actor.is(user_id) {
            Ok(())
        } else {
            Err(forbidden(format!("only {user_id} or the app may do this")))
        }
    }

    fn app_only(actor: &Actor) -> Result<(), BusinessError> {
        match actor {
            Actor::App => Ok(()),
            Actor::User(_) => Err(forbidden("only the app may do this")),
        }
    }

    /// The group (not dismissed) and where the actor stands in it.
    async fn standing(
        &self,
        actor: &Actor,
        group_id: &str,
    ) -> Result<(GroupRecord, Standing), BusinessError> {
        let group = match self.store.get_group(group_id).await? {
            Some(group) if !group.dismissed => group,
            _ => return Err(BusinessError::GroupNotFound(group_id.to_owned())),
        };
        let user_id = match actor {
            Actor::App => return Ok((group, Standing::App)),
            Actor::User(user_id) => user_id,
        };
        self.active_user(user_id).await?;
        match self.store.get_member(group_id, user_id).await? {
            Some(member) => Ok((group, Standing::of(member.role))),
            None => Err(BusinessError::NotAMember {
                group_id: group_id.to_owned(),
                user_id: user_id.clone(),
            }),
        }
    }

    async fn member(&self, group_id: &str, user_id: &str) -> Result<MemberRecord, BusinessError> {
        self.store
            .get_member(group_id, user_id)
            .await?
            .ok_or_else(|| BusinessError::NotAMember {
                group_id: group_id.to_owned(),
                user_id: user_id.to_owned(),
            })
    }

    /// Distinct, valid, existing, active user ids (checked in batches: groups can be large).
    async fn active_users(&self, user_ids: &[String]) -> Result<Vec<String>, BusinessError> {
        let distinct: BTreeSet<&String> = user_ids.iter().collect();
        if distinct.len() != user_ids.len() {
            return Err(invalid("a user is listed twice"));
        }
        for user_id in user_ids {
            parse_user(user_id)?;
        }
        match self.store.first_unusable(user_ids).await? {
            None => Ok(user_ids.to_vec()),
            Some((user_id, true)) => Err(BusinessError::UserDisabled(user_id)),
            Some((user_id, false)) => Err(BusinessError::UserNotFound(user_id)),
        }
    }

    // ---- announcing ------------------------------------------------------------------------

    async fn emit<E: BusEvent>(&self, event: &E) {
        if let Err(error) = self.bus.emit(event).await {
            tracing::warn!(subject = E::SUBJECT, %error, "event not published");
        }
    }

    /// Runs `work` and records the attempt, whatever its outcome, in the audit trail.
    async fn audited<T>(
        &self,
        actor: &Actor,
        action: &str,
        target: String,
        work: impl Future<Output = Result<T, BusinessError>>,
    ) -> Result<T, BusinessError> {
        self.audited_with(actor, action, target, serde_json::Value::Null, work)
            .await
    }

    /// [`Self::audited`], with details of what the action touched (users, roles, times).
    async fn audited_with<T>(
        &self,
        actor: &Actor,
        action: &str,
        target: String,
        mut detail: serde_json::Value,
        work: impl Future<Output = Result<T, BusinessError>>,
    ) -> Result<T, BusinessError> {
        let result = match actor {
            // A deactivated user can do nothing, whatever its role.
            Actor::User(user_id) => match self.active_user(user_id).await {
                Ok(_) => work.await,
                Err(e) => Err(e),
            },
            Actor::App => work.await,
        };
        let outcome = match &result {
            Ok(_) => AuditOutcome::Success,
            Err(BusinessError::Internal(_)) => AuditOutcome::Failed,
            Err(_) => AuditOutcome::Denied,
        };
        if let Err(error) = &result {
            if !detail.is_object() {
                detail = serde_json::json!({});
            }
            detail["error"] = error.to_string().into();
        }
        let event = AuditEvent {
            event_id: uuid::Uuid::new_v4().simple().to_string(),
            actor: actor.label(),
            action: action.to_owned(),
            target,
            outcome: outcome.into(),
            time_ms: now_ms(),
            detail_json: if detail.is_null() {
                String::new()
            } else {
                detail.to_string()
            },
            node_id: self.node_id.clone(),
        };
        tracing::info!(actor = %event.actor, action, target = %event.target, outcome = ?outcome, "audit");
        if let Err(error) = self.audit.put(encode(&event)).await {
            tracing::error!(%error, event_id = %event.event_id, "audit event not stored");
            metrics::counter!("im_audit_events_failed_total").increment(1);
        }
        result
    }

    async fn member_event(
        &self,
        actor: &Actor,
        group: &GroupRecord,
        change: MemberChange,
        users: Vec<String>,
        role: GroupRole,
    ) {
        let event = MemberEvent {
            group_id: group.group_id.clone(),
            change: change.into(),
            user_ids: users,
            role: role.into(),
            actor_user_id: actor.label(),
            time_ms: now_ms(),
            version: group.version as u64,
        };
        self.emit(&event).await;
    }

    async fn group_event(&self, actor: &Actor, group: &GroupRecord, change: GroupChange) {
        let event = GroupEvent {
            group_id: group.group_id.clone(),
            change: change.into(),
            actor_user_id: actor.label(),
            time_ms: now_ms(),
            version: group.version as u64,
        };
        self.emit(&event).await;
    }

    async fn ban_event(&self, actor: &Actor, event: BanEvent) {
        let event = BanEvent {
            actor_user_id: actor.label(),
            time_ms: now_ms(),
            ..event
        };
        self.emit(&event).await;
    }

    // ---- users and tokens ------------------------------------------------------------------

    /// Creates the user or updates its profile (app only).
    pub async fn upsert_user(
        &self,
        actor: &Actor,
        user_id: &str,
        display_name: &str,
        avatar_url: &str,
        extra_json: &str,
    ) -> Result<UserRecord, BusinessError> {
        self.audited(actor, "user.upsert", format!("user:{user_id}"), async {
            Self::app_only(actor)?;
            parse_user(user_id)?;
            self.check_name("display_name", display_name, false)?;
            self.check_url(avatar_url)?;
            self.check_extra(extra_json)?;
            let now = now_ms();
            let user = UserRecord {
                user_id: user_id.to_owned(),
                display_name: display_name.to_owned(),
                avatar_url: avatar_url.to_owned(),
                extra_json: extra_json.to_owned(),
                active: true,
                created_at_ms: now,
                updated_at_ms: now,
            };
            Ok(self.store.upsert_user(&user).await?)
        })
        .await
    }

    /// Creates or updates many users at once (app only): how an app imports its users.
    pub async fn import_users(
        &self,
        actor: &Actor,
        users: &[UserImport],
    ) -> Result<usize, BusinessError> {
        let target = format!("users:{}", users.len());
        self.audited(actor, "user.import", target, async {
            Self::app_only(actor)?;
            if users.len() > self.config.max_import_batch {
                return Err(invalid(format!(
                    "at most {} users per import",
                    self.config.max_import_batch
                )));
            }
            let now = now_ms();
            let mut records = Vec::with_capacity(users.len());
            let mut seen = BTreeSet::new();
            for u in users {
                parse_user(&u.user_id)?;
                if !seen.insert(u.user_id.as_str()) {
                    return Err(invalid(format!("{} is listed twice", u.user_id)));
                }
                self.check_name("display_name", &u.display_name, false)?;
                self.check_url(&u.avatar_url)?;
                self.check_extra(&u.extra_json)?;
                records.push(UserRecord {
                    user_id: u.user_id.clone(),
                    display_name: u.display_name.clone(),
                    avatar_url: u.avatar_url.clone(),
                    extra_json: u.extra_json.clone(),
                    active: true,
                    created_at_ms: now,
                    updated_at_ms: now,
                });
            }
            self.store.upsert_users(&records).await?;
            Ok(records.len())
        })
        .await
    }

    /// A user's profile.    /// A user's profile, for the app or any active user.
    pub async fn get_user(
        &self,
        actor: &Actor,
        user_id: &str,
    ) -> Result<UserRecord, BusinessError> {
        if let Actor::User(me) = actor {
            self.active_user(me).await?;
        }
        self.existing_user(user_id).await
    }

    async fn existing_user(&self, user_id: &str) -> Result<UserRecord, BusinessError> {
        parse_user(user_id)?;
        self.store
            .get_user(user_id)
            .await?
            .ok_or_else(|| BusinessError::UserNotFound(user_id.to_owned()))
    }

    /// Deactivates a user (app only): its tokens stop working and its sessions end.
    pub async fn deactivate_user(
        &self,
        actor: &Actor,
        user_id: &str,
    ) -> Result<UserRecord, BusinessError> {
        self.audited(actor, "user.deactivate", format!("user:{user_id}"), async {
            Self::app_only(actor)?;
            parse_user(user_id)?;
            let now = now_ms();
            let user = self.store.deactivate_user(user_id, now).await?;
            let event = BanEvent {
                kind: BanKind::UserDeactivated.into(),
                user_id: user_id.into(),
                until_ms: now,
                ..Default::default()
            };
            self.ban_event(actor, event).await;
            Ok(user)
        })
        .await
    }

    /// A token for an active user on a device (app only); returns it with its expiry.
    pub async fn issue_token(
        &self,
        actor: &Actor,
        user_id: &str,
        device_id: &str,
        ttl_ms: i64,
    ) -> Result<(String, i64), BusinessError> {
        self.audited(actor, "token.issue", format!("user:{user_id}"), async {
            Self::app_only(actor)?;
            device_id
                .parse::<im_proto::DeviceId>()
                .map_err(|e| invalid(e.to_string()))?;
            if ttl_ms < 0 || ttl_ms > self.config.max_token_ttl_ms {
                return Err(invalid(format!(
                    "ttl must be between 0 and {} ms",
                    self.config.max_token_ttl_ms
                )));
            }
            self.active_user(user_id).await?;
            let ttl = if ttl_ms == 0 {
                self.config.default_token_ttl_ms
            } else {
                ttl_ms
            };
            let now = now_ms();
            let token = self
                .issuer
                .issue(user_id, device_id, now, ttl)
                .map_err(|e| BusinessError::Internal(e.to_string()))?;
            Ok((token, now + ttl))
        })
        .await
    }

    /// Logs out one device (or every device, with an empty `device_id`): its tokens issued
    /// until now stop working. The app, or the user itself.
    pub async fn revoke_tokens(
        &self,
        actor: &Actor,
        user_id: &str,
        device_id: &str,
    ) -> Result<(), BusinessError> {
        self.audited(actor, "token.revoke", format!("user:{user_id}"), async {
            Self::app_or_self(actor, user_id)?;
            self.existing_user(user_id).await?;
            if !device_id.is_empty() {
                device_id
                    .parse::<im_proto::DeviceId>()
                    .map_err(|e| invalid(e.to_string()))?;
            }
            let now = now_ms();
            let revocation = Revocation {
                user_id: user_id.into(),
                device_id: device_id.into(),
                revoked_before_ms: now,
            };
            self.store.revoke_tokens(&revocation).await?;
            let event = BanEvent {
                kind: BanKind::TokensRevoked.into(),
                user_id: user_id.into(),
                device_id: device_id.into(),
                until_ms: now,
                ..Default::default()
            };
            self.ban_event(actor, event).await;
            Ok(())
        })
        .await
    }

    // ---- groups ----------------------------------------------------------------------------

    /// Creates a group. A user creates it for itself (it becomes the owner); the app names
    /// the owner.
    pub async fn create_group(
        &self,
        actor: &Actor,
        new: NewGroup,
    ) -> Result<GroupRecord, BusinessError> {
        let group_id = if new.group_id.is_empty() {
            uuid::Uuid::new_v4().simple().to_string()
        } else {
            new.group_id.clone()
        };
        self.audited(actor, "group.create", format!("group:{group_id}"), async {
            let owner = match actor {
                Actor::App => new.owner_user_id.clone(),
                Actor::User(user) if new.owner_user_id.is_empty() || new.owner_user_id == *user => {
                    user.clone()
                }
                Actor::User(_) => return Err(forbidden("a user creates groups it owns")),
            };
            group_id
                .parse::<GroupId>()
                .map_err(|e| invalid(e.to_string()))?;
            self.check_name("name", &new.name, true)?;
            self.check_url(&new.avatar_url)?;
            self.check_extra(&new.extra_json)?;
            let kind = match new.kind {
                ConversationType::Unspecified | ConversationType::Group => ConversationType::Group,
                ConversationType::Channel => ConversationType::Channel,
                ConversationType::Direct => return Err(invalid("a group is GROUP or CHANNEL")),
            };
            let join_policy = match new.join_policy {
                JoinPolicy::Unspecified => JoinPolicy::InviteOnly,
                other => other,
            };
            self.active_user(&owner).await?;
            if new.member_user_ids.contains(&owner) {
                return Err(invalid("the owner is listed among the members"));
            }
            let others = self.active_users(&new.member_user_ids).await?;
            let now = now_ms();
            let member = |user_id: &str, role: GroupRole| MemberRecord {
                group_id: group_id.clone(),
                user_id: user_id.to_owned(),
                role: role as i32,
                joined_at_ms: now,
                muted_until_ms: 0,
            };
            let mut members = vec![member(&owner, GroupRole::Owner)];
            members.extend(others.iter().map(|u| member(u, GroupRole::Member)));
            let record = GroupRecord {
                group_id: group_id.clone(),
                name: new.name.clone(),
                avatar_url: new.avatar_url.clone(),
                owner_user_id: owner.clone(),
                kind: kind as i32,
                join_policy: join_policy as i32,
                max_members: self.config.max_group_members,
                mute_all: false,
                extra_json: new.extra_json.clone(),
                member_count: 0,
                dismissed: false,
                version: 0,
                created_at_ms: now,
            };
            let group = self.store.create_group(&record, &members).await?;
            self.group_event(actor, &group, GroupChange::Created).await;
            let everyone = members.iter().map(|m| m.user_id.clone()).collect();
            self.member_event(
                actor,
                &group,
                MemberChange::Added,
                everyone,
                GroupRole::Member,
            )
            .await;
            Ok(group)
        })
        .await
    }

    /// A group, for the app or its members.
    pub async fn get_group(
        &self,
        actor: &Actor,
        group_id: &str,
    ) -> Result<GroupRecord, BusinessError> {
        Ok(self.standing(actor, group_id).await?.0)
    }

    /// Changes a group's profile or its mute-all switch (owner, admins, the app).
    pub async fn update_group(
        &self,
        actor: &Actor,
        group_id: &str,
        update: GroupUpdate,
    ) -> Result<GroupRecord, BusinessError> {
        self.audited(actor, "group.update", format!("group:{group_id}"), async {
            let (before, standing) = self.standing(actor, group_id).await?;
            if standing < Standing::Admin {
                return Err(forbidden("only the owner and admins change the group"));
            }
            if let Some(name) = &update.name {
                self.check_name("name", name, true)?;
            }
            if let Some(avatar_url) = &update.avatar_url {
                self.check_url(avatar_url)?;
            }
            if let Some(extra_json) = &update.extra_json {
                self.check_extra(extra_json)?;
            }
            if update.join_policy == Some(JoinPolicy::Unspecified) {
                return Err(invalid("join_policy is unspecified"));
            }
            let changes = GroupChanges {
                name: update.name,
                avatar_url: update.avatar_url,
                join_policy: update.join_policy.map(|p| p as i32),
                mute_all: update.mute_all,
                extra_json: update.extra_json,
            };
            let group = self.store.update_group(group_id, &changes).await?;
            let change = if group.mute_all != before.mute_all {
                GroupChange::MuteAll
            } else {
                GroupChange::Updated
            };
            self.group_event(actor, &group, change).await;
            Ok(group)
        })
        .await
    }

    /// Dismisses a group (owner, the app).
    pub async fn dismiss_group(&self, actor: &Actor, group_id: &str) -> Result<(), BusinessError> {
        self.audited(actor, "group.dismiss", format!("group:{group_id}"), async {
            let (_, standing) = self.standing(actor, group_id).await?;
            if standing < Standing::Owner {
                return Err(forbidden("only the owner dismisses the group"));
            }
            let group = self.store.dismiss_group(group_id).await?;
            self.group_event(actor, &group, GroupChange::Dismissed)
                .await;
            Ok(())
        })
        .await
    }

    /// Adds members (owner, admins, the app; any member when the group is open).
    pub async fn add_members(
        &self,
        actor: &Actor,
        group_id: &str,
        user_ids: &[String],
    ) -> Result<GroupRecord, BusinessError> {
        self.audited_with(
            actor,
            "group.member.add",
            format!("group:{group_id}"),
            serde_json::json!({ "users": user_ids }),
            async {
                if user_ids.is_empty() {
                    return Err(invalid("no users to add"));
                }
                let (group, standing) = self.standing(actor, group_id).await?;
                let open = group.join_policy == JoinPolicy::Open as i32;
                if standing < Standing::Admin && !open {
                    return Err(forbidden(
                        "only the owner and admins add members to this group",
                    ));
                }
                let users = self.active_users(user_ids).await?;
                let now = now_ms();
                let members: Vec<MemberRecord> = users
                    .iter()
                    .map(|user_id| MemberRecord {
                        group_id: group_id.to_owned(),
                        user_id: user_id.clone(),
                        role: GroupRole::Member as i32,
                        joined_at_ms: now,
                        muted_until_ms: 0,
                    })
                    .collect();
                let group = self.store.add_members(group_id, &members).await?;
                self.member_event(actor, &group, MemberChange::Added, users, GroupRole::Member)
                    .await;
                Ok(group)
            },
        )
        .await
    }

    /// Removes members (owner and the app any member but the owner; admins plain members).
    pub async fn remove_members(
        &self,
        actor: &Actor,
        group_id: &str,
        user_ids: &[String],
    ) -> Result<GroupRecord, BusinessError> {
        self.audited_with(
            actor,
            "group.member.remove",
            format!("group:{group_id}"),
            serde_json::json!({ "users": user_ids }),
            async {
                if user_ids.is_empty() {
                    return Err(invalid("no users to remove"));
                }
                if user_ids.iter().collect::<BTreeSet<_>>().len() != user_ids.len() {
                    return Err(invalid("a user is listed twice"));
                }
                let (_, standing) = self.standing(actor, group_id).await?;
                if standing < Standing::Admin {
                    return Err(forbidden("only the owner and admins remove members"));
                }
                for user_id in user_ids {
                    let target = Standing::of(self.member(group_id, user_id).await?.role);
                    if target == Standing::Owner {
                        return Err(BusinessError::Conflict(
                            "the owner cannot be removed; transfer ownership first".into(),
                        ));
                    }
                    if standing == Standing::Admin && target >= Standing::Admin {
                        return Err(forbidden("admins remove plain members only"));
                    }
                }
                let group = self.store.remove_members(group_id, user_ids).await?;
                self.member_event(
                    actor,
                    &group,
                    MemberChange::Removed,
                    user_ids.to_vec(),
                    GroupRole::Unspecified,
                )
                .await;
                Ok(group)
            },
        )
        .await
    }

    /// A member leaves (the member itself, or the app for it). The owner must hand over first.
    pub async fn leave_group(
        &self,
        actor: &Actor,
        group_id: &str,
        user_id: &str,
    ) -> Result<(), BusinessError> {
        self.audited_with(
            actor,
            "group.member.leave",
            format!("group:{group_id}"),
            serde_json::json!({ "users": [user_id] }),
            async {
                Self::app_or_self(actor, user_id)?;
                self.standing(&Actor::App, group_id).await?;
                let member = self.member(group_id, user_id).await?;
                if Standing::of(member.role) == Standing::Owner {
                    return Err(BusinessError::Conflict(
                        "the owner cannot leave; transfer ownership first".into(),
                    ));
                }
                let group = self
                    .store
                    .remove_members(group_id, &[user_id.to_owned()])
                    .await?;
                self.member_event(
                    actor,
                    &group,
                    MemberChange::Left,
                    vec![user_id.to_owned()],
                    GroupRole::Unspecified,
                )
                .await;
                Ok(())
            },
        )
        .await
    }

    /// A page of members in user id order, after `after` (the app or members).
    pub async fn list_members(
        &self,
        actor: &Actor,
        group_id: &str,
        after: &str,
        limit: u32,
    ) -> Result<Page<MemberRecord>, BusinessError> {
        self.standing(actor, group_id).await?;
        let limit = self.page_limit(limit);
        let members = self.store.list_members(group_id, after, limit).await?;
        Ok(Page::of(members, limit, |m| &m.user_id))
    }

    /// Makes a member an admin or a plain member again (owner, the app).
    pub async fn set_member_role(
        &self,
        actor: &Actor,
        group_id: &str,
        user_id: &str,
        role: GroupRole,
    ) -> Result<(), BusinessError> {
        self.audited_with(
            actor,
            "group.member.role",
            format!("group:{group_id}"),
            serde_json::json!({ "users": [user_id], "role": role.as_str_name() }),
            async {
                if !matches!(role, GroupRole::Admin | GroupRole::Member) {
                    return Err(invalid(
                        "role is ADMIN or MEMBER; ownership moves with TransferOwnership",
                    ));
                }
                let (_, standing) = self.standing(actor, group_id).await?;
                if standing < Standing::Owner {
                    return Err(forbidden("only the owner changes roles"));
                }
                // The store refuses to change the owner's role, checked where it is written.
                let group = self
                    .store
                    .set_member_role(group_id, user_id, role as i32)
                    .await?;
                self.member_event(
                    actor,
                    &group,
                    MemberChange::RoleChanged,
                    vec![user_id.to_owned()],
                    role,
                )
                .await;
                Ok(())
            },
        )
        .await
    }

    /// Hands the group to another member; the old owner becomes an admin (owner, the app).
    pub async fn transfer_ownership(
        &self,
        actor: &Actor,
        group_id: &str,
        new_owner: &str,
    ) -> Result<(), BusinessError> {
        self.audited_with(
            actor,
            "group.owner.transfer",
            format!("group:{group_id}"),
            serde_json::json!({ "users": [new_owner] }),
            async {
                let (group, standing) = self.standing(actor, group_id).await?;
                if standing < Standing::Owner {
                    return Err(forbidden("only the owner transfers ownership"));
                }
                if group.owner_user_id == new_owner {
                    return Err(BusinessError::Conflict(format!(
                        "{new_owner} owns the group already"
                    )));
                }
                self.member(group_id, new_owner).await?;
                self.active_user(new_owner).await?;
                let group = self
                    .store
                    .transfer_ownership(group_id, &group.owner_user_id, new_owner)
                    .await?;
                self.group_event(actor, &group, GroupChange::OwnerTransferred)
                    .await;
                self.member_event(
                    actor,
                    &group,
                    MemberChange::RoleChanged,
                    vec![new_owner.to_owned()],
                    GroupRole::Owner,
                )
                .await;
                Ok(())
            },
        )
        .await
    }

    /// Mutes a member until `until_ms` (0 lifts the mute). Owner and the app mute anyone but
    /// the owner; admins plain members.
    pub async fn mute_member(
        &self,
        actor: &Actor,
        group_id: &str,
        user_id: &str,
        until_ms: i64,
    ) -> Result<(), BusinessError> {
        self.audited_with(
            actor,
            "group.member.mute",
            format!("group:{group_id}"),
            serde_json::json!({ "users": [user_id], "until_ms": until_ms }),
            async {
                if until_ms < 0 {
                    return Err(invalid("until_ms is negative"));
                }
                let (_, standing) = self.standing(actor, group_id).await?;
                if standing < Standing::Admin {
                    return Err(forbidden("only the owner and admins mute members"));
                }
                let member = self.member(group_id, user_id).await?;
                let target = Standing::of(member.role);
                if target == Standing::Owner
                    || (standing == Standing::Admin && target >= Standing::Admin)
                {
                    return Err(forbidden("this member cannot be muted by this actor"));
                }
                self.store
                    .set_member_mute(group_id, user_id, until_ms)
                    .await?;
                let kind = if until_ms == 0 {
                    BanKind::MemberUnmuted
                } else {
                    BanKind::MemberMuted
                };
                let event = BanEvent {
                    kind: kind.into(),
                    user_id: user_id.into(),
                    group_id: group_id.into(),
                    until_ms,
                    ..Default::default()
                };
                self.ban_event(actor, event).await;
                Ok(())
            },
        )
        .await
    }

    // ---- blacklist and contacts ------------------------------------------------------------

    /// `user_id` blocks (or, with `on` false, unblocks) `blocked`: a blocked user cannot send
    /// to the blocker. The app, or the user itself.
    pub async fn set_block(
        &self,
        actor: &Actor,
        user_id: &str,
        blocked: &str,
        on: bool,
    ) -> Result<(), BusinessError> {
        self.set_relation(actor, Relation::Block, user_id, blocked, on)
            .await
    }

    /// The users `user_id` blocks, a page in id order (the app, or the user itself).
    pub async fn list_blocked(
        &self,
        actor: &Actor,
        user_id: &str,
        after: &str,
        limit: u32,
    ) -> Result<Page<String>, BusinessError> {
        Self::app_or_self(actor, user_id)?;
        self.active_user(user_id).await?;
        let limit = self.page_limit(limit);
        let blocked = self.store.list_blocked(user_id, after, limit).await?;
        Ok(Page::of(blocked, limit, String::as_str))
    }

    /// Adds (or removes) `contact` as a contact of `user_id` (the app, or the user itself).
    pub async fn set_contact(
        &self,
        actor: &Actor,
        user_id: &str,
        contact: &str,
        on: bool,
    ) -> Result<(), BusinessError> {
        self.set_relation(actor, Relation::Contact, user_id, contact, on)
            .await
    }

    /// Adds or lifts a relation of `user_id` to `other`, announced on `im.ban` so that caches
    /// drop the 1:1 decisions it may change.
    async fn set_relation(
        &self,
        actor: &Actor,
        relation: Relation,
        user_id: &str,
        other: &str,
        on: bool,
    ) -> Result<(), BusinessError> {
        let (action, kind) = match (relation, on) {
            (Relation::Block, true) => ("user.block", BanKind::UserBlocked),
            (Relation::Block, false) => ("user.unblock", BanKind::UserUnblocked),
            (Relation::Contact, true) => ("contact.add", BanKind::ContactAdded),
            (Relation::Contact, false) => ("contact.remove", BanKind::ContactRemoved),
        };
        self.audited(actor, action, format!("user:{other}"), async {
            Self::app_or_self(actor, user_id)?;
            if user_id == other {
                return Err(invalid(format!("{action} needs two different users")));
            }
            self.active_user(user_id).await?;
            self.existing_user(other).await?;
            let now = now_ms();
            match relation {
                Relation::Block => self.store.set_block(user_id, other, on, now).await?,
                Relation::Contact => self.store.set_contact(user_id, other, on, now).await?,
            };
            let event = BanEvent {
                kind: kind.into(),
                user_id: user_id.into(),
                target_user_id: other.into(),
                ..Default::default()
            };
            self.ban_event(actor, event).await;
            Ok(())
        })
        .await
    }

    // ---- directory, for core nodes ---------------------------------------------------------

    /// A page of a group's member ids for fan-out (no actor: core nodes ask on the bus), with
    /// whether more follow and the group's version. The page is at most `max_page` members.
    pub async fn member_ids(
        &self,
        group_id: &str,
        after: &str,
        limit: u32,
    ) -> Result<(Vec<String>, bool, u64), BusinessError> {
        let group = match self.store.get_group(group_id).await? {
            Some(group) if !group.dismissed => group,
            _ => return Err(BusinessError::GroupNotFound(group_id.into())),
        };
        let limit = if limit == 0 {
            self.config.max_page
        } else {
            limit.min(self.config.max_page)
        };
        let page = self.store.list_members(group_id, after, limit).await?;
        let more = page.len() == limit as usize;
        let ids = page.into_iter().map(|m| m.user_id).collect();
        Ok((ids, more, group.version.max(0) as u64))
    }

    /// A page of the token revocations on record, for core nodes that start after them: up to
    /// `limit` (at most [`MAX_REVOCATIONS_PAGE`]) after the key (`after_user_id`,
    /// `after_device_id`), in key order, and whether more may follow. A `limit` of 0 is what
    /// core nodes from before pages ask: they get every revocation at once, as they expect.
    pub async fn revocations(
        &self,
        after_user_id: &str,
        after_device_id: &str,
        limit: u32,
    ) -> Result<(Vec<crate::store::Revocation>, bool), BusinessError> {
        if limit == 0 {
            return Ok((self.all_revocations().await?, false));
        }
        self.revocations_page(after_user_id, after_device_id, limit)
            .await
    }

    /// Every token revocation on record, page by page.
    pub async fn all_revocations(&self) -> Result<Vec<crate::store::Revocation>, BusinessError> {
        let mut all: Vec<crate::store::Revocation> = Vec::new();
        loop {
            let (after_user, after_device) = all
                .last()
                .map(|r| (r.user_id.clone(), r.device_id.clone()))
                .unwrap_or_default();
            let (page, more) = self
                .revocations_page(&after_user, &after_device, MAX_REVOCATIONS_PAGE)
                .await?;
            all.extend(page);
            if !more {
                return Ok(all);
            }
        }
    }

    /// Up to `limit` (at most [`MAX_REVOCATIONS_PAGE`]) revocations after the key, and whether
    /// more may follow.
    async fn revocations_page(
        &self,
        after_user_id: &str,
        after_device_id: &str,
        limit: u32,
    ) -> Result<(Vec<crate::store::Revocation>, bool), BusinessError> {
        let limit = limit.min(MAX_REVOCATIONS_PAGE);
        let page = self
            .store
            .revocations(after_user_id, after_device_id, limit)
            .await?;
        let more = page.len() == limit as usize;
        Ok((page, more))
    }

    /// The groups and channels `user_id` is a member of, for sync.
    pub async fn groups_of(&self, user_id: &str) -> Result<Vec<UserGroup>, BusinessError> {
        let groups = self.store.groups_of(user_id).await?;
        Ok(groups
            .into_iter()
            .map(|(group, member)| UserGroup {
                group_id: group.group_id,
                r#type: group.kind,
                role: member.role,
            })
            .collect())
    }

    // ---- permission checks -----------------------------------------------------------------

    /// May `user_id` do `action` in `conversation_id`? The answer core nodes cache.
    pub async fn check_permission(
        &self,
        user_id: &str,
        conversation_id: &str,
        action: ConversationAction,
    ) -> PermissionDecision {
        let ttl_ms = self.config.decision_ttl_ms;
        let deny = |code: ErrorCode, reason: String| PermissionDecision {
            allowed: false,
            code: code as i32,
            reason,
            ttl_ms,
            until_ms: 0,
        };
        match self.decide(user_id, conversation_id, action).await {
            Ok(()) => PermissionDecision {
                allowed: true,
                ttl_ms,
                ..Default::default()
            },
            Err(e @ BusinessError::Muted { until_ms, .. }) if until_ms > 0 => PermissionDecision {
                // A mute ends by itself: the decision must not outlive it.
                ttl_ms: ttl_ms.min((until_ms - now_ms()).max(0) as u64),
                until_ms,
                ..deny(e.code(), e.to_string())
            },
            // A fault is not a decision: nothing to cache.
            Err(BusinessError::Internal(reason)) => PermissionDecision {
                ttl_ms: 0,
                ..deny(ErrorCode::Internal, reason)
            },
            Err(e) => deny(e.code(), e.to_string()),
        }
    }

    async fn decide(
        &self,
        user_id: &str,
        conversation_id: &str,
        action: ConversationAction,
    ) -> Result<(), BusinessError> {
        let conversation: ConversationId = conversation_id
            .parse()
            .map_err(|e: im_proto::IdError| invalid(e.to_string()))?;
        if action == ConversationAction::Unspecified {
            return Err(invalid("action is unspecified"));
        }
        self.active_user(user_id).await?;
        match conversation.kind() {
            ConversationKind::Direct(..) => {
                let me: UserId = parse_user(user_id)?;
                let peer = conversation.peer_of(&me).ok_or_else(|| {
                    forbidden(format!("{user_id} is not part of {conversation_id}"))
                })?;
                if action == ConversationAction::Manage {
                    return Err(forbidden("1:1 conversations have no managers"));
                }
                if action == ConversationAction::Read || peer == &me {
                    return Ok(());
                }
                let peer = peer.as_str();
                match self.store.get_user(peer).await? {
                    Some(user) if user.active => {}
                    _ => return Err(forbidden(format!("{peer} cannot be reached"))),
                }
                if self.store.is_blocked(peer, user_id).await? {
                    return Err(BusinessError::Blocked {
                        user_id: user_id.into(),
                        by: peer.into(),
                    });
                }
                if self.config.direct_requires_contact
                    && !self.store.is_contact(peer, user_id).await?
                {
                    return Err(BusinessError::NotAContact {
                        user_id: user_id.into(),
                        of: peer.into(),
                    });
                }
                Ok(())
            }
            ConversationKind::Group(group_id) => {
                let group = match self.store.get_group(group_id.as_str()).await? {
                    Some(group) if !group.dismissed => group,
                    _ => return Err(BusinessError::GroupNotFound(group_id.to_string())),
                };
                let member = self.member(group_id.as_str(), user_id).await?;
                let standing = Standing::of(member.role);
                let muted = |until_ms| BusinessError::Muted {
                    group_id: group.group_id.clone(),
                    until_ms,
                };
                match action {
                    ConversationAction::Read => Ok(()),
                    ConversationAction::Manage if standing >= Standing::Admin => Ok(()),
                    ConversationAction::Manage => {
                        Err(forbidden("only the owner and admins manage the group"))
                    }
                    // A member's own mute binds admins too; mute-all and channels spare them.
                    _ if member.muted_until_ms > now_ms() => Err(muted(member.muted_until_ms)),
                    _ if standing >= Standing::Admin => Ok(()),
                    _ if group.kind == ConversationType::Channel as i32 => {
                        Err(forbidden("only the owner and admins post in a channel"))
                    }
                    _ if group.mute_all => Err(muted(0)),
                    _ => Ok(()),
                }
            }
        }
    }
}
