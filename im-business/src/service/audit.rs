//! The audit trail and the announcements: every operation that changes something runs inside
//! `Business::audited`, which records the attempt (succeeded, denied or failed) in the audit
//! outbox; the event emitters publish what changed on `im.member`, `im.group` and `im.ban`.

use std::future::Future;

use im_common::bus::encode;
use im_proto::{
    bus::BusEvent,
    v1::{
        AuditEvent, AuditOutcome, BanEvent, GroupChange, GroupEvent, GroupRole, MemberChange,
        MemberEvent,
    },
};

use super::{Actor, Business, now_ms};
use crate::{error::BusinessError, store::GroupRecord};

impl Business {
    /// Publishes `event`. A failure is logged, not returned: the change is stored already, and
    /// the decisions core nodes cached from before it still expire within their TTL.
    async fn emit<E: BusEvent>(&self, event: &E) {
        if let Err(error) = self.bus.emit(event).await {
            tracing::warn!(subject = E::SUBJECT, %error, "event not published");
        }
    }

    /// Runs `work` and records the attempt, whatever its outcome, in the audit trail.
    pub(super) async fn audited<T>(
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
    pub(crate) async fn audited_with<T>(
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

    /// Announces a change of membership on `im.member`, at the group's version after it.
    pub(super) async fn member_event(
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

    /// Announces again the members whose add a late notice completed: they see the group from
    /// that notice on now.
    pub(super) async fn joined_event(&self, group_id: &str, users: Vec<String>) {
        match self.store.get_group(group_id).await {
            Ok(Some(group)) => {
                self.member_event(
                    &Actor::App,
                    &group,
                    MemberChange::Added,
                    users,
                    GroupRole::Member,
                )
                .await;
            }
            Ok(None) => {}
            Err(error) => tracing::warn!(group_id, %error, "members not announced again"),
        }
    }

    /// Announces a change of the group itself on `im.group`, at its version after it.
    pub(super) async fn group_event(
        &self,
        actor: &Actor,
        group: &GroupRecord,
        change: GroupChange,
    ) {
        let event = GroupEvent {
            group_id: group.group_id.clone(),
            change: change.into(),
            actor_user_id: actor.label(),
            time_ms: now_ms(),
            version: group.version as u64,
        };
        self.emit(&event).await;
    }

    /// Announces a ban, mute, block, contact or revocation on `im.ban`, stamped with the actor
    /// and the time.
    pub(super) async fn ban_event(&self, actor: &Actor, event: BanEvent) {
        let event = BanEvent {
            actor_user_id: actor.label(),
            time_ms: now_ms(),
            ..event
        };
        self.emit(&event).await;
    }
}
