//! Presence and routing in Redis (feature `redis`), shared by every core node: each session is
//! a field of the user's session hash, `platform:lease_until:node`, with a lease its node renews
//! every third of a lease. A session whose lease ran out is gone, whatever its node last said,
//! so a node that dies takes its users offline (and out of the routes) within one lease. The
//! same records say which nodes to deliver a user's frames to. After Redis loses its data (a
//! restart without persistence), the nodes' next renewals write every live session back.
//!
//! Change detection compares what others see before and after each change; two nodes changing
//! one user at the same moment may both report (or both miss) a change, which the next change
//! corrects: presence is a hint, never a guarantee.

use std::{collections::HashMap, sync::Arc};

use async_trait::async_trait;
use deadpool_redis::{Pool, redis::AsyncCommands};
use im_proto::v1::{Platform, Presence, PresenceStatus};

use super::PresenceStore;
use crate::{outage::Outage, sessions::LiveSession};

/// Presence records in Redis.
#[derive(Clone)]
pub struct RedisPresence {
    pool: Pool,
    lease_ms: i64,
    node_id: String,
    /// Presence changes and reads while Redis is down are logged once, not per call.
    outage: Arc<Outage>,
}

impl std::fmt::Debug for RedisPresence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisPresence")
            .field("lease_ms", &self.lease_ms)
            .field("node_id", &self.node_id)
            .finish_non_exhaustive()
    }
}

fn sessions_key(user: &str) -> String {
    format!("im:presence:{{{user}}}:sessions")
}

fn status_key(user: &str) -> String {
    format!("im:presence:{{{user}}}:status")
}

/// A pool of connections to the Redis at `url`. A Redis that went away fails calls within
/// two seconds instead of holding them.
pub fn pool(url: &str) -> Result<Pool, String> {
    let mut config = deadpool_redis::Config::from_url(url);
    let limit = Some(std::time::Duration::from_secs(2));
    config.pool = Some(deadpool_redis::PoolConfig {
        timeouts: deadpool_redis::Timeouts {
            wait: limit,
            create: limit,
            recycle: limit,
        },
        ..deadpool_redis::PoolConfig::default()
    });
    config
        .create_pool(Some(deadpool_redis::Runtime::Tokio1))
        .map_err(|e| e.to_string())
}

/// One session field: its platform, when its lease ends, and its node.
struct SessionValue<'a> {
    platform: i32,
    lease_until_ms: i64,
    node: &'a str,
}

impl<'a> SessionValue<'a> {
    fn parse(value: &'a str) -> Self {
        let mut parts = value.splitn(3, ':');
        let mut next = || parts.next().unwrap_or("");
        Self {
            platform: next().parse().unwrap_or(0),
            lease_until_ms: next().parse().unwrap_or(0),
            node: next(),
        }
    }
}

impl RedisPresence {
    /// Presence on the Redis at `url` for the node `node_id`; sessions live `lease_ms` past
    /// their last renewal.
    pub fn connect(url: &str, lease_ms: i64, node_id: &str) -> Result<Self, String> {
        Ok(Self::new(pool(url)?, lease_ms, node_id))
    }

    /// Presence on `pool` (see [`pool`]) for the node `node_id`.
    pub fn new(pool: Pool, lease_ms: i64, node_id: &str) -> Self {
        Self {
            pool,
            lease_ms,
            node_id: node_id.to_owned(),
            outage: Arc::new(Outage::new("redis")),
        }
    }

    fn session_value(&self, platform: Platform, now_ms: i64) -> String {
        format!(
            "{}:{}:{}",
            platform as i32,
            now_ms + self.lease_ms,
            self.node_id
        )
    }

    /// What others see of `user` at `now_ms` (expired sessions are dropped on the way).
    async fn view(&self, user: &str, now_ms: i64) -> Result<Presence, String> {
        let mut conn = self.pool.get().await.map_err(|e| e.to_string())?;
        Self::view_on(&mut conn, user, now_ms).await
    }

