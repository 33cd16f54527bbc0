//! Per slot: how many times its worker was replaced, and why the last time
//! (for `corral status` and the metrics). Some causes are known only before
//! the exit they cause (the watchdog kills a hung worker, recycling replaces
//! one over its memory or request limit): they are noted as expected, and
//! the replacement that follows takes that reason.

use std::collections::BTreeMap;

use super::exit::ExitKind;
use crate::control::status::RestartReason;

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SlotRestarts {
    pub count: u32,
    pub last: Option<RestartReason>,
    /// Counts by reason, in the order of [`RestartReason::ALL`].
    by_reason: [u32; RestartReason::ALL.len()],
    /// The reason of the replacement under way, when known in advance.
    expected: Option<RestartReason>,
}

#[derive(Debug, Default)]
pub(crate) struct Restarts {
    slots: BTreeMap<u32, SlotRestarts>,
}

impl SlotRestarts {
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

impl Restarts {
    /// Slot `id`'s worker is about to be replaced for `reason`.
    pub(crate) fn expect(&mut self, id: u32, reason: RestartReason) {
        self.slots.entry(id).or_default().expected = Some(reason);
    }

    /// Slot `id`'s worker was replaced (or is being restarted); `observed`
    /// is the cause seen at its exit, which an expected one overrides.
    pub(crate) fn record(&mut self, id: u32, observed: RestartReason) {
        let slot = self.slots.entry(id).or_default();
        slot.count += 1;
        let reason = slot.expected.take().unwrap_or(observed);
        slot.last = Some(reason);
        if let Some(index) = RestartReason::ALL.iter().position(|&r| r == reason) {
            slot.by_reason[index] += 1;
        }
    }

    pub(crate) fn of(&self, id: u32) -> SlotRestarts {
        self.slots.get(&id).copied().unwrap_or_default()
    }

    /// The slot is gone (the cluster shrank): a new slot with its id starts
    /// from zero.
    pub(crate) fn forget(&mut self, id: u32) {
        self.slots.remove(&id);
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
        let mut restarts = Restarts::default();
        assert_eq!(restarts.of(1).count, 0);
        restarts.record(1, RestartReason::Crash);
        restarts.record(1, RestartReason::Killed);
        assert_eq!(restarts.of(1).count, 2);
        assert_eq!(restarts.of(1).last, Some(RestartReason::Killed));
        assert_eq!(restarts.of(2).last, None);
    }

    #[test]
    fn an_expected_reason_wins_once() {
        let mut restarts = Restarts::default();
        restarts.expect(1, RestartReason::Hung);
        // The watchdog's SIGKILL looks like a kill from outside.
        restarts.record(1, RestartReason::Killed);
        assert_eq!(restarts.of(1).last, Some(RestartReason::Hung));
        restarts.record(1, RestartReason::Crash);
        assert_eq!(restarts.of(1).last, Some(RestartReason::Crash));
        restarts.forget(1);
        assert_eq!(restarts.of(1).count, 0);
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
