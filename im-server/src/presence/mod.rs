//! Who is online, on which platforms, with which chosen status. The embedded mode keeps it in
//! memory ([`MemoryPresence`]); the distributed one keeps the same records in Redis with leases,
//! behind the same trait. [`PresenceService`] is the module as sessions use it: connecting,
//! leaving, choosing a status, watching other users.

use std::{collections::HashMap, sync::Mutex};

use crate::sessions::LiveSession;

use async_trait::async_trait;
use im_proto::v1::{Platform, Presence, PresenceStatus};

#[cfg(feature = "redis")]
pub mod redis;
mod service;

pub use service::{Limits, PresenceService};

/// The presence records of every user.
#[async_trait]
pub trait PresenceStore: Send + Sync + 'static {
    /// A device of `user_id` connected (session `session_id`). Returns the user's presence if
    /// what others see changed.
    async fn connected(
        &self,
        user_id: &str,
        session_id: &str,
        platform: Platform,
        now_ms: i64,
    ) -> Option<Presence>;

    /// The session left. Returns the user's presence if what others see changed.
    async fn disconnected(&self, user_id: &str, session_id: &str, now_ms: i64) -> Option<Presence>;

    /// The user chose a status. Returns the user's presence if what others see changed.
    async fn set_status(
        &self,
        user_id: &str,
        status: PresenceStatus,
        text: &str,
        now_ms: i64,
    ) -> Option<Presence>;

    /// The presence of each user, in order (OFFLINE for users never seen).
    async fn get(&self, user_ids: &[String]) -> Vec<Presence>;

    /// Whether other nodes keep their sessions here too (the distributed mode): only then are
    /// there leases to renew and routes to other nodes.
    fn shared(&self) -> bool {
        false
    }

    /// The node's sessions are still there: it renews their leases together, every third of a
    /// lease. Stores without leases ignore it.
    async fn renew(&self, _sessions: &[LiveSession], _now_ms: i64) -> Result<(), String> {
        Ok(())
    }

    /// The nodes holding a live session of each of `user_ids` (users with none are left out).
    /// Asked only of a [`shared`](Self::shared) store; others know no nodes.
    async fn routes(
        &self,
        _user_ids: &[String],
        _now_ms: i64,
    ) -> Result<HashMap<String, Vec<String>>, String> {
        Ok(HashMap::new())
    }
}

#[derive(Debug, Default)]
struct Record {
    /// Online sessions and their platforms.
    sessions: Vec<(String, Platform)>,
    status: PresenceStatus,
    text: String,
    last_seen_ms: i64,
}

impl Record {
    fn view(&self, user_id: &str) -> Presence {
        if self.sessions.is_empty() {
            return Presence {
                user_id: user_id.to_owned(),
                status: PresenceStatus::Offline as i32,
                status_text: String::new(),
                platforms: Vec::new(),
                last_seen_ms: self.last_seen_ms,
            };
        }
        let mut platforms: Vec<i32> = self.sessions.iter().map(|(_, p)| *p as i32).collect();
        platforms.sort_unstable();
        platforms.dedup();
        let status = match self.status {
            PresenceStatus::Unspecified | PresenceStatus::Offline => PresenceStatus::Online,
            chosen => chosen,
        };
        Presence {
            user_id: user_id.to_owned(),
            status: status as i32,
            status_text: self.text.clone(),
            platforms,
            last_seen_ms: 0,
        }
    }
}

/// Presence in this process's memory: the embedded mode's store.
#[derive(Debug, Default)]
pub struct MemoryPresence {
    users: Mutex<HashMap<String, Record>>,
}

impl MemoryPresence {
    fn change(&self, user_id: &str, edit: impl FnOnce(&mut Record)) -> Option<Presence> {
        let mut users = self.users.lock().unwrap_or_else(|e| e.into_inner());
        let record = users.entry(user_id.to_owned()).or_default();
        let before = record.view(user_id);
        edit(record);
        let after = record.view(user_id);
        (before != after).then_some(after)
    }
}

#[async_trait]
impl PresenceStore for MemoryPresence {
    async fn connected(
        &self,
        user_id: &str,
        session_id: &str,
        platform: Platform,
        _now_ms: i64,
    ) -> Option<Presence> {
        self.change(user_id, |r| {
            r.sessions.retain(|(s, _)| s != session_id);
            r.sessions.push((session_id.to_owned(), platform));
        })
    }