    /// [`Self::view`] on a connection the caller holds.
    async fn view_on(
        conn: &mut deadpool_redis::Connection,
        user: &str,
        now_ms: i64,
    ) -> Result<Presence, String> {
        let sessions: Vec<(String, String)> = conn
            .hgetall(sessions_key(user))
            .await
            .map_err(|e| e.to_string())?;
        let status: Vec<(String, String)> = conn
            .hgetall(status_key(user))
            .await
            .map_err(|e| e.to_string())?;
        let field = |name: &str| {
            status
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
                .unwrap_or_default()
        };
        let mut platforms = Vec::new();
        let mut last_lease = 0;
        for (session, value) in &sessions {
            let value = SessionValue::parse(value);
            let lease = value.lease_until_ms;
            if lease > now_ms {
                platforms.push(value.platform);
            } else {
                last_lease = last_lease.max(lease);
                let _: Result<(), _> = conn.hdel(sessions_key(user), session).await;
            }
        }
        platforms.sort_unstable();
        platforms.dedup();
        if platforms.is_empty() {
            let last_seen = field("last_seen")
                .parse::<i64>()
                .unwrap_or(0)
                .max(last_lease);
            return Ok(Presence {
                user_id: user.to_owned(),
                status: PresenceStatus::Offline as i32,
                last_seen_ms: last_seen,
                ..Default::default()
            });
        }
        let status = match field("status")
            .parse::<i32>()
            .ok()
            .and_then(|s| PresenceStatus::try_from(s).ok())
        {
            Some(chosen @ (PresenceStatus::Away | PresenceStatus::Busy)) => chosen,
            _ => PresenceStatus::Online,
        };
        Ok(Presence {
            user_id: user.to_owned(),
            status: status as i32,
            status_text: field("text"),
            platforms,
            last_seen_ms: 0,
        })
    }

    /// Applies `change` and reports the new view if it differs from the old one.
    async fn change(
        &self,
        user: &str,
        now_ms: i64,
        change: impl AsyncFnOnce(&mut deadpool_redis::Connection) -> Result<(), String>,
    ) -> Option<Presence> {
        let outcome: Result<Option<Presence>, String> = async {
            // One connection for all three: a call holding one while it waits for another
            // would starve the pool when as many sessions open at once as it has connections.
            let mut conn = self.pool.get().await.map_err(|e| e.to_string())?;
            let before = Self::view_on(&mut conn, user, now_ms).await?;
            change(&mut conn).await?;
            let after = Self::view_on(&mut conn, user, now_ms).await?;
            Ok((before != after).then_some(after))
        }
        .await;
        match outcome {
            Ok(changed) => {
                self.outage.succeeded();
                changed
            }
            Err(error) => {
                self.outage.failed("presence update", &error);
                None
            }
        }
    }

    async fn put_session(
        &self,
        conn: &mut deadpool_redis::Connection,
        user: &str,
        session: &str,
        platform: Platform,
        now_ms: i64,
    ) -> Result<(), String> {
        let value = self.session_value(platform, now_ms);
        let key = sessions_key(user);
        let _: () = conn
            .hset(&key, session, value)
            .await
            .map_err(|e| e.to_string())?;
        // The whole record goes when no node has renewed anything for a while.
        let _: () = conn
            .pexpire(&key, self.lease_ms * 2)
            .await
            .map_err(|e| e.to_string())?;
        Ok(())
    }
}

#[async_trait]
impl PresenceStore for RedisPresence {
    async fn connected(
        &self,
        user_id: &str,
        session_id: &str,
        platform: Platform,
        now_ms: i64,
    ) -> Option<Presence> {
        self.change(user_id, now_ms, async |conn| {
            self.put_session(conn, user_id, session_id, platform, now_ms)
                .await
        })
        .await
    }

    async fn disconnected(&self, user_id: &str, session_id: &str, now_ms: i64) -> Option<Presence> {
        self.change(user_id, now_ms, async |conn| {
            let _: () = conn
                .hdel(sessions_key(user_id), session_id)
                .await
                .map_err(|e| e.to_string())?;
            let _: () = conn
                .hset(status_key(user_id), "last_seen", now_ms)
                .await
                .map_err(|e| e.to_string())?;
            Ok(())
        })
        .await
    }

