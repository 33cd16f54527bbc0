//! When a started worker counts as ready, and what happens to one that is
//! not ready in time. Library workers say so themselves; a COMMAND worker
//! follows `--ready` (`settings/ready_mode.rs`); under a hand-off policy every worker
//! must say so, since it must take connections from corral. A reload's
//! replacement is watched by the reload's own timeout instead.
//!
//! A COMMAND worker that would be ready "at once" is announced ready only
//! once it is seen still running [`SIGN_OF_LIFE`] after its start: a
//! command that exits at its start (`false`, `sh -c 'exit 3'`, a script
//! whose interpreter is missing) is never called ready, and the event
//! journal, `corral status` and sd_notify, which all follow the same
//! state, never count it. Its `online` stays: it is emitted once `execve`
//! succeeded (the spawn reports an exec failure as an error instead).

use std::time::Duration;

use crate::settings::ReadyMode;

/// How long a COMMAND worker that is ready without waiting must have run,
/// still alive, before it is announced ready: long enough that a command
/// failing at its start has exited, short enough not to be noticed.
pub(crate) const SIGN_OF_LIFE: Duration = Duration::from_millis(100);

/// What the supervisor sets up when it starts a worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ReadyPlan {
    /// The worker counts as ready from the start: a reload's replacement,
    /// which the reload promotes at once (the old worker still serves, so
    /// a replacement that exits at once fails the reload instead).
    pub at_once: bool,
    /// A first start or a restart that needs no wait: ready once it is
    /// still running [`SIGN_OF_LIFE`] after its start.
    pub once_alive: bool,
    /// The worker counts as ready after running this long (unless it says
    /// so sooner).
    pub settle_after: Option<Duration>,
    /// The worker must be ready within `ready_timeout`, or the
    /// [`on_ready_timeout`] verdict applies.
    pub deadline: bool,
}

/// Who the worker is and how it starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct StartKind {
    /// It speaks corral's channel (a library worker).
    pub speaks_channel: bool,
    /// It is a rolling reload's replacement (else a first start or a
    /// restart).
    pub replacement: bool,
    /// The policy hands connections out (round-robin, least-connections,
    /// sticky).
    pub hands_off: bool,
}

/// How a worker started as `start` becomes ready under `mode`.
pub(crate) fn ready_plan(mode: ReadyMode, start: StartKind) -> ReadyPlan {
    let settle = if start.speaks_channel {
        None
    } else {
        mode.settle(start.replacement, start.hands_off)
    };
    let immediate = settle == Some(Duration::ZERO);
    let must_say = !start.speaks_channel && settle.is_none();
    ReadyPlan {
        at_once: immediate && start.replacement,
        once_alive: immediate && !start.replacement,
        settle_after: settle.filter(|delay| !delay.is_zero()),
        deadline: !start.replacement && !immediate && (start.hands_off || must_say),
    }
}

/// How a Node cluster worker becomes ready: when it says so, with its
/// `listening` (or `process.send('ready')`). Under `auto` one that never
/// listens counts as ready after `ready_timeout`, so a Node program with
/// no server runs too; under `message` it must say so in time.
pub(crate) fn node_ready_plan(
    mode: ReadyMode,
    ready_timeout: Duration,
    replacement: bool,
) -> ReadyPlan {
    let settle = match mode {
        ReadyMode::Auto => Some(ready_timeout),
        ReadyMode::Message => None,
        ReadyMode::Delay(delay) => Some(delay),
    };
    let immediate = settle == Some(Duration::ZERO);
    ReadyPlan {
        at_once: immediate && replacement,
        once_alive: immediate && !replacement,
        settle_after: settle.filter(|delay| !delay.is_zero()),
        deadline: !replacement && settle.is_none(),
    }
}

/// What to do with a worker that is still not ready at its deadline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LateVerdict {
    /// It became ready, or is stopping: nothing.
    Ignore,
    /// No worker ever was ready: the command does not speak what the
    /// settings need (`--ready message`). The cluster stops.
    NeverSaysReady,
    /// As above, under a hand-off policy: the command does not take
    /// connections from corral. The cluster stops.
    NeverTakesConnections,
    /// Others were ready: this one is stuck and is replaced.
    Replace,
}

