//! Restart backoff for one worker slot: a worker that keeps dying before it
//! has run stably is restarted later and later (exponentially, up to a cap),
//! so a crash loop never becomes a fork storm; a worker that ran stably
//! resets it. Failures are counted over the window a stable run closes (as
//! pm2 resets its backoff after 30 s up), not only the first second: a
//! server that always fails after 1.2 s is a crash loop too.

use std::time::Duration;

use crate::settings::BackoffPolicy;

/// The backoff state of one slot.
#[derive(Debug, Clone)]
pub(crate) struct RestartBackoff {
    policy: BackoffPolicy,
    failures: u32,
}

impl RestartBackoff {
    pub(crate) fn new(policy: BackoffPolicy) -> Self {
        RestartBackoff {
            policy,
            failures: 0,
        }
    }

    /// Records an unrequested exit of a worker that ran for `ran_for` and
    /// returns how long to wait before restarting it.
    pub(crate) fn record_failure(&mut self, ran_for: Duration) -> Duration {
        if ran_for >= self.policy.stable_after {
            self.failures = 0;
        }
        self.failures += 1;
        if self.failures <= self.policy.immediate_restarts {
            return Duration::ZERO;
        }
        let doublings = (self.failures - self.policy.immediate_restarts - 1).min(31);
        self.policy
            .initial
            .saturating_mul(1u32 << doublings)
            .min(self.policy.cap)
    }

    /// Failures in a row since the last stable run.
    pub(crate) fn failures(&self) -> u32 {
        self.failures
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
        assert_eq!(backoff.failures(), 11);
        assert_eq!(
            backoff.record_failure(Duration::from_secs(60)),
            Duration::ZERO
        );
        assert_eq!(backoff.failures(), 1);
    }

    #[test]
    fn failures_after_the_first_second_still_back_off() {
        // `sh -c 'sleep 1.2; exit 3'`: every run is past min_uptime but
        // short of a stable run.
        let mut backoff = RestartBackoff::new(BackoffPolicy::default());
        let run = Duration::from_millis(1200);
        let delays: Vec<u128> = (0..5)
            .map(|_| backoff.record_failure(run).as_millis())
            .collect();
        assert_eq!(delays, [0, 0, 100, 200, 400]);
        assert_eq!(backoff.failures(), 5);
    }

    #[test]
    fn the_cap_and_the_stable_run_are_the_policy_s() {
        let policy = BackoffPolicy {
            cap: Duration::from_millis(250),
            stable_after: Duration::from_secs(5),
            ..BackoffPolicy::default()
        };
        let mut backoff = RestartBackoff::new(policy);
        let delays: Vec<u128> = (0..6)
            .map(|_| backoff.record_failure(Duration::from_secs(4)).as_millis())
            .collect();
        assert_eq!(delays, [0, 0, 100, 200, 250, 250]);
        assert_eq!(
            backoff.record_failure(Duration::from_secs(5)),
            Duration::ZERO
        );
    }
}