    async fn set_status(
        &self,
        user_id: &str,
        status: PresenceStatus,
        text: &str,
        now_ms: i64,
    ) -> Option<Presence> {
        self.change(user_id, now_ms, async |conn| {
            let fields = [
                ("status", (status as i32).to_string()),
                ("text", text.to_owned()),
            ];
            let _: () = conn
                .hset_multiple(status_key(user_id), &fields)
                .await
                .map_err(|e| e.to_string())?;
            Ok(())
        })
        .await
    }

    async fn get(&self, user_ids: &[String]) -> Vec<Presence> {
        let now = im_common::now_ms();
        let mut out = Vec::with_capacity(user_ids.len());
        for user in user_ids {
            out.push(match self.view(user, now).await {
                Ok(presence) => {
                    self.outage.succeeded();
                    presence
                }
                Err(error) => {
                    self.outage.failed("presence read", &error);
                    Presence {
                        user_id: user.clone(),
                        status: PresenceStatus::Offline as i32,
                        ..Default::default()
                    }
                }
            });
        }
        out
    }

    fn shared(&self) -> bool {
        true
    }

    async fn renew(&self, sessions: &[LiveSession], now_ms: i64) -> Result<(), String> {
        let mut conn = self.pool.get().await.map_err(|e| e.to_string())?;
        // One round trip per thousand sessions.
        for chunk in sessions.chunks(1000) {
            let mut pipe = deadpool_redis::redis::pipe();
            for session in chunk {
                let key = sessions_key(&session.user_id);
                pipe.hset(
                    &key,
                    &*session.session_id,
                    self.session_value(session.platform, now_ms),
                )
                .ignore()
                .pexpire(&key, self.lease_ms * 2)
                .ignore();
            }
            let _: () = pipe
                .query_async(&mut *conn)
                .await
                .map_err(|e| e.to_string())?;
        }
        Ok(())
    }