/// The verdict on a worker at its ready deadline. `proven`: some worker
/// of the cluster came up before.
pub(crate) fn on_ready_timeout(
    ready: bool,
    stopping: bool,
    proven: bool,
    hands_off: bool,
) -> LateVerdict {
    match (ready || stopping, proven, hands_off) {
        (true, _, _) => LateVerdict::Ignore,
        (false, true, _) => LateVerdict::Replace,
        (false, false, false) => LateVerdict::NeverSaysReady,
        (false, false, true) => LateVerdict::NeverTakesConnections,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIRST: StartKind = StartKind {
        speaks_channel: false,
        replacement: false,
        hands_off: false,
    };

    #[test]
    fn a_node_worker_is_ready_at_its_listening_or_after_the_timeout() {
        let timeout = Duration::from_secs(10);
        for replacement in [false, true] {
            let plan = node_ready_plan(ReadyMode::Auto, timeout, replacement);
            assert_eq!(
                plan,
                ReadyPlan {
                    at_once: false,
                    once_alive: false,
                    settle_after: Some(timeout),
                    deadline: false
                }
            );
        }
        let plan = node_ready_plan(ReadyMode::Message, timeout, false);
        assert!(plan.deadline && plan.settle_after.is_none() && !plan.at_once);
        let plan = node_ready_plan(ReadyMode::Delay(Duration::ZERO), timeout, false);
        assert!(plan.once_alive && !plan.at_once);
        let plan = node_ready_plan(ReadyMode::Delay(Duration::ZERO), timeout, true);
        assert!(plan.at_once && !plan.once_alive);
    }

    #[test]
    fn a_command_under_auto_is_ready_once_seen_alive_on_a_first_start() {
        let plan = ready_plan(ReadyMode::Auto, FIRST);
        assert_eq!(
            plan,
            ReadyPlan {
                at_once: false,
                once_alive: true,
                settle_after: None,
                deadline: false
            }
        );
    }

    #[test]
    fn a_command_under_delay_zero_is_ready_once_seen_alive_and_a_replacement_at_once() {
        let zero = ReadyMode::Delay(Duration::ZERO);
        let plan = ready_plan(zero, FIRST);
        assert!(plan.once_alive && !plan.at_once && !plan.deadline);
        assert_eq!(plan.settle_after, None);
        let handing = StartKind {
            hands_off: true,
            ..FIRST
        };
        let plan = ready_plan(zero, handing);
        assert!(plan.once_alive && !plan.deadline, "no wait was asked for");
        let replacement = StartKind {
            replacement: true,
            ..FIRST
        };
        let plan = ready_plan(zero, replacement);
        assert!(plan.at_once && !plan.once_alive);
    }

    #[test]
    fn a_command_replacement_under_auto_settles_after_a_second() {
        let start = StartKind {
            replacement: true,
            ..FIRST
        };
        let plan = ready_plan(ReadyMode::Auto, start);
        assert!(!plan.at_once && !plan.once_alive);
        assert_eq!(plan.settle_after, Some(Duration::from_secs(1)));
        assert!(!plan.deadline, "the reload watches its replacements");
    }

    #[test]
    fn a_command_under_message_must_say_so_in_time() {
        let plan = ready_plan(ReadyMode::Message, FIRST);
        assert!(!plan.at_once);
        assert_eq!(plan.settle_after, None);
        assert!(plan.deadline);
    }

    #[test]
    fn a_command_under_delay_settles_without_a_deadline_unless_it_hands_off() {
        let delay = ReadyMode::Delay(Duration::from_millis(300));
        let plan = ready_plan(delay, FIRST);
        assert_eq!(plan.settle_after, Some(Duration::from_millis(300)));
        assert!(!plan.deadline);
        let handing = StartKind {
            hands_off: true,
            ..FIRST
        };
        assert!(ready_plan(delay, handing).deadline);
    }

    #[test]
    fn a_command_under_a_hand_off_policy_must_say_so() {
        let start = StartKind {
            hands_off: true,
            ..FIRST
        };
        let plan = ready_plan(ReadyMode::Auto, start);
        assert!(!plan.at_once);
        assert!(plan.deadline);
    }

    #[test]
    fn a_library_worker_says_so_and_has_a_deadline_only_under_hand_off() {
        let library = StartKind {
            speaks_channel: true,
            ..FIRST
        };
        let plan = ready_plan(ReadyMode::Delay(Duration::from_secs(5)), library);
        assert_eq!(
            plan,
            ReadyPlan {
                at_once: false,
                once_alive: false,
                settle_after: None,
                deadline: false
            }
        );
        let handing = StartKind {
            hands_off: true,
            ..library
        };
        assert!(ready_plan(ReadyMode::Auto, handing).deadline);
    }

    #[test]
    fn a_late_worker_is_replaced_once_the_command_is_proven() {
        assert_eq!(
            on_ready_timeout(false, false, true, true),
            LateVerdict::Replace
        );
        assert_eq!(
            on_ready_timeout(false, false, false, false),
            LateVerdict::NeverSaysReady
        );
        assert_eq!(
            on_ready_timeout(false, false, false, true),
            LateVerdict::NeverTakesConnections
        );
        assert_eq!(
            on_ready_timeout(true, false, false, true),
            LateVerdict::Ignore
        );
        assert_eq!(
            on_ready_timeout(false, true, false, false),
            LateVerdict::Ignore
        );
    }
}
