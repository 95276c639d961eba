//! A cache that events invalidate: answers fetched from another service are kept until an
//! event says they changed, with a TTL only as a safety net.
//!
//! Two rules keep it from ever serving a stale answer after the event that made it stale:
//! - an epoch guards inserts: an answer fetched before an invalidation is never cached after
//!   it (the fetch took a [`Ticket`] first, and the invalidation moved the epoch on);
//! - it caches only while it follows the events: when they stop arriving (the bus link is
//!   down, events published meanwhile are lost) it [`pause`](InvalidatedCache::pause)s,
//!   dropping everything and caching nothing, until they flow again
//!   ([`resume`](InvalidatedCache::resume)). A new cache starts paused.

use std::{
    hash::Hash,
    sync::{
        Mutex,
        atomic::{AtomicBool, Ordering},
    },
};

use moka::sync::Cache;

/// The epoch a fetch started in; its answer is cached only if no invalidation came between.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ticket(u64);

/// A moka cache behind an epoch, cached into only while its events are followed.
pub struct InvalidatedCache<K, V> {
    cache: Cache<K, V>,
    /// Bumped by every invalidation; held while inserting so no insert slips past one.
    epoch: Mutex<u64>,
    following: AtomicBool,
}

impl<K, V> std::fmt::Debug for InvalidatedCache<K, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InvalidatedCache")
            .field("following", &self.following.load(Ordering::SeqCst))
            .finish_non_exhaustive()
    }
}

impl<K, V> InvalidatedCache<K, V>
where
    K: Hash + Eq + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    /// Wraps `cache` (built with the capacity and expiry policy the caller wants, and
    /// `support_invalidation_closures` for [`Self::invalidate_if`]). It starts paused.
    pub fn new(cache: Cache<K, V>) -> Self {
        Self {
            cache,
            epoch: Mutex::new(0),
            following: AtomicBool::new(false),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, u64> {
        self.epoch.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The cached answer for `key`, if any.
    pub fn get(&self, key: &K) -> Option<V> {
        self.cache.get(key)
    }

    /// Taken before fetching an answer, for [`Self::insert`].
    pub fn ticket(&self) -> Ticket {
        Ticket(*self.lock())
    }

    /// Caches `value` for `key`, fetched under `ticket`, unless an invalidation came since or
    /// the cache is paused. Returns whether it was cached.
    pub fn insert(&self, ticket: Ticket, key: K, value: V) -> bool {
        let epoch = self.lock();
        let fresh = *epoch == ticket.0 && self.following.load(Ordering::SeqCst);
        if fresh {
            self.cache.insert(key, value);
        }
        fresh
    }

    /// Drops the answer for `key`.
    pub fn invalidate(&self, key: &K) {
        let mut epoch = self.lock();
        *epoch += 1;
        self.cache.invalidate(key);
    }

    /// Drops every answer whose key matches.
    pub fn invalidate_if(&self, matches: impl Fn(&K) -> bool + Send + Sync + 'static) {
        let mut epoch = self.lock();
        *epoch += 1;
        // Fails only without support_invalidation_closures: then everything goes.
        if self
            .cache
            .invalidate_entries_if(move |key, _| matches(key))
            .is_err()
        {
            self.cache.invalidate_all();
        }
    }

    /// Drops every answer.
    pub fn invalidate_all(&self) {
        let mut epoch = self.lock();
        *epoch += 1;
        self.cache.invalidate_all();
    }

    /// Events stopped arriving: drop everything, cache nothing until [`Self::resume`].
    pub fn pause(&self) {
        self.following.store(false, Ordering::SeqCst);
        self.invalidate_all();
    }

    /// Events flow again (or for the first time): what was cached before may have missed
    /// some, so everything goes, and answers are cached again from now on.
    pub fn resume(&self) {
        self.invalidate_all();
        self.following.store(true, Ordering::SeqCst);
    }

    /// Whether answers are cached now.
    pub fn is_following(&self) -> bool {
        self.following.load(Ordering::SeqCst)
    }

    /// Answers held now (approximate; for metrics and tests).
    pub fn entry_count(&self) -> u64 {
        self.cache.run_pending_tasks();
        self.cache.entry_count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cache() -> InvalidatedCache<&'static str, u32> {
        InvalidatedCache::new(
            Cache::builder()
                .max_capacity(10)
                .support_invalidation_closures()
                .build(),
        )
    }

    #[test]
    fn a_paused_cache_caches_nothing_until_it_resumes() {
        let cache = cache();
        assert!(
            !cache.insert(cache.ticket(), "a", 1),
            "a new cache is paused"
        );
        cache.resume();
        assert!(cache.insert(cache.ticket(), "a", 1));
        assert_eq!(cache.get(&"a"), Some(1));
        cache.pause();
        assert_eq!(cache.get(&"a"), None, "pausing drops what was cached");
        assert!(!cache.insert(cache.ticket(), "a", 2), "and caches nothing");
        cache.resume();
        assert!(cache.insert(cache.ticket(), "a", 3));
        assert_eq!(cache.get(&"a"), Some(3));
    }

    #[test]
    fn an_answer_fetched_before_an_invalidation_is_not_cached() {
        let cache = cache();
        cache.resume();
        let before = cache.ticket();
        cache.invalidate(&"other");
        assert!(!cache.insert(before, "a", 1), "any invalidation in between");
        let before = cache.ticket();
        cache.invalidate_if(|k| *k == "b");
        assert!(!cache.insert(before, "a", 1));
        assert!(cache.insert(cache.ticket(), "a", 1));
        cache.invalidate_if(|k| *k == "a");
        assert_eq!(cache.get(&"a"), None);
    }
}
