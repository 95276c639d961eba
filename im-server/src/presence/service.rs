//! The presence module as sessions use it: a device connects or leaves, a user chooses a
//! status, a connection watches other users. Every change others can see is published on
//! `im.presence`, which each node's event intake pushes to the sessions watching the user.

use std::sync::Arc;

use futures::{StreamExt, stream};
use im_common::{
    bus::Bus,
    now_ms,
    settings::{Live, Reloadable, SettingsError},
};
use im_proto::{
    ConversationId, ErrorCode, UserId,
    v1::{
        ConversationAction, Error, Presence, PresenceChanged, PresenceList, PresenceStatus,
        SetPresence,
    },
};

use super::PresenceStore;
use crate::{
    business::Permissions,
    sessions::{SessionHandle, Sessions},
};

/// Presence decisions asked of the business service at once, for one subscription.
const CHECKS_IN_FLIGHT: usize = 16;

/// The limits a connection's presence requests are held to: table `[core.presence]`, all of
/// it live (read at each request).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Users one connection may watch at once (QUOTA_EXCEEDED past it).
    pub max_subscriptions: u32,
    /// The longest status text, in bytes.
    pub max_status_text_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_subscriptions: 1_000,
            max_status_text_bytes: 256,
        }
    }
}

impl Reloadable for Limits {
    fn check_reload(&self, _next: &Self) -> Result<(), SettingsError> {
        Ok(())
    }
}

/// Presence for this node's sessions.
pub struct PresenceService {
    store: Arc<dyn PresenceStore>,
    sessions: Arc<Sessions>,
    permissions: Arc<Permissions>,
    bus: Arc<dyn Bus>,
    node_id: String,
    limits: Live<Limits>,
}

impl std::fmt::Debug for PresenceService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PresenceService")
            .field("node_id", &self.node_id)
            .finish_non_exhaustive()
    }
}

impl PresenceService {
    /// Presence of node `node_id`'s sessions, kept in `store`, announced on `bus`, shown to
    /// whom `permissions` allow.
    pub fn new(
        store: Arc<dyn PresenceStore>,
        sessions: Arc<Sessions>,
        permissions: Arc<Permissions>,
        bus: Arc<dyn Bus>,
        node_id: &str,
        limits: Live<Limits>,
    ) -> Self {
        Self {
            store,
            sessions,
            permissions,
            bus,
            node_id: node_id.to_owned(),
            limits,
        }
    }

    /// The store behind it.
    pub fn store(&self) -> &Arc<dyn PresenceStore> {
        &self.store
    }

    /// A session opened: its user may have come online.
    pub async fn connected(&self, session: &SessionHandle) {
        let online = self
            .store
            .connected(
                &session.user_id,
                &session.session_id,
                session.platform,
                now_ms(),
            )
            .await;
        self.announce(online).await;
    }

    /// A session ended: its user may have gone offline.
    pub async fn disconnected(&self, session: &SessionHandle) {
        let left = self
            .store
            .disconnected(&session.user_id, &session.session_id, now_ms())
            .await;
        self.announce(left).await;
    }

    /// The user chose a status (ONLINE while any device is connected, unless it chose AWAY or
    /// BUSY) and a status text.
    pub async fn set(&self, user: &UserId, set: &SetPresence) -> Result<(), Error> {
        let max = self.limits.get().max_status_text_bytes;
        if set.status_text.len() > max {
            let mut error = Error::new(
                ErrorCode::InvalidArgument,
                format!("status_text is at most {max} bytes"),
            );
            error.limit = max as u64;
            return Err(error);
        }
        // A status this server does not know is refused, not read as ONLINE: the client
        // would believe others see what it chose.
        let status = match PresenceStatus::try_from(set.status) {
            Ok(PresenceStatus::Unspecified | PresenceStatus::Offline) => PresenceStatus::Online,
            Ok(chosen) => chosen,
            Err(_) => {
                return Err(Error::new(
                    ErrorCode::InvalidArgument,
                    format!("status {} is not a PresenceStatus", set.status),
                ));
            }
        };
        let changed = self
            .store
            .set_status(user.as_str(), status, &set.status_text, now_ms())
            .await;
        self.announce(changed).await;
        Ok(())
    }

    /// `session` watches `user_ids` from now on; their presence now.
    pub async fn subscribe(
        &self,
        session: &SessionHandle,
        user_ids: &[String],
    ) -> Result<PresenceList, Error> {
        let mut unique: Vec<String> = user_ids.to_vec();
        unique.sort_unstable();
        unique.dedup();
        if let Some(bad) = unique.iter().find(|u| UserId::new(u.as_str()).is_err()) {
            return Err(Error::new(
                ErrorCode::InvalidArgument,
                format!("not a user id: {bad:?}"),
            ));
        }
        let max = self.limits.get().max_subscriptions as usize;
        if unique.len() > max {
            return Err(Error::new(
                ErrorCode::QuotaExceeded,
                format!("a connection watches at most {max} users"),
            ));
        }
        let unique = self.visible_to(&session.user, unique).await?;
        if !self.sessions.watch(&session.session_id, &unique, max) {
            return Err(Error::new(
                ErrorCode::QuotaExceeded,
                format!("a connection watches at most {max} users"),
            ));
        }
        let presences = self.store.get(&unique).await;
        Ok(PresenceList { presences })
    }

    /// Those of `user_ids` (valid ids) whose presence `watcher` may see, as the business
    /// service's presence policy decides (cached like every permission decision).
    async fn visible_to(
        &self,
        watcher: &UserId,
        user_ids: Vec<String>,
    ) -> Result<Vec<String>, Error> {
        let checks = user_ids.into_iter().map(|id| async move {
            let watched = UserId::new(id.as_str()).ok()?;
            if watched == *watcher {
                return Some(Ok(id));
            }
            let pair = ConversationId::direct(watcher.clone(), watched);
            let decision = self
                .permissions
                .check(watcher, &pair, ConversationAction::SeePresence)
                .await;
            match decision {
                Ok(decision) if decision.allowed => Some(Ok(id)),
                Ok(_) => None,
                Err(error) => Some(Err(error)),
            }
        });
        let decided: Vec<_> = stream::iter(checks)
            .buffered(CHECKS_IN_FLIGHT)
            .filter_map(|d| async move { d })
            .collect()
            .await;
        decided
            .into_iter()
            .collect::<Result<_, _>>()
            .map_err(|error| {
                let mut refusal =
                    Error::new(ErrorCode::Unavailable, format!("presence policy: {error}"));
                refusal.retry_after_ms = 1_000;
                refusal
            })
    }

    /// `session` stops watching `user_ids`.
    pub fn unsubscribe(&self, session: &SessionHandle, user_ids: &[String]) {
        self.sessions.unwatch(&session.session_id, user_ids);
    }

    async fn announce(&self, presence: Option<Presence>) {
        let Some(presence) = presence else { return };
        let event = PresenceChanged {
            presence: Some(presence),
            node_id: self.node_id.clone(),
            time_ms: now_ms(),
        };
        if let Err(error) = self.bus.emit(&event).await {
            tracing::warn!(%error, "presence change not published");
        }
    }
}
