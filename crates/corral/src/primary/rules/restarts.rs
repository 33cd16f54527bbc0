//! A slot's record of how many times its worker was replaced, and why the last time
//! (for `corral status` and the metrics). Some causes are known only before
//! the exit they cause (the watchdog kills a hung worker, recycling replaces
//! one over its memory or request limit): they are noted as expected, and
//! the replacement that follows takes that reason.

use crate::control::status::RestartReason;
use crate::primary::rules::exit::ExitKind;

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SlotRestarts {
    pub count: u32,
    pub last: Option<RestartReason>,
    /// Counts by reason, in the order of [`RestartReason::ALL`].
    by_reason: [u32; RestartReason::ALL.len()],
    /// The reason of the replacement under way, when known in advance.
    expected: Option<RestartReason>,
}

impl SlotRestarts {
    /// The slot's worker is about to be replaced for `reason`.
    pub(crate) fn expect(&mut self, reason: RestartReason) {
        self.expected = Some(reason);
    }

    /// The slot's worker was replaced (or is being restarted); `observed`
    /// is the cause seen at its exit, which an expected one overrides.
    pub(crate) fn record(&mut self, observed: RestartReason) {
        self.count += 1;
        let reason = self.expected.take().unwrap_or(observed);
        self.last = Some(reason);
        if let Some(index) = RestartReason::ALL.iter().position(|&r| r == reason) {
            self.by_reason[index] += 1;
        }
    }

    /// The reasons that occurred, with their counts.
    pub(crate) fn by_reason(&self) -> std::collections::BTreeMap<RestartReason, u32> {
        RestartReason::ALL
            .iter()
            .zip(self.by_reason)
            .filter(|(_, count)| *count > 0)
            .map(|(&reason, count)| (reason, count))
            .collect()
    }
}

/// Why a slot's worker that exited is replaced: a crash (an exit code or
/// a fault signal of its own) or a kill from outside; `None` for exits that
/// replace nothing by themselves (asked for, a retired or a reload's
/// replacement process).
pub(crate) fn exit_reason(kind: ExitKind) -> Option<RestartReason> {
    match kind {
        ExitKind::FailedAtStart | ExitKind::FailedAfterUp => Some(RestartReason::Crash),
        ExitKind::KilledAtStart | ExitKind::KilledAfterUp => Some(RestartReason::Killed),
        ExitKind::AskedFor
        | ExitKind::LeftByItself
        | ExitKind::Retired
        | ExitKind::SuccessorFailed => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restarts_count_and_keep_the_last_reason() {
        let mut restarts = SlotRestarts::default();
        assert_eq!(restarts.count, 0);
        restarts.record(RestartReason::Crash);
        restarts.record(RestartReason::Killed);
        assert_eq!(restarts.count, 2);
        assert_eq!(restarts.last, Some(RestartReason::Killed));
        assert_eq!(
            restarts.by_reason().into_iter().collect::<Vec<_>>(),
            [(RestartReason::Crash, 1), (RestartReason::Killed, 1)]
        );
    }

    #[test]
    fn an_expected_reason_wins_once() {
        let mut restarts = SlotRestarts::default();
        restarts.expect(RestartReason::Hung);
        // The watchdog's SIGKILL looks like a kill from outside.
        restarts.record(RestartReason::Killed);
        assert_eq!(restarts.last, Some(RestartReason::Hung));
        restarts.record(RestartReason::Crash);
        assert_eq!(restarts.last, Some(RestartReason::Crash));
    }

    #[test]
    fn exits_are_crashes_or_kills() {
        assert_eq!(
            exit_reason(ExitKind::FailedAtStart),
            Some(RestartReason::Crash)
        );
        assert_eq!(
            exit_reason(ExitKind::FailedAfterUp),
            Some(RestartReason::Crash)
        );
        assert_eq!(
            exit_reason(ExitKind::KilledAfterUp),
            Some(RestartReason::Killed)
        );
        assert_eq!(
            exit_reason(ExitKind::KilledAtStart),
            Some(RestartReason::Killed)
        );
        assert_eq!(exit_reason(ExitKind::AskedFor), None);
        assert_eq!(exit_reason(ExitKind::Retired), None);
    }
}
