//! A dependency that fails (Redis, the bus) fails every call until it is back: logging each
//! failure would write hundreds of lines a second and bury the one that matters. An
//! [`Outage`] logs the first failure, counts the others, and logs once more with the count
//! when a call succeeds again.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// The failure state of one dependency.
#[derive(Debug)]
pub struct Outage {
    /// What fails, as the log names it (`redis`, `bus`).
    dependency: &'static str,
    failing: AtomicBool,
    failures: AtomicU64,
}

impl Outage {
    /// The state of `dependency`, healthy.
    pub const fn new(dependency: &'static str) -> Self {
        Self {
            dependency,
            failing: AtomicBool::new(false),
            failures: AtomicU64::new(0),
        }
    }

    /// A call failed doing `what`: logged (WARN) if it is the first since the dependency was
    /// last healthy, counted in any case.
    pub fn failed(&self, what: &str, error: &dyn std::fmt::Display) {
        self.failures.fetch_add(1, Ordering::Relaxed);
        metrics::counter!("im_dependency_failures_total", "dependency" => self.dependency)
            .increment(1);
        if !self.failing.swap(true, Ordering::AcqRel) {
            tracing::warn!(
                dependency = self.dependency,
                %error,
                what,
                "dependency failing; later failures are counted until it is back"
            );
        }
    }

    /// A call succeeded: if the dependency was failing, says so once with how many calls
    /// failed meanwhile.
    pub fn succeeded(&self) {
        if self.failing.load(Ordering::Acquire) && self.failing.swap(false, Ordering::AcqRel) {
            let failures = self.failures.swap(0, Ordering::AcqRel);
            tracing::warn!(dependency = self.dependency, failures, "dependency back");
        }
    }

    /// Whether the last call failed.
    pub fn is_failing(&self) -> bool {
        self.failing.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_outage_is_logged_when_it_starts_and_when_it_ends_with_its_count() {
        let lines = im_testkit::logs::Captured::default();
        let redis = Outage::new("redis");
        tracing::subscriber::with_default(lines.subscriber("warn"), || {
            redis.succeeded();
            for _ in 0..300 {
                redis.failed("presence read", &"connection refused");
            }
            assert!(redis.is_failing());
            redis.succeeded();
            redis.succeeded();
            redis.failed("presence read", &"connection refused");
        });
        let log = lines.text();
        assert_eq!(log.matches("dependency failing").count(), 2, "{log}");
        assert_eq!(log.matches("dependency back").count(), 1, "{log}");
        assert!(log.contains("failures=300"), "{log}");
        assert!(
            log.contains("dependency=\"redis\"") || log.contains("dependency=redis"),
            "{log}"
        );
    }
}
