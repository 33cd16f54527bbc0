//! How a slot's restarts back off after failures: the setting (the rule
//! that applies it is `primary::backoff`).

use std::time::Duration;

/// How a slot's restart delays grow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackoffPolicy {
    /// Failures in a row that are still restarted at once, so that a
    /// worker killed now and then is replaced without delay.
    pub immediate_restarts: u32,
    /// The delay after the first failure past `immediate_restarts`; each
    /// further one doubles it.
    pub initial: Duration,
    /// The longest delay (`--max-restart-delay`).
    pub cap: Duration,
    /// A worker that ran at least this long before it exited ran stably:
    /// its exit starts the count of failures afresh (`--stable-after`).
    pub stable_after: Duration,
    /// A worker that exits sooner, without having said it is ready, failed
    /// at start (pm2's `min_uptime`): enough of those in every slot, and
    /// the command is broken.
    pub min_uptime: Duration,
}

impl Default for BackoffPolicy {
    fn default() -> Self {
        BackoffPolicy {
            immediate_restarts: 2,
            initial: Duration::from_millis(100),
            cap: Duration::from_secs(10),
            stable_after: Duration::from_secs(30),
            min_uptime: Duration::from_secs(1),
        }
    }
}
