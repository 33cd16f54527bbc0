//! What a worker's exit means, and what the supervisor does next: the
//! decision is a plain function of what the supervisor knows when the exit
//! is reaped, so every case is tested here without a process.

use std::time::Duration;

use crate::primary::event::{human_duration, signal_name};

/// Which of its slot's processes a worker is: what its exit means depends
/// on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    /// The worker serving the slot.
    Current,
    /// A rolling reload's replacement, not yet ready.
    Successor,
    /// A former worker, draining.
    Retired,
}

/// What the supervisor knows about one exit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ExitFacts {
    /// Which of its slot's processes the worker was.
    pub role: Role,
    /// The primary had asked it to stop.
    pub stop_requested: bool,
    pub ran_for: Duration,
    pub code: Option<i32>,
    pub signal: Option<i32>,
    /// It said it was ready on a channel it speaks (a library worker): it
    /// came up, however short it ran.
    pub said_ready: bool,
    /// It said it was leaving (a Node worker's `cluster.worker.disconnect()`
    /// or `kill()`: Node's `exitedAfterDisconnect`).
    pub left_by_itself: bool,
}

/// What the exit was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ExitKind {
    /// A former worker, replaced or stopped, finished draining.
    Retired,
    /// A rolling reload's replacement died before it was ready.
    SuccessorFailed,
    /// The primary asked the worker to stop.
    AskedFor,
    /// Killed from outside (an operator, the OOM killer, a chaos test)
    /// after it came up: not a fault of the program.
    KilledAfterUp,
    /// Killed from outside before it came up.
    KilledAtStart,
    /// Ended by itself (an exit code or a crash signal) before it came up:
    /// the sign of a broken command.
    FailedAtStart,
    /// Ended by itself after it came up.
    FailedAfterUp,
    /// Came up, said it was leaving, and left: its own choice, not a fault.
    LeftByItself,
}

/// The slot's state once the exited process is out of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SlotAfterExit {
    /// The cluster shrank and the slot has no process left.
    pub emptied_and_retiring: bool,
    /// A reload's replacement is on its way: it becomes the slot's worker.
    pub replacement_coming: bool,
    /// The cluster is running (not draining or killing).
    pub running: bool,
}

/// What the supervisor does after an exit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AfterExit {
    Nothing,
    /// The slot goes away (the cluster shrank).
    RemoveSlot,
    /// The reload under way is given up.
    AbortReload,
    /// A new worker starts at once, without counting a failure.
    RestartNow,
    /// A failure: the slot's restart history decides when it restarts, or
    /// whether the cluster gives up.
    Failure,
}

/// The whole decision about one exit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ExitDecision {
    pub kind: ExitKind,
    pub next: AfterExit,
    /// The run proves the command works (it ran `min_uptime` by itself).
    pub proves_command: bool,
}

/// Classifies an exit. `min_uptime`: how long a worker that never said it
/// is ready must run to count as having come up.
pub(crate) fn classify(facts: &ExitFacts, min_uptime: Duration) -> ExitKind {
    match facts.role {
        Role::Retired => return ExitKind::Retired,
        // Asked to stop: its slot was removed (or the cluster stops).
        Role::Successor if facts.stop_requested => return ExitKind::Retired,
        Role::Successor => return ExitKind::SuccessorFailed,
        Role::Current => {}
    }
    if facts.stop_requested {
        return ExitKind::AskedFor;
    }
    let up = facts.ran_for >= min_uptime || facts.said_ready;
    if up && facts.left_by_itself {
        return ExitKind::LeftByItself;
    }
    let self_inflicted = facts.signal.is_none_or(is_crash_signal);
    match (up, self_inflicted) {
        (true, false) => ExitKind::KilledAfterUp,
        (false, false) => ExitKind::KilledAtStart,
        (false, true) => ExitKind::FailedAtStart,
        (true, true) => ExitKind::FailedAfterUp,
    }
}

/// Decides what follows an exit.
pub(crate) fn decide(facts: &ExitFacts, slot: SlotAfterExit, min_uptime: Duration) -> ExitDecision {
    let kind = classify(facts, min_uptime);
    let next = match kind {
        ExitKind::Retired if slot.emptied_and_retiring => AfterExit::RemoveSlot,
        ExitKind::Retired => AfterExit::Nothing,
        ExitKind::SuccessorFailed => AfterExit::AbortReload,
        _ if slot.replacement_coming => AfterExit::Nothing,
        _ if slot.emptied_and_retiring => AfterExit::RemoveSlot,
        _ if !slot.running => AfterExit::Nothing,
        ExitKind::AskedFor | ExitKind::KilledAfterUp | ExitKind::LeftByItself => {
            AfterExit::RestartNow
        }
        _ => AfterExit::Failure,
    };
    let proves_command = next == AfterExit::Failure
        || (next == AfterExit::RestartNow && kind == ExitKind::KilledAfterUp);
    ExitDecision {
        kind,
        next,
        proves_command: proves_command && facts.ran_for >= min_uptime,
    }
}