    async fn disconnected(&self, user_id: &str, session_id: &str, now_ms: i64) -> Option<Presence> {
        self.change(user_id, |r| {
            r.sessions.retain(|(s, _)| s != session_id);
            if r.sessions.is_empty() {
                r.last_seen_ms = now_ms;
            }
        })
    }

    async fn set_status(
        &self,
        user_id: &str,
        status: PresenceStatus,
        text: &str,
        _now_ms: i64,
    ) -> Option<Presence> {
        self.change(user_id, |r| {
            r.status = status;
            text.clone_into(&mut r.text);
        })
    }

    async fn get(&self, user_ids: &[String]) -> Vec<Presence> {
        let users = self.users.lock().unwrap_or_else(|e| e.into_inner());
        user_ids
            .iter()
            .map(|id| match users.get(id) {
                Some(record) => record.view(id),
                None => Record::default().view(id),
            })
            .collect()
    }
}

/// Runs every presence suite function, each as a test of its own, on the store `$make`
/// yields with a user id of its own (a Redis may be shared): `Some((store, user))`, or `None`
/// to skip.
#[cfg(test)]
macro_rules! presence_suite {
    ($make:expr) => {
        $crate::presence::presence_suite!(@each $make;
            online_on_every_platform_of_the_devices_connected,
            a_chosen_status_is_announced_once,
            offline_with_the_time_the_last_device_left,
        );
    };
    (@each $make:expr; $($name:ident),* $(,)?) => {
        $(
            #[tokio::test]
            async fn $name() {
                let Some((store, user)) = $make.await else { return };
                $crate::presence::suite::$name(&store, &user).await;
            }
        )*
    };
}
#[cfg(test)]
pub(crate) use presence_suite;

/// What every [`PresenceStore`] must do; run against the memory store and against Redis.
#[cfg(test)]
pub(crate) mod suite {
    use super::*;

    pub(crate) async fn online_on_every_platform_of_the_devices_connected(
        presence: &dyn PresenceStore,
        amy: &str,
    ) {
        let ids = [amy.to_owned()];
        assert_eq!(
            presence.get(&ids).await[0].status(),
            PresenceStatus::Offline,
            "never seen: offline"
        );
        let online = presence
            .connected(amy, "s1", Platform::Ios, 1)
            .await
            .expect("changed");
        assert_eq!(
            (online.status(), online.platforms.clone()),
            (PresenceStatus::Online, vec![Platform::Ios as i32])
        );
        let both = presence.connected(amy, "s2", Platform::Web, 2).await;
        assert_eq!(both.expect("a platform was added").platforms.len(), 2);
    }

    pub(crate) async fn a_chosen_status_is_announced_once(presence: &dyn PresenceStore, amy: &str) {
        presence.connected(amy, "s1", Platform::Ios, 1).await;
        let busy = presence
            .set_status(amy, PresenceStatus::Busy, "in a meeting", 3)
            .await
            .expect("changed");
        assert_eq!(
            (busy.status(), busy.status_text.as_str()),
            (PresenceStatus::Busy, "in a meeting")
        );
        assert_eq!(
            presence
                .set_status(amy, PresenceStatus::Busy, "in a meeting", 4)
                .await,
            None,
            "no change, no event"
        );
    }

    pub(crate) async fn offline_with_the_time_the_last_device_left(
        presence: &dyn PresenceStore,
        amy: &str,
    ) {
        let ids = [amy.to_owned()];
        presence.connected(amy, "s1", Platform::Ios, 1).await;
        presence.connected(amy, "s2", Platform::Web, 2).await;
        presence
            .set_status(amy, PresenceStatus::Busy, "in a meeting", 3)
            .await;
        let one_left = presence.disconnected(amy, "s1", 5).await.expect("changed");
        assert_eq!(one_left.status(), PresenceStatus::Busy, "still online");
        let gone = presence.disconnected(amy, "s2", 6).await.expect("changed");
        assert_eq!(
            (gone.status(), gone.last_seen_ms),
            (PresenceStatus::Offline, 6)
        );
        assert_eq!(presence.get(&ids).await[0], gone);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    presence_suite!(async { Some((MemoryPresence::default(), "amy".to_owned())) });
}
