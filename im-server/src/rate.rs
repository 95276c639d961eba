//! Each user's message rate over all its devices. One node counts in memory
//! ([`LocalSendRate`], governor's GCRA); the nodes of a cluster share their counters in Redis
//! ([`redis::RedisSendRate`], the same GCRA in one script), so a user spread over several nodes
//! gets the same allowance as on one.

use std::{
    num::NonZeroU32,
    sync::{Arc, RwLock},
    time::Duration,
};

use async_trait::async_trait;
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter, clock::Clock};

/// A per-second quota with a burst of twice as many.
pub fn quota(per_second: u32) -> Quota {
    let rate = NonZeroU32::new(per_second).unwrap_or(NonZeroU32::MIN);
    Quota::per_second(rate).allow_burst(rate.saturating_mul(NonZeroU32::new(2).unwrap_or(rate)))
}

/// How many messages each user may send.
#[async_trait]
pub trait SendRate: Send + Sync + 'static {
    /// Counts one message of `user_id`, who may send `per_second` (a setting that may change
    /// while the node runs); `Err` says how long until the next one is allowed. (An `Arc`: the
    /// session's own, kept as the key without a copy per message.)
    async fn check(&self, user_id: &Arc<str>, per_second: u32) -> Result<(), Duration>;

    /// Forgets users idle long enough to be back at a full burst.
    fn prune(&self) {}
}

/// Message rates in this node's memory. A new rate starts everyone with a full burst.
#[derive(Debug)]
pub struct LocalSendRate {
    limiter: RwLock<(u32, Arc<DefaultKeyedRateLimiter<Arc<str>>>)>,
}

impl LocalSendRate {
    /// `per_second` messages per user, with a burst of twice as many.
    pub fn new(per_second: u32) -> Self {
        Self {
            limiter: RwLock::new((per_second, Arc::new(RateLimiter::keyed(quota(per_second))))),
        }
    }

    /// The limiter of `per_second`, made anew when the rate changed.
    fn limiter(&self, per_second: u32) -> Arc<DefaultKeyedRateLimiter<Arc<str>>> {
        {
            let current = self.limiter.read().unwrap_or_else(|e| e.into_inner());
            if current.0 == per_second {
                return current.1.clone();
            }
        }
        let mut current = self.limiter.write().unwrap_or_else(|e| e.into_inner());
        if current.0 != per_second {
            *current = (per_second, Arc::new(RateLimiter::keyed(quota(per_second))));
        }
        current.1.clone()
    }
}

#[async_trait]
impl SendRate for LocalSendRate {
    async fn check(&self, user_id: &Arc<str>, per_second: u32) -> Result<(), Duration> {
        let limiter = self.limiter(per_second);
        limiter
            .check_key(user_id)
            .map_err(|not_until| not_until.wait_time_from(limiter.clock().now()))
    }

    fn prune(&self) {
        let (_, limiter) = &*self.limiter.read().unwrap_or_else(|e| e.into_inner());
        limiter.retain_recent();
        limiter.shrink_to_fit();
    }
}

/// Message rates shared by every node in Redis (feature `redis`).
#[cfg(feature = "redis")]
pub mod redis {
    use std::{sync::Arc, time::Duration};

    use async_trait::async_trait;
    use deadpool_redis::{Pool, redis};

    use super::{LocalSendRate, SendRate};

    /// GCRA: the key holds the theoretical arrival time (TAT) in microseconds of Redis's clock.
    /// A message is allowed when it does not push the TAT further than the burst ahead of now.
    /// Returns 0 when allowed, else the microseconds to wait.
    const GCRA: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local next_tat = tat + interval
local ahead = next_tat - now
if ahead > burst * interval then
  return ahead - burst * interval
end
redis.call('SET', KEYS[1], next_tat, 'PX', math.ceil(ahead / 1000) + 1000)
return 0
";

