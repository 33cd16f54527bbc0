//! Restart backoff for one worker slot: a worker that keeps dying soon after
//! it starts is restarted later and later (exponentially, up to a cap), so a
//! crash loop never becomes a fork storm; a worker that ran stably resets it.

use std::time::Duration;

/// How a slot's restart delays grow.
#[derive(Debug, Clone, Copy)]
pub struct BackoffPolicy {
    /// Quick failures in a row that are still restarted at once, so that a
    /// worker killed now and then is replaced without delay.
    pub immediate_restarts: u32,
    /// The delay after the first quick failure past `immediate_restarts`;
    /// each further one doubles it.
    pub initial: Duration,
    /// The longest delay.
    pub cap: Duration,
    /// A worker that ran at least this long counts as stable: its exit
    /// starts the count of quick failures afresh.
    pub stable_after: Duration,
}

impl Default for BackoffPolicy {
    fn default() -> Self {
        BackoffPolicy {
            immediate_restarts: 2,
            initial: Duration::from_millis(100),
            cap: Duration::from_secs(10),
            stable_after: Duration::from_secs(1),
        }
    }
}

/// The backoff state of one slot.
#[derive(Debug, Clone)]
pub(crate) struct RestartBackoff {
    policy: BackoffPolicy,
    quick_failures: u32,
}

impl RestartBackoff {
    pub(crate) fn new(policy: BackoffPolicy) -> Self {
        RestartBackoff {
            policy,
            quick_failures: 0,
        }
    }

    /// Records an unrequested exit of a worker that ran for `ran_for` and
    /// returns how long to wait before restarting it.
    pub(crate) fn record_failure(&mut self, ran_for: Duration) -> Duration {
        if ran_for >= self.policy.stable_after {
            self.quick_failures = 0;
        }
        self.quick_failures += 1;
        if self.quick_failures <= self.policy.immediate_restarts {
            return Duration::ZERO;
        }
        let doublings = (self.quick_failures - self.policy.immediate_restarts - 1).min(31);
        self.policy
            .initial
            .saturating_mul(1u32 << doublings)
            .min(self.policy.cap)
    }

    /// Quick failures in a row so far.
    pub(crate) fn quick_failures(&self) -> u32 {
        self.quick_failures
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_up_to_the_cap_and_reset_after_a_stable_run() {
        let mut backoff = RestartBackoff::new(BackoffPolicy::default());
        let quick = Duration::from_millis(5);
        let delays: Vec<u128> = (0..11)
            .map(|_| backoff.record_failure(quick).as_millis())
            .collect();
        assert_eq!(
            delays,
            [0, 0, 100, 200, 400, 800, 1600, 3200, 6400, 10000, 10000]
        );
        assert_eq!(backoff.quick_failures(), 11);
        assert_eq!(
            backoff.record_failure(Duration::from_secs(60)),
            Duration::ZERO
        );
        assert_eq!(backoff.quick_failures(), 1);
    }
}
