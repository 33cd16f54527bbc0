//! A slot's restart history: the backoff between restarts, the count of
//! workers in a row that failed as they started, and when a slot is
//! reported as crash-looping. Across slots, [`command_is_broken`] tells when
//! the whole cluster gives up.

use std::time::Duration;

use crate::primary::rules::backoff::RestartBackoff;
use crate::primary::rules::exit::ExitKind;
use crate::settings::BackoffPolicy;

/// A slot that failed this many times in a row (without a stable run) is
/// reported as crash-looping.
pub(crate) const CRASH_LOOP_REPORT: u32 = 3;
/// When every slot's workers failed by themselves at start this many times
/// in a row and no worker ever came up, the command is broken: the cluster
/// exits with an error.
pub(crate) const CRASH_LOOP_FATAL: u32 = 5;

/// When a failed slot's next worker starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Restart {
    /// Zero: at once.
    pub delay: Duration,
    /// Set when the slot is crash-looping: its failures in a row.
    pub crash_looping: Option<u32>,
}

/// The restart history of one slot.
#[derive(Debug, Clone)]
pub(crate) struct RestartHistory {
    backoff: RestartBackoff,
    /// Workers in a row that failed by themselves before they came up.
    start_failures: u32,
}

impl RestartHistory {
    pub(crate) fn new(policy: BackoffPolicy) -> Self {
        RestartHistory {
            backoff: RestartBackoff::new(policy),
            start_failures: 0,
        }
    }

    /// Records a failed exit (one `exit::decide` sent to the backoff) of a
    /// worker that ran for `ran_for`.
    pub(crate) fn record_exit(&mut self, kind: ExitKind, ran_for: Duration) -> Restart {
        match kind {
            ExitKind::FailedAtStart => self.start_failures += 1,
            ExitKind::FailedAfterUp | ExitKind::KilledAfterUp => self.start_failures = 0,
            _ => {}
        }
        self.next_restart(ran_for)
    }

    /// Records that a worker came up and was then killed from outside: it
    /// restarts at once, and the command is not broken.
    pub(crate) fn came_up(&mut self) {
        self.start_failures = 0;
    }

    /// Records a worker that could not even be spawned.
    pub(crate) fn record_spawn_failure(&mut self) -> Restart {
        self.start_failures += 1;
        self.next_restart(Duration::ZERO)
    }

    fn next_restart(&mut self, ran_for: Duration) -> Restart {
        let delay = self.backoff.record_failure(ran_for);
        let failures = self.backoff.failures();
        Restart {
            delay,
            crash_looping: (failures >= CRASH_LOOP_REPORT).then_some(failures),
        }
    }

    /// Workers in a row that failed by themselves before they came up.
    pub(crate) fn start_failures(&self) -> u32 {
        self.start_failures
    }
}

/// Whether the cluster should give up: no worker ever came up (`proven` is
/// false) and every slot's last workers all failed at start.
pub(crate) fn command_is_broken<'a>(
    proven: bool,
    mut slots: impl Iterator<Item = &'a RestartHistory>,
) -> bool {
    !proven && slots.all(|history| history.start_failures() >= CRASH_LOOP_FATAL)
}

#[cfg(test)]
mod tests {
    use super::*;

    const QUICK: Duration = Duration::from_millis(3);

    fn history() -> RestartHistory {
        RestartHistory::new(BackoffPolicy::default())
    }

    #[test]
    fn the_third_failure_in_a_row_is_reported_and_backs_off() {
        let mut slot = history();
        let restarts: Vec<Restart> = (0..4)
            .map(|_| slot.record_exit(ExitKind::FailedAtStart, QUICK))
            .collect();
        assert_eq!(restarts[0].delay, Duration::ZERO);
        assert_eq!(restarts[1].crash_looping, None);
        assert_eq!(restarts[2].crash_looping, Some(3));
        assert_eq!(restarts[2].delay, Duration::from_millis(100));
        assert_eq!(restarts[3].delay, Duration::from_millis(200));
        assert_eq!(slot.start_failures(), 4);
    }

    #[test]
    fn a_loop_that_fails_after_a_second_is_reported_too() {
        let mut slot = history();
        let run = Duration::from_millis(1200);
        let last = (0..3)
            .map(|_| slot.record_exit(ExitKind::FailedAfterUp, run))
            .last()
            .expect("three exits");
        assert_eq!(last.crash_looping, Some(3));
        assert_eq!(last.delay, Duration::from_millis(100));
        // It came up each time: not a broken command.
        assert_eq!(slot.start_failures(), 0);
    }

    #[test]
    fn coming_up_clears_the_start_failures_and_a_kill_before_does_not_count() {
        let mut slot = history();
        slot.record_exit(ExitKind::FailedAtStart, QUICK);
        slot.record_exit(ExitKind::KilledAtStart, QUICK);
        assert_eq!(slot.start_failures(), 1);
        slot.record_exit(ExitKind::FailedAfterUp, Duration::from_secs(2));
        assert_eq!(slot.start_failures(), 0);
        slot.record_exit(ExitKind::FailedAtStart, QUICK);
        slot.came_up();
        assert_eq!(slot.start_failures(), 0);
    }

    #[test]
    fn a_stable_run_ends_the_loop() {
        let mut slot = history();
        for _ in 0..5 {
            slot.record_exit(ExitKind::FailedAfterUp, Duration::from_secs(2));
        }
        let after_stable = slot.record_exit(ExitKind::FailedAfterUp, Duration::from_secs(31));
        assert_eq!(after_stable.delay, Duration::ZERO);
        assert_eq!(after_stable.crash_looping, None);
    }

    #[test]
    fn spawn_failures_count_as_failures_at_start() {
        let mut slot = history();
        for _ in 0..CRASH_LOOP_FATAL {
            slot.record_spawn_failure();
        }
        assert_eq!(slot.start_failures(), CRASH_LOOP_FATAL);
    }

    #[test]
    fn the_command_is_broken_only_when_every_slot_failed_and_none_came_up() {
        let mut failing = history();
        for _ in 0..CRASH_LOOP_FATAL {
            failing.record_exit(ExitKind::FailedAtStart, QUICK);
        }
        let mut young = history();
        young.record_exit(ExitKind::FailedAtStart, QUICK);
        assert!(command_is_broken(false, [&failing, &failing].into_iter()));
        assert!(!command_is_broken(true, [&failing, &failing].into_iter()));
        assert!(!command_is_broken(false, [&failing, &young].into_iter()));
    }
}