/// Signals a program gets from its own faults, as opposed to signals sent
/// from outside (SIGKILL from an operator or the OOM killer, SIGTERM…).
pub(crate) fn is_crash_signal(signal: i32) -> bool {
    matches!(
        signal,
        libc::SIGSEGV
            | libc::SIGABRT
            | libc::SIGBUS
            | libc::SIGILL
            | libc::SIGFPE
            | libc::SIGSYS
            | libc::SIGTRAP
            | libc::SIGXCPU
            | libc::SIGXFSZ
    )
}

/// "exited with code 3 after 2ms", for log lines and errors.
pub(crate) fn describe_exit(code: Option<i32>, signal: Option<i32>, ran_for: Duration) -> String {
    let how = match (code, signal) {
        (Some(code), _) => format!("exited with code {code}"),
        (None, Some(signal)) => format!("was killed by {}", signal_name(signal)),
        (None, None) => "exited".to_string(),
    };
    format!("{how} after {}", human_duration(ran_for))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN_UPTIME: Duration = Duration::from_secs(1);

    fn exit(role: Role, ran_ms: u64, code: Option<i32>, signal: Option<i32>) -> ExitFacts {
        ExitFacts {
            role,
            stop_requested: false,
            ran_for: Duration::from_millis(ran_ms),
            code,
            signal,
            said_ready: false,
            left_by_itself: false,
        }
    }

    const RUNNING: SlotAfterExit = SlotAfterExit {
        emptied_and_retiring: false,
        replacement_coming: false,
        running: true,
    };

    fn next(facts: ExitFacts, slot: SlotAfterExit) -> AfterExit {
        decide(&facts, slot, MIN_UPTIME).next
    }

    #[test]
    fn an_exit_code_before_min_uptime_is_a_failure_at_start() {
        let facts = exit(Role::Current, 5, Some(3), None);
        assert_eq!(classify(&facts, MIN_UPTIME), ExitKind::FailedAtStart);
        let decision = decide(&facts, RUNNING, MIN_UPTIME);
        assert_eq!(decision.next, AfterExit::Failure);
        assert!(!decision.proves_command);
    }

    #[test]
    fn a_crash_signal_is_self_inflicted() {
        let facts = exit(Role::Current, 5, None, Some(libc::SIGSEGV));
        assert_eq!(classify(&facts, MIN_UPTIME), ExitKind::FailedAtStart);
        let facts = exit(Role::Current, 5_000, None, Some(libc::SIGABRT));
        assert_eq!(classify(&facts, MIN_UPTIME), ExitKind::FailedAfterUp);
    }

    #[test]
    fn a_kill_from_outside_after_coming_up_restarts_at_once() {
        let facts = exit(Role::Current, 5_000, None, Some(libc::SIGKILL));
        assert_eq!(classify(&facts, MIN_UPTIME), ExitKind::KilledAfterUp);
        let decision = decide(&facts, RUNNING, MIN_UPTIME);
        assert_eq!(decision.next, AfterExit::RestartNow);
        assert!(decision.proves_command);
    }

    #[test]
    fn a_library_worker_that_said_ready_came_up_however_short_it_ran() {
        let mut facts = exit(Role::Current, 50, None, Some(libc::SIGKILL));
        facts.said_ready = true;
        assert_eq!(classify(&facts, MIN_UPTIME), ExitKind::KilledAfterUp);
        assert_eq!(next(facts, RUNNING), AfterExit::RestartNow);
        // Ready but too short a run: it does not prove the command.
        assert!(!decide(&facts, RUNNING, MIN_UPTIME).proves_command);
    }

    #[test]
    fn a_kill_from_outside_before_coming_up_is_a_failure_that_blames_nobody() {
        let facts = exit(Role::Current, 100, None, Some(libc::SIGTERM));
        assert_eq!(classify(&facts, MIN_UPTIME), ExitKind::KilledAtStart);
        assert_eq!(next(facts, RUNNING), AfterExit::Failure);
    }

    #[test]
    fn a_failure_after_coming_up_goes_through_the_backoff_and_proves_the_command() {
        let facts = exit(Role::Current, 1_200, Some(3), None);
        assert_eq!(classify(&facts, MIN_UPTIME), ExitKind::FailedAfterUp);
        let decision = decide(&facts, RUNNING, MIN_UPTIME);
        assert_eq!(decision.next, AfterExit::Failure);
        assert!(decision.proves_command);
    }

    #[test]
    fn a_worker_that_came_up_and_left_by_itself_is_replaced_at_once_without_blame() {
        let mut facts = exit(Role::Current, 5_000, Some(0), None);
        facts.left_by_itself = true;
        assert_eq!(classify(&facts, MIN_UPTIME), ExitKind::LeftByItself);
        let decision = decide(&facts, RUNNING, MIN_UPTIME);
        assert_eq!(decision.next, AfterExit::RestartNow);
        assert!(!decision.proves_command);
        assert_eq!(
            crate::primary::rules::restarts::exit_reason(decision.kind),
            None
        );
    }

    #[test]
    fn leaving_by_itself_at_once_still_counts_as_a_failure_at_start() {
        // A program whose workers all leave as soon as they start would
        // otherwise be restarted in a tight loop.
        let mut facts = exit(Role::Current, 20, Some(0), None);
        facts.left_by_itself = true;
        assert_eq!(classify(&facts, MIN_UPTIME), ExitKind::FailedAtStart);
        assert_eq!(next(facts, RUNNING), AfterExit::Failure);
    }

    #[test]
    fn an_exit_asked_for_restarts_at_once_whatever_its_status() {
        let mut facts = exit(Role::Current, 5, None, Some(libc::SIGKILL));
        facts.stop_requested = true;
        assert_eq!(classify(&facts, MIN_UPTIME), ExitKind::AskedFor);
        assert_eq!(next(facts, RUNNING), AfterExit::RestartNow);
        assert!(!decide(&facts, RUNNING, MIN_UPTIME).proves_command);
    }

    #[test]
    fn a_retired_worker_leaves_quietly_or_takes_its_retiring_slot_along() {
        let facts = exit(Role::Retired, 5, Some(1), None);
        assert_eq!(classify(&facts, MIN_UPTIME), ExitKind::Retired);
        assert_eq!(next(facts, RUNNING), AfterExit::Nothing);
        let emptied = SlotAfterExit {
            emptied_and_retiring: true,
            ..RUNNING
        };
        assert_eq!(next(facts, emptied), AfterExit::RemoveSlot);
    }

    #[test]
    fn a_successor_that_dies_aborts_the_reload() {
        let facts = exit(Role::Successor, 5_000, Some(0), None);
        assert_eq!(classify(&facts, MIN_UPTIME), ExitKind::SuccessorFailed);
        assert_eq!(next(facts, RUNNING), AfterExit::AbortReload);
    }

    #[test]
    fn a_successor_asked_to_stop_by_a_scale_down_is_retired_not_failed() {
        let mut facts = exit(Role::Successor, 300, Some(0), None);
        facts.stop_requested = true;
        assert_eq!(classify(&facts, MIN_UPTIME), ExitKind::Retired);
        let emptied = SlotAfterExit {
            emptied_and_retiring: true,
            ..RUNNING
        };
        assert_eq!(next(facts, emptied), AfterExit::RemoveSlot);
    }

    #[test]
    fn a_worker_with_a_replacement_coming_is_not_restarted() {
        let facts = exit(Role::Current, 5, Some(3), None);
        let slot = SlotAfterExit {
            replacement_coming: true,
            ..RUNNING
        };
        assert_eq!(next(facts, slot), AfterExit::Nothing);
    }

    #[test]
    fn nothing_restarts_while_the_cluster_stops() {
        let slot = SlotAfterExit {
            running: false,
            ..RUNNING
        };
        let failed = exit(Role::Current, 5, Some(3), None);
        assert_eq!(next(failed, slot), AfterExit::Nothing);
        let mut asked = failed;
        asked.stop_requested = true;
        assert_eq!(next(asked, slot), AfterExit::Nothing);
    }

    #[test]
    fn the_last_worker_of_a_retiring_slot_removes_it() {
        let mut facts = exit(Role::Current, 5_000, Some(0), None);
        facts.stop_requested = true;
        let slot = SlotAfterExit {
            emptied_and_retiring: true,
            ..RUNNING
        };
        assert_eq!(next(facts, slot), AfterExit::RemoveSlot);
    }

    #[test]
    fn exits_are_described_by_code_or_signal() {
        let ran = Duration::from_millis(2);
        assert_eq!(
            describe_exit(Some(3), None, ran),
            "exited with code 3 after 2ms"
        );
        assert_eq!(
            describe_exit(None, Some(libc::SIGKILL), Duration::from_millis(1500)),
            "was killed by SIGKILL after 1.5s"
        );
    }
}