    async fn routes(
        &self,
        user_ids: &[String],
        now_ms: i64,
    ) -> Result<HashMap<String, Vec<String>>, String> {
        let mut conn = self.pool.get().await.map_err(|e| e.to_string())?;
        let mut routes = HashMap::new();
        for chunk in user_ids.chunks(1000) {
            let mut pipe = deadpool_redis::redis::pipe();
            for user in chunk {
                pipe.hgetall(sessions_key(user));
            }
            let found: Vec<Vec<(String, String)>> = pipe
                .query_async(&mut *conn)
                .await
                .map_err(|e| e.to_string())?;
            for (user, sessions) in chunk.iter().zip(found) {
                let mut nodes: Vec<String> = sessions
                    .iter()
                    .map(|(_, value)| SessionValue::parse(value))
                    .filter(|v| v.lease_until_ms > now_ms && !v.node.is_empty())
                    .map(|v| v.node.to_owned())
                    .collect();
                nodes.sort_unstable();
                nodes.dedup();
                if !nodes.is_empty() {
                    routes.insert(user.clone(), nodes);
                }
            }
        }
        Ok(routes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_redis_that_is_down_is_logged_once_however_many_calls_fail() {
        // Nothing listens on port 1.
        let presence = RedisPresence::connect("redis://127.0.0.1:1", 30_000, "here").unwrap();
        let lines = im_testkit::logs::Captured::default();
        let _logging = tracing::subscriber::set_default(lines.subscriber("warn"));
        let users: Vec<String> = (0..50).map(|n| format!("u{n}")).collect();
        for _ in 0..4 {
            let seen = presence.get(&users).await;
            assert!(seen.iter().all(|p| p.status() == PresenceStatus::Offline));
            presence.set_status("u1", PresenceStatus::Away, "", 0).await;
        }
        let log = lines.text();
        assert_eq!(log.matches("dependency failing").count(), 1, "{log}");
        assert!(presence.outage.is_failing());
    }

    fn redis_url() -> Option<String> {
        im_testkit::service_url("IM_TEST_REDIS_URL", "the Redis presence tests")
    }

    fn user(name: &str) -> String {
        format!(
            "{name}-{}-{}",
            std::process::id(),
            uuid::Uuid::new_v4().simple()
        )
    }

    // Leases far in the future: the suite's clock starts at 1 ms.
    crate::presence::presence_suite!(async {
        let presence = RedisPresence::connect(&redis_url()?, i64::MAX / 4, "node-a").unwrap();
        Some((presence, user("amy")))
    });

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn many_sessions_opening_at_once_are_all_recorded() {
        let Some(url) = redis_url() else { return };
        let presence = std::sync::Arc::new(RedisPresence::connect(&url, 60_000, "node-a").unwrap());
        let now = im_common::now_ms();
        // Far more at once than the pool has connections.
        let users: Vec<String> = (0..64).map(|i| user(&format!("u{i}"))).collect();
        let mut opening = tokio::task::JoinSet::new();
        for (i, id) in users.iter().enumerate() {
            let (presence, id) = (presence.clone(), id.clone());
            opening.spawn(async move {
                presence
                    .connected(&id, &format!("s{i}"), Platform::Web, now)
                    .await
            });
        }
        while let Some(change) = opening.join_next().await {
            let change = change.unwrap().expect("each user's change is reported");
            assert_eq!(change.status(), PresenceStatus::Online);
        }
    }

    #[tokio::test]
    async fn a_session_whose_lease_runs_out_is_gone() {
        let Some(url) = redis_url() else { return };
        let presence = RedisPresence::connect(&url, 1_000, "node-a").unwrap();
        let amy = user("amy");
        let now = 1_000_000;
        presence
            .connected(&amy, "s1", Platform::Web, now)
            .await
            .unwrap();
        let ids = [amy.clone()];
        let seen = presence.view(&amy, now + 500).await.unwrap();
        assert_eq!(seen.status(), PresenceStatus::Online);
        let live = LiveSession {
            user_id: amy.as_str().into(),
            session_id: "s1".into(),
            platform: Platform::Web,
        };
        presence.renew(&[live], now + 900).await.unwrap();
        assert_eq!(
            presence.view(&amy, now + 1_500).await.unwrap().status(),
            PresenceStatus::Online,
            "renewed"
        );
        let expired = presence.view(&amy, now + 3_000).await.unwrap();
        assert_eq!(
            (expired.status(), expired.last_seen_ms),
            (PresenceStatus::Offline, now + 1_900)
        );
        assert_eq!(
            presence.get(&ids).await[0].status(),
            PresenceStatus::Offline
        );
    }

    #[tokio::test]
    async fn routes_name_the_nodes_of_live_sessions() {
        let Some(url) = redis_url() else { return };
        let a = RedisPresence::connect(&url, 1_000, "node-a").unwrap();
        let b = RedisPresence::connect(&url, 1_000, "node-b").unwrap();
        let (amy, bob, cat) = (user("amy"), user("bob"), user("cat"));
        let now = 5_000_000;
        a.connected(&amy, "s1", Platform::Web, now).await;
        b.connected(&amy, "s2", Platform::Ios, now).await;
        b.connected(&bob, "s3", Platform::Ios, now).await;
        let users = [amy.clone(), bob.clone(), cat.clone()];
        let routes = a.routes(&users, now + 10).await.unwrap();
        assert_eq!(routes[&amy], ["node-a", "node-b"]);
        assert_eq!(routes[&bob], ["node-b"]);
        assert!(!routes.contains_key(&cat), "no session, no route");
        // Node b renews; node a died and its session's lease runs out.
        let live = |user: &str, session: &str| LiveSession {
            user_id: user.into(),
            session_id: session.into(),
            platform: Platform::Ios,
        };
        b.renew(&[live(&amy, "s2"), live(&bob, "s3")], now + 900)
            .await
            .unwrap();
        let later = a.routes(&users, now + 1_500).await.unwrap();
        assert_eq!(later[&amy], ["node-b"], "the dead node's route is gone");
        assert_eq!(later[&bob], ["node-b"]);
    }
}