    /// Message rates in Redis. While Redis cannot be reached, each node falls back to its own
    /// counters (a user may then send up to once per node), so sends go on.
    pub struct RedisSendRate {
        pool: Pool,
        /// The period a rate counts in, in microseconds: a second (a minute in a test).
        period_us: u64,
        fallback: LocalSendRate,
    }

    impl std::fmt::Debug for RedisSendRate {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("RedisSendRate").finish_non_exhaustive()
        }
    }

    impl RedisSendRate {
        /// Message rates counted in the Redis of `pool` (shared with presence); the fallback
        /// counts at `per_second` until the first check says otherwise.
        pub fn new(pool: Pool, per_second: u32) -> Self {
            Self::per(pool, 1_000_000, per_second)
        }

        /// Rates counted per `period_us` rather than per second.
        fn per(pool: Pool, period_us: u64, per_second: u32) -> Self {
            Self {
                pool,
                period_us,
                fallback: LocalSendRate::new(per_second),
            }
        }

        /// One message per `interval_us`, a burst of `2 * per_period` (GCRA's terms).
        async fn shared(&self, user_id: &str, per_period: u32) -> Result<u64, String> {
            let per_period = per_period.max(1);
            let interval_us = self.period_us / u64::from(per_period);
            let burst = 2 * u64::from(per_period);
            let mut conn = self.pool.get().await.map_err(|e| e.to_string())?;
            // EVAL: Redis keeps the compiled script by its hash; the text is a few hundred
            // bytes on the wire.
            redis::cmd("EVAL")
                .arg(GCRA)
                .arg(1)
                .arg(format!("im:rate:{{{user_id}}}:send"))
                .arg(interval_us)
                .arg(burst)
                .query_async(&mut *conn)
                .await
                .map_err(|e| e.to_string())
        }
    }

    #[async_trait]
    impl SendRate for RedisSendRate {
        async fn check(&self, user_id: &Arc<str>, per_second: u32) -> Result<(), Duration> {
            // A Redis that stalls costs a send at most this long before counting locally.
            let limit = Duration::from_millis(500);
            let shared = tokio::time::timeout(limit, self.shared(user_id, per_second))
                .await
                .unwrap_or_else(|_| Err("timed out".into()));
            match shared {
                Ok(0) => Ok(()),
                Ok(wait_us) => Err(Duration::from_micros(wait_us)),
                Err(error) => {
                    tracing::warn!(%error, "shared rate limit unavailable: counting locally");
                    metrics::counter!("im_rate_limit_fallbacks_total").increment(1);
                    self.fallback.check(user_id, per_second).await
                }
            }
        }

        fn prune(&self) {
            self.fallback.prune();
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[tokio::test]
        async fn nodes_share_one_allowance() {
            let Some(url) = im_testkit::service_url("IM_TEST_REDIS_URL", "the shared rate limit")
            else {
                return;
            };
            // Two nodes, one message a minute with a burst of two: together they allow two in a
            // burst, not four.
            let minute = 60_000_000;
            let pool = || crate::presence::redis::pool(&url).unwrap();
            let a = RedisSendRate::per(pool(), minute, 1);
            let b = RedisSendRate::per(pool(), minute, 1);
            let user: Arc<str> = format!("rate-{}", uuid::Uuid::new_v4().simple()).into();
            let mut allowed = 0;
            let mut waits = Vec::new();
            for i in 0..20 {
                let node = if i % 2 == 0 { &a } else { &b };
                match node.check(&user, 1).await {
                    Ok(()) => allowed += 1,
                    Err(wait) => waits.push(wait),
                }
            }
            assert_eq!(allowed, 2, "one burst for the user over both nodes");
            assert!(
                waits
                    .iter()
                    .all(|w| *w > Duration::ZERO && *w <= Duration::from_secs(60)),
                "{waits:?}"
            );
            // Another user has an allowance of its own.
            let other: Arc<str> = format!("rate-{}", uuid::Uuid::new_v4().simple()).into();
            assert_eq!(a.check(&other, 1).await, Ok(()));
        }
    }
}
